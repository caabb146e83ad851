/* test_metrics.c - mpdetd's Prometheus exposition: the rendered text is
 * parsed here as a scraper would (every sample line well formed, HELP and
 * TYPE before each family's samples, counters named _total, histogram
 * buckets cumulative and ending in +Inf equal to _count, _sum equal to the
 * observations), label escaping, bucket edges, and exact counts from four
 * threads recording while a fifth renders. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* ---- a small parser of the text format (version 0.0.4) ---- */

typedef struct {
    char name[128];
    char family[128];
    char labels[512]; /* unescaped, as key="value" pairs joined by ',', without le */
    char le[32];      /* histogram buckets only */
    double value;
} sample;

typedef struct {
    char name[128];
    char type[16];
    int help, samples;
} fam;

typedef struct {
    sample *s;
    int n, cap;
    fam f[64];
    int nf;
} parsed;

static fam *find_fam(parsed *p, const char *name)
{
    for (int i = 0; i < p->nf; i++)
        if (strcmp(p->f[i].name, name) == 0)
            return &p->f[i];
    return NULL;
}

static fam *get_fam(parsed *p, const char *name)
{
    fam *f = find_fam(p, name);
    if (f)
        return f;
    assert_true(p->nf < 64);
    f = &p->f[p->nf++];
    memset(f, 0, sizeof(*f));
    snprintf(f->name, sizeof(f->name), "%s", name);
    return f;
}

