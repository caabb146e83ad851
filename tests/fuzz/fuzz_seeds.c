/* fuzz_seeds.c - writes the generated seed corpora of the fuzz targets:
 *
 *   fuzz_seeds OUTDIR REAL_CFG REAL_WEIGHTS PHOTO...
 *
 * OUTDIR/image      each photo scaled down (48 pixels wide, and 5 wide)
 *                   and written in every format stb_image reads: PNG (RGB,
 *                   grey, RGBA), JPEG, BMP, TGA (RLE and raw), HDR, PPM,
 *                   PGM, PSD, GIF; the first two photos in all of them,
 *                   the rest as JPEG and PNG;
 * OUTDIR/multipart  "Content-Type LF body" inputs framed as curl, Python
 *                   requests and browsers frame uploads, around those
 *                   images;
 * OUTDIR/weights    well-formed weights files for the nets of fuzz_nets.h
 *                   (0.1, 0.2 and 1.0 headers, values synthetic and taken
 *                   from REAL_WEIGHTS), and REAL_CFG NUL the first 4 KiB
 *                   of REAL_WEIGHTS.
 *
 * Deterministic: the same files give the same seeds. Run by scripts/fuzz;
 * exits non-zero with a message on any error. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <stb_image.h>
#include <stb_image_write.h>

#include "cfg.h"
#include "fuzz_nets.h"
#include "net.h"

static const char *outdir;

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_seeds: %s: %s\n", what, detail);
    exit(1);
}

static char *path_of(const char *sub, const char *name)
{
    static char p[4096];
    snprintf(p, sizeof(p), "%s/%s/%s", outdir, sub, name);
    return p;
}

static void write_file(const char *sub, const char *name, const void *a, size_t na, const void *b,
                       size_t nb)
{
    const char *p = path_of(sub, name);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(a, 1, na, f) != na || (nb && fwrite(b, 1, nb, f) != nb) || fclose(f))
        die("cannot write", p);
}

static unsigned char *read_all(const char *path, size_t *n, size_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        die("cannot open", path);
    unsigned char *buf = malloc(max);
    if (!buf)
        die("out of memory", path);
    *n = fread(buf, 1, max, f);
    fclose(f);
    return buf;
}

/* ---- images ------------------------------------------------------------ */

typedef struct {
    unsigned char *b;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n)
{
    if (!n)
        return;
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->b = realloc(b->b, b->cap);
        if (!b->b)
            die("out of memory", "buffer");
    }
    memcpy(b->b + b->n, p, n);
    b->n += n;
}

static void put_str(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

static void put_be(buf *b, uint32_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        unsigned char c = (unsigned char)(v >> (8 * i));
        put(b, &c, 1);
    }
}

static void put_le16(buf *b, unsigned v)
{
    unsigned char c[2] = {(unsigned char)v, (unsigned char)(v >> 8)};
    put(b, c, 2);
}

/* LZW bit writer for GIF. */
typedef struct {
    buf *out;
    unsigned char block[255];
    int nblock;
    uint32_t acc;
    int nacc;
} gifbits;

static void gif_byte(gifbits *g, unsigned char c)
{
    g->block[g->nblock++] = c;
    if (g->nblock == 255) {
        unsigned char n = 255;
        put(g->out, &n, 1);
        put(g->out, g->block, 255);
        g->nblock = 0;
    }
}

static void gif_code(gifbits *g, unsigned code, int width)
{
    g->acc |= (uint32_t)code << g->nacc;
    g->nacc += width;
    while (g->nacc >= 8) {
        gif_byte(g, (unsigned char)g->acc);
        g->acc >>= 8;
        g->nacc -= 8;
    }
}

/* A GIF with a 3-3-2 palette whose LZW stream never grows past 9-bit codes:
 * a clear code every 250 literals, as simple GIF writers do. */
