/* int8 x int8 -> int32 GEMM: C[m][n] = sum_k A[m][k] * Bt[n][k].
 *
 * REF   portable C, the definition.
 * AVX2  x86-64, chosen at run time. Exact: vpmaddubsw multiplies u8 x s8 and
 *       adds pairs with signed saturation, so it is fed u = |b| (0..127) and
 *       w = sign(a, b) (-127..127): u * w = a * b, and each pair stays within
 *       2*127*127 = 32258, so it never saturates; vpmaddwd with ones widens
 *       the pairs to int32. Two kernels:
 *       - rows: 2 x 4 register tile (2 rows of A, 4 rows of Bt, 32 k per
 *         step, horizontal sums at the end), blocked over rows of A so that
 *         a block of A stays in L2 while 4 rows of Bt sit in L1;
 *       - vertical, for K up to ~1k: 16 rows of Bt transposed by 4-byte
 *         groups so that the int32 lanes are 8 output pixels; a 4-byte group
 *         of A is broadcast; no horizontal sums.
 * DNNL  oneDNN's matmul (u8 x s8), where the library is built in. Exact only
 *       on CPUs whose int8 path accumulates without 16-bit saturation (VNNI,
 *       AMX): mpd__gemm_i8_available() says so.
 * NEON  aarch64: sdot (vdotq_s32) where the CPU has it, else vmull/vpadal.
 *
 * No kernel reads outside the K bytes of the rows it was given (the tests
 * put the matrices against unmapped pages): partial vectors at the end of
 * the rows go through small zero-padded copies or masked loads. */
#define _GNU_SOURCE
#include "gemm_i8.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && !defined(MPD_NO_AVX2)
#define MPD_GEMM_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

#if defined(__aarch64__) && !defined(MPD_NO_NEON)
#define MPD_GEMM_NEON 1
#include <arm_neon.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#endif

#if !defined(MPD_NO_DNNL) && defined(__has_include)
#if __has_include(<dnnl.h>)
#define MPD_GEMM_DNNL 1
#include <dnnl.h>

#include "conv_dnnl.h" /* mpd__omp_one */
#endif
#endif

#define ALWAYS_INLINE inline __attribute__((always_inline))

static inline int imin(int a, int b)
{
    return a < b ? a : b;
}

/* ---- per-thread scratch ------------------------------------------------------ */

#ifdef MPD_GEMM_DNNL
/* Grown on demand, freed when the thread exits. Only the DNNL path uses it. */
enum { SCRATCH_SLOTS = 3 };
typedef struct {
    void *p[SCRATCH_SLOTS];
    size_t n[SCRATCH_SLOTS];
} scratch_t;

static pthread_key_t scratch_key;
static int scratch_key_ok;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *v)
{
    scratch_t *s = v;
    for (int i = 0; i < SCRATCH_SLOTS; i++)
        free(s->p[i]);
    free(s);
}

static void scratch_init(void)
{
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

/* A 64-byte aligned buffer of at least n bytes for this thread, or NULL. */
static void *scratch(int slot, size_t n)
{
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_key_ok)
        return NULL;
    scratch_t *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            return NULL;
        }
    }
    if (s->n[slot] < n) {
        free(s->p[slot]);
        size_t sz = (n + 4095) & ~(size_t)4095;
        if (posix_memalign(&s->p[slot], 64, sz) != 0) {
            s->p[slot] = NULL;
            s->n[slot] = 0;
            return NULL;
        }
        s->n[slot] = sz;
    }
    return s->p[slot];
}
#endif

/* ---- REF ----------------------------------------------------------------------- */

static void gemm_ref(int M, int N, int K, const int8_t *A, int lda, const int8_t *Bt, int ldb,
                     int32_t *C, int ldc)
{
    for (int m = 0; m < M; m++) {
        const int8_t *a = A + (size_t)m * lda;
        for (int n = 0; n < N; n++) {
            const int8_t *b = Bt + (size_t)n * ldb;
            int32_t s = 0;
            for (int k = 0; k < K; k++)
                s += (int32_t)a[k] * b[k];
            C[(size_t)m * ldc + n] = s;
        }
    }
}

/* ---- AVX2 ---------------------------------------------------------------------- */

#ifdef MPD_GEMM_X86
#define AVX2_FN __attribute__((target("avx2,fma")))

enum {
    AVX2_MR = 2,          /* rows of A per register tile */
    AVX2_NR = 4,          /* rows of Bt per register tile */
    AVX2_MC_MAX = 256,    /* rows of A per cache block */
    AVX2_L2_BYTES = 160 * 1024, /* A block budget */
};

/* Sums of the 8 int32 lanes of c0..c3 -> {sum c0, sum c1, sum c2, sum c3}. */
static ALWAYS_INLINE AVX2_FN __m128i hsum4_avx2(__m256i c0, __m256i c1, __m256i c2, __m256i c3)
{
    __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(c0, c1), _mm256_hadd_epi32(c2, c3));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* One register tile: C[i][j] = sum_k a_i[k] * b_j[k] for i < MR, j < NR,
 * over kv full 32-byte vectors of each row, plus (when tail) one more
 * vector from the zero-padded tail copies at[i] and bt[j]. MR, NR are
 * compile-time constants at every call site. */
static ALWAYS_INLINE AVX2_FN void tile_avx2(const int MR, const int NR, int kv,
                                            const int8_t *a0, const int8_t *a1,
                                            const int8_t *const *b, const int8_t *at0,
                                            const int8_t *at1, const int8_t (*bt)[32], int tail,
                                            int32_t *c, int ldc)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c02 = c00, c03 = c00;
    __m256i c10 = c00, c11 = c00, c12 = c00, c13 = c00;
    const int8_t *b0 = b[0], *b1 = NR > 1 ? b[1] : b0, *b2 = NR > 2 ? b[2] : b0,
                 *b3 = NR > 3 ? b[3] : b0;

    /* acc += pair sums of |b| * sign(a, b), widened to int32. The unsigned
     * operand comes from Bt so that the tile needs 14 of the 16 ymm
     * registers (8 sums, 2 rows of A, |b|, b, ones, a temporary): taking
     * it from A needs 2 more, and GCC then spills sums. */
