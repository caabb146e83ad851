/* mpd.h - the engine's sources' umbrella header: the public API's error
 * codes, logging callback and clock (engine.h) and the internal helpers
 * (internal.h). Private, like internal.h: programs built on the engine
 * include engine.h. */
#ifndef MPD_H
#define MPD_H

#include "internal.h"

#endif
