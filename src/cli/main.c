// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* faultline: one binary, one subcommand per capability. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include "commands.h"
#include "version.h"

struct subcommand {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
};

static const struct subcommand cmds[] = {
	{ "trace", fl_cmd_trace, "trace userfault episodes live (bcc-style columns or --json)" },
	{ "top", fl_cmd_top, "live per-VM / per-vCPU blocking view (kvm_stat style; -b for batch)" },
	{ "exporter", fl_cmd_exporter, "serve userfault metrics for Prometheus (/metrics)" },
	{ "stuck", fl_cmd_stuck, "threads stuck in a userfault and why (/proc, plus the exporter's history)" },
	{ "source", fl_cmd_source, "serve a running VM's memory, dirty map and poison to a migration target" },
	{ "target", fl_cmd_target, "route a migrating VM's userfaults to the source, replicating poison" },
	{ "report", fl_cmd_report, "turn a trace --json recording into a self-contained HTML report" },
	{ "features", fl_cmd_features, "what this kernel supports and what each gap disables" },
	{ "demo", fl_cmd_demo, "trace the built-in userfaultfd workload (a first look)" },
};

static void usage(FILE *out)
{
	fprintf(out, "Usage: faultline COMMAND [OPTIONS]\n\n"
		     "Observe userfaultfd-based postcopy migration from outside the VMM.\n\n"
		     "Commands:\n");
	for (unsigned i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(out, "  %-10s %s\n", cmds[i].name, cmds[i].help);
	fprintf(out, "\n`faultline COMMAND --help` describes each one; `faultline --version`.\n\n"
		     "Examples:\n"
		     "  sudo faultline demo\n"
		     "  sudo faultline features\n"
		     "  sudo faultline trace -p $(pidof qemu-system-x86_64) --hist\n"
		     "  sudo faultline stuck -p $(pidof qemu-system-x86_64)\n"
		     "  sudo faultline trace --json --duration 10 > faults.jsonl\n"
		     "  faultline report faults.jsonl            # faults.html, open it in a browser\n"
		     "  sudo faultline exporter --listen 127.0.0.1:9477\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("faultline %s\n", FL_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "--commands")) {
		/* for tools (the man pages are made from this): name TAB summary */
		for (unsigned i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
			printf("%s\t%s\n", cmds[i].name, cmds[i].help);
		return 0;
	}
	for (unsigned i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (strcmp(argv[1], cmds[i].name))
			continue;
		/* argv[0] becomes "faultline CMD" for argp's messages */
		char name[64];

		snprintf(name, sizeof(name), "faultline %s", cmds[i].name);
		argv[1] = name;
		return cmds[i].fn(argc - 1, argv + 1) ? 1 : 0;
	}
	fprintf(stderr, "faultline: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return 2;
}
