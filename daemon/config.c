/* config.c - mpdetd.conf: one table of settings drives the defaults, the
 * parser, the reload check and the printed reference. */
#define _POSIX_C_SOURCE 200809L
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "internal.h"

typedef enum {
    T_STRING, /* free text, stored in a char array */
    T_PATH,   /* a file name, stored as written */
    T_LISTEN, /* "" or a loopback "ADDR:PORT", stored as written */
    T_INT,    /* decimal, stored in an int */
    T_INT64,  /* decimal, stored in a long long */
    T_SIZE,   /* decimal with an optional k/M/G suffix (base 1024), long long */
    T_OCTAL,  /* octal digits, stored in an unsigned */
    T_BOOL,   /* yes/no, true/false, on/off, 1/0, stored in an int */
    T_ENUM,   /* one of choices, stored as the name or as values[i] */
    T_FLOAT,  /* decimal, stored in a float */
    T_FORMATS, /* a list of image formats (mpd_image_formats_parse), stored as written */
} kind;

typedef struct {
    const char *name;
    kind type;
    size_t off, size;           /* where in mpdd_config, and the field's size */
    double lo, hi;              /* numbers: inclusive bounds; text: length in bytes */
    const char *def;            /* the default, written as it would be in the file */
    const char *const *choices; /* T_ENUM: NULL-terminated */
    const int *values;          /* T_ENUM: stored as values[i]; NULL: stored as the name */
    int reloadable;
    const char *help;
} setting;

/* The field's offset and size, with a compile-time check that its C type is
 * what the setting's kind writes: a table row naming the wrong field type
 * would otherwise scribble over its neighbours. A mismatch makes the array
 * size negative. Char arrays decay to char * inside _Generic. */
/* clang-format off */
#define FIELD(f, T)                                                                        \
    .off = offsetof(mpdd_config, f),                                                       \
    .size = sizeof(((mpdd_config *)0)->f) *                                                \
            sizeof(char[_Generic(((mpdd_config *)0)->f, T: 1, default: -1)])
/* clang-format on */

static const char *const backends[] = {"auto", "cpu", "cuda", NULL};
static const char *const accesses[] = {"owner", "socket", NULL};
static const char *const levels[] = {"err", "warning", "info", "debug", NULL};
static const int level_values[] = {MPD_LOG_ERR, MPD_LOG_WARNING, MPD_LOG_INFO, MPD_LOG_DEBUG};

#define MODELS "/usr/share/mpdet/models/"

/* Bounds of text settings are byte lengths; the upper one leaves room for
 * the NUL. The socket's is sun_path's 108 bytes less the NUL, so a path that
 * bind() would truncate is refused here with a line number. */
