#define _POSIX_C_SOURCE 200809L
#include "tpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "../internal.h"

/* Workers keep polling this long after a job before they sleep: a forward
 * pass runs jobs back to back, and waking a sleeping thread costs 50-200 us
 * on a virtual machine - more than many of the jobs themselves. */
#define SPIN_SECONDS 200e-6

struct mpd__tpool {
    int threads;
    pthread_t *tid;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    atomic_ulong generation; /* bumped for each job */
    atomic_int stop;
    /* The current job; written by the caller before the generation moves. */
    mpd__task_fn fn;
    void *ctx;
    int ntasks;
    atomic_int next;
    atomic_int busy; /* workers still inside the job */
};

typedef struct {
    mpd__tpool *p;
    int worker;
} worker_arg;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void drain(mpd__tpool *p, int worker)
{
    for (;;) {
        int t = atomic_fetch_add(&p->next, 1);
        if (t >= p->ntasks)
            break;
        p->fn(p->ctx, t, worker);
    }
}

/* Polls cond() for SPIN_SECONDS; returns its last value. */
#define SPIN_UNTIL(cond)                                                                       \
    do {                                                                                       \
        double t0_ = mpd_now();                                                                \
        for (int i_ = 1; !(cond); i_++) {                                                      \
            cpu_relax();                                                                       \
            if ((i_ & 255) == 0 && mpd_now() - t0_ > SPIN_SECONDS)                             \
                break;                                                                         \
        }                                                                                      \
    } while (0)

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    mpd__tpool *p = wa->p;
    int worker = wa->worker;
    free(wa);
    unsigned long seen = 0;
    for (;;) {
        SPIN_UNTIL(atomic_load(&p->generation) != seen || atomic_load(&p->stop));
        pthread_mutex_lock(&p->mu);
        while (!atomic_load(&p->stop) && atomic_load(&p->generation) == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        pthread_mutex_unlock(&p->mu);
        if (atomic_load(&p->stop))
            break;
        seen = atomic_load(&p->generation);
        drain(p, worker);
        if (atomic_fetch_sub(&p->busy, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

int mpd__tpool_create(int threads, mpd__tpool **out)
{
    *out = NULL;
    if (threads < 1)
        threads = 1;
    mpd__tpool *p = calloc(1, sizeof(*p));
    if (!p)
        return MPD_ENOMEM;
    p->threads = threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->tid = calloc((size_t)threads, sizeof(pthread_t));
    if (!p->tid) {
        mpd__tpool_destroy(p);
        return MPD_ENOMEM;
    }
    for (int i = 1; i < threads; i++) {
        worker_arg *wa = malloc(sizeof(*wa));
        if (wa) {
            wa->p = p;
            wa->worker = i;
        }
        if (!wa || pthread_create(&p->tid[i], NULL, worker_main, wa) != 0) {
            free(wa);
            p->threads = i; /* only the started ones are joined */
            mpd__tpool_destroy(p);
            return MPD_ENOMEM;
        }
    }
    *out = p;
    return 0;
}

void mpd__tpool_destroy(mpd__tpool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->threads && p->tid; i++)
        pthread_join(p->tid[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->tid);
    free(p);
}

int mpd__tpool_threads(const mpd__tpool *p)
{
    return p->threads;
}

void mpd__tpool_run(mpd__tpool *p, int ntasks, mpd__task_fn fn, void *ctx)
{
    if (ntasks <= 0)
        return;
    if (p->threads == 1 || ntasks == 1) {
        for (int t = 0; t < ntasks; t++)
            fn(ctx, t, 0);
        return;
    }
    /* No worker is inside a job here (the previous run waited for all), so
     * the job fields can be written before the generation publishes them. */
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    atomic_store(&p->next, 0);
    atomic_store(&p->busy, p->threads - 1);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->generation, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    drain(p, 0);
    SPIN_UNTIL(atomic_load(&p->busy) == 0);
    pthread_mutex_lock(&p->mu);
    while (atomic_load(&p->busy) > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
