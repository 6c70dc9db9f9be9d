// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * bench-floor: attaches empty BPF programs to the syscall tracepoints
 * faultline uses and holds them until stdin closes or a signal arrives.
 * What an untracked syscall costs under it is the kernel's own floor for
 * "BPF on these tracepoints", the reference for faultline's probes.
 * With --all, the scheduler tracepoints faultline uses are included: the
 * floor of a traced userfault round trip.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include "empty.skel.h"

int main(int argc, char **argv)
{
	struct empty_bpf *skel = empty_bpf__open();
	char c;
	int ret;

	/* --all: the scheduler tracepoints faultline uses too (tp_btf, as faultline attaches them) */
	if (skel && argc > 1 && !strcmp(argv[1], "--all")) {
		bpf_program__set_autoload(skel->progs.empty_sched_switch, true);
		bpf_program__set_autoload(skel->progs.empty_sched_wakeup, true);
		bpf_program__set_autoload(skel->progs.empty_page_fault_user, true);
		bpf_program__set_autoload(skel->progs.empty_sched_process_fork, true);
		bpf_program__set_autoload(skel->progs.empty_sched_process_exit, true);
		bpf_program__set_autoload(skel->progs.empty_signal_deliver, true);
	}
	if (skel && empty_bpf__load(skel)) {
		empty_bpf__destroy(skel);
		skel = NULL;
	}
	if (!skel) {
		fprintf(stderr, "bench-floor: loading empty programs failed: %s\n", strerror(errno));
		return 1;
	}
	ret = empty_bpf__attach(skel);
	if (ret) {
		fprintf(stderr, "bench-floor: attaching failed: %s\n", strerror(-ret));
		empty_bpf__destroy(skel);
		return 1;
	}
	printf("ATTACHED\n");
	fflush(stdout);
	while (read(0, &c, 1) > 0)
		;
	empty_bpf__destroy(skel);
	return 0;
}
