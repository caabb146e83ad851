/* test_framing.c - the request framing check of daemon/framing.c, driven
 * as the daemon drives it: the callback on an evbuffer that bytes are
 * added to (whole, a byte at a time, in uneven pieces) and that "evhttp"
 * drains from the front as it would. Well-framed streams must come out
 * untouched; a malformed chunked body must be cut at its bad line and
 * ended; where evhttp answers by itself, or the stream is one evhttp reads
 * in ways not followed, the check must step aside. The rules are evhttp
 * 2.1.12's (http.c: evhttp_handle_chunked_read, evhttp_parse_headers_,
 * evhttp_get_body); the daemon test test_chunked_framing checks the same
 * against the real evhttp. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "framing.h"

#define MAX_BODY 4096
#define MAX_HEADER 1024

typedef struct {
    struct evbuffer *buf;
    mpdd_framing_input in;
} stream;

static void open_stream(stream *s)
{
    memset(s, 0, sizeof(*s));
    mpdd_framing_init(&s->in.f, MAX_BODY, MAX_HEADER);
    s->buf = evbuffer_new();
    assert_non_null(s->buf);
    assert_non_null(evbuffer_add_cb(s->buf, mpdd_framing_on_input, &s->in));
}

/* What the buffer holds now, as a NUL-terminated copy (free it). */
static char *contents(stream *s, size_t *len)
{
    *len = evbuffer_get_length(s->buf);
    char *out = malloc(*len + 1);
    assert_non_null(out);
    evbuffer_copyout(s->buf, out, *len);
    out[*len] = '\0';
    return out;
}

/* Feeds data in pieces of `piece` bytes (0: all at once); with drain set,
 * after each piece "evhttp" takes from the front part of what the check
 * has already read, as evhttp takes whole lines and chunks. Returns the
 * bytes drained. */
static size_t feed(stream *s, const char *data, size_t len, size_t piece, int drain)
{
    size_t drained = 0;
    for (size_t i = 0; i < len;) {
        size_t n = piece ? piece : len;
        if (n > len - i)
            n = len - i;
        assert_int_equal(evbuffer_add(s->buf, data + i, n), 0);
        i += n;
        if (drain && s->in.f.state != MPDD_FR_DROP && s->in.seen > s->in.deleted) {
            size_t take = (size_t)(s->in.seen - s->in.deleted);
            take -= take / 3; /* not always all of it */
            evbuffer_drain(s->buf, take);
            drained += take;
        }
    }
    return drained;
}

static void close_stream(stream *s)
{
    evbuffer_free(s->buf);
}

/* A stream that must pass untouched, fed every way. */
static void check_untouched(const char *data, size_t len, mpdd_framing_state end)
{
    const size_t pieces[] = {0, 1, 2, 3, 7, 64};
    for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
        for (int drain = 0; drain < 2; drain++) {
            stream s;
            open_stream(&s);
            size_t drained = feed(&s, data, len, pieces[p], drain);
            size_t n;
            char *got = contents(&s, &n);
            assert_int_equal(n + drained, len);
            assert_memory_equal(got, data + drained, n);
            assert_null(s.in.f.error);
            assert_int_equal(s.in.f.state, end);
            free(got);
            close_stream(&s);
        }
    }
}

/* A stream whose chunked body is malformed at byte `bad`: the buffer must
 * hold what came before it, then `ending`, and nothing else. */
static void check_cut(const char *data, size_t len, size_t bad, const char *ending,
                      const char *why)
{
    const size_t pieces[] = {0, 1, 5, 100};
    for (size_t p = 0; p < sizeof(pieces) / sizeof(pieces[0]); p++) {
        stream s;
        open_stream(&s);
        feed(&s, data, len, pieces[p], 0);
        size_t n;
        char *got = contents(&s, &n);
        assert_int_equal(n, bad + strlen(ending));
        assert_memory_equal(got, data, bad);
        assert_string_equal(got + bad, ending);
        assert_non_null(s.in.f.error);
        assert_non_null(strstr(s.in.f.error, why));
        assert_int_equal(s.in.f.state, MPDD_FR_DROP);
        /* and bytes that come later (a pipelined request) are dropped */
        evbuffer_add(s.buf, "GET / HTTP/1.1\r\n\r\n", 18);
        assert_int_equal(s.in.f.state, MPDD_FR_DROP);
        assert_int_equal(evbuffer_get_length(s.buf), n);
        free(got);
        close_stream(&s);
    }
}

#define S(x) x, sizeof(x) - 1
#define POST_CHUNKED "POST /v1/detect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

static void test_well_framed_streams_pass_untouched(void **state)
{
    (void)state;
    /* GET, a Content-Length POST, chunked POSTs (upper- and lower-case
     * hex, empty lines between chunks, a trailer, a folded trailer), a
     * chunked PUT, and a GET whose Transfer-Encoding evhttp ignores. */
    static const char stream_a[] =
        "GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n"
        "POST /v1/detect HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
        POST_CHUNKED "5\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n"
        POST_CHUNKED "a\r\n0123456789\r\n\r\n\r\n3\r\nxyz\r\n0\r\nX-Sum: 1\r\n  more\r\n\r\n"
        "PUT /x HTTP/1.1\ntransfer-encoding: CHUNKED\n\n2\nab\n0\n\n"
        "GET /v1/health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        "HEAD /v1/health HTTP/1.1\r\n\r\n";
    check_untouched(S(stream_a), MPDD_FR_REQUEST_LINE);
    /* What evhttp's strtoll reading accepts: leading blanks, a 0x prefix,
     * text after a space, a line of blanks (size 0: the last chunk), and a
     * NUL that ends the line for it. */
    static const char stream_b[] = POST_CHUNKED " 4\r\nabcd\r\n0x3\r\nabc\r\n2 ext\r\nab\r\n"
                                                "1\0junk\r\nz\r\n  \r\n\r\n"
                                                "GET / HTTP/1.1\r\n\r\n";
    check_untouched(S(stream_b), MPDD_FR_REQUEST_LINE);
}

