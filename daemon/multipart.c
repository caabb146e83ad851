/* multipart.c - strict multipart/form-data reader; see multipart.h for
 * what is accepted. Works on the body in place: no allocation, no copy. */
#include "multipart.h"

#include <stdio.h>
#include <string.h>

#include "engine.h"
#include "internal.h"

/* RFC 2046: a boundary is 1..70 characters. */
#define MAX_BOUNDARY 70

/* Client bytes only reach messages (and so log lines and JSON replies)
 * through this: at most 32 printable ASCII characters, quotes and the rest
 * replaced by '?'. */
static const char *sample(const char *p, size_t n, char *buf, size_t len)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < len && k < 32; i++) {
        unsigned char ch = (unsigned char)p[i];
        buf[k++] =
            ch >= 0x20 && ch < 0x7f && ch != '\'' && ch != '"' && ch != '\\' ? (char)ch : '?';
    }
    buf[k] = '\0';
    return buf;
}

static int lower(int ch)
{
    return ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch;
}

/* Case-insensitive (ASCII) comparison of p[0..n) with the C string want. */
static int ieq(const char *p, size_t n, const char *want)
{
    if (strlen(want) != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)p[i]) != lower((unsigned char)want[i]))
            return 0;
    return 1;
}

static int is_ows(int ch)
{
    return ch == ' ' || ch == '\t';
}

/* RFC 7230 tchar. */
static int is_tchar(int ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* RFC 2046 bchars (space allowed, but not last). */
static int is_bchar(int ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch && strchr("'()+_,-./:=? ", ch));
}

/* First occurrence of needle in hay[from..to), or (size_t)-1. Scans with
 * memchr for the needle's first byte, which is '\r' for both needles used
 * here and so rare inside image data. */
static size_t find(const unsigned char *hay, size_t from, size_t to, const char *needle, size_t n)
{
    while (from + n <= to) {
        const unsigned char *c = memchr(hay + from, needle[0], to - from - n + 1);
        if (!c)
            break;
        size_t at = (size_t)(c - hay);
        if (memcmp(c, needle, n) == 0)
            return at;
        from = at + 1;
    }
    return (size_t)-1;
}

/* One "; name=value" parameter of a header value. */
typedef struct {
    const char *name, *val;
    size_t nlen, vlen; /* val excludes the quotes of a quoted string */
    int quoted;        /* val may then hold backslash escapes */
} param;

/* Parses the next parameter at *pp (before end). Returns 1 and advances *pp
 * past it, 0 at the end of the value, -1 when malformed. A trailing ';' is
 * allowed. */
static int next_param(const char **pp, const char *end, param *out)
{
    const char *p = *pp;
    while (p < end && is_ows((unsigned char)*p))
        p++;
    if (p == end)
        return 0;
    if (*p++ != ';')
        return -1;
    while (p < end && is_ows((unsigned char)*p))
        p++;
    if (p == end) {
        *pp = p;
        return 0;
    }
    out->name = p;
    while (p < end && is_tchar((unsigned char)*p))
        p++;
    out->nlen = (size_t)(p - out->name);
    if (!out->nlen || p == end || *p++ != '=')
        return -1;
    if (p < end && *p == '"') {
        out->quoted = 1;
        out->val = ++p;
        for (;;) {
            if (p == end)
                return -1; /* unterminated */
            unsigned char ch = (unsigned char)*p;
            if (ch == '"')
                break;
            if (ch == '\\') {
                if (++p == end)
                    return -1;
                ch = (unsigned char)*p;
            }
            if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
                return -1;
            p++;
        }
        out->vlen = (size_t)(p - out->val);
        p++;
    } else {
        /* Unquoted: lenient beyond RFC 7230's token (a '/' or '=' in an
         * unquoted boundary is common), but no blanks, quotes or CTLs. */
        out->quoted = 0;
        out->val = p;
        while (p < end && *p != ';' && !is_ows((unsigned char)*p) && *p != '"' &&
               (unsigned char)*p > 0x20 && (unsigned char)*p != 0x7f)
            p++;
        out->vlen = (size_t)(p - out->val);
        if (!out->vlen)
            return -1;
    }
    *pp = p;
    return 1;
}

/* Copies a parameter value, undoing quoted-pair escapes, into buf (len
 * bytes with the NUL). Returns its length, or -1 if it does not fit. */
static long unquote(const param *pr, char *buf, size_t len)
{
    size_t k = 0;
    for (size_t i = 0; i < pr->vlen; i++) {
        char ch = pr->val[i];
        if (pr->quoted && ch == '\\')
            ch = pr->val[++i]; /* next_param checked a character follows */
        if (k + 1 >= len)
            return -1;
        buf[k++] = ch;
    }
    buf[k] = '\0';
    return (long)k;
}

