/* fuzz_config.c - libFuzzer target: mpdetd's configuration parser
 * (daemon/config.c, mpdd_config_load), then the reload check against the
 * defaults and the TCP listener split of what it accepted.
 *
 * Input: mpdetd.conf text, through a memfd. Seeds: config/mpdetd.conf as
 * shipped (every line commented out) and with its settings uncommented.
 * Built and run by scripts/fuzz; see tests/fuzz/README. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "engine.h"
#include "fuzz.h"

static fuzz_file conf;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_file_open(&conf, "fuzz.conf");
    return 0;
}

#define TERMINATED(field) FUZZ_CHECK(memchr((field), '\0', sizeof(field)) != NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_file_set(&conf, data, size);
    mpdd_config def, c;
    mpdd_config_defaults(&def);
    memset(&c, 0x5a, sizeof(c));
    /* msg is filled with 'x' before each call, so a message is checked
     * for what the call wrote, never for what the stack held: only a
     * failing call must write one (a success leaves msg alone). */
    char msg[512];
    memset(msg, 'x', sizeof(msg));
    int rc = mpdd_config_load(conf.path, &c, msg, sizeof(msg));
    if (rc) {
        FUZZ_CHECK(rc < 0);
        fuzz_check_msg(msg, sizeof(msg));
        /* On error the output is left untouched. */
        for (size_t i = 0; i < sizeof(c); i++)
            FUZZ_CHECK(((unsigned char *)&c)[i] == 0x5a);
        return 0;
    }
    TERMINATED(c.socket);
    TERMINATED(c.socket_group);
    TERMINATED(c.tcp_listen);
    TERMINATED(c.cfg);
    TERMINATED(c.weights);
    TERMINATED(c.names);
    TERMINATED(c.plan);
    TERMINATED(c.backend);
    FUZZ_CHECK(strlen(c.socket) <= 107);
    FUZZ_CHECK(c.socket_mode <= 0777);
    FUZZ_CHECK(c.workers >= 1 && c.threads >= 0);
    FUZZ_CHECK(c.max_body >= 1024 && c.max_header >= 1024 && c.max_pixels >= 1);
    FUZZ_CHECK(c.thresh >= 0 && c.thresh <= 1 && c.nms >= 0 && c.nms <= 1);
    memset(msg, 'x', sizeof(msg));
    rc = mpdd_config_check_reload(&def, &c, msg, sizeof(msg));
    FUZZ_CHECK(rc == 0 || rc == MPD_EINVAL);
    if (rc)
        fuzz_check_msg(msg, sizeof(msg));
    rc = mpdd_config_check_reload(&c, &c, msg, sizeof(msg));
    FUZZ_CHECK(rc == 0);
    if (c.tcp_listen[0]) {
        char host[64];
        int port = -1;
        /* The parser validated it, so the split must succeed. */
        rc = mpdd_config_tcp_split(c.tcp_listen, host, sizeof(host), &port, msg, sizeof(msg));
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(port > 0 && port <= 65535);
    }
    return 0;
}
