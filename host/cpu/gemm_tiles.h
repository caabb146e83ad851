/* gemm_tiles.h - the tile driver the 16-bit GEMMs in the CPU's own
 * arithmetic share (gemm_f16.h): A packed once per plan in panels of
 * MPD_TILE_MR rows, B packed per block of MPD_TILE_KC taps and per panel
 * of a kernel's tile width, every tile by the kernel. Pure C with no
 * library but memcpy, so that tests/emu can run it on an emulated CPU. */
#ifndef MPD_GEMM_TILES_H
#define MPD_GEMM_TILES_H

#include <stddef.h>
#include <stdint.h>

enum {
    MPD_TILE_MR = 8,    /* rows of a tile: A's panel width */
    MPD_TILE_KC = 256,  /* taps per pass over C: B's panel stays in L1 */
    MPD_TILE_NRMAX = 32 /* the widest tile (AVX512-FP16: 32 halves) */
};

/* Packs taps [k0, k0 + kc) of B's columns [j0, j0 + nr) (nr <= the
 * kernel's tile width; zeros past nr) into dst, as the kernel reads them. */
typedef void mpd__tile_pack_fn(const float *b, int ldb, int k, int k0, int kc, int j0, int nr,
                               uint16_t *dst);

/* One full tile over kc taps: c (row stride ldc) = its value so far
 * (first: 0) + A's panel at the block's first tap times B's packed panel. */
typedef void mpd__tile_fn(const uint16_t *a, const uint16_t *bp, int kc, float *c, int ldc,
                          int first);

/* C (m x n, row stride ldc) = A B: a is A's packed panels of panel values
 * each (the first at A's first row); nr is the kernel's tile width. */
void mpd__gemm_tiles(int m, int n, int k, const uint16_t *a, size_t panel, const float *b, int ldb,
                     float *c, int ldc, int nr, mpd__tile_pack_fn *pack, mpd__tile_fn *tile);

#endif
