/* The CUDA backend: host/backend.h on one GPU, over the kernels of
 * cuda/kernels.h and cuBLAS. Host C; the device code is in the .cu files.
 *
 * Memory: at create, every buffer a pass needs - the network input, one
 * output per layer (sized for fp32, used by whatever type the plan stores),
 * the im2col workspace, quantization scratch - is allocated once for
 * max_batch images; the fp32 weights and biases are uploaded once. A plan
 * derives its int8, half and bf16 weights on the device from those fp32
 * copies (no file read, no host round trip) and frees them when it is
 * destroyed.
 *
 * Sharing: clones (one context per worker thread) have activation
 * buffers, input staging, a stream, a cuBLAS handle and graphs of their
 * own, and use their origin's fp32 weights and GEMM workspaces (im2col,
 * accumulators, quantization scratch, cuBLAS's workspace). A pass, a
 * layer run alone and a read or write of an output hold the origin's
 * device lock from their first kernel until the stream has finished
 * them: the device runs the passes of a model's engines one after the
 * other, as it would run them anyway once one pass fills it, and the
 * workspaces exist once per model. What runs in parallel is the host
 * side: decoding, uploads, postprocessing. A plan state holds only
 * read-only device data (the derived weights), so one runs on every clone.
 * With reuse_buffers, layer outputs share buffers by liveness
 * (mpd__buffer_plan), as on the CPU.
 *
 * Execution: one stream. A whole pass (the forward op) is captured once per
 * plan and batch size into a CUDA graph (kept by the context that ran it)
 * and replayed; per-layer times come
 * from events recorded between the layers. Tensor types follow
 * mpd__plan_tensor_types, as on the CPU, so both backends compute the same
 * thing in the same precision.
 *
 * Errors: every CUDA and cuBLAS call is checked (CU / BL below) and comes
 * back as MPD_EDEVICE (MPD_ENOMEM for device memory) with the call, file
 * and line; nothing here aborts.
 *
 * Nothing newer than CUDA 10.2 is needed; newer APIs (cuBLAS workspace,
 * external event records inside graphs, cuBLAS's bf16 GEMM) are used under
 * version checks. */
#define _GNU_SOURCE /* dlopen's RTLD_* under -std=c11 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "../host/image.h"
#include "../host/plan.h"
#include "cuda_backend.h"
#include "kernels.h"

/* Bytes of im2col workspace a layer may use at once; batches beyond it run
 * in chunks of images. MPDET_CUDA_WORKSPACE_MB overrides. */
#define WORKSPACE_DEFAULT_MB 256
#define MAX_GRAPHS 16
/* Image staging (pinned host and device) allocated at open: one 1920x1080
 * RGB image. Batches that need more grow it, and it stays grown up to one
 * 3840x2160 image per batch slot, what a steady stream of camera frames
 * reuses; staging grown beyond that serves its call and is then freed, so
 * one huge image does not pin host and device memory for the engine's
 * life (the next call allocates what it needs again). */
#define RGB_STAGING ((size_t)1920 * 1080 * 3)
#define RGB_STAGING_KEEP ((size_t)3840 * 2160 * 3)

/* ---- cuBLAS, loaded when first needed --------------------------------- */

/* libcublas is loaded with dlopen when the first CUDA backend is created,
 * not linked: merely mapping it costs over 200 MB of resident memory, which
 * every CPU-only run of a CUDA-enabled build would pay (the one-shot CLI
 * target is 100 MB). The CUDA runtime itself is small and stays linked. */
#define XSTR(x) STR(x)
#define STR(x) #x
/* The cublas_v2.h names are macros for the _v2 symbols: XSTR expands them. */
#define BLAS_FNS(X)                                                                                \
    X(cublasCreate)                                                                                \
    X(cublasDestroy)                                                                               \
    X(cublasSetStream) X(cublasSgemmStridedBatched) X(cublasGemmStridedBatchedEx) BLAS_MATH(X)     \
        BLAS_WS(X)
#if CUDART_VERSION < 11000
#define BLAS_MATH(X) X(cublasSetMathMode)
#else
#define BLAS_MATH(X)
#endif
#if defined(CUBLAS_VER_MAJOR) && CUBLAS_VER_MAJOR >= 12
#define BLAS_WS(X) X(cublasSetWorkspace)
#else
#define BLAS_WS(X)
#endif

static struct {
#define FIELD(f) __typeof__(&f) f;
    BLAS_FNS(FIELD)
#undef FIELD
} blas;
static pthread_once_t blas_once = PTHREAD_ONCE_INIT;
static char blas_error[300];

static void load_blas(void)
{
#ifdef MPD_CUDA_EMU
    /* The emulation's cuBLAS is linked in. */
#define BIND(f) blas.f = &f;
    BLAS_FNS(BIND)
#undef BIND
#else
#ifdef CUBLAS_VER_MAJOR
    const char *names[] = {"libcublas.so." XSTR(CUBLAS_VER_MAJOR), "libcublas.so"};
#else
    const char *names[] = {"libcublas.so"};
#endif
    void *h = NULL;
    for (size_t i = 0; !h && i < sizeof(names) / sizeof(names[0]); i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        snprintf(blas_error, sizeof(blas_error), "cuBLAS could not be loaded: %s", dlerror());
        return;
    }
#define BIND(f)                                                                                    \
    if (!(*(void **)&blas.f = dlsym(h, XSTR(f)))) {                                                \
        snprintf(blas_error, sizeof(blas_error), "cuBLAS has no %s", XSTR(f));                     \
        return;                                                                                    \
    }
    BLAS_FNS(BIND)
#undef BIND
#endif
}

/* 0, or MPD_EUNSUP with why cuBLAS is unusable. */
int mpd__cuda_blas_ready(char *msg, size_t msglen)
{
    pthread_once(&blas_once, load_blas);
    return blas_error[0] ? mpd__fail(msg, msglen, MPD_EUNSUP, "cuda backend: %s", blas_error) : 0;
}

/* GemmEx's compute types and default algorithm: enums of their own from
 * CUDA 11 on; in 10.2 data types, with tensor ops asked for by algorithm. */
#if CUDART_VERSION >= 11000
#define COMPUTE_32F CUBLAS_COMPUTE_32F
#define COMPUTE_32I CUBLAS_COMPUTE_32I
#define GEMM_ALGO CUBLAS_GEMM_DEFAULT
#else
#define COMPUTE_32F CUDA_R_32F
#define COMPUTE_32I CUDA_R_32I
#define GEMM_ALGO CUBLAS_GEMM_DEFAULT_TENSOR_OP
#endif

/* cuBLAS's bf16 GEMM: CUDA_R_16BF exists from CUDA 11 on. The test
 * emulation, which otherwise declares CUDA 10.2, has it too
 * (MPD_EMU_HAS_BF16), so that both bf16 paths run in every test run; built
 * with -DMPD_EMU_NO_BF16 it checks that a CUDA 10.2 build (the original
 * Jetson Nano's) names no bf16 cuBLAS type. Without it bf16 convolutions
 * run on our kernel (mpd_cu_gemm_bf16). */
#if CUDART_VERSION >= 11000 || defined(MPD_EMU_HAS_BF16)
#define HAVE_BF16_BLAS 1
#else
#define HAVE_BF16_BLAS 0
#endif

/* ---- errors ----------------------------------------------------------- */

static int cu_check(cudaError_t e, const char *call, const char *file, int line, char *msg,
                    size_t msglen)
{
    if (e == cudaSuccess)
        return 0;
    if (e == cudaErrorMemoryAllocation)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "cuda: out of device memory in %s (%s:%d)", call,
                         file, line);
    return mpd__fail(msg, msglen, MPD_EDEVICE, "cuda: %s failed at %s:%d: %s (%s)", call, file,
                     line, cudaGetErrorString(e), cudaGetErrorName(e));
}

static const char *blas_status(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
    }
}

static int bl_check(cublasStatus_t s, const char *call, const char *file, int line, char *msg,
                    size_t msglen)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return 0;
    return mpd__fail(msg, msglen, s == CUBLAS_STATUS_ALLOC_FAILED ? MPD_ENOMEM : MPD_EDEVICE,
                     "cublas: %s failed at %s:%d: %s (%d)", call, file, line, blas_status(s),
                     (int)s);
}

/* Both need msg and msglen in scope. */
#define CU(call) cu_check((call), #call, __FILE__, __LINE__, msg, msglen)
#define BL(call) bl_check((call), #call, __FILE__, __LINE__, msg, msglen)
/* A launcher of kernels.h returns a cudaError_t. */
#define KL(call) cu_check((cudaError_t)(call), #call, __FILE__, __LINE__, msg, msglen)

/* ---- state ------------------------------------------------------------ */

typedef struct {
    unsigned long plan; /* the cu_plan's id */
    int batch, timed;
    cudaGraphExec_t exec;
} graph_entry;

typedef struct {
    mpd_plan *plan;         /* copy */
    mpd_tensor_type *type;  /* per layer output */
    mpd_qparams *oq;        /* per layer output (host copy), int8 outputs */
    mpd_qparams *d_oq;      /* device: per layer output parameters (int8 outputs) */
    mpd_qparams *d_xs;      /* device: per layer static input parameters (int8 convs) */
    int8_t **w8;            /* device, per int8 conv: m x kp */
    float **w8_scale;       /* device, per int8 conv: m */
    int32_t **w8_sum;       /* device, per int8 conv: m */
    int32_t *d_wzero;       /* device, per layer: affine weight zero point */
    uint16_t **w16;         /* device, per fp16 / bf16 conv: m x k half or bf16 (mpd_half,
                               mpd_bf16) by the layer's precision */
    unsigned char *i8_blas; /* per int8 conv: 1 = cuBLAS's int8 GEMM, checked exact */
    size_t bytes;           /* device memory held */
    unsigned long id;       /* unique in the process: names its graphs */
} cu_plan;