/* Compares a parameter value, escapes undone, with the C string want. */
static int param_equals(const param *pr, const char *want)
{
    size_t k = 0, n = strlen(want);
    for (size_t i = 0; i < pr->vlen; i++, k++) {
        char ch = pr->val[i];
        if (pr->quoted && ch == '\\')
            ch = pr->val[++i];
        if (k >= n || ch != want[k])
            return 0;
    }
    return k == n;
}

/* Takes the boundary out of a Content-Type value into b (NUL-terminated). */
static int parse_content_type(const char *ct, char *b, size_t *blen, char *msg, size_t msglen)
{
    char s[40];
    const char *p = ct, *end = ct + strlen(ct);
    while (p < end && is_ows((unsigned char)*p))
        p++;
    const char *type = p;
    while (p < end && *p != ';' && !is_ows((unsigned char)*p))
        p++;
    if (!ieq(type, (size_t)(p - type), "multipart/form-data"))
        return mpd__fail(msg, msglen, MPD_EPARSE, "Content-Type '%s' is not multipart/form-data",
                         sample(type, (size_t)(p - type), s, sizeof(s)));
    param pr;
    int r, got = 0;
    while ((r = next_param(&p, end, &pr)) == 1) {
        if (!ieq(pr.name, pr.nlen, "boundary"))
            continue;
        if (got++)
            return mpd__fail(msg, msglen, MPD_EPARSE, "Content-Type has two boundary parameters");
        long n = unquote(&pr, b, MAX_BOUNDARY + 1);
        if (n < 0)
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "multipart boundary is longer than %d characters", MAX_BOUNDARY);
        *blen = (size_t)n;
    }
    if (r < 0)
        return mpd__fail(msg, msglen, MPD_EPARSE, "malformed Content-Type parameters: '%s'",
                         sample(ct, strlen(ct), s, sizeof(s)));
    if (!got)
        return mpd__fail(msg, msglen, MPD_EPARSE, "Content-Type has no boundary parameter");
    if (*blen == 0 || b[*blen - 1] == ' ')
        return mpd__fail(msg, msglen, MPD_EPARSE, "multipart boundary is empty or ends in a space");
    for (size_t i = 0; i < *blen; i++)
        if (!is_bchar((unsigned char)b[i]))
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "multipart boundary has a character RFC 2046 does not allow");
    return 0;
}

/* Reads the header block of part `part` (hdr[0..n), every line ending in
 * CRLF) and says whether its Content-Disposition names `name`. Returns 0
 * with *match set, or MPD_EPARSE. */
static int part_headers(const char *hdr, size_t n, size_t off, int part, const char *name,
                        int *match, char *msg, size_t msglen)
{
    char s[40];
    const char *p = hdr, *end = hdr + n;
    int dispositions = 0;
    *match = 0;
    while (p < end) {
        const char *eol = p;
        while (eol + 1 < end && !(eol[0] == '\r' && eol[1] == '\n')) {
            if (*eol == '\r' || *eol == '\n' || *eol == '\0')
                return mpd__fail(msg, msglen, MPD_EPARSE,
                                 "multipart part %d: stray CR, LF or NUL in its headers (byte %zu)",
                                 part, off + (size_t)(eol - hdr));
            eol++;
        }
        /* The block ends in CRLF by construction, so eol found one. A
         * continuation line is caught before its header is read, so the
         * message says what is wrong rather than what is incomplete. */
        if (is_ows((unsigned char)*p) || (eol + 2 < end && is_ows((unsigned char)eol[2])))
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "multipart part %d: folded header lines are not supported (byte %zu)",
                             part, off + (size_t)(eol - hdr));
        const char *colon = memchr(p, ':', (size_t)(eol - p));
        if (!colon || colon == p)
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "multipart part %d: header line without a name and ':' (byte %zu): "
                             "'%s'",
                             part, off + (size_t)(p - hdr),
                             sample(p, (size_t)(eol - p), s, sizeof(s)));
        if (ieq(p, (size_t)(colon - p), "Content-Disposition")) {
            if (dispositions++)
                return mpd__fail(msg, msglen, MPD_EPARSE,
                                 "multipart part %d: two Content-Disposition headers", part);
            const char *v = colon + 1;
            while (v < eol && is_ows((unsigned char)*v))
                v++;
            const char *t = v;
            while (v < eol && *v != ';' && !is_ows((unsigned char)*v))
                v++;
            if (!ieq(t, (size_t)(v - t), "form-data"))
                return mpd__fail(msg, msglen, MPD_EPARSE,
                                 "multipart part %d: Content-Disposition is '%s', not form-data",
                                 part, sample(t, (size_t)(v - t), s, sizeof(s)));
            param pr;
            int r, names = 0;
            while ((r = next_param(&v, eol, &pr)) == 1) {
                if (!ieq(pr.name, pr.nlen, "name"))
                    continue;
                if (names++)
                    return mpd__fail(msg, msglen, MPD_EPARSE,
                                     "multipart part %d: two name parameters", part);
                *match = param_equals(&pr, name);
            }
            if (r < 0)
                return mpd__fail(msg, msglen, MPD_EPARSE,
                                 "multipart part %d: malformed Content-Disposition parameters "
                                 "(byte %zu)",
                                 part, off + (size_t)(p - hdr));
            if (!names)
                return mpd__fail(msg, msglen, MPD_EPARSE,
                                 "multipart part %d: Content-Disposition has no name", part);
        }
        p = eol + 2;
    }
    if (!dispositions)
        return mpd__fail(msg, msglen, MPD_EPARSE,
                         "multipart part %d: no Content-Disposition: form-data header", part);
    return 0;
}

