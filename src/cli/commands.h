/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Subcommands of the faultline binary. Each returns 0 or -errno (already reported). */
#ifndef FAULTLINE_COMMANDS_H
#define FAULTLINE_COMMANDS_H

int fl_cmd_trace(int argc, char **argv);
int fl_cmd_demo(int argc, char **argv);
int fl_cmd_features(int argc, char **argv);
int fl_cmd_top(int argc, char **argv);
int fl_cmd_stuck(int argc, char **argv);
int fl_cmd_exporter(int argc, char **argv);
int fl_cmd_source(int argc, char **argv);
int fl_cmd_target(int argc, char **argv);
int fl_cmd_report(int argc, char **argv);

#endif
