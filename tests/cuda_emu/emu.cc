/* emu.cc - the host implementation of the emulated CUDA runtime and cuBLAS
 * (see cuda_runtime_api.h): one "device", memory from malloc, synchronous
 * copies, kernels run block by block with their threads as fibers.
 * Purpose: run the CUDA backend's host logic and its kernels' index
 * arithmetic in CI, where there is no GPU. It says nothing about speed and
 * cannot catch what only hardware shows (races between blocks, memory
 * ordering, real rounding of fused fp32 operations; half arithmetic is
 * rounded as the hardware rounds it, see cuda_fp16.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <vector>

#include "../../host/half.h"
#include "cublas_v2.h"
#include "cuda_runtime.h"

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

static thread_local cudaError_t last_error = cudaSuccess;
static std::map<void *, size_t> allocations;
static size_t allocated, memory_limit;

/* ---- fibers ----------------------------------------------------------- */

namespace
{
const size_t STACK = 64 * 1024;
struct fiber {
    ucontext_t ctx;
    std::vector<char> stack;
    bool done, at_barrier;
    uint3 tid;
};
std::vector<fiber> *fibers;
/* Threads of a block that never reaches a barrier run as plain calls. */
bool direct;
ucontext_t sched;
int current;
const std::function<void()> *body;

void trampoline()
{
    (*body)();
    (*fibers)[current].done = true;
    /* uc_link returns to the scheduler */
}
} // namespace

void __syncthreads(void)
{
    if (direct) {
        fprintf(stderr, "cuda emulation: a kernel reached __syncthreads in a later block but "
                        "not in its first\n");
        abort();
    }
    fiber &f = (*fibers)[current];
    f.at_barrier = true;
    swapcontext(&f.ctx, &sched);
}

/* swapcontext is declared returns_twice, like setjmp; but the scheduler's
 * registers come back exactly as saved, so its locals are not clobbered. */
#pragma GCC diagnostic ignored "-Wclobbered"
int mpd_emu::run(dim3 grid, dim3 block, const std::function<void()> &fn)
{
    /* One launch at a time in the whole process: the built-in indices and
     * the scheduler are globals. */
    static std::mutex launch_mu;
    std::lock_guard<std::mutex> lock(launch_mu);
    unsigned nt = block.x * block.y * block.z;
    if (nt == 0 || nt > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
        grid.z > 65535) {
        last_error = cudaErrorInvalidConfiguration;
        return last_error;
    }
    std::vector<fiber> fs(nt);
    for (auto &f : fs)
        f.stack.resize(STACK);
    fibers = &fs;
    body = &fn;
    gridDim = grid;
    blockDim = block;
    bool barriers = false; /* seen in the first block */
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                blockIdx = {bx, by, bz};
                if ((bx | by | bz) && !barriers) {
                    /* The first block never waited: the threads are
                     * independent, and run one after another. */
                    direct = true;
                    for (unsigned t = 0; t < nt; t++) {
                        threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                        fn();
                    }
                    direct = false;
                    continue;
                }
                for (unsigned t = 0; t < nt; t++) {
                    fiber &f = fs[t];
                    f.done = f.at_barrier = false;
                    f.tid = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = f.stack.data();
                    f.ctx.uc_stack.ss_size = STACK;
                    f.ctx.uc_link = &sched;
                    makecontext(&f.ctx, trampoline, 0);
                }
                for (;;) {
                    unsigned done = 0, waiting = 0;
                    for (unsigned t = 0; t < nt; t++) {
                        fiber &f = fs[t];
                        if (f.done)
                            continue;
                        f.at_barrier = false;
                        current = (int)t;
                        threadIdx = f.tid;
                        swapcontext(&sched, &f.ctx);
                    }
                    for (unsigned t = 0; t < nt; t++) {
                        done += fs[t].done;
                        waiting += fs[t].at_barrier && !fs[t].done;
                    }
                    barriers |= waiting > 0;
                    if (done == nt)
                        break;
                    if (done + waiting == nt && done > 0) {
                        /* Some threads left while others wait at a barrier:
                         * undefined on a GPU, an error here. */
                        fprintf(stderr, "cuda emulation: __syncthreads not reached by every "
                                        "thread of a block\n");
                        last_error = cudaErrorLaunchFailure;
                        return last_error;
                    }
                }
            }
    fibers = nullptr;
    return cudaSuccess;
}

/* ---- runtime ---------------------------------------------------------- */

