/* engine.h - the public API of the mpdet engine. tools/ and daemon/ use
 * nothing else (engine-internal helpers are in internal.h).
 *
 * An engine runs one model - a network (cfg + fp32 weights, batch-norm
 * folded) with its labels and precision plans - on one backend.
 *
 * Shared and per thread: mpd_engine_open loads a model; mpd_engine_open_shared
 * opens more engines on the same model, one per worker thread. Shared, once
 * per process (per device on a GPU), read-only during passes: the network,
 * its fp32 weights, the labels, and each plan with its derived weights (int8,
 * half) and per-layer statistics; a plan loaded or committed through any
 * engine of the model is the current plan of all of them, swapped for all at
 * once. Per engine: the activation buffers, scratch, compute threads (CPU) or
 * stream, cuBLAS handle and CUDA graphs (GPU), the input staging, and the
 * last pass's outputs and plan. On a GPU the GEMM workspaces are the
 * model's too, and the engines' passes take turns on the device
 * (cuda/cuda_backend.c says why).
 *
 * Calls on one engine must not overlap: use one engine per thread, or
 * serialise. Exceptions, safe from any thread at any time, also while a
 * pass runs and concurrently with each other: the plan functions
 * (mpd_engine_check_plan, _prepare_plan, _commit_plan, _discard_plan,
 * _load_plan, _plan_info) and mpd_engine_layer_info. Concurrent
 * preparations (and loads) on one model are serialised inside it: the
 * backend's plan-time scratch is shared. mpd_engine_last_plan_info and
 * mpd_engine_last_layer_info describe the last pass and belong to the
 * thread that runs passes.
 *
 * Every function returns 0 or a negative MPD_E* code and, where it takes
 * one, writes a human-readable message into msg. */
#ifndef MPD_ENGINE_H
#define MPD_ENGINE_H

#include <stddef.h>

#include "precision.h"

/* Every function that can fail returns 0 or one of these negative codes.
 * Detail goes into a caller-owned message buffer. */
enum {
    MPD_OK = 0,
    MPD_EINVAL = -1,  /* bad argument */
    MPD_EPARSE = -2,  /* malformed cfg, plan or config text */
    MPD_EIO = -3,     /* file could not be opened or read */
    MPD_ENOMEM = -4,  /* allocation failed */
    MPD_EFORMAT = -5, /* weights or image content does not match */
    MPD_ELIMIT = -6,  /* input exceeds a configured limit */
    MPD_EUNSUP = -7,  /* valid but not supported here */
    MPD_EDEVICE = -8, /* backend/device failure */
};

/* Returns a static string naming the error code. Any thread. */
const char *mpd_strerror(int err);

/* Log priorities use syslog numbering so the daemon can pass them on. */
enum { MPD_LOG_ERR = 3, MPD_LOG_WARNING = 4, MPD_LOG_INFO = 6, MPD_LOG_DEBUG = 7 };

/* The engine logs through this callback (mpd_engine_options.log), from
 * whichever thread the logging call runs on. */
typedef void (*mpd_log_fn)(void *ud, int priority, const char *msg);

/* Monotonic clock in seconds; any thread. */
double mpd_now(void);

typedef struct mpd_engine mpd_engine;

typedef struct {
    const char *cfg_path;
    const char *weights_path;
    const char *names_path; /* one label per line; NULL: labels are "class N" */
    const char *backend;    /* "auto" (default), "cpu" or "cuda" */
    int threads;            /* CPU compute threads; 0 = all cores */
    int max_batch;          /* images per forward pass; 0 = 1 */
    const char *plan_path;  /* precision plan file; NULL: the cfg's own keys */
    /* Nonzero: activation buffers are planned by liveness (a layer's output
     * lives until its last reader, then its memory holds a later output),
     * about a third of the memory; mpd_engine_layer_output then reads only
     * the outputs still there after a pass (the yolo layers', the last
     * layer's). 0: one buffer per layer, every output readable. */
    int reuse_buffers;
    mpd_log_fn log;         /* optional */
    void *log_ud;
} mpd_engine_options;

typedef struct {
    int w, h;            /* pixels */
    unsigned char *data; /* RGB, row-major, 3 bytes per pixel */
} mpd_image;