int mpdd_multipart_field(const char *content_type, const unsigned char *body, size_t len,
                         const char *name, const unsigned char **data, size_t *dlen, int *found,
                         char *msg, size_t msglen)
{
    if (!content_type || (!body && len) || !name || !data || !dlen || !found)
        return mpd__fail(msg, msglen, MPD_EINVAL, "mpdd_multipart_field: NULL argument");
    *data = NULL;
    *dlen = 0;
    *found = 0;
    char b[MAX_BOUNDARY + 1];
    size_t bl = 0;
    int rc = parse_content_type(content_type, b, &bl, msg, msglen);
    if (rc)
        return rc;

    /* delim is CRLF "--" boundary: RFC 2046 makes the CRLF before a
     * boundary line part of the delimiter, not of the preceding data. */
    char delim[4 + MAX_BOUNDARY];
    memcpy(delim, "\r\n--", 4);
    memcpy(delim + 4, b, bl);
    size_t dl = 4 + bl;

    /* p: where the current "--boundary" line starts. The first one may open
     * the body or follow a preamble. */
    size_t p;
    if (len >= dl - 2 && memcmp(body, delim + 2, dl - 2) == 0) {
        p = 0;
    } else {
        size_t at = len ? find(body, 0, len, delim, dl) : (size_t)-1;
        if (at == (size_t)-1)
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "multipart body has no opening boundary (%zu bytes)", len);
        p = at + 2;
    }
    const unsigned char *first = NULL;
    size_t first_len = 0;
    int parts = 0;
    for (;;) {
        size_t q = p + dl - 2;
        if (q + 2 <= len && body[q] == '-' && body[q + 1] == '-')
            break; /* close delimiter; what follows is the epilogue */
        /* RFC 2046 transport padding, then CRLF. */
        while (q < len && is_ows(body[q]))
            q++;
        if (q + 2 > len)
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "multipart body ends inside a boundary line at byte %zu (truncated?)",
                             p);
        if (body[q] != '\r' || body[q + 1] != '\n')
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             body[q] == '\n'
                                 ? "multipart boundary line at byte %zu ends in a bare LF; "
                                   "lines must end in CRLF"
                                 : "multipart boundary at byte %zu is followed by other bytes "
                                   "(the boundary must not occur in the data)",
                             p);
        size_t s = q + 2; /* part headers start here */
        if (++parts > MPDD_MULTIPART_MAX_PARTS)
            return mpd__fail(msg, msglen, MPD_EPARSE, "multipart body has more than %d parts",
                             MPDD_MULTIPART_MAX_PARTS);
        size_t e = find(body, s, len, delim, dl);
        if (e == (size_t)-1)
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "multipart part %d (byte %zu) has no closing boundary "
                             "(truncated body?)",
                             parts, s);
        /* The header block ends at the first CRLF CRLF. Searched from s - 2
         * so an empty block (the boundary line's CRLF then CRLF) is found,
         * and up to e + 2 so headers with no body (RFC 2046 makes the CRLF
         * and content optional) are too. */
        size_t h = find(body, s - 2, e + 2, "\r\n\r\n", 4);
        if (h == (size_t)-1)
            return mpd__fail(msg, msglen, MPD_EPARSE,
                             "multipart part %d (byte %zu): headers not ended by an empty line "
                             "(CRLF CRLF)",
                             parts, s);
        int match;
        rc = part_headers((const char *)body + s, h + 2 - s, s, parts, name, &match, msg, msglen);
        if (rc)
            return rc;
        if (match && !first) {
            first = h + 2 == e ? body + e : body + h + 4;
            first_len = (size_t)(body + e - first);
        }
        p = e + 2;
    }
    if (!parts)
        return mpd__fail(msg, msglen, MPD_EPARSE, "multipart body has no parts");
    if (first) {
        *data = first;
        *dlen = first_len;
        *found = 1;
    }
    return 0;
}
