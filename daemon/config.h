/* config.h - mpdetd's configuration file, mpdetd.conf.
 *
 * The format is one `key = value` per line; `#` starts a comment (a whole
 * line, or after whitespace at the end of a value); blank lines are
 * ignored; whitespace around keys and values is trimmed. A value may be
 * written in double quotes to keep leading or trailing spaces or a " #"
 * (no escapes inside). There are no sections.
 *
 * One static table in config.c describes every setting (name, type,
 * bounds, default, whether a reload may change it, one line of help) and
 * drives the defaults, the parser, the reload check and the printed
 * table, so these cannot disagree. */
#ifndef MPDD_CONFIG_H
#define MPDD_CONFIG_H

#include <stddef.h>
#include <stdio.h>

typedef struct {
    char socket[256];      /* Unix socket path; at most 107 bytes (sun_path) */
    unsigned socket_mode;  /* permission bits for the socket, 0..0777 */
    char socket_group[64]; /* group for the socket; "" = keep the process's */
    char tcp_listen[64];   /* "127.0.0.1:PORT", "[::1]:PORT" or "" = off */
    char cfg[512], weights[512], names[512];
    char plan[512];  /* "" = the cfg's base plan */
    char backend[8]; /* "auto", "cpu" or "cuda" */
    int threads;     /* 0 = all cores */
    int workers;
    int max_batch;       /* requests per forward pass, 1..64 */
    int batch_window_us; /* wait for a batch to fill; 0 = never wait */
    long long max_body, max_header; /* bytes */
    long long max_pixels;
    int queue_depth, max_clients;
    int timeout; /* seconds */
    float thresh, nms;
    float min_thresh;   /* floor on a request's threshold */
    int max_detections; /* most detections in one reply */
    int layer_timing_every; /* time the layers of one pass in this many; 0 never */
    int log_level; /* syslog number: 3 err, 4 warning, 6 info, 7 debug */
    char image_formats[64]; /* "jpeg,png": mpd_image_formats_parse's syntax */
    int allow_root;        /* run even with uid 0 */
    char reload_access[8]; /* "owner": root or the daemon's uid; "socket": any peer */
    char api_key[128];     /* "" = none; else required on the TCP listener */
} mpdd_config;

/* Fills c with every setting's default (those of the table, which
 * config/mpdetd.conf documents). Never fails. Thread-safe (touches only
 * *c). */
void mpdd_config_defaults(mpdd_config *c);

/* Parses the file at path over the defaults. Returns 0 and fills *out, or
 * MPD_EIO (cannot open or read) / MPD_EPARSE (unknown key, bad value, out of
 * range, duplicate key, line without '=') with "path:line: ..." in msg; on
 * error *out is left untouched, so a failed reload cannot clobber the
 * running configuration. Relative paths in the file stay as written (they
 * resolve against the daemon's working directory). Thread-safe. */
int mpdd_config_load(const char *path, mpdd_config *out, char *msg, size_t msglen);

/* For a reload: returns 0 if next differs from cur only in reloadable
 * settings (plan, thresh, nms, min_thresh, max_detections,
 * layer_timing_every, batch_window_us, log_level, image_formats, reload_access, api_key),
 * else MPD_EINVAL with msg naming
 * the first setting in table order that cannot change at run time
 * ("socket cannot change on reload; restart mpdetd"). Thread-safe. */
int mpdd_config_check_reload(const mpdd_config *cur, const mpdd_config *next, char *msg,
                             size_t msglen);

/* Copies every reloadable setting of next into cur, and nothing else (the
 * table says which: a setting made reloadable there is applied without
 * another list to update). Thread-safe (touches only *cur). */
void mpdd_config_apply_reload(mpdd_config *cur, const mpdd_config *next);

/* Writes the settings table (name, type, bounds, default, reloadable,
 * help) as plain text to f, for `mpdetd --help-config` and the README.
 * Thread-safe as far as stdio is. */
void mpdd_config_print_table(FILE *f);

/* Splits a non-empty, already validated tcp_listen value into the address
 * evhttp_bind_socket() wants ("127.0.0.1" or "::1", without brackets) and
 * the port. Returns 0, or MPD_EINVAL with a message when listen is empty,
 * not loopback or malformed. Thread-safe. */
int mpdd_config_tcp_split(const char *listen, char *host, size_t hostlen, int *port, char *msg,
                          size_t msglen);

#endif
