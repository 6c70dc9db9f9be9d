// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * guest-dirty: the memory-dirtying loop run as the init of the QEMU postcopy
 * test's guest (scripts/qemu-guest-assets.sh compiles it with gcc -static
 * into the busybox initramfs).
 *
 * One worker process per online CPU, each pinned to its CPU, each writing
 * one word into every page of its own MIB MiB buffer, pass after pass, in a
 * scattered order (a stride coprime to the page count), so that both vCPUs
 * keep touching -- and dirtying -- tens of MiB continuously. Pages hold
 * non-zero data, so the migration has to carry them (no zero-page shortcut).
 *
 * On the console: MARKER once every worker has completed its first pass
 * (the harness waits for it before migrating), then a heartbeat about once
 * a second with worker 0's pass count, which shows the guest running on
 * whichever side of the migration it is on.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static size_t coprime_stride(size_t n)
{
	size_t s = n / 3 + 1;

	for (;; s++) {
		size_t a = n, b = s;

		while (b) {
			size_t t = a % b;
			a = b;
			b = t;
		}
		if (a == 1)
			return s;
	}
}

static void worker(int cpu, size_t mib, int ready_fd)
{
	size_t npages = mib * 1024 * 1024 / PAGE;
	size_t stride = coprime_stride(npages);
	cpu_set_t set;
	uint64_t pass = 0;
	double last = now_s();
	volatile uint64_t *buf;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		fprintf(stderr, "guest-dirty: worker %d: sched_setaffinity: %s\n", cpu,
			strerror(errno));
	buf = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		   -1, 0);
	if (buf == MAP_FAILED) {
		fprintf(stderr, "guest-dirty: worker %d: mmap %zu MiB: %s\n", cpu, mib,
			strerror(errno));
		exit(1);
	}
	for (;;) {
		size_t p = (size_t)cpu * 7 % npages;

		pass++;
		for (size_t i = 0; i < npages; i++) {
			/* one word per page, different on every pass: never a zero page */
			buf[p * (PAGE / 8) + (pass & 63)] = (pass << 32) | (p + 1);
			p += stride;
			if (p >= npages)
				p -= npages;
		}
		if (pass == 1) {
			char c = 'r';

			if (write(ready_fd, &c, 1) != 1)
				exit(1);
			close(ready_fd);
		}
		if (cpu == 0 && now_s() - last >= 1.0) {
			last = now_s();
			printf("guest-dirty: heartbeat pass=%llu\n", (unsigned long long)pass);
			fflush(stdout);
		}
	}
}

int main(int argc, char **argv)
{
	size_t mib = 32;
	const char *marker = "FAULTLINE_GUEST_READY";
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	int pfd[2];
	char c;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mib") && i + 1 < argc)
			mib = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--marker") && i + 1 < argc)
			marker = argv[++i];
		else {
			fprintf(stderr, "usage: guest-dirty [--mib MIB_PER_CPU] [--marker TEXT]\n");
			return 2;
		}
	}
	if (mib == 0 || ncpu < 1) {
		fprintf(stderr, "guest-dirty: bad --mib or no CPUs\n");
		return 2;
	}
	if (pipe(pfd))
		return 1;
	printf("guest-dirty: %ld worker(s), %zu MiB each\n", ncpu, mib);
	fflush(stdout);
	for (int cpu = 0; cpu < ncpu; cpu++) {
		pid_t pid = fork();

		if (pid < 0) {
			perror("guest-dirty: fork");
			return 1;
		}
		if (pid == 0) {
			close(pfd[0]);
			worker(cpu, mib, pfd[1]);
			_exit(0);
		}
	}
	close(pfd[1]);
	for (long n = 0; n < ncpu; n++)
		if (read(pfd[0], &c, 1) != 1) {
			fprintf(stderr, "guest-dirty: a worker died before its first pass\n");
			return 1;
		}
	printf("%s\n", marker);
	fflush(stdout);
	/* as init, never exit: reap the workers forever (a dead worker is reported) */
	for (;;) {
		int st;
		pid_t pid = wait(&st);

		if (pid < 0 && errno == ECHILD)
			pause();
		else if (pid > 0)
			fprintf(stderr, "guest-dirty: worker %d exited (status 0x%x)\n", pid, st);
	}
}
