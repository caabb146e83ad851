/* test_daemon_config.c - mpdetd.conf: defaults, a full round trip (size
 * suffixes, octal modes, quotes, comments, CRLF), every kind of error naming
 * file:line, the reload check, the printed table, and the shipped
 * config/mpdetd.conf. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "engine.h"
#include "testutil.h"

static char msg[1024];

/* Writes text to a temp file and loads it into *c. Returns load's code;
 * *path is the temp file (caller unlinks and frees). */
static int load_text(const char *text, size_t len, mpdd_config *c, char **path)
{
    *path = tu_write_temp(text, len);
    assert_non_null(*path);
    msg[0] = '\0';
    return mpdd_config_load(*path, c, msg, sizeof(msg));
}

static void test_defaults(void **state)
{
    (void)state;
    mpdd_config c;
    mpdd_config_defaults(&c);
    assert_string_equal(c.socket, "/run/mpdetd/mpdetd.sock");
    assert_int_equal(c.socket_mode, 0660);
    assert_string_equal(c.socket_group, "");
    assert_string_equal(c.tcp_listen, "");
    assert_string_equal(c.cfg, "/usr/share/mpdet/models/yolov3-tiny.cfg");
    assert_string_equal(c.weights, "/usr/share/mpdet/models/yolov3-tiny.weights");
    assert_string_equal(c.names, "/usr/share/mpdet/models/coco.names");
    assert_string_equal(c.plan, "");
    assert_string_equal(c.backend, "auto");
    assert_int_equal(c.threads, 0);
    assert_int_equal(c.workers, 1);
    assert_true(c.max_body == 16LL << 20);
    assert_true(c.max_header == 16LL << 10);
    assert_true(c.max_pixels == 40000000LL);
    assert_int_equal(c.queue_depth, 16);
    assert_int_equal(c.max_clients, 256);
    assert_int_equal(c.timeout, 30);
    assert_true(c.thresh == 0.25f);
    assert_true(c.nms == 0.45f);
    assert_int_equal(c.log_level, MPD_LOG_INFO);
}

static void test_round_trip(void **state)
{
    (void)state;
    /* Every setting away from its default, in the forms a person writes:
     * odd spacing, tabs, CRLF, quotes, trailing comments, relative paths. */
    const char *text = "# mpdetd test config\r\n"
                       "\n"
                       "socket = run/test.sock\r\n"
                       "socket_mode=0640\n"
                       "  socket_group\t=\tvideo  \n"
                       "tcp_listen = 127.0.0.1:8089   # loopback only\n"
                       "cfg = models/a.cfg\n"
                       "weights = \"models/with space .weights\"  # quoted\n"
                       "names = models/c#d.names\n"
                       "plan = config/int8_all.plan\n"
                       "backend = cpu\n"
                       "threads = 4\n"
                       "workers = 2\n"
                       "max_body = 1G\n"
                       "max_header = 2048\n"
                       "max_pixels = 2147483648\n"
                       "queue_depth = 10000\n"
                       "max_clients = 1\n"
                       "timeout = 3600\n"
                       "thresh = 0.5\n"
                       "nms = 0\n"
                       "log_level = debug\n";
    mpdd_config c;
    char *path;
    int rc = load_text(text, strlen(text), &c, &path);
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_string_equal(c.socket, "run/test.sock");
    assert_int_equal(c.socket_mode, 0640);
    assert_string_equal(c.socket_group, "video");
    assert_string_equal(c.tcp_listen, "127.0.0.1:8089");
    assert_string_equal(c.cfg, "models/a.cfg");
    assert_string_equal(c.weights, "models/with space .weights");
    assert_string_equal(c.names, "models/c#d.names"); /* '#' not after a blank */
    assert_string_equal(c.plan, "config/int8_all.plan");
    assert_string_equal(c.backend, "cpu");
    assert_int_equal(c.threads, 4);
    assert_int_equal(c.workers, 2);
    assert_true(c.max_body == 1LL << 30);
    assert_true(c.max_header == 2048);
    assert_true(c.max_pixels == 2147483648LL);
    assert_int_equal(c.queue_depth, 10000);
    assert_int_equal(c.max_clients, 1);
    assert_int_equal(c.timeout, 3600);
    assert_true(c.thresh == 0.5f);
    assert_true(c.nms == 0.0f);
    assert_int_equal(c.log_level, MPD_LOG_DEBUG);
    unlink(path);
    free(path);
}

