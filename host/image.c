#include "image.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpd.h"

/* ---- memory accounting ----------------------------------------------------
 *
 * stb_image is compiled here (not taken from libstb) so that its allocations
 * go through these functions: they count the bytes this thread holds and,
 * while a decode runs, refuse to go over that decode's budget, so a crafted
 * image cannot make the decoder allocate more than the pixel limit implies.
 * The letterbox's scratch is counted too, so tests can see what it takes.
 *
 * Sizes come from malloc_usable_size rather than a header before each
 * block: the decoded pixels leave this file as an ordinary malloc block that
 * free() releases. A realloc counts its old and new block together (a copy
 * may hold both for a moment), which keeps the bound true on any libc. */

/* One decode in progress on this thread. */
typedef struct {
    size_t limit;   /* live may not go above this; 0: no limit */
    size_t refused; /* the first request refused under limit, 0 if none */
    int no_memory;  /* an allocation failed (malloc itself, or the table) */
    /* Every block stb holds now, so that a decode stopped midway (see
     * rd_read) can release them: stb's own clean-up does not run then. */
    void **blocks;
    size_t n, cap;
} decode_session;

static _Thread_local struct {
    size_t live;         /* bytes in blocks counted here and not yet freed or handed over */
    size_t peak;         /* the most live has been since mpd__image_mem_reset */
    decode_session *dec; /* the decode running on this thread, if any */
} acct;

static void count_add(void *p, size_t transient)
{
    acct.live += malloc_usable_size(p);
    if (acct.live + transient > acct.peak)
        acct.peak = acct.live + transient;
}

static void count_sub(void *p)
{
    size_t n = malloc_usable_size(p);
    acct.live -= n < acct.live ? n : acct.live;
}

static int session_allows(decode_session *d, size_t n)
{
    if (!d || !d->limit || (n <= d->limit && acct.live <= d->limit - n))
        return 1;
    if (!d->refused)
        d->refused = n;
    return 0;
}

/* Room for one more block in the table (grown with plain realloc: the table
 * is the accountant's, not the decoder's). */
static int session_reserve(decode_session *d)
{
    if (!d || d->n < d->cap)
        return 1;
    size_t cap = d->cap ? 2 * d->cap : 32;
    void **b = realloc(d->blocks, cap * sizeof(*b));
    if (!b) {
        d->no_memory = 1;
        return 0;
    }
    d->blocks = b;
    d->cap = cap;
    return 1;
}

/* Replaces block p by q in the table (q NULL: removes p). Recent blocks are
 * freed first, so the search starts at the end. */
static void session_swap(decode_session *d, void *p, void *q)
{
    for (size_t i = d ? d->n : 0; i-- > 0;) {
        if (d->blocks[i] != p)
            continue;
        if (q)
            d->blocks[i] = q;
        else
            d->blocks[i] = d->blocks[--d->n];
        return;
    }
}

/* Frees every block the decode still holds. */
static void session_release(decode_session *d)
{
    for (size_t i = 0; i < d->n; i++) {
        count_sub(d->blocks[i]);
        free(d->blocks[i]);
    }
    d->n = 0;
}

static void *acct_malloc(size_t n)
{
    decode_session *d = acct.dec;
    if (!session_allows(d, n) || !session_reserve(d))
        return NULL;
    void *p = malloc(n ? n : 1);
    if (!p) {
        if (d)
            d->no_memory = 1;
        return NULL;
    }
    count_add(p, 0);
    if (d)
        d->blocks[d->n++] = p;
    return p;
}

static void acct_free(void *p)
{
    if (!p)
        return;
    session_swap(acct.dec, p, NULL);
    count_sub(p);
    free(p);
}

static void *acct_realloc(void *p, size_t n)
{
    if (!p)
        return acct_malloc(n);
    decode_session *d = acct.dec;
    if (!session_allows(d, n))
        return NULL;
    size_t old = malloc_usable_size(p);
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        if (d)
            d->no_memory = 1;
        return NULL;
    }
    session_swap(d, p, q);
    acct.live -= old < acct.live ? old : acct.live;
    count_add(q, old); /* the peak counts the old block too, as a moving realloc holds it */
    return q;
}

void mpd__image_mem_reset(void)
{
    acct.peak = acct.live;
}

size_t mpd__image_mem_peak(void)
{
    return acct.peak;
}

size_t mpd__image_mem_live(void)
{
    return acct.live;
}

/* stb_image, private to this file, allocating through the accountant. The
 * FILE* loaders are left out: images arrive as bytes. */
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO
#define STBI_MALLOC(n) acct_malloc(n)
#define STBI_REALLOC(p, n) acct_realloc(p, n)
#define STBI_FREE(p) acct_free(p)
/* stb_image's internal checks are assert()s by default, and some corrupt
 * data fails one: 2.27's stbi__jpeg_huff_decode asserts that the code it
 * read matches its table, which garbage entropy bits (the shift by 32
 * below) can break. An abort there would take the daemon down with one
 * request. A failed check instead stops the decode as a read past the end
 * does: a longjmp back to stb_info or stb_decode (stb_check_jump), and the
 * image is refused; the blocks stb held are freed with the decode's
 * session. Outside them (no call here) it aborts as before. The input
 * that found it is refused before decoding now (check_jpeg_tables):
 * tests/fuzz/corpus/image/jpeg-huffman-code-assert.jpg. */