static void write_gif(const char *name, const unsigned char *px, int w, int h)
{
    buf b = {0};
    put_str(&b, "GIF89a");
    put_le16(&b, (unsigned)w);
    put_le16(&b, (unsigned)h);
    unsigned char flags[3] = {0xf7, 0, 0}; /* global table of 256 colours */
    put(&b, flags, 3);
    for (int i = 0; i < 256; i++) {
        unsigned char rgb[3] = {(unsigned char)((i >> 5) * 255 / 7),
                                (unsigned char)(((i >> 2) & 7) * 255 / 7),
                                (unsigned char)((i & 3) * 255 / 3)};
        put(&b, rgb, 3);
    }
    put_str(&b, ",");
    put_le16(&b, 0);
    put_le16(&b, 0);
    put_le16(&b, (unsigned)w);
    put_le16(&b, (unsigned)h);
    unsigned char z[2] = {0, 8}; /* no local table; LZW minimum code size 8 */
    put(&b, z, 2);
    gifbits g = {.out = &b};
    int since = 0;
    gif_code(&g, 256, 9);
    for (int i = 0; i < w * h; i++) {
        const unsigned char *p = px + 3 * i;
        if (since == 250) {
            gif_code(&g, 256, 9);
            since = 0;
        }
        gif_code(&g, (unsigned)((p[0] >> 5) << 5 | (p[1] >> 5) << 2 | p[2] >> 6), 9);
        since++;
    }
    gif_code(&g, 257, 9);
    if (g.nacc)
        gif_byte(&g, (unsigned char)g.acc);
    if (g.nblock) {
        unsigned char n = (unsigned char)g.nblock;
        put(&b, &n, 1);
        put(&b, g.block, (size_t)g.nblock);
    }
    unsigned char end[2] = {0, ';'}; /* block terminator, then the trailer */
    put(&b, end, 2);
    write_file("image", name, b.b, b.n, NULL, 0);
    free(b.b);
}

/* An uncompressed 8-bit RGB Photoshop file. */
static void write_psd(const char *name, const unsigned char *px, int w, int h)
{
    buf b = {0};
    put_str(&b, "8BPS");
    put_be(&b, 1, 2);
    put_be(&b, 0, 4);
    put_be(&b, 0, 2);
    put_be(&b, 3, 2);
    put_be(&b, (uint32_t)h, 4);
    put_be(&b, (uint32_t)w, 4);
    put_be(&b, 8, 2);
    put_be(&b, 3, 2); /* RGB */
    put_be(&b, 0, 4); /* colour mode data */
    put_be(&b, 0, 4); /* image resources */
    put_be(&b, 0, 4); /* layers and masks */
    put_be(&b, 0, 2); /* raw */
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < w * h; i++)
            put(&b, px + 3 * i + c, 1);
    write_file("image", name, b.b, b.n, NULL, 0);
    free(b.b);
}

static void write_pnm(const char *name, const unsigned char *px, int w, int h, int grey)
{
    buf b = {0};
    char head[64];
    snprintf(head, sizeof(head), "%s\n# %s\n%d %d\n255\n", grey ? "P5" : "P6", name, w, h);
    put_str(&b, head);
    for (int i = 0; i < w * h; i++) {
        if (grey) {
            const unsigned char *p = px + 3 * i;
            unsigned char y = (unsigned char)((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8);
            put(&b, &y, 1);
        } else {
            put(&b, px + 3 * i, 3);
        }
    }
    write_file("image", name, b.b, b.n, NULL, 0);
    free(b.b);
}

/* Nearest-neighbour scaling to width w (at least 1 row). */
static unsigned char *scale(const unsigned char *px, int pw, int ph, int w, int *h)
{
    *h = ph * w / pw;
    if (*h < 1)
        *h = 1;
    unsigned char *o = malloc((size_t)w * (size_t)*h * 3);
    if (!o)
        die("out of memory", "scale");
    for (int y = 0; y < *h; y++)
        for (int x = 0; x < w; x++)
            memcpy(o + 3 * ((size_t)y * w + x),
                   px + 3 * ((size_t)(y * ph / *h) * pw + (size_t)(x * pw / w)), 3);
    return o;
}

static void image_seeds(const char *stem, const unsigned char *px, int w, int h, int all)
{
    char name[256];
#define NAME(ext) (snprintf(name, sizeof(name), "%s-%dx%d.%s", stem, w, h, ext), name)
    if (!stbi_write_jpg(path_of("image", NAME("jpg")), w, h, 3, px, 75) ||
        !stbi_write_png(path_of("image", NAME("png")), w, h, 3, px, w * 3))
        die("cannot write", name);
    if (!all)
        return;
    size_t n = (size_t)w * (size_t)h;
    unsigned char *grey = malloc(n), *rgba = malloc(n * 4);
    float *f = malloc(n * 3 * sizeof(float));
    if (!grey || !rgba || !f)
        die("out of memory", stem);
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = px + 3 * i;
        grey[i] = (unsigned char)((p[0] * 77 + p[1] * 150 + p[2] * 29) >> 8);
        memcpy(rgba + 4 * i, p, 3);
        rgba[4 * i + 3] = (unsigned char)(i * 255 / n);
        for (int c = 0; c < 3; c++)
            f[3 * i + c] = p[c] / 255.0f * 4.0f;
    }
    if (!stbi_write_png(path_of("image", NAME("grey.png")), w, h, 1, grey, w) ||
        !stbi_write_png(path_of("image", NAME("rgba.png")), w, h, 4, rgba, w * 4) ||
        !stbi_write_bmp(path_of("image", NAME("bmp")), w, h, 3, px) ||
        !stbi_write_hdr(path_of("image", NAME("hdr")), w, h, 3, f))
        die("cannot write", name);
    stbi_write_tga_with_rle = 1;
    if (!stbi_write_tga(path_of("image", NAME("rle.tga")), w, h, 3, px))
        die("cannot write", name);
    stbi_write_tga_with_rle = 0;
    if (!stbi_write_tga(path_of("image", NAME("tga")), w, h, 3, px))
        die("cannot write", name);
    write_pnm(NAME("ppm"), px, w, h, 0);
    write_pnm(NAME("pgm"), px, w, h, 1);
    write_psd(NAME("psd"), px, w, h);
    write_gif(NAME("gif"), px, w, h);
#undef NAME
    free(grey);
    free(rgba);
    free(f);
}

