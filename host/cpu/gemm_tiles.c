/* gemm_tiles.c - A's panels for the 16-bit GEMMs (gemm_f16.h) and the
 * tile driver their kernels share (gemm_tiles.h). */
#include "gemm_tiles.h"

#include <string.h>

#include "gemm_f16.h"

enum { MR = MPD_TILE_MR, KC = MPD_TILE_KC };

size_t mpd__f16_packed_size(int m, int k)
{
    return (size_t)((m + MR - 1) / MR) * MR * (size_t)k;
}

void mpd__f16_pack(const float *a, int m, int k, mpd_half *dst)
{
    for (int p = 0; p < m; p += MR) {
        mpd_half *panel = dst + (size_t)p * k;
        for (int kk = 0; kk < k; kk++)
            for (int r = 0; r < MR; r++)
                panel[(size_t)kk * MR + r] =
                    p + r < m ? mpd_f32_to_f16(a[(size_t)(p + r) * k + kk]) : 0;
    }
}

size_t mpd__bf16_packed_size(int m, int k)
{
    return (size_t)((m + MR - 1) / MR) * MR * 2 * (size_t)((k + 1) / 2);
}

void mpd__bf16_pack(const float *a, int m, int k, mpd_bf16 *dst)
{
    const size_t panel = mpd__bf16_packed_size(MR, k);
    for (int p = 0; p < m; p += MR)
        for (int q = 0; q < (k + 1) / 2; q++)
            for (int r = 0; r < MR; r++)
                for (int t = 0; t < 2; t++) {
                    int kk = 2 * q + t;
                    dst[(size_t)(p / MR) * panel + (size_t)q * 2 * MR + 2 * r + t] =
                        p + r < m && kk < k ? mpd_f32_to_bf16(a[(size_t)(p + r) * k + kk]) : 0;
                }
}

/* Per block of KC taps, per nr columns packed by pack, every 8 rows by
 * tile. */
void mpd__gemm_tiles(int m, int n, int k, const uint16_t *a, size_t panel, const float *b, int ldb,
                     float *c, int ldc, int nr_tile, mpd__tile_pack_fn *pack, mpd__tile_fn *tile)
{
    _Alignas(64) uint16_t bp[KC * MPD_TILE_NRMAX];
    _Alignas(64) float edge[MR * MPD_TILE_NRMAX];
    for (int k0 = 0; k0 < k; k0 += KC) {
        const int kc = k - k0 < KC ? k - k0 : KC, first = k0 == 0;
        for (int j0 = 0; j0 < n; j0 += nr_tile) {
            const int nr = n - j0 < nr_tile ? n - j0 : nr_tile;
            pack(b, ldb, k, k0, kc, j0, nr, bp);
            for (int i0 = 0; i0 < m; i0 += MR) {
                const int mr = m - i0 < MR ? m - i0 : MR;
                const uint16_t *ap = a + (size_t)(i0 / MR) * panel + (size_t)k0 * MR;
                float *cp = c + (size_t)i0 * ldc + j0;
                if (mr == MR && nr == nr_tile) {
                    tile(ap, bp, kc, cp, ldc, first);
                    continue;
                }
                /* An edge tile through a full one: the rows and columns
                 * past C's are computed on A's zero padding and dropped. */
                for (int r = 0; r < mr && !first; r++)
                    memcpy(edge + r * nr_tile, cp + (size_t)r * ldc, (size_t)nr * sizeof(float));
                tile(ap, bp, kc, edge, nr_tile, first);
                for (int r = 0; r < mr; r++)
                    memcpy(cp + (size_t)r * ldc, edge + r * nr_tile, (size_t)nr * sizeof(float));
            }
        }
    }
}