static const setting table[] = {
    {"socket", T_PATH, FIELD(socket, char *), 1, 107, "/run/mpdetd/mpdetd.sock", NULL, NULL, 0,
     "Unix socket to listen on (HTTP/1.1); clients use curl --unix-socket."},
    {"socket_mode", T_OCTAL, FIELD(socket_mode, unsigned), 0, 0777, "0660", NULL, NULL, 0,
     "Permission bits of the socket file, in octal."},
    {"socket_group", T_STRING, FIELD(socket_group, char *), 0, 63, "", NULL, NULL, 0,
     "Group to own the socket file; empty keeps the daemon's own group."},
    {"tcp_listen", T_LISTEN, FIELD(tcp_listen, char *), 0, 63, "", NULL, NULL, 0,
     "Extra TCP listener, 127.0.0.1:PORT or [::1]:PORT (loopback only); empty = off."},
    {"cfg", T_PATH, FIELD(cfg, char *), 1, 511, MODELS "yolov3-tiny.cfg", NULL, NULL, 0,
     "darknet network description (.cfg)."},
    {"weights", T_PATH, FIELD(weights, char *), 1, 511, MODELS "yolov3-tiny.weights", NULL, NULL, 0,
     "darknet fp32 weights for cfg."},
    {"names", T_PATH, FIELD(names, char *), 1, 511, MODELS "coco.names", NULL, NULL, 0,
     "Class labels, one per line."},
    {"plan", T_PATH, FIELD(plan, char *), 0, 511, "", NULL, NULL, 1,
     "Precision plan file; empty = the cfg's base plan. A reload applies a new one."},
    {"backend", T_ENUM, FIELD(backend, char *), 0, 0, "auto", backends, NULL, 0,
     "Compute backend; auto uses CUDA when a GPU is usable, else the CPU."},
    {"threads", T_INT, FIELD(threads, int), 0, 1024, "0", NULL, NULL, 0,
     "CPU compute threads; 0 = all cores."},
    {"workers", T_INT, FIELD(workers, int), 1, 64, "1", NULL, NULL, 0, "Inference worker threads."},
    {"max_batch", T_INT, FIELD(max_batch, int), 1, 64, "1", NULL, NULL, 0,
     "Most queued requests a worker runs as one forward pass; 1 = one pass per request. Each "
     "worker's engine holds buffers for this many images, and a batch holds every one of its "
     "images decoded at once."},
    {"batch_window_us", T_INT, FIELD(batch_window_us, int), 0, 1000000, "2000", NULL, NULL, 1,
     "With max_batch > 1: microseconds a worker that took a request waits for more to fill "
     "its batch when fewer are queued; 0 = run what is queued at once."},
    {"max_body", T_SIZE, FIELD(max_body, long long), 1024, 1024.0 * 1024 * 1024, "16M", NULL, NULL,
     0, "Largest request body accepted; a larger one gets 413."},
    {"max_header", T_SIZE, FIELD(max_header, long long), 1024, 1024 * 1024, "16k", NULL, NULL, 0,
     "Largest request header block accepted."},
    {"max_pixels", T_INT64, FIELD(max_pixels, long long), 1, 2147483648.0, "40000000", NULL, NULL,
     0, "Largest image (width x height) decoded; a larger one gets 413."},
    {"queue_depth", T_INT, FIELD(queue_depth, int), 1, 10000, "16", NULL, NULL, 0,
     "Requests waiting for a worker; beyond this new ones get 503."},
    {"max_clients", T_INT, FIELD(max_clients, int), 1, 100000, "256", NULL, NULL, 0,
     "Client connections open at once; a request on one more gets 503."},
    {"timeout", T_INT, FIELD(timeout, int), 1, 3600, "30", NULL, NULL, 0,
     "Seconds a connection may stay idle while sending or receiving."},
    {"thresh", T_FLOAT, FIELD(thresh, float), 0, 1, "0.25", NULL, NULL, 1,
     "Default minimum confidence of a detection; a request may ask for another."},
    {"nms", T_FLOAT, FIELD(nms, float), 0, 1, "0.45", NULL, NULL, 1,
     "Default IoU above which the weaker of two boxes of a class is dropped."},
    {"min_thresh", T_FLOAT, FIELD(min_thresh, float), 0, 1, "0.01", NULL, NULL, 1,
     "Lowest confidence a request may ask for; a lower thresh is raised to it (bounds the work "
     "of thresh=0)."},
    {"max_detections", T_INT, FIELD(max_detections, int), 1, 10000, "100", NULL, NULL, 1,
     "Most detections in one reply, best first; weaker ones are left out."},
    {"layer_timing_every", T_INT, FIELD(layer_timing_every, int), 0, 1000000, "100", NULL, NULL,
     1,
     "Each worker times the layers of one pass in this many, for the per-layer metrics and "
     "/v1/plan; 0 = never, 1 = every pass. Untimed passes replay a CUDA graph on every CUDA "
     "version and skip the per-layer events."},
    {"image_formats", T_FORMATS, FIELD(image_formats, char *), 1, 63, "jpeg,png", NULL, NULL, 1,
     "Image formats accepted, told apart by their first bytes; others get 400. all = every "
     "format stb_image reads."},
    {"allow_root", T_BOOL, FIELD(allow_root, int), 0, 1, "no", NULL, NULL, 0,
     "Run even as root; by default mpdetd refuses, so a mistake in a unit cannot give a "
     "parser of network input every privilege."},
    {"reload_access", T_ENUM, FIELD(reload_access, char *), 0, 0, "owner", accesses, NULL, 1,
     "Who may POST /v1/reload on the Unix socket: owner = root or the daemon's own user "
     "(SO_PEERCRED); socket = anyone who may open the socket."},
    {"api_key", T_STRING, FIELD(api_key, char *), 0, 127, "", NULL, NULL, 1,
     "Key required on the TCP listener (header X-Api-Key, query api_key or DeepStack's form "
     "field api_key); empty = TCP is open for detection and closed for reloads."},
    {"log_level", T_ENUM, FIELD(log_level, int), 0, 0, "info", levels, level_values, 1,
     "Least important log priority written."},
};
#define NSETTINGS (sizeof(table) / sizeof(table[0]))