typedef struct cu_ctx {
    const mpd_net *net; /* borrowed */
    mpd_backend_config cfg;
    int owns_weights; /* 0 in a clone: w and bias are its origin's */
    struct cu_ctx *origin; /* a clone's: whose weights and workspaces it uses */
    pthread_mutex_t dev_mu; /* the origin's: held while the shared workspaces are in use */
    pthread_mutex_t *mu;    /* &origin->dev_mu, or its own */
    int max_batch, device, cc_major, cc_minor, sms;
    char name[256];
    mpd_log_fn log;
    void *log_ud;
    /* Variants (see cuda_backend.h). */
    int use_dp4a, i8_cublas, f16_cublas, bf16_cublas, use_graphs;
    cudaStream_t st, plan_st; /* passes; plan derivation */
    cublasHandle_t blas;      /* passes, on st */
    cublasHandle_t plan_blas; /* plan derivation, on plan_st (maybe another thread) */
    void *blas_ws;
    float **w, **bias; /* device, per conv layer */
    float *input;      /* device: max_batch x net input */
    mpd_buffer_plan bp;
    void **buf;        /* device: bp.nbufs activation buffers, fp32-sized */
    void **out;        /* per layer: its buffer (buf[bp.of[i]]) */
    void *col;         /* device: im2col / im2row workspace */
    int *chunk; /* per layer: images per GEMM chunk */
    float *acc; /* device: fp32 accumulators of half and bf16 outputs, chunked */
    size_t acc_floats;
    int8_t *x8;                   /* device: a layer input quantized, max_batch images */
    int32_t *xsum;                /* device: affine row sums, chunk x npix */
    uint32_t *range;              /* device: per layer x max_batch: 2 words */
    mpd_qparams *xq;              /* device: per layer x max_batch measured parameters */
    uint32_t *wscratch;           /* device: 2 words for plan-time ranges */
    float *scratch;               /* device: one image's largest output as fp32 */
    float *h_in;                  /* pinned: max_batch x net input */
    unsigned char *h_rgb, *d_rgb; /* staging for images, grown on demand */
    size_t rgb_cap;
    cudaEvent_t *ev; /* n + 1 */
    graph_entry graphs[MAX_GRAPHS];
    int ngraphs, graphs_broken;
    size_t max_in, max_out;
    size_t bytes;  /* device memory of this context's own */
    size_t wbytes; /* the fp32 weights' (shared with clones) */
} cu_ctx;

/* The device lock (see the top of the file). */
static void dev_lock(cu_ctx *c)
{
    pthread_mutex_lock(c->mu);
}
static void dev_unlock(cu_ctx *c)
{
    pthread_mutex_unlock(c->mu);
}

static size_t maxz(size_t a, size_t b)
{
    return a > b ? a : b;
}

/* Device allocation of n bytes into lvalue p, counted in *acct; out of
 * memory names what was being allocated. msg and msglen in scope. */
#define DALLOC(p, n, acct) dalloc((void **)&(p), (n), (acct), #p, __FILE__, __LINE__, msg, msglen)

static int dalloc(void **p, size_t n, size_t *acct, const char *what, const char *file, int line,
                  char *msg, size_t msglen)
{
    *p = NULL;
    if (n == 0)
        return 0;
    cudaError_t e = cudaMalloc(p, n);
    if (e == cudaErrorMemoryAllocation) {
        (void)cudaGetLastError();
        return mpd__fail(msg, msglen, MPD_ENOMEM,
                         "cuda: out of device memory for %s (%.1f MiB, %s:%d)", what,
                         (double)n / (1 << 20), file, line);
    }
    if (e != cudaSuccess)
        return cu_check(e, "cudaMalloc", file, line, msg, msglen);
    *acct += n;
    return 0;
}

static const char *env_or(const char *name, const char *dflt)
{
    const char *v = getenv(name);
    return v && *v ? v : dflt;
}

int mpd__cuda_device_count(char *why, size_t whylen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n < 1) {
        if (why && whylen)
            snprintf(why, whylen, "no CUDA device (%s)",
                     e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        (void)cudaGetLastError(); /* not sticky; clear it */
        return 0;
    }
    return n;
}

/* ---- create / destroy ------------------------------------------------- */

static void cu_destroy(void *p)
{
    cu_ctx *c = p;
    if (!c)
        return;
    cudaSetDevice(c->device);
    if (c->st)
        cudaStreamSynchronize(c->st);
    for (int g = 0; g < c->ngraphs; g++)
        cudaGraphExecDestroy(c->graphs[g].exec);
    for (int i = 0; c->owns_weights && c->w && i < c->net->n; i++) {
        cudaFree(c->w[i]);
        cudaFree(c->bias[i]);
    }
    for (int b = 0; c->buf && b < c->bp.nbufs; b++)
        cudaFree(c->buf[b]);
    free(c->buf);
    mpd__buffer_plan_free(&c->bp);
    for (int i = 0; c->ev && i <= c->net->n; i++)
        if (c->ev[i])
            cudaEventDestroy(c->ev[i]);
    free(c->w);
    free(c->bias);
    free(c->out);
    free(c->ev);
    free(c->chunk);
    cudaFree(c->input);
    if (!c->origin) {
        cudaFree(c->col);
        cudaFree(c->acc);
        cudaFree(c->x8);
        cudaFree(c->xsum);
        cudaFree(c->range);
        cudaFree(c->xq);
        cudaFree(c->scratch);
        cudaFree(c->blas_ws);
    }
    cudaFree(c->wscratch);
    cudaFree(c->d_rgb);
    cudaFreeHost(c->h_in);
    cudaFreeHost(c->h_rgb);
    if (c->blas)
        blas.cublasDestroy(c->blas);
    if (c->plan_blas)
        blas.cublasDestroy(c->plan_blas);
    if (c->st)
        cudaStreamDestroy(c->st);
    if (c->plan_st)
        cudaStreamDestroy(c->plan_st);
    if (c->mu == &c->dev_mu)
        pthread_mutex_destroy(&c->dev_mu);
    free(c);
}

/* Per-image sizes of a convolution's GEMM operands. */
static size_t conv_k(const mpd_layer *l)
{
    return (size_t)l->in_c * l->u.conv.size * l->u.conv.size;
}
static size_t conv_npix(const mpd_layer *l)
{
    return (size_t)l->out_h * l->out_w;
}
static size_t round4(size_t k)
{
    return (k + 3) & ~(size_t)3;
}
/* Row stride of int32 accumulators from cuBLAS: a multiple of 4 (16
 * bytes), as its tensor-core int8 kernels want. */
static size_t acc_ld(size_t npix)
{
    return round4(npix);
}
/* Workspace bytes of one image of conv l: the largest of its fp32 column
 * matrix, its half one and its int8 rows. */
static size_t conv_ws_image(const mpd_layer *l)
{
    return maxz(conv_k(l) * conv_npix(l) * sizeof(float), round4(conv_k(l)) * conv_npix(l));
}