static int name_char(int c, int first)
{
    return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (!first && c >= '0' && c <= '9');
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Parses one sample line; fails the test on anything malformed. */
static void parse_sample(parsed *p, const char *line)
{
    sample sm;
    memset(&sm, 0, sizeof(sm));
    const char *c = line;
    size_t k = 0;
    assert_true(name_char((unsigned char)*c, 1));
    while (name_char((unsigned char)*c, 0)) {
        assert_true(k + 1 < sizeof(sm.name));
        sm.name[k++] = *c++;
    }
    if (*c == '{') {
        c++;
        size_t lk = 0;
        while (*c != '}') {
            char key[64], val[256];
            size_t kk = 0, vk = 0;
            if (!name_char((unsigned char)*c, 1) || *c == ':')
                fail_msg("bad label name in: %s", line);
            while (name_char((unsigned char)*c, 0) && *c != ':')
                key[kk++] = *c++;
            key[kk] = '\0';
            if (c[0] != '=' || c[1] != '"')
                fail_msg("label %s without =\"...\" in: %s", key, line);
            c += 2;
            while (*c != '"') {
                if (!*c || *c == '\n')
                    fail_msg("unterminated label value in: %s", line);
                if (*c == '\\') {
                    c++;
                    if (*c == 'n')
                        val[vk++] = '\n';
                    else if (*c == '\\' || *c == '"')
                        val[vk++] = *c;
                    else
                        fail_msg("bad escape \\%c in: %s", *c, line);
                    c++;
                } else {
                    val[vk++] = *c++;
                }
                assert_true(vk < sizeof(val));
            }
            val[vk] = '\0';
            c++;
            if (strcmp(key, "le") == 0) {
                snprintf(sm.le, sizeof(sm.le), "%.31s", val);
            } else {
                int w = snprintf(sm.labels + lk, sizeof(sm.labels) - lk, "%s%s=\"%s\"",
                                 lk ? "," : "", key, val);
                lk += (size_t)w;
            }
            if (*c == ',')
                c++;
            else if (*c != '}')
                fail_msg("expected ',' or '}' in: %s", line);
        }
        c++;
    }
    if (*c != ' ')
        fail_msg("expected one space before the value in: %s", line);
    c++;
    char *end;
    if (strcmp(c, "+Inf") == 0)
        sm.value = INFINITY;
    else {
        sm.value = strtod(c, &end);
        if (end == c || *end)
            fail_msg("bad value '%s' in: %s", c, line);
    }
    /* Which family: a histogram's series carry _bucket/_sum/_count. */
    snprintf(sm.family, sizeof(sm.family), "%s", sm.name);
    static const char *suffix[] = {"_bucket", "_sum", "_count"};
    for (int i = 0; i < 3; i++) {
        if (!ends_with(sm.name, suffix[i]))
            continue;
        char base[128];
        snprintf(base, sizeof(base), "%.*s", (int)(strlen(sm.name) - strlen(suffix[i])), sm.name);
        fam *f = find_fam(p, base);
        if (f && strcmp(f->type, "histogram") == 0)
            snprintf(sm.family, sizeof(sm.family), "%s", base);
    }
    fam *f = find_fam(p, sm.family);
    if (!f || !f->help || !f->type[0])
        fail_msg("sample before its family's HELP and TYPE: %s", line);
    /* ends_with, not strcmp at an offset: gcc's sanitizer build misreads the latter. */
    if (strcmp(f->type, "histogram") == 0 && ends_with(sm.name, "_bucket") && !sm.le[0])
        fail_msg("bucket without le: %s", line);
    f->samples++;
    if (p->n == p->cap) {
        p->cap = p->cap * 2 + 64;
        p->s = realloc(p->s, (size_t)p->cap * sizeof(*p->s));
        assert_non_null(p->s);
    }
    p->s[p->n++] = sm;
}

/* Parses a whole exposition and checks it line by line, then checks every
 * histogram. The caller frees p->s. */
static void parse(const char *text, parsed *p)
{
    memset(p, 0, sizeof(*p));
    assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
    char *copy = strdup(text), *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] == '#') {
            char kind[8], name[128];
            int off = 0;
            if (sscanf(line, "# %7s %127s %n", kind, name, &off) < 2 || !off)
                fail_msg("bad comment line: %s", line);
            fam *f = get_fam(p, name);
            if (f->samples)
                fail_msg("HELP/TYPE after samples: %s", line);
            if (strcmp(kind, "HELP") == 0) {
                assert_false(f->help);
                assert_true(strlen(line + off) > 0);
                f->help = 1;
            } else if (strcmp(kind, "TYPE") == 0) {
                assert_false(f->type[0]);
                const char *t = line + off;
                if (strcmp(t, "counter") && strcmp(t, "gauge") && strcmp(t, "histogram"))
                    fail_msg("unexpected type: %s", line);
                strcpy(f->type, t); /* one of the three names above */
                if (strcmp(t, "counter") == 0 && !ends_with(name, "_total"))
                    fail_msg("counter not named _total: %s", line);
            } else {
                fail_msg("unexpected comment: %s", line);
            }
        } else {
            parse_sample(p, line);
        }
    }
    free(copy);

    /* Histograms: for each label set, buckets in increasing le, counts
     * non-decreasing, the last +Inf and equal to _count; _sum present. */
    for (int i = 0; i < p->n; i++) {
        sample *b = &p->s[i];
        if (!ends_with(b->name, "_bucket") || strcmp(b->le, "0.001") != 0)
            continue; /* start of one series */
        double prev_le = -1, prev = -1;
        int j = i, nb = 0;
        for (; j < p->n && strcmp(p->s[j].name, b->name) == 0 &&
               strcmp(p->s[j].labels, b->labels) == 0;
             j++, nb++) {
            double l = strcmp(p->s[j].le, "+Inf") == 0 ? INFINITY : strtod(p->s[j].le, NULL);
            assert_true(l > prev_le);
            assert_true(p->s[j].value >= prev);
            prev_le = l;
            prev = p->s[j].value;
        }
        assert_int_equal(nb, 14);
        assert_string_equal(p->s[j - 1].le, "+Inf");
        /* _sum then _count follow the buckets. */
        assert_true(j + 1 < p->n);
        assert_true(ends_with(p->s[j].name, "_sum"));
        assert_true(ends_with(p->s[j + 1].name, "_count"));
        assert_string_equal(p->s[j].labels, b->labels);
        assert_string_equal(p->s[j + 1].labels, b->labels);
        assert_true(p->s[j + 1].value == prev);
    }
}

