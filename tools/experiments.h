/* experiments.h - mpdet eval | overflow | bench | tune (the paper's
 * experiments and the plan tuner). Each takes the arguments after its
 * subcommand name and returns the process exit status: 0 done, 1 failed,
 * 2 bad usage. */
#ifndef MPD_TOOLS_EXPERIMENTS_H
#define MPD_TOOLS_EXPERIMENTS_H

int mpd_cmd_eval(int argc, char **argv);
int mpd_cmd_overflow(int argc, char **argv);
int mpd_cmd_bench(int argc, char **argv);
int mpd_cmd_tune(int argc, char **argv);

#endif
