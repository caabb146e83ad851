#include "image.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stb_image.h>
#include <stb_image_write.h>

/* stb_easy_font is all static functions; not every one is used here. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

#include "mpd.h"

int mpd_image_decode(const void *buf, size_t len, long long max_pixels, mpd_image *out,
                     char *msg, size_t msglen)
{
    memset(out, 0, sizeof(*out));
    if (len == 0)
        return mpd__fail(msg, msglen, MPD_EFORMAT, "empty image");
    if (len > 0x7fffffff)
        return mpd__fail(msg, msglen, MPD_ELIMIT, "image of %zu bytes is too large", len);
    int w, h, comp;
    /* The header alone gives the size, so a huge image is refused before
     * any pixel memory is allocated. */
    /* stb's header scan refuses images over 2^30 bytes of pixels and then
     * reports only "unknown image type"; read a PNG's size ourselves (IHDR
     * is always the first chunk) so an oversized PNG is a size limit. */
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const unsigned char *b = buf;
    if (len >= 24 && memcmp(b, png_sig, 8) == 0 && memcmp(b + 12, "IHDR", 4) == 0) {
        long long pw = (long long)b[16] << 24 | b[17] << 16 | b[18] << 8 | b[19];
        long long ph = (long long)b[20] << 24 | b[21] << 16 | b[22] << 8 | b[23];
        if (max_pixels > 0 && pw * ph > max_pixels)
            return mpd__fail(msg, msglen, MPD_ELIMIT,
                             "image is %lldx%lld = %lld pixels, limit is %lld", pw, ph, pw * ph,
                             max_pixels);
    }
    if (!stbi_info_from_memory(buf, (int)len, &w, &h, &comp)) {
        return mpd__fail(msg, msglen, MPD_EFORMAT,
                         "not a decodable image (JPEG, PNG, BMP, GIF, PNM, TGA, PSD, HDR): %s",
                         stbi_failure_reason());
    }
    if (w <= 0 || h <= 0)
        return mpd__fail(msg, msglen, MPD_EFORMAT, "image has no pixels");
    if (max_pixels > 0 && (long long)w * h > max_pixels)
        return mpd__fail(msg, msglen, MPD_ELIMIT, "image is %dx%d = %lld pixels, limit is %lld",
                         w, h, (long long)w * h, max_pixels);
    unsigned char *px = stbi_load_from_memory(buf, (int)len, &w, &h, &comp, 3);
    if (!px)
        return mpd__fail(msg, msglen, MPD_EFORMAT, "image could not be decoded: %s",
                         stbi_failure_reason());
    out->w = w;
    out->h = h;
    out->data = px; /* stbi memory; released by mpd_image_free */
    return 0;
}

int mpd_file_read(const char *path, unsigned char **buf, size_t *len, char *msg, size_t msglen)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return mpd__fail(msg, msglen, MPD_EIO, "%s: cannot open: %s", path, strerror(errno));
    int rc = 0;
    long sz = -1;
    if (fseek(f, 0, SEEK_END) == 0)
        sz = ftell(f);
    if (sz < 0 || fseek(f, 0, SEEK_SET) != 0) {
        rc = mpd__fail(msg, msglen, MPD_EIO, "%s: cannot read (not a regular file?)", path);
    } else if (!(*buf = malloc(sz ? (size_t)sz : 1))) {
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "%s: out of memory", path);
    } else if (fread(*buf, 1, (size_t)sz, f) != (size_t)sz) {
        rc = mpd__fail(msg, msglen, MPD_EIO, "%s: read failed", path);
        free(*buf);
        *buf = NULL;
    } else {
        *len = (size_t)sz;
    }
    fclose(f);
    return rc;
}

int mpd_image_load(const char *path, long long max_pixels, mpd_image *out, char *msg,
                   size_t msglen)
{
    memset(out, 0, sizeof(*out));
    unsigned char *buf;
    size_t len;
    int rc = mpd_file_read(path, &buf, &len, msg, msglen);
    if (rc)
        return rc;
    char detail[256];
    rc = mpd_image_decode(buf, len, max_pixels, out, detail, sizeof(detail));
    if (rc)
        mpd__fail(msg, msglen, rc, "%s: %s", path, detail);
    free(buf);
    return rc;
}

void mpd_image_free(mpd_image *im)
{
    if (!im)
        return;
    stbi_image_free(im->data);
    im->data = NULL;
    im->w = im->h = 0;
}

void mpd__letterbox_size(int im_w, int im_h, int net_w, int net_h, int *new_w, int *new_h)
{
    if ((float)net_w / im_w < (float)net_h / im_h) {
        *new_w = net_w;
        *new_h = (int)(((long long)im_h * net_w) / im_w);
    } else {
        *new_h = net_h;
        *new_w = (int)(((long long)im_w * net_h) / im_h);
    }
    /* darknet would produce an empty image for extreme aspect ratios. */
    if (*new_w < 1)
        *new_w = 1;
    if (*new_h < 1)
        *new_h = 1;
}

