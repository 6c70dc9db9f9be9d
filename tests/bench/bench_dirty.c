// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * bench-dirty: one dirty-tracking round of `faultline source` on a large
 * sparse guest, write-protection (PAGEMAP_SCAN) against hashing, in the
 * same run, interleaved, medians.
 *
 * The guest is a child process with an 8 GiB memfd mapped shared (like
 * migrate-vm's), of which --populated-gib is touched (every k-th 2 MiB
 * chunk, so the populated page tables are spread over the whole range), and a
 * userfaultfd with UFFD_FEATURE_WP_ASYNC registered MODE_WP over it.  Each
 * repetition the child writes --percent of all the guest's pages (random
 * pages of its populated chunks: its working set), then one round of each
 * method finds them, in alternating order, and an empty wp round (nothing
 * written since) gives the floor: the walk of the guest's page tables.
 *
 *   wp    PAGEMAP_SCAN(PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC) over the
 *         8 GiB for PAGE_IS_WRITTEN: the written pages, protected again
 *         (read and reset), from another process as the source does;
 *   hash  what `faultline source` does with hashes at switchover: per 512
 *         pages one pread of /proc/PID/pagemap and one pread of the memfd
 *         (the source reads shared file pages through the file), then every
 *         page is checked for all-zero and hashed (fl_source_page_hash) and
 *         compared with the hash of the round before.
 *
 * Both must find exactly the pages written (checked every round: exit 1
 * otherwise).  Hashing reads every byte of the 8 GiB — holes read as zeros
 * through the file — so its cost is per GiB of guest, populated or not.
 * Write-protection walks the page tables and reports the written pages as
 * ranges; protecting a never-touched shmem page leaves a marker PTE (so that
 * its first write shows), so after the first round the walk covers every
 * PTE of the guest: a floor of a few ns per page of guest, plus the written
 * pages.
 *
 *   bench-dirty [--gib N] [--populated-gib N] [--percent P[,P...]] [--rounds N]
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pagemap_scan.h"
#include "source.h"
#include "uffd_compat.h"

#define PS 4096ull
#define WINDOW 512		/* pages per read, as the source's SCAN_PAGES */
#define VEC 4096

static uint64_t npages, stride;	/* every stride-th 2 MiB chunk is populated */
static uint8_t *gmem;		/* the child's mapping (same address in the parent's view) */
static int cmd_rd, ack_wr;	/* child side */

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void die(const char *what)
{
	fprintf(stderr, "bench-dirty: %s: %s\n", what, strerror(errno));
	exit(1);
}

static uint64_t rnd(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The guest: writes one 8-byte stamp into each page it is told to. */
static void child_loop(void)
{
	uint64_t msg[2];	/* count, seed */

	while (read(cmd_rd, msg, sizeof(msg)) == sizeof(msg)) {
		uint64_t s = msg[1];

		for (uint64_t i = 0; i < msg[0]; i++) {
			uint64_t ch = rnd(&s) % (npages / 512 / stride) * stride;
			uint64_t p = ch * 512 + rnd(&s) % 512, v = rnd(&s) | 1;

			memcpy(gmem + p * PS + (v & 0xff8), &v, 8);
		}
		if (write(ack_wr, "k", 1) != 1)
			_exit(1);
	}
	_exit(0);
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static bool all_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)p;

	for (size_t i = 0; i < PS / 8; i++)
		if (w[i])
			return false;
	return true;
}

struct ctx {
	pid_t pid;
	int pagemap, memfd, cmd_wr, ack_rd;
	uint64_t base, *hash, seed;
	uint8_t *buf, *bits;
	struct page_region vec[VEC];
};