#define MACB_AVX2(acc, uy, y, x)                                                            \
    acc = _mm256_add_epi32(acc,                                                             \
                           _mm256_madd_epi16(_mm256_maddubs_epi16(uy, _mm256_sign_epi8(x, y)), \
                                             ones))
#define STEP_AVX2(pa0, pa1, pb0, pb1, pb2, pb3)                                             \
    do {                                                                                    \
        const __m256i x0 = _mm256_loadu_si256((const __m256i *)(pa0));                      \
        const __m256i x1 = MR > 1 ? _mm256_loadu_si256((const __m256i *)(pa1)) : x0;        \
        __m256i y, uy;                                                                      \
        y = _mm256_loadu_si256((const __m256i *)(pb0));                                     \
        uy = _mm256_abs_epi8(y);                                                            \
        MACB_AVX2(c00, uy, y, x0);                                                          \
        if (MR > 1)                                                                         \
            MACB_AVX2(c10, uy, y, x1);                                                      \
        if (NR > 1) {                                                                       \
            y = _mm256_loadu_si256((const __m256i *)(pb1));                                 \
            uy = _mm256_abs_epi8(y);                                                        \
            MACB_AVX2(c01, uy, y, x0);                                                      \
            if (MR > 1)                                                                     \
                MACB_AVX2(c11, uy, y, x1);                                                  \
        }                                                                                   \
        if (NR > 2) {                                                                       \
            y = _mm256_loadu_si256((const __m256i *)(pb2));                                 \
            uy = _mm256_abs_epi8(y);                                                        \
            MACB_AVX2(c02, uy, y, x0);                                                      \
            if (MR > 1)                                                                     \
                MACB_AVX2(c12, uy, y, x1);                                                  \
        }                                                                                   \
        if (NR > 3) {                                                                       \
            y = _mm256_loadu_si256((const __m256i *)(pb3));                                 \
            uy = _mm256_abs_epi8(y);                                                        \
            MACB_AVX2(c03, uy, y, x0);                                                      \
            if (MR > 1)                                                                     \
                MACB_AVX2(c13, uy, y, x1);                                                  \
        }                                                                                   \
    } while (0)

    /* The tail first: then nothing but the reduction follows the loop, and
     * the accumulators stay in registers. */
    if (tail)
        STEP_AVX2(at0, at1, bt[0], bt[1], bt[2], bt[3]);
    for (int t = 0; t < kv; t++) {
        size_t o = (size_t)t * 32;
        STEP_AVX2(a0 + o, a1 + o, b0 + o, b1 + o, b2 + o, b3 + o);
    }
#undef STEP_AVX2
#undef MACB_AVX2

    for (int i = 0; i < MR; i++) {
        __m128i s = i == 0 ? hsum4_avx2(c00, c01, c02, c03) : hsum4_avx2(c10, c11, c12, c13);
        int32_t *ci = c + (size_t)i * ldc;
        if (NR == 4) {
            _mm_storeu_si128((__m128i *)ci, s);
        } else {
            int32_t tmp[4];
            _mm_storeu_si128((__m128i *)tmp, s);
            for (int j = 0; j < NR; j++)
                ci[j] = tmp[j];
        }
    }
}

typedef void (*tile_avx2_fn)(int kv, const int8_t *a0, const int8_t *a1, const int8_t *const *b,
                             const int8_t *at0, const int8_t *at1, const int8_t (*bt)[32],
                             int tail, int32_t *c, int ldc);

#define DEF_TILE_AVX2(mr, nr)                                                               \
    static AVX2_FN void tile_avx2_##mr##x##nr(int kv, const int8_t *a0, const int8_t *a1,   \
                                              const int8_t *const *b, const int8_t *at0,    \
                                              const int8_t *at1, const int8_t(*bt)[32],     \
                                              int tail, int32_t *c, int ldc)                \
    {                                                                                       \
        tile_avx2(mr, nr, kv, a0, a1, b, at0, at1, bt, tail, c, ldc);                       \
    }
DEF_TILE_AVX2(1, 1)
DEF_TILE_AVX2(1, 2)
DEF_TILE_AVX2(1, 3)
DEF_TILE_AVX2(1, 4)
DEF_TILE_AVX2(2, 1)
DEF_TILE_AVX2(2, 2)
DEF_TILE_AVX2(2, 3)
DEF_TILE_AVX2(2, 4)
#undef DEF_TILE_AVX2

static const tile_avx2_fn tiles_avx2[AVX2_MR][AVX2_NR] = {
    {tile_avx2_1x1, tile_avx2_1x2, tile_avx2_1x3, tile_avx2_1x4},
    {tile_avx2_2x1, tile_avx2_2x2, tile_avx2_2x3, tile_avx2_2x4},
};

/* The tail of a row: its last kr = K % 32 bytes, placed where a 32-byte
 * vector read of the row's last 32 bytes would put them (bytes 32-kr..31)
 * when K >= 32, else at bytes 0..K-1; everything else zero. A's tails go
 * through this copy, Bt's are read in place where that is safe (then the
 * zeros in A's tail cancel the bytes Bt's tail has in front). */
static void copy_tail(int8_t *dst, const int8_t *row, int K, int kr)
{
    memset(dst, 0, 32);
    if (K >= 32)
        memcpy(dst + 32 - kr, row + K - kr, (size_t)kr);
    else
        memcpy(dst, row, (size_t)K);
}

