// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * bench-floor: attaches empty BPF programs to the syscall tracepoints
 * faultline uses and holds them until stdin closes or a signal arrives.
 * What an untracked syscall costs under it is the kernel's own floor for
 * "BPF on these tracepoints", the reference for faultline's probes.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include "empty.skel.h"

int main(void)
{
	struct empty_bpf *skel = empty_bpf__open_and_load();
	char c;
	int ret;

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
