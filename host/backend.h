/* backend.h - the interface every compute backend implements (CPU here,
 * CUDA in cuda/). A backend is an ops table plus an opaque context, created
 * for one network at a maximum batch size. It owns the activation buffers
 * (host or device memory); the engine moves tensors in and out only through
 * set_input and read_output.
 *
 * Threading: one context is used by one thread at a time. */
#ifndef MPD_BACKEND_H
#define MPD_BACKEND_H

#include <stddef.h>

#include "mpd.h"
#include "net.h"

typedef enum { MPD_PREC_FP32, MPD_PREC_FP16, MPD_PREC_INT8, MPD_PREC_COUNT } mpd_precision;

/* Formats are data: one row per precision. */
typedef struct {
    const char *name;
    int bytes; /* per stored element */
} mpd_precision_info;

extern const mpd_precision_info mpd_precisions[MPD_PREC_COUNT];

typedef struct {
    int threads;   /* CPU threads for compute; 0 = all online cores */
    int max_batch; /* images per forward pass the buffers are sized for */
    mpd_log_fn log;
    void *log_ud;
} mpd_backend_config;

typedef struct mpd_backend_ops {
    const char *name;
    /* Allocates all buffers for net at cfg->max_batch. net (with weights
     * loaded) is borrowed and must outlive the context. */
    int (*create)(const mpd_net *net, const mpd_backend_config *cfg, void **ctx, char *msg,
                  size_t msglen);
    /* Makes the net's fp32 weights available to the backend (a device copy,
     * or a reference on the host). */
    int (*upload_weights)(void *ctx, char *msg, size_t msglen);
    /* Nonzero when layer l can run in precision p. */
    int (*supports)(void *ctx, const mpd_layer *l, mpd_precision p);
    /* Copies batch NCHW images (net input shape) from host memory. */
    int (*set_input)(void *ctx, const float *x, int batch, char *msg, size_t msglen);
    /* Runs layer i on the first batch images; may be asynchronous. */
    int (*forward_layer)(void *ctx, int i, int batch, char *msg, size_t msglen);
    /* Waits until queued work has finished. */
    int (*sync)(void *ctx, char *msg, size_t msglen);
    /* Copies layer i's output for batch images to host memory. */
    int (*read_output)(void *ctx, int i, int batch, float *dst, char *msg, size_t msglen);
    /* Optional (may be NULL): host pointer to layer i's output, valid until
     * the next forward pass. Lets the CPU backend avoid copies. */
    const float *(*output_host)(void *ctx, int i);
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