static AVX2_FN void gemm_avx2_rows(int M, int N, int K, const int8_t *A, int lda,
                                   const int8_t *Bt, int ldb, int32_t *C, int ldc)
{
    const int kv = K / 32, kr = K % 32, tail = kr != 0;
    int mc = AVX2_L2_BYTES / K;
    mc = mc < AVX2_MR ? AVX2_MR : mc > AVX2_MC_MAX ? AVX2_MC_MAX : mc & ~(AVX2_MR - 1);
    _Alignas(32) int8_t atail[AVX2_MC_MAX][32];
    _Alignas(32) int8_t btail[AVX2_NR][32];
    /* K < 32 and a multiple of 4 (the callers' padding): masked dword loads
     * read exactly the row, faster than a copy. */
    const __m256i kmask = _mm256_cmpgt_epi32(_mm256_set1_epi32(K / 4),
                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));

    for (int m0 = 0; m0 < M; m0 += mc) {
        const int mb = imin(mc, M - m0);
        if (tail)
            for (int i = 0; i < mb; i++)
                copy_tail(atail[i], A + (size_t)(m0 + i) * lda, K, kr);
        for (int n0 = 0; n0 < N; n0 += AVX2_NR) {
            const int nr = imin(AVX2_NR, N - n0);
            const int8_t *b[AVX2_NR];
            for (int j = 0; j < nr; j++)
                b[j] = Bt + (size_t)(n0 + j) * ldb;
            for (int j = nr; j < AVX2_NR; j++)
                b[j] = b[0];
            if (tail) {
                for (int j = 0; j < nr; j++) {
                    __m256i v;
                    if (K >= 32)
                        v = _mm256_loadu_si256((const __m256i *)(b[j] + K - 32));
                    else if (K % 4 == 0)
                        v = _mm256_maskload_epi32((const int *)(const void *)b[j], kmask);
                    else {
                        copy_tail(btail[j], b[j], K, kr);
                        continue;
                    }
                    _mm256_store_si256((__m256i *)btail[j], v);
                }
            }
            const tile_avx2_fn full = tiles_avx2[AVX2_MR - 1][nr - 1];
            int i = 0;
            for (; i + AVX2_MR <= mb; i += AVX2_MR) {
                const int8_t *a0 = A + (size_t)(m0 + i) * lda;
                full(kv, a0, a0 + lda, b, atail[i], atail[i + 1], (const int8_t(*)[32])btail,
                     tail, C + (size_t)(m0 + i) * ldc + n0, ldc);
            }
            if (i < mb) {
                const int8_t *a0 = A + (size_t)(m0 + i) * lda;
                tiles_avx2[mb - i - 1][nr - 1](kv, a0, a0, b, atail[i], atail[i],
                                               (const int8_t(*)[32])btail, tail,
                                               C + (size_t)(m0 + i) * ldc + n0, ldc);
            }
        }
    }
}

/* Small K: each dot product is only a few vectors long, so the horizontal
 * sums at the end of every register tile would cost as much as the
 * products. Here the int32 lanes are output pixels instead ("vertical"):
 * 16 rows of Bt are transposed at 4-byte granularity into, for each group
 * of 4 k ("quad") q, two vectors of the 16 pixels' quads (and their |b|);
 * a quad of a row of A is broadcast to all lanes, and vpmaddwd's int32
 * lanes are then already the sums over the quad for 8 pixels. No
 * reduction: the sums are stored to 8 consecutive C columns. */
enum {
    VERT_NB = 16,      /* pixels (rows of Bt) per block */
    VERT_MR = 4,       /* rows of A per register tile */
    VERT_KC = 512,     /* k per packed block (K / 4 * 128 bytes = 16 KiB, in L1) */
    VERT_MAX_K = 1152, /* above: the row-tile kernel (see gemm_avx2) */
};

/* 8 x 8 transpose of int32: r[i] holds quads 0..7 of pixel i; on return
 * r[j] holds quad j of pixels 0..7. */
static ALWAYS_INLINE AVX2_FN void transpose8_epi32(__m256i r[8])
{
    __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
    __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
    __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
    __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
    r[0] = _mm256_permute2x128_si256(u0, u4, 0x20);
    r[1] = _mm256_permute2x128_si256(u1, u5, 0x20);
    r[2] = _mm256_permute2x128_si256(u2, u6, 0x20);
    r[3] = _mm256_permute2x128_si256(u3, u7, 0x20);
    r[4] = _mm256_permute2x128_si256(u0, u4, 0x31);
    r[5] = _mm256_permute2x128_si256(u1, u5, 0x31);
    r[6] = _mm256_permute2x128_si256(u2, u6, 0x31);
    r[7] = _mm256_permute2x128_si256(u3, u7, 0x31);
}

/* Packs pixels n0..n0+nb-1 (nb <= 16; missing pixels and bytes past K are
 * zero): bp[4q + h] = quad q of pixels 8h..8h+7, bp[4q + 2 + h] = its |b|. */
static AVX2_FN void pack_vert(const int8_t *Bt, int ldb, int nb, int K, __m256i *bp)
{
    const int nq = (K + 3) / 4;
    for (int c = 0; c * 32 < K; c++) {
        const int k0 = c * 32, kn = imin(32, K - k0);
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(kn / 4),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int h = 0; h < 2; h++) {
            __m256i r[8];
            for (int i = 0; i < 8; i++) {
                const int p = 8 * h + i;
                const int8_t *row = Bt + (size_t)p * ldb + k0;
                if (p >= nb) {
                    r[i] = _mm256_setzero_si256();
                } else if (kn == 32) {
                    r[i] = _mm256_loadu_si256((const __m256i *)row);
                } else if (kn % 4 == 0) {
                    r[i] = _mm256_maskload_epi32((const int *)(const void *)row, mask);
                } else {
                    _Alignas(32) int8_t tmp[32] = {0};
                    memcpy(tmp, row, (size_t)kn);
                    r[i] = _mm256_load_si256((const __m256i *)tmp);
                }
            }
            transpose8_epi32(r);
            for (int j = 0; j < 8 && 8 * c + j < nq; j++) {
                bp[4 * (8 * c + j) + h] = r[j];
                bp[4 * (8 * c + j) + 2 + h] = _mm256_abs_epi8(r[j]);
            }
        }
    }
}

/* An unaligned int32 that may alias int8_t data. */
typedef int32_t __attribute__((may_alias, aligned(1))) i32u;

/* Quad q of a row of A as a dword, safe at the row's end. */
static ALWAYS_INLINE int32_t quad_at(const int8_t *a, int q, int K)
{
    int32_t v = 0;
    memcpy(&v, a + 4 * q, (size_t)imin(4, K - 4 * q));
    return v;
}

