/* test_image.c - mpd_image_decode (JPEG / PNG / BMP, channel conversion,
 * refusals and the pixel limit) and mpd__letterbox against a naive
 * re-implementation of darknet's letterbox_image written here. */
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
    d[8] = 8;                   /* bit depth */
    d[9] = (unsigned char)ctype;
    d[10] = d[11] = d[12] = 0;  /* compression, filter, interlace */
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
    uint32_t stored = (uint32_t)png[29] << 24 | (uint32_t)png[30] << 16 |
                      (uint32_t)png[31] << 8 | png[32];
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
        print_error("100000x100000 PNG header: rc %d (%s), message '%s'\n", rc,
                    mpd_strerror(rc), msg);
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
            print_error("letterbox %dx%d -> %dx%d: element %zu = %.9g, want %.9g\n", im->w,
                        im->h, nw, nh, i, got[i], want[i]);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
