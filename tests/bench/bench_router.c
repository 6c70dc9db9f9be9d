// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Router throughput from a local page source vs. a minimal reference
 * handler loop (blocking read of one uffd_msg, UFFDIO_COPY), measured side
 * by side in one run, interleaved, medians of several rounds.  Both serve
 * the same faulting threads touching every page of fresh anonymous memory;
 * both copy from the same in-memory "source"; the difference is the
 * router's machinery (poll loop, waiting-page table, decisions, state map).
 *
 *   build/bench-router [--pages N] [--threads T] [--rounds R] [--hugetlb]
 *
 * --hugetlb: guest memory a 2 MiB hugetlbfs memfd mapped shared (as QEMU's
 * memory-backend-file), each fault a whole huge page for both handlers; the
 * pool (/proc/sys/vm/nr_hugepages) is raised for the run and put back.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "faultline/faultline.h"
#include "uffd_compat.h"
#include "test_uffd.h"

struct bench {
	uint64_t pages;
	unsigned threads;
	unsigned rounds;
	unsigned spin_us;		/* router's spin window; 1 ~ none */
	long ps;
	bool hugetlb;
	uint8_t *src;			/* the page source both handlers copy from */
};

struct area {
	struct bench *b;
	uint8_t *mem;
	int memfd;			/* --hugetlb: the hugetlbfs file, else -1 */
	int uffd;
	bool fill;			/* reference: the page through a buffer, as fetch() gives it */
	volatile int stop;
};

struct toucher {
	struct area *a;
	uint64_t first, n;
	uint64_t sum;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int area_new(struct bench *b, struct area *a)
{
	uint64_t len = b->pages * (uint64_t)b->ps;

	a->b = b;
	a->stop = 0;
	a->memfd = -1;
	a->uffd = test_uffd_open(O_CLOEXEC, UFFD_FEATURE_THREAD_ID |
				 (b->hugetlb ? UFFD_FEATURE_MISSING_HUGETLBFS : 0));
	if (a->uffd < 0)
		return a->uffd;
	if (b->hugetlb) {
		a->memfd = memfd_create("bench-router", MFD_CLOEXEC | MFD_HUGETLB);
		if (a->memfd < 0 || ftruncate(a->memfd, (off_t)len) < 0)
			return -errno;
		a->mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, a->memfd, 0);
	} else {
		a->mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (a->mem == MAP_FAILED)
		return -errno;
	return test_uffd_register(a->uffd, a->mem, b->pages * (uint64_t)b->ps,
				  UFFDIO_REGISTER_MODE_MISSING);
}

static void area_free(struct area *a)
{
	munmap(a->mem, a->b->pages * (uint64_t)a->b->ps);
	if (a->memfd >= 0)
		close(a->memfd);
	close(a->uffd);
}

static void *touch_main(void *arg)
{
	struct toucher *t = arg;
	long ps = t->a->b->ps;

	for (uint64_t i = t->first; i < t->first + t->n; i++)
		t->sum += *(volatile uint64_t *)(t->a->mem + i * (uint64_t)ps);
	return NULL;
}

/* Faulting threads over disjoint slices; returns elapsed ns. */
static uint64_t touch_all(struct area *a)
{
	struct bench *b = a->b;
	pthread_t thr[64];
	struct toucher t[64];
	uint64_t per = b->pages / b->threads, t0 = now_ns();

	for (unsigned i = 0; i < b->threads; i++) {
		t[i] = (struct toucher){ .a = a, .first = i * per,
					 .n = i == b->threads - 1 ? b->pages - i * per : per };
		pthread_create(&thr[i], NULL, touch_main, &t[i]);
	}
	for (unsigned i = 0; i < b->threads; i++)
		pthread_join(thr[i], NULL);
	return now_ns() - t0;
}

/* The reference: the smallest correct handler. */
static void *reference_main(void *arg)
{
	struct area *a = arg;
	long ps = a->b->ps;
	struct uffd_msg msg;
	/* what a page provider that fills a buffer costs (libfaultline's fetch()) */
	uint8_t *buf = a->fill ? aligned_alloc(4096, (size_t)ps) : NULL;

	while (!a->stop) {
		if (read(a->uffd, &msg, sizeof(msg)) != sizeof(msg))
			continue;
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t addr = msg.arg.pagefault.address & ~((uint64_t)ps - 1);
		uint64_t page = (addr - (uint64_t)(uintptr_t)a->mem) / (uint64_t)ps;
		const uint8_t *from = a->b->src + page * (uint64_t)ps;

		if (buf) {
			memcpy(buf, from, (size_t)ps);
			from = buf;
		}
		struct uffdio_copy c = { .dst = addr, .src = (uint64_t)(uintptr_t)from, .len = (uint64_t)ps };

		ioctl(a->uffd, UFFDIO_COPY, &c);	/* EEXIST: another thread's fault got it */
	}
	free(buf);
	return NULL;
}

static int fetch_local(void *ctx, unsigned region, uint64_t page, void *buf)
{
	struct area *a = ctx;

	(void)region;
	memcpy(buf, a->b->src + page * (uint64_t)a->b->ps, (size_t)a->b->ps);
	return FL_PAGE_DIRTY;
}

static void *router_main(void *arg)
{
	return (void *)(intptr_t)fl_router_run(arg);
}

static int run_reference(struct bench *b, bool fill, uint64_t *ns)
{
	struct area a;
	pthread_t h;
	int ret = area_new(b, &a);

	if (ret)
		return ret;
	a.fill = fill;
	pthread_create(&h, NULL, reference_main, &a);
	*ns = touch_all(&a);
	a.stop = 1;
	/* unblock the handler's read with one more fault it serves */
	area_free(&a);
	pthread_cancel(h);
	pthread_join(h, NULL);
	return 0;
}

static int run_router(struct bench *b, uint64_t *ns)
{
	struct area a;
	struct fl_router *r;
	struct fl_region reg;
	struct fl_router_config cfg = { .mode = FL_MODE_MISSING, .fetch = fetch_local, .fetch_ctx = &a,
					.spin_us = b->spin_us };
	char err[256] = "";
	pthread_t h;
	void *rv;
	int ret = area_new(b, &a);

	if (ret)
		return ret;
	reg = (struct fl_region){ .base = a.mem, .length = b->pages * (uint64_t)b->ps,
				  .memfd = a.memfd };
	cfg.uffd = a.uffd;
	cfg.regions = &reg;
	cfg.nregions = 1;
	ret = fl_router_create(&cfg, &r, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "bench-router: %s\n", err);
		area_free(&a);
		return ret;
	}
	pthread_create(&h, NULL, router_main, r);
	*ns = touch_all(&a);
	fl_router_stop(r);
	pthread_join(h, &rv);
	fl_router_destroy(r);
	area_free(&a);
	return (int)(intptr_t)rv;
}