/* The value of the sample name{labels} (labels as parsed, le apart); fails
 * when there is none. le NULL for non-buckets. */
static double value(parsed *p, const char *name, const char *labels, const char *le)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->s[i].name, name) == 0 && strcmp(p->s[i].labels, labels) == 0 &&
            strcmp(p->s[i].le, le ? le : "") == 0)
            return p->s[i].value;
    fail_msg("no sample %s{%s%s%s}", name, labels, le ? " le=" : "", le ? le : "");
    return NAN;
}

static int has(parsed *p, const char *name, const char *labels)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->s[i].name, name) == 0 && strcmp(p->s[i].labels, labels) == 0)
            return 1;
    return 0;
}

static const char *families[][2] = {
    {"mpdetd_build_info", "gauge"},
    {"mpdetd_requests_total", "counter"},
    {"mpdetd_request_duration_seconds", "histogram"},
    {"mpdetd_inference_duration_seconds", "histogram"},
    {"mpdetd_batch_size", "histogram"},
    {"mpdetd_layer_seconds_total", "counter"},
    {"mpdetd_layer_runs_total", "counter"},
    {"mpdetd_queue_depth", "gauge"},
    {"mpdetd_queue_capacity", "gauge"},
    {"mpdetd_abandoned_total", "counter"},
    {"mpdetd_reloads_total", "counter"},
    {"mpdetd_plan_generation", "gauge"},
};

/* ---- tests ---- */

static void test_fresh_render(void **state)
{
    (void)state;
    mpdd_metrics *m = mpdd_metrics_create(24);
    assert_non_null(m);
    char *text = mpdd_metrics_render(m, "0.3.0", "cpu");
    assert_non_null(text);
    parsed p;
    parse(text, &p);
    assert_int_equal(p.nf, 12);
    for (size_t i = 0; i < sizeof(families) / sizeof(families[0]); i++) {
        fam *f = find_fam(&p, families[i][0]);
        assert_non_null(f);
        assert_string_equal(f->type, families[i][1]);
    }
    assert_true(value(&p, "mpdetd_build_info", "version=\"0.3.0\",backend=\"cpu\"", NULL) == 1);
    assert_int_equal(find_fam(&p, "mpdetd_requests_total")->samples, 0);
    assert_int_equal(find_fam(&p, "mpdetd_layer_runs_total")->samples, 0);
    /* Every endpoint's histogram is there from the start, at zero. */
    static const char *eps[] = {"detect", "vision_detection", "health", "plan",
                                "reload", "metrics",          "other"};
    for (size_t i = 0; i < 7; i++) {
        char l[64];
        snprintf(l, sizeof(l), "endpoint=\"%s\"", eps[i]);
        assert_true(value(&p, "mpdetd_request_duration_seconds_count", l, NULL) == 0);
        assert_true(value(&p, "mpdetd_request_duration_seconds_bucket", l, "+Inf") == 0);
        assert_true(value(&p, "mpdetd_request_duration_seconds_sum", l, NULL) == 0);
    }
    assert_int_equal(find_fam(&p, "mpdetd_request_duration_seconds")->samples, 7 * 16);
    assert_true(value(&p, "mpdetd_inference_duration_seconds_count", "", NULL) == 0);
    assert_true(value(&p, "mpdetd_reloads_total", "result=\"ok\"", NULL) == 0);
    assert_true(value(&p, "mpdetd_reloads_total", "result=\"error\"", NULL) == 0);
    assert_true(value(&p, "mpdetd_queue_depth", "", NULL) == 0);
    assert_true(value(&p, "mpdetd_plan_generation", "", NULL) == 0);
    /* The exact spelling of the bucket bounds. */
    assert_non_null(strstr(text, "mpdetd_inference_duration_seconds_bucket{le=\"0.0025\"} 0\n"));
    assert_non_null(strstr(text, "mpdetd_inference_duration_seconds_bucket{le=\"10\"} 0\n"));
    assert_non_null(strstr(text, "mpdetd_inference_duration_seconds_sum 0\n"));
    assert_true(value(&p, "mpdetd_batch_size_bucket", "", "+Inf") == 0);
    assert_true(value(&p, "mpdetd_batch_size_count", "", NULL) == 0);
    free(p.s);
    free(text);
    mpdd_metrics_free(m);
}