/* Config values are the administrator's, but they still end up in log
 * lines: show at most this much of one in a message. */
#define SHOW 64

static void *field(const setting *s, mpdd_config *c)
{
    return (char *)c + s->off;
}

static const void *cfield(const setting *s, const mpdd_config *c)
{
    return (const char *)c + s->off;
}

static const setting *find(const char *name)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strcmp(table[i].name, name) == 0)
            return &table[i];
    return NULL;
}

/* Parses a decimal integer that must fill all of v. Leading blanks and '+'
 * are refused (strtoll would take them) so "1 0" cannot pass as 1. */
static int parse_ll(const char *v, int allow_minus, long long *out, const char **end)
{
    const char *p = v;
    if (*p == '-' && allow_minus)
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    char *e;
    errno = 0;
    long long x = strtoll(v, &e, 10);
    *end = e;
    if (errno == ERANGE)
        return -2;
    *out = x;
    return 0;
}

static void fmt_size(double v, char *buf, size_t len)
{
    static const char suffix[] = "GMk";
    long long x = (long long)v;
    for (int i = 0; i < 3; i++) {
        long long unit = 1LL << (10 * (3 - i));
        if (x >= unit && x % unit == 0) {
            snprintf(buf, len, "%lld%c", x / unit, suffix[i]);
            return;
        }
    }
    snprintf(buf, len, "%lld", x);
}

/* Writes "lo..hi" (or the choices) of s into buf; shared by the error
 * messages and the printed table so they agree. */
static void fmt_bounds(const setting *s, char *buf, size_t len)
{
    char a[32], b[32];
    switch (s->type) {
    case T_FORMATS:
        snprintf(buf, len, "comma list of jpeg, png, bmp, gif, tga, pnm, psd, hdr, pic; or all");
        break;
    case T_STRING:
    case T_PATH:
    case T_LISTEN:
        if (s->lo > 0)
            snprintf(buf, len, "%.0f..%.0f bytes", s->lo, s->hi);
        else
            snprintf(buf, len, "up to %.0f bytes", s->hi);
        break;
    case T_SIZE:
        fmt_size(s->lo, a, sizeof(a));
        fmt_size(s->hi, b, sizeof(b));
        snprintf(buf, len, "%s..%s", a, b);
        break;
    case T_OCTAL: snprintf(buf, len, "%#o..%#o", (unsigned)s->lo, (unsigned)s->hi); break;
    case T_BOOL: snprintf(buf, len, "yes|no"); break;
    case T_ENUM: {
        size_t n = 0;
        buf[0] = '\0';
        for (int i = 0; s->choices[i]; i++) {
            int w = snprintf(buf + n, len - n, "%s%s", i ? "|" : "", s->choices[i]);
            if (w < 0 || (size_t)w >= len - n)
                break;
            n += (size_t)w;
        }
        break;
    }
    case T_FLOAT: snprintf(buf, len, "%g..%g", s->lo, s->hi); break;
    case T_INT:
    case T_INT64: snprintf(buf, len, "%.0f..%.0f", s->lo, s->hi); break;
    }
}

static const char *type_name(kind k)
{
    switch (k) {
    case T_STRING: return "string";
    case T_PATH: return "path";
    case T_LISTEN: return "address";
    case T_INT:
    case T_INT64: return "integer";
    case T_SIZE: return "size";
    case T_OCTAL: return "octal mode";
    case T_BOOL: return "bool";
    case T_ENUM: return "enum";
    case T_FLOAT: return "number";
    case T_FORMATS: return "formats";
    }
    return "?";
}

/* Parses a tcp_listen value. An empty one means off and is accepted here;
 * host/port are only written for a non-empty one. Only loopback addresses
 * pass: the daemon has no authentication, so anything wider must be a
 * deliberate proxy in front of it, not a config line. */