static _Thread_local jmp_buf *stb_check_jump;
static _Noreturn void stb_check_failed(void)
{
    if (stb_check_jump)
        longjmp(*stb_check_jump, 2);
    abort();
}
#define STBI_ASSERT(x) ((x) ? (void)0 : stb_check_failed())
/* For the whole file: stb_image declares static functions it never
 * defines (stbi_set_unpremultiply_on_load_thread in 2.27), which GCC
 * reports at the end of the file whatever the pragmas around the include,
 * and stb_easy_font's are not all used. */
#pragma GCC diagnostic ignored "-Wunused-function"
/* stb_image 2.27 (Debian 12's) shifts an unsigned int by 32 on some
 * corrupt JPEG entropy data: stbi__grow_buffer_unsafe, once code_bits has
 * gone negative (2.28 stops decoding there instead). The CPU takes the
 * count modulo 32, the bits are garbage, the decode fails or gives a
 * garbage image; every index stb takes from those bits is masked or
 * checked. It cannot be refused up front (it takes Huffman decoding to
 * see), so the sanitizer builds leave UBSan's shift checks off for this
 * file (Makefile, scripts/fuzz; GCC 12 ignores the narrower
 * -fno-sanitize=shift-exponent): the rest of UBSan, and ASan, still watch
 * stb, and this file's own shifts are by constants.
 * Regression input: tests/fuzz/corpus/image/jpeg-entropy-shift-by-32.jpg.
 *
 * Its PSD loader also converts out-of-range floats to unsigned char when
 * it removes Photoshop's white matte from a 4+-channel image whose colour
 * exceeds its alpha (stbi__psd_load): garbage colours in those pixels, no
 * memory touched; it too takes decoding to see. clang's UBSan (the fuzz
 * builds) checks such conversions, GCC's -fsanitize=undefined does not:
 * stb's functions alone are exempt from that one check, so this file's
 * own conversions stay checked. Regression input:
 * tests/fuzz/corpus/image/psd-matte-float-to-uchar.psd. */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((no_sanitize("float-cast-overflow"))),                  \
                             apply_to = function)
#endif
#include <stb_image.h>
#if defined(__clang__)
#pragma clang attribute pop
#endif

#include <stb_image_write.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

/* ---- formats -------------------------------------------------------------- */

static const struct {
    const char *name;  /* in format lists: "jpeg,png" */
    const char *title; /* in messages */
} formats[MPD_IMAGE_NFORMATS] = {
    [MPD_IMAGE_UNKNOWN] = {"unknown", "unrecognised"},
    [MPD_IMAGE_JPEG] = {"jpeg", "JPEG"},
    [MPD_IMAGE_PNG] = {"png", "PNG"},
    [MPD_IMAGE_BMP] = {"bmp", "BMP"},
    [MPD_IMAGE_GIF] = {"gif", "GIF"},
    [MPD_IMAGE_TGA] = {"tga", "TGA"},
    [MPD_IMAGE_PNM] = {"pnm", "PNM"},
    [MPD_IMAGE_PSD] = {"psd", "PSD"},
    [MPD_IMAGE_HDR] = {"hdr", "HDR"},
    [MPD_IMAGE_PIC] = {"pic", "PIC"},
};

const char *mpd_image_format_name(mpd_image_format f)
{
    return (unsigned)f < MPD_IMAGE_NFORMATS ? formats[f].name : "unknown";
}

/* ASCII case-insensitive comparison of n bytes of a with the lowercase
 * name b (strncasecmp is POSIX, not C11). */
static int name_is(const char *a, size_t n, const char *b)
{
    if (strlen(b) != n)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = a[i] >= 'A' && a[i] <= 'Z' ? (char)(a[i] - 'A' + 'a') : a[i];
        if (c != b[i])
            return 0;
    }
    return 1;
}

static uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0];
}

static unsigned le16(const unsigned char *p)
{
    return (unsigned)p[1] << 8 | p[0];
}

/* TGA has no magic number: this is stb_image's own test of its header, so
 * what is called TGA here is what stb would decode as TGA. */
static int looks_like_tga(const unsigned char *b, size_t len)
{
    if (len < 18 || b[1] > 1)
        return 0;
    int type = b[2];
    if (b[1] == 1) { /* colour-mapped */
        if (type != 1 && type != 9)
            return 0;
        int entry = b[7];
        if (entry != 8 && entry != 15 && entry != 16 && entry != 24 && entry != 32)
            return 0;
    } else if (type != 2 && type != 3 && type != 10 && type != 11) {
        return 0;
    }
    if (le16(b + 12) < 1 || le16(b + 14) < 1)
        return 0;
    int bpp = b[16];
    if (b[1] == 1 && bpp != 8 && bpp != 16)
        return 0;
    return bpp == 8 || bpp == 15 || bpp == 16 || bpp == 24 || bpp == 32;
}