static void test_observations(void **state)
{
    (void)state;
    mpdd_metrics *m = mpdd_metrics_create(24);
    assert_non_null(m);
    /* Bounds are inclusive (le = "less or equal"): 0.001 lands in the
     * first bucket; 20 only in +Inf. */
    const double det[] = {0.0005, 0.001, 0.003, 0.7, 20};
    double det_sum = 0;
    for (size_t i = 0; i < 5; i++) {
        mpdd_metrics_request(m, "detect", 200, det[i]);
        det_sum += det[i];
    }
    mpdd_metrics_request(m, "detect", 413, 0.01);
    mpdd_metrics_request(m, "vision_detection", 400, 0.002);
    mpdd_metrics_request(m, "health", 200, -1);    /* counted as 0 */
    mpdd_metrics_request(m, "bogus", 404, 0.0001); /* -> other */
    mpdd_metrics_request(m, NULL, 404, 0.0001);    /* -> other */
    mpdd_metrics_request(m, "metrics", 42, NAN);   /* code 0, 0 s */
    mpdd_metrics_inference(m, 0.25);
    mpdd_metrics_inference(m, 0.3);
    mpdd_metrics_layer(m, 0, "fp32", 0.5);
    mpdd_metrics_layer(m, 0, "fp32", 0.25);
    mpdd_metrics_layer(m, 0, "int8", 0.125);
    mpdd_metrics_layer(m, 23, "-", 0.001);
    mpdd_metrics_layer(m, 5, "bf16", 0.002); /* -> other */
    mpdd_metrics_layer(m, -1, "fp32", 1);    /* ignored */
    mpdd_metrics_layer(m, 24, "fp32", 1);    /* ignored */
    mpdd_metrics_reload(m, 1);
    mpdd_metrics_reload(m, 1);
    mpdd_metrics_reload(m, 0);
    mpdd_metrics_queue(m, 3, 16);
    mpdd_metrics_plan(m, 7);
    /* Batch sizes: inclusive bounds too; 65 only in +Inf, 0 ignored. */
    const int batches[] = {1, 1, 2, 3, 8, 64, 65, 0};
    for (size_t i = 0; i < sizeof(batches) / sizeof(batches[0]); i++)
        mpdd_metrics_batch(m, batches[i]);

    char *text = mpdd_metrics_render(m, "1.0", "cuda");
    assert_non_null(text);
    parsed p;
    parse(text, &p);
    const char *rt = "mpdetd_requests_total";
    assert_true(value(&p, rt, "endpoint=\"detect\",code=\"200\"", NULL) == 5);
    assert_true(value(&p, rt, "endpoint=\"detect\",code=\"413\"", NULL) == 1);
    assert_true(value(&p, rt, "endpoint=\"vision_detection\",code=\"400\"", NULL) == 1);
    assert_true(value(&p, rt, "endpoint=\"health\",code=\"200\"", NULL) == 1);
    assert_true(value(&p, rt, "endpoint=\"other\",code=\"404\"", NULL) == 2);
    assert_true(value(&p, rt, "endpoint=\"metrics\",code=\"0\"", NULL) == 1);
    assert_int_equal(find_fam(&p, rt)->samples, 6);

    const char *rb = "mpdetd_request_duration_seconds_bucket", *d = "endpoint=\"detect\"";
    static const struct {
        const char *le;
        double n;
    } want[] = {{"0.001", 2}, {"0.0025", 2}, {"0.005", 3}, {"0.01", 4},
                {"0.5", 4},   {"1", 5},      {"10", 5},    {"+Inf", 6}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        assert_true(value(&p, rb, d, want[i].le) == want[i].n);
    assert_true(value(&p, "mpdetd_request_duration_seconds_count", d, NULL) == 6);
    assert_true(value(&p, "mpdetd_request_duration_seconds_sum", d, NULL) == det_sum + 0.01);
    assert_true(value(&p, "mpdetd_request_duration_seconds_sum", "endpoint=\"health\"", NULL) == 0);
    assert_true(value(&p, rb, "endpoint=\"health\"", "0.001") == 1);
    assert_true(value(&p, "mpdetd_request_duration_seconds_sum", "endpoint=\"metrics\"", NULL) ==
                0);

    assert_true(value(&p, "mpdetd_inference_duration_seconds_bucket", "", "0.25") == 1);
    assert_true(value(&p, "mpdetd_inference_duration_seconds_bucket", "", "0.5") == 2);
    assert_true(value(&p, "mpdetd_inference_duration_seconds_sum", "", NULL) == 0.25 + 0.3);

    static const struct {
        const char *le;
        double n;
    } bwant[] = {{"1", 2},  {"2", 3},  {"4", 4},  {"8", 5},
                 {"16", 5}, {"32", 5}, {"64", 6}, {"+Inf", 7}};
    for (size_t i = 0; i < sizeof(bwant) / sizeof(bwant[0]); i++)
        assert_true(value(&p, "mpdetd_batch_size_bucket", "", bwant[i].le) == bwant[i].n);
    assert_true(value(&p, "mpdetd_batch_size_count", "", NULL) == 7);
    assert_true(value(&p, "mpdetd_batch_size_sum", "", NULL) == 144);

    const char *ls = "mpdetd_layer_seconds_total", *lr = "mpdetd_layer_runs_total";
    assert_true(value(&p, ls, "layer=\"0\",precision=\"fp32\"", NULL) == 0.75);
    assert_true(value(&p, lr, "layer=\"0\",precision=\"fp32\"", NULL) == 2);
    assert_true(value(&p, ls, "layer=\"0\",precision=\"int8\"", NULL) == 0.125);
    assert_true(value(&p, lr, "layer=\"23\",precision=\"-\"", NULL) == 1);
    assert_true(value(&p, lr, "layer=\"5\",precision=\"other\"", NULL) == 1);
    assert_false(has(&p, lr, "layer=\"24\",precision=\"fp32\""));
    assert_int_equal(find_fam(&p, lr)->samples, 4);
    assert_int_equal(find_fam(&p, ls)->samples, 4);

    assert_true(value(&p, "mpdetd_reloads_total", "result=\"ok\"", NULL) == 2);
    assert_true(value(&p, "mpdetd_reloads_total", "result=\"error\"", NULL) == 1);
    assert_true(value(&p, "mpdetd_queue_depth", "", NULL) == 3);
    assert_true(value(&p, "mpdetd_queue_capacity", "", NULL) == 16);
    assert_true(value(&p, "mpdetd_plan_generation", "", NULL) == 7);
    assert_true(value(&p, "mpdetd_build_info", "version=\"1.0\",backend=\"cuda\"", NULL) == 1);
    /* Values are written as the shortest text that reads back exactly. */
    assert_non_null(
        strstr(text, "mpdetd_layer_seconds_total{layer=\"0\",precision=\"fp32\"} 0.75\n"));
    free(p.s);
    free(text);
    mpdd_metrics_free(m);
}

static void test_label_escaping(void **state)
{
    (void)state;
    mpdd_metrics *m = mpdd_metrics_create(1);
    assert_non_null(m);
    const char *version = "1.0 \"beta\" C:\\path\nline2";
    char *text = mpdd_metrics_render(m, version, NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, "mpdetd_build_info{version=\"1.0 \\\"beta\\\" C:\\\\path\\nline2"
                                 "\",backend=\"\"} 1\n"));
    parsed p;
    parse(text, &p);
    char want[128];
    snprintf(want, sizeof(want), "version=\"%s\",backend=\"\"", version);
    assert_true(value(&p, "mpdetd_build_info", want, NULL) == 1);
    free(p.s);
    free(text);
    mpdd_metrics_free(m);
}