static int parse_listen(const char *v, char *host, size_t hostlen, int *port, char *why,
                        size_t whylen)
{
    char addr[64];
    const char *colon;
    int v6 = v[0] == '[';
    if (v6) {
        const char *close = strchr(v, ']');
        if (!close || close[1] != ':')
            return mpd__fail(why, whylen, -1, "'%.*s' is not [::1]:PORT", SHOW, v);
        colon = close + 1;
        if ((size_t)(close - v - 1) >= sizeof(addr))
            return mpd__fail(why, whylen, -1, "'%.*s' has too long an address", SHOW, v);
        memcpy(addr, v + 1, (size_t)(close - v - 1));
        addr[close - v - 1] = '\0';
    } else {
        colon = strrchr(v, ':');
        if (!colon || (size_t)(colon - v) >= sizeof(addr))
            return mpd__fail(why, whylen, -1, "'%.*s' is not 127.0.0.1:PORT or [::1]:PORT", SHOW,
                             v);
        memcpy(addr, v, (size_t)(colon - v));
        addr[colon - v] = '\0';
    }
    long long p;
    const char *end;
    if (parse_ll(colon + 1, 0, &p, &end) != 0 || *end || p < 1 || p > 65535)
        return mpd__fail(why, whylen, -1, "'%.*s' needs a port 1..65535 after the last ':'", SHOW,
                         v);
    int loop;
    if (v6) {
        struct in6_addr a6;
        if (inet_pton(AF_INET6, addr, &a6) != 1)
            return mpd__fail(why, whylen, -1, "'%.*s' is not a numeric IPv6 address", SHOW, addr);
        loop = IN6_IS_ADDR_LOOPBACK(&a6);
    } else {
        struct in_addr a4;
        if (inet_pton(AF_INET, addr, &a4) != 1)
            return mpd__fail(why, whylen, -1,
                             "'%.*s' is not a numeric IPv4 address (IPv6 goes in brackets)", SHOW,
                             addr);
        loop = (ntohl(a4.s_addr) >> 24) == 127; /* 127.0.0.0/8 */
    }
    if (!loop)
        return mpd__fail(why, whylen, -1,
                         "'%.*s' is not a loopback address; mpdetd has no authentication, so only "
                         "127.0.0.1 or ::1 may be used",
                         SHOW, addr);
    if (host) {
        if (strlen(addr) >= hostlen)
            return mpd__fail(why, whylen, -1, "host buffer too small");
        strcpy(host, addr);
    }
    if (port)
        *port = (int)p;
    return 0;
}

/* Parses v as setting s and stores it in c. Returns 0, or -1 with the
 * reason in why ("'x' is not an integer"); the caller adds file:line. */
