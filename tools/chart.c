/* chart.c - bar charts through gnuplot (see chart.h). */
#define _POSIX_C_SOURCE 200809L
#include "chart.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* gnuplot strings are single-quoted: a quote inside doubles. Labels are
 * plan and layer names, so anything else passes through. */
static void put_quoted(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        fputc(*s, f);
    }
    fputc('\'', f);
}

/* In the data file labels are double-quoted; double quotes inside are
 * replaced, since gnuplot's data files have no escape for them. */
static void put_label(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++)
        fputc(*s == '"' ? '\'' : *s, f);
    fputc('"', f);
}

static int fail(char *msg, size_t msglen, const char *fmt, const char *a, const char *b)
{
    snprintf(msg, msglen, fmt, a, b);
    return -1;
}

int chart_draw(const chart_bars *c, char *msg, size_t msglen)
{
    char dir[] = "/tmp/mpdet-chart.XXXXXX", data[64], script[64];
    if (!mkdtemp(dir))
        return fail(msg, msglen, "chart: cannot create a temporary directory: %s%s",
                    strerror(errno), "");
    snprintf(data, sizeof(data), "%s/data", dir);
    snprintf(script, sizeof(script), "%s/plot.gp", dir);
    int rc = -1;
    FILE *d = fopen(data, "w"), *s = fopen(script, "w");
    if (!d || !s) {
        fail(msg, msglen, "chart: cannot write in %s: %s", dir, strerror(errno));
        goto done;
    }
    for (int x = 0; x < c->nx; x++) {
        put_label(d, c->xlabels[x]);
        for (int k = 0; k < c->ns; k++)
            fprintf(d, " %.6g", c->v[x * c->ns + k]);
        fputc('\n', d);
    }
    fprintf(s, "set terminal pngcairo noenhanced size %d,%d font 'sans,10'\nset output ",
            c->width ? c->width : 1000, c->height ? c->height : 520);
    put_quoted(s, c->png);
    fprintf(s, "\nset title ");
    put_quoted(s, c->title ? c->title : "");
    fprintf(s, "\nset ylabel ");
    put_quoted(s, c->ylabel ? c->ylabel : "");
    fprintf(s, "\nset xlabel ");
    put_quoted(s, c->xlabel ? c->xlabel : "");
    /* Sixteen distinguishable colours, so that stacked layers and many
     * plans do not repeat gnuplot's default eight. */
    static const char *const colour[] = {
        "#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#000000",
        "#ee7733", "#0077bb", "#33bbee", "#009988", "#cc3311", "#ee3377", "#882255", "#999933"};
    fprintf(s, "\nset linetype cycle 16\n");
    for (int k = 0; k < 16; k++)
        fprintf(s, "set linetype %d lc rgb '%s'\n", k + 1, colour[k]);
    fprintf(s, "set style data histograms\n"
               "set style histogram %s\n"
               "set style fill solid 0.85 border -1\n"
               "set boxwidth 0.85\n"
               "set grid ytics\nset yrange [%g:*]\nset offsets 0,0,graph 0.07,0\n"
               "set key outside right top\n"
               "set xtics rotate by -35 nomirror\n",
            c->style == CHART_STACKED ? "rowstacked" : "clustered gap 1", c->ymin);
    fprintf(s, "plot ");
    put_quoted(s, data);
    for (int k = 0; k < c->ns; k++) {
        if (k)
            fprintf(s, ", ''");
        fprintf(s, " using %d%s title ", k + 2, k == 0 ? ":xtic(1)" : "");
        put_quoted(s, c->series[k]);
    }
    /* A clustered histogram puts bar k of category x at
     * x + (k - (ns - 1) / 2) / (ns + gap), gap = 1. */
    for (int k = 0; c->value_labels && c->style == CHART_CLUSTERED && k < c->ns; k++) {
        fprintf(s, ", '' using ($0 + %g):%d:(sprintf(", (k - (c->ns - 1) / 2.0) / (c->ns + 1),
                k + 2);
        put_quoted(s, c->value_format ? c->value_format : "%.1f");
        fprintf(s, ", $%d)) with labels offset 0,0.6 font ',8' notitle", k + 2);
    }
    fputc('\n', s);
    if (fclose(d) | fclose(s)) {
        d = s = NULL;
        fail(msg, msglen, "chart: cannot write in %s: %s", dir, strerror(errno));
        goto done;
    }
    d = s = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        fail(msg, msglen, "chart: fork: %s%s", strerror(errno), "");
        goto done;
    }
    if (pid == 0) {
        execlp("gnuplot", "gnuplot", script, (char *)NULL);
        fprintf(stderr, "mpdet: chart: cannot run gnuplot (%s); install Debian's gnuplot-nox\n",
                strerror(errno));
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail(msg, msglen, "chart: gnuplot failed on %s%s", c->png,
             WIFEXITED(st) && WEXITSTATUS(st) == 127 ? " (gnuplot not found)" : "");
    else
        rc = 0;
done:
    if (d)
        fclose(d);
    if (s)
        fclose(s);
    unlink(data);
    unlink(script);
    rmdir(dir);
    return rc;
}