/* ---- multipart --------------------------------------------------------- */

static void multipart_seed(const char *name, const char *ct, const char *pre, const char *b,
                           const char *img_headers, const void *img, size_t nimg,
                           const char *epilogue)
{
    buf o = {0};
    put_str(&o, ct);
    put_str(&o, "\n");
    put_str(&o, pre);
    put_str(&o, "--");
    put_str(&o, b);
    put_str(&o, "\r\n");
    if (img_headers) {
        put_str(&o, img_headers);
        put_str(&o, "\r\n");
        put(&o, img, nimg);
        put_str(&o, "\r\n--");
        put_str(&o, b);
        put_str(&o, "\r\n");
    }
    put_str(&o, "Content-Disposition: form-data; name=\"min_confidence\"\r\n\r\n0.4\r\n--");
    put_str(&o, b);
    put_str(&o, "--\r\n");
    put_str(&o, epilogue);
    write_file("multipart", name, o.b, o.n, NULL, 0);
    free(o.b);
}

static void multipart_seeds(const char *jpg, const char *png)
{
    size_t nj, np;
    unsigned char *j = read_all(jpg, &nj, 1 << 20), *p = read_all(png, &np, 1 << 20);
#define CURL "------------------------2ef5f7c4b75dba8e"
#define REQ "9f4b3f1e8b2a4c6d8e0f1a2b3c4d5e6f"
#define WEBKIT "----WebKitFormBoundary7MA4YWxkTrZu0gW"
    multipart_seed("curl-jpeg", "multipart/form-data; boundary=" CURL, "", CURL,
                   "Content-Disposition: form-data; name=\"image\"; filename=\"dog.jpg\"\r\n"
                   "Content-Type: image/jpeg\r\n",
                   j, nj, "");
    multipart_seed("requests-png", "multipart/form-data; boundary=" REQ, "", REQ,
                   "Content-Disposition: form-data; name=\"image\"; filename=\"dog.png\"\r\n", p,
                   np, "");
    multipart_seed(
        "browser-png", "Multipart/Form-Data; boundary=\"" WEBKIT "\"; charset=utf-8", "", WEBKIT,
        "Content-Disposition: form-data; name=\"image\"; filename=\"a \\\"b\\\".png\"\r\n"
        "Content-Type: image/png\r\n",
        p, np, "");
    multipart_seed("preamble-epilogue", "multipart/form-data; boundary=\"simple boundary\"",
                   "This is the preamble.\r\n", "simple boundary",
                   "content-disposition: form-data; name=image\r\n", j, nj,
                   "This is the epilogue.\r\n");
    multipart_seed("no-image", "multipart/form-data; boundary=" CURL, "", CURL, NULL, NULL, 0, "");
    multipart_seed("empty-image", "multipart/form-data; boundary=" REQ, "", REQ,
                   "Content-Disposition: form-data; name=\"image\"\r\n", NULL, 0, "");
    free(j);
    free(p);
}

/* ---- weights ----------------------------------------------------------- */

