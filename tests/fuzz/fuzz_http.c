/* fuzz_http.c - libFuzzer target: mpdetd's request path, in-process.
 *
 * The real server (daemon/mpdetd.c mpdd_server_init and mpdd_server_start,
 * without signals or its own sockets) with the real yolov3-tiny model on
 * the CPU, one worker, is set up once; the harness owns two listening
 * sockets it hands to evhttp - an abstract-namespace Unix socket and a
 * loopback TCP one - and runs the daemon's event loop itself, on this
 * thread, the daemon's loop thread.
 *
 * Input: raw bytes a client sends on one connection - request lines,
 * headers, bodies, any number of requests (keep-alive, pipelining,
 * chunked bodies, DeepStack forms, bad methods, garbage). It goes over
 * the Unix socket; an input that mentions a key ("api_key", "x-api-key",
 * "authorization", any case) goes over TCP instead, where the daemon
 * requires its api_key ("fuzz-key"). The harness writes the input, turns
 * the loop while reading the replies, and closes the connection once the
 * daemon closes it, or has gone idle (no detection queued or running, no
 * reload, nothing sent for three turns of 1 ms), or after 3 s (pipelined
 * detections: one takes 0.5-0.9 s under the sanitizers). Then:
 *   - the reply stream must be whole HTTP responses (status line,
 *     headers, a body of Content-Length bytes, none after HEAD or for
 *     1xx/204/304), the last cut only when the harness stopped early;
 *   - once the client has left, the daemon must be idle with every
 *     connection closed within 4 s (a job runs to its end, then nothing
 *     may stay queued, running or open);
 *   - a GET /v1/health on a fresh connection must get 200 within 1 s, and
 *     the daemon must not be draining.
 * A broken promise aborts ("fuzz invariant failed"), so a wedged or
 * confused server is a finding like a sanitizer report. Seeds (generated
 * by scripts/fuzz): real requests around darknet's photos. Built and run
 * by scripts/fuzz; see tests/fuzz/README. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/event.h>
#include <event2/http.h>

#include "fuzz.h"
#include "server.h"

#define KEY "fuzz-key"

static server srv;
static struct event *tick;
static struct sockaddr_un unix_addr;
static socklen_t unix_len;
static struct sockaddr_in tcp_addr;
static fuzz_file conf;

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* One turn of the daemon's loop: whatever is ready runs, else it waits
 * for up to 1 ms. */
static void turn(void)
{
    static const struct timeval ms = {0, 1000};
    event_add(tick, &ms);
    event_base_loop(srv.base, EVLOOP_ONCE);
}

/* Nothing queued, running or finished and unsent; no reload running or
 * waiting to answer. */
static int server_idle(void)
{
    server *s = &srv;
    pthread_mutex_lock(&s->q.mu);
    int busy = s->q.depth > 0 || s->q.done != NULL;
    for (int i = 0; i < s->nworkers; i++)
        busy |= s->workers[i].busy;
    pthread_mutex_unlock(&s->q.mu);
    return !busy && !s->reload_running && s->nwaiters == 0;
}

typedef struct {
    char *b;
    size_t n, cap;
    int eof;  /* the daemon closed (or reset) the connection */
    int lost; /* bytes were dropped: reset, or more than the cap */
} reply;

/* Reads what the daemon has sent so far; returns the bytes read. */
static size_t receive(int fd, reply *r)
{
    size_t got = 0;
    for (;;) {
        char tmp[65536];
        ssize_t n = recv(fd, tmp, sizeof(tmp), MSG_DONTWAIT);
        if (n == 0) {
            r->eof = 1;
            return got;
        }
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                r->eof = r->lost = 1; /* ECONNRESET: TCP may drop what was queued */
            return got;
        }
        got += (size_t)n;
        if (r->n + (size_t)n > (16u << 20)) { /* keep 16 MiB, count the rest */
            r->lost = 1;
            continue;
        }
        if (r->n + (size_t)n > r->cap) {
            size_t cap = r->cap ? r->cap : 65536;
            while (cap < r->n + (size_t)n)
                cap *= 2;
            char *b = realloc(r->b, cap);
            FUZZ_SETUP(b, "out of memory");
            r->b = b;
            r->cap = cap;
        }
        memcpy(r->b + r->n, tmp, (size_t)n);
        r->n += (size_t)n;
    }
}

/* Connects, sends data, and reads the replies until the daemon closes
 * the connection, goes idle or budget seconds pass; then closes. Returns
 * nonzero when it stopped at the budget. */