static void test_null_handle(void **state)
{
    (void)state;
    mpdd_metrics_request(NULL, "detect", 200, 1);
    mpdd_metrics_inference(NULL, 1);
    mpdd_metrics_layer(NULL, 0, "fp32", 1);
    mpdd_metrics_reload(NULL, 1);
    mpdd_metrics_queue(NULL, 1, 2);
    mpdd_metrics_plan(NULL, 1);
    assert_null(mpdd_metrics_render(NULL, "v", "cpu"));
    mpdd_metrics_free(NULL);
    /* No layers at all is a valid (if dull) network. */
    mpdd_metrics *m = mpdd_metrics_create(-3);
    assert_non_null(m);
    mpdd_metrics_layer(m, 0, "fp32", 1);
    char *text = mpdd_metrics_render(m, "v", "cpu");
    parsed p;
    parse(text, &p);
    assert_int_equal(find_fam(&p, "mpdetd_layer_runs_total")->samples, 0);
    free(p.s);
    free(text);
    mpdd_metrics_free(m);
}

/* A new plan drops the layer's series in the precisions it left; the
 * abandoned-request counter counts. */
static void test_plan_change_and_abandoned(void **state)
{
    (void)state;
    mpdd_metrics *m = mpdd_metrics_create(4);
    assert_non_null(m);
    mpdd_metrics_layer(m, 1, "fp32", 0.5);
    mpdd_metrics_layer(m, 2, "fp32", 0.5);
    mpdd_metrics_layer(m, 1, "int8", 0.25);
    mpdd_metrics_layer_precision(m, 1, "int8");
    mpdd_metrics_layer_precision(NULL, 1, "int8");
    mpdd_metrics_layer_precision(m, 9, "int8"); /* ignored */
    mpdd_metrics_abandoned(m);
    mpdd_metrics_abandoned(m);
    mpdd_metrics_abandoned(NULL);
    char *text = mpdd_metrics_render(m, "v", "cpu");
    parsed p;
    parse(text, &p);
    const char *ls = "mpdetd_layer_seconds_total";
    assert_true(value(&p, ls, "layer=\"1\",precision=\"int8\"", NULL) == 0.25);
    assert_true(value(&p, ls, "layer=\"2\",precision=\"fp32\"", NULL) == 0.5);
    assert_int_equal(find_fam(&p, ls)->samples, 2); /* layer 1 in fp32 is gone */
    assert_true(value(&p, "mpdetd_abandoned_total", "", NULL) == 2);
    free(p.s);
    free(text);
    mpdd_metrics_free(m);
}

