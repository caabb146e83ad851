/* pool_hwc.h - maxpool on HWC tensors, one definition for every element
 * type (int8 codes, bf16 bit patterns, fp32).
 *
 * MPD__MAXPOOL_HWC(name, T, K, KEY, LOWEST) defines
 *   void name(const mpd_layer *l, const T *x, T *y, int r0, int r1)
 * for output rows [r0, r1). KEY(T) gives a K ordered as the values the T
 * stands for, and is its own inverse, so a window's running maxima are kept
 * in y as keys and turned back at its end (K is T, or T's signed twin).
 * LOWEST (a T) is what a window wholly outside the input gives (padding >=
 * 2 x size - 1). Whole 2 x 2 windows at stride 2, the YOLO downsampling,
 * take one pass, comparing as mpd__maxpool_f32 does (each row's pair, then
 * the two), so the fp32 instance gives that kernel's bits. Whole pixels at
 * a time: the channel loops vectorise. */
#ifndef MPD_POOL_HWC_H
#define MPD_POOL_HWC_H

#include <stddef.h>

#include "../net.h"

#define MPD__MAXPOOL_HWC(name, T, K, KEY, LOWEST)                                                  \
    void name(const mpd_layer *l, const T *x, T *y, int r0, int r1)                                \
    {                                                                                              \
        const mpd_pool *p = &l->u.pool;                                                            \
        int off = -p->padding / 2, c = l->in_c;                                                    \
        if (p->size == 2 && p->stride == 2 && off == 0 && l->in_h % 2 == 0 &&                      \
            l->in_w % 2 == 0 && l->out_h == l->in_h / 2 && l->out_w == l->in_w / 2) {              \
            size_t row = (size_t)l->in_w * c;                                                      \
            for (int i = r0; i < r1; i++) {                                                        \
                const T *a = x + (size_t)(2 * i) * row, *b = a + row;                              \
                T *d = y + (size_t)i * l->out_w * c;                                               \
                for (int j = 0; j < l->out_w; j++, a += 2 * c, b += 2 * c, d += c) {               \
                    for (int ch = 0; ch < c; ch++) {                                               \
                        K a0 = KEY(a[ch]), a1 = KEY(a[c + ch]);                                    \
                        K b0 = KEY(b[ch]), b1 = KEY(b[c + ch]);                                    \
                        K u = a0 > a1 ? a0 : a1, v = b0 > b1 ? b0 : b1;                            \
                        d[ch] = (T)KEY((T)(u > v ? u : v));                                        \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        for (int i = r0; i < r1; i++) {                                                            \
            int y0 = off + i * p->stride, y1 = y0 + p->size;                                       \
            y0 = y0 < 0 ? 0 : y0;                                                                  \
            y1 = y1 > l->in_h ? l->in_h : y1;                                                      \
            for (int j = 0; j < l->out_w; j++) {                                                   \
                int x0 = off + j * p->stride, x1 = x0 + p->size;                                   \
                x0 = x0 < 0 ? 0 : x0;                                                              \
                x1 = x1 > l->in_w ? l->in_w : x1;                                                  \
                K *d = (K *)(y + ((size_t)i * l->out_w + j) * c);                                  \
                for (int ch = 0; ch < c; ch++)                                                     \
                    d[ch] = KEY((T)(LOWEST));                                                      \
                for (int yy = y0; yy < y1; yy++) {                                                 \
                    for (int xx = x0; xx < x1; xx++) {                                             \
                        const T *s = x + ((size_t)yy * l->in_w + xx) * c;                          \
                        for (int ch = 0; ch < c; ch++) {                                           \
                            K k = KEY(s[ch]);                                                      \
                            d[ch] = k > d[ch] ? k : d[ch];                                         \
                        }                                                                          \
                    }                                                                              \
                }                                                                                  \
                for (int ch = 0; ch < c; ch++)                                                     \
                    d[ch] = KEY((T)d[ch]);                                                         \
            }                                                                                      \
        }                                                                                          \
    }

#endif
