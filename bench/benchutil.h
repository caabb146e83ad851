/* benchutil.h - small helpers shared by the benchmark programs (which link
 * different engines, so they share this instead of libmpdet). */
#ifndef MPD_BENCHUTIL_H
#define MPD_BENCHUTIL_H

/* Parses an integer >= lo for option opt; prints "prog: ..." and returns -1
 * when s is not one. */
int bu_parse_int(const char *prog, const char *opt, const char *s, int lo, int *out);
/* Median of n values; sorts v in place. 0 when n <= 0. */
double bu_median(double *v, int n);
/* The part of a path after its last '/'. */
const char *bu_base_name(const char *p);

/* The model directory by default: $MPDET_MODEL_DIR, else "models". */
const char *bu_model_dir(void);
/* The files of the model in dir. */
typedef struct {
    char cfg[4096], weights[4096], names[4096];
} bu_model;
void bu_model_paths(const char *dir, bu_model *m);
/* Appends the comma-separated paths in csv (may be NULL; split in place)
 * to images[*n] (at most cap in all); with none at all, darknet's dog.jpg. */
void bu_image_list(char *csv, const char **images, int *n, int cap);
/* dog.jpg among images, else the first: the image forward passes use. */
const char *bu_forward_image(const char *const *images, int n);

#endif
