/* metrics.h - mpdetd's counters, gauges and histograms, rendered in the
 * Prometheus text exposition format (version 0.0.4) for GET /metrics.
 *
 * Every function may be called from any thread: one mutex guards the
 * state. Recording never allocates and holds the lock only for a few
 * increments, so workers can call it on the request path; rendering takes
 * a consistent snapshot under the lock and formats it outside.
 *
 * Families rendered (base units; # HELP and # TYPE before each):
 *   mpdetd_build_info{version,backend} 1                      gauge
 *   mpdetd_requests_total{endpoint,code}                       counter
 *   mpdetd_request_duration_seconds{endpoint}                  histogram
 *   mpdetd_inference_duration_seconds                          histogram
 *   mpdetd_batch_size                                          histogram
 *   mpdetd_layer_seconds_total{layer,precision}                counter
 *   mpdetd_layer_runs_total{layer,precision}                   counter
 *   mpdetd_queue_depth, mpdetd_queue_capacity                  gauge
 *   mpdetd_abandoned_total                                     counter
 *   mpdetd_reloads_total{result="ok"|"error"}                  counter
 *   mpdetd_plan_generation                                     gauge
 * Histogram buckets (seconds): .001 .0025 .005 .01 .025 .05 .1 .25 .5 1
 * 2.5 5 10 +Inf; batch_size's (images): 1 2 4 8 16 32 64 +Inf. Request
 * durations are rendered for every endpoint, zero or not, so rates exist
 * from the start; requests_total and the layer counters only for the
 * label sets seen. */
#ifndef MPDD_METRICS_H
#define MPDD_METRICS_H

typedef struct mpdd_metrics mpdd_metrics;

/* Creates the metrics for a network of `layers` layers (darknet numbering,
 * 0..layers-1; a negative count is taken as 0). Returns a handle the
 * caller owns (mpdd_metrics_free), or NULL when memory or the mutex cannot
 * be had. Every other function accepts a NULL handle and does nothing. */
mpdd_metrics *mpdd_metrics_create(int layers);

/* Frees m (NULL is fine). No other thread may be using it. */
void mpdd_metrics_free(mpdd_metrics *m);

/* Counts one answered request. endpoint: one of "detect",
 * "vision_detection", "health", "plan", "reload", "metrics", "other"
 * (anything else, or NULL, counts as "other"). status: the HTTP status
 * sent (100..599; any other value is counted under code="0").
 * seconds: from the request's arrival to the reply (negative or NaN counts
 * as 0). */
void mpdd_metrics_request(mpdd_metrics *m, const char *endpoint, int status, double seconds);

/* Observes one inference: the forward pass alone (no decoding,
 * letterbox, post-processing or queueing), in seconds. */
void mpdd_metrics_inference(mpdd_metrics *m, double seconds);

/* Observes one forward pass of `size` images (a batch; below 1 is
 * ignored). */
void mpdd_metrics_batch(mpdd_metrics *m, int size);

/* Adds one run of layer `layer` in `precision` taking `seconds`.
 * precision: "fp32", "fp16", "int8" or "-" (what mpd_layer_info gives for
 * layers without a precision); anything else counts as "other". A layer
 * outside 0..layers-1 is ignored: metrics must not fail a request. */
void mpdd_metrics_layer(mpdd_metrics *m, int layer, const char *precision, double seconds);

/* Layer `layer` now runs in `precision` (a new plan): its series in every
 * other precision are dropped, so /metrics shows no precision no longer in
 * use. */
void mpdd_metrics_layer_precision(mpdd_metrics *m, int layer, const char *precision);

/* Counts one detection request dropped because its client left before a
 * worker took it. */
void mpdd_metrics_abandoned(mpdd_metrics *m);

/* Counts one reload; ok non-zero for a success. */
void mpdd_metrics_reload(mpdd_metrics *m, int ok);

/* Sets the request queue gauges: requests waiting now, and the limit. */
void mpdd_metrics_queue(mpdd_metrics *m, int depth, int capacity);

/* Sets the generation of the plan in use (mpd_plan_info.generation). */
void mpdd_metrics_plan(mpdd_metrics *m, unsigned long generation);

/* Renders every family. version and backend become the labels of
 * mpdetd_build_info (escaped; NULL is rendered as ""). Returns a malloc'd
 * NUL-terminated string the caller frees, or NULL (m NULL or out of
 * memory). */
char *mpdd_metrics_render(mpdd_metrics *m, const char *version, const char *backend);

#endif
