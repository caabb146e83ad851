#define _POSIX_C_SOURCE 200809L
#include "cfg.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mpd.h"

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

void mpd_cfg_free(mpd_cfg *cfg)
{
    if (!cfg)
        return;
    for (int i = 0; i < cfg->nsec; i++) {
        for (int j = 0; j < cfg->sec[i].nkv; j++) {
            free(cfg->sec[i].kv[j].key);
            free(cfg->sec[i].kv[j].val);
        }
        free(cfg->sec[i].kv);
        free(cfg->sec[i].name);
    }
    free(cfg->sec);
    free(cfg->path);
    free(cfg);
}

static int add_section(mpd_cfg *c, const char *name, int line)
{
    mpd_cfg_section *ns = realloc(c->sec, (size_t)(c->nsec + 1) * sizeof(*ns));
    if (!ns)
        return MPD_ENOMEM;
    c->sec = ns;
    mpd_cfg_section *s = &c->sec[c->nsec];
    memset(s, 0, sizeof(*s));
    s->name = strdup(name);
    s->line = line;
    if (!s->name)
        return MPD_ENOMEM;
    c->nsec++;
    return 0;
}

static int add_kv(mpd_cfg_section *s, const char *k, const char *v, int line)
{
    mpd_cfg_kv *nk = realloc(s->kv, (size_t)(s->nkv + 1) * sizeof(*nk));
    if (!nk)
        return MPD_ENOMEM;
    s->kv = nk;
    mpd_cfg_kv *kv = &s->kv[s->nkv];
    kv->key = strdup(k);
    kv->val = strdup(v);
    kv->line = line;
    kv->used = 0;
    if (!kv->key || !kv->val) {
        free(kv->key);
        free(kv->val);
        return MPD_ENOMEM;
    }
    s->nkv++;
    return 0;
}

int mpd_cfg_parse_string(const char *text, const char *name, mpd_cfg **out, char *msg,
                         size_t msglen)
{
    *out = NULL;
    mpd_cfg *c = calloc(1, sizeof(*c));
    char *buf = strdup(text);
    int rc = MPD_ENOMEM;
    if (!c || !buf)
        goto fail;
    c->path = strdup(name ? name : "<string>");
    if (!c->path)
        goto fail;

    int line = 0;
    /* strtok would merge empty lines and lose the count, so split by hand. */
    char *p = buf;
    while (p) {
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = '\0';
        line++;
        char *l = trim(p);
        p = nl ? nl + 1 : NULL;
        if (*l == '\0' || *l == '#' || *l == ';')
            continue;
        if (*l == '[') {
            size_t n = strlen(l);
            if (n < 3 || l[n - 1] != ']') {
                rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: malformed section header '%s'",
                               c->path, line, l);
                goto fail;
            }
            l[n - 1] = '\0';
            char *nm = trim(l + 1);
            for (char *q = nm; *q; q++) {
                if (!isalnum((unsigned char)*q) && *q != '_') {
                    rc = mpd__fail(msg, msglen, MPD_EPARSE,
                                   "%s:%d: malformed section name '[%s]'", c->path, line, nm);
                    goto fail;
                }
            }
            if ((rc = add_section(c, nm, line)) < 0)
                goto fail;
            continue;
        }
        char *eq = strchr(l, '=');
        if (!eq) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: expected key=value, got '%.40s'",
                           c->path, line, l);
            goto fail;
        }
        *eq = '\0';
        char *k = trim(l), *v = trim(eq + 1);
        if (!*k) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: empty key", c->path, line);
            goto fail;
        }
        if (c->nsec == 0) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: key '%s' before any [section]",
                           c->path, line, k);
            goto fail;
        }
        mpd_cfg_section *s = &c->sec[c->nsec - 1];
        for (int i = 0; i < s->nkv; i++) {
            if (strcmp(s->kv[i].key, k) == 0) {
                rc = mpd__fail(msg, msglen, MPD_EPARSE,
                               "%s:%d: duplicate key '%s' (first set on line %d)", c->path,
                               line, k, s->kv[i].line);
                goto fail;
            }
        }
        if ((rc = add_kv(s, k, v, line)) < 0)
            goto fail;
    }
    if (c->nsec == 0) {
        rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s: no sections", c->path);
        goto fail;
    }
    free(buf);
    *out = c;
    return 0;
fail:
    if (rc == MPD_ENOMEM)
        mpd__fail(msg, msglen, rc, "%s: out of memory", name ? name : "cfg");
    free(buf);
    mpd_cfg_free(c);
    return rc;
}

