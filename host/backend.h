/* backend.h - the interface every compute backend implements (CPU here,
 * CUDA in cuda/). A backend is an ops table plus an opaque context, created
 * for one network at a maximum batch size. It owns the activation buffers
 * (host or device memory); the engine moves tensors in and out only through
 * set_input and read_output.
 *
 * Threading: one context is used by one thread at a time. Contexts made
 * by clone share their origin's weights, and a plan state made on any of
 * them runs on all: one model, one context per thread. */
#ifndef MPD_BACKEND_H
#define MPD_BACKEND_H

#include <stddef.h>

#include "mpd.h"
#include "net.h"
#include "plan.h"

typedef struct {
    int threads;   /* CPU threads for compute; 0 = all online cores */
    int max_batch; /* images per forward pass the buffers are sized for */
    int reuse_buffers; /* plan activation buffers by liveness (net.h's
                          mpd__buffer_plan); 0: one per layer */
    mpd_log_fn log;
    void *log_ud;
} mpd_backend_config;

typedef struct mpd_backend_ops {
    const char *name;
    const char *memory; /* where its buffers and weights live: "host" or "device" */
    /* Allocates all buffers for net at cfg->max_batch. net (with weights
     * loaded) is borrowed and must outlive the context. */
    int (*create)(const mpd_net *net, const mpd_backend_config *cfg, void **ctx, char *msg,
                  size_t msglen);
    /* Makes the net's fp32 weights available to the backend (a device copy,
     * or a reference on the host). */
    int (*upload_weights)(void *ctx, char *msg, size_t msglen);
    /* A context for another thread with its own activation buffers, scratch
     * and stream, sharing ctx's weights (uploaded already); plan states of
     * either run on both. ctx must outlive it. */
    int (*clone)(void *ctx, void **out, char *msg, size_t msglen);
    /* Optional (may be NULL): bytes this context holds of its own
     * (activations, scratch; not the shared weights), on the host or the
     * device, for the memory budget: what passes under plan state (NULL:
     * an fp32 plan) use. */
    size_t (*own_bytes)(void *ctx, const void *state);
    /* Optional (may be NULL): bytes a plan state holds (derived weights). */
    size_t (*plan_bytes)(void *ctx, const void *state);
    /* Nonzero when layer l can run in precision p. */
    int (*supports)(void *ctx, const mpd_layer *l, mpd_precision p);
    /* Derives what plan needs - quantized or half copies of the weights from
     * the fp32 ones already held, tensor types - off the request path.
     * Returns an opaque state for forward_layer; the plan is copied. */
    int (*plan_create)(void *ctx, const mpd_plan *plan, void **state, char *msg, size_t msglen);
    /* Frees a plan state no forward pass uses any more; accepts NULL. */
    void (*plan_destroy)(void *ctx, void *state);
    /* Copies batch NCHW images (net input shape) from host memory. */
    int (*set_input)(void *ctx, const float *x, int batch, char *msg, size_t msglen);
    /* Runs layer i on the first batch images under a plan state; may be
     * asynchronous. */
    int (*forward_layer)(void *ctx, const void *state, int i, int batch, char *msg, size_t msglen);
    /* Optional (may be NULL): runs every layer of one pass (batch images)
     * in order, as forward_layer would, and waits for it; a GPU backend may
     * replay a captured graph. layer_ms, when non-NULL, receives each
     * layer's time (device time on a GPU). */
    int (*forward)(void *ctx, const void *state, int batch, double *layer_ms, char *msg,
                   size_t msglen);
    /* Optional (may be NULL): letterboxes n RGB u8 images (w[b] x h[b], 3
     * bytes per pixel, row-major) into the input as image b, bit-identical
     * to the host letterbox. */
    int (*set_input_rgb)(void *ctx, const unsigned char *const *rgb, const int *w, const int *h,
                         int n, char *msg, size_t msglen);
    /* Waits until queued work has finished. */
    int (*sync)(void *ctx, char *msg, size_t msglen);
    /* Copies layer i's output for batch images to host memory as fp32
     * (dequantized when the plan stored it in int8 or fp16). */
    int (*read_output)(void *ctx, const void *state, int i, int batch, float *dst, char *msg,
                       size_t msglen);
    /* Optional (may be NULL): sets layer i's output for batch images from
     * host fp32 values, stored in the type the plan gives it (quantized
     * with the output's parameters when int8: values read from another
     * backend's read_output under the same plan come back unchanged). For
     * tests that run one layer of this backend on another's inputs. */
    int (*write_output)(void *ctx, const void *state, int i, int batch, const float *src,
                        char *msg, size_t msglen);
    /* Optional (may be NULL): host pointer to layer i's output when it is
     * stored as fp32 on the host, else NULL; valid until the next forward
     * pass. Lets the CPU backend avoid copies. */
    const float *(*output_host)(void *ctx, const void *state, int i);
    /* Optional: a one-line description of the kernels in use. */
    void (*describe)(void *ctx, char *buf, size_t len);
    /* Optional (may be NULL): the kernel convolution i runs under the plan
     * state, in a few words (a static string), e.g. "int8 GEMM (onednn)";
     * one that computes in a wider type than its precision says "emulated". */
    const char *(*layer_kernel)(void *ctx, const void *state, int i);
    /* Releases everything; accepts NULL. */
    void (*destroy)(void *ctx);
} mpd_backend_ops;

typedef struct mpd_backend {
    const mpd_backend_ops *ops;
    void *ctx;
} mpd_backend;

/* Backend registry (host/backend_registry.c, the one file that names the
 * concrete backends). name: "auto", "cpu" or "cuda". On success *out holds a
 * created backend with weights uploaded. */
int mpd_backend_open(const char *name, const mpd_net *net, const mpd_backend_config *cfg,
                     mpd_backend *out, char *msg, size_t msglen);
void mpd_backend_close(mpd_backend *b);

/* The CPU backend's ops table. */
extern const mpd_backend_ops mpd__cpu_backend_ops;

#endif