extern "C" {

const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorStreamCaptureUnsupported: return "stream capture is not emulated";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    default: return "invalid argument";
    }
}
const char *cudaGetErrorName(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorStreamCaptureUnsupported: return "cudaErrorStreamCaptureUnsupported";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorInvalidValue";
    }
}
cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d)
{
    return d == 0 ? cudaSuccess : cudaErrorInvalidValue;
}
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d)
{
    if (d != 0)
        return cudaErrorInvalidValue;
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof(p->name), "emulated CUDA device (host)");
    /* 8.0 unless MPDET_EMU_CC says otherwise (e.g. 75, 53): dp4a and fp16
     * and bf16 tensor ops all "present", so the default paths are taken;
     * the variants are selected through the environment. */
    const char *cc = getenv("MPDET_EMU_CC");
    int v = cc && *cc ? atoi(cc) : 80;
    if (v < 10 || v > 199)
        v = 80;
    p->major = v / 10;
    p->minor = v % 10;
    p->multiProcessorCount = 1;
    p->totalGlobalMem = (size_t)1 << 32;
    return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void)
{
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    *total_bytes = (size_t)1 << 32;
    *free_bytes = *total_bytes - allocated;
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    (void)flags;
    *s = (cudaStream_t)malloc(1);
    return *s ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    free(s);
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    (void)s;
    return cudaSuccess;
}
static int half_arith = -1; /* -1: from the environment */
int mpd_emu_half_arith(void)
{
    if (half_arith < 0) {
        const char *v = getenv("MPDET_EMU_HALF_ARITH");
        return !(v && strcmp(v, "0") == 0);
    }
    return half_arith;
}
void mpd_emu_set_half_arith(int on)
{
    half_arith = on < 0 ? -1 : on != 0;
}
void mpd_emu_set_memory_limit(size_t limit)
{
    memory_limit = limit;
}
cudaError_t cudaMalloc(void **p, size_t n)
{
    *p = NULL;
    if (memory_limit && allocated + n > memory_limit)
        return cudaErrorMemoryAllocation;
    /* Poisoned, so a kernel that reads what nobody wrote differs from
     * the CPU backend instead of passing by luck. */
    *p = malloc(n ? n : 1);
    if (!*p)
        return cudaErrorMemoryAllocation;
    memset(*p, 0xa5, n);
    allocations[*p] = n;
    allocated += n;
    return cudaSuccess;
}
cudaError_t cudaFree(void *p)
{
    if (!p)
        return cudaSuccess;
    auto it = allocations.find(p);
    if (it == allocations.end())
        return cudaErrorInvalidValue;
    allocated -= it->second;
    allocations.erase(it);
    free(p);
    return cudaSuccess;
}
size_t mpd_emu_device_bytes(void)
{
    return allocated;
}
cudaError_t cudaMallocHost(void **p, size_t n)
{
    *p = malloc(n ? n : 1);
    return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFreeHost(void *p)
{
    free(p);
    return cudaSuccess;
}
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k)
{
    (void)k;
    memmove(dst, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s)
{
    (void)s;
    return cudaMemcpy(dst, src, n, k);
}
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind k, cudaStream_t s)
{
    (void)k;
    (void)s;
    if (width > dpitch || width > spitch)
        return cudaErrorInvalidValue;
    for (size_t r = 0; r < height; r++)
        memmove((char *)dst + r * dpitch, (const char *)src + r * spitch, width);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    (void)s;
    memset(p, v, n);
    return cudaSuccess;
}
struct CUevent_st {
    double t;
};
cudaError_t cudaEventCreate(cudaEvent_t *e)
{
    *e = (cudaEvent_t)calloc(1, sizeof(CUevent_st));
    return *e ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    free(e);
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    (void)s;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    e->t = ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
    return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
    *ms = (float)(b->t - a->t);
    return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode)
{
    (void)s;
    (void)mode;
    return cudaErrorStreamCaptureUnsupported;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    (void)s;
    *g = NULL;
    return cudaErrorStreamCaptureUnsupported;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, void *node, char *log,
                                 size_t len)
{
    (void)g;
    (void)node;
    (void)log;
    (void)len;
    *e = NULL;
    return cudaErrorStreamCaptureUnsupported;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g)
{
    (void)g;
    return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e)
{
    (void)e;
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s)
{
    (void)e;
    (void)s;
    return cudaErrorInvalidValue;
}

/* ---- cuBLAS ----------------------------------------------------------- */

struct cublasContext {
    int math;
};
cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    *h = (cublasHandle_t)calloc(1, sizeof(cublasContext));
    return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    (void)h;
    (void)s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m)
{
    h->math = (int)m;
    return CUBLAS_STATUS_SUCCESS;
}

static float elem(const void *p, cudaDataType t, size_t i)
{
    switch (t) {
    case CUDA_R_16F: return mpd_f16_to_f32(((const uint16_t *)p)[i]);
#ifdef MPD_EMU_HAS_BF16
    case CUDA_R_16BF: return mpd_bf16_to_f32(((const uint16_t *)p)[i]);
#endif
    default: return ((const float *)p)[i];
    }
}

/* Column-major C = alpha op(A) op(B) + beta C, per batch entry; only the
 * non-transposed case (the one the backend uses). Operands (fp32, half or
 * bf16) are widened to fp32 first; each output sums its k products in
 * order, in fp32 rounded to nearest (a product of two halves or two bf16
 * values is exact in fp32). */
