/* common.c - helpers shared by the mpdet subcommands (see common.h). */
#define _POSIX_C_SOURCE 200809L
#include "common.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

void tool_stderr_log(void *ud, int prio, const char *msg)
{
    (void)ud;
    if (prio <= MPD_LOG_WARNING)
        fprintf(stderr, "mpdet: %s\n", msg);
}

void tool_model_init(tool_model *m, mpd_log_fn log)
{
    const char *dir = getenv("MPDET_MODEL_DIR");
    if (!dir || !*dir)
        dir = MPD_MODEL_DIR;
    snprintf(m->cfg, sizeof(m->cfg), "%s/yolov3-tiny.cfg", dir);
    snprintf(m->weights, sizeof(m->weights), "%s/yolov3-tiny.weights", dir);
    snprintf(m->names, sizeof(m->names), "%s/coco.names", dir);
    memset(&m->eo, 0, sizeof(m->eo));
    m->eo.cfg_path = m->cfg;
    m->eo.weights_path = m->weights;
    m->eo.names_path = m->names;
    m->eo.backend = "auto";
    m->eo.log = log;
}

int tool_model_option(tool_model *m, const char *opt, const char *v)
{
    if (strcmp(opt, "--cfg") == 0)
        m->eo.cfg_path = v;
    else if (strcmp(opt, "--weights") == 0)
        m->eo.weights_path = v;
    else if (strcmp(opt, "--names") == 0)
        m->eo.names_path = v;
    else if (strcmp(opt, "--backend") == 0)
        m->eo.backend = v;
    else if (strcmp(opt, "--threads") == 0)
        return tool_parse_int(opt, v, 0, 1024, &m->eo.threads) ? -1 : 1;
    else
        return 0;
    return 1;
}

static int has_image_ext(const char *name)
{
    static const char *const ext[] = {".jpg", ".jpeg", ".png", ".bmp", ".pnm", ".ppm",
                                      ".pgm", ".tga", ".gif", NULL};
    const char *dot = strrchr(name, '.');
    if (!dot)
        return 0;
    for (int i = 0; ext[i]; i++)
        if (strcasecmp(dot, ext[i]) == 0)
            return 1;
    return 0;
}

/* Nonzero when the first bytes of f hold a NUL or a control character other
 * than tab, CR, LF: an image, not a list. Rewinds f. */
static int looks_binary(FILE *f)
{
    unsigned char b[512];
    size_t n = fread(b, 1, sizeof(b), f);
    rewind(f);
    for (size_t i = 0; i < n; i++)
        if (b[i] < 0x20 && b[i] != '\t' && b[i] != '\r' && b[i] != '\n')
            return 1;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends a copy of s to *v (n entries). 0 or -1 when out of memory. */
static int push(char ***v, int *n, const char *s)
{
    char **nv = realloc(*v, (size_t)(*n + 1) * sizeof(char *));
    if (!nv)
        return -1;
    *v = nv;
    if (!(nv[*n] = strdup(s)))
        return -1;
    (*n)++;
    return 0;
}

int tool_image_list(const char *src, char ***out)
{
    struct stat st;
    char **v = NULL;
    int n = 0, oom = 0;
    if (stat(src, &st) != 0) {
        fprintf(stderr, "mpdet: %s: %s\n", src, strerror(errno));
        return -1;
    }
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(src);
        struct dirent *de;
        char path[8192];
        while (d && !oom && (de = readdir(d))) {
            if (!has_image_ext(de->d_name))
                continue;
            snprintf(path, sizeof(path), "%s/%s", src, de->d_name);
            oom = push(&v, &n, path);
        }
        if (d)
            closedir(d);
        if (n > 1)
            qsort(v, (size_t)n, sizeof(char *), by_name);
    } else {
        FILE *f = fopen(src, "r");
        char line[4096];
        if (!f) {
            fprintf(stderr, "mpdet: %s: %s\n", src, strerror(errno));
            return -1;
        }
        int one = has_image_ext(src) || looks_binary(f);
        if (one)
            oom = push(&v, &n, src);
        while (!one && !oom && fgets(line, sizeof(line), f)) {
            line[strcspn(line, "\r\n")] = '\0';
            if (line[0] && line[0] != '#')
                oom = push(&v, &n, line);
        }
        fclose(f);
    }
    if (oom || n == 0) {
        fprintf(stderr, "mpdet: %s: %s\n", src, oom ? "out of memory" : "no images found");
        tool_list_free(v, n);
        return -1;
    }
    *out = v;
    return n;
}

