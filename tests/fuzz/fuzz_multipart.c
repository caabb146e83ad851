/* fuzz_multipart.c - libFuzzer target: the multipart/form-data reader of
 * the DeepStack endpoint (daemon/multipart.c, mpdd_multipart_field).
 *
 * Input: the Content-Type header value, a LF, then the body (any bytes).
 * An input without a LF is a Content-Type with an empty body. The body is
 * passed in place, so a read past its end is one past the fuzzer's own
 * buffer, which ASan catches. Seeds (fuzz_seeds.c): bodies framed as curl,
 * Python requests and browsers frame them, around darknet's photos scaled
 * down. Built and run by scripts/fuzz; see tests/fuzz/README. */
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "fuzz.h"
#include "multipart.h"

static void field(const char *ct, const uint8_t *body, size_t len, const char *name)
{
    const unsigned char *d = (const unsigned char *)"x";
    size_t dlen = 99;
    int found = -1;
    char msg[512];
    int rc = mpdd_multipart_field(ct, body, len, name, &d, &dlen, &found, msg, sizeof(msg));
    if (rc) {
        FUZZ_CHECK(rc == MPD_EPARSE);
        fuzz_check_msg(msg, sizeof(msg));
        return;
    }
    if (!found) {
        FUZZ_CHECK(found == 0 && !d && dlen == 0);
        return;
    }
    FUZZ_CHECK(found == 1 && d && d >= body && dlen <= len && (size_t)(d - body) <= len - dlen);
    /* Every byte of the field is readable (ASan checks). */
    unsigned sum = 0;
    for (size_t i = 0; i < dlen; i++)
        sum += d[i];
    (void)sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t ctlen = nl ? (size_t)(nl - data) : size;
    char *ct = fuzz_strndup(data, ctlen);
    const uint8_t *body = nl ? nl + 1 : data + size;
    size_t len = size - (size_t)(body - data);
    field(ct, len ? body : NULL, len, "image");
    field(ct, len ? body : NULL, len, "min_confidence");
    free(ct);
    return 0;
}
