#define _GNU_SOURCE
#include "client.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int write_all(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int mpd_http(const char *socket_path, const char *method, const char *path,
             const char *content_type, const void *body, size_t len, int timeout_s,
             mpd_http_reply *r, char *msg, size_t msglen)
{
    memset(r, 0, sizeof(*r));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(socket_path) >= sizeof(sa.sun_path)) {
        snprintf(msg, msglen, "socket path too long");
        return -1;
    }
    strcpy(sa.sun_path, socket_path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(msg, msglen, "cannot connect to %s: %s (is mpdetd running?)", socket_path,
                 strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    char head[1024];
    int hn = snprintf(head, sizeof(head),
                      "%s %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
                      "Content-Length: %zu\r\n%s%s%s\r\n",
                      method, path, len, content_type ? "Content-Type: " : "",
                      content_type ? content_type : "", content_type ? "\r\n" : "");
    if (write_all(fd, head, (size_t)hn) || (len && write_all(fd, body, len))) {
        snprintf(msg, msglen, "send to %s failed: %s", socket_path, strerror(errno));
        close(fd);
        return -1;
    }
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            snprintf(msg, msglen, "out of memory");
            close(fd);
            return -1;
        }
        if (n + 1 == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                continue;
            }
            buf = nb;
            cap *= 2;
        }
        struct pollfd pfd = {fd, POLLIN, 0};
        int pr = poll(&pfd, 1, timeout_s * 1000);
        if (pr == 0) {
            snprintf(msg, msglen, "no reply from %s within %d s", socket_path, timeout_s);
            free(buf);
            close(fd);
            return -1;
        }
        ssize_t got = recv(fd, buf + n, cap - n - 1, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    close(fd);
    buf[n] = '\0';
    int status;
    char *sep = strstr(buf, "\r\n\r\n");
    if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1 || !sep) {
        snprintf(msg, msglen, "malformed reply from %s", socket_path);
        free(buf);
        return -1;
    }
    size_t off = (size_t)(sep + 4 - buf);
    r->status = status;
    r->len = n - off;
    r->body = malloc(r->len + 1);
    if (!r->body) {
        free(buf);
        snprintf(msg, msglen, "out of memory");
        return -1;
    }
    memcpy(r->body, buf + off, r->len);
    r->body[r->len] = '\0';
    free(buf);
    return 0;
}