/* wp round: written pages, protected again; returns how many. */
static uint64_t wp_round(struct ctx *c)
{
	uint64_t at = c->base, end = c->base + npages * PS, found = 0;

	while (at < end) {
		struct pm_scan_arg a = {
			.size = sizeof(a), .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
			.start = at, .end = end, .vec = (uintptr_t)c->vec, .vec_len = VEC,
			.category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
		};
		int n = ioctl(c->pagemap, PAGEMAP_SCAN, &a);

		if (n < 0)
			die("PAGEMAP_SCAN");
		for (int i = 0; i < n; i++)
			for (uint64_t p = (c->vec[i].start - c->base) / PS;
			     p < (c->vec[i].end - c->base) / PS; p++)
				if (!((c->bits[p / 8] >> (p & 7)) & 1)) {
					c->bits[p / 8] |= (uint8_t)(1u << (p & 7));
					found++;
				}
		at = a.walk_end;
	}
	return found;
}

/* hash round, the way the source classifies with hashes; returns pages changed. */
static uint64_t hash_round(struct ctx *c, uint8_t *changed)
{
	uint64_t pme[WINDOW], n = 0;

	for (uint64_t at = 0; at < npages; at += WINDOW) {
		if (pread(c->pagemap, pme, sizeof(pme), (off_t)((c->base / PS + at) * 8)) !=
		    (ssize_t)sizeof(pme))
			die("pread pagemap");
		if (pread(c->memfd, c->buf, WINDOW * PS, (off_t)(at * PS)) != (ssize_t)(WINDOW * PS))
			die("pread memfd");
		for (unsigned i = 0; i < WINDOW; i++) {
			const uint8_t *pg = c->buf + i * PS;
			uint64_t h = all_zero(pg) ? 0 : fl_source_page_hash(pg, PS, c->seed) | 1;

			if (h != c->hash[at + i]) {
				c->hash[at + i] = h;
				if (changed)
					changed[(at + i) / 8] |= (uint8_t)(1u << ((at + i) & 7));
				n++;
			}
		}
	}
	return n;
}

