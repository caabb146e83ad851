/* log.c - mpdetd's log: stderr lines with a timestamp, or with the
 * journal's "<N>" priority prefixes under systemd. */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "server.h"

_Atomic int mpdd_log_level = MPD_LOG_INFO;
int mpdd_log_journal;

void mpdd_log(int prio, const char *fmt, ...)
{
    if (prio > mpdd_log_level)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (mpdd_log_journal) {
        fprintf(stderr, "<%d>%s\n", prio, line);
    } else {
        char ts[32];
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        struct tm tm;
        localtime_r(&now.tv_sec, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
        static const char *const names[] = {"emerg", "alert", "crit", "error",
                                            "warning", "notice", "info", "debug"};
        fprintf(stderr, "%s.%03ld mpdetd %s: %s\n", ts, now.tv_nsec / 1000000,
                names[prio & 7], line);
    }
}

void mpdd_engine_log(void *ud, int prio, const char *msg)
{
    (void)ud;
    mpdd_log(prio, "%s", msg);
}