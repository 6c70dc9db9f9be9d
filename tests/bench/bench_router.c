// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Router throughput from a local page source vs. a minimal reference
 * handler loop (blocking read of one uffd_msg, UFFDIO_COPY), measured side
 * by side in one run, interleaved, medians of several rounds.  Both serve
 * the same faulting threads touching every page of fresh anonymous memory;
 * both copy from the same in-memory "source"; the difference is the
 * router's machinery (poll loop, waiting-page table, decisions, state map).
 *
 *   build/bench-router [--pages N] [--threads T] [--rounds R]
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
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
	uint8_t *src;			/* the page source both handlers copy from */
};

struct area {
	struct bench *b;
	uint8_t *mem;
	int uffd;
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
	a->b = b;
	a->stop = 0;
	a->uffd = test_uffd_open(O_CLOEXEC, UFFD_FEATURE_THREAD_ID);
	if (a->uffd < 0)
		return a->uffd;
	a->mem = mmap(NULL, b->pages * (uint64_t)b->ps, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a->mem == MAP_FAILED)
		return -errno;
	return test_uffd_register(a->uffd, a->mem, b->pages * (uint64_t)b->ps,
				  UFFDIO_REGISTER_MODE_MISSING);
}

static void area_free(struct area *a)
{
	munmap(a->mem, a->b->pages * (uint64_t)a->b->ps);
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

	while (!a->stop) {
		if (read(a->uffd, &msg, sizeof(msg)) != sizeof(msg))
			continue;
		if (msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		uint64_t addr = msg.arg.pagefault.address & ~((uint64_t)ps - 1);
		uint64_t page = (addr - (uint64_t)(uintptr_t)a->mem) / (uint64_t)ps;
		struct uffdio_copy c = { .dst = addr, .src = (uint64_t)(uintptr_t)(a->b->src + page * (uint64_t)ps),
					 .len = (uint64_t)ps };

		ioctl(a->uffd, UFFDIO_COPY, &c);	/* EEXIST: another thread's fault got it */
	}
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

static int run_reference(struct bench *b, uint64_t *ns)
{
	struct area a;
	pthread_t h;
	int ret = area_new(b, &a);

	if (ret)
		return ret;
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
	reg = (struct fl_region){ .base = a.mem, .length = b->pages * (uint64_t)b->ps, .memfd = -1 };
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
		{ 0 }
	};
	uint64_t ref[64], rt[64];
	int c;

	while ((c = getopt_long(argc, argv, "p:t:r:s:", opts, NULL)) != -1) {
		switch (c) {
		case 'p': b.pages = strtoull(optarg, NULL, 0); break;
		case 't': b.threads = (unsigned)atoi(optarg); break;
		case 'r': b.rounds = (unsigned)atoi(optarg); break;
		case 's': b.spin_us = (unsigned)atoi(optarg); break;
		default:
			fprintf(stderr, "usage: %s [--pages N] [--threads T (1-64)] [--rounds R (1-64)] "
				"[--spin-us US (router's spin window; 1: about none)]\n", argv[0]);
			return 2;
		}
	}
	if (!b.pages || !b.threads || b.threads > 64 || !b.rounds || b.rounds > 64) {
		fprintf(stderr, "bench-router: pages > 0, 1 <= threads <= 64, 1 <= rounds <= 64\n");
		return 2;
	}
	b.src = malloc(b.pages * (uint64_t)b.ps);
	if (!b.src)
		return 1;
	for (uint64_t i = 0; i < b.pages * (uint64_t)b.ps / 8; i++)
		((uint64_t *)b.src)[i] = i * 0x9e3779b97f4a7c15ull;

	for (unsigned i = 0; i < b.rounds; i++) {
		/* alternate which goes first so drift on a shared machine hits both */
		int ret = i % 2 ? run_router(&b, &rt[i]) : run_reference(&b, &ref[i]);

		if (!ret)
			ret = i % 2 ? run_reference(&b, &ref[i]) : run_router(&b, &rt[i]);
		if (ret) {
			fprintf(stderr, "bench-router: round %u failed: %s\n", i, strerror(-ret));
			return 1;
		}
	}
	qsort(ref, b.rounds, sizeof(ref[0]), cmp_u64);
	qsort(rt, b.rounds, sizeof(rt[0]), cmp_u64);
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
	free(b.src);
	return 0;
}