mpd_image_format mpd_image_sniff(const void *buf, size_t len)
{
    static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const unsigned char *b = buf;
    if (!b)
        return MPD_IMAGE_UNKNOWN;
    if (len >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff)
        return MPD_IMAGE_JPEG;
    if (len >= 8 && memcmp(b, png_sig, 8) == 0)
        return MPD_IMAGE_PNG;
    if (len >= 6 && (memcmp(b, "GIF87a", 6) == 0 || memcmp(b, "GIF89a", 6) == 0))
        return MPD_IMAGE_GIF;
    if (len >= 2 && b[0] == 'B' && b[1] == 'M')
        return MPD_IMAGE_BMP;
    if (len >= 4 && memcmp(b, "8BPS", 4) == 0)
        return MPD_IMAGE_PSD;
    if (len >= 92 && memcmp(b, "\x53\x80\xf6\x34", 4) == 0 && memcmp(b + 88, "PICT", 4) == 0)
        return MPD_IMAGE_PIC;
    if (len >= 2 && b[0] == 'P' && (b[1] == '5' || b[1] == '6'))
        return MPD_IMAGE_PNM;
    if ((len >= 11 && memcmp(b, "#?RADIANCE\n", 11) == 0) ||
        (len >= 7 && memcmp(b, "#?RGBE\n", 7) == 0))
        return MPD_IMAGE_HDR;
    if (looks_like_tga(b, len))
        return MPD_IMAGE_TGA;
    return MPD_IMAGE_UNKNOWN;
}

void mpd_image_formats_str(unsigned set, char *buf, size_t n)
{
    size_t at = 0;
    if (!n)
        return;
    buf[0] = 0;
    for (int f = 1; f < MPD_IMAGE_NFORMATS; f++) {
        if (!(set & MPD_IMAGE_FORMAT_BIT(f)))
            continue;
        int k = snprintf(buf + at, n - at, "%s%s", at ? ", " : "", formats[f].name);
        if (k < 0 || (size_t)k >= n - at)
            return; /* truncated, still terminated */
        at += (size_t)k;
    }
    if (!at)
        snprintf(buf, n, "none");
}

int mpd_image_formats_parse(const char *list, unsigned *set, char *msg, size_t msglen)
{
    *set = 0;
    const char *p = list ? list : "";
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        const char *t = p;
        while (*p && *p != ',')
            p++;
        size_t n = (size_t)(p - t);
        while (n && (t[n - 1] == ' ' || t[n - 1] == '\t'))
            n--;
        if (!n) {
            *set = 0;
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "empty name in image format list \"%s\" (known: jpeg, png, bmp, gif, "
                             "tga, pnm, psd, hdr, pic, all)",
                             list ? list : "");
        }
        unsigned bit = 0;
        if (name_is(t, n, "all"))
            bit = MPD_IMAGE_FORMATS_ALL;
        else if (name_is(t, n, "jpg"))
            bit = MPD_IMAGE_FORMAT_BIT(MPD_IMAGE_JPEG);
        for (int f = 1; !bit && f < MPD_IMAGE_NFORMATS; f++)
            if (name_is(t, n, formats[f].name))
                bit = MPD_IMAGE_FORMAT_BIT(f);
        if (!bit) {
            *set = 0;
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "unknown image format '%.*s' in \"%s\" (known: jpeg, png, bmp, gif, "
                             "tga, pnm, psd, hdr, pic, all)",
                             (int)(n > 32 ? 32 : n), t, list);
        }
        *set |= bit;
        if (!*p)
            return 0;
        p++; /* the comma */
    }
}

/* ---- truncation ------------------------------------------------------------
 *
 * stb_image reads zeros past the end of a memory buffer, so data cut short
 * can decode into an image with a black or grey remainder (a BMP cut after
 * its header decoded as an all-black image). The formats a camera sends and
 * BMP are walked here, before decoding, to their end; every format is also
 * decoded through a reader that notes any read past the end (below). */

/* A JPEG must reach its end-of-image marker (FF D9). Segments with a length
 * are skipped whole, so an FF D9 inside an EXIF thumbnail does not count;
 * in entropy-coded data 0xFF is stuffed as FF 00 and FF D0-D7 are restart
 * markers, so the first other marker ends the scan. Bytes between segments
 * that are not a marker are skipped, as stb skips them (some cameras pad). */
static int check_jpeg(const unsigned char *b, size_t len, char *msg, size_t msglen)
{
    size_t pos = 2; /* after SOI */
    for (;;) {
        const unsigned char *ff = pos < len ? memchr(b + pos, 0xff, len - pos) : NULL;
        if (!ff)
            break;
        pos = (size_t)(ff - b);
        while (pos < len && b[pos] == 0xff) /* fill bytes */
            pos++;
        if (pos >= len)
            break;
        unsigned m = b[pos++];
        if (m == 0xd9)
            return 0;
        if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd7))
            continue; /* a stuffed byte, TEM or a restart marker: no length */
        if (len - pos < 2)
            break;
        size_t seg = (size_t)b[pos] << 8 | b[pos + 1];
        if (seg > len - pos)
            return mpd__fail(msg, msglen, MPD_EFORMAT,
                             "truncated JPEG: marker FF %02X at byte %zu announces %zu bytes, "
                             "only %zu follow",
                             m, pos - 2, seg, len - pos);
        pos += seg < 2 ? 2 : seg;
    }
    return mpd__fail(msg, msglen, MPD_EFORMAT,
                     "truncated JPEG: no end-of-image marker (FF D9) in its %zu bytes", len);
}