#define THREADS 4
#define PER_THREAD 10000
#define LAYERS 24

/* Powers of two, so sums are exact in any order of addition. */
#define REQ_S 0.0009765625 /* 2^-10: the first bucket */
#define INF_S 0.125
#define LAYER_S 0.000244140625 /* 2^-12 */

typedef struct {
    mpdd_metrics *m;
    int id;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    for (int i = 0; i < PER_THREAD; i++) {
        mpdd_metrics_request(a->m, (i & 1) ? "detect" : "vision_detection", 200, REQ_S);
        mpdd_metrics_inference(a->m, INF_S);
        mpdd_metrics_layer(a->m, (a->id * PER_THREAD + i) % LAYERS, "int8", LAYER_S);
        if (i % 1000 == 0)
            mpdd_metrics_reload(a->m, a->id & 1);
        mpdd_metrics_queue(a->m, i % 16, 16);
    }
    return NULL;
}

#define KEEP 8

typedef struct {
    mpdd_metrics *m;
    atomic_int *stop;
    int renders, inconsistent;
    char *kept[KEEP]; /* the first renders, parsed by the main thread */
} render_arg;

static unsigned long long number_after(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : ~0ULL;
}

/* Renders while the workers record. cmocka's asserts must stay on the main
 * thread, so this only checks that each snapshot is from one instant
 * (_count equals the +Inf bucket) and keeps a few texts for the full
 * parse afterwards. */