static ALWAYS_INLINE AVX2_FN void tile_vert(const int MR, int K, const int8_t *a0, int lda,
                                            const __m256i *bp, int nb, int32_t *c, int ldc,
                                            int add)
{
    const __m256i ones = _mm256_set1_epi16(1);
    const int nfull = K / 4, nq = (K + 3) / 4;
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00;
    __m256i c20 = c00, c21 = c00, c30 = c00, c31 = c00;
    const int8_t *a1 = a0 + (MR > 1 ? lda : 0), *a2 = a0 + (MR > 2 ? 2 * lda : 0),
                 *a3 = a0 + (MR > 3 ? 3 * lda : 0);
    /* Each row's broadcast is consumed right away, and y0, y1 stay in
     * memory (vpsignb's sign operand): 13 live registers, no spills. */
#define MACV(acc0, acc1, quad)                                                              \
    do {                                                                                    \
        const __m256i x = _mm256_set1_epi32(quad);                                          \
        acc0 = _mm256_add_epi32(                                                            \
            acc0, _mm256_madd_epi16(_mm256_maddubs_epi16(u0, _mm256_sign_epi8(x, bq[0])), ones)); \
        acc1 = _mm256_add_epi32(                                                            \
            acc1, _mm256_madd_epi16(_mm256_maddubs_epi16(u1, _mm256_sign_epi8(x, bq[1])), ones)); \
    } while (0)
    for (int q = 0; q < nfull; q++) {
        const __m256i *bq = bp + 4 * q;
        const __m256i u0 = bq[2], u1 = bq[3];
        MACV(c00, c01, *(const i32u *)(a0 + 4 * q));
        if (MR > 1)
            MACV(c10, c11, *(const i32u *)(a1 + 4 * q));
        if (MR > 2)
            MACV(c20, c21, *(const i32u *)(a2 + 4 * q));
        if (MR > 3)
            MACV(c30, c31, *(const i32u *)(a3 + 4 * q));
    }
    if (nq > nfull) { /* a partial last quad: no reads past the rows */
        const __m256i *bq = bp + 4 * nfull;
        const __m256i u0 = bq[2], u1 = bq[3];
        MACV(c00, c01, quad_at(a0, nfull, K));
        if (MR > 1)
            MACV(c10, c11, quad_at(a1, nfull, K));
        if (MR > 2)
            MACV(c20, c21, quad_at(a2, nfull, K));
        if (MR > 3)
            MACV(c30, c31, quad_at(a3, nfull, K));
    }
#undef MACV
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nb), lane);
    const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nb - 8), lane);
    for (int i = 0; i < MR; i++) {
        __m256i s0 = i == 0 ? c00 : i == 1 ? c10 : i == 2 ? c20 : c30;
        __m256i s1 = i == 0 ? c01 : i == 1 ? c11 : i == 2 ? c21 : c31;
        int32_t *ci = c + (size_t)i * ldc;
        if (nb == VERT_NB) {
            if (add) {
                s0 = _mm256_add_epi32(s0, _mm256_loadu_si256((const __m256i *)ci));
                s1 = _mm256_add_epi32(s1, _mm256_loadu_si256((const __m256i *)(ci + 8)));
            }
            _mm256_storeu_si256((__m256i *)ci, s0);
            _mm256_storeu_si256((__m256i *)(ci + 8), s1);
        } else {
            if (add) {
                s0 = _mm256_add_epi32(s0, _mm256_maskload_epi32((const int *)ci, m0));
                s1 = _mm256_add_epi32(s1, _mm256_maskload_epi32((const int *)(ci + 8), m1));
            }
            _mm256_maskstore_epi32((int *)ci, m0, s0);
            _mm256_maskstore_epi32((int *)(ci + 8), m1, s1);
        }
    }
}

static AVX2_FN void gemm_avx2_vert(int M, int N, int K, const int8_t *A, int lda,
                                   const int8_t *Bt, int ldb, int32_t *C, int ldc)
{
    __m256i bp[VERT_KC / 4 * 4];
    for (int n0 = 0; n0 < N; n0 += VERT_NB) {
        const int nb = imin(VERT_NB, N - n0);
        for (int k0 = 0; k0 < K; k0 += VERT_KC) {
            const int kc = imin(VERT_KC, K - k0), add = k0 > 0;
            pack_vert(Bt + (size_t)n0 * ldb + k0, ldb, nb, kc, bp);
            const int8_t *a = A + k0;
            int32_t *c = C + n0;
            int m = 0;
            for (; m + VERT_MR <= M; m += VERT_MR)
                tile_vert(4, kc, a + (size_t)m * lda, lda, bp, nb, c + (size_t)m * ldc, ldc, add);
            switch (M - m) {
            case 3:
                tile_vert(3, kc, a + (size_t)m * lda, lda, bp, nb, c + (size_t)m * ldc, ldc, add);
                break;
            case 2:
                tile_vert(2, kc, a + (size_t)m * lda, lda, bp, nb, c + (size_t)m * ldc, ldc, add);
                break;
            case 1:
                tile_vert(1, kc, a + (size_t)m * lda, lda, bp, nb, c + (size_t)m * ldc, ldc, add);
                break;
            default:
                break;
            }
        }
    }
}

/* The vertical kernel, where its packing is paid back: at least a tile of
 * rows of A and half a block of pixels. It streams all of A once per 16
 * pixels, so for large A (K above ~1k on the yolov3-tiny shapes) the
 * row-tile kernel, which keeps a block of A in L2, is faster. */
static AVX2_FN void gemm_avx2(int M, int N, int K, const int8_t *A, int lda, const int8_t *Bt,
                              int ldb, int32_t *C, int ldc)
{
    if (M >= VERT_MR && N >= VERT_NB / 2 && K <= VERT_MAX_K)
        gemm_avx2_vert(M, N, K, A, lda, Bt, ldb, C, ldc);
    else
        gemm_avx2_rows(M, N, K, A, lda, Bt, ldb, C, ldc);
}