/* A context; origin non-NULL: a clone of it (see the top of the file). */
static int create_ctx(const mpd_net *net, const mpd_backend_config *cfg, cu_ctx *origin,
                      void **out, char *msg, size_t msglen)
{
    *out = NULL;
    if (cfg->max_batch < 1)
        return mpd__fail(msg, msglen, MPD_EINVAL, "max_batch must be >= 1");
    char why[256];
    int ndev = mpd__cuda_device_count(why, sizeof(why));
    if (ndev == 0)
        return mpd__fail(msg, msglen, MPD_EUNSUP, "cuda backend: %s", why);
    cu_ctx *c = calloc(1, sizeof(*c));
    if (!c)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    c->net = net;
    c->cfg = *cfg;
    c->owns_weights = !origin;
    c->origin = origin;
    if (origin) {
        c->mu = &origin->dev_mu;
    } else {
        pthread_mutex_init(&c->dev_mu, NULL);
        c->mu = &c->dev_mu;
    }
    c->max_batch = cfg->max_batch;
    c->log = cfg->log;
    c->log_ud = cfg->log_ud;
    c->device = atoi(env_or("MPDET_CUDA_DEVICE", "0"));
    int rc = 0;
    if (c->device < 0 || c->device >= ndev) {
        rc = mpd__fail(msg, msglen, MPD_EINVAL, "cuda backend: device %d of %d", c->device, ndev);
        goto fail;
    }
    struct cudaDeviceProp prop;
    if ((rc = CU(cudaSetDevice(c->device))) || (rc = CU(cudaGetDeviceProperties(&prop, c->device))))
        goto fail;
    snprintf(c->name, sizeof(c->name), "%s", prop.name);
    c->cc_major = prop.major;
    c->cc_minor = prop.minor;
    c->sms = prop.multiProcessorCount;
    int cc = c->cc_major * 10 + c->cc_minor;
    const char *i8 = env_or("MPDET_CUDA_INT8", "auto");
    c->use_dp4a = cc >= 61 && strcmp(i8, "plain") != 0;
    c->i8_cublas = strcmp(i8, "auto") == 0;
    const char *f16 = env_or("MPDET_CUDA_FP16", cc >= 70 ? "cublas" : "half2");
    c->f16_cublas = strcmp(f16, "half2") != 0;
    /* bf16 tensor cores from sm_80 (Ampere); below, or without bf16 in
     * the toolkit's cuBLAS, our kernel computes the same products in fp32
     * (the plan says "emulated"). "cublas" forces cuBLAS on an older
     * device (tests; cuBLAS may refuse it there). */
    const char *bf16 = env_or("MPDET_CUDA_BF16", cc >= 80 ? "cublas" : "kernel");
    c->bf16_cublas = HAVE_BF16_BLAS && strcmp(bf16, "kernel") != 0;
    c->use_graphs = strcmp(env_or("MPDET_CUDA_GRAPHS", "1"), "0") != 0;
    if (origin) { /* the variants its plans were derived and probed for */
        c->use_dp4a = origin->use_dp4a;
        c->i8_cublas = origin->i8_cublas;
        c->f16_cublas = origin->f16_cublas;
        c->bf16_cublas = origin->bf16_cublas;
        c->use_graphs = origin->use_graphs;
    }
    long ws_mb = strtol(env_or("MPDET_CUDA_WORKSPACE_MB", "0"), NULL, 10);
    size_t ws_budget = (size_t)(ws_mb >= 1 && ws_mb <= 1 << 20 ? ws_mb : WORKSPACE_DEFAULT_MB)
                       << 20;

    if ((rc = mpd__cuda_blas_ready(msg, msglen)) ||
        (rc = CU(cudaStreamCreateWithFlags(&c->st, cudaStreamNonBlocking))) ||
        (rc = CU(cudaStreamCreateWithFlags(&c->plan_st, cudaStreamNonBlocking))) ||
        (rc = BL(blas.cublasCreate(&c->blas))) || (rc = BL(blas.cublasSetStream(c->blas, c->st))) ||
        (rc = BL(blas.cublasCreate(&c->plan_blas))) ||
        (rc = BL(blas.cublasSetStream(c->plan_blas, c->plan_st))))
        goto fail;
#if CUDART_VERSION < 11000
    if (cc >= 70 && (rc = BL(blas.cublasSetMathMode(c->blas, CUBLAS_TENSOR_OP_MATH))))
        goto fail;
#endif
#if defined(CUBLAS_VER_MAJOR) && CUBLAS_VER_MAJOR >= 12
    /* A workspace of our own, so cuBLAS never allocates inside a graph
     * capture. */
    {
        size_t wsz = (size_t)(cc >= 90 ? 32 : 4) << 20;
        if (origin)
            c->blas_ws = origin->blas_ws; /* used under the device lock only */
        else if ((rc = DALLOC(c->blas_ws, wsz, &c->bytes)))
            goto fail;
        if ((rc = BL(blas.cublasSetWorkspace(c->blas, c->blas_ws, wsz))))
            goto fail;
    }
#endif

    int n = net->n;
    size_t b = (size_t)c->max_batch, insz = (size_t)net->in_c * net->in_h * net->in_w;
    size_t ws = 0, max_npix = 0;
    c->w = calloc((size_t)n, sizeof(float *));
    c->bias = calloc((size_t)n, sizeof(float *));
    c->out = calloc((size_t)n, sizeof(void *));
    c->ev = calloc((size_t)n + 1, sizeof(cudaEvent_t));
    c->chunk = calloc((size_t)n, sizeof(int));
    if (!c->w || !c->bias || !c->out || !c->ev || !c->chunk ||
        mpd__buffer_plan(net, b * sizeof(float), cfg->reuse_buffers, &c->bp) ||
        !(c->buf = calloc((size_t)c->bp.nbufs, sizeof(void *)))) {
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
        goto fail;
    }
    for (int k = 0; k < c->bp.nbufs; k++)
        if ((rc = DALLOC(c->buf[k], c->bp.bytes[k], &c->bytes)))
            goto fail;
    c->max_in = insz;
    for (int i = 0; i < n; i++) {
        const mpd_layer *l = &net->layers[i];
        c->max_in = maxz(c->max_in, mpd_layer_in_size(l));
        c->max_out = maxz(c->max_out, mpd_layer_out_size(l));
        c->out[i] = c->buf[c->bp.of[i]];
        if (l->kind != MPD_LAYER_CONV)
            continue;
        size_t per = conv_ws_image(l);
        size_t ch = ws_budget / per;
        c->chunk[i] = (int)(ch < 1 ? 1 : ch > b ? b : ch);
        ws = maxz(ws, per * (size_t)c->chunk[i]);
        /* fp32 accumulators of half and bf16 outputs, or int32 ones of cuBLAS's
         * int8 GEMM with rows padded to acc_ld. */
        c->acc_floats =
            maxz(c->acc_floats, (size_t)c->chunk[i] * l->u.conv.filters * acc_ld(conv_npix(l)));
        max_npix = maxz(max_npix, (size_t)c->chunk[i] * conv_npix(l));
    }
    for (int i = 0; i <= n; i++)
        if ((rc = CU(cudaEventCreate(&c->ev[i]))))
            goto fail;
    if (origin) {
        c->col = origin->col;
        c->acc = origin->acc;
        c->x8 = origin->x8;
        c->xsum = origin->xsum;
        c->range = origin->range;
        c->xq = origin->xq;
        c->scratch = origin->scratch;
    } else if ((rc = DALLOC(c->col, ws, &c->bytes)) ||
               (rc = DALLOC(c->acc, c->acc_floats * sizeof(float), &c->bytes)) ||
               (rc = DALLOC(c->x8, b * c->max_in, &c->bytes)) ||
               (rc = DALLOC(c->xsum, max_npix * sizeof(int32_t), &c->bytes)) ||
               (rc = DALLOC(c->range, (size_t)n * b * 2 * sizeof(uint32_t), &c->bytes)) ||
               (rc = DALLOC(c->xq, (size_t)n * b * sizeof(mpd_qparams), &c->bytes)) ||
               (rc = DALLOC(c->wscratch, 2 * sizeof(uint32_t), &c->bytes)) ||
               (rc = DALLOC(c->scratch, c->max_out * sizeof(float), &c->bytes))) {
        goto fail;
    }
    if ((rc = DALLOC(c->input, b * insz * sizeof(float), &c->bytes)) ||
        (rc = CU(cudaMallocHost((void **)&c->h_in, b * insz * sizeof(float)))) ||
        (rc = CU(cudaMallocHost((void **)&c->h_rgb, RGB_STAGING))) ||
        (rc = DALLOC(c->d_rgb, RGB_STAGING, &c->bytes)))
        goto fail;
    c->rgb_cap = RGB_STAGING;
    *out = c;
    return 0;
fail:
    cu_destroy(c);
    return rc;
}

static int cu_create(const mpd_net *net, const mpd_backend_config *cfg, void **out, char *msg,
                     size_t msglen)
{
    return create_ctx(net, cfg, NULL, out, msg, msglen);
}

static int cu_upload(void *p, char *msg, size_t msglen)
{
    cu_ctx *c = p;
    const mpd_net *net = c->net;
    int rc;
    if (!net->weights_loaded)
        return mpd__fail(msg, msglen, MPD_EINVAL, "cuda backend: weights not loaded");
    if ((rc = CU(cudaSetDevice(c->device))))
        return rc;
    for (int i = 0; i < net->n; i++) {
        const mpd_layer *l = &net->layers[i];
        if (l->kind != MPD_LAYER_CONV)
            continue;
        size_t nw = (size_t)l->u.conv.filters * conv_k(l);
        size_t nb = (size_t)l->u.conv.filters;
        if ((rc = DALLOC(c->w[i], nw * sizeof(float), &c->wbytes)) ||
            (rc = DALLOC(c->bias[i], nb * sizeof(float), &c->wbytes)) ||
            (rc = CU(cudaMemcpy(c->w[i], l->u.conv.weights, nw * sizeof(float),
                                cudaMemcpyHostToDevice))) ||
            (rc = CU(cudaMemcpy(c->bias[i], l->u.conv.bias, nb * sizeof(float),
                                cudaMemcpyHostToDevice))))
            return rc;
    }
    mpd__logf(c->log, c->log_ud, MPD_LOG_INFO,
              "cuda: %s (sm_%d%d, %d SMs): weights uploaded, %.1f MiB on the device, buffers "
              "%.1f MiB",
              c->name, c->cc_major, c->cc_minor, c->sms, (double)c->wbytes / (1 << 20),
              (double)c->bytes / (1 << 20));
    return 0;
}

static int cu_clone(void *p, void **out, char *msg, size_t msglen)
{
    cu_ctx *o = p;
    if (o->origin)
        o = o->origin;
    int rc = create_ctx(o->net, &o->cfg, o, out, msg, msglen);
    if (rc)
        return rc;
    cu_ctx *c = *out;
    /* The origin's weights; the clone never frees them. */
    memcpy(c->w, o->w, (size_t)o->net->n * sizeof(float *));
    memcpy(c->bias, o->bias, (size_t)o->net->n * sizeof(float *));
    c->wbytes = o->wbytes;
    return 0;
}

static size_t cu_own_bytes(void *p, const void *state)
{
    (void)state; /* everything is allocated at create */
    return ((cu_ctx *)p)->bytes;
}

static size_t cu_plan_bytes(void *p, const void *state)
{
    (void)p;
    return state ? ((const cu_plan *)state)->bytes : 0;
}

static int cu_supports(void *p, const mpd_layer *l, mpd_precision prec)
{
    (void)p;
    if (prec == MPD_PREC_FP32)
        return 1;
    /* fp16 and bf16: convolutions (the GEMM's operands); int8: K within
     * the int32 sums' limit (plan.h); the scheme's own, tighter for affine,
     * is checked by plan_create. */
    return l->kind == MPD_LAYER_CONV && (prec != MPD_PREC_INT8 || mpd__conv_k(l) <= MPD_I8_MAX_K);
}