static int set_value(const setting *s, const char *v, mpdd_config *c, char *why, size_t whylen)
{
    char bounds[96];
    fmt_bounds(s, bounds, sizeof(bounds));
    void *f = field(s, c);
    long long x = 0;
    const char *end = v;
    switch (s->type) {
    case T_FORMATS: {
        unsigned set;
        char m[200];
        if (strlen(v) > s->hi)
            return mpd__fail(why, whylen, -1, "is longer than %.0f bytes", s->hi);
        if (mpd_image_formats_parse(v, &set, m, sizeof(m)) != 0)
            return mpd__fail(why, whylen, -1, "%s", m);
        memcpy(f, v, strlen(v) + 1);
        return 0;
    }
    case T_STRING:
    case T_PATH:
    case T_LISTEN: {
        size_t n = strlen(v);
        if (n == 0 && s->lo > 0)
            return mpd__fail(why, whylen, -1, "must not be empty");
        if ((double)n > s->hi)
            return mpd__fail(why, whylen, -1, "is %zu bytes long, more than %.0f", n, s->hi);
        if (s->type == T_LISTEN && n && parse_listen(v, NULL, 0, NULL, why, whylen) != 0)
            return -1;
        memcpy(f, v, n + 1);
        return 0;
    }
    case T_INT:
    case T_INT64: {
        int rc = parse_ll(v, 1, &x, &end);
        if (rc == -1 || *end)
            return mpd__fail(why, whylen, -1, "'%.*s' is not an integer", SHOW, v);
        if (rc == -2 || (double)x < s->lo || (double)x > s->hi)
            return mpd__fail(why, whylen, -1, "%.*s is out of range %s", SHOW, v, bounds);
        if (s->type == T_INT)
            *(int *)f = (int)x;
        else
            *(long long *)f = x;
        return 0;
    }
    case T_SIZE: {
        int rc = parse_ll(v, 0, &x, &end);
        long long unit = 1;
        switch (*end) {
        case 'k':
        case 'K': unit = 1LL << 10; break;
        case 'm':
        case 'M': unit = 1LL << 20; break;
        case 'g':
        case 'G': unit = 1LL << 30; break;
        }
        if (unit > 1)
            end++;
        if (rc == -1 || *end)
            return mpd__fail(why, whylen, -1,
                             "'%.*s' is not a size (a number with an optional k, M or G)", SHOW, v);
        if (rc == -2 || x > LLONG_MAX / unit || (double)(x * unit) < s->lo ||
            (double)(x * unit) > s->hi)
            return mpd__fail(why, whylen, -1, "%.*s is out of range %s", SHOW, v, bounds);
        *(long long *)f = x * unit;
        return 0;
    }
    case T_OCTAL: {
        if (!*v || strspn(v, "01234567") != strlen(v))
            return mpd__fail(why, whylen, -1, "'%.*s' is not an octal mode such as 0660", SHOW, v);
        errno = 0;
        unsigned long m = strtoul(v, NULL, 8);
        if (errno == ERANGE || (double)m < s->lo || (double)m > s->hi)
            return mpd__fail(why, whylen, -1, "%.*s is out of range %s", SHOW, v, bounds);
        *(unsigned *)f = (unsigned)m;
        return 0;
    }
    case T_BOOL: {
        static const char *const yes[] = {"yes", "true", "on", "1"};
        static const char *const no[] = {"no", "false", "off", "0"};
        for (int i = 0; i < 4; i++) {
            if (strcmp(v, yes[i]) == 0 || strcmp(v, no[i]) == 0) {
                *(int *)f = strcmp(v, yes[i]) == 0;
                return 0;
            }
        }
        return mpd__fail(why, whylen, -1, "'%.*s' is not yes or no", SHOW, v);
    }
    case T_ENUM:
        for (int i = 0; s->choices[i]; i++) {
            if (strcmp(v, s->choices[i]) != 0)
                continue;
            if (s->values)
                *(int *)f = s->values[i];
            else
                memcpy(f, s->choices[i], strlen(s->choices[i]) + 1);
            return 0;
        }
        return mpd__fail(why, whylen, -1, "'%.*s' is not one of %s", SHOW, v, bounds);
    case T_FLOAT: {
        if (!*v)
            return mpd__fail(why, whylen, -1, "'' is not a number");
        char *e;
        double d = strtod(v, &e);
        if (*e || *v == ' ' || *v == '\t')
            return mpd__fail(why, whylen, -1, "'%.*s' is not a number", SHOW, v);
        /* Written so that NaN fails too. */
        if (!(d >= s->lo && d <= s->hi))
            return mpd__fail(why, whylen, -1, "%.*s is out of range %s", SHOW, v, bounds);
        *(float *)f = (float)d;
        return 0;
    }
    }
    return mpd__fail(why, whylen, -1, "unknown setting type");
}

void mpdd_config_defaults(mpdd_config *c)
{
    /* Zeroed first so string fields compare equal byte for byte beyond the
     * NUL, and so a default that failed to parse (a table bug the tests
     * catch) leaves 0 rather than garbage. */
    memset(c, 0, sizeof(*c));
    char why[160];
    for (size_t i = 0; i < NSETTINGS; i++)
        set_value(&table[i], table[i].def, c, why, sizeof(why));
}

static int is_blank(int ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\f' || ch == '\v';
}

