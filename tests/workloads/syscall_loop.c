// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * A syscall-heavy loop standing for an untracked process: N getppid() calls,
 * timed with CLOCK_MONOTONIC. Prints ns per call.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	long n = argc > 1 ? strtol(argv[1], NULL, 10) : 2000000;
	struct timespec a, b;

	if (n <= 0) {
		fprintf(stderr, "usage: syscall-loop [CALLS]  (CALLS > 0, default 2000000)\n");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &a);
	for (long i = 0; i < n; i++)
		syscall(SYS_getppid);
	clock_gettime(CLOCK_MONOTONIC, &b);
	printf("%.1f\n", ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / n);
	return 0;
}