/* ---- plans ------------------------------------------------------------ */

static void cu_plan_destroy(void *p, void *state)
{
    cu_ctx *c = p;
    cu_plan *ps = state;
    if (!ps)
        return;
    cudaSetDevice(c->device);
    for (int i = 0; i < c->net->n; i++) {
        if (ps->w8) {
            cudaFree(ps->w8[i]);
            cudaFree(ps->w8_scale[i]);
            cudaFree(ps->w8_sum[i]);
        }
        if (ps->w16)
            cudaFree(ps->w16[i]);
    }
    cudaFree(ps->d_oq);
    cudaFree(ps->d_xs);
    cudaFree(ps->d_wzero);
    free(ps->w8);
    free(ps->w8_scale);
    free(ps->w8_sum);
    free(ps->w16);
    free(ps->i8_blas);
    free(ps->type);
    free(ps->oq);
    mpd_plan_free(ps->plan);
    free(ps);
}

/* Derives one layer's weights for the plan, on the plan stream. */
static int derive_weights(cu_ctx *c, cu_plan *ps, int i, char *msg, size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    mpd_precision prec = ps->plan->prec[i];
    int m = l->u.conv.filters, k = (int)conv_k(l), kp = (int)round4(conv_k(l)), rc;
    mpd_cu_stream s = (mpd_cu_stream)c->plan_st;
    if (prec == MPD_PREC_INT8) {
        if ((rc = DALLOC(ps->w8[i], (size_t)m * kp, &ps->bytes)) ||
            (rc = DALLOC(ps->w8_scale[i], (size_t)m * sizeof(float), &ps->bytes)) ||
            (rc = DALLOC(ps->w8_sum[i], (size_t)m * sizeof(int32_t), &ps->bytes)))
            return rc;
        /* wscratch is shared by every plan: the engine serialises
         * plan_create calls (its prepare lock), and this stream orders
         * the kernels of one. */
        return KL(mpd_cu_quantize_weights(c->w[i], m, k, kp, ps->plan->scheme == MPD_SCHEME_AFFINE,
                                          ps->w8[i], ps->w8_scale[i], ps->w8_sum[i],
                                          ps->d_wzero + i, c->wscratch, s));
    }
    if (prec == MPD_PREC_FP16 || prec == MPD_PREC_BF16) {
        /* Rounded on the device from the fp32 copy: half, or bf16 with
         * host/half.h's mpd_f32_to_bf16, the CPU's rounding. Counted in
         * the plan's bytes. */
        size_t nw = (size_t)m * k;
        if ((rc = DALLOC(ps->w16[i], nw * sizeof(uint16_t), &ps->bytes)))
            return rc;
        return KL(mpd_cu_convert(c->w[i], MPD_CU_F32, NULL, nw, 0, ps->w16[i],
                                 prec == MPD_PREC_BF16 ? MPD_CU_BF16 : MPD_CU_F16, 0, 1, s));
    }
    return 0;
}

/* cuBLAS's int8 GEMM (tensor cores where the device has them) of nb
 * images: acc[b] (m rows of ldc int32) = w (m x kp) . row[b] (npix x kp)^T.
 * Column-major it is C (npix x m) = row^T w, both operands K-contiguous
 * ("TN", the layout its int8 kernels take). */
static int gemm_i8_cublas(cublasHandle_t h, const int8_t *w, const int8_t *row, int m, int npix,
                          int kp, int nb, int32_t *acc, int ldc, char *msg, size_t msglen)
{
    const int32_t one = 1, zero = 0;
    return BL(blas.cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, npix, m, kp, &one, row,
                                              CUDA_R_8I, kp, (long long)npix * kp, w, CUDA_R_8I, kp,
                                              0, &zero, acc, CUDA_R_32I, ldc, (long long)m * ldc,
                                              nb, COMPUTE_32I, GEMM_ALGO));
}

/* Decides whether int8 layer i uses cuBLAS: it must accept the shape and
 * give exactly our kernel's accumulators on the layer's weights and a
 * random input (both are exact integer sums, so any difference is a bug or
 * an unsupported case). A refusal is not an error; only device failures
 * are. Runs on the plan stream and handle, apart from passes. */
static int probe_i8_cublas(cu_ctx *c, cu_plan *ps, int i, char *msg, size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    int m = l->u.conv.filters, npix = (int)conv_npix(l), kp = (int)round4(conv_k(l));
    int ldc = (int)acc_ld((size_t)npix), rc = 0;
    size_t nrow = (size_t)npix * kp, nacc = (size_t)m * ldc, nref = (size_t)m * npix, tmp = 0;
    int8_t *row = NULL, *h_row = malloc(nrow);
    int32_t *a = NULL, *b = NULL, *h_a = malloc(nacc * 4), *h_b = malloc(nref * 4);
    char why[256];
    ps->i8_blas[i] = 0;
    if (!h_row || !h_a || !h_b) {
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
        goto done;
    }
    unsigned seed = 2463534242u + (unsigned)i;
    for (size_t j = 0; j < nrow; j++) {
        seed ^= seed << 13, seed ^= seed >> 17, seed ^= seed << 5;
        h_row[j] = (int8_t)((int)(seed % 255u) - 127);
    }
    mpd_cu_i8_conv p = {
        .w = ps->w8[i], .xq = ps->d_xs + i, .m = m, .npix = npix, .k = kp, .kp = kp};
    if ((rc = DALLOC(row, nrow, &tmp)) || (rc = DALLOC(a, nacc * 4, &tmp)) ||
        (rc = DALLOC(b, nref * 4, &tmp)) ||
        (rc = CU(cudaMemcpy(row, h_row, nrow, cudaMemcpyHostToDevice))) ||
        (rc =
             KL(mpd_cu_gemm_i8(&p, row, 1, b, MPD_CU_I32, c->use_dp4a, (mpd_cu_stream)c->plan_st))))
        goto done;
    if (gemm_i8_cublas(c->plan_blas, ps->w8[i], row, m, npix, kp, 1, a, ldc, why, sizeof(why))) {
        (void)cudaGetLastError();
        mpd__logf(c->log, c->log_ud, MPD_LOG_DEBUG, "cuda: layer %d int8: cuBLAS declined (%s)", i,
                  why);
        goto done;
    }
    if ((rc = CU(cudaStreamSynchronize(c->plan_st))) ||
        (rc = CU(cudaMemcpy(h_a, a, nacc * 4, cudaMemcpyDeviceToHost))) ||
        (rc = CU(cudaMemcpy(h_b, b, nref * 4, cudaMemcpyDeviceToHost))))
        goto done;
    int same = 1;
    for (int o = 0; o < m && same; o++)
        same = memcmp(h_a + (size_t)o * ldc, h_b + (size_t)o * npix, (size_t)npix * 4) == 0;
    ps->i8_blas[i] = (unsigned char)same;
    if (!same)
        mpd__logf(c->log, c->log_ud, MPD_LOG_WARNING,
                  "cuda: layer %d int8: cuBLAS differs from the exact sums; using our kernel", i);
done:
    cudaStreamSynchronize(c->plan_st);
    cudaFree(row);
    cudaFree(a);
    cudaFree(b);
    free(h_row);
    free(h_a);
    free(h_b);
    return rc;
}