int main(int argc, char **argv)
{
	double gib = 8, populated = 1, pct[8] = { 5, 1, 0.1 };
	int npct = 3, rounds = 7, sv[2], av[2];
	struct ctx *c = calloc(1, sizeof(*c));

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--gib") && i + 1 < argc) {
			gib = atof(argv[++i]);
		} else if (!strcmp(argv[i], "--populated-gib") && i + 1 < argc) {
			populated = atof(argv[++i]);
		} else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
			rounds = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--percent") && i + 1 < argc) {
			char *s = argv[++i];

			for (npct = 0; npct < 8 && *s; npct++) {
				pct[npct] = strtod(s, &s);
				if (*s == ',')
					s++;
			}
		} else {
			fprintf(stderr, "usage: bench-dirty [--gib N] [--populated-gib N] "
				"[--percent P[,P...]] [--rounds N]\n");
			return 2;
		}
	}
	if (!c || rounds < 1 || gib <= 0 || populated <= 0 || populated > gib)
		return 2;
	npages = (uint64_t)(gib * (1 << 30)) / PS / WINDOW * WINDOW;

	/* guest memory, populated chunks, then the uffd: all in the child's mm */
	int memfd = memfd_create("bench-guest", MFD_CLOEXEC);

	if (memfd < 0 || ftruncate(memfd, (off_t)(npages * PS)))
		die("memfd");
	if (pipe(sv) || pipe(av))
		die("pipe");
	gmem = mmap(NULL, npages * PS, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	if (gmem == MAP_FAILED)
		die("mmap");
	stride = (uint64_t)(gib / populated + 0.5);
	c->pid = fork();
	if (c->pid < 0)
		die("fork");
	if (!c->pid) {
		int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC |
					  UFFD_FEATURE_WP_HUGETLBFS_SHMEM };
		struct uffdio_register reg = { .range = { (uintptr_t)gmem, npages * PS },
					       .mode = UFFDIO_REGISTER_MODE_WP };
		uint64_t s = 42;

		cmd_rd = sv[0];
		ack_wr = av[1];
		/* populate: every stride-th 2 MiB chunk, each page a non-zero pattern */
		for (uint64_t ch = 0; ch < npages / 512; ch += stride)
			for (uint64_t p = ch * 512; p < ch * 512 + 512; p++)
				for (unsigned w = 0; w < PS / 8; w += 64)
					((uint64_t *)(gmem + p * PS))[w] = rnd(&s) | 1;
		if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg))
			die("userfaultfd WP_ASYNC");
		if (write(ack_wr, "k", 1) != 1)
			_exit(1);
		child_loop();
	}
	char k;
	char path[64];

	c->cmd_wr = sv[1];
	c->ack_rd = av[0];
	if (read(c->ack_rd, &k, 1) != 1) {
		fprintf(stderr, "bench-dirty: the guest failed to set up\n");
		return 1;
	}
	snprintf(path, sizeof(path), "/proc/%d/pagemap", c->pid);
	c->pagemap = open(path, O_RDONLY | O_CLOEXEC);
	if (c->pagemap < 0)
		die(path);
	c->memfd = memfd;
	c->base = (uintptr_t)gmem;
	c->seed = 0x5eed;
	c->hash = calloc(npages, 8);
	c->buf = aligned_alloc(4096, WINDOW * PS);
	c->bits = calloc(npages / 8 + 1, 1);
	uint8_t *hbits = calloc(npages / 8 + 1, 1);

	if (!c->hash || !c->buf || !c->bits || !hbits)
		die("malloc");
	/* the baseline each method starts from: everything protected, every page hashed */
	wp_round(c);
	hash_round(c, NULL);
	printf("bench-dirty: %.1f GiB guest (%" PRIu64 " pages), %.2f GiB populated (every %" PRIu64
	       "th 2 MiB chunk); %d rounds per fraction, wp and hash interleaved\n", gib, npages,
	       (double)((npages / 512 + stride - 1) / stride) * 2 / 1024, stride, rounds);

	int fail = 0;

	for (int f = 0; f < npct; f++) {
		uint64_t want = (uint64_t)((double)npages * pct[f] / 100);
		double twp[64], thash[64], tfloor[64];
		uint64_t fwp = 0, fhash = 0;

		if (rounds > 64)
			rounds = 64;
		for (int r = 0; r < rounds; r++) {
			uint64_t msg[2] = { want, 1000003ull * (uint64_t)(f * 64 + r) + 7 };

			memset(c->bits, 0, npages / 8 + 1);
			memset(hbits, 0, npages / 8 + 1);
			if (write(c->cmd_wr, msg, sizeof(msg)) != sizeof(msg) || read(c->ack_rd, &k, 1) != 1)
				die("guest");
			for (int m = 0; m < 2; m++) {
				bool do_wp = (m == 0) == (r % 2 == 0);
				double t0 = now_ms();

				if (do_wp) {
					fwp = wp_round(c);
					twp[r] = now_ms() - t0;
				} else {
					fhash = hash_round(c, hbits);
					thash[r] = now_ms() - t0;
				}
			}
			/* exact: the same pages, found both ways */
			if (memcmp(c->bits, hbits, npages / 8 + 1)) {
				fprintf(stderr, "bench-dirty: wp found %" PRIu64 " pages, hashing %" PRIu64
					": the sets differ\n", fwp, fhash);
				fail = 1;
			}
			/* the floor: a wp round with nothing written since */
			memset(c->bits, 0, npages / 8 + 1);
			double t0 = now_ms();

			if (wp_round(c)) {
				fprintf(stderr, "bench-dirty: pages written while nobody wrote\n");
				fail = 1;
			}
			tfloor[r] = now_ms() - t0;
		}
		double mw = median(twp, rounds), mh = median(thash, rounds), mf = median(tfloor, rounds);

		printf("  %5.2f%% of the guest written (%" PRIu64 " writes, %" PRIu64 " distinct pages "
		       "last round):\n"
		       "      wp   (PAGEMAP_SCAN, read+reset)  %9.2f ms/round = %.2f ms walk of the "
		       "page tables + %.3f us per written page\n"
		       "      hash (pagemap+pread+hash)        %9.2f ms/round (%.1f ms per GiB of guest)\n"
		       "      wp is %.0fx faster\n", pct[f], want, fwp, mw, mf,
		       fwp ? (mw - mf) * 1000 / (double)fwp : 0.0, mh, mh / gib, mh / mw);
	}
	close(c->cmd_wr);
	kill(c->pid, SIGKILL);
	waitpid(c->pid, NULL, 0);
	return fail;
}
