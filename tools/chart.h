/* chart.h - bar charts as PNG through gnuplot (Debian's gnuplot-nox), for
 * the paper's figures: `mpdet eval|overflow|bench --chart FILE.png`.
 * The data and script go to a temporary directory, gnuplot runs as a
 * child process, and the temporary files are removed. */
#ifndef MPD_TOOLS_CHART_H
#define MPD_TOOLS_CHART_H

#include <stddef.h>

typedef enum { CHART_CLUSTERED, CHART_STACKED } chart_style;

typedef struct {
    const char *png;            /* output file */
    const char *title, *ylabel, *xlabel;
    chart_style style;          /* clustered: ns bars per category; stacked:
                                   one bar per category, ns segments */
    int nx, ns;                 /* categories (x) and series */
    const char *const *xlabels; /* nx */
    const char *const *series;  /* ns, the legend */
    const double *v;            /* nx x ns, row by row */
    int value_labels;           /* print each value above its bar (clustered) */
    const char *value_format;   /* printf format of those labels; NULL = "%.1f" */
    double ymin;                /* bottom of the y axis (0 for bars from zero) */
    int width, height;          /* pixels; 0 = 1000 x 520 */
} chart_bars;

/* Draws the chart. Returns 0, or -1 with the reason in msg (gnuplot
 * missing or failing, a file that cannot be written). */
int chart_draw(const chart_bars *c, char *msg, size_t msglen);

#endif