static void test_malformed_chunks_are_cut(void **state)
{
    (void)state;
    const char *end = "0\r\n\r\n";
    size_t h = strlen(POST_CHUNKED);
    check_cut(S(POST_CHUNKED "zz\r\nabc\r\n0\r\n\r\n"), h, end, "not a hexadecimal number");
    check_cut(S(POST_CHUNKED "4;name=value\r\nabcd\r\n0\r\n\r\n"), h, end, "extension");
    check_cut(S(POST_CHUNKED "-4\r\nabcd\r\n0\r\n\r\n"), h, end, "hexadecimal");
    check_cut(S(POST_CHUNKED "4\r\nabcd\r\n4x\r\nabcd\r\n0\r\n\r\n"), h + 9, end, "hexadecimal");
    /* data not followed by its CRLF: the next "size line" is data */
    check_cut(S(POST_CHUNKED "4\r\nabcdXYZ\r\n0\r\n\r\n"), h + 7, end, "hexadecimal");
    /* a CR inside the line is not a line end for evhttp */
    check_cut(S(POST_CHUNKED "4\r\r\nabcd\r\n0\r\n\r\n"), h, end, "hexadecimal");
    /* a trailer that is not a header ends the trailers instead */
    check_cut(S(POST_CHUNKED "4\r\nabcd\r\n0\r\nnot a header\r\n\r\n"), h + 12, "\r\n",
              "trailer");
    check_cut(S(POST_CHUNKED "0\r\nBad\rKey: v\r\n\r\n"), h + 3, "\r\n", "trailer");
}

static void test_overlong_size_line(void **state)
{
    (void)state;
    size_t h = strlen(POST_CHUNKED), n = h + 2000;
    char *data = malloc(n);
    assert_non_null(data);
    memcpy(data, POST_CHUNKED, h);
    memset(data + h, ' ', 2000);
    /* no line end yet: cut as soon as the line passes 1 KiB */
    stream s;
    open_stream(&s);
    feed(&s, data, h + MPDD_FRAMING_SIZE_LINE_MAX, 1, 0);
    assert_null(s.in.f.error);
    feed(&s, data + h + MPDD_FRAMING_SIZE_LINE_MAX, 1, 1, 0);
    assert_non_null(s.in.f.error);
    size_t len;
    char *got = contents(&s, &len);
    assert_int_equal(len, h + 5);
    assert_string_equal(got + h, "0\r\n\r\n");
    free(got);
    close_stream(&s);
    free(data);
}

/* Where evhttp answers by itself, or reads the stream in a way the check
 * does not follow, the check steps aside (PASS) and changes nothing. */
static void test_steps_aside(void **state)
{
    (void)state;
    char big[128];
    snprintf(big, sizeof(big), POST_CHUNKED "%x\r\n", MAX_BODY + 1);
    check_untouched(big, strlen(big), MPDD_FR_PASS); /* evhttp's 413 */
    check_untouched(S(POST_CHUNKED "800\r\n"), MPDD_FR_CHUNK_DATA);
    snprintf(big, sizeof(big), "POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n", MAX_BODY + 1);
    check_untouched(big, strlen(big), MPDD_FR_PASS);
    check_untouched(S("POST / HTTP/1.1\r\nContent-Length: 5x\r\n\r\nhello"), MPDD_FR_PASS);
    check_untouched(S("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n , gzip\r\n\r\nzz\r\n"),
                    MPDD_FR_PASS);
    check_untouched(S("BREW /pot HTTP/1.1\r\n\r\nzz\r\n"), MPDD_FR_PASS);
    check_untouched(S("\r\nPOST / HTTP/1.1\r\n"), MPDD_FR_PASS);
    check_untouched(S("POST / HTTP/1.1\r\nno colon here\r\n\r\n"), MPDD_FR_PASS);
    /* the headers over max_header: evhttp's 400 */
    char *h = malloc(MAX_HEADER + 100);
    assert_non_null(h);
    int n = snprintf(h, MAX_HEADER + 100, "POST / HTTP/1.1\r\nX: %0*d\r\n", MAX_HEADER, 0);
    check_untouched(h, (size_t)n, MPDD_FR_PASS);
    free(h);
    /* not chunked (evhttp compares the whole value): Content-Length rules */
    check_untouched(S("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n"
                      "Content-Length: 2\r\n\r\nzzGET / HTTP/1.1\r\n\r\n"),
                    MPDD_FR_REQUEST_LINE);
    /* evhttp reads the first Transfer-Encoding only */
    check_untouched(S("POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n"
                      "Transfer-Encoding: chunked\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
                    MPDD_FR_REQUEST_LINE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_well_framed_streams_pass_untouched),
        cmocka_unit_test(test_malformed_chunks_are_cut),
        cmocka_unit_test(test_overlong_size_line),
        cmocka_unit_test(test_steps_aside),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
