/* fuzz_image.c - libFuzzer target: image decoding behind the daemon's
 * limits (host/image.c, mpd_image_decode, with stb_image under it) at a
 * pixel limit of 1,000,000 (the daemon's default is 40,000,000; a lower one
 * keeps each run fast without skipping any code path: an 8 KB JPEG that
 * declares 48 x 65,496 pixels decodes in 0.4 s at -O2 but 3.6 s under the
 * sanitizers, and past libFuzzer's 10 s timeout when the machine is busy,
 * as a 10-minute run at 4,000,000 found).
 *
 * image.c compiles stb_image in, so the fuzzer sees, and the sanitizers
 * check, the decoder itself.
 *
 * Input: image bytes. Seeds (fuzz_seeds.c): darknet's photos scaled down
 * and written as PNG (RGB, grey, RGBA), JPEG, BMP, TGA (RLE and raw), HDR,
 * PPM, PGM, PSD and GIF, plus darknet's small label PNGs. Built and run by
 * scripts/fuzz; see tests/fuzz/README. */
#include <stddef.h>
#include <stdint.h>

#include "engine.h"
#include "fuzz.h"

#define MAX_PIXELS 1000000LL

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mpd_image im;
    char msg[512];
    int rc = mpd_image_decode(data, size, MAX_PIXELS, &im, msg, sizeof(msg));
    if (rc) {
        FUZZ_CHECK(rc < 0 && !im.data);
        fuzz_check_msg(msg, sizeof(msg));
        return 0;
    }
    FUZZ_CHECK(im.data && im.w > 0 && im.h > 0);
    FUZZ_CHECK((long long)im.w * im.h <= MAX_PIXELS);
    /* Touch the first and last byte of each row so ASan checks that the
     * buffer really holds w x h RGB pixels. */
    unsigned sum = 0;
    size_t row = (size_t)im.w * 3;
    for (int y = 0; y < im.h; y++)
        sum += im.data[(size_t)y * row] + im.data[(size_t)y * row + row - 1];
    (void)sum;
    mpd_image_free(&im);
    FUZZ_CHECK(!im.data);
    return 0;
}