typedef struct {
    int class_id;
    const char *label; /* owned by the engine, valid until mpd_engine_close */
    float confidence;  /* objectness x class probability, 0..1 */
    float x0, y0, x1, y1; /* box in original image pixels, clipped to the image */
} mpd_detection;

typedef struct {
    double decode_ms, preprocess_ms, inference_ms, postprocess_ms;
} mpd_timings;

typedef struct {
    int image_w, image_h;
    int count;
    mpd_detection *det; /* sorted by confidence, best first; free with mpd_result_free */
    mpd_timings t;
    /* The generation (mpd_plan_info) of the plan that computed this result,
     * which a plan loaded meanwhile does not change. */
    unsigned long plan_generation;
} mpd_result;

typedef struct {
    float thresh; /* minimum confidence; darknet's detector default is 0.25 */
    float nms;    /* IoU above which a weaker box of the same class is dropped */
} mpd_detect_params;

#define MPD_DETECT_DEFAULTS {0.25f, 0.45f}

typedef struct {
    int index;
    const char *kind; /* "conv", "max", "route", "upsample", "shortcut", "yolo" */
    int in_c, in_h, in_w, out_c, out_h, out_w;
    int filters, size, stride; /* conv and maxpool; 0 otherwise */
    double gflop;
    const char *precision; /* "fp32", ... for convolutions; "-" otherwise */
    const char *kernel;    /* what runs a convolution under the plan ("int8 GEMM
                              (onednn)", "fp16 emulated: fp32 GEMM", ...); "-" */
    double last_ms;        /* time of this layer in the last forward pass */
    double total_ms;       /* summed over all forward passes */
    long long runs;
} mpd_layer_info;

/* Loads cfg, weights and names and prepares the backend. On success *out
 * is owned by the caller (mpd_engine_close). */
int mpd_engine_open(const mpd_engine_options *opt, mpd_engine **out, char *msg, size_t msglen);
/* Another engine on e's model, for another thread (see the top of this
 * file): shares e's network, labels, weights and plans; has its own buffers
 * and threads, with e's backend, threads, max_batch and reuse_buffers. The
 * engines of a model close in any order; the model goes with the last. */
int mpd_engine_open_shared(mpd_engine *e, mpd_engine **out, char *msg, size_t msglen);
/* Closes one engine (and the model with its last engine). */
void mpd_engine_close(mpd_engine *e);

/* Memory by owner, for budgets (the daemon's --check-config): bytes on the
 * host for the CPU backend, on the device for a GPU (whose host side is
 * small). Any thread. */
typedef struct {
    size_t weights; /* fp32 weights and biases: once per model */
    size_t plan;    /* the current plan's derived weights (int8, half): once per model */
    size_t engine;  /* this engine's own: activation buffers, scratch, staging */
    const char *where; /* "host" or "device" */
} mpd_memory_info;
void mpd_engine_memory(mpd_engine *e, mpd_memory_info *mi);

/* Precision plans (see the presets in config/). Loading parses and validates the
 * file, derives the quantized / half weights off the request path, then
 * swaps the plan in: passes already running finish on the old one. On any
 * error the current plan stays. path NULL = the cfg's base plan. Any
 * thread (see the top of this file). Same as mpd_engine_prepare_plan, then
 * mpd_engine_commit_plan with generation 0. */
int mpd_engine_load_plan(mpd_engine *e, const char *path, char *msg, size_t msglen);
/* Parses and validates only (the backend's supports() included, not its
 * plan state). Any thread. */
int mpd_engine_check_plan(mpd_engine *e, const char *path, char *msg, size_t msglen);

/* A plan in two steps, for callers that apply one plan to several engines
 * all or nothing (the daemon: one engine per worker): prepare on every
 * engine, then commit on every engine if all preparations succeeded, else
 * discard the ones that did.
 *
 * mpd_engine_prepare_plan does everything that can fail - parses and
 * validates path (NULL: the cfg's base plan), builds the backend's state
 * (quantized or half weights, on the device for a GPU) - while the current
 * plan keeps serving. On success *out is owned by the caller, who must pass
 * it to mpd_engine_commit_plan or mpd_engine_discard_plan of the same
 * engine before closing it; on error *out is NULL, the message names the
 * file (and line, or layer) and nothing changed.
 *
 * mpd_engine_commit_plan cannot fail: it makes p the current plan (passes
 * already running finish on the old one, which is freed when the last of
 * them lets go) and takes ownership of p. Its generation is `generation`
 * when nonzero - so several engines can carry one number: the caller picks
 * it, e.g. one more than the largest generation of its engines, and should
 * keep it increasing - else the engine's last generation + 1. Later
 * commits with 0 count on from it.
 *
 * mpd_engine_discard_plan frees a prepared plan that was not committed;
 * p NULL is fine. All three: any thread (see the top of this file). */