static void weights_seed(const char *name, const char *cfg_text, int with_cfg, int major, int minor,
                         const float *real, size_t nreal)
{
    char msg[512];
    mpd_cfg *cfg = NULL;
    mpd_net *net = NULL;
    if (mpd_cfg_parse_string(cfg_text, "fuzz.cfg", &cfg, msg, sizeof(msg)) ||
        mpd_net_from_cfg(cfg, &net, msg, sizeof(msg)))
        die("built-in net", msg);
    buf o = {0};
    if (with_cfg)
        put(&o, cfg_text, strlen(cfg_text) + 1);
    int32_t hdr[3] = {major, minor, 0};
    put(&o, hdr, sizeof(hdr));
    size_t seen = mpd_net_weights_file_size(net, major, minor) - 12 - net->nparams * 4;
    uint64_t zero = 0;
    put(&o, &zero, seen);
    uint32_t lcg = 12345;
    for (size_t i = 0; i < net->nparams; i++) {
        /* Positive, so batch-norm variances are valid. */
        float v;
        if (real && nreal) {
            v = fabsf(real[i % nreal]) + 1e-3f;
        } else {
            lcg = lcg * 1664525u + 1013904223u;
            v = 0.05f + (float)(lcg >> 8) / (float)(1u << 24);
        }
        put(&o, &v, sizeof(v));
    }
    write_file("weights", name, o.b, o.n, NULL, 0);
    free(o.b);
    mpd_net_free(net);
    mpd_cfg_free(cfg);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: fuzz_seeds OUTDIR REAL_CFG REAL_WEIGHTS PHOTO...\n");
        return 2;
    }
    outdir = argv[1];
    const char *subs[] = {"", "/image", "/multipart", "/weights"};
    for (int i = 0; i < 4; i++) {
        char d[4096];
        snprintf(d, sizeof(d), "%s%s", outdir, subs[i]);
        mkdir(d, 0755);
    }

    /* Weights. */
    size_t nreal;
    unsigned char *real = read_all(argv[3], &nreal, 20 + 4096);
    if (nreal < 20 + 4096)
        die("too short", argv[3]);
    float vals[1024];
    memcpy(vals, real + 20, sizeof(vals));
    weights_seed("tiny-v0.2", fuzz_net_tiny, 0, 0, 2, NULL, 0);
    weights_seed("tiny-v0.1", fuzz_net_tiny, 0, 0, 1, NULL, 0);
    weights_seed("tiny-v1.0", fuzz_net_tiny, 0, 1, 0, NULL, 0);
    weights_seed("tiny-real-values", fuzz_net_tiny, 0, 0, 2, vals, 1024);
    weights_seed("plain-with-cfg", fuzz_net_plain, 1, 0, 2, NULL, 0);
    size_t ncfg;
    unsigned char *cfg = read_all(argv[2], &ncfg, 1 << 20);
    write_file("weights", "real-cfg-no-weights", cfg, ncfg, "", 1);
    {
        /* The same, with the first 4 KiB of the real weights after the NUL. */
        buf o = {0};
        put(&o, cfg, ncfg);
        put(&o, "", 1);
        put(&o, real, 20 + 4096);
        write_file("weights", "real-cfg-real-head", o.b, o.n, NULL, 0);
        free(o.b);
    }
    free(cfg);
    free(real);

    /* Images, then multipart bodies around two of them. */
    char small_jpg[4096] = "", small_png[4096] = "";
    for (int i = 4; i < argc; i++) {
        int w, h, comp;
        unsigned char *px = stbi_load(argv[i], &w, &h, &comp, 3);
        if (!px)
            die("cannot decode", argv[i]);
        const char *base = strrchr(argv[i], '/');
        base = base ? base + 1 : argv[i];
        char stem[256];
        snprintf(stem, sizeof(stem), "%.*s", (int)strcspn(base, "."), base);
        int sh;
        unsigned char *s = scale(px, w, h, 48, &sh);
        image_seeds(stem, s, 48, sh, i < 6);
        if (i == 4) {
            snprintf(small_jpg, sizeof(small_jpg), "%s", path_of("image", stem));
            snprintf(small_jpg + strlen(small_jpg), sizeof(small_jpg) - strlen(small_jpg),
                     "-48x%d.jpg", sh);
            snprintf(small_png, sizeof(small_png), "%s", path_of("image", stem));
            snprintf(small_png + strlen(small_png), sizeof(small_png) - strlen(small_png),
                     "-48x%d.png", sh);
        }
        free(s);
        if (i == 4) {
            s = scale(px, w, h, 5, &sh);
            image_seeds(stem, s, 5, sh, 1);
            free(s);
        }
        stbi_image_free(px);
    }
    multipart_seeds(small_jpg, small_png);
    return 0;
}