static void test_sizes_and_modes(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        long long body;
        unsigned mode;
    } cases[] = {
        {"max_body = 1k\n", 1024, 0660},          {"max_body = 1K\n", 1024, 0660},
        {"max_body = 512M\n", 512LL << 20, 0660}, {"max_body = 3m\n", 3LL << 20, 0660},
        {"max_body = 1g\n", 1LL << 30, 0660},     {"max_body = 100000\n", 100000, 0660},
        {"socket_mode = 0\n", 16 << 20, 0},       {"socket_mode = 777\n", 16 << 20, 0777},
        {"socket_mode = 0600\n", 16 << 20, 0600}, {"socket_mode = 00666\n", 16 << 20, 0666},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        mpdd_config c;
        char *path;
        int rc = load_text(cases[i].line, strlen(cases[i].line), &c, &path);
        if (rc)
            print_error("'%s' -> %s\n", cases[i].line, msg);
        assert_int_equal(rc, 0);
        assert_true(c.max_body == cases[i].body);
        assert_int_equal(c.socket_mode, cases[i].mode);
        unlink(path);
        free(path);
    }
}

static void test_tcp_listen_forms(void **state)
{
    (void)state;
    static const char *good[] = {"127.0.0.1:1", "127.1.2.3:65535", "[::1]:8080",
                                 "[0:0:0:0:0:0:0:1]:80"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char line[128];
        snprintf(line, sizeof(line), "tcp_listen = %s\n", good[i]);
        mpdd_config c;
        char *path;
        int rc = load_text(line, strlen(line), &c, &path);
        if (rc)
            print_error("'%s' -> %s\n", line, msg);
        assert_int_equal(rc, 0);
        assert_string_equal(c.tcp_listen, good[i]);
        unlink(path);
        free(path);
    }
    char host[64];
    int port = 0;
    assert_int_equal(
        mpdd_config_tcp_split("[::1]:8080", host, sizeof(host), &port, msg, sizeof(msg)), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 8080);
    assert_int_equal(
        mpdd_config_tcp_split("127.0.0.1:5000", host, sizeof(host), &port, msg, sizeof(msg)), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 5000);
    assert_int_equal(mpdd_config_tcp_split("", host, sizeof(host), &port, msg, sizeof(msg)),
                     MPD_EINVAL);
    assert_int_equal(
        mpdd_config_tcp_split("0.0.0.0:80", host, sizeof(host), &port, msg, sizeof(msg)),
        MPD_EINVAL);
    assert_non_null(strstr(msg, "loopback"));
}

/* Loads text, which must fail with code on the given line with words in
 * the message; the output struct must be left as it was. */
static void expect_error(const char *text, size_t len, int code, int line, const char *words)
{
    mpdd_config c, before;
    memset(&c, 0xA5, sizeof(c));
    before = c;
    char *path;
    int rc = load_text(text, len, &c, &path);
    char want[256];
    snprintf(want, sizeof(want), "%s:%d: ", path, line);
    if (rc != code || !strstr(msg, want) || !strstr(msg, words))
        print_error("config:\n%s\n-> rc %d, '%s' (wanted %d, '%s' and '%s')\n", text, rc, msg, code,
                    want, words);
    assert_int_equal(rc, code);
    assert_non_null(strstr(msg, want));
    assert_non_null(strstr(msg, words));
    assert_memory_equal(&c, &before, sizeof(c));
    unlink(path);
    free(path);
}

