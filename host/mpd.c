#define _POSIX_C_SOURCE 200809L
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

const char *mpd_strerror(int err)
{
    switch (err) {
    case MPD_OK: return "success";
    case MPD_EINVAL: return "invalid argument";
    case MPD_EPARSE: return "parse error";
    case MPD_EIO: return "i/o error";
    case MPD_ENOMEM: return "out of memory";
    case MPD_EFORMAT: return "bad format";
    case MPD_ELIMIT: return "limit exceeded";
    case MPD_EUNSUP: return "not supported";
    case MPD_EDEVICE: return "device error";
    }
    return "unknown error";
}

int mpd__fail(char *msg, size_t msglen, int err, const char *fmt, ...)
{
    if (msg && msglen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msglen, fmt, ap);
        va_end(ap);
    }
    return err;
}

void mpd__logf(mpd_log_fn log, void *ud, int priority, const char *fmt, ...)
{
    if (!log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    log(ud, priority, line);
}

double mpd_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void mpd__time_in_turn(void (*a)(void *), void (*b)(void *), void *arg, double *ta, double *tb)
{
    *ta = *tb = 1e30;
    for (int rep = 0; rep < 3; rep++)
        for (int k = 0; k < 2; k++) {
            double t0 = mpd_now();
            (k ? b : a)(arg);
            double dt = mpd_now() - t0, *best = k ? tb : ta;
            if (rep > 0 && dt < *best)
                *best = dt;
        }
}
