/* client.h - a minimal HTTP/1.1 client over a Unix socket, for talking to
 * mpdetd (one request per connection, "Connection: close"). */
#ifndef MPD_CLIENT_H
#define MPD_CLIENT_H

#include <stddef.h>

typedef struct {
    int status;  /* HTTP status code */
    char *body;  /* NUL-terminated, malloc'd */
    size_t len;
} mpd_http_reply;

/* Sends method path (with query) and body (may be NULL) to the socket.
 * Returns 0 with *r filled (free r->body), or -1 with msg set (cannot
 * connect, malformed reply, timeout after timeout_s seconds). */
int mpd_http(const char *socket_path, const char *method, const char *path,
             const char *content_type, const void *body, size_t len, int timeout_s,
             mpd_http_reply *r, char *msg, size_t msglen);

#endif