static int exchange(const struct sockaddr *addr, socklen_t alen, const void *data, size_t size,
                    reply *r, double budget)
{
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_SETUP(fd >= 0, "socket: %s", strerror(errno));
    /* Completes in the kernel (backlog); evhttp accepts on the next turn. */
    FUZZ_SETUP(connect(fd, addr, alen) == 0, "connect: %s", strerror(errno));
    FUZZ_SETUP(fcntl(fd, F_SETFL, O_NONBLOCK) == 0, "fcntl: %s", strerror(errno));
    const char *p = data;
    size_t sent = 0;
    int quiet = 0, cut = 0;
    double t0 = mpd_now();
    for (;;) {
        if (sent < size) {
            ssize_t w = send(fd, p + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                sent += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                sent = size; /* the daemon closed: the rest is not wanted */
        }
        turn();
        size_t got = receive(fd, r);
        if (r->eof)
            break;
        if (got || sent < size || !server_idle())
            quiet = 0;
        else if (++quiet >= 3)
            break;
        if (mpd_now() - t0 > budget) {
            cut = 1;
            break;
        }
    }
    close(fd);
    return cut;
}

/* After a client left: the daemon goes idle with no connection open. */
static void settle(double budget, const char *after)
{
    double t0 = mpd_now();
    int quiet = 0;
    while (quiet < 3) {
        turn();
        /* nconns counts a connection from its first whole request on; a
         * stream from accept on (a body still being read after the client
         * left becomes a request, and a job, later). */
        quiet = server_idle() && srv.nconns == 0 && mpdd_streams_open(&srv) == 0 ? quiet + 1 : 0;
        if (quiet < 3 && mpd_now() - t0 > budget) {
            fprintf(stderr,
                    "fuzz: %.0f s after %s: queue %d, worker busy %d, reload %d, "
                    "connections %d, streams %d\n",
                    budget, after, srv.q.depth, srv.workers[0].busy, srv.reload_running,
                    srv.nconns, mpdd_streams_open(&srv));
            FUZZ_CHECK(!"the daemon settles once its client has left");
        }
    }
}

static int starts(const char *p, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && !memcmp(p, prefix, k);
}

/* "HTTP/M.N CODE " (evhttp echoes the request's version, whatever its
 * numbers): the status code, or -1. */
static int status_code(const char *p, const char *end)
{
    if (end - p < 5 || memcmp(p, "HTTP/", 5))
        return -1;
    p += 5;
    for (int part = 0; part < 2; part++) {
        if (p < end && *p == '-')
            p++;
        const char *d = p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == d || p == end || *p++ != (part ? ' ' : '.'))
            return -1;
    }
    if (end - p < 4 || p[3] != ' ')
        return -1;
    int code = 0;
    for (int i = 0; i < 3; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        code = code * 10 + (p[i] - '0');
    }
    return code >= 100 && code <= 599 ? code : -1;
}

/* The reply stream is a sequence of whole HTTP responses; the last one
 * may be cut when cut is set. */
static void check_replies(const char *b, size_t n, int cut)
{
    size_t off = 0;
    while (off < n) {
        const char *p = b + off;
        size_t left = n - off;
        const char *end = memmem(p, left, "\r\n\r\n", 4);
        if (!end && cut)
            return;
        FUZZ_CHECK(end != NULL);
        const char *sl = memmem(p, left, "\r\n", 2);
        int code = status_code(p, sl);
        FUZZ_CHECK(code > 0);
        /* Header lines: "Name: value", no bare CR or LF inside. */
        long long clen = -1;
        const char *line = sl + 2;
        while (line < end + 2) {
            const char *eol = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
            FUZZ_CHECK(eol != NULL && eol > line);
            const char *colon = memchr(line, ':', (size_t)(eol - line));
            FUZZ_CHECK(colon != NULL && colon > line);
            for (const char *c = line; c < eol; c++)
                FUZZ_CHECK(*c != '\r' && *c != '\n');
            if (colon - line == 14 && !strncasecmp(line, "Content-Length", 14)) {
                char num[32];
                size_t k = (size_t)(eol - colon - 1);
                FUZZ_CHECK(k > 0 && k < sizeof(num));
                memcpy(num, colon + 1, k);
                num[k] = '\0';
                char *e;
                clen = strtoll(num, &e, 10);
                FUZZ_CHECK(*e == '\0' && clen >= 0);
            }
            line = eol + 2;
        }
        off = (size_t)(end + 4 - b);
        left = n - off;
        if ((code >= 100 && code < 200) || code == 204 || code == 304)
            continue;
        if (left == 0 || starts(b + off, left, "HTTP/"))
            continue; /* after HEAD (or cut just after the headers) */
        if (clen < 0) /* no length: the body runs to the close */
            return;
        if ((size_t)clen > left && cut)
            return;
        FUZZ_CHECK((size_t)clen <= left);
        off += (size_t)clen;
    }
}

