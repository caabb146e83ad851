/* net.h - the network graph: layers built from a darknet cfg, their shapes,
 * and the fp32 parameters read from a darknet .weights file with
 * batch-norm folded into the convolution weights and bias at load time.
 *
 * Layer indices are darknet's: 0-based, counting every section after [net]. */
#ifndef MPD_NET_H
#define MPD_NET_H

#include <stddef.h>

#include "cfg.h"
#include "precision.h"

typedef enum {
    MPD_LAYER_CONV,
    MPD_LAYER_MAXPOOL,
    MPD_LAYER_ROUTE,
    MPD_LAYER_UPSAMPLE,
    MPD_LAYER_SHORTCUT,
    MPD_LAYER_YOLO,
} mpd_layer_kind;

typedef enum { MPD_ACT_LINEAR, MPD_ACT_LEAKY, MPD_ACT_RELU, MPD_ACT_LOGISTIC } mpd_act;

#define MPD_ROUTE_MAX 8
#define MPD_YOLO_MAX_ANCHORS 16

typedef struct {
    int filters, size, stride, pad; /* pad: pixels added on each side */
    int batch_normalize;
    mpd_act act;
    /* The cfg's base plan for this layer (paper Fig. 2): precision= and
     * quantize= keys; FP32 when neither is given. */
    mpd_precision cfg_precision;
    /* Owned by the net once weights are loaded: [filters][in_c][size][size]
     * with batch-norm folded in, and [filters] biases. */
    float *weights;
    float *bias;
} mpd_conv;

typedef struct {
    int size, stride;
    int padding; /* darknet's total padding; the window starts at -padding/2 */
} mpd_pool;

typedef struct {
    int n;
    int from[MPD_ROUTE_MAX]; /* absolute layer indices */
} mpd_route;

typedef struct {
    int stride;
} mpd_upsample;

typedef struct {
    int from; /* absolute layer index */
    mpd_act act;
} mpd_shortcut;

typedef struct {
    int classes;
    int total;                          /* anchors listed ("num") */
    int nmask;                          /* anchors used by this layer */
    int mask[MPD_YOLO_MAX_ANCHORS];     /* indices into anchors */
    float anchors[2 * MPD_YOLO_MAX_ANCHORS]; /* w,h pairs in network pixels */
} mpd_yolo;

typedef struct {
    mpd_layer_kind kind;
    int index;
    int line; /* cfg line of the section header */
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    double gflop; /* 2 x multiply-adds, as darknet counts */
    union {
        mpd_conv conv;
        mpd_pool pool;
        mpd_route route;
        mpd_upsample up;
        mpd_shortcut shortcut;
        mpd_yolo yolo;
    } u;
} mpd_layer;

typedef struct {
    int in_c, in_h, in_w;
    int n;
    mpd_layer *layers;
    char *cfg_path;
    size_t nparams; /* floats the weights file must hold after its header */
    int weights_loaded;
} mpd_net;

/* Parses a cfg file into a graph with shapes (no weights yet). *out is
 * owned by the caller; free with mpd_net_free. Errors name file:line. */
int mpd_net_parse(const char *cfg_path, mpd_net **out, char *msg, size_t msglen);
/* Same from an already-read cfg. */
int mpd_net_from_cfg(const mpd_cfg *cfg, mpd_net **out, char *msg, size_t msglen);

/* Reads a darknet .weights file whose size must match the graph exactly,
 * then folds batch-norm. Fails with expected vs actual bytes otherwise. */
int mpd_net_load_weights(mpd_net *net, const char *path, char *msg, size_t msglen);

/* Bytes a weights file for this net must have, for a given header version. */
size_t mpd_net_weights_file_size(const mpd_net *net, int major, int minor);

void mpd_net_free(mpd_net *net);

const char *mpd_layer_kind_name(mpd_layer_kind k);
const char *mpd_act_name(mpd_act a);

/* Element count of one image's output of layer i. */
static inline size_t mpd_layer_out_size(const mpd_layer *l)
{
    return (size_t)l->out_c * (size_t)l->out_h * (size_t)l->out_w;
}
static inline size_t mpd_layer_in_size(const mpd_layer *l)
{
    return (size_t)l->in_c * (size_t)l->in_h * (size_t)l->in_w;
}

/* Activation buffers of one pass, shared by liveness: a layer's output
 * lives from its layer to its last reader (the next layer, a route or a
 * shortcut naming it; a yolo output to the end of the pass, for the
 * detections), then its buffer takes a later layer's output. Every backend
 * plans its buffers with this, so host and device use the same memory. */
typedef struct {
    int nbufs;
    int *of;            /* per layer: its buffer */
    size_t *bytes;      /* per buffer */
    unsigned char *kept; /* per layer: 1 = no later layer writes its buffer, so
                            its output is still there after the pass */
} mpd_buffer_plan;

/* Plans the buffers of net with elem_bytes bytes per output element (e.g.
 * max_batch x sizeof(float)). reuse 0: one buffer per layer (every output
 * kept, for tests and tools that read any layer after a pass). 0 or
 * MPD_ENOMEM; *bp is freed with mpd__buffer_plan_free. */
int mpd__buffer_plan(const mpd_net *net, size_t elem_bytes, int reuse, mpd_buffer_plan *bp);
void mpd__buffer_plan_free(mpd_buffer_plan *bp);
/* Total bytes of the plan's buffers. */
size_t mpd__buffer_plan_bytes(const mpd_buffer_plan *bp);

#endif
