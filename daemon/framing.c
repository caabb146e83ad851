/* framing.c - HTTP/1.1 request framing ahead of evhttp (see framing.h).
 * Each rule below is how libevent 2.1.12's http.c reads the same bytes;
 * lines are what evbuffer_readln(EVBUFFER_EOL_CRLF) returns, read as C
 * strings (evhttp stops at a NUL too). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "framing.h"

void mpdd_framing_init(mpdd_framing *f, uint64_t max_body, size_t max_header)
{
    memset(f, 0, sizeof(*f));
    f->state = MPDD_FR_REQUEST_LINE;
    f->max_body = max_body;
    f->max_header = max_header;
    f->length = -1;
}

uint64_t mpdd_framing_body_left(const mpdd_framing *f)
{
    return f->state == MPDD_FR_BODY || f->state == MPDD_FR_CHUNK_DATA ? f->left : 0;
}

void mpdd_framing_bytes(mpdd_framing *f, uint64_t n)
{
    f->left -= n;
    if (f->left == 0)
        f->state = f->state == MPDD_FR_BODY ? MPDD_FR_REQUEST_LINE : MPDD_FR_CHUNK_SIZE;
}

size_t mpdd_framing_line_max(const mpdd_framing *f)
{
    return f->state == MPDD_FR_CHUNK_SIZE ? MPDD_FRAMING_SIZE_LINE_MAX : f->max_header + 2;
}

static int fail(mpdd_framing *f, const char *why, const char *ending)
{
    f->error = why;
    f->ending = ending;
    f->state = MPDD_FR_DROP;
    return -1;
}

int mpdd_framing_overlong(mpdd_framing *f)
{
    if (f->state == MPDD_FR_CHUNK_SIZE)
        return fail(f, "a chunk-size line is longer than 1 KiB", "0\r\n\r\n");
    f->state = MPDD_FR_PASS; /* evhttp's max_header decides */
    return 0;
}

/* Which methods evhttp reads a body for (evhttp_method_may_have_body):
 * 1 POST, PUT, PATCH; 0 the other methods it knows; -1 one it does not. */
static int method_body(const char *line)
{
    static const char *const with[] = {"POST", "PUT", "PATCH"};
    static const char *const without[] = {"GET", "HEAD", "DELETE", "OPTIONS", "TRACE", "CONNECT"};
    const char *sp = strchr(line, ' ');
    if (!sp)
        return -1;
    size_t n = (size_t)(sp - line);
    for (size_t i = 0; i < sizeof(with) / sizeof(with[0]); i++)
        if (strlen(with[i]) == n && !memcmp(line, with[i], n))
            return 1;
    for (size_t i = 0; i < sizeof(without) / sizeof(without[0]); i++)
        if (strlen(without[i]) == n && !memcmp(line, without[i], n))
            return 0;
    return -1;
}

/* Splits "key: value" as evhttp_parse_headers_ does: the key up to the
 * first colon, the value without leading spaces and trailing blanks.
 * Returns the value, or NULL when the line has no colon. */
static char *split_header(char *line)
{
    char *colon = strchr(line, ':');
    if (!colon)
        return NULL;
    *colon = '\0';
    char *v = colon + 1;
    v += strspn(v, " ");
    size_t n = strlen(v);
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t' || v[n - 1] == '\r' || v[n - 1] == '\n'))
        v[--n] = '\0';
    return v;
}

/* Whether evhttp_add_header would take the header: no CR or LF in the key,
 * and one in the value only before a blank (a folded value). */
static int header_valid(const char *key, const char *value)
{
    if (strpbrk(key, "\r\n"))
        return 0;
    for (const char *p = value; (p = strpbrk(p, "\r\n")) != NULL;) {
        p += strspn(p, "\r\n");
        if (*p != ' ' && *p != '\t')
            return 0;
    }
    return 1;
}