/* Whether the input names a key, and so goes to the TCP listener. */
static int mentions_key(const uint8_t *d, size_t n)
{
    static const char *const words[] = {"api_key", "x-api-key", "authorization"};
    for (size_t w = 0; w < sizeof(words) / sizeof(words[0]); w++) {
        size_t k = strlen(words[w]);
        for (size_t i = 0; i + k <= n; i++)
            if (!strncasecmp((const char *)d + i, words[w], k))
                return 1;
    }
    return 0;
}

static void health(void)
{
    static const char req[] = "GET /v1/health HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n";
    reply r = {0};
    exchange((struct sockaddr *)&unix_addr, unix_len, req, sizeof(req) - 1, &r, 1.0);
    if (!starts(r.b, r.n, "HTTP/1.1 200 "))
        fprintf(stderr, "fuzz: GET /v1/health got %zu bytes: %.*s\n", r.n,
                (int)(r.n < 300 ? r.n : 300), r.b ? r.b : "");
    FUZZ_CHECK(starts(r.b, r.n, "HTTP/1.1 200 "));
    FUZZ_CHECK(!srv.draining && !atomic_load(&srv.fatal));
    free(r.b);
    settle(1.0, "the health check");
}

/* A listening socket of ours for evhttp. */
static void serve(int family, struct sockaddr *sa, socklen_t *len)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    FUZZ_SETUP(fd >= 0, "socket: %s", strerror(errno));
    FUZZ_SETUP(bind(fd, sa, *len) == 0, "bind: %s", strerror(errno));
    FUZZ_SETUP(listen(fd, 64) == 0, "listen: %s", strerror(errno));
    FUZZ_SETUP(getsockname(fd, sa, len) == 0, "getsockname: %s", strerror(errno));
    FUZZ_SETUP(evhttp_accept_socket_with_handle(srv.http, fd), "evhttp_accept_socket failed");
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = fuzz_path("MPD_FUZZ_MODEL_DIR", "models");
    char models[4096];
    FUZZ_SETUP(realpath(dir, models), "%s: %s", dir, strerror(errno));
    /* The daemon's configuration, in a memfd: a POST /v1/reload reads it
     * again. Small limits keep every input quick: max_pixels takes
     * darknet's photos up to 773 x 512 and refuses bigger ones (kite.jpg)
     * before decoding. */
    char text[8192];
    int n = snprintf(text, sizeof(text),
                     "cfg = %s/yolov3-tiny.cfg\n"
                     "weights = %s/yolov3-tiny.weights\n"
                     "names = %s/coco.names\n"
                     "backend = cpu\nthreads = 1\nworkers = 1\n"
                     "max_body = 4M\nmax_header = 8k\nmax_pixels = 1000000\n"
                     "queue_depth = 4\nmax_clients = 8\ntimeout = 5\n"
                     "allow_root = yes\napi_key = " KEY "\nlog_level = err\n",
                     models, models, models);
    FUZZ_SETUP(n > 0 && (size_t)n < sizeof(text), "model path too long");
    fuzz_file_open(&conf, "mpdetd.conf");
    fuzz_file_set(&conf, text, (size_t)n);
    char msg[1024];
    FUZZ_SETUP(mpdd_server_init(&srv, conf.path, NULL, msg, sizeof(msg)) == 0, "%s", msg);
    FUZZ_SETUP(mpdd_server_start(&srv, 0, msg, sizeof(msg)) == 0, "%s", msg);
    tick = event_new(srv.base, -1, 0, on_tick, NULL);
    FUZZ_SETUP(tick, "event_new failed");

    unix_addr.sun_family = AF_UNIX;
    int k = snprintf(unix_addr.sun_path + 1, sizeof(unix_addr.sun_path) - 1, "mpdet-fuzz-http-%d",
                     (int)getpid());
    unix_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)k);
    serve(AF_UNIX, (struct sockaddr *)&unix_addr, &unix_len);
    tcp_addr.sin_family = AF_INET;
    tcp_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t tlen = sizeof(tcp_addr);
    serve(AF_INET, (struct sockaddr *)&tcp_addr, &tlen);

    double t0 = mpd_now();
    while (!srv.ready && !srv.load_failed && mpd_now() - t0 < 120)
        turn();
    FUZZ_SETUP(srv.ready, "the model did not load: %s", srv.load_error);
    health();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reply r = {0};
    int cut = mentions_key(data, size)
                  ? exchange((struct sockaddr *)&tcp_addr, sizeof(tcp_addr), data, size, &r, 3.0)
                  : exchange((struct sockaddr *)&unix_addr, unix_len, data, size, &r, 3.0);
    check_replies(r.b, r.n, cut || r.lost);
    free(r.b);
    settle(4.0, "the client left");
    health();
    return 0;
}
