/* framing.h - HTTP/1.1 request framing, checked ahead of evhttp.
 *
 * libevent 2.1's evhttp answers a malformed chunked body (a chunk size that
 * is not a hexadecimal number, a chunk extension such as "1a;x=y", data not
 * followed by its CRLF, a trailer line without a colon) with 413 "Request
 * Entity Too Large" - the error it uses for every chunked-body failure -
 * and sends it before any callback of ours runs; 2.1 has no hook to change
 * that (evhttp_set_errorcb is 2.2). It also buffers a chunk-size line of
 * any length. So a callback on each connection's input buffer follows the
 * request framing as the bytes arrive, exactly as evhttp 2.1.12 reads it:
 * the request line, the headers (the first Transfer-Encoding and
 * Content-Length, as evhttp_find_header picks them), then a Content-Length
 * body or chunks and trailers, request after request.
 *
 * A well-framed stream is left as it is. On a chunked-body error the bad
 * line and everything after it are replaced by what ends the body
 * ("0\r\n\r\n", or "\r\n" in the trailers): evhttp completes the request,
 * and the handler, seeing the error (mpdd_framing_error), answers 400 and
 * closes the connection. Where evhttp answers correctly by itself (a bad
 * request line or header: 400; a body over max_body: 413) or where the
 * check is not certain to read the stream as evhttp does (a folded
 * Transfer-Encoding or Content-Length header, an unknown method, a line
 * longer than max_header), it stops following that connection and leaves
 * the rest alone. So it never turns a request evhttp would serve into an
 * error.
 *
 * (A bufferevent filter in front of evhttp would be the obvious way; with
 * libevent 2.1.12 a filter under evhttp crashes when a kept-alive
 * connection times out, and its output side reports a reply written
 * before it reaches the socket, so "Connection: close" loses it.) */
#ifndef MPDD_FRAMING_H
#define MPDD_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#include <event2/buffer.h>

/* Longest chunk-size line accepted ("1a" and a CRLF need 4 bytes; evhttp
 * accepts leading blanks and a trailing " ..." that nobody sends). */
#define MPDD_FRAMING_SIZE_LINE_MAX 1024

typedef enum {
    MPDD_FR_REQUEST_LINE,
    MPDD_FR_HEADERS,
    MPDD_FR_BODY,       /* Content-Length bytes */
    MPDD_FR_CHUNK_SIZE,
    MPDD_FR_CHUNK_DATA,
    MPDD_FR_TRAILERS,
    MPDD_FR_PASS, /* not followed any further: everything is left alone */
    MPDD_FR_DROP, /* after a framing error: what comes later is dropped */
} mpdd_framing_state;

/* The framing state of one connection. */
typedef struct mpdd_framing {
    mpdd_framing_state state;
    uint64_t max_body;  /* evhttp's limits: beyond them it answers itself */
    size_t max_header;
    int may_have_body;  /* POST, PUT or PATCH */
    int te_seen, cl_seen;
    int chunked;        /* the first Transfer-Encoding is "chunked" */
    int64_t length;     /* the first Content-Length, -1 when none */
    int last_framing;   /* the latest header was the first TE or CL */
    uint64_t left;      /* body or chunk bytes still to come */
    uint64_t body_size; /* chunk sizes so far */
    size_t headers_size; /* request line, header and trailer bytes so far */
    const char *error;  /* why the framing failed, or NULL */
    const char *ending; /* what replaces the bad line */
} mpdd_framing;

void mpdd_framing_init(mpdd_framing *f, uint64_t max_body, size_t max_header);

/* The steps, for mpdd_framing_on_input. Body or chunk bytes the stream
 * holds before the next line (0: a line is next, or the state is PASS or
 * DROP). */
uint64_t mpdd_framing_body_left(const mpdd_framing *f);
/* n (<= mpdd_framing_body_left) body bytes went by. */
void mpdd_framing_bytes(mpdd_framing *f, uint64_t n);
/* The longest line the current state waits for before giving up. */
size_t mpdd_framing_line_max(const mpdd_framing *f);
/* A whole line (without its LF or CRLF; len bytes, may hold NUL) went by.
 * Returns 0 when it is well framed, -1 on a framing error (error and
 * ending set, state DROP). */
int mpdd_framing_line(mpdd_framing *f, const char *line, size_t len);
/* No line end within mpdd_framing_line_max bytes: -1 (a framing error) for
 * a chunk-size line, else 0 with the state PASS. */
int mpdd_framing_overlong(mpdd_framing *f);

/* One connection's input as the check follows it. */
typedef struct mpdd_framing_input {
    mpdd_framing f;
    uint64_t added, deleted; /* bytes ever added to, removed from the buffer */
    uint64_t seen;           /* how far into the stream the check has read */
    int busy;                /* end_body is changing the buffer */
} mpdd_framing_input;

/* The callback (evbuffer_add_cb, arg an mpdd_framing_input set up with
 * mpdd_framing_init on its f) on a connection's input buffer. It runs as
 * bytes arrive, before evhttp reads them: whole lines are checked as they
 * complete (evhttp reads only whole lines, and whole chunks, so none of a
 * line under check has been read yet), and on a framing error the bad line
 * and everything after it are replaced by f->ending. */
void mpdd_framing_on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg);

#endif