static int cu_plan_create(void *p, const mpd_plan *plan, void **state, char *msg, size_t msglen)
{
    cu_ctx *c = p;
    const mpd_net *net = c->net;
    int n = net->n, rc;
    *state = NULL;
    if (plan->n != n)
        return mpd__fail(msg, msglen, MPD_EINVAL, "plan has %d layers, the net %d", plan->n, n);
    for (int i = 0; i < n; i++)
        if (plan->prec[i] != MPD_PREC_FP32 && !cu_supports(c, &net->layers[i], plan->prec[i]))
            return mpd__fail(msg, msglen, MPD_EUNSUP, "layer %d (%s) cannot run in %s", i,
                             mpd_layer_kind_name(net->layers[i].kind),
                             mpd_precisions[plan->prec[i]].name);
    if ((rc = mpd__plan_check_i8(net, plan, msg, msglen)))
        return rc;
    if ((rc = CU(cudaSetDevice(c->device))))
        return rc;
    cu_plan *ps = calloc(1, sizeof(*ps));
    if (!ps || mpd_plan_copy(plan, &ps->plan)) {
        free(ps);
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    }
    static _Atomic unsigned long plan_ids;
    ps->id = ++plan_ids;
    ps->type = calloc((size_t)n, sizeof(mpd_tensor_type));
    ps->oq = calloc((size_t)n, sizeof(mpd_qparams));
    ps->w8 = calloc((size_t)n, sizeof(int8_t *));
    ps->w8_scale = calloc((size_t)n, sizeof(float *));
    ps->w8_sum = calloc((size_t)n, sizeof(int32_t *));
    ps->w16 = calloc((size_t)n, sizeof(uint16_t *));
    ps->i8_blas = calloc((size_t)n, 1);
    mpd_qparams *xs = calloc((size_t)n, sizeof(mpd_qparams));
    if (!ps->type || !ps->oq || !ps->w8 || !ps->w8_scale || !ps->w8_sum || !ps->w16 ||
        !ps->i8_blas || !xs || mpd__plan_tensor_types(net, ps->plan, ps->type, ps->oq)) {
        rc = mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < n; i++) {
        xs[i] = (mpd_qparams){1.f, 0};
        if (plan->out_thresh && plan->scheme == MPD_SCHEME_SYMMETRIC)
            xs[i] = mpd_q_symmetric(i > 0 ? plan->out_thresh[i - 1] : plan->input_thresh);
        if (ps->type[i] != MPD_TENSOR_I8)
            ps->oq[i] = (mpd_qparams){1.f, 0};
    }
    size_t qbytes = (size_t)n * sizeof(mpd_qparams);
    if ((rc = DALLOC(ps->d_oq, qbytes, &ps->bytes)) ||
        (rc = DALLOC(ps->d_xs, qbytes, &ps->bytes)) ||
        (rc = DALLOC(ps->d_wzero, (size_t)n * sizeof(int32_t), &ps->bytes)) ||
        (rc = CU(cudaMemcpy(ps->d_oq, ps->oq, qbytes, cudaMemcpyHostToDevice))) ||
        (rc = CU(cudaMemcpy(ps->d_xs, xs, qbytes, cudaMemcpyHostToDevice))) ||
        (rc = CU(cudaMemsetAsync(ps->d_wzero, 0, (size_t)n * sizeof(int32_t), c->plan_st))))
        goto fail;
    for (int i = 0; i < n; i++)
        if (net->layers[i].kind == MPD_LAYER_CONV && (rc = derive_weights(c, ps, i, msg, msglen)))
            goto fail;
    if ((rc = CU(cudaStreamSynchronize(c->plan_st))))
        goto fail;
    int nblas = 0, nint8 = 0;
    for (int i = 0; i < n && c->i8_cublas; i++) {
        if (net->layers[i].kind != MPD_LAYER_CONV || plan->prec[i] != MPD_PREC_INT8)
            continue;
        nint8++;
        if ((rc = probe_i8_cublas(c, ps, i, msg, msglen)))
            goto fail;
        nblas += ps->i8_blas[i];
    }
    if (nint8)
        mpd__logf(c->log, c->log_ud, MPD_LOG_INFO,
                  "cuda: int8 GEMM: cuBLAS on %d of %d layers (exact), %s on the rest", nblas,
                  nint8, c->use_dp4a ? "dp4a kernel" : "plain kernel");
    free(xs);
    mpd__logf(c->log, c->log_ud, MPD_LOG_DEBUG, "cuda: plan derived on the device, %.1f MiB",
              (double)ps->bytes / (1 << 20));
    *state = ps;
    return 0;
fail:
    free(xs);
    cudaStreamSynchronize(c->plan_st);
    cu_plan_destroy(c, ps);
    return rc;
}

/* ---- forward ---------------------------------------------------------- */

static mpd_cu_type cu_type(mpd_tensor_type t)
{
    switch (t) {
    case MPD_TENSOR_F16: return MPD_CU_F16;
    case MPD_TENSOR_BF16: return MPD_CU_BF16;
    case MPD_TENSOR_I8: return MPD_CU_I8;
    default: return MPD_CU_F32;
    }
}

static size_t type_bytes(mpd_tensor_type t)
{
    switch (t) {
    case MPD_TENSOR_F16:
    case MPD_TENSOR_BF16: return 2;
    case MPD_TENSOR_I8: return 1;
    default: return 4;
    }
}

/* Output of layer i (-1: the network input), all images, with its type. */
static void *tensor(const cu_ctx *c, const cu_plan *ps, int i, mpd_tensor_type *t)
{
    if (i < 0) {
        *t = MPD_TENSOR_F32;
        return c->input;
    }
    *t = ps->type[i];
    return c->out[i];
}

static int cu_set_input(void *p, const float *x, int batch, char *msg, size_t msglen)
{
    cu_ctx *c = p;
    int rc;
    if (batch < 1 || batch > c->max_batch)
        return mpd__fail(msg, msglen, MPD_EINVAL, "batch %d outside 1..%d", batch, c->max_batch);
    size_t bytes = (size_t)batch * c->net->in_c * c->net->in_h * c->net->in_w * sizeof(float);
    if ((rc = CU(cudaSetDevice(c->device))) || (rc = CU(cudaStreamSynchronize(c->st))))
        return rc;
    memcpy(c->h_in, x, bytes);
    return CU(cudaMemcpyAsync(c->input, c->h_in, bytes, cudaMemcpyHostToDevice, c->st));
}

/* Frees the image staging; rgb_cap is nonzero only while both halves are
 * allocated at that size. */
static void staging_free(cu_ctx *c)
{
    cudaFreeHost(c->h_rgb);
    cudaFree(c->d_rgb);
    c->bytes -= c->rgb_cap;
    c->h_rgb = c->d_rgb = NULL;
    c->rgb_cap = 0;
}

static int cu_set_input_rgb(void *p, const unsigned char *const *rgb, const int *w, const int *h,
                            int n, char *msg, size_t msglen)
{
    cu_ctx *c = p;
    const mpd_net *net = c->net;
    int rc;
    if (n < 1 || n > c->max_batch)
        return mpd__fail(msg, msglen, MPD_EINVAL, "batch %d outside 1..%d", n, c->max_batch);
    if (net->in_c != 3)
        return mpd__fail(msg, msglen, MPD_EUNSUP, "letterbox needs a 3-channel input");
    size_t total = 0;
    for (int b = 0; b < n; b++) {
        if (w[b] < 1 || h[b] < 1 || !rgb[b])
            return mpd__fail(msg, msglen, MPD_EINVAL, "image %d is empty", b);
        total += (size_t)w[b] * h[b] * 3;
    }
    if ((rc = CU(cudaSetDevice(c->device))) || (rc = CU(cudaStreamSynchronize(c->st))))
        return rc;
    if (total > c->rgb_cap) {
        size_t cap = total > RGB_STAGING ? total : RGB_STAGING;
        staging_free(c);
        if ((rc = CU(cudaMallocHost((void **)&c->h_rgb, cap))) ||
            (rc = DALLOC(c->d_rgb, cap, &c->bytes)))
            return rc;
        c->rgb_cap = cap;
    }
    size_t off = 0, insz = (size_t)3 * net->in_h * net->in_w;
    for (int b = 0; b < n; b++) {
        size_t sz = (size_t)w[b] * h[b] * 3;
        int nw, nh;
        memcpy(c->h_rgb + off, rgb[b], sz);
        mpd__letterbox_size(w[b], h[b], net->in_w, net->in_h, &nw, &nh);
        if ((rc = CU(cudaMemcpyAsync(c->d_rgb + off, c->h_rgb + off, sz, cudaMemcpyHostToDevice,
                                     c->st))) ||
            (rc = KL(mpd_cu_letterbox(c->d_rgb + off, w[b], h[b], nw, nh, net->in_w, net->in_h,
                                      c->input + (size_t)b * insz, (mpd_cu_stream)c->st))))
            return rc;
        off += sz;
    }
    if (c->rgb_cap > (size_t)c->max_batch * RGB_STAGING_KEEP) {
        /* Beyond what is kept (see RGB_STAGING): once the copies and the
         * letterbox kernels that read it are done, give it back. */
        if ((rc = CU(cudaStreamSynchronize(c->st))))
            return rc;
        staging_free(c);
    }
    return 0;
}

#if HAVE_BF16_BLAS
/* cuBLAS's bf16 GEMM of nb images (tensor cores from sm_80), the call
 * shape of the fp16 one: column-major Y^T (npix x m) = col^T (npix x k)
 * W^T (k x m), bf16 operands, fp32 sums (compute 32F) into fp32 acc[b]
 * (m x npix row-major). */
static int gemm_bf16_cublas(cublasHandle_t h, const mpd_bf16 *w, const mpd_bf16 *col, int m,
                            int npix, int k, int nb, float *acc, char *msg, size_t msglen)
{
    const float one = 1.f, zero = 0.f;
    return BL(blas.cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, npix, m, k, &one, col,
                                              CUDA_R_16BF, npix, (long long)k * npix, w,
                                              CUDA_R_16BF, k, 0, &zero, acc, CUDA_R_32F, npix,
                                              (long long)m * npix, nb, COMPUTE_32F, GEMM_ALGO));
}
#endif

/* fp32 / fp16 / bf16 convolution of images [b0, b0 + nb): im2col (skipped
 * for a 1x1 stride-1 unpadded layer whose input already has the GEMM's
 * type; else the input rounded to the GEMM's type there), one strided
 * batched GEMM with fp32 sums, then bias + activation into the output
 * type. */