static int cpu_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2");
}
#endif /* MPD_GEMM_X86 */

/* ---- NEON ---------------------------------------------------------------------- */

#ifdef MPD_GEMM_NEON
enum { NEON_MR = 4, NEON_NR = 4, NEON_MC_MAX = 256, NEON_L2_BYTES = 160 * 1024 };

/* Same layout as the AVX2 tails, with 16-byte vectors. */
static void copy_tail16(int8_t *dst, const int8_t *row, int K, int kr)
{
    memset(dst, 0, 16);
    if (K >= 16)
        memcpy(dst + 16 - kr, row + K - kr, (size_t)kr);
    else
        memcpy(dst, row, (size_t)K);
}

/* {sum c0, sum c1, sum c2, sum c3} */
static ALWAYS_INLINE int32x4_t hsum4_neon(int32x4_t c0, int32x4_t c1, int32x4_t c2,
                                          int32x4_t c3)
{
    return vpaddq_s32(vpaddq_s32(c0, c1), vpaddq_s32(c2, c3));
}

static ALWAYS_INLINE void store_neon(int NR, int32_t *ci, int32x4_t s)
{
    if (NR == 4) {
        vst1q_s32(ci, s);
    } else {
        int32_t tmp[4];
        vst1q_s32(tmp, s);
        for (int j = 0; j < NR; j++)
            ci[j] = tmp[j];
    }
}

/* vmull/vmlal: two int8 products per int16 lane (|sum| <= 2 * 127 * 127 =
 * 32258, no overflow), then pairwise-added into int32. */
static ALWAYS_INLINE int32x4_t mac_mull(int32x4_t acc, int8x16_t a, int8x16_t b)
{
    int16x8_t p = vmull_s8(vget_low_s8(a), vget_low_s8(b));
    p = vmlal_high_s8(p, a, b);
    return vpadalq_s16(acc, p);
}

#define NEON_TILE_BODY(MAC)                                                                 \
    do {                                                                                    \
        int32x4_t acc[NEON_MR][NEON_NR];                                                    \
        for (int i = 0; i < NEON_MR; i++)                                                   \
            for (int j = 0; j < NEON_NR; j++)                                               \
                acc[i][j] = vdupq_n_s32(0);                                                 \
        for (int t = 0; t <= kv; t++) {                                                     \
            int8x16_t av[NEON_MR], bv[NEON_NR];                                             \
            if (t == kv && !tail)                                                           \
                break;                                                                      \
            for (int i = 0; i < MR; i++)                                                    \
                av[i] = vld1q_s8(t < kv ? a[i] + (size_t)t * 16 : at[i]);                   \
            for (int j = 0; j < NR; j++)                                                    \
                bv[j] = vld1q_s8(t < kv ? b[j] + (size_t)t * 16 : bt[j]);                   \
            for (int i = 0; i < MR; i++)                                                    \
                for (int j = 0; j < NR; j++)                                                \
                    acc[i][j] = MAC(acc[i][j], av[i], bv[j]);                               \
        }                                                                                   \
        for (int i = 0; i < MR; i++)                                                        \
            store_neon(NR, c + (size_t)i * ldc,                                             \
                       hsum4_neon(acc[i][0], acc[i][1], acc[i][2], acc[i][3]));             \
    } while (0)

static ALWAYS_INLINE void tile_neon_mull(const int MR, const int NR, int kv,
                                         const int8_t *const *a, const int8_t *const *b,
                                         const int8_t (*at)[16], const int8_t (*bt)[16],
                                         int tail, int32_t *c, int ldc)
{
    NEON_TILE_BODY(mac_mull);
}

#define NEON_DOT_TARGET __attribute__((target("arch=armv8.2-a+dotprod")))
static ALWAYS_INLINE NEON_DOT_TARGET int32x4_t mac_dot(int32x4_t acc, int8x16_t a, int8x16_t b)
{
    return vdotq_s32(acc, a, b);
}

static ALWAYS_INLINE NEON_DOT_TARGET void tile_neon_dot(const int MR, const int NR, int kv,
                                                        const int8_t *const *a,
                                                        const int8_t *const *b,
                                                        const int8_t (*at)[16],
                                                        const int8_t (*bt)[16], int tail,
                                                        int32_t *c, int ldc)
{
    NEON_TILE_BODY(mac_dot);
}
#undef NEON_TILE_BODY

typedef void (*tile_neon_fn)(int kv, const int8_t *const *a, const int8_t *const *b,
                             const int8_t (*at)[16], const int8_t (*bt)[16], int tail,
                             int32_t *c, int ldc);

#define DEF_TILE_NEON(kind, attr, mr, nr)                                                   \
    static attr void tile_neon_##kind##_##mr##x##nr(                                        \
        int kv, const int8_t *const *a, const int8_t *const *b, const int8_t(*at)[16],      \
        const int8_t(*bt)[16], int tail, int32_t *c, int ldc)                               \
    {                                                                                       \
        tile_neon_##kind(mr, nr, kv, a, b, at, bt, tail, c, ldc);                           \
    }
