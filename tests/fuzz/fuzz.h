/* fuzz.h - helpers shared by the libFuzzer targets of tests/fuzz (see
 * README there). Header-only: each target is one program built from its
 * fuzz_<name>.c and the project sources it exercises.
 *
 * The parsers under test read files by path, so inputs go through a memfd
 * (an anonymous regular file, reopened by its /proc/self/fd path): no disk,
 * and nothing left behind when a target dies. scripts/fuzz compiles the
 * targets with -D_GNU_SOURCE (memfd_create, pwrite, mkdtemp). */
#ifndef MPD_FUZZ_H
#define MPD_FUZZ_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "net.h"
#include "plan.h"

/* An invariant of the code under test failed: report it the way a
 * sanitizer would, so libFuzzer saves the input as a crash. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz invariant failed: %s\n", __FILE__, __LINE__, #cond);      \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* A harness set-up step failed (not a finding): stop with a message. */
#define FUZZ_SETUP(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz set-up: " __VA_ARGS__);                                          \
            fputc('\n', stderr);                                                                   \
            exit(2);                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    int fd;
    char path[64]; /* /proc/self/fd/N: opening it gives a fresh offset */
} fuzz_file;

static inline void fuzz_file_open(fuzz_file *f, const char *name)
{
    f->fd = memfd_create(name, MFD_CLOEXEC);
    FUZZ_SETUP(f->fd >= 0, "memfd_create failed");
    snprintf(f->path, sizeof(f->path), "/proc/self/fd/%d", f->fd);
}

/* Replaces the file's contents with data[0..n). */
static inline void fuzz_file_set(fuzz_file *f, const void *data, size_t n)
{
    FUZZ_SETUP(ftruncate(f->fd, 0) == 0, "ftruncate failed");
    const char *p = data;
    size_t done = 0;
    while (done < n) {
        ssize_t w = pwrite(f->fd, p + done, n - done, (off_t)done);
        FUZZ_SETUP(w > 0, "pwrite failed");
        done += (size_t)w;
    }
}

/* A NUL-terminated heap copy of data[0..n) (text parsers stop at a NUL). */
static inline char *fuzz_strndup(const void *data, size_t n)
{
    char *s = malloc(n + 1);
    FUZZ_SETUP(s, "out of memory");
    memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

/* A file of the repository or the model directory, named by an environment
 * variable that scripts/fuzz sets, else by its usual place relative to the
 * repository root. */
static inline const char *fuzz_path(const char *env, const char *dflt)
{
    const char *p = getenv(env);
    return p && *p ? p : dflt;
}

/* A message from the code under test must be a terminated string. */
static inline void fuzz_check_msg(const char *msg, size_t cap)
{
    FUZZ_CHECK(memchr(msg, '\0', cap) != NULL);
}

/* The real yolov3-tiny net ($MPD_FUZZ_CFG, else models/yolov3-tiny.cfg)
 * and its base plan, for the targets that parse plan-related text against
 * it; stops the target when they cannot be had. */
static inline void fuzz_real_net(mpd_net **net, mpd_plan **base)
{
    char msg[512];
    const char *cfg = fuzz_path("MPD_FUZZ_CFG", "models/yolov3-tiny.cfg");
    FUZZ_SETUP(mpd_net_parse(cfg, net, msg, sizeof(msg)) == 0, "%s", msg);
    FUZZ_SETUP(mpd_plan_from_net(*net, base, msg, sizeof(msg)) == 0, "%s", msg);
}

#endif
