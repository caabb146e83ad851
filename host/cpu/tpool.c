#define _POSIX_C_SOURCE 200809L
#include "tpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "../mpd.h"

struct mpd__tpool {
    int threads;
    pthread_t *tid;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    unsigned long generation; /* bumped for each job */
    int stop;
    /* The current job. */
    mpd__task_fn fn;
    void *ctx;
    int ntasks;
    atomic_int next;
    int busy; /* workers still inside the job */
};

typedef struct {
    mpd__tpool *p;
    int worker;
} worker_arg;

static void drain(mpd__tpool *p, int worker)
{
    for (;;) {
        int t = atomic_fetch_add(&p->next, 1);
        if (t >= p->ntasks)
            break;
        p->fn(p->ctx, t, worker);
    }
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    mpd__tpool *p = wa->p;
    int worker = wa->worker;
    free(wa);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->generation == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (p->stop)
            break;
        seen = p->generation;
        pthread_mutex_unlock(&p->mu);
        drain(p, worker);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
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
    p->stop = 1;
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    atomic_store(&p->next, 0);
    p->busy = p->threads - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    drain(p, 0);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
