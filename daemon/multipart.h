/* multipart.h - a strict multipart/form-data reader (RFC 7578 / RFC 2046)
 * for the DeepStack / CodeProject.AI endpoint; evhttp has none.
 *
 * What it accepts (and what it refuses, with MPD_EPARSE):
 * - Content-Type: multipart/form-data (case-insensitive) with a boundary=
 *   parameter, quoted or not, of 1..70 RFC 2046 bchars.
 * - Lines end in CRLF. LF-only line endings are refused: every real client
 *   (curl, browsers, Python requests, the DeepStack SDKs) sends CRLF, and
 *   guessing where an LF-only part ends would put a stray CR into, or take
 *   one out of, binary image data.
 * - An optional preamble before the first boundary and any epilogue after
 *   the closing one are ignored, as RFC 2046 says.
 * - A "--boundary" at a line start must be followed by "--" (the end) or by
 *   optional blanks and CRLF; anything else there is refused rather than
 *   taken as data, since the boundary must not occur in the data at all.
 *   The boundary inside data but not at a line start is just data.
 * - Every part needs exactly one Content-Disposition: form-data header with
 *   a name= parameter (a quoted string, backslash escapes allowed, or a
 *   token); filename= and other parameters and headers are ignored. Folded
 *   (continued) header lines are refused.
 * - At most 64 parts. The whole body is checked even after the field is
 *   found, so a truncated upload is an error, never a half image.
 * - When the field appears more than once, the first one is returned. */
#ifndef MPDD_MULTIPART_H
#define MPDD_MULTIPART_H

#include <stddef.h>

/* Most parts one body may have. */
#define MPDD_MULTIPART_MAX_PARTS 64

/* Finds form field `name` in body (len bytes) given the request's
 * Content-Type header value. On success returns 0; if found, *data and *dlen
 * point into body (no copy: valid as long as body is) and *found = 1; a
 * missing field gives 0 with *found = 0, *data = NULL, *dlen = 0. A
 * malformed body (see above) or Content-Type gives MPD_EPARSE, NULL
 * arguments MPD_EINVAL, each with a message naming the part and byte
 * offset; messages never quote client bytes except a sanitized sample.
 * Binary-safe: parts may hold NUL, CR and LF. Reentrant; no allocation. */
int mpdd_multipart_field(const char *content_type, const unsigned char *body, size_t len,
                         const char *name, const unsigned char **data, size_t *dlen, int *found,
                         char *msg, size_t msglen);

#endif
