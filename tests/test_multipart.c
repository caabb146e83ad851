/* test_multipart.c - the multipart/form-data reader of the DeepStack /
 * CodeProject.AI endpoint: bodies framed exactly as curl 7.88 frames
 * `curl -F image=@dog.jpg -F min_confidence=0.4` (checked byte for byte
 * against a captured request while this was written), with darknet's real
 * dog.jpg inside, then adversarial bodies. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "multipart.h"
#include "testutil.h"

static char msg[512];

/* curl's boundary: 24 dashes and 16 hex digits. */
#define B "------------------------2ef5f7c4b75dba8e"
#define CT "multipart/form-data; boundary=" B
#define B_SHORT "------------------------2ef5f7c4b75dba8"

typedef struct {
    unsigned char *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* The body curl sends for -F image=@<file> -F min_confidence=0.4: the file
 * part (with curl's guessed Content-Type), then the plain field. */
static buf curl_body(const unsigned char *img, size_t n)
{
    buf b = {0};
    puts_(&b, "--" B "\r\n"
              "Content-Disposition: form-data; name=\"image\"; filename=\"dog.jpg\"\r\n"
              "Content-Type: image/jpeg\r\n"
              "\r\n");
    put(&b, img, n);
    puts_(&b, "\r\n--" B "\r\n"
              "Content-Disposition: form-data; name=\"min_confidence\"\r\n"
              "\r\n"
              "0.4\r\n"
              "--" B "--\r\n");
    return b;
}

static unsigned char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)sz);
    *n = fread(p, 1, (size_t)sz, f);
    fclose(f);
    return p;
}

/* Every error message must be safe to log and to put into a JSON reply. */
static void assert_printable(const char *s)
{
    for (; *s; s++)
        assert_true((unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f);
}

/* Runs the reader on a NUL-terminated body text. */
static int field(const char *ct, const char *body, const char *name, const unsigned char **d,
                 size_t *n, int *found)
{
    msg[0] = '\0';
    int rc = mpdd_multipart_field(ct, (const unsigned char *)body, strlen(body), name, d, n, found,
                                  msg, sizeof(msg));
    if (rc)
        assert_printable(msg);
    return rc;
}

/* Expects body to be refused, with words in the message. */
static void expect_parse_error(const char *ct, const char *body, size_t len, const char *words)
{
    const unsigned char *d = (const unsigned char *)"x";
    size_t n = 7;
    int found = 7;
    msg[0] = '\0';
    int rc = mpdd_multipart_field(ct, (const unsigned char *)body, len, "image", &d, &n, &found,
                                  msg, sizeof(msg));
    if (rc != MPD_EPARSE || !strstr(msg, words))
        print_error("body:\n%.*s\n-> rc %d '%s' (wanted '%s')\n", (int)len, body, rc, msg, words);
    assert_int_equal(rc, MPD_EPARSE);
    assert_non_null(strstr(msg, words));
    assert_printable(msg);
    /* Outputs are reset before any work, so a caller never sees stale ones. */
    assert_null(d);
    assert_int_equal(n, 0);
    assert_int_equal(found, 0);
}

static void expect_error_text(const char *ct, const char *body, const char *words)
{
    expect_parse_error(ct, body, strlen(body), words);
}

static void test_curl_body_with_dog_jpg(void **state)
{
    (void)state;
    char *path = tu_darknet_data("dog.jpg");
    size_t n;
    unsigned char *img = read_file(path, &n);
    free(path);
    if (!img) {
        skip();
        return;
    }
    buf b = curl_body(img, n);
    /* curl 7.88.1 sent a 164051-byte body for the 163759-byte dog.jpg. */
    assert_int_equal(b.len - n, 164051 - 163759);

    const unsigned char *d;
    size_t dn;
    int found;
    assert_int_equal(
        mpdd_multipart_field(CT, b.p, b.len, "image", &d, &dn, &found, msg, sizeof(msg)), 0);
    assert_int_equal(found, 1);
    assert_int_equal(dn, n);
    assert_true(d > b.p && d + dn < b.p + b.len); /* points into the body */
    assert_memory_equal(d, img, n);

    assert_int_equal(
        mpdd_multipart_field(CT, b.p, b.len, "min_confidence", &d, &dn, &found, msg, sizeof(msg)),
        0);
    assert_int_equal(found, 1);
    assert_int_equal(dn, 3);
    assert_memory_equal(d, "0.4", 3);

    /* Names match exactly: no prefixes, no case folding. */
    static const char *missing[] = {"images", "imag", "Image", "", "min_confidence "};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        d = (const unsigned char *)"stale";
        assert_int_equal(
            mpdd_multipart_field(CT, b.p, b.len, missing[i], &d, &dn, &found, msg, sizeof(msg)), 0);
        assert_int_equal(found, 0);
        assert_null(d);
        assert_int_equal(dn, 0);
    }

    /* Truncated anywhere before the closing "--": refused, never a partial
     * image. Sampled around the interesting places and through the JPEG. */
    size_t close_at = b.len - 4; /* the "--\r\n" after the last boundary */
    for (size_t cut = 0; cut < close_at; cut += (cut < 300 || cut > close_at - 200) ? 1 : 997) {
        int rc = mpdd_multipart_field(CT, b.p, cut, "image", &d, &dn, &found, msg, sizeof(msg));
        if (rc != MPD_EPARSE)
            print_error("cut at %zu of %zu: rc %d\n", cut, b.len, rc);
        assert_int_equal(rc, MPD_EPARSE);
        assert_printable(msg);
    }
    /* With or without the final CRLF, the close delimiter ends the body. */
    for (size_t cut = close_at + 2; cut <= b.len; cut++) {
        assert_int_equal(
            mpdd_multipart_field(CT, b.p, cut, "image", &d, &dn, &found, msg, sizeof(msg)), 0);
        assert_int_equal(found, 1);
        assert_int_equal(dn, n);
    }
    free(b.p);
    free(img);
}

