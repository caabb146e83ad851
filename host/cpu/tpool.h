/* tpool.h - a small fixed-size thread pool for the CPU backend's parallel
 * loops. The calling thread works too, so a pool of N uses N cores.
 *
 * One job at a time per pool; a pool belongs to one backend context and is
 * used by the thread that drives that context. Workers poll for a new job
 * for a fraction of a millisecond before they sleep, so back-to-back jobs
 * (the layers of one forward pass) start without a wake-up. */
#ifndef MPD_TPOOL_H
#define MPD_TPOOL_H

typedef struct mpd__tpool mpd__tpool;

/* fn(ctx, task, worker): worker is 0..threads-1, unique among concurrent
 * calls, so it can index per-worker scratch memory. */
typedef void (*mpd__task_fn)(void *ctx, int task, int worker);

/* threads >= 1 (1 = no extra threads). Returns 0 or MPD_ENOMEM. */
int mpd__tpool_create(int threads, mpd__tpool **out);
void mpd__tpool_destroy(mpd__tpool *p);
int mpd__tpool_threads(const mpd__tpool *p);
/* Runs fn for every task in [0, ntasks) and returns when all have finished. */
void mpd__tpool_run(mpd__tpool *p, int ntasks, mpd__task_fn fn, void *ctx);

#endif