typedef struct mpd_prepared_plan mpd_prepared_plan;
int mpd_engine_prepare_plan(mpd_engine *e, const char *path, mpd_prepared_plan **out, char *msg,
                            size_t msglen);
void mpd_engine_commit_plan(mpd_engine *e, mpd_prepared_plan *p, unsigned long generation);
void mpd_engine_discard_plan(mpd_engine *e, mpd_prepared_plan *p);

typedef struct {
    unsigned long generation;  /* 1 for the plan applied at open, +1 per load (or
                                  as mpd_engine_commit_plan was told) */
    const char *scheme;        /* "symmetric" or "affine" */
    char source[512];          /* "cfg" or the plan file */
    char calibration[512];     /* calibration file, "" if none */
    int layers[MPD_PREC_COUNT]; /* convolutions in fp32, fp16, int8, bf16 */
} mpd_plan_info;
/* The current plan: the one the next pass will use. Any thread. */
int mpd_engine_plan_info(mpd_engine *e, mpd_plan_info *info);
/* The plan of the last forward pass (detect or forward), the one that
 * computed the last results, whatever was committed since. MPD_EINVAL
 * before the first pass. Only from the thread that runs passes (the pass
 * moves what it reads), e.g. a worker right after its mpd_engine_detect. */
int mpd_engine_last_plan_info(mpd_engine *e, mpd_plan_info *info);

/* Calibration: runs the n images through the network in fp32 (twice:
 * ranges, then histograms), chooses each layer output's int8 threshold
 * with method ("minmax", "percentile" - at the given percentile of |x| -
 * "entropy", "mse" or "auto"), and writes a calibration file for plan
 * files to name. "auto" then runs a third pass over up to 24 of the images:
 * for each convolution it quantizes the fp32 input with each candidate
 * threshold (minmax, percentile 99.99 and 99.999, entropy and mse of that
 * tensor and, through a maxpool, of the convolution feeding it), runs the
 * int8 convolution and keeps the candidate whose output is closest to fp32
 * (least squared error); tensors that feed no convolution get mse. The
 * file records each choice and its error. Keep calibration images apart
 * from the images you evaluate on. */
int mpd_engine_calibrate(mpd_engine *e, const char *const *images, int n, const char *method,
                         double percentile, const char *out_path, char *msg, size_t msglen);

/* One line on the kernels the backend uses (e.g. which int8 GEMM path). */
void mpd_engine_describe(const mpd_engine *e, char *buf, size_t len);

/* Per-layer times (mpd_engine_layer_info's last_ms, total_ms, runs) are
 * measured by default; off, passes leave them as they are, and a GPU
 * backend runs a pass without timing events (and can replay its graph on
 * any CUDA version). Switch it per pass to sample (the daemon's
 * layer_timing_every). */
void mpd_engine_set_layer_timing(mpd_engine *e, int on);

/* Name of the backend in use ("cpu", "cuda"). */
const char *mpd_engine_backend(const mpd_engine *e);
int mpd_engine_layer_count(const mpd_engine *e);
/* Layer i's shape, and its precision and times (last_ms, total_ms, runs)
 * under the current plan: what the next pass will run; runs counts passes
 * under that plan only. MPD_EINVAL for i out of range. Any thread. */
int mpd_engine_layer_info(const mpd_engine *e, int i, mpd_layer_info *info);
/* The same under the plan of the last pass (mpd_engine_last_plan_info):
 * the precision layer i ran in and the time it took in that pass.
 * MPD_EINVAL for i out of range or before the first pass. Only from the
 * thread that runs passes. */