static int conv_float(cu_ctx *c, const cu_plan *ps, int i, int b0, int nb, char *msg, size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    const mpd_conv *cv = &l->u.conv;
    mpd_cu_stream s = (mpd_cu_stream)c->st;
    mpd_precision prec = ps->plan->prec[i];
    int rc;
    mpd_tensor_type xt;
    const char *x = tensor(c, ps, i - 1, &xt);
    mpd_tensor_type yt = ps->type[i];
    int m = cv->filters, k = (int)conv_k(l), npix = (int)conv_npix(l);
    size_t in_img = mpd_layer_in_size(l), out_img = mpd_layer_out_size(l);
    mpd_cu_type gt = prec == MPD_PREC_FP16   ? MPD_CU_F16
                     : prec == MPD_PREC_BF16 ? MPD_CU_BF16
                                             : MPD_CU_F32;
    x += (size_t)b0 * in_img * type_bytes(xt);
    const void *bm = x;
    if (!(cv->size == 1 && cv->stride == 1 && cv->pad == 0 && cu_type(xt) == gt)) {
        mpd_cu_conv_geom g = {l->in_c,    l->in_h, l->in_w,  cv->size,
                              cv->stride, cv->pad, l->out_h, l->out_w};
        if ((rc = KL(mpd_cu_im2col(x, cu_type(xt), &g, nb, c->col, gt, s))))
            return rc;
        bm = c->col;
    }
    /* fp32 results go straight to an fp32 output; half and bf16 outputs
     * round once, after bias and activation, from fp32 accumulators. */
    float *acc = yt == MPD_TENSOR_F32 ? (float *)c->out[i] + (size_t)b0 * out_img : c->acc;
    const float one = 1.f, zero = 0.f;
    long long sb = (long long)k * npix, sc = (long long)m * npix;
    if (gt == MPD_CU_BF16) {
#if HAVE_BF16_BLAS
        if (c->bf16_cublas)
            rc = gemm_bf16_cublas(c->blas, ps->w16[i], bm, m, npix, k, nb, acc, msg, msglen);
        else
#endif
            rc = KL(mpd_cu_gemm_bf16(ps->w16[i], bm, acc, m, npix, k, nb, s));
        if (rc)
            return rc;
    } else if (gt == MPD_CU_F32) {
        /* Column-major view: Y^T (npix x m) = col^T (npix x k) W^T (k x m). */
        if ((rc = BL(blas.cublasSgemmStridedBatched(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, npix, m, k,
                                                    &one, bm, npix, sb, c->w[i], k, 0, &zero, acc,
                                                    npix, sc, nb))))
            return rc;
    } else if (c->f16_cublas) {
        if ((rc = BL(blas.cublasGemmStridedBatchedEx(c->blas, CUBLAS_OP_N, CUBLAS_OP_N, npix, m, k,
                                                     &one, bm, CUDA_R_16F, npix, sb, ps->w16[i],
                                                     CUDA_R_16F, k, 0, &zero, acc, CUDA_R_32F, npix,
                                                     sc, nb, COMPUTE_32F, GEMM_ALGO))))
            return rc;
    } else if ((rc = KL(mpd_cu_gemm_f16(ps->w16[i], bm, acc, m, npix, k, nb, s)))) {
        return rc;
    }
    void *y = (char *)c->out[i] + (size_t)b0 * out_img * type_bytes(yt);
    return KL(mpd_cu_bias_act(acc, c->bias[i], m, npix, nb, (int)cv->act, y, cu_type(yt), s));
}

/* int8 convolution of images [b0, b0 + nb), whose input is already int8
 * in x8 with parameters xq (stride 0: one set, 1: per image). */
static int conv_int8_chunk(cu_ctx *c, const cu_plan *ps, int i, const int8_t *x8,
                           const mpd_qparams *xq, int xq_stride, int b0, int nb, char *msg,
                           size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    const mpd_conv *cv = &l->u.conv;
    mpd_cu_stream s = (mpd_cu_stream)c->st;
    int affine = ps->plan->scheme == MPD_SCHEME_AFFINE, rc;
    int k = (int)conv_k(l), kp = (int)round4(conv_k(l)), npix = (int)conv_npix(l);
    mpd_cu_conv_geom g = {l->in_c,    l->in_h, l->in_w,  cv->size,
                          cv->stride, cv->pad, l->out_h, l->out_w};
    const mpd_qparams *q = xq + (size_t)b0 * xq_stride;
    int8_t *row = c->col;
    if ((rc = KL(mpd_cu_im2row_i8(x8 + (size_t)b0 * mpd_layer_in_size(l), q, xq_stride, &g, nb, kp,
                                  row, s))))
        return rc;
    if (affine && (rc = KL(mpd_cu_row_sums_i8(row, nb * npix, k, kp, c->xsum, s))))
        return rc;
    mpd_tensor_type yt = ps->type[i];
    mpd_cu_i8_conv p = {
        .w = ps->w8[i],
        .w_scale = ps->w8_scale[i],
        .w_sum = ps->w8_sum[i],
        .w_zero = ps->d_wzero + i,
        .bias = c->bias[i],
        .xq = q,
        .xq_stride = xq_stride,
        .x_sum = c->xsum,
        .yq = ps->d_oq + i,
        .m = cv->filters,
        .npix = npix,
        .k = k,
        .kp = kp,
        .act = (int)cv->act,
        .affine = affine,
    };
    void *y = (char *)c->out[i] + (size_t)b0 * mpd_layer_out_size(l) * type_bytes(yt);
    if (ps->i8_blas[i]) {
        int ldc = (int)acc_ld((size_t)npix);
        int32_t *acc = (int32_t *)(void *)c->acc;
        if ((rc = gemm_i8_cublas(c->blas, ps->w8[i], row, cv->filters, npix, kp, nb, acc, ldc, msg,
                                 msglen)))
            return rc;
        return KL(mpd_cu_i8_epilogue(&p, acc, ldc, nb, y, cu_type(yt), s));
    }
    return KL(mpd_cu_gemm_i8(&p, row, nb, y, cu_type(yt), c->use_dp4a, s));
}

/* The int8 convolution: quantize the input unless the producer wrote int8
 * (parameters measured per image on the device, or the calibrated ones),
 * then run the GEMM in chunks of images. */
static int conv_int8(cu_ctx *c, const cu_plan *ps, int i, int batch, char *msg, size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    const mpd_plan *pl = ps->plan;
    mpd_cu_stream s = (mpd_cu_stream)c->st;
    mpd_tensor_type xt;
    const void *x = tensor(c, ps, i - 1, &xt);
    const int8_t *x8 = x;
    const mpd_qparams *xq;
    int xq_stride = 0, rc;
    size_t in_img = mpd_layer_in_size(l);
    if (xt == MPD_TENSOR_I8) {
        xq = ps->d_oq + (i - 1);
    } else {
        int affine = pl->scheme == MPD_SCHEME_AFFINE;
        if (affine || !pl->out_thresh) {
            /* This pass's own range, per image, measured on the device. */
            uint32_t *mm = c->range + (size_t)i * c->max_batch * 2;
            mpd_qparams *dq = c->xq + (size_t)i * c->max_batch;
            if ((rc = KL(mpd_cu_range(x, cu_type(xt), in_img, batch, mm, s))) ||
                (rc = KL(mpd_cu_qparams(mm, affine, batch, dq, s))))
                return rc;
            xq = dq;
            xq_stride = 1;
        } else {
            xq = ps->d_xs + i;
        }
        if ((rc = KL(mpd_cu_quantize(x, cu_type(xt), in_img, batch, xq, xq_stride, c->x8, s))))
            return rc;
        x8 = c->x8;
    }
    for (int b0 = 0; b0 < batch; b0 += c->chunk[i]) {
        int nb = batch - b0 < c->chunk[i] ? batch - b0 : c->chunk[i];
        if ((rc = conv_int8_chunk(c, ps, i, x8, xq, xq_stride, b0, nb, msg, msglen)))
            return rc;
    }
    return 0;
}

/* Queues layer i for batch images on the stream. */
static int issue_layer(cu_ctx *c, const cu_plan *ps, int i, int batch, char *msg, size_t msglen)
{
    const mpd_layer *l = &c->net->layers[i];
    mpd_cu_stream s = (mpd_cu_stream)c->st;
    mpd_tensor_type xt, yt = ps->type[i];
    const void *x = tensor(c, ps, i - 1, &xt);
    void *y = c->out[i];
    size_t out_img = mpd_layer_out_size(l);
    int rc;
    switch (l->kind) {
    case MPD_LAYER_CONV:
        if (ps->plan->prec[i] == MPD_PREC_INT8)
            return conv_int8(c, ps, i, batch, msg, msglen);
        for (int b0 = 0; b0 < batch; b0 += c->chunk[i]) {
            int nb = batch - b0 < c->chunk[i] ? batch - b0 : c->chunk[i];
            if ((rc = conv_float(c, ps, i, b0, nb, msg, msglen)))
                return rc;
        }
        return 0;
    case MPD_LAYER_MAXPOOL: {
        mpd_cu_pool_geom g = {l->in_c,  l->in_h,        l->in_w,          l->out_h,
                              l->out_w, l->u.pool.size, l->u.pool.stride, l->u.pool.padding};
        return KL(mpd_cu_maxpool(x, &g, batch, y, cu_type(xt), cu_type(yt), s));
    }
    case MPD_LAYER_UPSAMPLE:
        /* Tensor types make every input here fp32 (plan.h). */
        return KL(mpd_cu_upsample(x, l->in_c, l->in_h, l->in_w, l->u.up.stride, batch, y, s));
    case MPD_LAYER_YOLO:
        return KL(
            mpd_cu_yolo(x, l->u.yolo.nmask, l->u.yolo.classes, l->out_h * l->out_w, batch, y, s));
    case MPD_LAYER_SHORTCUT: {
        mpd_tensor_type ft;
        const void *from = tensor(c, ps, l->u.shortcut.from, &ft);
        return KL(mpd_cu_shortcut(x, from, out_img, batch, (int)l->u.shortcut.act, y, s));
    }
    case MPD_LAYER_ROUTE: {
        size_t off = 0;
        for (int r = 0; r < l->u.route.n; r++) {
            int f = l->u.route.from[r];
            mpd_tensor_type ft;
            const void *src = tensor(c, ps, f, &ft);
            size_t n = mpd_layer_out_size(&c->net->layers[f]);
            float *dst = (float *)y + off;
            if (ft == MPD_TENSOR_F32)
                rc = CU(cudaMemcpy2DAsync(dst, out_img * sizeof(float), src, n * sizeof(float),
                                          n * sizeof(float), (size_t)batch,
                                          cudaMemcpyDeviceToDevice, c->st));
            else
                rc = KL(mpd_cu_convert(src, cu_type(ft), ps->d_oq + f, n, n, dst, MPD_CU_F32,
                                       out_img, batch, s));
            if (rc)
                return rc;
            off += n;
        }
        return 0;
    }
    }
    return mpd__fail(msg, msglen, MPD_EUNSUP, "layer %d: unknown kind", i);
}

