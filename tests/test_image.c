/* test_image.c - mpd_image_decode (JPEG / PNG / BMP, channel conversion,
 * refusals and the pixel limit), formats by magic bytes and the allowed set,
 * truncated data of every kind refused, the decoder's memory bound
 * (decompression bombs, 16-bit PNGs, real photos within their budget), and
 * mpd__letterbox against a naive re-implementation of darknet's
 * letterbox_image and, bit for bit, against the two-pass letterbox it
 * replaced (kept here), with its scratch measured on a 1 x 16M image. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>
#include <stb_image_write.h>

#include "engine.h"
#include "image.h"
#include "mpd.h"
#include "testutil.h"

static char msg[1024];

static unsigned char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

static unsigned char *dog_bytes(size_t *len)
{
    char *p = tu_darknet_data("dog.jpg");
    unsigned char *b = read_all(p, len);
    free(p);
    return b;
}

static void random_bytes(unsigned char *p, size_t n, unsigned seed)
{
    unsigned s = seed * 2654435761u + 7;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        p[i] = (unsigned char)(s >> 24);
    }
}

typedef struct {
    unsigned char *p;
    size_t n;
} membuf;

static void to_membuf(void *ctx, void *data, int size)
{
    membuf *m = ctx;
    m->p = realloc(m->p, m->n + (size_t)size);
    memcpy(m->p + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

/* PNG-encodes through stb_image_write's public callback API (its
 * stbi_write_png_to_mem is not declared in the header). Caller frees. */
static unsigned char *encode_png(const unsigned char *px, int stride, int w, int h, int comp,
                                 int *len)
{
    membuf m = {0};
    if (!stbi_write_png_to_func(to_membuf, &m, w, h, comp, px, stride)) {
        free(m.p);
        return NULL;
    }
    *len = (int)m.n;
    return m.p;
}

/* ---- decoding ----------------------------------------------------------- */