int mpd__letterbox(const mpd_image *im, int net_w, int net_h, float *dst)
{
    int new_w, new_h;
    if (im->w < 1 || im->h < 1 || !im->data)
        return MPD_EINVAL;
    mpd__letterbox_size(im->w, im->h, net_w, net_h, &new_w, &new_h);
    /* Horizontal pass into part (3 x im->h x new_w), then vertical pass into
     * the centred window of dst; the same float operations in the same order
     * as darknet's resize_image, reading pixels as u8 / 255. */
    float *part = malloc((size_t)3 * im->h * new_w * sizeof(float));
    if (!part)
        return MPD_ENOMEM;
    size_t plane = (size_t)net_w * net_h;
    for (size_t i = 0; i < 3 * plane; i++)
        dst[i] = .5f;
    float w_scale = new_w > 1 ? (float)(im->w - 1) / (new_w - 1) : 0;
    float h_scale = new_h > 1 ? (float)(im->h - 1) / (new_h - 1) : 0;
    const unsigned char *px = im->data;
#define PIX(x, y, k) ((float)px[((size_t)(y) * im->w + (x)) * 3 + (k)] / 255.f)
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

/* ---- drawing ------------------------------------------------------------ */

static void fill_rect(mpd_image *im, int x0, int y0, int x1, int y1, const unsigned char *rgb)
{
    if (x0 < 0)
        x0 = 0;
    if (y0 < 0)
        y0 = 0;
    if (x1 > im->w)
        x1 = im->w;
    if (y1 > im->h)
        y1 = im->h;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++)
            memcpy(im->data + ((size_t)y * im->w + x) * 3, rgb, 3);
}

static void class_color(int id, unsigned char *rgb)
{
    /* Evenly spread hues, fully saturated, so neighbouring ids differ. */
    float hue = (float)((id * 37) % 360) / 60.f;
    int sector = (int)hue;
    float f = hue - sector;
    unsigned char v = 255, p = 0, q = (unsigned char)(255 * (1 - f)), t = (unsigned char)(255 * f);
    unsigned char tab[6][3] = {{v, t, p}, {q, v, p}, {p, v, t}, {p, q, v}, {t, p, v}, {v, p, q}};
    memcpy(rgb, tab[sector % 6], 3);
}

static void draw_text(mpd_image *im, int x, int y, const char *text, int scale,
                      const unsigned char *rgb)
{
    enum { VBUF = 96 * 1024 };
    char *vbuf = malloc(VBUF);
    if (!vbuf)
        return;
    int quads = stb_easy_font_print(0, 0, (char *)text, NULL, vbuf, VBUF);
    const float *v = (const float *)vbuf; /* 4 vertices x (x, y, z, color) */
    for (int q = 0; q < quads; q++, v += 16) {
        int qx0 = (int)v[0], qy0 = (int)v[1], qx1 = (int)v[8], qy1 = (int)v[9];
        fill_rect(im, x + qx0 * scale, y + qy0 * scale, x + qx1 * scale, y + qy1 * scale, rgb);
    }
    free(vbuf);
}

void mpd_image_draw_detections(mpd_image *im, const mpd_detection *dets, int n)
{
    int thick = im->h / 300 > 1 ? im->h / 300 : 1;
    int scale = im->h >= 600 ? 2 : 1;
    for (int i = n - 1; i >= 0; i--) { /* best last, so it is drawn on top */
        const mpd_detection *d = &dets[i];
        unsigned char col[3], black[3] = {0, 0, 0};
        class_color(d->class_id, col);
        int x0 = (int)d->x0, y0 = (int)d->y0, x1 = (int)d->x1, y1 = (int)d->y1;
        fill_rect(im, x0, y0, x1 + 1, y0 + thick, col);
        fill_rect(im, x0, y1 + 1 - thick, x1 + 1, y1 + 1, col);
        fill_rect(im, x0, y0, x0 + thick, y1 + 1, col);
        fill_rect(im, x1 + 1 - thick, y0, x1 + 1, y1 + 1, col);
        char label[96];
        snprintf(label, sizeof(label), "%s %.0f%%", d->label, d->confidence * 100);
        int tw = stb_easy_font_width(label) * scale, th = 10 * scale;
        int ty = y0 - th - 2 >= 0 ? y0 - th - 2 : y0;
        fill_rect(im, x0, ty, x0 + tw + 4, ty + th + 2, col);
        draw_text(im, x0 + 2, ty + 2, label, scale, black);
    }
}

int mpd_image_write_png(const mpd_image *im, const char *path, char *msg, size_t msglen)
{
    if (!stbi_write_png(path, im->w, im->h, 3, im->data, im->w * 3))
        return mpd__fail(msg, msglen, MPD_EIO, "%s: cannot write PNG", path);
    return 0;
}