int mpd_cfg_parse_file(const char *path, mpd_cfg **out, char *msg, size_t msglen)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return mpd__fail(msg, msglen, MPD_EIO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    int rc = MPD_ENOMEM;
    while (buf) {
        if (n + 1 >= cap) {
            if (cap > (64u << 20)) {
                rc = mpd__fail(msg, msglen, MPD_ELIMIT, "%s: larger than 64 MiB", path);
                goto done;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                break;
            buf = nb;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
    }
    if (!buf)
        goto done;
    if (ferror(f)) {
        rc = mpd__fail(msg, msglen, MPD_EIO, "%s: read error", path);
        goto done;
    }
    buf[n] = '\0';
    if (memchr(buf, '\0', n)) {
        rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s: contains a NUL byte (not a text file)",
                       path);
        goto done;
    }
    rc = mpd_cfg_parse_string(buf, path, out, msg, msglen);
done:
    if (rc == MPD_ENOMEM)
        mpd__fail(msg, msglen, rc, "%s: out of memory", path);
    free(buf);
    fclose(f);
    return rc;
}

mpd_cfg_kv *mpd_cfg_find(mpd_cfg_section *s, const char *key)
{
    for (int i = 0; i < s->nkv; i++) {
        if (strcmp(s->kv[i].key, key) == 0) {
            s->kv[i].used = 1;
            return &s->kv[i];
        }
    }
    return NULL;
}

int mpd__parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    if (!*s)
        return MPD_EPARSE;
    errno = 0;
    long v = strtol(s, &end, 10);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || *end || end == s)
        return MPD_EPARSE;
    if (v < lo || v > hi)
        return MPD_ELIMIT;
    *out = v;
    return 0;
}

int mpd__parse_float(const char *s, double lo, double hi, double *out)
{
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    if (!*s)
        return MPD_EPARSE;
    errno = 0;
    double v = strtod(s, &end);
    while (isspace((unsigned char)*end))
        end++;
    if (errno || *end || end == s || !isfinite(v))
        return MPD_EPARSE;
    if (v < lo || v > hi)
        return MPD_ELIMIT;
    *out = v;
    return 0;
}

int mpd_cfg_get_int(const mpd_cfg *c, mpd_cfg_section *s, const char *key, int def, int lo,
                    int hi, int *out, char *msg, size_t msglen)
{
    mpd_cfg_kv *kv = mpd_cfg_find(s, key);
    if (!kv) {
        *out = def;
        return 0;
    }
    long v;
    int rc = mpd__parse_int(kv->val, lo, hi, &v);
    if (rc == MPD_EPARSE)
        return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: %s: '%s' is not an integer", c->path,
                         kv->line, key, kv->val);
    if (rc)
        return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: %s=%s is out of range [%d, %d]",
                         c->path, kv->line, key, kv->val, lo, hi);
    *out = (int)v;
    return 0;
}

int mpd_cfg_get_float(const mpd_cfg *c, mpd_cfg_section *s, const char *key, float def,
                      float lo, float hi, float *out, char *msg, size_t msglen)
{
    mpd_cfg_kv *kv = mpd_cfg_find(s, key);
    if (!kv) {
        *out = def;
        return 0;
    }
    double v;
    int rc = mpd__parse_float(kv->val, lo, hi, &v);
    if (rc == MPD_EPARSE)
        return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: %s: '%s' is not a number", c->path,
                         kv->line, key, kv->val);
    if (rc)
        return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: %s=%s is out of range [%g, %g]",
                         c->path, kv->line, key, kv->val, (double)lo, (double)hi);
    *out = (float)v;
    return 0;
}

/* Parses a comma-separated list of ints or floats into vals. */
static int get_list(const mpd_cfg *c, mpd_cfg_section *s, const char *key, int cap, int *n,
                    int is_float, void *vals, char *msg, size_t msglen)
{
    *n = 0;
    mpd_cfg_kv *kv = mpd_cfg_find(s, key);
    if (!kv)
        return 0;
    char *tmp = strdup(kv->val);
    if (!tmp)
        return mpd__fail(msg, msglen, MPD_ENOMEM, "out of memory");
    int rc = 0, count = 0;
    char *p = tmp;
    for (;;) {
        char *comma = strchr(p, ',');
        if (comma)
            *comma = '\0';
        if (count >= cap) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: %s: more than %d values", c->path,
                           kv->line, key, cap);
            break;
        }
        int r;
        if (is_float) {
            double d;
            r = mpd__parse_float(p, -1e30, 1e30, &d);
            ((float *)vals)[count] = (float)d;
        } else {
            long l;
            r = mpd__parse_int(p, INT_MIN, INT_MAX, &l);
            ((int *)vals)[count] = (int)l;
        }
        if (r) {
            rc = mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: %s: item %d ('%s') is not %s",
                           c->path, kv->line, key, count + 1, trim(p),
                           is_float ? "a number" : "an integer");
            break;
        }
        count++;
        if (!comma)
            break;
        p = comma + 1;
    }
    free(tmp);
    if (rc == 0)
        *n = count;
    return rc;
}

int mpd_cfg_get_int_list(const mpd_cfg *c, mpd_cfg_section *s, const char *key, int *vals,
                         int cap, int *n, char *msg, size_t msglen)
{
    return get_list(c, s, key, cap, n, 0, vals, msg, msglen);
}

int mpd_cfg_get_float_list(const mpd_cfg *c, mpd_cfg_section *s, const char *key, float *vals,
                           int cap, int *n, char *msg, size_t msglen)
{
    return get_list(c, s, key, cap, n, 1, vals, msg, msglen);
}

int mpd_cfg_check_unused(const mpd_cfg *c, const mpd_cfg_section *s, char *msg, size_t msglen)
{
    for (int i = 0; i < s->nkv; i++) {
        if (!s->kv[i].used)
            return mpd__fail(msg, msglen, MPD_EPARSE, "%s:%d: unknown key '%s' in [%s]",
                             c->path, s->kv[i].line, s->kv[i].key, s->name);
    }
    return 0;
}