#define DEF_TILES_NEON(kind, attr)                                                          \
    DEF_TILE_NEON(kind, attr, 1, 1)                                                         \
    DEF_TILE_NEON(kind, attr, 1, 2)                                                         \
    DEF_TILE_NEON(kind, attr, 1, 3)                                                         \
    DEF_TILE_NEON(kind, attr, 1, 4)                                                         \
    DEF_TILE_NEON(kind, attr, 2, 1)                                                         \
    DEF_TILE_NEON(kind, attr, 2, 2)                                                         \
    DEF_TILE_NEON(kind, attr, 2, 3)                                                         \
    DEF_TILE_NEON(kind, attr, 2, 4)                                                         \
    DEF_TILE_NEON(kind, attr, 3, 1)                                                         \
    DEF_TILE_NEON(kind, attr, 3, 2)                                                         \
    DEF_TILE_NEON(kind, attr, 3, 3)                                                         \
    DEF_TILE_NEON(kind, attr, 3, 4)                                                         \
    DEF_TILE_NEON(kind, attr, 4, 1)                                                         \
    DEF_TILE_NEON(kind, attr, 4, 2)                                                         \
    DEF_TILE_NEON(kind, attr, 4, 3)                                                         \
    DEF_TILE_NEON(kind, attr, 4, 4)                                                         \
    static const tile_neon_fn tiles_neon_##kind[NEON_MR][NEON_NR] = {                       \
        {tile_neon_##kind##_1x1, tile_neon_##kind##_1x2, tile_neon_##kind##_1x3,            \
         tile_neon_##kind##_1x4},                                                           \
        {tile_neon_##kind##_2x1, tile_neon_##kind##_2x2, tile_neon_##kind##_2x3,            \
         tile_neon_##kind##_2x4},                                                           \
        {tile_neon_##kind##_3x1, tile_neon_##kind##_3x2, tile_neon_##kind##_3x3,            \
         tile_neon_##kind##_3x4},                                                           \
        {tile_neon_##kind##_4x1, tile_neon_##kind##_4x2, tile_neon_##kind##_4x3,            \
         tile_neon_##kind##_4x4},                                                           \
    };
DEF_TILES_NEON(mull, )
DEF_TILES_NEON(dot, NEON_DOT_TARGET)
#undef DEF_TILES_NEON
#undef DEF_TILE_NEON

static int neon_has_dot;
static pthread_once_t neon_once = PTHREAD_ONCE_INIT;
static void neon_init(void)
{
    neon_has_dot = (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
}

static void gemm_neon(int M, int N, int K, const int8_t *A, int lda, const int8_t *Bt, int ldb,
                      int32_t *C, int ldc)
{
    pthread_once(&neon_once, neon_init);
    const tile_neon_fn(*tiles)[NEON_NR] = neon_has_dot ? tiles_neon_dot : tiles_neon_mull;
    const int kv = K / 16, kr = K % 16, tail = kr != 0;
    int mc = NEON_L2_BYTES / K;
    mc = mc < NEON_MR ? NEON_MR : mc > NEON_MC_MAX ? NEON_MC_MAX : mc & ~(NEON_MR - 1);
    _Alignas(16) int8_t atail[NEON_MC_MAX][16];
    _Alignas(16) int8_t btail[NEON_NR][16];
    memset(btail, 0, sizeof(btail));

    for (int m0 = 0; m0 < M; m0 += mc) {
        const int mb = imin(mc, M - m0);
        if (tail)
            for (int i = 0; i < mb; i++)
                copy_tail16(atail[i], A + (size_t)(m0 + i) * lda, K, kr);
        for (int n0 = 0; n0 < N; n0 += NEON_NR) {
            const int nr = imin(NEON_NR, N - n0);
            const int8_t *b[NEON_NR];
            for (int j = 0; j < nr; j++)
                b[j] = Bt + (size_t)(n0 + j) * ldb;
            for (int j = nr; j < NEON_NR; j++)
                b[j] = b[0];
            if (tail) {
                for (int j = 0; j < nr; j++) {
                    if (K >= 16)
                        vst1q_s8(btail[j], vld1q_s8(b[j] + K - 16));
                    else
                        copy_tail16(btail[j], b[j], K, kr);
                }
            }
            for (int i = 0; i < mb; i += NEON_MR) {
                const int mr = imin(NEON_MR, mb - i);
                const int8_t *a[NEON_MR];
                for (int r = 0; r < NEON_MR; r++)
                    a[r] = A + (size_t)(m0 + i + (r < mr ? r : 0)) * lda;
                tiles[mr - 1][nr - 1](kv, a, b, (const int8_t(*)[16])atail[i],
                                      (const int8_t(*)[16])btail, tail,
                                      C + (size_t)(m0 + i) * ldc + n0, ldc);
            }
        }
    }
}
#endif /* MPD_GEMM_NEON */

/* ---- oneDNN --------------------------------------------------------------------- */

#ifdef MPD_GEMM_DNNL
/* src = A + 128 as u8 (M x K, a shifted copy in per-thread scratch), weights
 * = Bt^T (K x N s8, Bt described by strides {1, ldb}: no copy), dst = C
 * (M x N s32, strides {ldc, 1}). Then C[m][n] -= 128 * sum_k Bt[n][k].
 * (The other orientation, src = Bt + 128 and dst = C^T written through
 * strides {1, ldc}, makes oneDNN 2.6 fall back to its reference
 * implementation, ref_int8, about 1000x slower; s8 src is slower than u8.)
 *
 * Debian's oneDNN uses OpenMP. Each of our calls runs single-threaded: the
 * calling thread's OpenMP thread count (a per-thread ICV for threads that are
 * not inside an OpenMP region) is set to 1 around primitive creation and
 * execution, and restored afterwards. Primitives use a user scratchpad, so
 * one primitive can execute concurrently on several threads, each with its
 * own stream, memory objects and scratch. */
enum { DNNL_CACHE_MAX = 128 };
typedef struct {
    int M, N, K, ldb, ldc;
    dnnl_primitive_t prim;
    size_t scratchpad;
} dnnl_entry;

static dnnl_engine_t dnnl_eng;
static pthread_once_t dnnl_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t dnnl_mu = PTHREAD_MUTEX_INITIALIZER;
static dnnl_entry dnnl_cache[DNNL_CACHE_MAX];
static int dnnl_ncache;

static void dnnl_init(void)
{
    if (dnnl_engine_create(&dnnl_eng, dnnl_cpu, 0) != dnnl_success)
        dnnl_eng = NULL;
}

static int dnnl_md(dnnl_memory_desc_t *md, int64_t r, int64_t c, dnnl_data_type_t t, int64_t s0,
                   int64_t s1)
{
    dnnl_dims_t d = {r, c}, s = {s0, s1};
    return dnnl_memory_desc_init_by_strides(md, 2, d, t, s) == dnnl_success;
}

static dnnl_primitive_t dnnl_make(int M, int N, int K, int ldb, int ldc, size_t *scratchpad)
{
    dnnl_memory_desc_t src, wei, dst;
    dnnl_matmul_desc_t desc;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    if (!dnnl_md(&src, M, K, dnnl_u8, K, 1) || !dnnl_md(&wei, K, N, dnnl_s8, 1, ldb) ||
        !dnnl_md(&dst, M, N, dnnl_s32, ldc, 1) ||
        dnnl_matmul_desc_init(&desc, &src, &wei, NULL, &dst) != dnnl_success ||
        dnnl_primitive_attr_create(&attr) != dnnl_success)
        return NULL;
    if (dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success &&
        dnnl_primitive_desc_create(&pd, &desc, attr, dnnl_eng, NULL) == dnnl_success) {
        const dnnl_memory_desc_t *sp = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        *scratchpad = sp ? dnnl_memory_desc_get_size(sp) : 0;
        if (dnnl_primitive_create(&prim, pd) != dnnl_success)
            prim = NULL;
    }
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    dnnl_primitive_attr_destroy(attr);
    return prim;
}

/* A cached primitive for the shape; *owned when the cache is full and the
 * caller must destroy it. */
static dnnl_primitive_t dnnl_get(int M, int N, int K, int ldb, int ldc, size_t *scratchpad,
                                 int *owned)
{
    *owned = 0;
    pthread_mutex_lock(&dnnl_mu);
    for (int i = 0; i < dnnl_ncache; i++) {
        dnnl_entry *e = &dnnl_cache[i];
        if (e->M == M && e->N == N && e->K == K && e->ldb == ldb && e->ldc == ldc) {
            *scratchpad = e->scratchpad;
            pthread_mutex_unlock(&dnnl_mu);
            return e->prim;
        }
    }
    /* Created under the lock: rare, and two threads never build the same one. */
    dnnl_primitive_t prim = dnnl_make(M, N, K, ldb, ldc, scratchpad);
    if (prim) {
        if (dnnl_ncache < DNNL_CACHE_MAX)
            dnnl_cache[dnnl_ncache++] = (dnnl_entry){M, N, K, ldb, ldc, prim, *scratchpad};
        else
            *owned = 1;
    }
    pthread_mutex_unlock(&dnnl_mu);
    return prim;
}

static int dnnl_mem(dnnl_memory_t *m, int64_t r, int64_t c, dnnl_data_type_t t, int64_t s0,
                    int64_t s1, void *p)
{
    dnnl_memory_desc_t md;
    return dnnl_md(&md, r, c, t, s0, s1) && dnnl_memory_create(m, &md, dnnl_eng, p) == dnnl_success;
}

static int dnnl_scratch_mem(dnnl_memory_t *m, dnnl_primitive_t prim, void *p)
{
    const_dnnl_primitive_desc_t pd = NULL;
    if (dnnl_primitive_get_primitive_desc(prim, &pd) != dnnl_success)
        return 0;
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    return md && dnnl_memory_create(m, md, dnnl_eng, p) == dnnl_success;
}

/* Returns 0 when oneDNN failed (the caller then falls back). */
static int gemm_dnnl(int M, int N, int K, const int8_t *A, int lda, const int8_t *Bt, int ldb,
                     int32_t *C, int ldc)
{
    pthread_once(&dnnl_once, dnnl_init);
    if (!dnnl_eng)
        return 0;
    uint8_t *src = scratch(0, (size_t)M * K);
    int32_t *colsum = scratch(1, (size_t)N * sizeof(int32_t));
    if (!src || !colsum)
        return 0;
    int omp_old = mpd__omp_one();
    size_t sp_size = 0;
    int owned = 0, ok = 0;
    dnnl_primitive_t prim = dnnl_get(M, N, K, ldb, ldc, &sp_size, &owned);
    void *sp = prim && sp_size ? scratch(2, sp_size) : NULL;
    if (prim && (sp || !sp_size)) {
        for (int m = 0; m < M; m++) {
            const int8_t *a = A + (size_t)m * lda;
            uint8_t *u = src + (size_t)m * K;
            for (int k = 0; k < K; k++)
                u[k] = (uint8_t)((uint8_t)a[k] ^ 0x80u); /* a + 128 */
        }
        dnnl_memory_t ms = NULL, mw = NULL, md = NULL, msp = NULL;
        dnnl_stream_t stream = NULL;
        int made = dnnl_mem(&ms, M, K, dnnl_u8, K, 1, src) &&
                   dnnl_mem(&mw, K, N, dnnl_s8, 1, ldb, (void *)Bt) &&
                   dnnl_mem(&md, M, N, dnnl_s32, ldc, 1, C) &&
                   (!sp_size || dnnl_scratch_mem(&msp, prim, sp)) &&
                   dnnl_stream_create(&stream, dnnl_eng, dnnl_stream_default_flags) == dnnl_success;
        if (made) {
            dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, ms},
                                       {DNNL_ARG_WEIGHTS, mw},
                                       {DNNL_ARG_DST, md},
                                       {DNNL_ARG_SCRATCHPAD, msp}};
            ok = dnnl_primitive_execute(prim, stream, sp_size ? 4 : 3, args) == dnnl_success &&
                 dnnl_stream_wait(stream) == dnnl_success;
        }
        if (stream)
            dnnl_stream_destroy(stream);
        dnnl_memory_t mems[4] = {ms, mw, md, msp};
        for (int i = 0; i < 4; i++)
            if (mems[i])
                dnnl_memory_destroy(mems[i]);
    }
    if (owned)
        dnnl_primitive_destroy(prim);
    mpd__omp_restore(omp_old);
    if (!ok)
        return 0;
    for (int n = 0; n < N; n++) {
        const int8_t *b = Bt + (size_t)n * ldb;
        int32_t s = 0;
        for (int k = 0; k < K; k++)
            s += b[k];
        colsum[n] = s * 128;
    }
    for (int m = 0; m < M; m++) {
        int32_t *c = C + (size_t)m * ldc;
        for (int n = 0; n < N; n++)
            c[n] -= colsum[n];
    }
    return 1;
}

#ifdef MPD_GEMM_X86
/* CPUID.(EAX=7,ECX=1):EAX[4] = AVX-VNNI; CPUID.(EAX=7,ECX=0):EDX[25] = AMX-INT8;
 * CPUID.(EAX=7,ECX=0):ECX[11] = AVX512-VNNI. */
static int cpu_int8_dot(void)
{
    unsigned a, b, c, d;
    int vnni = 0;
    if (__get_cpuid_count(7, 0, &a, &b, &c, &d))
        vnni |= ((c >> 11) & 1) | ((d >> 25) & 1);
    if (__get_cpuid_count(7, 1, &a, &b, &c, &d))
        vnni |= (a >> 4) & 1;
    __builtin_cpu_init();
    return vnni || __builtin_cpu_supports("avx512vnni");
}
#endif

/* Exact where both the CPU and the ISA oneDNN settled on accumulate int8
 * products without 16-bit saturation (VNNI or AMX). Without them oneDNN's
 * u8 x s8 kernels use vpmaddubsw on u8 operands up to 255, which saturates. */
static int dnnl_exact_here(void)
{
#ifdef MPD_GEMM_X86
    if (!cpu_int8_dot())
        return 0;
    unsigned isa = (unsigned)dnnl_get_effective_cpu_isa();
    return (isa & (unsigned)dnnl_cpu_isa_avx512_core_vnni) ==
               (unsigned)dnnl_cpu_isa_avx512_core_vnni ||
           (isa & (unsigned)dnnl_cpu_isa_avx2_vnni) == (unsigned)dnnl_cpu_isa_avx2_vnni;
#else
    return 0;
#endif
}
#endif /* MPD_GEMM_DNNL */

/* ---- dispatch -------------------------------------------------------------------- */

static pthread_once_t avail_once = PTHREAD_ONCE_INIT;
static int avail[MPD_GEMM_I8_AUTO];
static mpd_gemm_i8_impl best = MPD_GEMM_I8_REF;

static void avail_init(void)
{
    avail[MPD_GEMM_I8_REF] = 1;
#ifdef MPD_GEMM_X86
    avail[MPD_GEMM_I8_AVX2] = cpu_avx2();
#endif
#ifdef MPD_GEMM_NEON
    avail[MPD_GEMM_I8_NEON] = 1;
#endif
#ifdef MPD_GEMM_DNNL
    if (dnnl_exact_here()) {
        /* Trust, but check once: a product whose 16-bit pair sums would
         * saturate without VNNI. */
        enum { PM = 3, PN = 5, PK = 68 };
        int8_t a[PM * PK], b[PN * PK];
        int32_t c0[PM * PN], c1[PM * PN];
        for (int i = 0; i < PM * PK; i++)
            a[i] = (int8_t)(i % 7 == 3 ? -127 : 127 - i % 5);
        for (int i = 0; i < PN * PK; i++)
            b[i] = (int8_t)(i % 11 == 4 ? -127 : 127 - i % 3);
        gemm_ref(PM, PN, PK, a, PK, b, PK, c0, PN);
        avail[MPD_GEMM_I8_DNNL] = gemm_dnnl(PM, PN, PK, a, PK, b, PK, c1, PN) &&
                                  memcmp(c0, c1, sizeof(c0)) == 0;
    }
#endif
    /* Fastest exact one: oneDNN where it has VNNI/AMX (the AVX2 kernel has
     * neither), else the hand kernels. */
    if (avail[MPD_GEMM_I8_DNNL])
        best = MPD_GEMM_I8_DNNL;
    else if (avail[MPD_GEMM_I8_AVX2])
        best = MPD_GEMM_I8_AVX2;
    else if (avail[MPD_GEMM_I8_NEON])
        best = MPD_GEMM_I8_NEON;
    else
        best = MPD_GEMM_I8_REF;
}

mpd_gemm_i8_impl mpd__gemm_i8_best(void)
{
    pthread_once(&avail_once, avail_init);
    return best;
}

int mpd__gemm_i8_available(mpd_gemm_i8_impl impl)
{
    pthread_once(&avail_once, avail_init);
    return (int)impl >= 0 && (int)impl < MPD_GEMM_I8_AUTO ? avail[impl] : impl == MPD_GEMM_I8_AUTO;
}

const char *mpd__gemm_i8_name(mpd_gemm_i8_impl impl)
{
    switch (impl) {
    case MPD_GEMM_I8_REF: return "ref";
    case MPD_GEMM_I8_AVX2: return "avx2";
    case MPD_GEMM_I8_DNNL: return "onednn";
    case MPD_GEMM_I8_NEON: return "neon";
    case MPD_GEMM_I8_AUTO: return "auto";
    }
    return "?";
}

void mpd__gemm_i8(mpd_gemm_i8_impl impl, int M, int N, int K, const int8_t *A, int lda,
                  const int8_t *Bt, int ldb, int32_t *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        for (int m = 0; m < M; m++)
            memset(C + (size_t)m * ldc, 0, (size_t)N * sizeof(int32_t));
        return;
    }
    pthread_once(&avail_once, avail_init);
#ifdef MPD_GEMM_DNNL
    /* Runs oneDNN even where it is not exact (see the header). */
    if (impl == MPD_GEMM_I8_DNNL && gemm_dnnl(M, N, K, A, lda, Bt, ldb, C, ldc))
        return;
#endif
    if ((int)impl < 0 || (int)impl >= MPD_GEMM_I8_AUTO || !avail[impl])
        impl = best;
    switch (impl) {
#ifdef MPD_GEMM_X86
    case MPD_GEMM_I8_AVX2:
        gemm_avx2(M, N, K, A, lda, Bt, ldb, C, ldc);
        return;
#endif
#ifdef MPD_GEMM_NEON
    case MPD_GEMM_I8_NEON:
        gemm_neon(M, N, K, A, lda, Bt, ldb, C, ldc);
        return;
#endif
#ifdef MPD_GEMM_DNNL
    case MPD_GEMM_I8_DNNL:
        if (gemm_dnnl(M, N, K, A, lda, Bt, ldb, C, ldc))
            return;
        break;
#endif
    default:
        break;
    }
    gemm_ref(M, N, K, A, lda, Bt, ldb, C, ldc);
}
