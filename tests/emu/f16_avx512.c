/* f16_avx512.c - the AVX512-FP16 GEMM (host/cpu/gemm_f16_x86.c) bit for
 * bit against the exact reference of its arithmetic (tests/f16_ref.h), on
 * a CPU that has AVX512-FP16 even where this machine has not: built
 * freestanding (no C library: the kernel, the tile driver, A's packing and
 * the reference need only memcpy, memcmp and memset, below) and run by
 * tests/emu/run_x86.py on Bochs' emulated CPU with AVX512-FP16. The same
 * shapes as test_gemm_f16's reference test, plus a product computed in
 * row and column blocks (ldb and ldc past n, C's blocks apart).
 *
 * emu_main(report) fills *report and stops at int3; run_x86.py reads it. */
#include <stddef.h>
#include <stdint.h>

#include "cpu/gemm_f16.h"
#include "f16_ref.h"

#ifndef MPD_F16_AVX512
#error "needs a compiler with AVX512-FP16 (gcc 12, clang 15)"
#endif

void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--)
        *d++ = *s++;
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}

void *memset(void *dst, int c, size_t n)
{
    unsigned char *d = dst;
    while (n--)
        *d++ = (unsigned char)c;
    return dst;
}

enum { MAX_CASES = 16, MAX_A = 24 * 4608, MAX_B = 4608 * 40, MAX_C = 200 * 40 };

struct emu_report {
    uint32_t magic; /* EMU_DONE once every case ran */
    uint32_t ncases;
    struct {
        int32_t m, n, k, blocks; /* blocks: computed in row and column blocks */
        int32_t outputs, differ;
        float got, want; /* the first differing output */
    } cases[MAX_CASES];
};
#define EMU_DONE 0x46313644u /* "D61F" */

static float A[MAX_A], B[MAX_B], C[MAX_C], R[MAX_C];
static mpd_half AP[MAX_A + 8 * 4608];

/* C = A B, A's values uniform in [-a, a] (in [0, a] if positive), B's in
 * [-b, b] (in [0, b]). */
static void run_case(struct emu_report *r, int m, int n, int k, int blocks, float a, float b,
                     int positive, uint32_t seed)
{
    f16_ref_fill(A, (size_t)m * k, positive ? 0 : -a, a, seed);
    f16_ref_fill(B, (size_t)k * n, positive ? 0 : -b, b, seed + 1000);
    mpd__f16_pack(A, m, k, AP);
    for (int i = 0; i < m * n; i++)
        C[i] = -1;
    if (!blocks) {
        mpd__gemm_f16(m, n, k, AP, B, n, C, n);
    } else { /* rows from 16 (a panel's first), columns 0-10 and 11.. */
        for (int r0 = 0; r0 < m; r0 += 16) {
            int mr = m - r0 < 16 ? m - r0 : 16;
            const mpd_half *ap = AP + (size_t)r0 * k;
            mpd__gemm_f16(mr, 11, k, ap, B, n, C + (size_t)r0 * n, n);
            mpd__gemm_f16(mr, n - 11, k, ap, B + 11, n, C + (size_t)r0 * n + 11, n);
        }
    }
    f16_ref_gemm(m, n, k, A, B, R);
    int differ = 0, first = -1;
    for (int i = 0; i < m * n; i++)
        if (memcmp(&C[i], &R[i], sizeof(float))) {
            differ++;
            first = first < 0 ? i : first;
        }
    int c = (int)r->ncases++;
    r->cases[c].m = m;
    r->cases[c].n = n;
    r->cases[c].k = k;
    r->cases[c].blocks = blocks;
    r->cases[c].outputs = m * n;
    r->cases[c].differ = differ;
    r->cases[c].got = first < 0 ? 0 : C[first];
    r->cases[c].want = first < 0 ? 0 : R[first];
}

void emu_main(struct emu_report *r)
{
    static const int shapes[][3] = {{8, 32, 16},  {16, 200, 27}, {13, 29, 1152},
                                    {9, 70, 301}, {1, 1, 1},     {24, 33, 4608}};
    r->ncases = 0;
    for (unsigned s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
        run_case(r, shapes[s][0], shapes[s][1], shapes[s][2], 0, 1.f, 4.f, 0, 7 + s);
    run_case(r, 16, 200, 27, 0, 1.f, 4.f, 1, 19);       /* all-positive terms */
    run_case(r, 8, 40, 64, 0, 100.f, 400.f, 1, 20);     /* chunk sums overflow to inf */
    run_case(r, 8, 8, 64, 0, 0x1p-7f, 0x1p-10f, 0, 21); /* subnormal products and sums */
    run_case(r, 40, 37, 701, 1, 1.f, 2.f, 0, 22);       /* in blocks */
    r->magic = EMU_DONE;
    __asm__ volatile("int3");
}