static void *renderer(void *p)
{
    render_arg *a = p;
    while (!atomic_load(a->stop)) {
        char *text = mpdd_metrics_render(a->m, "t", "cpu");
        if (!text)
            return NULL;
        if (number_after(text, "mpdetd_inference_duration_seconds_count ") !=
            number_after(text, "mpdetd_inference_duration_seconds_bucket{le=\"+Inf\"} "))
            a->inconsistent++;
        if (a->renders < KEEP)
            a->kept[a->renders] = text;
        else
            free(text);
        a->renders++;
    }
    return NULL;
}

static void test_concurrency(void **state)
{
    (void)state;
    mpdd_metrics *m = mpdd_metrics_create(LAYERS);
    assert_non_null(m);
    pthread_t t[THREADS], r;
    worker_arg wa[THREADS];
    atomic_int stop = 0;
    render_arg ra = {m, &stop, 0, 0, {0}};
    assert_int_equal(pthread_create(&r, NULL, renderer, &ra), 0);
    for (int i = 0; i < THREADS; i++) {
        wa[i] = (worker_arg){m, i};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &wa[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    atomic_store(&stop, 1);
    pthread_join(r, NULL);
    assert_true(ra.renders > 0);
    assert_int_equal(ra.inconsistent, 0);
    for (int i = 0; i < KEEP && i < ra.renders; i++) {
        parsed kp;
        parse(ra.kept[i], &kp);
        free(kp.s);
        free(ra.kept[i]);
    }

    char *text = mpdd_metrics_render(m, "t", "cpu");
    assert_non_null(text);
    parsed p;
    parse(text, &p);
    const double half = THREADS * PER_THREAD / 2;
    const char *rt = "mpdetd_requests_total";
    assert_true(value(&p, rt, "endpoint=\"detect\",code=\"200\"", NULL) == half);
    assert_true(value(&p, rt, "endpoint=\"vision_detection\",code=\"200\"", NULL) == half);
    assert_true(value(&p, "mpdetd_request_duration_seconds_bucket", "endpoint=\"detect\"",
                      "0.001") == half);
    assert_true(value(&p, "mpdetd_request_duration_seconds_sum", "endpoint=\"detect\"", NULL) ==
                half * REQ_S);
    const double all = THREADS * PER_THREAD;
    assert_true(value(&p, "mpdetd_inference_duration_seconds_count", "", NULL) == all);
    assert_true(value(&p, "mpdetd_inference_duration_seconds_bucket", "", "0.1") == 0);
    assert_true(value(&p, "mpdetd_inference_duration_seconds_bucket", "", "0.25") == all);
    assert_true(value(&p, "mpdetd_inference_duration_seconds_sum", "", NULL) == all * INF_S);
    double runs = 0, secs = 0;
    for (int l = 0; l < LAYERS; l++) {
        char lab[64];
        snprintf(lab, sizeof(lab), "layer=\"%d\",precision=\"int8\"", l);
        runs += value(&p, "mpdetd_layer_runs_total", lab, NULL);
        secs += value(&p, "mpdetd_layer_seconds_total", lab, NULL);
    }
    assert_true(runs == all);
    assert_true(secs == all * LAYER_S);
    assert_true(value(&p, "mpdetd_reloads_total", "result=\"ok\"", NULL) ==
                THREADS / 2 * (PER_THREAD / 1000));
    assert_true(value(&p, "mpdetd_reloads_total", "result=\"error\"", NULL) ==
                THREADS / 2 * (PER_THREAD / 1000));
    assert_true(value(&p, "mpdetd_queue_capacity", "", NULL) == 16);
    free(p.s);
    free(text);
    mpdd_metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_render),   cmocka_unit_test(test_observations),
        cmocka_unit_test(test_label_escaping), cmocka_unit_test(test_null_handle),
        cmocka_unit_test(test_concurrency),    cmocka_unit_test(test_plan_change_and_abandoned),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