static int check_args(const cu_ctx *c, const void *state, int i, int batch, char *msg,
                      size_t msglen)
{
    if (i < 0 || i >= c->net->n || batch < 1 || batch > c->max_batch || !state)
        return mpd__fail(msg, msglen, MPD_EINVAL, "layer %d / batch %d out of range", i, batch);
    return 0;
}

static int cu_forward_layer(void *p, const void *state, int i, int batch, char *msg, size_t msglen)
{
    cu_ctx *c = p;
    int rc;
    if ((rc = check_args(c, state, i, batch, msg, msglen)) || (rc = CU(cudaSetDevice(c->device))))
        return rc;
    /* Synchronous: the shared workspaces are free again on return. */
    dev_lock(c);
    rc = issue_layer(c, state, i, batch, msg, msglen);
    int rs = CU(cudaStreamSynchronize(c->st));
    dev_unlock(c);
    return rc ? rc : rs;
}

/* Every layer, with an event before the first and after each when timed. */
static int issue_pass(cu_ctx *c, const cu_plan *ps, int batch, int timed, int in_graph, char *msg,
                      size_t msglen)
{
    int rc;
    for (int i = 0; i <= c->net->n; i++) {
        if (timed) {
#if CUDART_VERSION >= 11010
            rc = in_graph ? CU(cudaEventRecordWithFlags(c->ev[i], c->st, cudaEventRecordExternal))
                          : CU(cudaEventRecord(c->ev[i], c->st));
#else
            (void)in_graph;
            rc = CU(cudaEventRecord(c->ev[i], c->st));
#endif
            if (rc)
                return rc;
        }
        if (i < c->net->n && (rc = issue_layer(c, ps, i, batch, msg, msglen)))
            return rc;
    }
    return 0;
}

/* The graph of (plan, batch, timed) on this context, captured on first
 * use. NULL when graphs are off or capture is not possible (then the pass
 * runs eagerly). Graphs of other plans are dropped: a context runs the
 * current plan, and a replaced plan's device memory may be gone. */
static cudaGraphExec_t graph_for(cu_ctx *c, const cu_plan *ps, int batch, int timed)
{
#if CUDART_VERSION < 11010
    if (timed)
        return NULL; /* events inside a graph need CUDA 11.1 */
#endif
    if (!c->use_graphs || c->graphs_broken)
        return NULL;
    int kept = 0;
    for (int g = 0; g < c->ngraphs; g++) {
        if (c->graphs[g].plan != ps->id)
            cudaGraphExecDestroy(c->graphs[g].exec);
        else
            c->graphs[kept++] = c->graphs[g];
    }
    c->ngraphs = kept;
    for (int g = 0; g < c->ngraphs; g++)
        if (c->graphs[g].batch == batch && c->graphs[g].timed == timed)
            return c->graphs[g].exec;
    char msg[256];
    size_t msglen = sizeof(msg);
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    int rc = CU(cudaStreamBeginCapture(c->st, cudaStreamCaptureModeThreadLocal));
    if (rc == 0) {
        rc = issue_pass(c, ps, batch, timed, 1, msg, msglen);
        cudaError_t e = cudaStreamEndCapture(c->st, &graph);
        if (rc == 0)
            rc = CU(e);
    }
    if (rc == 0) {
#if CUDART_VERSION >= 12000
        rc = CU(cudaGraphInstantiate(&exec, graph, 0));
#else
        rc = CU(cudaGraphInstantiate(&exec, graph, NULL, NULL, 0));
#endif
    }
    if (graph)
        cudaGraphDestroy(graph);
    (void)cudaGetLastError();
    if (rc) {
        /* Run eagerly from now on; the eager pass reports real errors. */
        mpd__logf(c->log, c->log_ud, MPD_LOG_WARNING,
                  "cuda: graph capture failed, running without graphs: %s", msg);
        c->graphs_broken = 1;
        return NULL;
    }
    if (c->ngraphs == MAX_GRAPHS) {
        cudaGraphExecDestroy(c->graphs[0].exec);
        memmove(c->graphs, c->graphs + 1, (MAX_GRAPHS - 1) * sizeof(graph_entry));
        c->ngraphs--;
    }
    c->graphs[c->ngraphs++] = (graph_entry){ps->id, batch, timed, exec};
    return exec;
}

static int cu_forward(void *p, const void *state, int batch, double *layer_ms, char *msg,
                      size_t msglen)
{
    cu_ctx *c = p;
    const cu_plan *ps = state;
    int timed = layer_ms != NULL, rc;
    if ((rc = check_args(c, state, 0, batch, msg, msglen)) || (rc = CU(cudaSetDevice(c->device))))
        return rc;
    dev_lock(c);
    cudaGraphExec_t g = graph_for(c, ps, batch, timed);
    if (g)
        rc = CU(cudaGraphLaunch(g, c->st));
    else
        rc = issue_pass(c, ps, batch, timed, 0, msg, msglen);
    /* Finished (or failed) before another engine may use the workspaces. */
    int rs = CU(cudaStreamSynchronize(c->st));
    dev_unlock(c);
    if (rc || (rc = rs))
        return rc;
    for (int i = 0; timed && i < c->net->n; i++) {
        float ms = 0;
        if ((rc = CU(cudaEventElapsedTime(&ms, c->ev[i], c->ev[i + 1]))))
            return rc;
        layer_ms[i] = ms;
    }
    return 0;
}

static int cu_sync(void *p, char *msg, size_t msglen)
{
    cu_ctx *c = p;
    int rc = CU(cudaSetDevice(c->device));
    return rc ? rc : CU(cudaStreamSynchronize(c->st));
}

static int read_output(cu_ctx *c, const cu_plan *ps, int i, int batch, float *dst, char *msg,
                       size_t msglen);
static int write_output(cu_ctx *c, const cu_plan *ps, int i, int batch, const float *src,
                        char *msg, size_t msglen);

/* Outputs stored as int8, half or bf16 pass through the shared scratch:
 * under the device lock. */
static int cu_read_output(void *p, const void *state, int i, int batch, float *dst, char *msg,
                          size_t msglen)
{
    cu_ctx *c = p;
    int rc;
    if ((rc = check_args(c, state, i, batch, msg, msglen)) || (rc = CU(cudaSetDevice(c->device))))
        return rc;
    dev_lock(c);
    rc = read_output(c, state, i, batch, dst, msg, msglen);
    dev_unlock(c);
    return rc;
}

static int cu_write_output(void *p, const void *state, int i, int batch, const float *src,
                           char *msg, size_t msglen)
{
    cu_ctx *c = p;
    int rc;
    if ((rc = check_args(c, state, i, batch, msg, msglen)) || (rc = CU(cudaSetDevice(c->device))))
        return rc;
    dev_lock(c);
    rc = write_output(c, state, i, batch, src, msg, msglen);
    dev_unlock(c);
    return rc;
}

static int read_output(cu_ctx *c, const cu_plan *ps, int i, int batch, float *dst, char *msg,
                       size_t msglen)
{
    int rc;
    const mpd_layer *l = &c->net->layers[i];
    size_t n = mpd_layer_out_size(l);
    mpd_tensor_type t = ps->type[i];
    if (t == MPD_TENSOR_F32) {
        /* One copy for the whole batch (dst is pageable: the driver
         * stages it). */
        if ((rc = CU(cudaMemcpyAsync(dst, c->out[i], (size_t)batch * n * sizeof(float),
                                     cudaMemcpyDeviceToHost, c->st))))
            return rc;
        return CU(cudaStreamSynchronize(c->st));
    }
    for (int b = 0; b < batch; b++) {
        /* Dequantized / widened one image at a time into the scratch. */
        const char *src = (const char *)c->out[i] + (size_t)b * n * type_bytes(t);
        if ((rc = KL(mpd_cu_convert(src, cu_type(t), ps->d_oq + i, n, 0, c->scratch, MPD_CU_F32, 0,
                                    1, (mpd_cu_stream)c->st))) ||
            (rc = CU(cudaMemcpyAsync(dst + (size_t)b * n, c->scratch, n * sizeof(float),
                                     cudaMemcpyDeviceToHost, c->st))) ||
            (rc = CU(cudaStreamSynchronize(c->st))))
            return rc;
    }
    return 0;
}

static int write_output(cu_ctx *c, const cu_plan *ps, int i, int batch, const float *src,
                        char *msg, size_t msglen)
{
    int rc;
    size_t n = mpd_layer_out_size(&c->net->layers[i]);
    mpd_tensor_type t = ps->type[i];
    if (t == MPD_TENSOR_F32) {
        if ((rc = CU(cudaMemcpyAsync(c->out[i], src, (size_t)batch * n * sizeof(float),
                                     cudaMemcpyHostToDevice, c->st))))
            return rc;
        return CU(cudaStreamSynchronize(c->st));
    }
    for (int b = 0; b < batch; b++) {
        /* Staged one image at a time in the scratch, then narrowed. */
        char *dst = (char *)c->out[i] + (size_t)b * n * type_bytes(t);
        if ((rc = CU(cudaMemcpyAsync(c->scratch, src + (size_t)b * n, n * sizeof(float),
                                     cudaMemcpyHostToDevice, c->st))) ||
            (rc = KL(mpd_cu_convert(c->scratch, MPD_CU_F32, ps->d_oq + i, n, 0, dst, cu_type(t),
                                    0, 1, (mpd_cu_stream)c->st))) ||
            (rc = CU(cudaStreamSynchronize(c->st))))
            return rc;
    }
    return 0;
}