/* /proc/sys/vm/nr_hugepages: set it, or raise it by n (returns the old value, or -errno). */
static int pool_set(long n)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "w");
	int ret = f && fprintf(f, "%ld\n", n) > 0 ? 0 : -errno;

	if (f && fclose(f) && !ret)
		ret = -errno;
	return ret;
}

static long pool_raise(long n)
{
	FILE *f = fopen("/proc/sys/vm/nr_hugepages", "r");
	long old = -1, fr = 0;
	char line[128];
	int ret;

	if (!f || fscanf(f, "%ld", &old) != 1) {
		if (f)
			fclose(f);
		return -ENOENT;
	}
	fclose(f);
	ret = pool_set(old + n);
	if (ret)
		return ret;
	f = fopen("/proc/meminfo", "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "HugePages_Free: %ld", &fr) == 1)
			break;
	if (f)
		fclose(f);
	if (fr < n) {
		pool_set(old);
		return -ENOMEM;
	}
	return old;
}

static int cmp_u64(const void *x, const void *y)
{
	uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;

	return a < b ? -1 : a > b;
}

int main(int argc, char **argv)
{
	struct bench b = { .pages = 16384, .threads = 1, .rounds = 7, .ps = sysconf(_SC_PAGESIZE) };
	static const struct option opts[] = {
		{ "pages", required_argument, NULL, 'p' },
		{ "threads", required_argument, NULL, 't' },
		{ "rounds", required_argument, NULL, 'r' },
		{ "spin-us", required_argument, NULL, 's' },
		{ "hugetlb", no_argument, NULL, 'H' },
		{ 0 }
	};
	uint64_t ref[64], rt[64], reff[64];
	long pool = -1;
	bool pages_given = false;
	int c;

	while ((c = getopt_long(argc, argv, "p:t:r:s:H", opts, NULL)) != -1) {
		switch (c) {
		case 'H': b.hugetlb = true; break;
		case 'p': b.pages = strtoull(optarg, NULL, 0); pages_given = true; break;
		case 't': b.threads = (unsigned)atoi(optarg); break;
		case 'r': b.rounds = (unsigned)atoi(optarg); break;
		case 's': b.spin_us = (unsigned)atoi(optarg); break;
		default:
			fprintf(stderr, "usage: %s [--pages N] [--threads T (1-64)] [--rounds R (1-64)] "
				"[--spin-us US (router's spin window; 1: about none)] [--hugetlb]\n",
				argv[0]);
			return 2;
		}
	}
	if (!b.pages || !b.threads || b.threads > 64 || !b.rounds || b.rounds > 64) {
		fprintf(stderr, "bench-router: pages > 0, 1 <= threads <= 64, 1 <= rounds <= 64\n");
		return 2;
	}
	if (b.hugetlb) {
		b.ps = 2l << 20;
		if (!pages_given)
			b.pages = 128;
		/* one area at a time, plus slack */
		pool = pool_raise((long)b.pages + 8);
		if (pool < 0) {
			fprintf(stderr, "bench-router: --hugetlb needs %llu free 2 MiB huge pages "
				"(/proc/sys/vm/nr_hugepages, as root): %s\n",
				(unsigned long long)b.pages + 8, strerror((int)-pool));
			return 1;
		}
	}
	b.src = malloc(b.pages * (uint64_t)b.ps);
	if (!b.src)
		return 1;
	for (uint64_t i = 0; i < b.pages * (uint64_t)b.ps / 8; i++)
		((uint64_t *)b.src)[i] = i * 0x9e3779b97f4a7c15ull;

	for (unsigned i = 0; i < b.rounds; i++) {
		/* alternate which goes first so drift on a shared machine hits both */
		int ret = i % 2 ? run_router(&b, &rt[i]) : run_reference(&b, false, &ref[i]);

		if (!ret)
			ret = i % 2 ? run_reference(&b, false, &ref[i]) : run_router(&b, &rt[i]);
		if (!ret)
			ret = run_reference(&b, true, &reff[i]);
		if (ret) {
			fprintf(stderr, "bench-router: round %u failed: %s\n", i, strerror(-ret));
			return 1;
		}
	}
	qsort(ref, b.rounds, sizeof(ref[0]), cmp_u64);
	qsort(rt, b.rounds, sizeof(rt[0]), cmp_u64);
	qsort(reff, b.rounds, sizeof(reff[0]), cmp_u64);
	double ref_rate = (double)b.pages / ((double)ref[b.rounds / 2] / 1e9);
	double rt_rate = (double)b.pages / ((double)rt[b.rounds / 2] / 1e9);

	printf("router throughput, local page source (%llu pages of %ld B, %u faulting thread(s), "
	       "router spin %s, %u rounds, medians)\n", (unsigned long long)b.pages, b.ps, b.threads,
	       b.spin_us == 1 ? "off" : b.spin_us ? "custom" : "20 us (default)", b.rounds);
	printf("  reference loop (read + UFFDIO_COPY): %9.0f faults/s  (%.2f us/fault)\n", ref_rate,
	       (double)ref[b.rounds / 2] / 1e3 / (double)b.pages);
	printf("  faultline router (libfaultline):     %9.0f faults/s  (%.2f us/fault)\n", rt_rate,
	       (double)rt[b.rounds / 2] / 1e3 / (double)b.pages);
	printf("  ratio router/reference: %.3f  (target >= 0.95: %s)\n", rt_rate / ref_rate,
	       rt_rate / ref_rate >= 0.95 ? "met" : "MISSED");
	{
		/* the router's fetch() fills a buffer: one more copy of every page
		 * than the reference, which copies from the source itself */
		double f_rate = (double)b.pages / ((double)reff[b.rounds / 2] / 1e9);

		printf("  reference + a provider's copy into a buffer: %9.0f faults/s (%.2f us/fault): "
		       "the floor of a page provider that fills a buffer\n", f_rate,
		       (double)reff[b.rounds / 2] / 1e3 / (double)b.pages);
		printf("  ratio router/(reference + provider copy): %.3f\n", rt_rate / f_rate);
	}
	free(b.src);
	if (pool >= 0)
		pool_set(pool);
	return 0;
}
