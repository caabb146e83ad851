/* benchutil.h - small helpers shared by the benchmark programs (which link
 * different engines, so they share this instead of libmpdet). */
#ifndef MPD_BENCHUTIL_H
#define MPD_BENCHUTIL_H

/* Parses an integer >= lo for option opt; prints "prog: ..." and returns -1
 * when s is not one. */
int bu_parse_int(const char *prog, const char *opt, const char *s, int lo, int *out);
/* Median of n values; sorts v in place. 0 when n <= 0. */
double bu_median(double *v, int n);
/* The part of a path after its last '/'. */
const char *bu_base_name(const char *p);

#endif