/* The bf16 GEMM's name, in the plan and the description: "emulated" where
 * no bf16 hardware does the work (our kernel; cuBLAS forced below sm_80). */
static const char *bf16_name(const cu_ctx *c)
{
    if (!c->bf16_cublas)
        return "bf16 emulated (bf16 operands, fp32 FMA kernel)";
    return c->cc_major >= 8 ? "bf16 cuBLAS (tensor cores)"
                            : "bf16 cuBLAS, emulated (no bf16 tensor cores below sm_80)";
}

static const char *cu_layer_kernel(void *p, const void *state, int i)
{
    const cu_ctx *c = p;
    const cu_plan *ps = state;
    if (!ps || i < 0 || i >= c->net->n)
        return "fp32 cuBLAS sgemm";
    switch (ps->plan->prec[i]) {
    case MPD_PREC_INT8:
        return ps->i8_blas[i] ? "int8 cuBLAS (checked exact)"
               : c->use_dp4a  ? "int8 dp4a kernel"
                              : "int8 plain kernel";
    case MPD_PREC_FP16:
        return c->f16_cublas ? "fp16 cuBLAS GemmEx (tensor ops)" : "fp16 half2 kernel";
    case MPD_PREC_BF16: return bf16_name(c);
    default: return "fp32 cuBLAS sgemm";
    }
}

static void cu_describe(void *p, char *buf, size_t len)
{
    cu_ctx *c = p;
    size_t free_b = 0, total_b = 0;
    cudaSetDevice(c->device);
    if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess)
        (void)cudaGetLastError();
    snprintf(buf, len,
             "cuda: %s sm_%d%d; fp32 cuBLAS sgemm; fp16 %s; int8 %s; bf16 %s; graphs %s; "
             "device memory %.1f MiB of buffers (batch %d) and %.1f MiB of fp32 weights (shared "
             "by the engines of one model; plans add their own); in use on the device %.0f of %.0f MiB",
             c->name, c->cc_major, c->cc_minor,
             c->f16_cublas ? "cuBLAS GemmEx (tensor ops)" : "half2 kernel",
             c->i8_cublas  ? (c->use_dp4a ? "cuBLAS where exact, else dp4a kernel"
                                          : "cuBLAS where exact, else plain kernel")
             : c->use_dp4a ? "dp4a kernel"
                           : "plain int8 kernel",
             bf16_name(c) + 5,
             c->use_graphs ? "on" : "off", (double)c->bytes / (1 << 20), c->max_batch,
             (double)c->wbytes / (1 << 20),
             (double)(total_b - free_b) / (1 << 20), (double)total_b / (1 << 20));
}

const mpd_backend_ops mpd__cuda_backend_ops = {
    .name = "cuda",
    .memory = "device",
    .create = cu_create,
    .upload_weights = cu_upload,
    .clone = cu_clone,
    .own_bytes = cu_own_bytes,
    .plan_bytes = cu_plan_bytes,
    .supports = cu_supports,
    .plan_create = cu_plan_create,
    .plan_destroy = cu_plan_destroy,
    .set_input = cu_set_input,
    .forward_layer = cu_forward_layer,
    .forward = cu_forward,
    .set_input_rgb = cu_set_input_rgb,
    .sync = cu_sync,
    .read_output = cu_read_output,
    .write_output = cu_write_output,
    .output_host = NULL,
    .describe = cu_describe,
    .layer_kernel = cu_layer_kernel,
    .destroy = cu_destroy,
};

/* ---- test hooks ------------------------------------------------------- */

int mpd__cuda_gemm_i8_host(const int8_t *w, const int8_t *row, int m, int npix, int kp, int batch,
                           int use_dp4a, int32_t *acc, char *msg, size_t msglen)
{
    char why[256];
    if (!mpd__cuda_device_count(why, sizeof(why)))
        return mpd__fail(msg, msglen, MPD_EUNSUP, "%s", why);
    if (m < 1 || npix < 1 || kp < 4 || kp % 4 || batch < 1)
        return mpd__fail(msg, msglen, MPD_EINVAL, "bad GEMM shape");
    size_t nw = (size_t)m * kp, nr = (size_t)batch * npix * kp, ny = (size_t)batch * m * npix;
    int8_t *dw = NULL, *dr = NULL;
    int32_t *dy = NULL;
    mpd_qparams *dq = NULL, one = {1.f, 0};
    int rc;
    if ((rc = CU(cudaMalloc((void **)&dw, nw))) || (rc = CU(cudaMalloc((void **)&dr, nr))) ||
        (rc = CU(cudaMalloc((void **)&dy, ny * sizeof(int32_t)))) ||
        (rc = CU(cudaMalloc((void **)&dq, sizeof(one)))) ||
        (rc = CU(cudaMemcpy(dw, w, nw, cudaMemcpyHostToDevice))) ||
        (rc = CU(cudaMemcpy(dr, row, nr, cudaMemcpyHostToDevice))) ||
        (rc = CU(cudaMemcpy(dq, &one, sizeof(one), cudaMemcpyHostToDevice))))
        goto done;
    mpd_cu_i8_conv p = {.w = dw, .xq = dq, .m = m, .npix = npix, .k = kp, .kp = kp};
    if ((rc = KL(mpd_cu_gemm_i8(&p, dr, batch, dy, MPD_CU_I32, use_dp4a, NULL))) ||
        (rc = CU(cudaDeviceSynchronize())) ||
        (rc = CU(cudaMemcpy(acc, dy, ny * sizeof(int32_t), cudaMemcpyDeviceToHost))))
        goto done;
done:
    cudaFree(dw);
    cudaFree(dr);
    cudaFree(dy);
    cudaFree(dq);
    return rc;
}

int mpd__cuda_gemm_bf16_host(const uint16_t *a, const uint16_t *b, float *c, int m, int n, int k,
                             int batch, int use_cublas, char *msg, size_t msglen)
{
    char why[256];
    if (!mpd__cuda_device_count(why, sizeof(why)))
        return mpd__fail(msg, msglen, MPD_EUNSUP, "%s", why);
    if (m < 1 || n < 1 || k < 1 || batch < 1)
        return mpd__fail(msg, msglen, MPD_EINVAL, "bad GEMM shape");
#if !HAVE_BF16_BLAS
    if (use_cublas)
        return mpd__fail(msg, msglen, MPD_EUNSUP, "this build's cuBLAS has no bf16 (CUDA < 11)");
#endif
    int rc;
    if (use_cublas && (rc = mpd__cuda_blas_ready(msg, msglen)))
        return rc;
    size_t na = (size_t)m * k, nb = (size_t)batch * k * n, nc = (size_t)batch * m * n;
    uint16_t *da = NULL, *db = NULL;
    float *dc = NULL;
    cublasHandle_t h = NULL;
    if ((rc = CU(cudaMalloc((void **)&da, na * 2))) ||
        (rc = CU(cudaMalloc((void **)&db, nb * 2))) ||
        (rc = CU(cudaMalloc((void **)&dc, nc * sizeof(float)))) ||
        (rc = CU(cudaMemcpy(da, a, na * 2, cudaMemcpyHostToDevice))) ||
        (rc = CU(cudaMemcpy(db, b, nb * 2, cudaMemcpyHostToDevice))))
        goto done;
    if (use_cublas) {
#if HAVE_BF16_BLAS
        /* The backend's own call (gemm_bf16_cublas): images are the
         * column matrices, a the weights. */
        if ((rc = BL(blas.cublasCreate(&h))) ||
            (rc = gemm_bf16_cublas(h, da, db, m, n, k, batch, dc, msg, msglen)))
            goto done;
#endif
    } else if ((rc = KL(mpd_cu_gemm_bf16(da, db, dc, m, n, k, batch, NULL)))) {
        goto done;
    }
    if ((rc = CU(cudaDeviceSynchronize())) ||
        (rc = CU(cudaMemcpy(c, dc, nc * sizeof(float), cudaMemcpyDeviceToHost))))
        goto done;
done:
    if (h)
        blas.cublasDestroy(h);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dc);
    return rc;
}

int mpd__cuda_letterbox_host(const unsigned char *rgb, int w, int h, int net_w, int net_h,
                             float *dst, char *msg, size_t msglen)
{
    char why[256];
    if (!mpd__cuda_device_count(why, sizeof(why)))
        return mpd__fail(msg, msglen, MPD_EUNSUP, "%s", why);
    if (w < 1 || h < 1 || net_w < 1 || net_h < 1)
        return mpd__fail(msg, msglen, MPD_EINVAL, "bad letterbox size");
    size_t nin = (size_t)w * h * 3, nout = (size_t)3 * net_w * net_h;
    unsigned char *din = NULL;
    float *dout = NULL;
    int nw, nh, rc;
    mpd__letterbox_size(w, h, net_w, net_h, &nw, &nh);
    if ((rc = CU(cudaMalloc((void **)&din, nin))) ||
        (rc = CU(cudaMalloc((void **)&dout, nout * sizeof(float)))) ||
        (rc = CU(cudaMemcpy(din, rgb, nin, cudaMemcpyHostToDevice))) ||
        (rc = KL(mpd_cu_letterbox(din, w, h, nw, nh, net_w, net_h, dout, NULL))) ||
        (rc = CU(cudaDeviceSynchronize())) ||
        (rc = CU(cudaMemcpy(dst, dout, nout * sizeof(float), cudaMemcpyDeviceToHost))))
        goto done;
done:
    cudaFree(din);
    cudaFree(dout);
    return rc;
}