/* The headers are read: where the body starts (evhttp_get_body). */
static void end_of_headers(mpdd_framing *f)
{
    f->state = MPDD_FR_REQUEST_LINE;
    if (!f->may_have_body)
        return;
    if (f->chunked) {
        f->state = MPDD_FR_CHUNK_SIZE;
        f->body_size = 0;
        return;
    }
    if (f->length < 0)
        return; /* no body (or evhttp's 400 when Connection says keep-alive) */
    if ((uint64_t)f->length > f->max_body) {
        f->state = MPDD_FR_PASS; /* evhttp's 413 */
        return;
    }
    if (f->length > 0) {
        f->state = MPDD_FR_BODY;
        f->left = (uint64_t)f->length;
    }
}

static int header_line(mpdd_framing *f, char *line)
{
    if (*line == '\0') {
        end_of_headers(f);
        return 0;
    }
    if (*line == ' ' || *line == '\t') {
        /* Folded onto the previous header: if that was the TE or CL that
         * counts, its value changes in ways not worth following. */
        if (f->last_framing)
            f->state = MPDD_FR_PASS;
        return 0;
    }
    f->last_framing = 0;
    char *value = split_header(line);
    if (!value) {
        f->state = MPDD_FR_PASS; /* evhttp's 400 */
        return 0;
    }
    if (!f->te_seen && !strcasecmp(line, "Transfer-Encoding")) {
        f->te_seen = f->last_framing = 1;
        f->chunked = !strcasecmp(value, "chunked");
    } else if (!f->cl_seen && !strcasecmp(line, "Content-Length")) {
        f->cl_seen = f->last_framing = 1;
        char *end;
        long long n = strtoll(value, &end, 10);
        if (*value == '\0' || *end != '\0' || n < 0)
            f->state = MPDD_FR_PASS; /* evhttp's 400 (when it reads a body) */
        else
            f->length = n;
    }
    return 0;
}

static int chunk_size_line(mpdd_framing *f, const char *line)
{
    if (*line == '\0')
        return 0; /* the CRLF after chunk data: evhttp skips empty lines */
    char *end;
    long long n = strtoll(line, &end, 16);
    if ((*end != '\0' && *end != ' ') || n < 0)
        return fail(f, "a chunk size is not a hexadecimal number (or has an extension)",
                    "0\r\n\r\n");
    if ((uint64_t)n > f->max_body - f->body_size) {
        f->state = MPDD_FR_PASS; /* evhttp's 413, rightly */
        return 0;
    }
    f->body_size += (uint64_t)n;
    if (n == 0)
        f->state = MPDD_FR_TRAILERS;
    else {
        f->state = MPDD_FR_CHUNK_DATA;
        f->left = (uint64_t)n;
    }
    return 0;
}

static int trailer_line(mpdd_framing *f, char *line)
{
    if (*line == '\0') {
        f->state = MPDD_FR_REQUEST_LINE;
        return 0;
    }
    if (*line == ' ' || *line == '\t')
        return 0; /* folded onto the last header (Transfer-Encoding at least) */
    char *value = split_header(line);
    if (!value || !header_valid(line, value))
        return fail(f, "a trailer line is not a header", "\r\n");
    return 0;
}

int mpdd_framing_line(mpdd_framing *f, const char *raw, size_t len)
{
    char *line = malloc(len + 1);
    if (!line) {
        f->state = MPDD_FR_PASS;
        return 0;
    }
    memcpy(line, raw, len);
    line[len] = '\0';
    int rc = 0;
    /* evhttp counts every header line against max_header, the request line
     * and the trailers included; past it, it answers by itself. */
    if (f->state == MPDD_FR_REQUEST_LINE)
        f->headers_size = 0;
    if (f->state == MPDD_FR_REQUEST_LINE || f->state == MPDD_FR_HEADERS ||
        f->state == MPDD_FR_TRAILERS) {
        f->headers_size += len;
        if (f->headers_size > f->max_header) {
            f->state = MPDD_FR_PASS;
            free(line);
            return 0;
        }
    }
    switch (f->state) {
    case MPDD_FR_REQUEST_LINE: {
        int body = method_body(line);
        if (body < 0) {
            f->state = MPDD_FR_PASS; /* evhttp's 400, or a method it does not know */
            break;
        }
        mpdd_framing_init(f, f->max_body, f->max_header);
        f->headers_size = len;
        f->may_have_body = body;
        f->state = MPDD_FR_HEADERS;
        break;
    }
    case MPDD_FR_HEADERS: rc = header_line(f, line); break;
    case MPDD_FR_CHUNK_SIZE: rc = chunk_size_line(f, line); break;
    case MPDD_FR_TRAILERS: rc = trailer_line(f, line); break;
    default: break;
    }
    free(line);
    return rc;
}