static cublasStatus_t gemm(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                           float alpha, const void *a, cudaDataType at, int lda, long long sa,
                           const void *b, cudaDataType bt, int ldb, long long sb, float beta,
                           void *c, cudaDataType ct, int ldc, long long sc, int batch)
{
    if (ta != CUBLAS_OP_N || tb != CUBLAS_OP_N || m < 0 || n < 0 || k < 0 || lda < m || ldb < k ||
        ldc < m || batch < 0)
        return CUBLAS_STATUS_INVALID_VALUE;
    std::vector<float> A((size_t)k * m), B((size_t)n * k), C((size_t)m);
    for (int e = 0; e < batch; e++) {
        for (int p = 0; p < k; p++)
            for (int i = 0; i < m; i++)
                A[(size_t)p * m + i] = elem(a, at, (size_t)e * sa + (size_t)p * lda + i);
        for (int j = 0; j < n; j++)
            for (int p = 0; p < k; p++)
                B[(size_t)j * k + p] = elem(b, bt, (size_t)e * sb + (size_t)j * ldb + p);
        for (int j = 0; j < n; j++) {
            std::fill(C.begin(), C.end(), 0.f);
            for (int p = 0; p < k; p++) {
                const float bv = B[(size_t)j * k + p], *ap = &A[(size_t)p * m];
                for (int i = 0; i < m; i++)
                    C[i] += ap[i] * bv;
            }
            for (int i = 0; i < m; i++) {
                size_t at_c = (size_t)e * sc + (size_t)j * ldc + i;
                float old = beta != 0.f ? elem(c, ct, at_c) : 0.f;
                float v = alpha * C[i] + beta * old;
                if (ct == CUDA_R_16F)
                    ((uint16_t *)c)[at_c] = mpd_f32_to_f16(v);
#ifdef MPD_EMU_HAS_BF16
                else if (ct == CUDA_R_16BF)
                    ((uint16_t *)c)[at_c] = mpd_f32_to_bf16(v);
#endif
                else
                    ((float *)c)[at_c] = v;
            }
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}

/* int8 x int8 -> int32 (compute type CUDA_R_32I, cuBLAS 10.2's name for
 * it), either operand transposed; exact. */
static cublasStatus_t gemm_i8(cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                              int32_t alpha, const int8_t *a, int lda, long long sa,
                              const int8_t *b, cudaDataType bt, int ldb, long long sb, int32_t beta,
                              int32_t *c, cudaDataType ct, int ldc, long long sc, int batch,
                              cudaDataType compute)
{
    if (bt != CUDA_R_8I || ct != CUDA_R_32I || compute != CUDA_R_32I)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (m < 0 || n < 0 || k < 0 || batch < 0 || ldc < m || lda < (ta == CUBLAS_OP_N ? m : k) ||
        ldb < (tb == CUBLAS_OP_N ? k : n))
        return CUBLAS_STATUS_INVALID_VALUE;
    for (int e = 0; e < batch; e++)
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                int32_t s = 0;
                for (int p = 0; p < k; p++) {
                    int32_t x = ta == CUBLAS_OP_N ? a[e * sa + (size_t)p * lda + i]
                                                  : a[e * sa + (size_t)i * lda + p];
                    int32_t y = tb == CUBLAS_OP_N ? b[e * sb + (size_t)j * ldb + p]
                                                  : b[e * sb + (size_t)p * ldb + j];
                    s += x * y;
                }
                int32_t *d = c + e * sc + (size_t)j * ldc + i;
                *d = alpha * s + (beta ? beta * *d : 0);
            }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *a, int lda, long long sa,
                                         const float *b, int ldb, long long sb, const float *beta,
                                         float *c, int ldc, long long sc, int batch)
{
    (void)h;
    return gemm(ta, tb, m, n, k, *alpha, a, CUDA_R_32F, lda, sa, b, CUDA_R_32F, ldb, sb, *beta, c,
                CUDA_R_32F, ldc, sc, batch);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *a, cudaDataType at,
                                          int lda, long long sa, const void *b, cudaDataType bt,
                                          int ldb, long long sb, const void *beta, void *c,
                                          cudaDataType ct, int ldc, long long sc, int batch,
                                          cudaDataType compute, cublasGemmAlgo_t algo)
{
    (void)h;
    (void)algo;
    if (at == CUDA_R_8I)
        return gemm_i8(ta, tb, m, n, k, *(const int32_t *)alpha, (const int8_t *)a, lda, sa,
                       (const int8_t *)b, bt, ldb, sb, *(const int32_t *)beta, (int32_t *)c, ct,
                       ldc, sc, batch, compute);
    if (compute != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    return gemm(ta, tb, m, n, k, *(const float *)alpha, a, at, lda, sa, b, bt, ldb, sb,
                *(const float *)beta, c, ct, ldc, sc, batch);
}

} /* extern "C" */