int mpd_engine_last_layer_info(const mpd_engine *e, int i, mpd_layer_info *info);
void mpd_engine_input_shape(const mpd_engine *e, int *c, int *h, int *w);
int mpd_engine_max_batch(const mpd_engine *e);
int mpd_engine_class_count(const mpd_engine *e);
const char *mpd_engine_label(const mpd_engine *e, int class_id);

/* Detects objects in decoded images; results[i] is filled for images[i].
 * n must not exceed the engine's max_batch. */
int mpd_engine_detect(mpd_engine *e, const mpd_image *images, int n,
                      const mpd_detect_params *p, mpd_result *results, char *msg,
                      size_t msglen);
/* The same with parameters per image: params[i] (n of them; NULL = the
 * defaults for all) post-processes images[i], so requests that ask for
 * different thresholds share one forward pass (the daemon's batches). The
 * forward pass does not depend on the parameters: each image's detections
 * are those mpd_engine_detect gives it with params[i]. */
int mpd_engine_detect_each(mpd_engine *e, const mpd_image *images, int n,
                           const mpd_detect_params *params, mpd_result *results, char *msg,
                           size_t msglen);
/* Convenience: decode (with a pixel limit, 0 = none) and detect one image. */
int mpd_engine_detect_memory(mpd_engine *e, const void *buf, size_t len, long long max_pixels,
                             const mpd_detect_params *p, mpd_result *res, char *msg,
                             size_t msglen);
void mpd_result_free(mpd_result *r);

/* Runs the network on batch ready-made NCHW input tensors (values in 0..1),
 * for parity tests and benchmarks. Layer outputs are then readable.
 * input NULL runs again on the input already in the backend (the last
 * forward's or detect's, at least batch images): a benchmark of the pass
 * alone, without the upload. */
int mpd_engine_forward(mpd_engine *e, const float *input, int batch, char *msg, size_t msglen);
/* Letterboxes one image into a C x H x W input tensor, as detect does. */
int mpd_engine_preprocess(const mpd_engine *e, const mpd_image *im, float *input);
/* Element count of one image's output of layer i. */
size_t mpd_engine_layer_output_size(const mpd_engine *e, int i);
/* Copies layer i's output of the last forward pass for batch images. */
int mpd_engine_layer_output(mpd_engine *e, int i, int batch, float *dst, char *msg,
                            size_t msglen);

/* Overflow statistics, the paper's Tables 1 and 2, of one convolution on
 * one image: every int8 x int8 product of the convolution (padding taps
 * included) and every window sum, in three quantizations of the layer's
 * input and weights - the paper's affine scheme on the stored codes, the
 * same on the zero-point-corrected values, and the symmetric scheme. */
typedef enum {
    MPD_OVF_AFFINE_CODES,
    MPD_OVF_AFFINE_CORRECTED,
    MPD_OVF_SYMMETRIC,
    MPD_OVF_NVARIANTS
} mpd_ovf_variant;
typedef struct {
    long long products, sums;                 /* M*N*K and M*N for one image */
    long long prod_ovf[MPD_OVF_NVARIANTS];    /* products outside int8 [-128, 127] */
    long long sum_ovf[MPD_OVF_NVARIANTS];     /* window sums outside int16 */
    long long max_abs_sum[MPD_OVF_NVARIANTS]; /* largest |window sum| */
} mpd_ovf_counts;
/* "affine_codes", "affine_corrected", "symmetric". */
const char *mpd_ovf_variant_name(mpd_ovf_variant v);

/* Runs image im through the current plan and fills out[i] for every layer
 * i (zeros for layers that are not convolutions) from the input that
 * layer received. The symmetric variant's activation scale comes from the
 * calibration file named (NULL: from the plan's calibration when it has
 * one), else from the input's absmax on this image. */
int mpd_engine_overflow(mpd_engine *e, const mpd_image *im, const char *calibration,
                        mpd_ovf_counts *out, char *msg, size_t msglen);

/* Reads a whole file into a malloc'd buffer (*buf, *len; free(*buf)).
 * Returns 0, MPD_EIO or MPD_ENOMEM, with a message naming the file. */
int mpd_file_read(const char *path, unsigned char **buf, size_t *len, char *msg, size_t msglen);