static void test_errors_name_file_and_line(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int line;
        const char *words;
    } cases[] = {
        /* syntax */
        {"# ok\nthreads 4\n", 2, "expected 'key = value'"},
        {"= 4\n", 1, "expected 'key = value'"},
        {"workers = 2\nsocket = \"/run/x.sock\n", 2, "unterminated quote"},
        {"socket = \"/run/x.sock\" extra\n", 1, "after the closing quote"},
        /* unknown and duplicate keys */
        {"\n\nthreshold = 0.3\n", 3, "unknown setting 'threshold'"},
        {"Socket = /x\n", 1, "unknown setting 'Socket'"},
        {"thresh = 0.3\nnms = 0.4\nthresh = 0.5\n", 3,
         "duplicate setting 'thresh' (first set on line 1)"},
        /* bad values */
        {"threads = four\n", 1, "threads: 'four' is not an integer"},
        {"threads = 4.5\n", 1, "is not an integer"},
        {"threads = +4\n", 1, "is not an integer"},
        {"threads =\n", 1, "is not an integer"},
        {"max_body = 16X\n", 1, "max_body: '16X' is not a size"},
        {"max_body = 16MB\n", 1, "is not a size"},
        {"max_body = -1k\n", 1, "is not a size"},
        {"socket_mode = 0689\n", 1, "socket_mode: '0689' is not an octal mode"},
        {"socket_mode = rw\n", 1, "is not an octal mode"},
        {"backend = gpu\n", 1, "backend: 'gpu' is not one of auto|cpu|cuda"},
        {"log_level = INFO\n", 1, "is not one of err|warning|info|debug"},
        {"thresh = high\n", 1, "thresh: 'high' is not a number"},
        {"nms = nan\n", 1, "out of range"},
        {"socket =\n", 1, "socket: must not be empty"},
        {"cfg = \"\"\n", 1, "cfg: must not be empty"},
        /* out of range */
        {"workers = 0\n", 1, "workers: 0 is out of range 1..64"},
        {"workers = 65\n", 1, "out of range 1..64"},
        {"threads = -1\n", 1, "out of range 0..1024"},
        {"threads = 99999999999999999999999\n", 1, "out of range"},
        {"max_body = 1023\n", 1, "max_body: 1023 is out of range 1k..1G"},
        {"max_body = 1025M\n", 1, "out of range 1k..1G"},
        {"max_body = 9999999999999G\n", 1, "out of range"},
        {"max_header = 2M\n", 1, "out of range 1k..1M"},
        {"max_pixels = 2147483649\n", 1, "out of range 1..2147483648"},
        {"max_pixels = 0\n", 1, "out of range"},
        {"queue_depth = 10001\n", 1, "out of range"},
        {"max_clients = 100001\n", 1, "out of range"},
        {"timeout = 0\n", 1, "out of range 1..3600"},
        {"socket_mode = 1000\n", 1, "out of range 0..0777"},
        {"thresh = 1.01\n", 1, "thresh: 1.01 is out of range 0..1"},
        {"nms = -0.1\n", 1, "out of range 0..1"},
        {"socket_group = abcdefghijabcdefghijabcdefghijabcdefghijabcdefghijabcdefghij1234\n", 1,
         "more than 63"},
        /* tcp_listen: loopback only, numeric, with a port */
        {"tcp_listen = 0.0.0.0:8080\n", 1, "tcp_listen: '0.0.0.0' is not a loopback address"},
        {"tcp_listen = 192.168.1.5:80\n", 1, "not a loopback address"},
        {"tcp_listen = [::]:80\n", 1, "'::' is not a loopback address"},
        {"tcp_listen = localhost:80\n", 1, "not a numeric IPv4 address"},
        {"tcp_listen = ::1:80\n", 1, "IPv6 goes in brackets"},
        {"tcp_listen = 127.0.0.1\n", 1, "not 127.0.0.1:PORT"},
        {"tcp_listen = 127.0.0.1:0\n", 1, "port 1..65535"},
        {"tcp_listen = 127.0.0.1:65536\n", 1, "port 1..65535"},
        {"tcp_listen = [::1]8080\n", 1, "not [::1]:PORT"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_error(cases[i].text, strlen(cases[i].text), MPD_EPARSE, cases[i].line,
                     cases[i].words);

    /* sun_path holds 107 bytes and a NUL. */
    char text[300] = "socket = /";
    memset(text + 10, 'a', 107);
    strcpy(text + 117, "\n");
    expect_error(text, strlen(text), MPD_EPARSE, 1, "108 bytes long, more than 107");
    text[116] = '\n';
    text[117] = '\0';
    mpdd_config c;
    char *path;
    assert_int_equal(load_text(text, strlen(text), &c, &path), 0);
    assert_int_equal(strlen(c.socket), 107);
    unlink(path);
    free(path);

    static const char nul[] = "workers = 2\nthreads = 4\0junk\n";
    expect_error(nul, sizeof(nul) - 1, MPD_EPARSE, 2, "NUL byte");
}

static void test_missing_file(void **state)
{
    (void)state;
    mpdd_config c;
    assert_int_equal(mpdd_config_load("/nonexistent/mpdetd.conf", &c, msg, sizeof(msg)), MPD_EIO);
    assert_non_null(strstr(msg, "/nonexistent/mpdetd.conf: cannot open"));
}

static void test_check_reload(void **state)
{
    (void)state;
    mpdd_config cur, next;
    mpdd_config_defaults(&cur);
    next = cur;
    assert_int_equal(mpdd_config_check_reload(&cur, &next, msg, sizeof(msg)), 0);

    /* The reloadable settings may all change at once. */
    strcpy(next.plan, "config/int8_all.plan");
    next.thresh = 0.6f;
    next.nms = 0.3f;
    next.log_level = MPD_LOG_DEBUG;
    assert_int_equal(mpdd_config_check_reload(&cur, &next, msg, sizeof(msg)), 0);

    /* Each of these needs a restart; the message names it. */
    mpdd_config bad = next;
    strcpy(bad.socket, "/tmp/other.sock");
    assert_int_equal(mpdd_config_check_reload(&cur, &bad, msg, sizeof(msg)), MPD_EINVAL);
    assert_string_equal(msg, "socket cannot change on reload; restart mpdetd");

    bad = next;
    bad.threads = 3;
    assert_int_equal(mpdd_config_check_reload(&cur, &bad, msg, sizeof(msg)), MPD_EINVAL);
    assert_string_equal(msg, "threads cannot change on reload; restart mpdetd");

    bad = next;
    strcpy(bad.cfg, "other.cfg");
    assert_int_equal(mpdd_config_check_reload(&cur, &bad, msg, sizeof(msg)), MPD_EINVAL);
    assert_string_equal(msg, "cfg cannot change on reload; restart mpdetd");

    bad = next;
    bad.max_body = 1024;
    bad.socket_mode = 0600;
    assert_int_equal(mpdd_config_check_reload(&cur, &bad, msg, sizeof(msg)), MPD_EINVAL);
    assert_string_equal(msg, "socket_mode cannot change on reload; restart mpdetd");

    /* Bytes after a string's NUL are not part of the setting. */
    bad = next;
    memset(bad.socket + strlen(bad.socket) + 1, 'z', 10);
    assert_int_equal(mpdd_config_check_reload(&cur, &bad, msg, sizeof(msg)), 0);

    /* The reload path as the daemon runs it: a file changing plan and
     * thresh passes; one also changing workers is refused. */
    const char *ok = "plan = config/fp16_all.plan\nthresh = 0.4\n";
    const char *no = "plan = config/fp16_all.plan\nworkers = 4\n";
    char *path;
    assert_int_equal(load_text(ok, strlen(ok), &next, &path), 0);
    assert_int_equal(mpdd_config_check_reload(&cur, &next, msg, sizeof(msg)), 0);
    unlink(path);
    free(path);
    assert_int_equal(load_text(no, strlen(no), &next, &path), 0);
    assert_int_equal(mpdd_config_check_reload(&cur, &next, msg, sizeof(msg)), MPD_EINVAL);
    assert_string_equal(msg, "workers cannot change on reload; restart mpdetd");
    unlink(path);
    free(path);
}

/* A reload takes exactly the reloadable settings: each one the table marks
 * (layer_timing_every among them, which the old hand-written list in
 * reload.c would have dropped), none of the others. */
static void test_apply_reload(void **state)
{
    (void)state;
    mpdd_config cur, next, want;
    mpdd_config_defaults(&cur);
    next = cur;
    strcpy(next.plan, "config/int8_all.plan");
    next.thresh = 0.6f;
    next.nms = 0.3f;
    next.min_thresh = 0.05f;
    next.max_detections = 7;
    next.layer_timing_every = 3;
    next.log_level = MPD_LOG_DEBUG;
    strcpy(next.image_formats, "jpeg");
    strcpy(next.reload_access, "socket");
    strcpy(next.api_key, "k");
    want = next;
    /* and settings a reload must not take */
    strcpy(next.socket, "/tmp/other.sock");
    next.workers = 4;
    next.max_body = 2048;
    next.allow_root = 1;
    mpdd_config_apply_reload(&cur, &next);
    assert_memory_equal(&cur, &want, sizeof(cur));
}

/* mpdetd --help-config's text, malloc'd into *text (the caller's: the
 * stream writes the pointer until it is closed). */
static void help_config(char **text)
{
    size_t len = 0;
    FILE *f = open_memstream(text, &len);
    assert_non_null(f);
    mpdd_config_print_table(f);
    fclose(f);
}

static void test_print_table(void **state)
{
    (void)state;
    char *buf = NULL;
    help_config(&buf);
    static const char *want[] = {
        "\nsocket = /run/mpdetd/mpdetd.sock\n    path, 1..107 bytes; restart to change\n",
        "\nsocket_mode = 0660\n    octal mode, 0..0777; restart to change\n",
        "\nsocket_group = \"\"\n",
        "\ntcp_listen = \"\"\n",
        "\ncfg = /usr/share/mpdet/models/yolov3-tiny.cfg\n",
        "\nweights = /usr/share/mpdet/models/yolov3-tiny.weights\n",
        "\nnames = /usr/share/mpdet/models/coco.names\n",
        "\nplan = \"\"\n    path, up to 511 bytes; a reload applies it\n",
        "\nbackend = auto\n    enum, auto|cpu|cuda; restart to change\n",
        "\nthreads = 0\n    integer, 0..1024;",
        "\nworkers = 1\n",
        "\nmax_body = 16M\n    size, 1k..1G; restart to change\n",
        "\nmax_header = 16k\n    size, 1k..1M;",
        "\nmax_pixels = 40000000\n    integer, 1..2147483648;",
        "\nqueue_depth = 16\n",
        "\nmax_clients = 256\n",
        "\ntimeout = 30\n",
        "\nthresh = 0.25\n    number, 0..1; a reload applies it\n",
        "\nnms = 0.45\n    number, 0..1; a reload applies it\n",
        "\nlog_level = info\n    enum, err|warning|info|debug; a reload applies it\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        if (!strstr(buf, want[i]))
            print_error("missing '%s' in:\n%s\n", want[i], buf);
        assert_non_null(strstr(buf, want[i]));
    }
    free(buf);
}

/* The shipped file: it sets nothing, so it loads to the defaults; and with
 * every "#key = value" line uncommented it still loads to the defaults,
 * which proves its comments document the real defaults and every setting. */
static void test_shipped_config(void **state)
{
    (void)state;
    const char *shipped = "config/mpdetd.conf";
    mpdd_config c, d;
    mpdd_config_defaults(&d);
    int rc = mpdd_config_load(shipped, &c, msg, sizeof(msg));
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_memory_equal(&c, &d, sizeof(c));

    FILE *f = fopen(shipped, "r");
    assert_non_null(f);
    char line[1024], *out = NULL;
    size_t outlen = 0;
    FILE *o = open_memstream(&out, &outlen);
    assert_non_null(o);
    int uncommented = 0;
    while (fgets(line, sizeof(line), f)) {
        /* "#name = value": a setting's default, as opposed to prose. */
        size_t k = strspn(line + 1, "abcdefghijklmnopqrstuvwxyz_");
        if (line[0] == '#' && k > 0 && strncmp(line + 1 + k, " = ", 3) == 0) {
            fputs(line + 1, o);
            uncommented++;
        } else {
            fputs(line, o);
        }
    }
    fclose(f);
    fclose(o);
    /* every setting of the table (mpdetd --help-config's "name = default"
     * lines) */
    char *table = NULL;
    help_config(&table);
    int settings = 0;
    for (char *p = strstr(table, "\n\n"); p; p = strstr(p + 2, "\n\n"))
        settings++;
    free(table);
    assert_true(settings >= 27);
    assert_int_equal(uncommented, settings);
    mpdd_config u;
    char *path;
    rc = load_text(out, outlen, &u, &path);
    if (rc)
        print_error("%s\n", msg);
    assert_int_equal(rc, 0);
    assert_memory_equal(&u, &d, sizeof(u));
    unlink(path);
    free(path);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_sizes_and_modes),
        cmocka_unit_test(test_tcp_listen_forms),
        cmocka_unit_test(test_errors_name_file_and_line),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_check_reload),
        cmocka_unit_test(test_apply_reload),
        cmocka_unit_test(test_print_table),
        cmocka_unit_test(test_shipped_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
