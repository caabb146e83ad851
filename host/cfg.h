/* cfg.h - darknet .cfg reader: [sections] of key=value lines.
 *
 * The reader keeps each key's line number so every later error can name
 * "file:line". Keys are marked as used by the typed getters;
 * mpd_cfg_check_unused() then reports the first key nobody asked for, which
 * is how unknown keys become errors instead of being silently ignored. */
#ifndef MPD_CFG_H
#define MPD_CFG_H

#include <stddef.h>

typedef struct {
    char *key;
    char *val;
    int line;
    int used;
} mpd_cfg_kv;

typedef struct {
    char *name; /* without brackets, e.g. "convolutional" */
    int line;
    mpd_cfg_kv *kv;
    int nkv;
} mpd_cfg_section;

typedef struct {
    char *path; /* name used in messages */
    mpd_cfg_section *sec;
    int nsec;
} mpd_cfg;

/* Parses text (NUL-terminated); name is used in error messages. On success
 * *out is owned by the caller (free with mpd_cfg_free). */
int mpd_cfg_parse_string(const char *text, const char *name, mpd_cfg **out, char *msg,
                         size_t msglen);
/* Reads and parses a file. */
int mpd_cfg_parse_file(const char *path, mpd_cfg **out, char *msg, size_t msglen);
void mpd_cfg_free(mpd_cfg *cfg);

/* Looks up key in section s and marks it used; NULL when absent. */
mpd_cfg_kv *mpd_cfg_find(mpd_cfg_section *s, const char *key);

/* Typed getters. When the key is absent *out = def and 0 is returned;
 * a present key must parse completely and lie in [lo, hi]. */
int mpd_cfg_get_int(const mpd_cfg *c, mpd_cfg_section *s, const char *key, int def, int lo,
                    int hi, int *out, char *msg, size_t msglen);
int mpd_cfg_get_float(const mpd_cfg *c, mpd_cfg_section *s, const char *key, float def,
                      float lo, float hi, float *out, char *msg, size_t msglen);
/* Comma-separated integers, at most cap of them; *n receives the count
 * (0 when absent). */
int mpd_cfg_get_int_list(const mpd_cfg *c, mpd_cfg_section *s, const char *key, int *vals,
                         int cap, int *n, char *msg, size_t msglen);
int mpd_cfg_get_float_list(const mpd_cfg *c, mpd_cfg_section *s, const char *key, float *vals,
                           int cap, int *n, char *msg, size_t msglen);

/* Fails naming the first key of s that no getter asked for. */
int mpd_cfg_check_unused(const mpd_cfg *c, const mpd_cfg_section *s, char *msg, size_t msglen);

/* Strict number parsing shared with other text formats (plan, config). */
int mpd__parse_int(const char *s, long lo, long hi, long *out);
int mpd__parse_float(const char *s, double lo, double hi, double *out);

#endif
