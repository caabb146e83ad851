/* stream.c - the bytes of each client connection (loop thread): the
 * socket bufferevent evhttp reads, with the framing check of framing.h on
 * its input buffer.
 *
 * evhttp 2.1 takes a connection's bufferevent from evhttp_set_bevcb and
 * keeps no user data with it, so the streams are listed in the server,
 * and each holds a reference on its bufferevent: when evhttp lets go of
 * one (bufferevent_free clears its callbacks; evhttp closes the socket
 * itself) the bufferevent stays valid until a sweep here drops the
 * reference and the stream together. */
#define _GNU_SOURCE
#include <stdlib.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>

#include "framing.h"
#include "server.h"

typedef struct framed {
    struct framed *next;
    struct bufferevent *bev; /* the socket's, with a reference of ours */
    mpdd_framing_input in;
} framed;

/* Whether evhttp has freed bev (it keeps some callback set until then). */
static int released(struct bufferevent *bev)
{
    bufferevent_data_cb r, w;
    bufferevent_event_cb e;
    void *a;
    bufferevent_getcb(bev, &r, &w, &e, &a);
    return !r && !w && !e;
}

/* Drops the streams evhttp has let go of (all of them with all set). */
static void streams_sweep(server *s, int all)
{
    for (framed **p = &s->framed; *p;) {
        framed *c = *p;
        if (all || released(c->bev)) {
            *p = c->next;
            bufferevent_decref(c->bev);
            free(c);
        } else {
            p = &c->next;
        }
    }
}

struct bufferevent *mpdd_connection_bev(struct event_base *base, void *arg)
{
    server *s = arg;
    streams_sweep(s, 0);
    framed *c = calloc(1, sizeof(*c));
    /* As evhttp's own: no close on free (evhttp closes the socket). */
    struct bufferevent *bev = c ? bufferevent_socket_new(base, -1, 0) : NULL;
    if (!bev) {
        free(c);
        return NULL; /* evhttp makes a plain one */
    }
    mpdd_framing_init(&c->in.f, (uint64_t)s->cfg.max_body, (size_t)s->cfg.max_header);
    if (!evbuffer_add_cb(bufferevent_get_input(bev), mpdd_framing_on_input, &c->in)) {
        bufferevent_free(bev);
        free(c);
        return NULL;
    }
    bufferevent_incref(bev);
    c->bev = bev;
    c->next = s->framed;
    s->framed = c;
    return bev;
}

static void on_sweep(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    streams_sweep(arg, 0);
}

int mpdd_streams_start(server *s)
{
    struct timeval second = {1, 0};
    s->sweep_ev = event_new(s->base, -1, EV_PERSIST, on_sweep, s);
    return s->sweep_ev && event_add(s->sweep_ev, &second) == 0 ? 0 : -1;
}

void mpdd_streams_free(server *s)
{
    if (s->sweep_ev)
        event_free(s->sweep_ev);
    s->sweep_ev = NULL;
    streams_sweep(s, 1);
}

int mpdd_streams_open(server *s)
{
    streams_sweep(s, 0);
    int n = 0;
    for (framed *c = s->framed; c; c = c->next)
        n++;
    return n;
}

const char *mpdd_framing_error(server *s, struct evhttp_request *req)
{
    streams_sweep(s, 0);
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    for (framed *c = s->framed; bev && c; c = c->next)
        if (c->bev == bev)
            return c->in.f.error;
    return NULL;
}
