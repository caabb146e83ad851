#define _GNU_SOURCE
#include "notify.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

int mpdd_notify(const char *msg)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !path[0] || (path[0] != '/' && path[0] != '@'))
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n >= sizeof(sa.sun_path))
        return -1;
    memcpy(sa.sun_path, path, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = '\0'; /* abstract namespace */
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    ssize_t w = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, len);
    close(fd);
    return w == (ssize_t)strlen(msg) ? 0 : -1;
}

void mpdd_notify_ready(const char *status)
{
    char m[1300];
    snprintf(m, sizeof(m), "READY=1\nSTATUS=%s", status);
    mpdd_notify(m);
}

void mpdd_notify_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    char m[128];
    snprintf(m, sizeof(m), "RELOADING=1\nSTATUS=reloading the plan\nMONOTONIC_USEC=%llu",
             (unsigned long long)ts.tv_sec * 1000000ull + (unsigned long long)ts.tv_nsec / 1000);
    mpdd_notify(m);
}

void mpdd_notify_stopping(void)
{
    mpdd_notify("STOPPING=1\nSTATUS=stopping: finishing queued requests");
}

void mpdd_notify_watchdog(void)
{
    mpdd_notify("WATCHDOG=1");
}

void mpdd_notify_status(const char *status)
{
    char m[1300];
    snprintf(m, sizeof(m), "STATUS=%s", status);
    mpdd_notify(m);
}

/* The variable names this process, or is unset. */
static int for_us(const char *pid_var)
{
    const char *p = getenv(pid_var);
    if (!p)
        return 1;
    char *end;
    long pid = strtol(p, &end, 10);
    return !*end && pid == (long)getpid();
}

int mpdd_listen_fds(void)
{
    const char *n = getenv("LISTEN_FDS");
    if (!n || !getenv("LISTEN_PID") || !for_us("LISTEN_PID"))
        return 0;
    char *end;
    long fds = strtol(n, &end, 10);
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
    if (*end || fds < 1 || fds > 64)
        return 0;
    for (int fd = 3; fd < 3 + fds; fd++) {
        int fl = fcntl(fd, F_GETFD);
        if (fl >= 0)
            fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    return (int)fds;
}

double mpdd_watchdog_seconds(void)
{
    const char *u = getenv("WATCHDOG_USEC");
    if (!u || !for_us("WATCHDOG_PID"))
        return 0;
    char *end;
    double usec = strtod(u, &end);
    return *end || !(usec > 0) ? 0 : usec / 1e6;
}