/* A stand-in image full of the bytes that trip naive readers. */
static void test_binary_safe(void **state)
{
    (void)state;
    static const unsigned char img[] =
        "\xff\xd8\0\0\r\n\r\nz--" B "\r\n\r\n" /* not at a line start */
        "\r\n-" B "\r\n"                       /* one dash short */
        "\r\n--" B_SHORT "\r\n"                /* a prefix of the boundary */
        "\r\r\n\n\0--" B "--\r\n"              /* after CR CR LF LF NUL */
        "\xff\xd9";
    buf b = curl_body(img, sizeof(img) - 1);
    const unsigned char *d;
    size_t dn;
    int found;
    int rc = mpdd_multipart_field(CT, b.p, b.len, "image", &d, &dn, &found, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(found, 1);
    assert_int_equal(dn, sizeof(img) - 1);
    assert_memory_equal(d, img, dn);
    free(b.p);
}

static void test_content_type_forms(void **state)
{
    (void)state;
    const char *body = "--abc\r\n"
                       "Content-Disposition: form-data; name=\"image\"\r\n"
                       "\r\n"
                       "DATA\r\n"
                       "--abc--\r\n";
    static const char *good[] = {
        "multipart/form-data; boundary=abc",
        "multipart/form-data;boundary=abc",
        "Multipart/Form-Data; BOUNDARY=abc",
        "multipart/form-data; boundary=\"abc\"",
        "multipart/form-data; charset=utf-8; boundary=abc; x=\"y;z\"",
        "  multipart/form-data ; boundary=abc ;",
        "multipart/form-data; boundary=\"a\\bc\"", /* a quoted-pair is the character */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        const unsigned char *d;
        size_t n;
        int found;
        int rc = field(good[i], body, "image", &d, &n, &found);
        if (rc)
            print_error("'%s': %s\n", good[i], msg);
        assert_int_equal(rc, 0);
        assert_int_equal(found, 1);
        assert_int_equal(n, 4);
        assert_memory_equal(d, "DATA", 4);
    }

    /* Quoting lets a boundary hold characters a token cannot. */
    const char *spaced = "--a b:c\r\n"
                         "Content-Disposition: form-data; name=\"image\"\r\n\r\nX\r\n"
                         "--a b:c--";
    const unsigned char *d;
    size_t n;
    int found;
    assert_int_equal(
        field("multipart/form-data; boundary=\"a b:c\"", spaced, "image", &d, &n, &found), 0);
    assert_int_equal(found, 1);
    assert_int_equal(n, 1);

    static const struct {
        const char *ct, *words;
    } bad[] = {
        {"image/jpeg", "not multipart/form-data"},
        {"multipart/mixed; boundary=abc", "not multipart/form-data"},
        {"multipart/form-datax; boundary=abc", "not multipart/form-data"},
        {"", "not multipart/form-data"},
        {"multipart/form-data", "no boundary parameter"},
        {"multipart/form-data; charset=utf-8", "no boundary parameter"},
        {"multipart/form-data; xboundary=abc", "no boundary parameter"},
        {"multipart/form-data; boundary=", "malformed Content-Type"},
        {"multipart/form-data; boundary=\"\"", "empty"},
        {"multipart/form-data; boundary=\"abc", "malformed Content-Type"},
        {"multipart/form-data; boundary=abc; boundary=abc", "two boundary"},
        {"multipart/form-data; boundary=\"abc \"", "ends in a space"},
        {"multipart/form-data; boundary=ab[c", "RFC 2046"},
        {"multipart/form-data; boundary="
         "12345678901234567890123456789012345678901234567890123456789012345678901",
         "longer than 70"},
        {"multipart/form-data boundary=abc", "malformed Content-Type"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_error_text(bad[i].ct, body, bad[i].words);
}

#define CTX "multipart/form-data; boundary=XyZ"
#define CD(name) "Content-Disposition: form-data; name=\"" name "\"\r\n"

static void test_malformed_bodies(void **state)
{
    (void)state;
    static const struct {
        const char *body, *words;
    } bad[] = {
        {"", "no opening boundary"},
        {"no boundary here at all", "no opening boundary"},
        {"--XyZ--\r\n", "no parts"},
        /* missing closing delimiter, in all its forms */
        {"--XyZ\r\n" CD("image") "\r\nDATA", "no closing boundary"},
        {"--XyZ\r\n" CD("image") "\r\nDATA\r\n", "no closing boundary"},
        {"--XyZ\r\n" CD("image") "\r\nDATA\r\n--XyZ", "ends inside a boundary line"},
        {"--XyZ\r\n" CD("image") "\r\nDATA\r\n--XyZ-", "ends inside a boundary line"},
        {"--XyZ\r\n" CD("image") "\r\nDATA\r\n--XyZ\r\n", "no closing boundary"},
        {"--XyZ", "ends inside a boundary line"},
        /* LF-only line endings are refused */
        {"--XyZ\nContent-Disposition: form-data; name=\"image\"\n\nDATA\n--XyZ--\n",
         "bare LF; lines must end in CRLF"},
        {"--XyZ\r\nContent-Disposition: form-data; name=\"image\"\n\nDATA\r\n--XyZ--\r\n",
         "not ended by an empty line"},
        {"--XyZ\r\nContent-Disposition: form-data; name=\"image\"\r\n\nDATA\r\n--XyZ--\r\n",
         "not ended by an empty line"},
        {"--XyZ\r\nContent-Disposition: form-data; name=\"image\"\nX: y\r\n\r\nD\r\n--XyZ--",
         "stray CR, LF or NUL"},
        /* the boundary at a line start but followed by more */
        {"--XyZ\r\n" CD("image") "\r\nDA\r\n--XyZW\r\nTA\r\n--XyZ--\r\n",
         "followed by other bytes"},
        {"--XyZz\r\n" CD("image") "\r\nDATA\r\n--XyZ--\r\n", "followed by other bytes"},
        /* header block */
        {"--XyZ\r\n" CD("image") "--XyZ--\r\n", "not ended by an empty line"},
        {"--XyZ\r\nContent-Disposition: form-data; name=\"image\"\r\n--XyZ--\r\n",
         "not ended by an empty line"},
        {"--XyZ\r\n\r\nDATA\r\n--XyZ--\r\n", "no Content-Disposition"},
        {"--XyZ\r\nContent-Type: image/jpeg\r\n\r\nDATA\r\n--XyZ--\r\n", "no Content-Disposition"},
        {"--XyZ\r\nContent-Disposition: attachment; name=\"image\"\r\n\r\nD\r\n--XyZ--\r\n",
         "'attachment', not form-data"},
        {"--XyZ\r\nContent-Disposition: form-data\r\n\r\nD\r\n--XyZ--\r\n", "has no name"},
        {"--XyZ\r\nContent-Disposition: form-data; filename=\"a.jpg\"\r\n\r\nD\r\n--XyZ--\r\n",
         "has no name"},
        {"--XyZ\r\nContent-Disposition: form-data; name=\"image\r\n\r\nD\r\n--XyZ--\r\n",
         "malformed Content-Disposition"},
        {"--XyZ\r\nContent-Disposition: form-data; name=\"a\"; name=\"b\"\r\n\r\nD\r\n--XyZ--",
         "two name parameters"},
        {"--XyZ\r\n" CD("a") CD("b") "\r\nD\r\n--XyZ--\r\n", "two Content-Disposition"},
        {"--XyZ\r\nContent-Disposition: form-data;\r\n name=\"image\"\r\n\r\nD\r\n--XyZ--\r\n",
         "folded header lines"},
        {"--XyZ\r\n" CD("image") "garbage line\r\n\r\nD\r\n--XyZ--\r\n", "without a name and ':'"},
        {"--XyZ\r\n" CD("image") ": no name\r\n\r\nD\r\n--XyZ--\r\n", "without a name and ':'"},
        /* a later part is broken: the whole body is refused even though
         * the field was already found */
        {"--XyZ\r\n" CD("image") "\r\nDATA\r\n--XyZ\r\nX-Oops\r\n\r\nD\r\n--XyZ--\r\n", "part 2"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_error_text(CTX, bad[i].body, bad[i].words);

    /* NUL in a part header; strlen would stop there, so give the length. */
    static const char nul[] = "--XyZ\r\nContent-Disposition: form-data; name=\"im\0age\"\r\n\r\n"
                              "D\r\n--XyZ--\r\n";
    expect_parse_error(CTX, nul, sizeof(nul) - 1, "stray CR, LF or NUL");
}

static void test_accepted_variants(void **state)
{
    (void)state;
    static const struct {
        const char *body, *name, *want; /* want NULL: not found */
    } ok[] = {
        /* an empty field, exactly as curl sends -F image= */
        {"--XyZ\r\n" CD("image") "\r\n\r\n--XyZ--\r\n", "image", ""},
        /* headers and no content at all (RFC 2046 makes it optional) */
        {"--XyZ\r\n" CD("image") "\r\n--XyZ--\r\n", "image", ""},
        /* a field named "images" does not match "image" */
        {"--XyZ\r\n" CD("images") "\r\nDATA\r\n--XyZ--\r\n", "image", NULL},
        {"--XyZ\r\n" CD("images") "\r\nA\r\n--XyZ\r\n" CD("image") "\r\nB\r\n--XyZ--", "image",
         "B"},
        /* preamble and epilogue are ignored */
        {"This is a preamble.\r\n--XyZ\r\n" CD(
             "image") "\r\nDATA\r\n--XyZ--\r\nepilogue\r\n--XyZ\r\n",
         "image", "DATA"},
        /* transport padding after a boundary */
        {"--XyZ \t\r\n" CD("image") "\r\nDATA\r\n--XyZ  \r\n" CD("b") "\r\nx\r\n--XyZ--", "image",
         "DATA"},
        /* the first of two fields with one name wins */
        {"--XyZ\r\n" CD("image") "\r\nONE\r\n--XyZ\r\n" CD("image") "\r\nTWO\r\n--XyZ--\r\n",
         "image", "ONE"},
        /* header names are case-insensitive; other headers are ignored */
        {"--XyZ\r\ncontent-type: image/png\r\nCONTENT-DISPOSITION: Form-Data; NAME=\"image\"; "
         "filename=\"a.png\"\r\nX-Other: 1\r\n\r\nPNG\r\n--XyZ--\r\n",
         "image", "PNG"},
        /* name as a token, and with a backslash escape */
        {"--XyZ\r\nContent-Disposition: form-data; name=image\r\n\r\nT\r\n--XyZ--", "image", "T"},
        {"--XyZ\r\nContent-Disposition: form-data; name=\"a\\\"b\"\r\n\r\nQ\r\n--XyZ--", "a\"b",
         "Q"},
        /* "name=" inside a quoted filename is not the name */
        {"--XyZ\r\nContent-Disposition: form-data; filename=\"x; name=\\\"image\\\"\"; "
         "name=\"other\"\r\n\r\nF\r\n--XyZ--",
         "image", NULL},
        /* filename* (RFC 5987) and a trailing ';' */
        {"--XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename*=UTF-8''d%C3%B6g.jpg;"
         "\r\n\r\nU\r\n--XyZ--",
         "image", "U"},
        /* the boundary inside data but not at a line start */
        {"--XyZ\r\n" CD("image") "\r\nab--XyZ--\r\nc--XyZ\r\n\r\n--XyZ--", "image",
         "ab--XyZ--\r\nc--XyZ\r\n"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        const unsigned char *d;
        size_t n;
        int found;
        int rc = field(CTX, ok[i].body, ok[i].name, &d, &n, &found);
        if (rc || found != (ok[i].want != NULL))
            print_error("case %zu: rc %d found %d '%s'\n", i, rc, found, msg);
        assert_int_equal(rc, 0);
        assert_int_equal(found, ok[i].want != NULL);
        if (ok[i].want) {
            assert_int_equal(n, strlen(ok[i].want));
            assert_memory_equal(d, ok[i].want, n);
        }
    }
}

/* 64 parts are fine, 65 are not. */
static void test_part_limit(void **state)
{
    (void)state;
    for (int parts = MPDD_MULTIPART_MAX_PARTS; parts <= MPDD_MULTIPART_MAX_PARTS + 1; parts++) {
        buf b = {0};
        for (int i = 0; i < parts; i++) {
            char part[128];
            snprintf(part, sizeof(part), "--XyZ\r\n" CD("f%d") "\r\nv%d\r\n", i, i);
            puts_(&b, part);
        }
        puts_(&b, "--XyZ--\r\n");
        const unsigned char *d;
        size_t n;
        int found;
        char last[16];
        snprintf(last, sizeof(last), "f%d", parts - 1);
        int rc = mpdd_multipart_field(CTX, b.p, b.len, last, &d, &n, &found, msg, sizeof(msg));
        if (parts <= MPDD_MULTIPART_MAX_PARTS) {
            assert_int_equal(rc, 0);
            assert_int_equal(found, 1);
        } else {
            assert_int_equal(rc, MPD_EPARSE);
            assert_non_null(strstr(msg, "more than 64 parts"));
        }
        free(b.p);
    }
}

static void test_bad_arguments(void **state)
{
    (void)state;
    const unsigned char *d;
    size_t n;
    int found;
    const unsigned char body[] = "--XyZ--";
    assert_int_equal(mpdd_multipart_field(NULL, body, 7, "image", &d, &n, &found, msg, sizeof(msg)),
                     MPD_EINVAL);
    assert_int_equal(mpdd_multipart_field(CTX, NULL, 7, "image", &d, &n, &found, msg, sizeof(msg)),
                     MPD_EINVAL);
    assert_int_equal(mpdd_multipart_field(CTX, body, 7, NULL, &d, &n, &found, msg, sizeof(msg)),
                     MPD_EINVAL);
    assert_int_equal(mpdd_multipart_field(CTX, NULL, 0, "image", &d, &n, &found, msg, sizeof(msg)),
                     MPD_EPARSE);
    /* No message buffer is fine. */
    assert_int_equal(mpdd_multipart_field(CTX, body, 7, "image", &d, &n, &found, NULL, 0),
                     MPD_EPARSE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curl_body_with_dog_jpg), cmocka_unit_test(test_binary_safe),
        cmocka_unit_test(test_content_type_forms),     cmocka_unit_test(test_malformed_bodies),
        cmocka_unit_test(test_accepted_variants),      cmocka_unit_test(test_part_limit),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