/* The Huffman tables of every DHT segment a JPEG's marker walk reaches
 * (T.81 B.2.4.2): stb_image 2.27 builds each table into arrays of 256
 * codes (257 sizes) without checking that the 16 code counts add up to at
 * most 256, so a table claiming more writes past them on the heap. Tables
 * cut short are left to the truncation check.
 *
 * And every scan's tables (B.2.3): stb decodes with whatever table a scan
 * names, defined or not, and an undefined one is uninitialised heap (its
 * decoder state is malloc'd): garbage codes, and its assert that a code
 * matches its table fails (host/image.c, STBI_ASSERT). A scan that decodes
 * with a table no DHT before it defined is refused: a sequential scan uses
 * both of each component's tables, a progressive one its DC tables (first
 * DC pass) or AC tables (AC passes). Regression input:
 * tests/fuzz/corpus/image/jpeg-huffman-code-assert.jpg. */
static int check_jpeg_tables(const unsigned char *b, size_t len, char *msg, size_t msglen)
{
    size_t pos = 2;
    unsigned defined = 0; /* bit th: DC table th; bit 4 + th: AC table th */
    int progressive = 0;
    while (pos + 4 <= len) {
        const unsigned char *ff = memchr(b + pos, 0xff, len - pos);
        if (!ff)
            return 0;
        pos = (size_t)(ff - b);
        while (pos < len && b[pos] == 0xff)
            pos++;
        if (pos + 2 >= len)
            return 0;
        unsigned m = b[pos++];
        if (m == 0x00 || m == 0x01 || (m >= 0xd0 && m <= 0xd7))
            continue;
        if (m == 0xd9)
            return 0;
        size_t seg = (size_t)b[pos] << 8 | b[pos + 1];
        if (seg < 2)
            return 0;
        if (m == 0xc4) {
            /* stb reads a table while any byte of the segment is left, all
             * 17 bytes of its header even past the segment's end (and zeros
             * past the data's): the counts are summed the same way. */
            size_t end = seg > len - pos ? len : pos + seg, t = pos + 2;
            while (t < end) {
                unsigned n = 0;
                for (size_t i = t + 1; i <= t + 16 && i < len; i++)
                    n += b[i];
                if (n > 256)
                    return mpd__fail(msg, msglen, MPD_EFORMAT,
                                     "corrupt JPEG: a Huffman table at byte %zu has %u codes "
                                     "(at most 256)",
                                     t, n);
                if (t < len && b[t] >> 4 <= 1 && (b[t] & 15) <= 3)
                    defined |= 1u << ((b[t] >> 4) * 4 + (b[t] & 15));
                t += 17 + n;
            }
        }
        if (m == 0xc2)
            progressive = 1;
        if (m == 0xda && seg >= 3 && seg <= len - pos) {
            unsigned ns = b[pos + 2];
            size_t spec = pos + 3 + 2 * (size_t)ns; /* Ss, Se, Ah/Al */
            if (spec + 3 <= pos + seg) {
                int dc = !progressive || (b[spec] == 0 && b[spec + 2] >> 4 == 0);
                int ac = !progressive || b[spec] != 0;
                for (unsigned k = 0; k < ns; k++) {
                    unsigned td = b[pos + 4 + 2 * k] >> 4, ta = b[pos + 4 + 2 * k] & 15;
                    const char *kind = NULL;
                    unsigned id = 0;
                    if (dc && td <= 3 && !(defined & 1u << td))
                        kind = "DC", id = td;
                    else if (ac && ta <= 3 && !(defined & 1u << (4 + ta)))
                        kind = "AC", id = ta;
                    if (kind)
                        return mpd__fail(msg, msglen, MPD_EFORMAT,
                                         "corrupt JPEG: the scan at byte %zu decodes with "
                                         "Huffman table %s%u, which no DHT before it defines",
                                         pos - 2, kind, id);
                }
            }
        }
        if (seg > len - pos)
            return 0; /* cut short: the truncation check reports it */
        pos += seg;
    }
    return 0;
}

/* Binary PGM/PPM (P5, P6) with a maxval over 255 hold 16-bit samples, which
 * stb_image 2.27 converts with its 8-bit routine and so reads past its
 * buffer; and its header numbers overflow an int past 9 digits: both are
 * refused. The header is: magic, then width, height and maxval as decimal
 * numbers separated by blanks or # comments. */
static int check_pnm(const unsigned char *b, size_t len, char *msg, size_t msglen)
{
    size_t pos = 2;
    unsigned long v[3] = {0, 0, 0};
    for (int k = 0; k < 3; k++) {
        for (;;) { /* blanks and comments */
            while (pos < len && (b[pos] == ' ' || (b[pos] >= '\t' && b[pos] <= '\r')))
                pos++;
            if (pos < len && b[pos] == '#') {
                while (pos < len && b[pos] != '\n' && b[pos] != '\r')
                    pos++;
                continue;
            }
            break;
        }
        if (pos >= len || b[pos] < '0' || b[pos] > '9')
            return 0; /* malformed: stb refuses it */
        int digits = 0;
        while (pos < len && b[pos] >= '0' && b[pos] <= '9') {
            /* stb 2.27 accumulates these in an int that overflows */
            if (++digits > 8)
                return mpd__fail(msg, msglen, MPD_EFORMAT,
                                 "corrupt PNM: a header number longer than 8 digits");
            v[k] = v[k] * 10 + (unsigned long)(b[pos++] - '0');
        }
    }
    if (v[2] > 255)
        return mpd__fail(msg, msglen, MPD_EFORMAT,
                         "16-bit PNM images (maxval %lu) are not supported", v[2]);
    return 0;
}