/* Images. Decoding reads the header first and refuses more than
 * max_pixels (0 = no limit) before allocating. Grey, grey+alpha and RGBA
 * become RGB. */
int mpd_image_decode(const void *buf, size_t len, long long max_pixels, mpd_image *out,
                     char *msg, size_t msglen);
int mpd_image_load(const char *path, long long max_pixels, mpd_image *out, char *msg,
                   size_t msglen);
void mpd_image_free(mpd_image *im);

/* The formats stb_image decodes, as identified by their first bytes. */
typedef enum {
    MPD_IMAGE_UNKNOWN = 0,
    MPD_IMAGE_JPEG,
    MPD_IMAGE_PNG,
    MPD_IMAGE_BMP,
    MPD_IMAGE_GIF,
    MPD_IMAGE_TGA,
    MPD_IMAGE_PNM, /* binary PGM and PPM (P5, P6) */
    MPD_IMAGE_PSD,
    MPD_IMAGE_HDR, /* Radiance RGBE */
    MPD_IMAGE_PIC, /* Softimage PIC */
    MPD_IMAGE_NFORMATS
} mpd_image_format;

/* Sets of formats are bit masks of these bits. */
#define MPD_IMAGE_FORMAT_BIT(f) (1u << (f))
/* What cameras send: the daemon's default. */
#define MPD_IMAGE_FORMATS_CAMERA                                                                   \
    (MPD_IMAGE_FORMAT_BIT(MPD_IMAGE_JPEG) | MPD_IMAGE_FORMAT_BIT(MPD_IMAGE_PNG))
/* Everything stb_image reads: the command line's set. */
#define MPD_IMAGE_FORMATS_ALL                                                                      \
    (((1u << MPD_IMAGE_NFORMATS) - 1) & ~MPD_IMAGE_FORMAT_BIT(MPD_IMAGE_UNKNOWN))

/* Identifies buf by its magic bytes (TGA, which has none, by stb_image's own
 * header test, after every format that has one). Reads at most 92 bytes;
 * any thread. */
mpd_image_format mpd_image_sniff(const void *buf, size_t len);

/* "jpeg", "png", ... ("unknown" for MPD_IMAGE_UNKNOWN); a static string. */
const char *mpd_image_format_name(mpd_image_format f);

/* Parses a comma-separated list of format names ("jpeg,png,bmp"; case and
 * blanks around names ignored; "jpg" is "jpeg"; "all" is every format) into
 * *set. Returns 0, or MPD_EPARSE with a message naming the bad entry (and
 * *set = 0). For a configuration setting; any thread. */
int mpd_image_formats_parse(const char *list, unsigned *set, char *msg, size_t msglen);

/* Writes set as "jpeg, png" ("none" when empty) into buf, always
 * terminated; the text parses back with mpd_image_formats_parse. */
void mpd_image_formats_str(unsigned set, char *buf, size_t n);

/* mpd_image_decode with the formats accepted: data in a format outside
 * allowed (a set of MPD_IMAGE_FORMAT_BIT) is refused with MPD_EFORMAT and
 * "BMP images are not accepted (allowed: jpeg, png)" before it is parsed.
 * Every format is refused with MPD_EFORMAT and "truncated ..." when the data
 * ends before the image does. With max_pixels > 0, more pixels is
 * MPD_ELIMIT (from the header, before any pixel memory), and so is a
 * decode that would need more than mpd_image_decode_budget(max_pixels,
 * len) bytes. On success out->data is an ordinary malloc block owned by the
 * caller (mpd_image_free, or free, on any thread). Any thread. */
int mpd_image_decode_formats(const void *buf, size_t len, long long max_pixels, unsigned allowed,
                             mpd_image *out, char *msg, size_t msglen);

/* The most bytes decoding an image of len bytes may hold at once under a
 * pixel limit of max_pixels (0 when max_pixels <= 0: no bound). See the
 * table in image.c for what real images need. */
size_t mpd_image_decode_budget(long long max_pixels, size_t len);

/* Draws boxes with "label NN%" captions into im. */
void mpd_image_draw_detections(mpd_image *im, const mpd_detection *dets, int n);
int mpd_image_write_png(const mpd_image *im, const char *path, char *msg, size_t msglen);

#endif
