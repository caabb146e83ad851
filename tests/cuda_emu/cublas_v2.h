/* cublas_v2.h (emulation) - the cuBLAS calls cuda/cuda_backend.c makes,
 * computed on the host by emu.cc with plain loops (fp32 accumulation), as
 * cuBLAS 10.2 declares them. Our own declarations of the documented API.
 *
 * One addition from CUDA 11: bf16 operands (CUDA_R_16BF) in GemmEx, so
 * that the backend's bf16 cuBLAS path, guarded by CUDA 11 on a real
 * toolkit, runs here too (MPD_EMU_HAS_BF16). -DMPD_EMU_NO_BF16 leaves it
 * out: the plain CUDA 10.2 API, to check that such a build compiles. */
#ifndef MPD_EMU_CUBLAS_V2_H
#define MPD_EMU_CUBLAS_V2_H

#include "cuda_runtime_api.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cublasContext *cublasHandle_t;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUBLAS_DEFAULT_MATH = 0, CUBLAS_TENSOR_OP_MATH = 1 } cublasMath_t;
typedef enum cudaDataType_t {
    CUDA_R_32F = 0,
    CUDA_R_16F = 2,
    CUDA_R_8I = 3,
    CUDA_R_32I = 10,
#ifndef MPD_EMU_NO_BF16
    CUDA_R_16BF = 14,
#endif
} cudaDataType_t;
#ifndef MPD_EMU_NO_BF16
#define MPD_EMU_HAS_BF16 1
#endif
typedef cudaDataType_t cudaDataType;
typedef enum { CUBLAS_GEMM_DEFAULT = -1, CUBLAS_GEMM_DEFAULT_TENSOR_OP = 99 } cublasGemmAlgo_t;

cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t m);
cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *a, int lda, long long sa,
                                         const float *b, int ldb, long long sb, const float *beta,
                                         float *c, int ldc, long long sc, int batch);
cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *a, cudaDataType at,
                                          int lda, long long sa, const void *b, cudaDataType bt,
                                          int ldb, long long sb, const void *beta, void *c,
                                          cudaDataType ct, int ldc, long long sc, int batch,
                                          cudaDataType compute, cublasGemmAlgo_t algo);

#ifdef __cplusplus
}
#endif
#endif