static char *trim(char *s)
{
    while (is_blank((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && is_blank((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Cuts a raw value (after '=', left-trimmed) down to the value itself:
 * unquotes "...", drops a trailing " # comment". Returns the value, or NULL
 * with the reason in why. Modifies v in place. */
static char *cut_value(char *v, char *why, size_t whylen)
{
    if (*v == '"') {
        char *close = strchr(v + 1, '"');
        if (!close)
            return mpd__fail(why, whylen, -1, "unterminated quote"), NULL;
        char *rest = close + 1;
        while (is_blank((unsigned char)*rest))
            rest++;
        if (*rest && *rest != '#')
            return mpd__fail(why, whylen, -1, "unexpected text after the closing quote"), NULL;
        *close = '\0';
        return v + 1;
    }
    /* '#' starts a comment at the start of the value or after a blank, so
     * "a#b" stays a value (paths may hold '#'). */
    for (char *p = v; *p; p++) {
        if (*p == '#' && (p == v || is_blank((unsigned char)p[-1]))) {
            *p = '\0';
            break;
        }
    }
    return trim(v);
}

int mpdd_config_load(const char *path, mpdd_config *out, char *msg, size_t msglen)
{
    if (!path || !out)
        return mpd__fail(msg, msglen, MPD_EINVAL, "mpdd_config_load: NULL argument");
    FILE *f = fopen(path, "r");
    if (!f)
        return mpd__fail(msg, msglen, MPD_EIO, "%s: cannot open: %s", path, strerror(errno));
    mpdd_config c;
    mpdd_config_defaults(&c);
    int seen[NSETTINGS] = {0}; /* line that set each setting, 0 = not yet */
    char *line = NULL, why[256];
    size_t cap = 0;
    ssize_t n;
    int lineno = 0, rc = 0;
    while ((n = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if ((size_t)n != strlen(line)) {
            rc =
                mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: line contains a NUL byte", path, lineno);
            goto done;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq || eq == s) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: expected 'key = value', got '%.*s'",
                           path, lineno, SHOW, s);
            goto done;
        }
        *eq = '\0';
        char *key = trim(s);
        char *raw = eq + 1;
        while (is_blank((unsigned char)*raw))
            raw++;
        const setting *st = find(key);
        if (!st) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE,
                           "%s:%d: unknown setting '%.*s' (mpdetd --help-config lists them)", path,
                           lineno, SHOW, key);
            goto done;
        }
        size_t idx = (size_t)(st - table);
        if (seen[idx]) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE,
                           "%s:%d: duplicate setting '%s' (first set on line %d)", path, lineno,
                           st->name, seen[idx]);
            goto done;
        }
        seen[idx] = lineno;
        char *v = cut_value(raw, why, sizeof(why));
        if (!v || set_value(st, v, &c, why, sizeof(why)) != 0) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: %s: %s", path, lineno, st->name, why);
            goto done;
        }
    }
    if (ferror(f)) {
        rc = mpd__fail(msg, msglen, MPD_EIO, "%s: read error after line %d", path, lineno);
        goto done;
    }
    *out = c;
done:
    free(line);
    fclose(f);
    return rc;
}

static int same(const setting *s, const mpdd_config *a, const mpdd_config *b)
{
    const void *x = cfield(s, a), *y = cfield(s, b);
    switch (s->type) {
    case T_STRING:
    case T_PATH:
    case T_LISTEN:
    case T_FORMATS: return strncmp(x, y, s->size) == 0;
    case T_ENUM:
        if (!s->values)
            return strncmp(x, y, s->size) == 0;
        return *(const int *)x == *(const int *)y;
    case T_INT:
    case T_BOOL: return *(const int *)x == *(const int *)y;
    case T_INT64:
    case T_SIZE: return *(const long long *)x == *(const long long *)y;
    case T_OCTAL: return *(const unsigned *)x == *(const unsigned *)y;
    case T_FLOAT: return *(const float *)x == *(const float *)y;
    }
    return 0;
}

int mpdd_config_check_reload(const mpdd_config *cur, const mpdd_config *next, char *msg,
                             size_t msglen)
{
    if (!cur || !next)
        return mpd__fail(msg, msglen, MPD_EINVAL, "mpdd_config_check_reload: NULL argument");
    for (size_t i = 0; i < NSETTINGS; i++)
        if (!table[i].reloadable && !same(&table[i], cur, next))
            return mpd__fail(msg, msglen, MPD_EINVAL, "%s cannot change on reload; restart mpdetd",
                             table[i].name);
    return 0;
}

void mpdd_config_apply_reload(mpdd_config *cur, const mpdd_config *next)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (table[i].reloadable)
            memcpy(field(&table[i], cur), cfield(&table[i], next), table[i].size);
}

void mpdd_config_print_table(FILE *f)
{
    fprintf(f, "mpdetd.conf settings: one 'key = value' per line, '#' comments.\n"
               "Each entry: the setting and its default, then type, bounds and whether a\n"
               "reload (SIGHUP) applies it, then what it does.\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *s = &table[i];
        char bounds[96];
        fmt_bounds(s, bounds, sizeof(bounds));
        fprintf(f, "\n%s = %s\n", s->name, s->def[0] ? s->def : "\"\"");
        fprintf(f, "    %s, %s; %s\n", type_name(s->type), bounds,
                s->reloadable ? "a reload applies it" : "restart to change");
        fprintf(f, "    %s\n", s->help);
    }
}

int mpdd_config_tcp_split(const char *listen, char *host, size_t hostlen, int *port, char *msg,
                          size_t msglen)
{
    if (!listen || !*listen || !host || !port)
        return mpd__fail(msg, msglen, MPD_EINVAL, "tcp_listen is empty (the listener is off)");
    char why[256];
    if (parse_listen(listen, host, hostlen, port, why, sizeof(why)) != 0)
        return mpd__fail(msg, msglen, MPD_EINVAL, "tcp_listen: %s", why);
    return 0;
}
