/* common.h - what the mpdet subcommands share: the model's default paths,
 * image lists, the machine's description, small statistics and option
 * parsing. Everything here runs on the caller's thread; nothing is shared
 * between threads. */
#ifndef MPD_TOOLS_COMMON_H
#define MPD_TOOLS_COMMON_H

#include <stdio.h>

#include "engine.h"

#ifndef MPD_MODEL_DIR
#define MPD_MODEL_DIR "models"
#endif

/* Engine options every local subcommand takes, with the model files of
 * $MPDET_MODEL_DIR (else MPD_MODEL_DIR) as defaults. The paths live in the
 * struct, so it must outlive the engine options that point into it. */
typedef struct {
    char cfg[4096], weights[4096], names[4096];
    mpd_engine_options eo;
} tool_model;
void tool_model_init(tool_model *m, mpd_log_fn log);
/* Takes --cfg, --weights, --names, --threads, --backend with value v.
 * Returns 1 when opt was one of them, 0 when not, -1 when v is invalid
 * (after printing why). */
int tool_model_option(tool_model *m, const char *opt, const char *v);

/* Log callback printing warnings and errors on stderr as "mpdet: ...". */
void tool_stderr_log(void *ud, int prio, const char *msg);

/* --images: a directory (its image files, sorted by name), one image (a
 * file named like an image, or whose first bytes are not text), or a text
 * file listing one image path per line ('#' comments, blank lines skipped).
 * Returns the count, or -1 after printing why. *out and its strings are
 * the caller's (tool_list_free). */
int tool_image_list(const char *src, char ***out);
void tool_list_free(char **v, int n);

/* Median of v[0..n-1] (sorted in place); 0 when n < 1. */
double tool_median(double *v, int n);
/* Parses a number in [lo, hi] for option opt; prints why and returns -1
 * when s is not one. */
int tool_parse_double(const char *opt, const char *s, double lo, double hi, double *out);
int tool_parse_int(const char *opt, const char *s, int lo, int hi, int *out);

/* One line naming the machine: CPU model, cores, SIMD flags that matter
 * here (AVX2, AVX-512 VNNI/FP16/BF16, AMX, NEON dot product), memory, GPU
 * if the engine runs on one. */
void tool_machine(char *buf, size_t len);

/* A plan's short name: the file name without directory and ".plan". */
void tool_plan_name(const char *path, char *buf, size_t len);

/* Opens an output file, "-" meaning stdout. NULL after printing why. */
FILE *tool_open_out(const char *path);
/* Closes (stdout: flushes) f. 0, or 1 after printing why when f is NULL or
 * a write failed. */
/* Opens path for replacing: a regular file is written to a temporary
 * beside it (its name in tmp) and tool_commit_replace renames it into
 * place once complete; anything else is opened directly. NULL on error
 * (reported). */
FILE *tool_open_replace(const char *path, char *tmp, size_t tmplen);
/* Finishes tool_open_replace: returns 0, or 1 after reporting the error
 * and removing the temporary (the old file stays as it was). */
int tool_commit_replace(FILE *f, const char *tmp, const char *path);
int tool_close_out(FILE *f);

#endif