/* Four chunk-type bytes as text, anything unprintable as '?'. */
static void chunk_name(const unsigned char *p, char out[5])
{
    for (int i = 0; i < 4; i++)
        out[i] = (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z') ? (char)p[i] : '?';
    out[4] = 0;
}

/* A PNG must reach a whole IEND chunk. stb stops reading at IEND's type,
 * so without this a PNG missing its last bytes decoded as complete. */
static int check_png(const unsigned char *b, size_t len, char *msg, size_t msglen)
{
    size_t pos = 8;
    while (len - pos >= 12) {
        size_t clen = be32(b + pos);
        char name[5];
        chunk_name(b + pos + 4, name);
        if (clen > len - pos - 12)
            return mpd__fail(msg, msglen, MPD_EFORMAT,
                             "truncated PNG: chunk %s at byte %zu announces %zu bytes, only %zu "
                             "follow",
                             name, pos, clen, len - pos - 12);
        int iend = memcmp(b + pos + 4, "IEND", 4) == 0;
        pos += 12 + clen;
        if (iend)
            return 0;
    }
    return mpd__fail(msg, msglen, MPD_EFORMAT,
                     "truncated PNG: ends after %zu bytes without its IEND chunk", len);
}

/* A BMP's pixel rows (each padded to 4 bytes) must fit between its pixel
 * data offset and the end of the data. Kinds stb refuses anyway (RLE,
 * unknown headers) are left to stb's message. */
static int check_bmp(const unsigned char *b, size_t len, char *msg, size_t msglen)
{
    if (len < 18)
        return mpd__fail(msg, msglen, MPD_EFORMAT,
                         "truncated BMP: %zu bytes, shorter than its file header", len);
    uint32_t off = le32(b + 10), hsz = le32(b + 14);
    if (hsz != 12 && hsz != 40 && hsz != 56 && hsz != 108 && hsz != 124)
        return 0;
    size_t need_hdr = 14 + (hsz == 12 ? 12 : 20);
    if (len < need_hdr)
        return mpd__fail(msg, msglen, MPD_EFORMAT,
                         "truncated BMP: %zu bytes, shorter than its %u-byte info header", len,
                         (unsigned)hsz);
    uint64_t w, h, bpp;
    if (hsz == 12) {
        w = le16(b + 18);
        h = le16(b + 20);
        bpp = le16(b + 24);
    } else {
        uint32_t compress = le32(b + 30);
        if (compress != 0 && compress != 3)
            return 0;
        w = le32(b + 18);
        int32_t sh = (int32_t)le32(b + 22); /* negative: rows top-down */
        h = sh < 0 ? (uint64_t)0 - (uint64_t)(int64_t)sh : (uint64_t)sh;
        bpp = le16(b + 28);
    }
    if (!w || !h || !bpp || w > (1u << 24) || h > (1u << 24))
        return 0; /* stb refuses these itself */
    uint64_t stride = (w * bpp + 31) / 32 * 4;
    uint64_t need = (uint64_t)off + stride * h;
    if (need > len)
        return mpd__fail(msg, msglen, MPD_EFORMAT,
                         "truncated BMP: %llux%llu pixels at %llu bits need %llu bytes from byte "
                         "%u, only %zu present",
                         (unsigned long long)w, (unsigned long long)h, (unsigned long long)bpp,
                         (unsigned long long)(stride * h), (unsigned)off,
                         len > off ? len - off : (size_t)0);
    return 0;
}

/* stb reads through these callbacks rather than from the buffer itself so
 * that a read past the end is seen (from memory, stb reads zeros there, and
 * some of its decoders loop forever on zeros: a run-length HDR cut short
 * never finishes). stb reads in two ways: it refills its small read-ahead
 * buffer, always the same one and always first, with whatever is left, and
 * asks again only when it needs a byte it has not got; and it reads runs of
 * pixels straight into the image (PNM, uncompressed TGA), wanting all it
 * asks for. So a refill with nothing left, or a short run, means the image
 * goes on past the data: the decode is stopped there, by a longjmp out of
 * stb (which holds nothing but the heap blocks the session table lists).
 * This catches truncation in every format, the walked ones included. */
typedef struct {
    const unsigned char *p;
    size_t len, pos;
    const char *stage; /* stb's read-ahead buffer */
    jmp_buf stop;      /* where a read past the end goes */
} reader;

static int rd_read(void *user, char *data, int size)
{
    reader *r = user;
    size_t left = r->len - r->pos, n = size > 0 ? (size_t)size : 0;
    if (!r->stage)
        r->stage = data;
    if (n > left && (!left || data != r->stage))
        longjmp(r->stop, 1);
    if (n > left)
        n = left;
    memcpy(data, r->p + r->pos, n);
    r->pos += n;
    return (int)n;
}

static void rd_skip(void *user, int n)
{
    reader *r = user;
    if (n > 0 && (size_t)n > r->len - r->pos)
        longjmp(r->stop, 1);
    if (n > 0)
        r->pos += (size_t)n;
}

static int rd_eof(void *user)
{
    reader *r = user;
    return r->pos >= r->len;
}

/* stbi_info_from_memory; 0 with *failed_check set where one of stb's
 * checks failed (STBI_ASSERT). */
static int stb_info(const unsigned char *b, size_t len, int *w, int *h, int *comp,
                    int *failed_check)
{
    jmp_buf stop;
    *failed_check = 0;
    if (setjmp(stop)) {
        stb_check_jump = NULL;
        *failed_check = 1;
        return 0;
    }
    stb_check_jump = &stop;
    int ok = stbi_info_from_memory(b, (int)len, w, h, comp);
    stb_check_jump = NULL;
    return ok;
}

/* Decodes through the reader into 3-channel pixels; NULL on failure, with
 * *stopped set when stb was stopped: 1 reading past the end, 2 failing one
 * of its internal checks (STBI_ASSERT); the blocks it held are then freed.
 * Apart so that no local of the caller lives across the setjmp. */
static unsigned char *stb_decode(reader *rd, decode_session *d, int *w, int *h, int *stopped)
{
    static const stbi_io_callbacks io = {rd_read, rd_skip, rd_eof};
    int comp;
    *stopped = 0;
    switch (setjmp(rd->stop)) { /* C11 7.13.1.1: a whole controlling expression */
    case 0: break;
    case 1: *stopped = 1; break;
    default: *stopped = 2; break;
    }
    if (*stopped) {
        stb_check_jump = NULL;
        session_release(d);
        return NULL;
    }
    stb_check_jump = &rd->stop;
    unsigned char *px = stbi_load_from_callbacks(&io, rd, w, h, &comp, 3);
    stb_check_jump = NULL;
    return px;
}

/* ---- decoding ------------------------------------------------------------- */

/* The memory bound of one decode. stb_image decodes a whole image at once,
 * so what it holds grows with the pixels; under a pixel limit of max_pixels
 * the decoder may hold at most
 *
 *     8 x max_pixels + 2 x len + 1 MiB   bytes   (len: the image's bytes)
 *
 * and an image that needs more is refused with MPD_ELIMIT. Peaks measured
 * with the accountant above (all blocks stb held at once, realloc counting
 * old and new), each decoded under a limit of exactly its own pixels:
 *
 *   image                         640x480  1920x1080  4000x3000  6300x6300
 *   baseline JPEG 4:2:0            1.40 MB    9.38 MB    54.1 MB   178.7 MB  4.5 B/px
 *   baseline JPEG 4:4:4            1.86 MB   12.5  MB    72.0 MB   238.3 MB  6.0 B/px
 *   PNG, 8-bit RGB                 1.84 MB   12.4  MB    72.0 MB   238.1 MB  6.0 B/px
 *   PNG, 8-bit RGBA                2.46 MB   16.6  MB    96.0 MB   317.5 MB  8.0 B/px
 *
 * (JPEGs from stb_image_write at quality 90 and 95, PNGs of darknet's
 * kite.jpg scaled up.) darknet's camera photos: 5.1-6.1 B/px with 2 x len;
 * PNG grey 4, palette or grey+alpha 5 B/px (opencv-doc's samples). The
 * PNG figures are inflated rows plus the decoded image; the compressed data,
 * gathered from the IDAT chunks into a buffer that doubles, is what 2 x len
 * covers. So every camera format - baseline JPEG, 8-bit PNG of any colour
 * type - decodes at the full pixel limit. Refused near the limit: a
 * progressive 4:4:4 JPEG (9.1 B/px measured: 16-bit coefficients beside the
 * planes) above 88 % of it, a 16-bit RGB PNG (12.0 B/px measured) above
 * about 67 %, an interlaced PNG (by stb's code: its inflate buffer doubles
 * once), a 1-pixel-wide RGBA PNG (9 B/px: a filter byte a pixel), and at
 * any size a PNG whose data inflates to more than its pixels (a
 * decompression bomb). JPEG's padding to whole blocks costs up to 30 B/px
 * in a 1-pixel-high image, but JPEG sides are at most 65535 pixels, so that
 * is a few MB at worst. After decoding, a request holds the RGB image (3 B/px,
 * inside the bound) and the letterbox's 6 rows of net_w floats; so one
 * request takes at most its body plus mpd_image_decode_budget(max_pixels,
 * body length): with the daemon's defaults (40 M pixels, 16 MiB bodies)
 * 16 MiB + 320 MB + 32 MiB + 1 MiB, about 370 MB. */
#define DECODE_BYTES_PER_PIXEL 8
#define DECODE_SLACK ((size_t)1 << 20) /* decoder state, tables, line buffers */

size_t mpd_image_decode_budget(long long max_pixels, size_t len)
{
    if (max_pixels <= 0)
        return 0;
    size_t cap = SIZE_MAX / 2; /* saturate rather than wrap */
    size_t px = (unsigned long long)max_pixels > cap / DECODE_BYTES_PER_PIXEL
                    ? cap
                    : (size_t)max_pixels * DECODE_BYTES_PER_PIXEL;
    size_t body = len > cap / 4 ? cap / 2 : 2 * len;
    return px + body + DECODE_SLACK;
}

int mpd_image_decode_formats(const void *buf, size_t len, long long max_pixels, unsigned allowed,
                             mpd_image *out, char *msg, size_t msglen)
{
    memset(out, 0, sizeof(*out));
    int rc0;
    if (len == 0 || !buf)
        return mpd__fail(msg, msglen, MPD_EFORMAT, "empty image");
    if (len > INT_MAX)
        return mpd__fail(msg, msglen, MPD_ELIMIT, "image of %zu bytes is too large", len);
    const unsigned char *b = buf;
    char names[128];
    mpd_image_formats_str(allowed, names, sizeof(names));
    mpd_image_format f = mpd_image_sniff(b, len);
    if (f == MPD_IMAGE_UNKNOWN) {
        char hex[3 * 8 + 1] = "";
        for (size_t i = 0, at = 0; i < len && i < 8; i++)
            at += (size_t)snprintf(hex + at, sizeof(hex) - at, "%s%02x", i ? " " : "", b[i]);
        return mpd__fail(msg, msglen, MPD_EFORMAT,
                         "not an image in a known format (%zu bytes starting %s; allowed: %s)", len,
                         hex, names);
    }
    const char *title = formats[f].title;
    if (!(allowed & MPD_IMAGE_FORMAT_BIT(f)))
        return mpd__fail(msg, msglen, MPD_EFORMAT, "%s images are not accepted (allowed: %s)",
                         title, names);
    /* The header alone gives the size, so a huge image is refused before
     * any pixel memory is allocated. stb's header scan refuses images over
     * 2^30 bytes of pixels and then reports only "unknown image type"; read
     * a PNG's size ourselves (IHDR is always the first chunk) so an
     * oversized PNG is a size limit. */
    if (f == MPD_IMAGE_PNG && len >= 24 && memcmp(b + 12, "IHDR", 4) == 0) {
        /* Each side is below 2^32, so the product fits 64 unsigned bits. */
        unsigned long long pw = be32(b + 16), ph = be32(b + 20);
        if (max_pixels > 0 && pw * ph > (unsigned long long)max_pixels)
            return mpd__fail(msg, msglen, MPD_ELIMIT,
                             "image is %llux%llu = %llu pixels, limit is %lld", pw, ph, pw * ph,
                             max_pixels);
    }
    /* Header defects stb_image 2.27 (Debian 12's) mishandles before any
     * limit applies - its header scan already runs into them. */
    if ((f == MPD_IMAGE_JPEG && (rc0 = check_jpeg_tables(b, len, msg, msglen))) ||
        (f == MPD_IMAGE_PNM && (rc0 = check_pnm(b, len, msg, msglen))))
        return rc0;
    size_t budget = mpd_image_decode_budget(max_pixels, len);
    decode_session dec = {.limit = budget ? acct.live + budget : 0};
    decode_session *outer = acct.dec;
    acct.dec = &dec;
    int w, h, comp, rc = 0, stopped = 0;
    unsigned char *px = NULL;
    reader rd = {.p = b, .len = len};
    if (!stb_info(b, len, &w, &h, &comp, &stopped)) {
        rc = stopped ? mpd__fail(msg, msglen, MPD_EFORMAT,
                                 "corrupt %s: its header failed one of the decoder's internal "
                                 "checks",
                                 title)
                     : mpd__fail(msg, msglen, MPD_EFORMAT, "not a decodable %s image: %s", title,
                                 stbi_failure_reason());
        goto done;
    }
    if (w <= 0 || h <= 0) {
        rc = mpd__fail(msg, msglen, MPD_EFORMAT, "image has no pixels");
        goto done;
    }
    if (max_pixels > 0 && (long long)w * h > max_pixels) {
        rc = mpd__fail(msg, msglen, MPD_ELIMIT, "image is %dx%d = %lld pixels, limit is %lld", w, h,
                       (long long)w * h, max_pixels);
        goto done;
    }
    if ((f == MPD_IMAGE_JPEG && (rc = check_jpeg(b, len, msg, msglen))) ||
        (f == MPD_IMAGE_PNG && (rc = check_png(b, len, msg, msglen))) ||
        (f == MPD_IMAGE_BMP && (rc = check_bmp(b, len, msg, msglen))))
        goto done;
    px = stb_decode(&rd, &dec, &w, &h, &stopped);
    if (stopped == 1)
        rc = mpd__fail(msg, msglen, MPD_EFORMAT,
                       "truncated %s: the image goes on past the end of its %zu bytes", title, len);
    else if (stopped == 2)
        rc = mpd__fail(msg, msglen, MPD_EFORMAT,
                       "corrupt %s: its data failed one of the decoder's internal checks", title);
    else if (!px && dec.refused)
        rc = mpd__fail(msg, msglen, MPD_ELIMIT,
                       "decoding this %dx%d %s would take more than %zu bytes of memory, the "
                       "bound for a limit of %lld pixels",
                       w, h, title, budget, max_pixels);
    else if (!px && dec.no_memory)
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory decoding a %dx%d %s", w, h, title);
    else if (!px)
        rc = mpd__fail(msg, msglen, MPD_EFORMAT, "%s image could not be decoded: %s", title,
                       stbi_failure_reason());
done:
    if (!rc) {
        /* The pixels leave the accountant's custody: an ordinary malloc
         * block the caller frees, on any thread. */
        session_swap(&dec, px, NULL);
        count_sub(px);
        out->w = w;
        out->h = h;
        out->data = px;
    }
    session_release(&dec); /* nothing, unless stb failed without freeing */
    free(dec.blocks);
    acct.dec = outer;
    return rc;
}

int mpd_image_decode(const void *buf, size_t len, long long max_pixels, mpd_image *out, char *msg,
                     size_t msglen)
{
    return mpd_image_decode_formats(buf, len, max_pixels, MPD_IMAGE_FORMATS_ALL, out, msg, msglen);
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

int mpd_image_load(const char *path, long long max_pixels, mpd_image *out, char *msg, size_t msglen)
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
    free(im->data); /* handed over by the decoder as an ordinary malloc block */
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

/* Source row y resized horizontally to new_w columns, 3 channels one after
 * the other: darknet's first resize pass for one row, reading pixels as
 * u8 / 255, with the same float operations in the same order. */
static void resize_row(const mpd_image *im, int y, int new_w, float w_scale, float *out)
{
    const unsigned char *row = im->data + (size_t)y * im->w * 3;
#define PIX(x, k) ((float)row[(size_t)(x)*3 + (k)] / 255.f)
    for (int k = 0; k < 3; k++) {
        float *o = out + (size_t)k * new_w;
        for (int c = 0; c < new_w; c++) {
            float val;
            if (c == new_w - 1 || im->w == 1) {
                val = PIX(im->w - 1, k);
            } else {
                float sx = c * w_scale;
                int ix = (int)sx;
                float dx = sx - ix;
                val = (1 - dx) * PIX(ix, k) + dx * PIX(ix + 1, k);
            }
            o[c] = val;
        }
    }
#undef PIX
}

/* Two source rows resized horizontally, kept between output rows: the
 * vertical pass reads rows iy and iy + 1, and iy never decreases. */
typedef struct {
    float *buf[2];
    int row[2]; /* source row in each buffer, -1: none */
} row_cache;

static const float *cached_row(row_cache *rc, const mpd_image *im, int y, int keep, int new_w,
                               float w_scale)
{
    for (int i = 0; i < 2; i++)
        if (rc->row[i] == y)
            return rc->buf[i];
    int i = rc->row[0] == keep ? 1 : 0;
    resize_row(im, y, new_w, w_scale, rc->buf[i]);
    rc->row[i] = y;
    return rc->buf[i];
}

int mpd__letterbox(const mpd_image *im, int net_w, int net_h, float *dst)
{
    int new_w, new_h;
    if (im->w < 1 || im->h < 1 || !im->data)
        return MPD_EINVAL;
    mpd__letterbox_size(im->w, im->h, net_w, net_h, &new_w, &new_h);
    /* darknet resizes in two passes, horizontal over every source row, then
     * vertical. Each output row needs only source rows iy and iy + 1 of the
     * first pass, so they are made when first needed: two rows of 3 x new_w
     * floats whatever the image's height (a 1 x 16M-pixel image took 190 MB
     * in a whole first pass), and the same floats, bit for bit. */
    float *scratch = acct_malloc((size_t)6 * new_w * sizeof(float));
    if (!scratch)
        return MPD_ENOMEM;
    row_cache cache = {{scratch, scratch + (size_t)3 * new_w}, {-1, -1}};
    size_t plane = (size_t)net_w * net_h;
    for (size_t i = 0; i < 3 * plane; i++)
        dst[i] = .5f;
    float w_scale = new_w > 1 ? (float)(im->w - 1) / (new_w - 1) : 0;
    float h_scale = new_h > 1 ? (float)(im->h - 1) / (new_h - 1) : 0;
    int ox = (net_w - new_w) / 2, oy = (net_h - new_h) / 2;
    for (int r = 0; r < new_h; r++) {
        float sy = r * h_scale;
        int iy = (int)sy;
        float dy = sy - iy;
        if (iy > im->h - 1) /* not reached: sy <= h - 1 up to rounding */
            iy = im->h - 1;
        int two = r != new_h - 1 && iy + 1 < im->h;
        const float *p0 = cached_row(&cache, im, iy, iy + 1, new_w, w_scale);
        const float *p1 = two ? cached_row(&cache, im, iy + 1, iy, new_w, w_scale) : NULL;
        for (int k = 0; k < 3; k++) {
            const float *a = p0 + (size_t)k * new_w;
            float *drow = dst + k * plane + (size_t)(r + oy) * net_w + ox;
            for (int c = 0; c < new_w; c++)
                drow[c] = (1 - dy) * a[c];
            if (!p1)
                continue;
            const float *bb = p1 + (size_t)k * new_w;
            for (int c = 0; c < new_w; c++)
                drow[c] += dy * bb[c];
        }
    }
    acct_free(scratch);
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
