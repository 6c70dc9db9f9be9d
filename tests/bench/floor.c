// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * bench-floor: attaches empty BPF programs to the syscall tracepoints
 * faultline uses and holds them until stdin closes or a signal arrives.
 * What an untracked syscall costs under it is the kernel's own floor for
 * "BPF on these tracepoints", the reference for faultline's probes.
 *
 * bench-floor --parts instead times the parts of any lifecycle tracer
 * (bpf/floor_parts.bpf.c) on a getppid loop of its own, interleaved, and
 * prints ns per call of: no program, an empty one, the tracked-process bit,
 * and behind that bit (this process tracked) a record, a per-thread hash
 * lookup, a timestamp, a 32-byte user copy, the task's name; the least of
 * the rounds, since a shared machine's noise only adds.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <sys/syscall.h>
#include "empty.skel.h"
#include "floor_parts.skel.h"

static double loop_ns(long calls)
{
	struct timespec a, b;

	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < calls; i++)
		syscall(SYS_getppid);
	clock_gettime(CLOCK_MONOTONIC, &b);
	return ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / calls;
}

static int drain(void *ctx, void *data, size_t size)
{
	(void)ctx;
	(void)data;
	(void)size;
	return 0;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Each part attached alone, rounds interleaved; the least of the rounds. */
static int parts(int rounds)
{
	struct floor_parts_bpf *skel = floor_parts_bpf__open_and_load();
	struct {
		const char *name;
		struct bpf_program *prog;
	} part[8];
	static double res[8][64];
	static uint64_t user_words[4];
	struct ring_buffer *rb;
	__u32 me = (__u32)getpid(), one = 1;
	const long calls = 100000;	/* records of one loop fit the 64 MiB ring */
	int n = 0;

	if (!skel) {
		fprintf(stderr, "bench-floor: loading the parts failed: %s\n", strerror(errno));
		return 1;
	}
	part[n++] = (typeof(part[0])){ "no program", NULL };
	part[n++] = (typeof(part[0])){ "empty program", skel->progs.part_nothing };
	part[n++] = (typeof(part[0])){ "tracked bit", skel->progs.part_bit };
	part[n++] = (typeof(part[0])){ "bit + record", skel->progs.part_record };
	part[n++] = (typeof(part[0])){ "bit + thread lookup", skel->progs.part_lookup };
	part[n++] = (typeof(part[0])){ "bit + timestamp", skel->progs.part_ktime };
	part[n++] = (typeof(part[0])){ "bit + user copy", skel->progs.part_user };
	part[n++] = (typeof(part[0])){ "bit + task name", skel->progs.part_comm };
	skel->bss->parts_bits[me / 64] |= 1ULL << (me % 64);
	user_words[0] = 1;	/* resident: a copy that faults costs far more */
	skel->bss->parts_user_addr = (uint64_t)(uintptr_t)user_words;
	bpf_map__update_elem(skel->maps.parts_tracked, &me, sizeof(me), &one, sizeof(one), 0);
	rb = ring_buffer__new(bpf_map__fd(skel->maps.parts_events), drain, NULL, NULL);
	if (!rb) {
		fprintf(stderr, "bench-floor: ring buffer: %s\n", strerror(errno));
		floor_parts_bpf__destroy(skel);
		return 1;
	}
	if (rounds > 64)
		rounds = 64;
	for (int r = 0; r < rounds; r++) {
		for (int p = 0; p < n; p++) {
			struct bpf_link *l = part[p].prog ? bpf_program__attach(part[p].prog) : NULL;

			if (part[p].prog && !l) {
				fprintf(stderr, "bench-floor: attaching %s failed: %s\n", part[p].name,
					strerror(errno));
				return 1;
			}
			res[p][r] = loop_ns(calls);
			bpf_link__destroy(l);
			ring_buffer__consume(rb);
		}
	}
	for (int p = 0; p < n; p++) {
		qsort(res[p], rounds, sizeof(double), cmp);
		printf("%s %.1f\n", part[p].name, res[p][0]);
	}
	ring_buffer__free(rb);
	floor_parts_bpf__destroy(skel);
	return 0;
}

int main(int argc, char **argv)
{
	struct empty_bpf *skel;
	char c;
	int ret;

	if (argc > 1 && !strcmp(argv[1], "--parts"))
		return parts(argc > 2 ? atoi(argv[2]) : 11);
	skel = empty_bpf__open_and_load();
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