static void test_decode_real_jpeg(void **state)
{
    (void)state;
    size_t len;
    unsigned char *b = dog_bytes(&len);
    mpd_image im;
    int rc = mpd_image_decode(b, len, 40000000, &im, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(im.w, 768);
    assert_int_equal(im.h, 576);
    assert_non_null(im.data);
    /* Same pixels as stb asked directly for 3 channels. */
    int w, h, comp;
    unsigned char *ref = stbi_load_from_memory(b, (int)len, &w, &h, &comp, 3);
    assert_non_null(ref);
    assert_int_equal(comp, 3);
    assert_memory_equal(im.data, ref, (size_t)w * h * 3);
    stbi_image_free(ref);
    mpd_image_free(&im);
    assert_null(im.data);
    assert_int_equal(im.w, 0);
    free(b);
}

static void test_load_file_and_missing_file(void **state)
{
    (void)state;
    mpd_image im;
    char *p = tu_darknet_data("person.jpg");
    int rc = mpd_image_load(p, 0, &im, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_true(im.w > 0 && im.h > 0);
    mpd_image_free(&im);
    free(p);
    rc = mpd_image_load("/nonexistent/x.jpg", 0, &im, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EIO);
    assert_non_null(strstr(msg, "/nonexistent/x.jpg"));
    assert_null(im.data);
}

static void test_decode_png_rgb_exact(void **state)
{
    (void)state;
    enum { W = 7, H = 5 };
    unsigned char px[W * H * 3];
    random_bytes(px, sizeof(px), 1);
    int len = 0;
    unsigned char *png = encode_png(px, W * 3, W, H, 3, &len);
    assert_non_null(png);
    mpd_image im;
    int rc = mpd_image_decode(png, (size_t)len, 0, &im, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(im.w, W);
    assert_int_equal(im.h, H);
    assert_memory_equal(im.data, px, sizeof(px));
    mpd_image_free(&im);

    /* The pixel limit: 35 pixels pass a limit of 35 and fail one of 34. */
    rc = mpd_image_decode(png, (size_t)len, 35, &im, msg, sizeof(msg));
    assert_int_equal(rc, 0);
    mpd_image_free(&im);
    rc = mpd_image_decode(png, (size_t)len, 34, &im, msg, sizeof(msg));
    assert_int_equal(rc, MPD_ELIMIT);
    assert_null(im.data);
    free(png);
}

static void test_decode_bmp_exact(void **state)
{
    (void)state;
    enum { W = 6, H = 3 }; /* 18-byte rows: BMP pads them to 20 */
    unsigned char px[W * H * 3];
    random_bytes(px, sizeof(px), 2);
    membuf m = {0};
    assert_true(stbi_write_bmp_to_func(to_membuf, &m, W, H, 3, px));
    assert_true(m.n > 54);
    assert_true(m.p[0] == 'B' && m.p[1] == 'M');
    mpd_image im;
    int rc = mpd_image_decode(m.p, m.n, 0, &im, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(im.w, W);
    assert_int_equal(im.h, H);
    assert_memory_equal(im.data, px, sizeof(px));
    mpd_image_free(&im);
    free(m.p);
}

/* Encodes a comp-channel image as PNG and checks the decoded RGB: grey is
 * replicated, alpha is dropped. */
static void check_png_channels(int comp)
{
    enum { W = 5, H = 4 };
    unsigned char px[W * H * 4];
    random_bytes(px, sizeof(px), (unsigned)(10 + comp));
    int len = 0;
    unsigned char *png = encode_png(px, W * comp, W, H, comp, &len);
    assert_non_null(png);
    mpd_image im;
    int rc = mpd_image_decode(png, (size_t)len, 0, &im, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_int_equal(im.w, W);
    assert_int_equal(im.h, H);
    for (int i = 0; i < W * H; i++) {
        const unsigned char *s = px + (size_t)i * comp, *d = im.data + (size_t)i * 3;
        if (comp <= 2) {
            assert_int_equal(d[0], s[0]);
            assert_int_equal(d[1], s[0]);
            assert_int_equal(d[2], s[0]);
        } else {
            assert_int_equal(d[0], s[0]);
            assert_int_equal(d[1], s[1]);
            assert_int_equal(d[2], s[2]);
        }
    }
    mpd_image_free(&im);
    free(png);
}

static void test_decode_grey_png_becomes_rgb(void **state)
{
    (void)state;
    check_png_channels(1);
}

static void test_decode_grey_alpha_png_becomes_rgb(void **state)
{
    (void)state;
    check_png_channels(2);
}

static void test_decode_rgba_png_drops_alpha(void **state)
{
    (void)state;
    check_png_channels(4);
}

static void test_decode_refuses_empty_buffer(void **state)
{
    (void)state;
    mpd_image im;
    unsigned char one = 0;
    int rc = mpd_image_decode(&one, 0, 0, &im, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    assert_null(im.data);
    assert_true(strlen(msg) > 0);
}

static void test_decode_refuses_random_bytes(void **state)
{
    (void)state;
    unsigned char junk[4096];
    for (unsigned seed = 0; seed < 8; seed++) {
        random_bytes(junk, sizeof(junk), 100 + seed);
        mpd_image im;
        int rc = mpd_image_decode(junk, sizeof(junk), 0, &im, msg, sizeof(msg));
        assert_int_equal(rc, MPD_EFORMAT);
        assert_null(im.data);
    }
    /* Text is not an image either. */
    const char *t = "hello, this is not an image\n";
    mpd_image im;
    assert_int_equal(mpd_image_decode(t, strlen(t), 0, &im, msg, sizeof(msg)), MPD_EFORMAT);
}

static void test_decode_refuses_truncated_jpeg(void **state)
{
    (void)state;
    size_t len;
    unsigned char *b = dog_bytes(&len);
    mpd_image im;
    int rc = mpd_image_decode(b, 1000, 0, &im, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    assert_null(im.data);
    rc = mpd_image_decode(b, len / 2, 0, &im, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    assert_null(im.data);
    free(b);
}

/* CRC-32 (ISO-HDLC, as PNG uses), bit by bit. */
static uint32_t crc32_of(const unsigned char *p, size_t n)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
    }
    return c ^ 0xffffffffu;
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Signature + IHDR (w x h, 8-bit, colour type ctype) + IEND, CRCs correct,
 * no pixel data. Returns the length. */
static size_t png_header_only(unsigned char *out, uint32_t w, uint32_t h, int ctype)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    size_t n = 0;
    memcpy(out, sig, 8);
    n = 8;
    put_be32(out + n, 13);
    memcpy(out + n + 4, "IHDR", 4);
    unsigned char *d = out + n + 8;
    put_be32(d, w);
    put_be32(d + 4, h);
    d[8] = 8; /* bit depth */
    d[9] = (unsigned char)ctype;
    d[10] = d[11] = d[12] = 0; /* compression, filter, interlace */
    put_be32(out + n + 8 + 13, crc32_of(out + n + 4, 4 + 13));
    n += 4 + 4 + 13 + 4;
    put_be32(out + n, 0);
    memcpy(out + n + 4, "IEND", 4);
    put_be32(out + n + 8, crc32_of(out + n + 4, 4));
    n += 12;
    return n;
}

static void test_crc32_known_values(void **state)
{
    (void)state;
    /* Check value of CRC-32/ISO-HDLC and the CRC every PNG IEND carries. */
    assert_int_equal(crc32_of((const unsigned char *)"123456789", 9), 0xcbf43926u);
    assert_int_equal(crc32_of((const unsigned char *)"IEND", 4), 0xae426082u);
    /* And a real PNG's IHDR CRC matches ours. */
    unsigned char px[3] = {1, 2, 3};
    int len = 0;
    unsigned char *png = encode_png(px, 3, 1, 1, 3, &len);
    assert_non_null(png);
    uint32_t stored =
        (uint32_t)png[29] << 24 | (uint32_t)png[30] << 16 | (uint32_t)png[31] << 8 | png[32];
    assert_int_equal(crc32_of(png + 12, 17), stored);
    free(png);
}

/* stb's header scan rejects a PNG over 2^30 bytes of pixels with only
 * "unknown image type"; a 100000x100000 PNG must still be reported as over
 * the pixel limit (MPD_ELIMIT, HTTP 413 in the daemon), not as a bad file. */
static void test_decode_huge_png_header_refused_with_elimit(void **state)
{
    (void)state;
    unsigned char png[64];
    size_t n = png_header_only(png, 100000, 100000, 2);
    mpd_image im;
    int rc = mpd_image_decode(png, n, 40000000, &im, msg, sizeof(msg));
    if (rc != MPD_ELIMIT)
        print_error("100000x100000 PNG header: rc %d (%s), message '%s'\n", rc, mpd_strerror(rc),
                    msg);
    assert_int_equal(rc, MPD_ELIMIT);
    assert_null(im.data);
}

static void test_decode_large_png_header_over_limit(void **state)
{
    (void)state;
    /* 10000x10000 grey is within what stb's header scan accepts; it is
     * 1e8 pixels, over a 4e7 limit. */
    unsigned char png[64];
    size_t n = png_header_only(png, 10000, 10000, 0);
    mpd_image im;
    int rc = mpd_image_decode(png, n, 40000000, &im, msg, sizeof(msg));
    if (rc != MPD_ELIMIT)
        print_error("rc %d, message '%s'\n", rc, msg);
    assert_int_equal(rc, MPD_ELIMIT);
    assert_null(im.data);
    assert_non_null(strstr(msg, "10000"));
    /* 5000x5000 RGB passes a 1e8 limit and then fails to decode (no
     * pixel data): a format error, not a limit. */
    n = png_header_only(png, 5000, 5000, 2);
    rc = mpd_image_decode(png, n, 100000000, &im, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    rc = mpd_image_decode(png, n, 1000000, &im, msg, sizeof(msg));
    assert_int_equal(rc, MPD_ELIMIT);
}

/* ---- letterbox ------------------------------------------------------------ */

/* darknet's image: CHW floats. */
typedef struct {
    int w, h, c;
    float *data;
} dimg;

static dimg make_dimg(int w, int h, int c)
{
    dimg m = {w, h, c, calloc((size_t)w * h * c, sizeof(float))};
    assert_non_null(m.data);
    return m;
}

static float get_pixel(dimg m, int x, int y, int c)
{
    return m.data[(size_t)c * m.h * m.w + (size_t)y * m.w + x];
}

static void set_pixel(dimg m, int x, int y, int c, float v)
{
    if (x < 0 || y < 0 || c < 0 || x >= m.w || y >= m.h || c >= m.c)
        return;
    m.data[(size_t)c * m.h * m.w + (size_t)y * m.w + x] = v;
}

static void add_pixel(dimg m, int x, int y, int c, float v)
{
    m.data[(size_t)c * m.h * m.w + (size_t)y * m.w + x] += v;
}

/* darknet's resize_image, line for line. */
static dimg ref_resize(dimg im, int w, int h)
{
    dimg resized = make_dimg(w, h, im.c);
    dimg part = make_dimg(w, im.h, im.c);
    float w_scale = (float)(im.w - 1) / (w - 1);
    float h_scale = (float)(im.h - 1) / (h - 1);
    for (int k = 0; k < im.c; ++k) {
        for (int r = 0; r < im.h; ++r) {
            for (int c = 0; c < w; ++c) {
                float val = 0;
                if (c == w - 1 || im.w == 1) {
                    val = get_pixel(im, im.w - 1, r, k);
                } else {
                    float sx = c * w_scale;
                    int ix = (int)sx;
                    float dx = sx - ix;
                    val = (1 - dx) * get_pixel(im, ix, r, k) + dx * get_pixel(im, ix + 1, r, k);
                }
                set_pixel(part, c, r, k, val);
            }
        }
    }
    for (int k = 0; k < im.c; ++k) {
        for (int r = 0; r < h; ++r) {
            float sy = r * h_scale;
            int iy = (int)sy;
            float dy = sy - iy;
            for (int c = 0; c < w; ++c) {
                float val = (1 - dy) * get_pixel(part, c, iy, k);
                set_pixel(resized, c, r, k, val);
            }
            if (r == h - 1 || im.h == 1)
                continue;
            for (int c = 0; c < w; ++c) {
                float val = dy * get_pixel(part, c, iy + 1, k);
                add_pixel(resized, c, r, k, val);
            }
        }
    }
    free(part.data);
    return resized;
}

/* darknet's letterbox_image (new_w, new_h > 1 here: darknet divides by
 * new - 1). */
static float *ref_letterbox(const mpd_image *src, int w, int h)
{
    dimg im = make_dimg(src->w, src->h, 3);
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < src->h; y++)
            for (int x = 0; x < src->w; x++)
                im.data[(size_t)k * im.w * im.h + (size_t)y * im.w + x] =
                    (float)src->data[((size_t)y * src->w + x) * 3 + k] / 255.;
    int new_w = im.w, new_h = im.h;
    if (((float)w / im.w) < ((float)h / im.h)) {
        new_w = w;
        new_h = (im.h * w) / im.w;
    } else {
        new_h = h;
        new_w = (im.w * h) / im.h;
    }
    assert_true(new_w > 1 && new_h > 1);
    dimg resized = ref_resize(im, new_w, new_h);
    dimg boxed = make_dimg(w, h, 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        boxed.data[i] = .5;
    int dx = (w - new_w) / 2, dy = (h - new_h) / 2;
    for (int k = 0; k < 3; ++k)
        for (int y = 0; y < new_h; ++y)
            for (int x = 0; x < new_w; ++x)
                set_pixel(boxed, dx + x, dy + y, k, get_pixel(resized, x, y, k));
    free(im.data);
    free(resized.data);
    return boxed.data;
}

static mpd_image random_image(int w, int h, unsigned seed)
{
    mpd_image im = {w, h, malloc((size_t)w * h * 3)};
    assert_non_null(im.data);
    random_bytes(im.data, (size_t)w * h * 3, seed);
    return im;
}

static float *run_letterbox(const mpd_image *im, int nw, int nh)
{
    float *dst = malloc((size_t)3 * nw * nh * sizeof(float));
    assert_non_null(dst);
    assert_int_equal(mpd__letterbox(im, nw, nh, dst), 0);
    return dst;
}

static void assert_same_as_ref(const mpd_image *im, int nw, int nh)
{
    float *got = run_letterbox(im, nw, nh);
    float *want = ref_letterbox(im, nw, nh);
    for (size_t i = 0; i < (size_t)3 * nw * nh; i++) {
        if (got[i] != want[i]) {
            print_error("letterbox %dx%d -> %dx%d: element %zu = %.9g, want %.9g\n", im->w, im->h,
                        nw, nh, i, got[i], want[i]);
            fail();
        }
    }
    free(got);
    free(want);
}

#define AT(buf, nw, nh, k, y, x) (buf)[((size_t)(k) * (nh) + (y)) * (nw) + (x)]

static void test_letterbox_2x2_into_4x4(void **state)
{
    (void)state;
    unsigned char px[2 * 2 * 3] = {
        0,   100, 255, /* (0,0) */
        51,  200, 0,   /* (1,0) */
        102, 10,  30,  /* (0,1) */
        255, 20,  60,  /* (1,1) */
    };
    mpd_image im = {2, 2, px};
    assert_same_as_ref(&im, 4, 4);
    /* By hand: no border; scale 1/3 both ways. Column 1 of row 0, red:
     * 2/3 * 0 + 1/3 * 51 = 17 -> 17/255. Centre-ish (1,1) red: rows mix
     * 2/3 * row0 + 1/3 * row1 where row0 = 17/255, row1 = (2/3*102 +
     * 1/3*255)/255 = 153/255. */
    float *got = run_letterbox(&im, 4, 4);
    assert_true(fabs(AT(got, 4, 4, 0, 0, 0) - 0.f) < 1e-6);
    assert_true(fabs(AT(got, 4, 4, 0, 0, 1) - 17.f / 255) < 1e-6);
    assert_true(fabs(AT(got, 4, 4, 0, 0, 3) - 51.f / 255) < 1e-6);
    assert_true(fabs(AT(got, 4, 4, 0, 1, 1) - (2.f / 3 * 17 + 1.f / 3 * 153) / 255) < 1e-6);
    assert_true(fabs(AT(got, 4, 4, 0, 3, 3) - 1.f) < 1e-6);
    assert_true(fabs(AT(got, 4, 4, 2, 0, 0) - 1.f) < 1e-6);
    assert_true(fabs(AT(got, 4, 4, 1, 3, 0) - 10.f / 255) < 1e-6);
    for (size_t i = 0; i < 3 * 16; i++)
        assert_true(got[i] >= 0.f && got[i] <= 1.f);
    free(got);
}

static void test_letterbox_wide_image_has_border_rows(void **state)
{
    (void)state;
    /* 8x4 into 4x4: new 4x2, placed at rows 1..2. */
    mpd_image im = random_image(8, 4, 3);
    assert_same_as_ref(&im, 4, 4);
    float *got = run_letterbox(&im, 4, 4);
    for (int k = 0; k < 3; k++)
        for (int x = 0; x < 4; x++) {
            assert_true(AT(got, 4, 4, k, 0, x) == 0.5f);
            assert_true(AT(got, 4, 4, k, 3, x) == 0.5f);
        }
    /* Corners of the picture itself are the image's corners. */
    assert_true(fabs(AT(got, 4, 4, 0, 1, 0) - im.data[0] / 255.f) < 1e-6);
    free(got);
    free(im.data);
    /* 640x480 into 416x416: 416x312, 52 border rows each side. */
    im = random_image(640, 480, 4);
    assert_same_as_ref(&im, 416, 416);
    got = run_letterbox(&im, 416, 416);
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < 416; y++)
            if (y < 52 || y >= 52 + 312)
                for (int x = 0; x < 416; x++)
                    assert_true(AT(got, 416, 416, k, y, x) == 0.5f);
    free(got);
    free(im.data);
}

static void test_letterbox_tall_image_has_border_columns(void **state)
{
    (void)state;
    /* 3x9 into 6x6: new 2x6 at columns 2..3. */
    mpd_image im = random_image(3, 9, 5);
    assert_same_as_ref(&im, 6, 6);
    float *got = run_letterbox(&im, 6, 6);
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < 6; y++)
            for (int x = 0; x < 6; x++)
                if (x < 2 || x > 3)
                    assert_true(AT(got, 6, 6, k, y, x) == 0.5f);
    /* Last column of the picture, last row: the image's bottom-right. */
    assert_true(fabs(AT(got, 6, 6, 1, 5, 3) - im.data[((8 * 3) + 2) * 3 + 1] / 255.f) < 1e-6);
    free(got);
    free(im.data);
    im = random_image(37, 91, 6);
    assert_same_as_ref(&im, 64, 64);
    free(im.data);
}

static void test_letterbox_1x1_image(void **state)
{
    (void)state;
    unsigned char px[3] = {10, 128, 250};
    mpd_image im = {1, 1, px};
    float *got = run_letterbox(&im, 4, 4);
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 16; i++)
            assert_true(got[k * 16 + i] == (float)px[k] / 255.f);
    free(got);
    assert_same_as_ref(&im, 4, 4);
    /* Into a non-square input: a 3x3 picture centred in 5x3. */
    got = run_letterbox(&im, 5, 3);
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 5; x++)
                assert_true(AT(got, 5, 3, k, y, x) ==
                            ((x == 0 || x == 4) ? 0.5f : (float)px[k] / 255.f));
    free(got);
}

static void test_letterbox_random_and_real_image_match_darknet(void **state)
{
    (void)state;
    mpd_image im = random_image(37, 23, 7);
    assert_same_as_ref(&im, 32, 32);
    assert_same_as_ref(&im, 48, 24);
    free(im.data);
    size_t len;
    unsigned char *b = dog_bytes(&len);
    mpd_image dog;
    assert_int_equal(mpd_image_decode(b, len, 0, &dog, msg, sizeof(msg)), 0);
    assert_same_as_ref(&dog, 416, 416);
    mpd_image_free(&dog);
    free(b);
}

static void test_letterbox_one_row_result(void **state)
{
    (void)state;
    /* 16x1 into 4x4: new_h = 4/16 = 0, clamped to 1 row at y = 1. darknet
     * itself divides by zero here; expected: the horizontally resized row
     * (scale 15/3 = 5: pixels 0, 5, 10 and the last, 15). */
    mpd_image im = random_image(16, 1, 8);
    float *got = run_letterbox(&im, 4, 4);
    static const int src_x[4] = {0, 5, 10, 15};
    for (int k = 0; k < 3; k++)
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 4; x++) {
                float v = AT(got, 4, 4, k, y, x);
                if (y != 1)
                    assert_true(v == 0.5f);
                else
                    assert_true(fabs(v - im.data[src_x[x] * 3 + k] / 255.f) < 1e-6);
            }
    free(got);
    free(im.data);
}

/* ---- truncation, formats and memory ------------------------------------- */

static unsigned char *photo_bytes(const char *name, size_t *len)
{
    char *p = tu_darknet_data(name);
    unsigned char *b = read_all(p, len);
    free(p);
    return b;
}

/* The photo decoded by Debian's libstb (a separate copy of stb_image from
 * the one inside image.c), as the reference pixels. */
static mpd_image photo_pixels(const char *name)
{
    size_t len;
    unsigned char *b = photo_bytes(name, &len);
    int w, h, comp;
    unsigned char *px = stbi_load_from_memory(b, (int)len, &w, &h, &comp, 3);
    assert_non_null(px);
    free(b);
    mpd_image im = {w, h, malloc((size_t)w * h * 3)};
    assert_non_null(im.data);
    memcpy(im.data, px, (size_t)w * h * 3);
    stbi_image_free(px);
    return im;
}

static const char *const photos[] = {"dog.jpg", "person.jpg", "horses.jpg", "kite.jpg",
                                     "scream.jpg"};
enum { NPHOTOS = sizeof(photos) / sizeof(photos[0]) };

/* Decodes the first n bytes of b (a copy, so a decoder that reads past n
 * trips the sanitizers) and expects MPD_EFORMAT with "truncated" in the
 * message. */
static void expect_truncated(const char *what, const unsigned char *b, size_t n)
{
    unsigned char *cut = malloc(n);
    assert_non_null(cut);
    memcpy(cut, b, n);
    mpd_image im;
    msg[0] = 0;
    int rc = mpd_image_decode(cut, n, 0, &im, msg, sizeof(msg));
    if (rc != MPD_EFORMAT || !strstr(msg, "truncated"))
        fail_msg("%s cut to %zu bytes: rc %d (%s), message '%s'; want a truncation error", what, n,
                 rc, mpd_strerror(rc), msg);
    assert_null(im.data);
    free(cut);
}

/* JPEG and PNG of real photos cut at 50 %, 90 % and with the last 2 bytes
 * removed (a JPEG then lacks its end marker, a PNG its IEND's CRC). */
static void test_decode_refuses_truncated_photos(void **state)
{
    (void)state;
    for (int k = 0; k < NPHOTOS; k++) {
        size_t len;
        unsigned char *jpg = photo_bytes(photos[k], &len);
        char what[64];
        snprintf(what, sizeof(what), "%s", photos[k]);
        expect_truncated(what, jpg, len / 2);
        expect_truncated(what, jpg, len / 10 * 9);
        expect_truncated(what, jpg, len - 2);
        free(jpg);
        mpd_image im = photo_pixels(photos[k]);
        int plen = 0;
        unsigned char *png = encode_png(im.data, im.w * 3, im.w, im.h, 3, &plen);
        assert_non_null(png);
        snprintf(what, sizeof(what), "%s as PNG", photos[k]);
        expect_truncated(what, png, (size_t)plen / 2);
        expect_truncated(what, png, (size_t)plen / 10 * 9);
        expect_truncated(what, png, (size_t)plen - 2);
        free(png);
        free(im.data);
    }
}

/* The defect: a BMP cut after its 54-byte header decoded as a black image.
 * Also cut at half its pixel data and without its last 2 bytes. */
static void test_decode_refuses_truncated_bmp(void **state)
{
    (void)state;
    mpd_image im = photo_pixels("dog.jpg");
    membuf m = {0};
    assert_true(stbi_write_bmp_to_func(to_membuf, &m, im.w, im.h, 3, im.data));
    assert_int_equal(m.n, 54 + (size_t)im.w * im.h * 3); /* 768 * 3 needs no row padding */
    expect_truncated("dog.jpg as BMP", m.p, 54);
    expect_truncated("dog.jpg as BMP", m.p, m.n / 2);
    expect_truncated("dog.jpg as BMP", m.p, m.n - 2);
    free(m.p);
    free(im.data);
}

/* Whole photos still decode, and to the same pixels as libstb gives. */
static void test_decode_whole_photos_identical(void **state)
{
    (void)state;
    for (int k = 0; k < NPHOTOS; k++) {
        mpd_image want = photo_pixels(photos[k]);
        size_t len;
        unsigned char *jpg = photo_bytes(photos[k], &len);
        mpd_image im;
        int rc = mpd_image_decode(jpg, len, 40000000, &im, msg, sizeof(msg));
        if (rc)
            fail_msg("%s: %s", photos[k], msg);
        assert_int_equal(im.w, want.w);
        assert_int_equal(im.h, want.h);
        assert_memory_equal(im.data, want.data, (size_t)want.w * want.h * 3);
        mpd_image_free(&im);
        free(jpg);
        int plen = 0;
        unsigned char *png = encode_png(want.data, want.w * 3, want.w, want.h, 3, &plen);
        rc = mpd_image_decode(png, (size_t)plen, 40000000, &im, msg, sizeof(msg));
        if (rc)
            fail_msg("%s as PNG: %s", photos[k], msg);
        assert_memory_equal(im.data, want.data, (size_t)want.w * want.h * 3);
        mpd_image_free(&im);
        free(png);
        free(want.data);
    }
}

/* ---- a zlib stream that inflates to n zero bytes --------------------------- */

typedef struct {
    unsigned char *p;
    size_t n, cap;
    uint32_t acc;
    int bits;
} bitw;

static void bw_put(bitw *w, uint32_t v, int nbits) /* LSB first, as deflate packs */
{
    for (int i = 0; i < nbits; i++) {
        w->acc |= ((v >> i) & 1u) << w->bits;
        if (++w->bits == 8) {
            if (w->n == w->cap) {
                w->cap = w->cap ? 2 * w->cap : 4096;
                w->p = realloc(w->p, w->cap);
                assert_non_null(w->p);
            }
            w->p[w->n++] = (unsigned char)w->acc;
            w->acc = 0;
            w->bits = 0;
        }
    }
}

/* Huffman codes go most significant bit first. */
static void bw_code(bitw *w, uint32_t code, int len)
{
    for (int i = len - 1; i >= 0; i--)
        bw_put(w, (code >> i) & 1u, 1);
}

/* zlib header, one fixed-Huffman block (a literal 0, then <length 258,
 * distance 1> as often as fits, then literal zeros), adler-32: inflates to
 * exactly n >= 1 zero bytes from about 13 bits per 258 bytes. */
static unsigned char *zlib_zeros(size_t n, size_t *len)
{
    bitw w = {0};
    bw_put(&w, 0x78, 8);
    bw_put(&w, 0x01, 8);
    bw_put(&w, 1, 1);         /* BFINAL */
    bw_put(&w, 1, 2);         /* BTYPE 01: fixed codes */
    bw_code(&w, 0x30 + 0, 8); /* literal 0 */
    for (size_t i = 0; i < (n - 1) / 258; i++) {
        bw_code(&w, 0xc0 + 5, 8); /* symbol 285: length 258 */
        bw_code(&w, 0, 5);        /* distance code 0: distance 1 */
    }
    for (size_t i = 0; i < (n - 1) % 258; i++)
        bw_code(&w, 0x30 + 0, 8);
    bw_code(&w, 0, 7); /* end of block (256) */
    if (w.bits)
        bw_put(&w, 0, 8 - w.bits);
    uint32_t adler = (uint32_t)(n % 65521) << 16 | 1u; /* a = 1, b = n * 1 */
    for (int i = 3; i >= 0; i--)
        bw_put(&w, (adler >> (8 * i)) & 0xffu, 8);
    *len = w.n;
    return w.p;
}

/* Appends a PNG chunk (length, type, data, CRC) at out + n; returns the new
 * length. */
static size_t png_chunk(unsigned char *out, size_t n, const char *type, const unsigned char *data,
                        size_t dlen)
{
    put_be32(out + n, (uint32_t)dlen);
    memcpy(out + n + 4, type, 4);
    if (dlen)
        memcpy(out + n + 8, data, dlen);
    put_be32(out + n + 8 + dlen, crc32_of(out + n + 4, 4 + dlen));
    return n + 12 + dlen;
}

/* A w x h PNG (bit depth, colour type ctype) whose zlib data inflates to
 * `inflated` zero bytes. */
static unsigned char *png_of_zeros(uint32_t w, uint32_t h, int depth, int ctype, size_t inflated,
                                   size_t *len)
{
    size_t zlen;
    unsigned char *z = zlib_zeros(inflated, &zlen);
    unsigned char *png = malloc(zlen + 128);
    assert_non_null(png);
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    memcpy(png, sig, 8);
    unsigned char ihdr[13] = {0};
    put_be32(ihdr, w);
    put_be32(ihdr + 4, h);
    ihdr[8] = (unsigned char)depth;
    ihdr[9] = (unsigned char)ctype;
    size_t n = png_chunk(png, 8, "IHDR", ihdr, 13);
    n = png_chunk(png, n, "IDAT", z, zlen);
    n = png_chunk(png, n, "IEND", NULL, 0);
    free(z);
    *len = n;
    return png;
}

/* A 1x1 RGB PNG whose pixel data inflates to 64 MB: a few hundred KB that
 * make a decoder without a memory bound allocate 64 MB and more. */
static unsigned char *png_bomb(size_t *len)
{
    return png_of_zeros(1, 1, 8, 2, (size_t)64 << 20, len);
}

/* The bomb is refused as over the memory bound the pixel limit implies,
 * before its 64 MB are allocated. */
static void test_decode_png_bomb_refused_with_elimit(void **state)
{
    (void)state;
    size_t len;
    unsigned char *png = png_bomb(&len);
    mpd_image im;
    int rc = mpd_image_decode(png, len, 1000000, &im, msg, sizeof(msg));
    if (rc != MPD_ELIMIT)
        fail_msg("1x1 PNG inflating to 64 MB (%zu bytes), limit 1e6 pixels: rc %d (%s), '%s'", len,
                 rc, mpd_strerror(rc), rc ? msg : "decoded");
    assert_null(im.data);
    free(png);
}

/* ---- letterbox by rows ---------------------------------------------------- */

/* The letterbox as it was before it worked by rows (a horizontal pass over
 * every source row into a 3 x h x new_w buffer, then a vertical pass),
 * kept as the bit-exact reference of the row-wise one. */
static int old_letterbox(const mpd_image *im, int net_w, int net_h, float *dst)
{
    int new_w, new_h;
    if (im->w < 1 || im->h < 1 || !im->data)
        return MPD_EINVAL;
    mpd__letterbox_size(im->w, im->h, net_w, net_h, &new_w, &new_h);
    float *part = malloc((size_t)3 * im->h * new_w * sizeof(float));
    if (!part)
        return MPD_ENOMEM;
    size_t plane = (size_t)net_w * net_h;
    for (size_t i = 0; i < 3 * plane; i++)
        dst[i] = .5f;
    float w_scale = new_w > 1 ? (float)(im->w - 1) / (new_w - 1) : 0;
    float h_scale = new_h > 1 ? (float)(im->h - 1) / (new_h - 1) : 0;
    const unsigned char *px = im->data;
#define PIX(x, y, k) ((float)px[((size_t)(y)*im->w + (x)) * 3 + (k)] / 255.f)
    for (int k = 0; k < 3; k++) {
        for (int r = 0; r < im->h; r++) {
            float *prow = part + ((size_t)k * im->h + r) * new_w;
            for (int c = 0; c < new_w; c++) {
                float val;
                if (c == new_w - 1 || im->w == 1) {
                    val = PIX(im->w - 1, r, k);
                } else {
                    float sx = c * w_scale;
                    int ix = (int)sx;
                    float dx = sx - ix;
                    val = (1 - dx) * PIX(ix, r, k) + dx * PIX(ix + 1, r, k);
                }
                prow[c] = val;
            }
        }
    }
#undef PIX
    int ox = (net_w - new_w) / 2, oy = (net_h - new_h) / 2;
    for (int k = 0; k < 3; k++) {
        for (int r = 0; r < new_h; r++) {
            float sy = r * h_scale;
            int iy = (int)sy;
            float dy = sy - iy;
            const float *p0 = part + ((size_t)k * im->h + iy) * new_w;
            float *drow = dst + k * plane + (size_t)(r + oy) * net_w + ox;
            for (int c = 0; c < new_w; c++)
                drow[c] = (1 - dy) * p0[c];
            if (r == new_h - 1 || im->h == 1)
                continue;
            const float *p1 = p0 + new_w;
            for (int c = 0; c < new_w; c++)
                drow[c] += dy * p1[c];
        }
    }
    free(part);
    return 0;
}

static void assert_same_as_old(const char *what, const mpd_image *im, int nw, int nh)
{
    size_t n = (size_t)3 * nw * nh;
    float *got = malloc(n * sizeof(float)), *want = malloc(n * sizeof(float));
    assert_true(got && want);
    assert_int_equal(mpd__letterbox(im, nw, nh, got), 0);
    assert_int_equal(old_letterbox(im, nw, nh, want), 0);
    if (memcmp(got, want, n * sizeof(float)) != 0) {
        size_t i = 0;
        while (got[i] == want[i])
            i++;
        fail_msg("%s %dx%d -> %dx%d: element %zu = %.9g, was %.9g", what, im->w, im->h, nw, nh, i,
                 (double)got[i], (double)want[i]);
    }
    free(got);
    free(want);
}

/* Bit-identical to the old letterbox on real photos into several network
 * sizes (square, wide, tall, odd, upscaling) and on odd image shapes:
 * 1 x N, N x 1, 1 x 1, thin strips, tiny images scaled up. */
static void test_letterbox_by_rows_matches_old(void **state)
{
    (void)state;
    static const int nets[][2] = {{416, 416}, {608, 352},   {320, 640}, {417, 233},
                                  {13, 7},    {1280, 1280}, {2, 2}};
    for (int k = 0; k < NPHOTOS; k++) {
        mpd_image im = photo_pixels(photos[k]);
        for (size_t j = 0; j < sizeof(nets) / sizeof(nets[0]); j++)
            assert_same_as_old(photos[k], &im, nets[j][0], nets[j][1]);
        free(im.data);
    }
    static const int shapes[][2] = {{1, 1000}, {1000, 1}, {1, 1},     {1, 2},    {2, 1},
                                    {3, 1000}, {1000, 3}, {7, 5},     {5, 7},    {2, 3},
                                    {416, 1},  {1, 416},  {415, 417}, {833, 417}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        mpd_image im = random_image(shapes[s][0], shapes[s][1], 50 + (unsigned)s);
        for (size_t j = 0; j < sizeof(nets) / sizeof(nets[0]); j++)
            assert_same_as_old("random", &im, nets[j][0], nets[j][1]);
        free(im.data);
    }
}

/* A black 1000x1000 PNG at 16 bits a channel: 6 MB of rows and 6 MB of
 * 16-bit pixels at once, more than a limit of 1e6 pixels allows (8 bytes a
 * pixel), from 40 KB of data. Refused under that limit with MPD_ELIMIT;
 * under 2e6 pixels it fits and decodes to black. */
static void test_decode_16bit_png_needs_more_than_its_pixels_allow(void **state)
{
    (void)state;
    size_t len;
    unsigned char *png = png_of_zeros(1000, 1000, 16, 2, (size_t)1000 * (1 + 1000 * 6), &len);
    assert_true(len < 100000);
    mpd_image im;
    int rc = mpd_image_decode(png, len, 1000000, &im, msg, sizeof(msg));
    if (rc != MPD_ELIMIT)
        fail_msg("16-bit 1000x1000 PNG, limit 1e6 pixels: rc %d (%s), '%s'", rc, mpd_strerror(rc),
                 rc ? msg : "decoded");
    assert_non_null(strstr(msg, "bytes of memory"));
    assert_null(im.data);
    size_t base = mpd__image_mem_live();
    mpd__image_mem_reset();
    rc = mpd_image_decode(png, len, 2000000, &im, msg, sizeof(msg));
    if (rc)
        fail_msg("16-bit 1000x1000 PNG, limit 2e6 pixels: %s", msg);
    print_message("16-bit RGB PNG 1000x1000: peak %zu bytes = %.2f a pixel\n",
                  mpd__image_mem_peak() - base, (double)(mpd__image_mem_peak() - base) / 1e6);
    assert_int_equal(im.w, 1000);
    assert_int_equal(im.h, 1000);
    for (size_t i = 0; i < (size_t)1000 * 1000 * 3; i++)
        if (im.data[i])
            fail_msg("byte %zu is %d, want 0", i, im.data[i]);
    mpd_image_free(&im);
    free(png);
}

/* Real photos as JPEG, RGB PNG and RGBA PNG decode under a pixel limit of
 * exactly their size, and what the decoder held at once (counted by
 * image.c's accountant) is within mpd_image_decode_budget. */
static void test_decode_photos_fit_their_budget(void **state)
{
    (void)state;
    for (int k = 0; k < NPHOTOS; k++) {
        mpd_image px = photo_pixels(photos[k]);
        long long n = (long long)px.w * px.h;
        unsigned char *rgba = malloc((size_t)n * 4);
        assert_non_null(rgba);
        for (long long i = 0; i < n; i++) {
            memcpy(rgba + 4 * i, px.data + 3 * i, 3);
            rgba[4 * i + 3] = (unsigned char)(i * 7);
        }
        size_t jlen;
        int l3 = 0, l4 = 0;
        unsigned char *enc[3] = {photo_bytes(photos[k], &jlen),
                                 encode_png(px.data, px.w * 3, px.w, px.h, 3, &l3),
                                 encode_png(rgba, px.w * 4, px.w, px.h, 4, &l4)};
        size_t lens[3] = {jlen, (size_t)l3, (size_t)l4};
        static const char *const kind[3] = {"JPEG", "RGB PNG", "RGBA PNG"};
        for (int e = 0; e < 3; e++) {
            assert_non_null(enc[e]);
            mpd_image im;
            size_t base = mpd__image_mem_live();
            mpd__image_mem_reset();
            int rc = mpd_image_decode(enc[e], lens[e], n, &im, msg, sizeof(msg));
            size_t peak = mpd__image_mem_peak() - base;
            size_t budget = mpd_image_decode_budget(n, lens[e]);
            if (rc)
                fail_msg("%s as %s at a limit of its %lld pixels: %s", photos[k], kind[e], n, msg);
            print_message("%-10s %-8s %4dx%-4d peak %9zu bytes = %.2f a pixel, budget %9zu\n",
                          photos[k], kind[e], px.w, px.h, peak, (double)peak / (double)n, budget);
            assert_true(peak <= budget);
            assert_true(peak >= (size_t)n * 3);            /* the accountant saw the pixels */
            assert_int_equal(mpd__image_mem_live(), base); /* nothing left counted */
            assert_memory_equal(im.data, px.data, (size_t)n * 3);
            mpd_image_free(&im);
            free(enc[e]);
        }
        free(rgba);
        free(px.data);
    }
}

/* A 1 x 16M-pixel image (the tallest a 16M pixel budget allows) and a
 * 16M x 1 one letterbox with a few KB of scratch, not the 3 x h x new_w
 * floats (192 MB) of a whole first pass. */
static void test_letterbox_tall_image_small_scratch(void **state)
{
    (void)state;
    static const int shapes[2][2] = {{1, 16000000}, {16000000, 1}};
    for (int s = 0; s < 2; s++) {
        mpd_image im = {shapes[s][0], shapes[s][1], malloc((size_t)16000000 * 3)};
        assert_non_null(im.data);
        for (size_t i = 0; i < (size_t)16000000 * 3; i++)
            im.data[i] = (unsigned char)(i * 2654435761u >> 24);
        float *dst = malloc((size_t)3 * 416 * 416 * sizeof(float));
        assert_non_null(dst);
        size_t base = mpd__image_mem_live();
        mpd__image_mem_reset();
        assert_int_equal(mpd__letterbox(&im, 416, 416, dst), 0);
        size_t peak = mpd__image_mem_peak() - base;
        print_message("letterbox %dx%d -> 416x416: %zu bytes of scratch\n", im.w, im.h, peak);
        if (peak > 64 * 1024)
            fail_msg("letterbox of a %dx%d image took %zu bytes of scratch", im.w, im.h, peak);
        assert_int_equal(mpd__image_mem_live(), base);
        /* The picture is there: a 1-pixel column (or row) through the middle,
         * borders of 0.5 elsewhere. */
        int inside = 0;
        for (int i = 0; i < 416 * 416; i++)
            inside += dst[i] != 0.5f;
        assert_true(inside >= 300 && inside <= 416);
        free(dst);
        free(im.data);
    }
}

/* TGA (raw and run-length), Radiance HDR and binary PPM of a real photo cut
 * short are refused: stb reads zeros past the end, or ignores a short run,
 * so these are caught by the reader that sees reads past the end. Whole
 * files decode. */
static void test_decode_refuses_truncated_other_formats(void **state)
{
    (void)state;
    mpd_image im = photo_pixels("scream.jpg");
    size_t n = (size_t)im.w * im.h * 3;
    membuf f[4] = {{0}};
    int rle = stbi_write_tga_with_rle;
    stbi_write_tga_with_rle = 0;
    assert_true(stbi_write_tga_to_func(to_membuf, &f[0], im.w, im.h, 3, im.data));
    stbi_write_tga_with_rle = 1;
    assert_true(stbi_write_tga_to_func(to_membuf, &f[1], im.w, im.h, 3, im.data));
    stbi_write_tga_with_rle = rle;
    float *fl = malloc(n * sizeof(float));
    assert_non_null(fl);
    for (size_t i = 0; i < n; i++)
        fl[i] = im.data[i] / 255.f;
    assert_true(stbi_write_hdr_to_func(to_membuf, &f[2], im.w, im.h, 3, fl));
    free(fl);
    char head[32];
    int hl = snprintf(head, sizeof(head), "P6\n%d %d\n255\n", im.w, im.h);
    to_membuf(&f[3], head, hl);
    to_membuf(&f[3], im.data, (int)n);
    static const char *const what[4] = {"TGA", "run-length TGA", "HDR", "PPM"};
    static const mpd_image_format fmt[4] = {MPD_IMAGE_TGA, MPD_IMAGE_TGA, MPD_IMAGE_HDR,
                                            MPD_IMAGE_PNM};
    for (int k = 0; k < 4; k++) {
        assert_int_equal(mpd_image_sniff(f[k].p, f[k].n), fmt[k]);
        mpd_image got;
        int rc = mpd_image_decode(f[k].p, f[k].n, 0, &got, msg, sizeof(msg));
        if (rc)
            fail_msg("whole %s: %s", what[k], msg);
        if (k != 2) /* HDR is lossy */
            assert_memory_equal(got.data, im.data, n);
        mpd_image_free(&got);
        expect_truncated(what[k], f[k].p, f[k].n / 2);
        expect_truncated(what[k], f[k].p, f[k].n / 10 * 9);
        expect_truncated(what[k], f[k].p, f[k].n - 2);
        free(f[k].p);
    }
    free(im.data);
}

/* ---- formats -------------------------------------------------------------- */

static void test_sniff_identifies_formats_by_magic(void **state)
{
    (void)state;
    size_t len;
    unsigned char *jpg = photo_bytes("dog.jpg", &len);
    assert_int_equal(mpd_image_sniff(jpg, len), MPD_IMAGE_JPEG);
    assert_int_equal(mpd_image_sniff(jpg, 2), MPD_IMAGE_UNKNOWN); /* FF D8 alone */
    free(jpg);
    unsigned char px[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    int plen = 0;
    unsigned char *png = encode_png(px, 6, 2, 2, 3, &plen);
    assert_int_equal(mpd_image_sniff(png, (size_t)plen), MPD_IMAGE_PNG);
    free(png);
    membuf m = {0};
    assert_true(stbi_write_bmp_to_func(to_membuf, &m, 2, 2, 3, px));
    assert_int_equal(mpd_image_sniff(m.p, m.n), MPD_IMAGE_BMP);
    free(m.p);
    unsigned char pic[96] = {0x53, 0x80, 0xf6, 0x34};
    memcpy(pic + 88, "PICT", 4);
    static const struct {
        const char *bytes;
        size_t n;
        mpd_image_format want;
    } cases[] = {
        {"GIF89a\x02\x00\x02\x00", 10, MPD_IMAGE_GIF},
        {"GIF87a\x02\x00\x02\x00", 10, MPD_IMAGE_GIF},
        {"GIF88a\x02\x00\x02\x00", 10, MPD_IMAGE_UNKNOWN},
        {"8BPS\x00\x01", 6, MPD_IMAGE_PSD},
        {"P6\n2 2\n255\n", 11, MPD_IMAGE_PNM},
        {"P5\n2 2\n255\n", 11, MPD_IMAGE_PNM},
        {"P3\n2 2\n255\n", 11, MPD_IMAGE_UNKNOWN}, /* ASCII PNM: stb has no reader */
        {"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n", 34, MPD_IMAGE_HDR},
        {"#?RGBE\n", 7, MPD_IMAGE_HDR},
        {"<html><body>hello</body></html>", 31, MPD_IMAGE_UNKNOWN},
        {"", 0, MPD_IMAGE_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        if (mpd_image_sniff(cases[i].bytes, cases[i].n) != cases[i].want)
            fail_msg("case %zu ('%.6s'): %s, want %s", i, cases[i].bytes,
                     mpd_image_format_name(mpd_image_sniff(cases[i].bytes, cases[i].n)),
                     mpd_image_format_name(cases[i].want));
    assert_int_equal(mpd_image_sniff(pic, sizeof(pic)), MPD_IMAGE_PIC);
    assert_int_equal(mpd_image_sniff(pic, 91), MPD_IMAGE_UNKNOWN);
    /* An 18-byte TGA header (uncompressed RGB, 2x2, 24 bits) and the same
     * with an image type TGA does not have. */
    unsigned char tga[18] = {0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 24, 0};
    assert_int_equal(mpd_image_sniff(tga, sizeof(tga)), MPD_IMAGE_TGA);
    tga[2] = 5;
    assert_int_equal(mpd_image_sniff(tga, sizeof(tga)), MPD_IMAGE_UNKNOWN);
    assert_string_equal(mpd_image_format_name(MPD_IMAGE_JPEG), "jpeg");
    assert_string_equal(mpd_image_format_name(MPD_IMAGE_PIC), "pic");
    assert_string_equal(mpd_image_format_name((mpd_image_format)99), "unknown");
}

/* Formats outside the allowed set are refused by name before decoding;
 * the two-argument mpd_image_decode (the command line's) takes them all. */
static void test_decode_refuses_formats_not_allowed(void **state)
{
    (void)state;
    unsigned char px[4 * 3 * 3];
    random_bytes(px, sizeof(px), 9);
    membuf bmp = {0}, tga = {0};
    assert_true(stbi_write_bmp_to_func(to_membuf, &bmp, 4, 3, 3, px));
    assert_true(stbi_write_tga_to_func(to_membuf, &tga, 4, 3, 3, px));
    mpd_image im;
    int rc =
        mpd_image_decode_formats(bmp.p, bmp.n, 0, MPD_IMAGE_FORMATS_CAMERA, &im, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    assert_null(im.data);
    assert_string_equal(msg, "BMP images are not accepted (allowed: jpeg, png)");
    rc = mpd_image_decode_formats(tga.p, tga.n, 0, MPD_IMAGE_FORMATS_CAMERA, &im, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    assert_string_equal(msg, "TGA images are not accepted (allowed: jpeg, png)");
    unsigned set = MPD_IMAGE_FORMATS_CAMERA | MPD_IMAGE_FORMAT_BIT(MPD_IMAGE_BMP);
    rc = mpd_image_decode_formats(bmp.p, bmp.n, 0, set, &im, msg, sizeof(msg));
    if (rc)
        fail_msg("BMP with bmp allowed: %s", msg);
    assert_memory_equal(im.data, px, sizeof(px));
    mpd_image_free(&im);
    rc = mpd_image_decode_formats(bmp.p, bmp.n, 0, MPD_IMAGE_FORMAT_BIT(MPD_IMAGE_PNG), &im, msg,
                                  sizeof(msg));
    assert_string_equal(msg, "BMP images are not accepted (allowed: png)");
    rc = mpd_image_decode(tga.p, tga.n, 0, &im, msg, sizeof(msg));
    if (rc)
        fail_msg("TGA through mpd_image_decode: %s", msg);
    assert_memory_equal(im.data, px, sizeof(px));
    mpd_image_free(&im);
    /* JPEG and PNG pass the camera set. */
    size_t len;
    unsigned char *jpg = photo_bytes("dog.jpg", &len);
    rc = mpd_image_decode_formats(jpg, len, 0, MPD_IMAGE_FORMATS_CAMERA, &im, msg, sizeof(msg));
    assert_int_equal(rc, 0);
    mpd_image_free(&im);
    free(jpg);
    /* Unknown data is named by its first bytes. */
    const char *t = "hello, world";
    rc = mpd_image_decode_formats(t, strlen(t), 0, MPD_IMAGE_FORMATS_CAMERA, &im, msg, sizeof(msg));
    assert_int_equal(rc, MPD_EFORMAT);
    assert_non_null(strstr(msg, "68 65 6c 6c 6f 2c 20 77"));
    assert_non_null(strstr(msg, "allowed: jpeg, png"));
    free(bmp.p);
    free(tga.p);
}

static void test_formats_parse_and_print(void **state)
{
    (void)state;
    unsigned set = 7;
    assert_int_equal(mpd_image_formats_parse("jpeg,png", &set, msg, sizeof(msg)), 0);
    assert_int_equal(set, MPD_IMAGE_FORMATS_CAMERA);
    assert_int_equal(mpd_image_formats_parse(" JPG , png,bmp ", &set, msg, sizeof(msg)), 0);
    assert_int_equal(set, MPD_IMAGE_FORMATS_CAMERA | MPD_IMAGE_FORMAT_BIT(MPD_IMAGE_BMP));
    assert_int_equal(mpd_image_formats_parse("all", &set, msg, sizeof(msg)), 0);
    assert_int_equal(set, MPD_IMAGE_FORMATS_ALL);
    assert_int_equal(mpd_image_formats_parse("png,png", &set, msg, sizeof(msg)), 0);
    assert_int_equal(set, MPD_IMAGE_FORMAT_BIT(MPD_IMAGE_PNG));
    static const char *const bad[][2] = {
        {"jpeg,webp", "'webp'"}, {"jpegs", "'jpegs'"}, {"", "empty"},
        {"jpeg,,png", "empty"},  {"png,", "empty"},    {"unknown", "'unknown'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        set = 7;
        int rc = mpd_image_formats_parse(bad[i][0], &set, msg, sizeof(msg));
        if (rc != MPD_EPARSE || !strstr(msg, bad[i][1]) || set != 0)
            fail_msg("\"%s\": rc %d, set %u, '%s'; want MPD_EPARSE naming %s", bad[i][0], rc, set,
                     msg, bad[i][1]);
    }
    char buf[128];
    mpd_image_formats_str(MPD_IMAGE_FORMATS_CAMERA, buf, sizeof(buf));
    assert_string_equal(buf, "jpeg, png");
    mpd_image_formats_str(0, buf, sizeof(buf));
    assert_string_equal(buf, "none");
    mpd_image_formats_str(MPD_IMAGE_FORMATS_ALL, buf, sizeof(buf));
    assert_string_equal(buf, "jpeg, png, bmp, gif, tga, pnm, psd, hdr, pic");
    assert_int_equal(mpd_image_formats_parse(buf, &set, msg, sizeof(msg)), 0);
    assert_int_equal(set, MPD_IMAGE_FORMATS_ALL);
    mpd_image_formats_str(MPD_IMAGE_FORMATS_ALL, buf, 8); /* cut short, still a string */
    assert_true(strlen(buf) < 8);
}

/* Inputs the image fuzz target found (tests/fuzz/corpus/image/): each is
 * refused with a message before stb_image 2.27 can go wrong on it. Under
 * SANITIZE=undefined (make test-sanitize) the old code failed these with
 * an out-of-bounds index (JPEG), a heap over-read (PGM) and a signed
 * overflow (PNG). */
static void test_fuzz_findings_refused(void **state)
{
    (void)state;
    static const unsigned char jpeg_dht[] = {0xff, 0xd8, 0xff, 0xc4, 0x66, 0x11, 0x01, 0xff, 0xc4};
    /* A whole DHT segment whose 16 counts add up to 16 x 255. */
    unsigned char jpeg_dht2[2 + 4 + 17 + 4080 + 2] = {0xff, 0xd8, 0xff, 0xc4};
    size_t seg = 2 + 17 + 4080;
    jpeg_dht2[4] = (unsigned char)(seg >> 8);
    jpeg_dht2[5] = (unsigned char)seg;
    jpeg_dht2[6] = 0x00;
    for (int i = 0; i < 16; i++)
        jpeg_dht2[7 + i] = 255;
    jpeg_dht2[sizeof(jpeg_dht2) - 2] = 0xff;
    jpeg_dht2[sizeof(jpeg_dht2) - 1] = 0xd9;
    static const unsigned char pgm16[] = "P5\n5 3\n258\n\xab\xaa\xaa\x2a\x0a\x38\x95\x79\x75\x76"
                                         "\x89\x75\x76\x00\x00\x00\x00\x89\x75\x76\x89\x75"
                                         "\x76\x00\x00\x89\x75\x76\x89\x75\x76";
    static const unsigned char png_big[] = {0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00,
                                            0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0xbb, 0xbb,
                                            0xbb, 0xbb, 0xbd, 0xbd, 0xbd, 0xbd, 0x08, 0x02, 0x00,
                                            0x00, 0x00};
    mpd_image im;
    char m[256];
    assert_int_equal(mpd_image_decode(jpeg_dht, sizeof(jpeg_dht), 4000000, &im, m, sizeof(m)),
                     MPD_EFORMAT);
    assert_int_equal(mpd_image_decode(jpeg_dht2, sizeof(jpeg_dht2), 4000000, &im, m, sizeof(m)),
                     MPD_EFORMAT);
    assert_non_null(strstr(m, "Huffman table"));
    assert_int_equal(mpd_image_decode(pgm16, sizeof(pgm16) - 1, 4000000, &im, m, sizeof(m)),
                     MPD_EFORMAT);
    assert_non_null(strstr(m, "16-bit"));
    /* A second table that starts inside its DHT segment and takes its
     * counts from the bytes after it, as stb reads them. */
    unsigned char jpeg_dht3[4 + 2 + 17 + 5 + 16 + 2] = {0xff, 0xd8, 0xff, 0xc4, 0x00, 2 + 17 + 5};
    memset(jpeg_dht3 + 6 + 17 + 1, 0xff, sizeof(jpeg_dht3) - (6 + 17 + 1));
    jpeg_dht3[6 + 17 + 1] = 0x01;
    assert_int_equal(mpd_image_decode(jpeg_dht3, sizeof(jpeg_dht3), 4000000, &im, m, sizeof(m)),
                     MPD_EFORMAT);
    assert_non_null(strstr(m, "Huffman table"));
    static const char ppm_long[] = "P6\n# a comment\n5555555555555555 3\n255\n";
    assert_int_equal(mpd_image_decode(ppm_long, sizeof(ppm_long) - 1, 4000000, &im, m, sizeof(m)),
                     MPD_EFORMAT);
    assert_non_null(strstr(m, "8 digits"));
    assert_int_equal(mpd_image_decode(png_big, sizeof(png_big), 4000000, &im, m, sizeof(m)),
                     MPD_ELIMIT);
    assert_non_null(strstr(m, "3149642683x3183328701"));
}

/* mpd_image_decode of the fuzz finding kept in tests/fuzz/corpus/image/
 * as name (len bytes), its message in m. */
static int decode_fuzz_input(const char *name, size_t len, mpd_image *im, char *m, size_t mlen)
{
    char path[256];
    snprintf(path, sizeof(path), "tests/fuzz/corpus/image/%s", name);
    unsigned char *buf;
    size_t n;
    assert_int_equal(mpd_file_read(path, &buf, &n, m, mlen), 0);
    assert_int_equal(n, len);
    int rc = mpd_image_decode(buf, n, 4000000, im, m, mlen);
    free(buf);
    return rc;
}

/* A fuzz finding (len bytes) must decode to an image (w x h; 0: any size)
 * or an error, within its budget, without a sanitizer report. */
static void fuzz_input_decodes_or_refuses(const char *name, size_t len, int w, int h)
{
    char m[256];
    mpd_image im;
    int rc = decode_fuzz_input(name, len, &im, m, sizeof(m));
    if (rc == 0) {
        assert_true(w ? im.w == w && im.h == h : im.w > 0 && im.h > 0);
        mpd_image_free(&im);
    } else {
        assert_int_equal(rc, MPD_EFORMAT);
        assert_null(im.data);
    }
}

/* A JPEG the image fuzz target made (10-minute run, 2026-11-29) on which
 * stb_image 2.27 shifts by 32 (host/image.c); make test-sanitize runs this
 * with UBSan halting on error. */
static void test_fuzz_jpeg_shift_by_32(void **state)
{
    (void)state;
    fuzz_input_decodes_or_refuses("jpeg-entropy-shift-by-32.jpg", 1339, 0, 0);
}

/* A PSD the image fuzz target made (CI's 30 s run, 2026-11-30): 11
 * channels, partial alpha and colours above it, so stb_image 2.27's
 * matte removal converts out-of-range floats to unsigned char
 * (host/image.c). scripts/fuzz replays it under clang's UBSan, which
 * checks that conversion; GCC's does not. */
static void test_fuzz_psd_matte_float_to_uchar(void **state)
{
    (void)state;
    fuzz_input_decodes_or_refuses("psd-matte-float-to-uchar.psd", 97, 3, 3);
}

/* A JPEG the image fuzz target made (CI's 30 s run, 2026-12-01): its
 * scans decode with AC table 0, which no DHT defines (a bit flip made the
 * second table AC2). stb_image 2.27 decoded with the uninitialised table
 * and, in the fuzz build, failed its assert that a code matches its table:
 * an abort. Refused before decoding, with the table named. */
static void test_fuzz_jpeg_undefined_huffman_table(void **state)
{
    (void)state;
    char m[256];
    mpd_image im;
    assert_int_equal(decode_fuzz_input("jpeg-huffman-code-assert.jpg", 2857, &im, m, sizeof(m)),
                     MPD_EFORMAT);
    assert_null(im.data);
    assert_non_null(strstr(m, "Huffman table AC0, which no DHT before it defines"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_real_jpeg),
        cmocka_unit_test(test_load_file_and_missing_file),
        cmocka_unit_test(test_decode_png_rgb_exact),
        cmocka_unit_test(test_decode_bmp_exact),
        cmocka_unit_test(test_decode_grey_png_becomes_rgb),
        cmocka_unit_test(test_decode_grey_alpha_png_becomes_rgb),
        cmocka_unit_test(test_decode_rgba_png_drops_alpha),
        cmocka_unit_test(test_decode_refuses_empty_buffer),
        cmocka_unit_test(test_decode_refuses_random_bytes),
        cmocka_unit_test(test_decode_refuses_truncated_jpeg),
        cmocka_unit_test(test_crc32_known_values),
        cmocka_unit_test(test_decode_huge_png_header_refused_with_elimit),
        cmocka_unit_test(test_decode_large_png_header_over_limit),
        cmocka_unit_test(test_letterbox_2x2_into_4x4),
        cmocka_unit_test(test_letterbox_wide_image_has_border_rows),
        cmocka_unit_test(test_letterbox_tall_image_has_border_columns),
        cmocka_unit_test(test_letterbox_1x1_image),
        cmocka_unit_test(test_letterbox_random_and_real_image_match_darknet),
        cmocka_unit_test(test_letterbox_one_row_result),
        cmocka_unit_test(test_decode_refuses_truncated_photos),
        cmocka_unit_test(test_decode_refuses_truncated_bmp),
        cmocka_unit_test(test_decode_whole_photos_identical),
        cmocka_unit_test(test_decode_png_bomb_refused_with_elimit),
        cmocka_unit_test(test_letterbox_by_rows_matches_old),
        cmocka_unit_test(test_decode_16bit_png_needs_more_than_its_pixels_allow),
        cmocka_unit_test(test_decode_photos_fit_their_budget),
        cmocka_unit_test(test_letterbox_tall_image_small_scratch),
        cmocka_unit_test(test_decode_refuses_truncated_other_formats),
        cmocka_unit_test(test_sniff_identifies_formats_by_magic),
        cmocka_unit_test(test_decode_refuses_formats_not_allowed),
        cmocka_unit_test(test_formats_parse_and_print),
        cmocka_unit_test(test_fuzz_findings_refused),
        cmocka_unit_test(test_fuzz_jpeg_shift_by_32),
        cmocka_unit_test(test_fuzz_psd_matte_float_to_uchar),
        cmocka_unit_test(test_fuzz_jpeg_undefined_huffman_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
