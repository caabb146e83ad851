/* cuda_runtime_api.h (emulation) - the part of the CUDA runtime API that
 * cuda/cuda_backend.c uses, implemented on the host by emu.cc, so that the
 * CUDA backend's logic and kernels run on machines without a GPU (CI).
 * Not NVIDIA's header: our own declarations of the documented API, limited
 * to what we call. It declares CUDART_VERSION 10020, the oldest toolkit we
 * support, so the CUDA 10.2 code paths compile and run here.
 *
 * "Device" memory is host memory; every call completes before it returns;
 * stream capture is refused (the backend then runs passes eagerly). The
 * device reports compute capability 8.0, or MPDET_EMU_CC (e.g. 75 for
 * 7.5) when set: the backend picks its default kernels by it. */
#ifndef MPD_EMU_CUDA_RUNTIME_API_H
#define MPD_EMU_CUDA_RUNTIME_API_H

#include <stddef.h>

#define CUDART_VERSION 10020
#define MPD_CUDA_EMULATED 1

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorNoDevice = 100,
    cudaErrorLaunchFailure = 719,
    cudaErrorStreamCaptureUnsupported = 900,
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef enum cudaStreamCaptureMode {
    cudaStreamCaptureModeGlobal = 0,
    cudaStreamCaptureModeThreadLocal = 1,
    cudaStreamCaptureModeRelaxed = 2,
} cudaStreamCaptureMode;

#define cudaStreamNonBlocking 0x01

typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
typedef struct CUgraph_st *cudaGraph_t;
typedef struct CUgraphExec_st *cudaGraphExec_t;

struct cudaDeviceProp {
    char name[256];
    int major, minor;
    int multiProcessorCount;
    size_t totalGlobalMem;
};

const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetDeviceProperties(struct cudaDeviceProp *p, int d);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);

cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaMallocHost(void **p, size_t n);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind k);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaMemcpy2DAsync(void *dst, size_t dpitch, const void *src, size_t spitch,
                              size_t width, size_t height, cudaMemcpyKind k, cudaStream_t s);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);

cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b);

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *e, cudaGraph_t g, void *node, char *log,
                                 size_t len);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t e);
cudaError_t cudaGraphLaunch(cudaGraphExec_t e, cudaStream_t s);

/* Emulation only: bytes currently allocated with cudaMalloc (tests check
 * that destroying a backend frees everything). */
size_t mpd_emu_device_bytes(void);
/* Emulation only: cudaMalloc fails (cudaErrorMemoryAllocation) once the
 * bytes allocated would exceed limit; 0 = no limit. */
void mpd_emu_set_memory_limit(size_t limit);
/* Emulation only: which arithmetic the half2 GEMM (cuda/gemm_f16.cu)
 * emulates - 1: half (__hfma2, as compiled for sm_53, sm_62, sm_72,
 * sm_87), 0: fp32 (every other architecture). The default is half, the
 * Jetson Nano's, unless MPDET_EMU_HALF_ARITH=0 is in the environment;
 * mpd_emu_set_half_arith overrides both (tests), -1 restores the default. */
int mpd_emu_half_arith(void);
void mpd_emu_set_half_arith(int on);

#ifdef __cplusplus
}
#endif
#endif
