/* internal.h - helpers shared by the engine's own sources (host/, cuda/),
 * kept out of the public API (engine.h), as libuv keeps uv-common.h apart
 * from uv.h. Pure C11; no CUDA headers. Programs built on the engine
 * (tools/, daemon/) include engine.h; what they take from here is not part
 * of the API and may change. */
#ifndef MPD_INTERNAL_H
#define MPD_INTERNAL_H

#include <stddef.h>

#include "engine.h"

/* Formats into msg (if non-NULL) and returns err, so call sites can write
 * `return mpd__fail(msg, len, MPD_EPARSE, "%s:%d: ...", ...)`. Any thread. */
int mpd__fail(char *msg, size_t msglen, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Formats a line and passes it to log (nothing when log is NULL), on the
 * calling thread. */
void mpd__logf(mpd_log_fn log, void *ud, int priority, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The seconds of a(arg) and of b(arg), each the faster of two runs after
 * a warm-up, the two taken in turn: a slow phase of the machine (a VM's
 * neighbours, a pass of the daemon's) then weighs on both alike. For the
 * per-plan choices between two kernels. */
void mpd__time_in_turn(void (*a)(void *), void (*b)(void *), void *arg, double *ta, double *tb);

/* n rounded up to a multiple of 64 bytes (a cache line, and AVX-512's
 * alignment), for carving aligned buffers out of one allocation. */
static inline size_t mpd__align64(size_t n)
{
    return (n + 63) & ~(size_t)63;
}

#endif