/* Ends the body at buffer offset off: what is before stays, the rest is
 * replaced by f->ending (state DROP), or everything stays and the state is
 * PASS when memory runs out (evhttp then answers as it would have). */
static void end_body(struct evbuffer *buf, mpdd_framing_input *in, size_t off)
{
    struct evbuffer *keep = evbuffer_new();
    if (!keep || evbuffer_remove_buffer(buf, keep, off) != (int)off) {
        if (keep) {
            evbuffer_prepend_buffer(buf, keep);
            evbuffer_free(keep);
        }
        in->f.state = MPDD_FR_PASS;
        in->f.error = NULL;
        return;
    }
    evbuffer_drain(buf, evbuffer_get_length(buf));
    evbuffer_add_buffer(buf, keep);
    evbuffer_add(buf, in->f.ending, strlen(in->f.ending));
    evbuffer_free(keep);
}

void mpdd_framing_on_input(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    mpdd_framing_input *in = arg;
    mpdd_framing *f = &in->f;
    in->added += info->n_added;
    in->deleted += info->n_deleted;
    if (in->busy || info->n_added == 0)
        return;
    in->busy = 1; /* our own changes come back here */
    if (f->state == MPDD_FR_DROP) {
        /* After the cut nothing more may reach evhttp: drop the bytes just
         * added (at the end of the buffer). */
        size_t len = evbuffer_get_length(buf), n = info->n_added;
        struct evbuffer *keep = evbuffer_new();
        if (keep && evbuffer_remove_buffer(buf, keep, len - n) == (int)(len - n)) {
            evbuffer_drain(buf, n);
            evbuffer_add_buffer(buf, keep);
        }
        if (keep)
            evbuffer_free(keep);
        in->busy = 0;
        return;
    }
    for (;;) {
        if (f->state == MPDD_FR_PASS || f->state == MPDD_FR_DROP)
            break;
        if (in->seen < in->deleted) { /* read past the check: not followed */
            f->state = MPDD_FR_PASS;
            break;
        }
        size_t off = (size_t)(in->seen - in->deleted);
        uint64_t have = in->added - in->seen;
        if (have == 0)
            break;
        uint64_t left = mpdd_framing_body_left(f);
        if (left) {
            uint64_t n = left < have ? left : have;
            mpdd_framing_bytes(f, n);
            in->seen += n;
            continue;
        }
        struct evbuffer_ptr start, at;
        size_t eol = 0, max = mpdd_framing_line_max(f);
        if (evbuffer_ptr_set(buf, &start, off, EVBUFFER_PTR_SET) != 0) {
            f->state = MPDD_FR_PASS;
            break;
        }
        at = evbuffer_search_eol(buf, &start, &eol, EVBUFFER_EOL_CRLF);
        if (at.pos < 0 || (size_t)at.pos - off > max) {
            if (at.pos < 0 && have <= max)
                break; /* the rest of the line is still to come */
            if (mpdd_framing_overlong(f) != 0)
                end_body(buf, in, off);
            break;
        }
        size_t len = (size_t)at.pos - off;
        char stack[512];
        char *line = len <= sizeof(stack) ? stack : malloc(len);
        if (!line) {
            f->state = MPDD_FR_PASS;
            break;
        }
        evbuffer_copyout_from(buf, &start, line, len);
        int rc = mpdd_framing_line(f, line, len);
        if (line != stack)
            free(line);
        if (rc != 0) {
            end_body(buf, in, off);
            break;
        }
        in->seen += len + eol;
    }
    in->busy = 0;
}
