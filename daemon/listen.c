/* listen.c - mpdetd's listening sockets: the one systemd passes, or the
 * configured Unix socket; and the loopback TCP listener when set. */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"
#include "server.h"

/* Binds the Unix socket. A socket file whose server is gone is replaced; a
 * live one is left alone and startup fails. */
static int bind_unix(server *s, char *msg, size_t msglen)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(s->cfg.socket) >= sizeof(sa.sun_path)) {
        snprintf(msg, msglen, "socket path too long: %s", s->cfg.socket);
        return -1;
    }
    strcpy(sa.sun_path, s->cfg.socket);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(msg, msglen, "socket: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        if (errno != EADDRINUSE) {
            snprintf(msg, msglen, "bind %s: %s", s->cfg.socket, strerror(errno));
            close(fd);
            return -1;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            snprintf(msg, msglen, "%s: another mpdetd is serving there", s->cfg.socket);
            close(fd);
            return -1;
        }
        /* Only a socket is ever replaced: a regular file (or anything
         * else) at the path is someone's data, whatever the config says. */
        struct stat st;
        if (lstat(s->cfg.socket, &st) != 0 || !S_ISSOCK(st.st_mode)) {
            snprintf(msg, msglen, "%s exists and is not a socket; not replacing it",
                     s->cfg.socket);
            close(fd);
            return -1;
        }
        mpdd_log(MPD_LOG_WARNING, "replacing stale socket %s", s->cfg.socket);
        unlink(s->cfg.socket);
        if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
            snprintf(msg, msglen, "bind %s: %s", s->cfg.socket, strerror(errno));
            close(fd);
            return -1;
        }
    }
    s->owns_socket_file = 1;
    if (chmod(s->cfg.socket, s->cfg.socket_mode) != 0)
        mpdd_log(MPD_LOG_WARNING, "chmod %s: %s", s->cfg.socket, strerror(errno));
    if (s->cfg.socket_group[0]) {
        struct group *g = getgrnam(s->cfg.socket_group);
        if (!g || chown(s->cfg.socket, (uid_t)-1, g->gr_gid) != 0)
            mpdd_log(MPD_LOG_WARNING, "cannot give %s to group %s", s->cfg.socket,
                   s->cfg.socket_group);
    }
    if (listen(fd, 128) != 0) {
        snprintf(msg, msglen, "listen %s: %s", s->cfg.socket, strerror(errno));
        close(fd);
        return -1;
    }
    s->bound = evhttp_accept_socket_with_handle(s->http, fd);
    if (!s->bound) {
        snprintf(msg, msglen, "cannot serve %s", s->cfg.socket);
        close(fd);
        return -1;
    }
    return 0;
}
int mpdd_listen(server *s, char *msg, size_t msglen)
{
    /* A socket from systemd (LISTEN_FDS) wins over the configured path. */
    if (mpdd_listen_fds() > 0) {
        s->bound = evhttp_accept_socket_with_handle(s->http, 3);
        if (!s->bound) {
            snprintf(msg, msglen, "cannot serve the socket passed by systemd");
            return -1;
        }
        mpdd_log(MPD_LOG_INFO, "serving the socket passed by systemd");
    } else if (bind_unix(s, msg, msglen)) {
        return -1;
    }
    if (s->cfg.tcp_listen[0]) {
        char host[64];
        int port;
        if (mpdd_config_tcp_split(s->cfg.tcp_listen, host, sizeof(host), &port, msg, msglen))
            return -1;
        s->bound_tcp = evhttp_bind_socket_with_handle(s->http, host, (ev_uint16_t)port);
        if (!s->bound_tcp) {
            snprintf(msg, msglen, "cannot listen on %s", s->cfg.tcp_listen);
            return -1;
        }
        mpdd_log(MPD_LOG_INFO, "also listening on %s", s->cfg.tcp_listen);
    }
    return 0;
}
