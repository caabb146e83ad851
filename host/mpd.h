/* mpd.h - error codes, logging callback and small helpers shared by the
 * whole engine. Pure C11; no CUDA headers. */
#ifndef MPD_H
#define MPD_H

#include <stdarg.h>
#include <stddef.h>

/* Every function that can fail returns 0 or one of these negative codes.
 * Detail goes into a caller-owned message buffer. */
enum {
    MPD_OK = 0,
    MPD_EINVAL = -1,  /* bad argument */
    MPD_EPARSE = -2,  /* malformed cfg, plan or config text */
    MPD_EIO = -3,     /* file could not be opened or read */
    MPD_ENOMEM = -4,  /* allocation failed */
    MPD_EFORMAT = -5, /* weights or image content does not match */
    MPD_ELIMIT = -6,  /* input exceeds a configured limit */
    MPD_EUNSUP = -7,  /* valid but not supported here */
    MPD_EDEVICE = -8, /* backend/device failure */
};

/* Returns a static string naming the error code. */
const char *mpd_strerror(int err);

/* Log priorities use syslog numbering so the daemon can pass them on. */
enum { MPD_LOG_ERR = 3, MPD_LOG_WARNING = 4, MPD_LOG_INFO = 6, MPD_LOG_DEBUG = 7 };

typedef void (*mpd_log_fn)(void *ud, int priority, const char *msg);

/* Formats into msg (if non-NULL) and returns err, so call sites can write
 * `return mpd__fail(msg, len, MPD_EPARSE, "%s:%d: ...", ...)`. */
int mpd__fail(char *msg, size_t msglen, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Formats a line and passes it to log (nothing when log is NULL). */
void mpd__logf(mpd_log_fn log, void *ud, int priority, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Monotonic clock in seconds; any thread. */
double mpd_now(void);

#endif