void tool_list_free(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double tool_median(double *v, int n)
{
    if (n < 1)
        return 0;
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int tool_parse_double(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi)) {
        fprintf(stderr, "mpdet: %s needs a number in [%g, %g], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = v;
    return 0;
}

int tool_parse_int(const char *opt, const char *s, int lo, int hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) {
        fprintf(stderr, "mpdet: %s needs an integer in [%d, %d], got '%s'\n", opt, lo, hi, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* Nonzero when the space-separated flag list holds flag as a whole word. */
static int has_flag(const char *flags, const char *flag)
{
    size_t n = strlen(flag);
    for (const char *p = flags; (p = strstr(p, flag)); p += n)
        if ((p == flags || p[-1] == ' ' || p[-1] == '\t') &&
            (p[n] == ' ' || p[n] == '\n' || p[n] == '\0'))
            return 1;
    return 0;
}

void tool_machine(char *buf, size_t len)
{
    char model[256] = "", flags[8192] = "", line[8192];
    long mem_kb = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        if (!colon)
            continue;
        const char *val = colon + 1 + (colon[1] == ' ');
        if (!model[0] && (!strncmp(line, "model name", 10) || !strncmp(line, "Model", 5)))
            snprintf(model, sizeof(model), "%.*s", (int)strcspn(val, "\n"), val);
        else if (!flags[0] && (!strncmp(line, "flags", 5) || !strncmp(line, "Features", 8)))
            snprintf(flags, sizeof(flags), "%s", val);
    }
    if (f)
        fclose(f);
    if ((f = fopen("/proc/meminfo", "r"))) {
        if (fscanf(f, "MemTotal: %ld", &mem_kb) != 1)
            mem_kb = 0;
        fclose(f);
    }
    static const char *const simd[][2] = {
        {"avx2", "AVX2"},           {"avx512f", "AVX-512"},      {"avx512_vnni", "VNNI"},
        {"avx_vnni", "AVX-VNNI"},   {"avx512_bf16", "AVX512-BF16"}, {"avx512_fp16", "AVX512-FP16"},
        {"amx_tile", "AMX"},        {"amx_bf16", "AMX-BF16"},    {"amx_int8", "AMX-INT8"},
        {"asimddp", "NEON-dot"},    {"asimdhp", "NEON-fp16"},    {"bf16", "BF16"},
    };
    char have[256] = "";
    for (size_t i = 0; i < sizeof(simd) / sizeof(simd[0]); i++)
        if (has_flag(flags, simd[i][0]))
            snprintf(have + strlen(have), sizeof(have) - strlen(have), "%s%s", have[0] ? " " : "",
                     simd[i][1]);
    snprintf(buf, len, "%s, %ld cores, SIMD: %s, %.1f GiB", model[0] ? model : "unknown CPU",
             sysconf(_SC_NPROCESSORS_ONLN), have[0] ? have : "none of AVX2/AVX-512/AMX/NEON-dot",
             (double)mem_kb / 1048576.0);
}

void tool_plan_name(const char *path, char *buf, size_t len)
{
    if (!path) {
        snprintf(buf, len, "cfg");
        return;
    }
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (n > 5 && strcmp(base + n - 5, ".plan") == 0)
        n -= 5;
    snprintf(buf, len, "%.*s", (int)n, base);
}

FILE *tool_open_out(const char *path)
{
    if (strcmp(path, "-") == 0)
        return stdout;
    FILE *f = fopen(path, "w");
    if (!f)
        fprintf(stderr, "mpdet: %s: %s\n", path, strerror(errno));
    return f;
}

FILE *tool_open_replace(const char *path, char *tmp, size_t tmplen)
{
    struct stat st;
    tmp[0] = '\0';
    /* A device or pipe (/dev/stdout) is written in place; a file is
     * written beside its old version and renamed over it only when
     * complete, so a full disk leaves the old file whole. */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return tool_open_out(path);
    snprintf(tmp, tmplen, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        fprintf(stderr, "mpdet: %s: %s\n", tmp, strerror(errno));
    return f;
}

int tool_commit_replace(FILE *f, const char *tmp, const char *path)
{
    if (!tmp[0])
        return tool_close_out(f);
    int bad = !f || fflush(f) != 0 || fsync(fileno(f)) != 0;
    if (f && fclose(f) != 0)
        bad = 1;
    if (!bad && rename(tmp, path) != 0)
        bad = 1;
    if (bad) {
        fprintf(stderr, "mpdet: %s: write failed: %s (the old file, if any, is unchanged)\n", path,
                strerror(errno));
        unlink(tmp);
    }
    return bad;
}

int tool_close_out(FILE *f)
{
    if (!f)
        return 1;
    int bad = f == stdout ? fflush(f) != 0 : fclose(f) != 0;
    if (bad)
        fprintf(stderr, "mpdet: write failed: %s\n", strerror(errno));
    return bad;
}
