/* engine.h - the public API of the mpdet engine. tools/ and daemon/ use
 * nothing else.
 *
 * An engine holds one network (cfg + fp32 weights, batch-norm folded) on one
 * backend. Calls on one engine must not overlap: use one engine per thread,
 * or serialise. Exceptions, safe from any thread at any time: the plan
 * functions (load/check/info) and mpd_engine_layer_info.
 *
 * Every function returns 0 or a negative MPD_E* code and, where it takes
 * one, writes a human-readable message into msg. */
#ifndef MPD_ENGINE_H
#define MPD_ENGINE_H

#include <stddef.h>

#include "mpd.h"

typedef struct mpd_engine mpd_engine;

typedef struct {
    const char *cfg_path;
    const char *weights_path;
    const char *names_path; /* one label per line; NULL: labels are "class N" */
    const char *backend;    /* "auto" (default), "cpu" or "cuda" */
    int threads;            /* CPU compute threads; 0 = all cores */
    int max_batch;          /* images per forward pass; 0 = 1 */
    const char *plan_path;  /* precision plan file; NULL: the cfg's own keys */
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
    double last_ms;        /* time of this layer in the last forward pass */
    double total_ms;       /* summed over all forward passes */
    long long runs;
} mpd_layer_info;

/* Loads cfg, weights and names and prepares the backend. On success *out
 * is owned by the caller (mpd_engine_close). */
int mpd_engine_open(const mpd_engine_options *opt, mpd_engine **out, char *msg, size_t msglen);
void mpd_engine_close(mpd_engine *e);

/* Precision plans (see the presets in config/). Loading parses and validates the
 * file, derives the quantized / half weights off the request path, then
 * swaps the plan in: passes already running finish on the old one. On any
 * error the current plan stays. path NULL = the cfg's base plan. May be
 * called from another thread than the one running detections. */
int mpd_engine_load_plan(mpd_engine *e, const char *path, char *msg, size_t msglen);
/* Parses and validates only. */
int mpd_engine_check_plan(mpd_engine *e, const char *path, char *msg, size_t msglen);

typedef struct {
    unsigned long generation;  /* 1 for the plan applied at open, +1 per load */
    const char *scheme;        /* "symmetric" or "affine" */
    char source[512];          /* "cfg" or the plan file */
    char calibration[512];     /* calibration file, "" if none */
    int layers[3];             /* convolutions in fp32, fp16, int8 */
} mpd_plan_info;
int mpd_engine_plan_info(mpd_engine *e, mpd_plan_info *info);

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
 * measured by default; off, a GPU backend runs a pass without timing
 * events. */
void mpd_engine_set_layer_timing(mpd_engine *e, int on);

/* Name of the backend in use ("cpu", "cuda"). */
const char *mpd_engine_backend(const mpd_engine *e);
int mpd_engine_layer_count(const mpd_engine *e);
int mpd_engine_layer_info(const mpd_engine *e, int i, mpd_layer_info *info);
void mpd_engine_input_shape(const mpd_engine *e, int *c, int *h, int *w);
int mpd_engine_max_batch(const mpd_engine *e);
int mpd_engine_class_count(const mpd_engine *e);
const char *mpd_engine_label(const mpd_engine *e, int class_id);

/* Detects objects in decoded images; results[i] is filled for images[i].
 * n must not exceed the engine's max_batch. */
int mpd_engine_detect(mpd_engine *e, const mpd_image *images, int n,
                      const mpd_detect_params *p, mpd_result *results, char *msg,
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
/* Draws boxes with "label NN%" captions into im. */
void mpd_image_draw_detections(mpd_image *im, const mpd_detection *dets, int n);
int mpd_image_write_png(const mpd_image *im, const char *path, char *msg, size_t msglen);

#endif
