// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * uffd-workload — a real userfaultfd workload for faultline.
 *
 * Its own measurements are the independent reference that the tracer's
 * output is checked against in end-to-end tests; it is also the built-in
 * demo and a benchmark driver.
 *
 * Faulting threads touch their pages (exactly once per pass, sequentially
 * per thread, threads concurrently) and time every access with
 * CLOCK_MONOTONIC right before and after it (the same clock as
 * bpf_ktime_get_ns).  Handler threads read the fault messages from the
 * userfaultfd and resolve them with COPY, ZEROPAGE, CONTINUE, POISON or
 * WAKE.  Every access is then checked: the handler must have seen a fault
 * for it from the right thread (ptid), with the right flags, and the page
 * must hold exactly what the handler placed there.
 *
 * Kernel behaviour this program relies on and verifies (kernel 6.18):
 *
 *  - WAKE in MISSING mode on shmem (memfd, MAP_SHARED, registered MISSING):
 *    the handler writes the page through a second, unregistered mapping of
 *    the same memfd, which puts the page into the page cache, and then
 *    issues UFFDIO_WAKE only.  This DOES end the wait: the woken thread
 *    retries the fault, shmem_get_folio_gfp() finds the folio in the page
 *    cache and maps it without calling handle_userfault() again.
 *    Measured here: handler_reads == faults, no re-fault.
 *
 *  - WAKE in MINOR mode: the page is in the page cache by definition (that
 *    is what makes the fault "minor"), so filling it through the alias and
 *    issuing UFFDIO_WAKE does NOT end the wait: the thread retries, finds
 *    the folio in the cache of a MINOR-registered VMA and calls
 *    handle_userfault() again - it blocks once more and a second
 *    UFFD_EVENT_PAGEFAULT message with the same address and ptid arrives.
 *    Only UFFDIO_CONTINUE (which installs the PTE) ends it; a handler that
 *    answers every message with WAKE livelocks with the faulting thread
 *    (verified: both spin at full CPU, fdinfo total:1).  This program
 *    therefore detects the re-fault (a page already woken in this pass) and
 *    resolves it with CONTINUE; the record then says resolved_by
 *    "continue", the summary counts both ioctls (wake and continue) and
 *    "refaults", and handler_reads == faults + refaults.
 *
 *  - UFFDIO_POISON: the retried access takes SIGBUS; sig_code is BUS_ADRERR
 *    on this kernel (CONFIG_MEMORY_FAILURE off; BUS_MCEERR_AR elsewhere)
 *    and sig_addr is the exact address accessed, while the uffd message
 *    carries the page-aligned address (no UFFD_FEATURE_EXACT_ADDRESS).
 *    MADV_DONTNEED removes the poison marker, so later passes fault again.
 *
 *  - munmap race (--race munmap): munmap() of a registered range with a
 *    thread blocked in handle_userfault() (no UFFD_FEATURE_EVENT_UNMAP)
 *    does not wake that thread; UFFDIO_COPY into the now unmapped address
 *    fails with ENOENT and wakes nobody; the thread stays blocked (wchan
 *    handle_userfault) for as long as the handler withholds UFFDIO_WAKE;
 *    UFFDIO_WAKE on the unmapped range is accepted and releases it, and
 *    the retried access then takes SIGSEGV (SEGV_MAPERR, sig_addr = the
 *    exact address).
 *
 *  - mremap race (--race mremap): mremap(MREMAP_MAYMOVE|MREMAP_FIXED) of the
 *    registered range to another address, with a thread blocked on it.
 *    Without UFFD_FEATURE_EVENT_REMAP, mremap_userfaultfd_prep() drops the
 *    uffd context from the moved VMA (it is no longer registered) and no
 *    waiter is woken.  Verified on 6.18: exactly as munmap - the old
 *    address is a hole, UFFDIO_COPY to it fails with ENOENT and wakes
 *    nobody, the thread stays blocked in handle_userfault until UFFDIO_WAKE
 *    of the old address (accepted), then its retried access takes SIGSEGV
 *    (SEGV_MAPERR at the exact old address): the fault is not redirected to
 *    the new address.
 *
 *  - mmap(MAP_FIXED) race (--race mmap-fixed): fresh anonymous memory
 *    mapped over the registered range with a thread blocked on it.  The old
 *    VMA is unmapped as by munmap (no wake, no event); the new VMA is not
 *    registered.  Verified on 6.18: UFFDIO_COPY to the old address fails
 *    with ENOENT although a VMA is there (the ioctl needs a VMA registered
 *    with this uffd), the thread stays blocked until UFFDIO_WAKE (accepted),
 *    and then its retried access finds the new, unregistered anonymous VMA,
 *    maps the zero page and simply continues: no signal, it reads 0.
 *
 *  - wchan of a thread blocked in handle_userfault() can read "0" for a few
 *    ms after it blocked (get_wchan() skips tasks still on the runqueue,
 *    where EEVDF's delayed dequeue leaves them), while its state is already
 *    S; the race's blocked-check accepts "0" with state S/D.
 *
 *  - --handler-process: the handler is a forked process that gets the uffd
 *    over a Unix socket (SCM_RIGHTS).  The uffd's operations act on the mm
 *    it was created in (ctx->mm), whoever calls them: UFFDIO_COPY copies
 *    from the handler process's memory into the faulting process, read()
 *    returns that process's faults (ptid = its thread ids).  The faulting
 *    process's VMAs are not registered in the child (no
 *    UFFD_FEATURE_EVENT_FORK: fork clears the child's uffd contexts).
 *
 * Build:
 *   gcc -std=gnu11 -O2 -g -Wall -Wextra -Werror -pthread -Iinclude \
 *       -o build/uffd-workload tests/workloads/uffd_workload.c
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "uffd_compat.h"

#define WL_PROG "uffd-workload"
#define WL_RACE_PAGES 16u
#define WL_RACE_PAGE 5u /* page of the race region that is touched */
#define WL_MAX_THREADS 4096u
#define WL_MAX_EAGAIN 100000u
/* --handler-process: the received uffd is moved to this fd number or above */
#define WL_HANDLER_FD_MIN 100

/* What the race's main thread does to the region under the blocked waiter. */
enum wl_race_kind { RACE_MUNMAP, RACE_MREMAP, RACE_MMAP_FIXED, RACE_KIND_NR };

static const char *const wl_race_kind_name[RACE_KIND_NR] = {
	[RACE_MUNMAP] = "munmap", [RACE_MREMAP] = "mremap", [RACE_MMAP_FIXED] = "mmap-fixed",
};

enum wl_mode { WL_MISSING, WL_MINOR };

#define HUGE_PS (2u << 20)	/* --hugetlb */

enum wl_res {
	RES_NONE = -1,
	RES_COPY = 0,
	RES_ZEROPAGE,
	RES_CONTINUE,
	RES_POISON,
	RES_WAKE,
	RES_NR,
	RES_MIX = RES_NR, /* only as an option value */
};

static const char *const wl_res_name[RES_NR] = {
	[RES_COPY] = "copy",	 [RES_ZEROPAGE] = "zeropage",
	[RES_CONTINUE] = "continue", [RES_POISON] = "poison",
	[RES_WAKE] = "wake",
};

static const char *const wl_ioctl_name[RES_NR] = {
	[RES_COPY] = "UFFDIO_COPY",	    [RES_ZEROPAGE] = "UFFDIO_ZEROPAGE",
	[RES_CONTINUE] = "UFFDIO_CONTINUE", [RES_POISON] = "UFFDIO_POISON",
	[RES_WAKE] = "UFFDIO_WAKE",
};

struct wl_opts {
	unsigned threads;
	unsigned pages;
	unsigned handler_threads;
	unsigned loops;
	enum wl_mode mode;
	int resolve; /* enum wl_res or RES_MIX */
	unsigned long delay_us;
	unsigned long start_delay_ms;
	unsigned long race_hold_ms;
	unsigned long stall_timeout_s;
	bool race;
	int race_kind; /* enum wl_race_kind */
	bool handler_process;
	bool hugetlb;	/* --hugetlb: 2 MiB pages (hugetlbfs) */
	bool quiet;
	const char *out_path;
};

/* Per-page state shared between the handler and the owning thread. */
struct wl_page {
	_Atomic unsigned served_pass; /* pass+1 the handler served it in; 0 never */
	_Atomic int final_res;	      /* ioctl that ended (or should end) the wait */
	_Atomic unsigned woken_pass;  /* pass+1 a plain WAKE was issued in */
	_Atomic pid_t ptid;	      /* ptid from the last fault message */
	/*
	 * When the handler's read() of the message returned and when it began
	 * the resolving ioctl: the faulting thread slept at least that long,
	 * whatever else its own clock counted.
	 */
	_Atomic uint64_t read_ns;
	_Atomic uint64_t resolve_ns;
};

struct wl_rec {
	uint64_t start_ns;
	uint64_t end_ns;
	int res;
	bool sigbus;
	bool preempted;	/* an involuntary context switch inside the timed window */
	/*
	 * The scheduler's account of the window (from just before to just
	 * after it): voluntary sleeps, time runnable but not running, time on
	 * a CPU. What the window holds beyond sleep + these is time stolen by
	 * the hypervisor, which the thread cannot see any other way.
	 */
	uint32_t sleeps;
	uint64_t run_delay_ns;
	uint64_t cpu_ns;
	uint64_t bracket_ns;	/* wall time the three above were counted over (> the window) */
	uint64_t read_ns;	/* the handler's read of its message, 0 if unknown */
	uint64_t resolve_ns;	/* the handler's resolving ioctl began */
};

/* /proc/thread-self/schedstat: on-CPU ns, run-queue wait ns, timeslices. */
static bool read_schedstat(int fd, uint64_t *cpu, uint64_t *delay)
{
	char buf[128];
	ssize_t n = fd >= 0 ? pread(fd, buf, sizeof(buf) - 1, 0) : -1;
	unsigned long long c, d;

	if (n <= 0)
		return false;
	buf[n] = 0;
	if (sscanf(buf, "%llu %llu", &c, &d) != 2)
		return false;
	*cpu = c;
	*delay = d;
	return true;
}

/*
 * Time the hypervisor ran other guests on this machine's CPUs, summed over
 * CPUs (/proc/stat's steal column), and how far off two reads of it can be:
 * it is kept in clock ticks, so a tick per CPU. A thread on a stolen CPU
 * loses time without a context switch, invisible in its schedstat.
 */
static bool read_steal(uint64_t *ns, uint64_t *slack_ns)
{
	FILE *f = fopen("/proc/stat", "re");
	uint64_t tick = 1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK), sum = 0, ncpu = 0;
	unsigned long long v[8];
	char line[512];

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned cpu;

		if (strncmp(line, "cpu", 3) || line[3] < '0' || line[3] > '9' ||	/* not the sum line */
		    sscanf(line, "cpu%u %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1],
			   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) != 9)
			continue;
		sum += v[7];
		ncpu++;
	}
	fclose(f);
	*ns = sum * tick;
	*slack_ns = ncpu * tick;
	return ncpu > 0;
}

struct wl_ctx;

struct wl_fthread {
	struct wl_ctx *ctx;
	unsigned idx;
	pthread_t th;
	_Atomic pid_t tid;
	struct wl_rec *recs; /* one pass worth */
	uint8_t *expect;     /* scratch page */
	int schedstat_fd;    /* this thread's /proc/thread-self/schedstat, or -1 */
};

struct wl_hthread {
	struct wl_ctx *ctx;
	unsigned idx;
	pthread_t th;
	uint8_t *src; /* page-aligned UFFDIO_COPY source */
};

struct wl_counters {
	_Atomic uint64_t faults;
	_Atomic uint64_t sigbus;
	_Atomic uint64_t sigsegv;
	_Atomic uint64_t handler_reads;
	_Atomic uint64_t res[RES_NR]; /* successful resolve ioctls */
	_Atomic uint64_t errors;
	_Atomic uint64_t refaults;
	_Atomic uint64_t eexist;
	_Atomic uint64_t eagain;
	_Atomic uint64_t other_events;
	_Atomic uint64_t progress; /* watchdog heartbeat */
};

enum wl_race_state { RACE_IDLE, RACE_FAULT_READ, RACE_UNMAPPED, RACE_WOKEN };

struct wl_race {
	uint8_t *base;
	size_t len;
	uint8_t *moved_to; /* --race mremap: where the region goes (reserved in setup) */
	uint8_t *page;	 /* page that is touched */
	uint8_t *access; /* exact address touched */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	enum wl_race_state state;
	_Atomic pid_t tid;
	_Atomic int returned;
	_Atomic int holding;
	pid_t ptid;
	uint64_t start_ns, end_ns, read_ns, unmap_ns, wake_ns;
	int copy_errno; /* 0: COPY unexpectedly succeeded */
	int wake_errno;
	bool blocked_after_unmap; /* still blocked right after munmap */
	bool blocked_in_hold;	  /* every sample during the hold */
	unsigned hold_samples;
	char wchan[64];
	int signo, sig_code;
	void *sig_addr;
	int value;	     /* byte read by the waiter when it returned normally, else -1 */
	int mapchange_errno; /* of the munmap/mremap/mmap itself */
};

/*
 * Everything the run needs; one instance, owned by main().  With
 * --handler-process it lives in MAP_SHARED memory (as do pages[] and fth[]),
 * so the forked handler and the faulting process see the same page states,
 * counters, race state and thread ids.
 */
struct wl_ctx {
	struct wl_opts opt;
	size_t ps;
	int uffd;	   /* the faulting process's fd */
	int huffd;	   /* the fd the handler uses: uffd, or the handler process's copy */
	pid_t handler_pid; /* the process that serves the faults */
	int stop_efd;
	int memfd;	 /* -1 for anonymous memory */
	uint8_t *base;	 /* registered mapping */
	uint8_t *alias;	 /* second, unregistered mapping of memfd */
	size_t len;
	size_t npages;
	uint64_t features;
	struct wl_page *pages;
	uint64_t *waits; /* per access wait, all passes */
	struct wl_fthread *fth;
	struct wl_hthread *hth;
	pthread_barrier_t bar_start, bar_end;
	_Atomic unsigned pass;
	_Atomic int faulting; /* watchdog armed */
	_Atomic int noted_minor_wake;
	_Atomic unsigned handlers_ready; /* handler threads that reached their poll loop */
	FILE *out;
	pid_t pid;
	struct wl_race race;
	struct wl_counters cnt;
	pthread_mutex_t wd_mu;
	pthread_cond_t wd_cv;
	bool wd_stop;
	pthread_t wd_th;
	uint64_t steal0_ns;	/* host steal when the faulting began */
	bool steal_ok;
};

/* Signal trap of the current thread (SIGBUS from poison, SIGSEGV from race). */
struct wl_sigtrap {
	sigjmp_buf jmp;
	volatile sig_atomic_t armed;
	volatile int signo;
	volatile int code;
	void *volatile addr;
	volatile uint64_t end_ns;
};
static __thread struct wl_sigtrap wl_tls_trap;

/* ------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ull),
			       .tv_nsec = (long)(ns % 1000000000ull) };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

static void wl_error(struct wl_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void wl_error(struct wl_ctx *ctx, const char *fmt, ...)
{
	char buf[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	fprintf(stderr, WL_PROG ": error: %s\n", buf);
	atomic_fetch_add(&ctx->cnt.errors, 1);
}

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs(WL_PROG ": error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static const char *errname(int e)
{
	const char *n = e ? strerrorname_np(e) : "none";

	return n ? n : "unknown";
}

/* ------------------------------------------------------------------ */
/* Page contents                                                       */

static uint64_t pat_seed(size_t idx, unsigned pass)
{
	uint64_t x = ((uint64_t)idx << 20) ^ ((uint64_t)pass * 0x9E3779B97F4A7C15ull) ^
		     0xFA017F11E5ull;

	x ^= x >> 30;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 27;
	x *= 0x94D049BB133111EBull;
	x ^= x >> 31;
	return x;
}

/* The content the handler places in page idx during pass `pass`. */
static void pat_fill(uint8_t *dst, size_t ps, size_t idx, unsigned pass)
{
	uint64_t v = pat_seed(idx, pass);

	for (size_t j = 0; j < ps / 8; j++) {
		uint64_t w = v + (uint64_t)j * 0xD1B54A32D192ED03ull;

		memcpy(dst + j * 8, &w, 8);
	}
}

/* Offset of the byte a thread touches in page idx (exercises sig_addr). */
static size_t access_off(size_t idx, size_t ps)
{
	return (idx * 72u + 8u) % ps;
}

/* copy/continue/wake pages are written (content-bearing), others read. */
static bool res_writes(int res)
{
	return res == RES_COPY || res == RES_CONTINUE || res == RES_WAKE;
}

static int wl_plan(const struct wl_ctx *ctx, size_t idx)
{
	static const int mix_missing[] = { RES_COPY, RES_ZEROPAGE, RES_POISON, RES_WAKE };
	static const int mix_minor[] = { RES_CONTINUE, RES_POISON, RES_WAKE };

	if (ctx->opt.resolve != RES_MIX)
		return ctx->opt.resolve;
	if (ctx->opt.mode == WL_MISSING)
		return mix_missing[idx % 4];
	return mix_minor[idx % 3];
}

/* ------------------------------------------------------------------ */
/* Signal trap and the timed access                                    */

static void wl_trap_handler(int signo, siginfo_t *si, void *uc)
{
	struct wl_sigtrap *t = &wl_tls_trap;
	struct timespec ts;

	(void)uc;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	if (!t->armed) {
		/* Not ours: die the normal way. */
		signal(signo, SIG_DFL);
		raise(signo);
		return;
	}
	t->end_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	t->signo = signo;
	t->code = si->si_code;
	t->addr = si->si_addr;
	t->armed = 0;
	siglongjmp(t->jmp, 1);
}

static void install_traps(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = wl_trap_handler;
	/* SA_NODEFER: siglongjmp out without having to restore the mask. */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL) || sigaction(SIGSEGV, &sa, NULL))
		die("sigaction(SIGBUS/SIGSEGV): %s", strerror(errno));
}

struct wl_access {
	uint64_t start_ns;
	uint64_t end_ns;
	int signo; /* 0 = no signal */
	int sig_code;
	void *sig_addr;
};

/*
 * One access to *p, timed.  A SIGBUS/SIGSEGV raised by it ends the access:
 * the trap records the time and jumps back here.
 */
static __attribute__((noinline)) void timed_access(volatile uint8_t *p, bool write, uint8_t val,
						   struct wl_access *r)
{
	struct wl_sigtrap *t = &wl_tls_trap;

	r->signo = 0;
	r->sig_code = 0;
	r->sig_addr = NULL;
	if (sigsetjmp(t->jmp, 0) == 0) {
		t->armed = 1;
		r->start_ns = now_ns();
		__asm__ __volatile__("" ::: "memory");
		if (write)
			*p = val;
		else
			(void)*p;
		__asm__ __volatile__("" ::: "memory");
		r->end_ns = now_ns();
		t->armed = 0;
	} else {
		r->end_ns = t->end_ns;
		r->signo = t->signo;
		r->sig_code = t->code;
		r->sig_addr = t->addr;
	}
}

/* ------------------------------------------------------------------ */
/* Handler side                                                        */

/*
 * One resolve ioctl for one page.  EAGAIN (mapping changing) is retried.
 * Returns 0 or the errno.
 */
static int uffd_op(struct wl_ctx *ctx, int res, uintptr_t addr, const void *src)
{
	for (unsigned attempt = 0;; attempt++) {
		int rc = -1;

		switch (res) {
		case RES_COPY: {
			struct uffdio_copy c = { .dst = addr, .src = (uintptr_t)src,
						 .len = ctx->ps, .mode = 0 };
			rc = ioctl(ctx->huffd, UFFDIO_COPY, &c);
			break;
		}
		case RES_ZEROPAGE: {
			struct uffdio_zeropage z = { .range = { addr, ctx->ps }, .mode = 0 };
			rc = ioctl(ctx->huffd, UFFDIO_ZEROPAGE, &z);
			break;
		}
		case RES_CONTINUE: {
			struct uffdio_continue c = { .range = { addr, ctx->ps }, .mode = 0 };
			rc = ioctl(ctx->huffd, UFFDIO_CONTINUE, &c);
			break;
		}
		case RES_POISON: {
			struct uffdio_poison p = { .range = { addr, ctx->ps }, .mode = 0 };
			rc = ioctl(ctx->huffd, UFFDIO_POISON, &p);
			break;
		}
		case RES_WAKE: {
			struct uffdio_range r = { addr, ctx->ps };
			rc = ioctl(ctx->huffd, UFFDIO_WAKE, &r);
			break;
		}
		default:
			errno = EINVAL;
		}
		if (rc == 0) {
			atomic_fetch_add(&ctx->cnt.res[res], 1);
			return 0;
		}
		int e = errno;
		if (e == EAGAIN && attempt < WL_MAX_EAGAIN) {
			atomic_fetch_add(&ctx->cnt.eagain, 1);
			sched_yield();
			continue;
		}
		return e;
	}
}

/* Last resort so that no waiter stays blocked: unregister (wakes) or wake. */
static void rescue_waiter(struct wl_ctx *ctx, uintptr_t addr)
{
	struct uffdio_range r = { addr, ctx->ps };

	if (ioctl(ctx->huffd, UFFDIO_UNREGISTER, &r) == 0)
		return;
	if (uffd_op(ctx, RES_WAKE, addr, NULL))
		wl_error(ctx, "cannot release the waiter at 0x%" PRIxPTR
			 ": UFFDIO_UNREGISTER and UFFDIO_WAKE failed: %s",
			 addr, strerror(errno));
}

static void wl_resolve(struct wl_hthread *h, size_t idx, uintptr_t addr, int res, unsigned pass)
{
	struct wl_ctx *ctx = h->ctx;
	uint8_t *alias_page = ctx->alias ? ctx->alias + idx * ctx->ps : NULL;
	int e;

	switch (res) {
	case RES_COPY:
		pat_fill(h->src, ctx->ps, idx, pass);
		break;
	case RES_CONTINUE:
	case RES_WAKE:
		/* Fill the page cache through the unregistered alias. */
		pat_fill(alias_page, ctx->ps, idx, pass);
		break;
	default:
		break;
	}
	if (res == RES_WAKE)
		atomic_store(&ctx->pages[idx].woken_pass, pass + 1);

	e = uffd_op(ctx, res, addr, h->src);
	if (!e)
		return;
	if (e == EEXIST && res != RES_WAKE) {
		/* Already populated (nothing woken by the failed ioctl). */
		atomic_fetch_add(&ctx->cnt.eexist, 1);
		fprintf(stderr, WL_PROG ": warning: %s at 0x%" PRIxPTR
			" (page %zu): EEXIST, waking the waiter instead\n",
			wl_ioctl_name[res], addr, idx);
		e = uffd_op(ctx, RES_WAKE, addr, NULL);
		if (!e)
			return;
	}
	wl_error(ctx, "%s at 0x%" PRIxPTR " (page %zu) failed: %s (%s)", wl_ioctl_name[res], addr,
		 idx, errname(e), strerror(e));
	rescue_waiter(ctx, addr);
}

/* wchan of thread tid of the faulting process (the caller may be the handler process). */
static bool read_wchan(pid_t pid, pid_t tid, char *buf, size_t sz)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/wchan", (int)pid, (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, buf, sz - 1);
	close(fd);
	if (n < 0)
		return false;
	buf[n] = '\0';
	return true;
}

/* Scheduler state letter of thread tid (R, S, D, ...), '?' if unknown. */
static char task_state(pid_t pid, pid_t tid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return '?';
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return '?';
	buf[n] = '\0';
	p = strrchr(buf, ')');
	return p && p[1] == ' ' && p[2] ? p[2] : '?';
}

/*
 * The map-change race, handler side: the fault message has been read.  Let
 * the main thread munmap / mremap / mmap(MAP_FIXED) the region, try to COPY
 * to the old address (must fail with ENOENT), keep the waiter blocked for
 * race_hold_ms, then WAKE it.
 */
static void race_handle(struct wl_hthread *h, uintptr_t addr, pid_t ptid)
{
	struct wl_ctx *ctx = h->ctx;
	struct wl_race *r = &ctx->race;
	pid_t tid = atomic_load(&r->tid);
	uint64_t deadline;
	bool blocked = true, seen_uf = false;
	char wchan[64] = "";

	pthread_mutex_lock(&r->mu);
	if (r->state != RACE_IDLE) {
		pthread_mutex_unlock(&r->mu);
		wl_error(ctx, "race: unexpected second fault message at 0x%" PRIxPTR, addr);
		rescue_waiter(ctx, addr);
		return;
	}
	r->read_ns = now_ns();
	r->ptid = ptid;
	r->state = RACE_FAULT_READ;
	pthread_cond_broadcast(&r->cv);
	while (r->state != RACE_UNMAPPED)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);

	pat_fill(h->src, ctx->ps, 0, 0);
	struct uffdio_copy c = { .dst = addr, .src = (uintptr_t)h->src, .len = ctx->ps };
	if (ioctl(ctx->huffd, UFFDIO_COPY, &c) == 0) {
		r->copy_errno = 0;
		atomic_fetch_add(&ctx->cnt.res[RES_COPY], 1);
	} else {
		r->copy_errno = errno;
	}

	/* Hold: do not allocate or map anything here (keep the hole a hole). */
	atomic_store(&r->holding, 1);
	deadline = now_ns() + ctx->opt.race_hold_ms * 1000000ull;
	for (;;) {
		uint64_t t = now_ns();
		bool ok = read_wchan(ctx->pid, tid, wchan, sizeof(wchan));

		if (ok) {
			size_t n = strlen(wchan);
			if (n && wchan[n - 1] == '\n')
				wchan[n - 1] = '\0';
		}
		r->hold_samples++;
		if (ok && !strcmp(wchan, "handle_userfault")) {
			seen_uf = true;
		} else if (ok && !strcmp(wchan, "0") && strchr("SD", task_state(ctx->pid, tid))) {
			/*
			 * Asleep, but wchan hidden: get_wchan() reports 0 for a
			 * sleeping task still on the runqueue, which EEVDF's
			 * delayed dequeue leaves it on for a few ms after it
			 * blocked (seen on 6.18 for a thread in handle_userfault).
			 */
		} else {
			ok = false;
		}
		if (atomic_load(&r->returned) || !ok) {
			if (blocked)
				snprintf(r->wchan, sizeof(r->wchan), "%s", wchan[0] ? wchan : "?");
			blocked = false;
		}
		if (t >= deadline)
			break;
		sleep_ns(deadline - t < 20000000ull ? deadline - t : 20000000ull);
	}
	if (blocked)
		snprintf(r->wchan, sizeof(r->wchan), "%s", seen_uf ? "handle_userfault" : wchan);
	r->blocked_in_hold = blocked;

	r->wake_ns = now_ns();
	r->wake_errno = uffd_op(ctx, RES_WAKE, addr, NULL);
	atomic_store(&r->holding, 0);

	pthread_mutex_lock(&r->mu);
	r->state = RACE_WOKEN;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);
}

static void handle_pagefault(struct wl_hthread *h, const struct uffd_msg *msg, uint64_t read_ns)
{
	struct wl_ctx *ctx = h->ctx;
	uintptr_t addr = (uintptr_t)(msg->arg.pagefault.address & ~((uint64_t)ctx->ps - 1));
	pid_t ptid = (pid_t)msg->arg.pagefault.feat.ptid;
	uint64_t flags = msg->arg.pagefault.flags;
	uintptr_t base = (uintptr_t)ctx->base;

	if (ctx->opt.race && addr >= (uintptr_t)ctx->race.base &&
	    addr < (uintptr_t)ctx->race.base + ctx->race.len) {
		race_handle(h, addr, ptid);
		return;
	}
	if (addr < base || addr >= base + ctx->len) {
		wl_error(ctx, "fault message for 0x%" PRIxPTR " outside the registered ranges", addr);
		rescue_waiter(ctx, addr);
		return;
	}

	size_t idx = (addr - base) / ctx->ps;
	struct wl_page *pg = &ctx->pages[idx];
	unsigned pass = atomic_load(&ctx->pass);
	int plan = wl_plan(ctx, idx);
	int res = plan;

	if (ctx->opt.delay_us)
		sleep_ns(ctx->opt.delay_us * 1000ull);

	unsigned owner = (unsigned)(idx / ctx->opt.pages);
	pid_t otid = atomic_load(&ctx->fth[owner].tid);
	if (ptid != otid)
		wl_error(ctx, "fault at 0x%" PRIxPTR " (page %zu): ptid %d, but page belongs to tid %d",
			 addr, idx, (int)ptid, (int)otid);
	bool wflag = !!(flags & UFFD_PAGEFAULT_FLAG_WRITE);
	bool mflag = !!(flags & UFFD_PAGEFAULT_FLAG_MINOR);
	if (wflag != res_writes(plan) || mflag != (ctx->opt.mode == WL_MINOR))
		wl_error(ctx, "fault at 0x%" PRIxPTR " (page %zu): flags 0x%" PRIx64
			 " (expected %s%s)", addr, idx, flags,
			 res_writes(plan) ? "WRITE" : "read",
			 ctx->opt.mode == WL_MINOR ? "|MINOR" : "");

	if (plan == RES_WAKE && atomic_load(&pg->woken_pass) == pass + 1) {
		/* The WAKE did not end the wait: the thread blocked again. */
		atomic_fetch_add(&ctx->cnt.refaults, 1);
		res = ctx->opt.mode == WL_MINOR ? RES_CONTINUE : RES_COPY;
		if (!atomic_exchange(&ctx->noted_minor_wake, 1))
			fprintf(stderr, WL_PROG ": note: UFFDIO_WAKE did not end the %s fault at 0x%"
				PRIxPTR " (the thread faulted again); resolving re-faults with %s\n",
				ctx->opt.mode == WL_MINOR ? "MINOR" : "MISSING", addr,
				wl_ioctl_name[res]);
	}
	atomic_store(&pg->ptid, ptid);
	atomic_store(&pg->final_res, res);
	atomic_store(&pg->read_ns, read_ns);
	atomic_store(&pg->resolve_ns, now_ns());
	atomic_store(&pg->served_pass, pass + 1);
	wl_resolve(h, idx, addr, res, pass);
}

static void *hthread_main(void *arg)
{
	struct wl_hthread *h = arg;
	struct wl_ctx *ctx = h->ctx;
	struct pollfd pfd[2] = { { .fd = ctx->huffd, .events = POLLIN },
				 { .fd = ctx->stop_efd, .events = POLLIN } };

	atomic_fetch_add(&ctx->handlers_ready, 1);
	for (;;) {
		struct uffd_msg msg;
		uint64_t read_ns;
		ssize_t n;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			wl_error(ctx, "handler %u: poll(userfaultfd): %s", h->idx, strerror(errno));
			return NULL;
		}
		if (pfd[1].revents)
			return NULL;
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
			wl_error(ctx, "handler %u: poll(userfaultfd) revents 0x%x", h->idx,
				 (unsigned)pfd[0].revents);
			return NULL;
		}
		if (!(pfd[0].revents & POLLIN))
			continue;
		n = read(ctx->huffd, &msg, sizeof(msg));
		read_ns = now_ns();
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue; /* another handler thread took it */
			wl_error(ctx, "handler %u: read(userfaultfd): %s", h->idx, strerror(errno));
			return NULL;
		}
		if (n != (ssize_t)sizeof(msg)) {
			wl_error(ctx, "handler %u: short read(userfaultfd): %zd bytes", h->idx, n);
			continue;
		}
		atomic_fetch_add(&ctx->cnt.handler_reads, 1);
		atomic_fetch_add(&ctx->cnt.progress, 1);
		if (msg.event != UFFD_EVENT_PAGEFAULT) {
			atomic_fetch_add(&ctx->cnt.other_events, 1);
			fprintf(stderr, WL_PROG ": note: ignoring userfaultfd event 0x%x\n",
				(unsigned)msg.event);
			continue;
		}
		handle_pagefault(h, &msg, read_ns);
	}
}

/* ------------------------------------------------------------------ */
/* Faulting side                                                       */

static void verify_page(struct wl_ctx *ctx, const char *what, const uint8_t *got,
			const uint8_t *want, size_t idx, unsigned pass)
{
	if (memcmp(got, want, ctx->ps) == 0)
		return;
	for (size_t i = 0; i < ctx->ps; i++) {
		if (got[i] != want[i]) {
			wl_error(ctx, "page %zu (0x%" PRIxPTR ") pass %u: %s content mismatch at byte %zu: "
				 "got 0x%02x, want 0x%02x", idx,
				 (uintptr_t)(ctx->base + idx * ctx->ps), pass, what, i, got[i], want[i]);
			return;
		}
	}
}

static void fault_one(struct wl_fthread *ft, size_t idx, unsigned pass, struct wl_rec *rec,
		      uint64_t *wait)
{
	struct wl_ctx *ctx = ft->ctx;
	struct wl_page *pg = &ctx->pages[idx];
	size_t ps = ctx->ps;
	uint8_t *page = ctx->base + idx * ps;
	size_t off = access_off(idx, ps);
	int plan = wl_plan(ctx, idx);
	bool write = res_writes(plan);
	uint8_t marker;
	struct wl_access acc;
	bool served;

	pat_fill(ft->expect, ps, idx, pass);
	marker = (uint8_t)~ft->expect[off];

	{
		struct rusage ru0, ru1;
		uint64_t cpu0 = 0, cpu1 = 0, rd0 = 0, rd1 = 0;
		bool ss;

		/*
		 * A preemption inside the timed window inflates this thread's own
		 * measurement with time that is not the fault's; flag it so a
		 * checker can tell noise from a wrong latency.
		 */
		uint64_t b0 = now_ns();

		ss = read_schedstat(ft->schedstat_fd, &cpu0, &rd0);
		getrusage(RUSAGE_THREAD, &ru0);
		timed_access(page + off, write, marker, &acc);
		getrusage(RUSAGE_THREAD, &ru1);
		ss = ss && read_schedstat(ft->schedstat_fd, &cpu1, &rd1);
		rec->bracket_ns = now_ns() - b0;
		rec->preempted = ru1.ru_nivcsw != ru0.ru_nivcsw;
		rec->sleeps = (uint32_t)(ru1.ru_nvcsw - ru0.ru_nvcsw);
		rec->run_delay_ns = ss ? rd1 - rd0 : 0;
		rec->cpu_ns = ss ? cpu1 - cpu0 : 0;
	}

	atomic_fetch_add(&ctx->cnt.progress, 1);
	*wait = acc.end_ns - acc.start_ns;
	rec->start_ns = acc.start_ns;
	rec->end_ns = acc.end_ns;
	rec->sigbus = acc.signo == SIGBUS;
	served = atomic_load(&pg->served_pass) == pass + 1;
	rec->res = served ? atomic_load(&pg->final_res) : RES_NONE;
	rec->read_ns = served ? atomic_load(&pg->read_ns) : 0;
	rec->resolve_ns = served ? atomic_load(&pg->resolve_ns) : 0;

	if (!served) {
		wl_error(ctx, "page %zu (0x%" PRIxPTR ") pass %u: access finished without the handler "
			 "seeing a userfault for it", idx, (uintptr_t)page, pass);
	} else {
		atomic_fetch_add(&ctx->cnt.faults, 1);
		if (atomic_load(&pg->ptid) != atomic_load(&ft->tid))
			wl_error(ctx, "page %zu: fault message ptid %d != faulting thread %d", idx,
				 (int)atomic_load(&pg->ptid), (int)atomic_load(&ft->tid));
		if (rec->res != plan &&
		    !(plan == RES_WAKE && rec->res == (ctx->opt.mode == WL_MINOR ? RES_CONTINUE
										: RES_COPY)))
			wl_error(ctx, "page %zu: resolved by %s, planned %s", idx,
				 rec->res >= 0 ? wl_res_name[rec->res] : "none", wl_res_name[plan]);
	}

	if (plan == RES_POISON) {
		if (acc.signo != SIGBUS) {
			wl_error(ctx, "page %zu (0x%" PRIxPTR ") pass %u: poisoned page read without SIGBUS%s",
				 idx, (uintptr_t)page, pass, acc.signo ? " (got another signal)" : "");
			return;
		}
		atomic_fetch_add(&ctx->cnt.sigbus, 1);
		if (acc.sig_addr != (void *)(page + off))
			wl_error(ctx, "page %zu: SIGBUS si_addr %p, accessed %p", idx, acc.sig_addr,
				 (void *)(page + off));
		if (acc.sig_code != BUS_ADRERR && acc.sig_code != BUS_MCEERR_AR)
			wl_error(ctx, "page %zu: SIGBUS si_code %d (want BUS_ADRERR or BUS_MCEERR_AR)",
				 idx, acc.sig_code);
		return;
	}
	if (acc.signo) {
		wl_error(ctx, "page %zu (0x%" PRIxPTR ") pass %u: unexpected signal %d (si_code %d, "
			 "si_addr %p)", idx, (uintptr_t)page, pass, acc.signo, acc.sig_code, acc.sig_addr);
		return;
	}
	if (!served)
		return;

	/* Byte-for-byte check against what the handler placed. */
	if (plan == RES_ZEROPAGE) {
		memset(ft->expect, 0, ps);
		verify_page(ctx, "zeropage", page, ft->expect, idx, pass);
		return;
	}
	ft->expect[off] = marker; /* our own write */
	verify_page(ctx, wl_res_name[rec->res], page, ft->expect, idx, pass);
	if (ctx->alias)
		verify_page(ctx, "alias (page cache)", ctx->alias + idx * ps, ft->expect, idx, pass);
}

static void *fthread_main(void *arg)
{
	struct wl_fthread *ft = arg;
	struct wl_ctx *ctx = ft->ctx;
	unsigned pages = ctx->opt.pages;

	atomic_store(&ft->tid, gettid());
	/* opened before the first fault so the timed loop only preads it */
	ft->schedstat_fd = open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
	for (unsigned pass = 0; pass < ctx->opt.loops; pass++) {
		pthread_barrier_wait(&ctx->bar_start);
		for (unsigned j = 0; j < pages; j++) {
			size_t idx = (size_t)ft->idx * pages + j;
			size_t w = ((size_t)pass * ctx->opt.threads + ft->idx) * pages + j;

			fault_one(ft, idx, pass, &ft->recs[j], &ctx->waits[w]);
		}
		pthread_barrier_wait(&ctx->bar_end);
	}
	if (ft->schedstat_fd >= 0)
		close(ft->schedstat_fd);
	return NULL;
}

static void *race_thread_main(void *arg)
{
	struct wl_ctx *ctx = arg;
	struct wl_race *r = &ctx->race;
	struct wl_access acc;

	atomic_store(&r->tid, gettid());
	timed_access(r->access, false, 0, &acc);
	atomic_store(&r->returned, 1);
	r->start_ns = acc.start_ns;
	r->end_ns = acc.end_ns;
	r->signo = acc.signo;
	r->sig_code = acc.sig_code;
	r->sig_addr = acc.sig_addr;
	/* Returned normally: what is there now (the access mapped it, no fault). */
	r->value = acc.signo ? -1 : *(volatile uint8_t *)r->access;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Watchdog: a stuck waiter must fail the run, not hang it.            */

static void dump_state(struct wl_ctx *ctx)
{
	char path[64], buf[1024];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", ctx->uffd);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0) {
			buf[n] = '\0';
			fprintf(stderr, WL_PROG ": userfaultfd fdinfo:\n%s", buf);
		}
	}
	for (unsigned i = 0; i < ctx->opt.threads; i++) {
		pid_t tid = atomic_load(&ctx->fth[i].tid);

		if (read_wchan(ctx->pid, tid, buf, 128))
			fprintf(stderr, WL_PROG ": thread %u tid %d wchan %s\n", i, (int)tid, buf);
	}
}

static void *watchdog_main(void *arg)
{
	struct wl_ctx *ctx = arg;
	uint64_t limit_s = ctx->opt.stall_timeout_s + 2 * ctx->opt.delay_us / 1000000u;
	uint64_t last = atomic_load(&ctx->cnt.progress), idle = 0;

	pthread_mutex_lock(&ctx->wd_mu);
	while (!ctx->wd_stop) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&ctx->wd_cv, &ctx->wd_mu, &ts);
		if (ctx->wd_stop)
			break;
		uint64_t cur = atomic_load(&ctx->cnt.progress);
		if (!atomic_load(&ctx->faulting) || atomic_load(&ctx->race.holding) || cur != last) {
			last = cur;
			idle = 0;
			continue;
		}
		if (++idle >= limit_s) {
			fprintf(stderr, WL_PROG ": error: no fault progress for %" PRIu64
				" s; a waiter is stuck (see --stall-timeout-s)\n", idle);
			dump_state(ctx);
			_exit(1);
		}
	}
	pthread_mutex_unlock(&ctx->wd_mu);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Setup                                                               */

static void usage(FILE *f)
{
	fprintf(f,
"Usage: " WL_PROG " [OPTIONS]\n"
"\n"
"A userfaultfd workload that measures its own fault waits; the reference\n"
"for faultline's end-to-end tests, its demo and a benchmark driver.\n"
"\n"
"Options:\n"
"  --threads N           faulting threads (default 4; 0 allowed with --race)\n"
"  --pages N             pages per thread (default 64)\n"
"  --mode M              missing: anonymous private memory registered MISSING\n"
"                        (memfd/shmem MAP_SHARED when the resolution needs\n"
"                        page-cache filling: wake, mix);\n"
"                        minor: memfd mapped twice, the registered mapping\n"
"                        MODE_MINOR, the handler fills through the alias\n"
"                        (default missing)\n"
"  --resolve R           copy|zeropage|poison|wake|mix (missing),\n"
"                        continue|poison|wake|mix (minor); default copy for\n"
"                        missing, continue for minor.  mix cycles\n"
"                        copy,zeropage,poison,wake (missing) or\n"
"                        continue,poison,wake (minor) by page index\n"
"  --delay-us N          handler sleeps N us after reading each fault (default 0)\n"
"  --handler-threads N   handler threads (default 1)\n"
"  --hugetlb             back the region with 2 MiB huge pages (hugetlbfs; needs\n"
"                        /proc/sys/vm/nr_hugepages >= threads x pages, and\n"
"                        --resolve copy, continue, poison or wake)\n"
"  --handler-process     serve the faults from a separate forked process that\n"
"                        receives the userfaultfd over a Unix socketpair\n"
"                        (SCM_RIGHTS; Firecracker style: this process keeps\n"
"                        its own fd open); it runs --handler-threads threads.\n"
"                        Forked after the start delay\n"
"  --out FILE            per-fault JSON records (default stdout)\n"
"  --start-delay-ms N    sleep after the READY line, before faulting (default 0);\n"
"                        the faulting threads (and the --handler-process\n"
"                        process) are created only after the delay, so a\n"
"                        tracer attached meanwhile sees them being created\n"
"  --loops N             repeat the pass N times, dropping the pages in\n"
"                        between (default 1)\n"
"  --race K              also run a map-change race on a separate 16-page\n"
"                        region: a thread blocks on it, then the main thread\n"
"                        K = munmap: unmaps it; mremap: moves it elsewhere\n"
"                        (MREMAP_MAYMOVE|MREMAP_FIXED); mmap-fixed: maps fresh\n"
"                        anonymous memory over it (MAP_FIXED); the handler\n"
"                        then COPYs to the old address, holds, and WAKEs\n"
"  --race-hold-ms N      how long the race waiter is kept blocked (default 500)\n"
"  --stall-timeout-s N   fail if no fault progresses for N s (default 60, 0 = off)\n"
"  --quiet               no per-fault records, only the summaries\n"
"  -h, --help            this text\n"
"\n"
"stderr: 'READY pid=P uffd=FD base=0x... len=N' before faulting starts\n"
"(with --race also 'RACE base=0x... len=N'), 'SUMMARY faults=N sigbus=N\n"
"handler_reads=N copy=N zeropage=N continue=N poison=N wake=N errors=N' at\n"
"the end.  Records (one JSON object a line): wl_fault, wl_race, wl_summary.\n"
"Exit status: 0 all faults served and verified, 1 failure, 2 bad usage.\n"
"\n"
"Examples:\n"
"  " WL_PROG " --threads 4 --pages 32 --resolve mix --delay-us 200\n"
"  " WL_PROG " --mode minor --resolve mix --out /tmp/wl.jsonl\n"
"  " WL_PROG " --resolve wake --start-delay-ms 2000   # attach a tracer meanwhile\n"
"  " WL_PROG " --race munmap --threads 0 --race-hold-ms 200\n"
"  " WL_PROG " --race mremap --threads 0 --handler-process\n"
"  " WL_PROG " --threads 1 --pages 2000 --loops 10 --quiet   # benchmark\n");
}

static void bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void bad_usage(const char *fmt, ...)
{
	va_list ap;

	fputs(WL_PROG ": ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\nTry '" WL_PROG " --help'.\n", stderr);
	exit(2);
}

static unsigned long parse_num(const char *opt, const char *s, unsigned long min,
			       unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!s || !*s || *s == '-')
		bad_usage("%s: '%s' is not a non-negative number", opt, s ? s : "");
	v = strtoul(s, &end, 10);
	if (errno || *end)
		bad_usage("%s: '%s' is not a number", opt, s);
	if (v < min || v > max)
		bad_usage("%s: %lu is out of range [%lu, %lu]", opt, v, min, max);
	return v;
}

static void parse_args(int argc, char **argv, struct wl_opts *o)
{
	enum {
		O_THREADS = 256, O_PAGES, O_MODE, O_RESOLVE, O_DELAY, O_HTHREADS, O_OUT,
		O_START_DELAY, O_LOOPS, O_RACE, O_RACE_HOLD, O_STALL, O_QUIET, O_HPROC, O_HUGETLB,
	};
	static const struct option lo[] = {
		{ "threads", required_argument, NULL, O_THREADS },
		{ "pages", required_argument, NULL, O_PAGES },
		{ "mode", required_argument, NULL, O_MODE },
		{ "resolve", required_argument, NULL, O_RESOLVE },
		{ "delay-us", required_argument, NULL, O_DELAY },
		{ "handler-threads", required_argument, NULL, O_HTHREADS },
		{ "handler-process", no_argument, NULL, O_HPROC },
		{ "hugetlb", no_argument, NULL, O_HUGETLB },
		{ "out", required_argument, NULL, O_OUT },
		{ "start-delay-ms", required_argument, NULL, O_START_DELAY },
		{ "loops", required_argument, NULL, O_LOOPS },
		{ "race", required_argument, NULL, O_RACE },
		{ "race-hold-ms", required_argument, NULL, O_RACE_HOLD },
		{ "stall-timeout-s", required_argument, NULL, O_STALL },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*o = (struct wl_opts){
		.threads = 4, .pages = 64, .handler_threads = 1, .loops = 1,
		.mode = WL_MISSING, .resolve = RES_NONE, .race_hold_ms = 500,
		.stall_timeout_s = 60,
	};
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		switch (c) {
		case O_THREADS:
			o->threads = (unsigned)parse_num("--threads", optarg, 0, WL_MAX_THREADS);
			break;
		case O_PAGES:
			o->pages = (unsigned)parse_num("--pages", optarg, 1, 1u << 24);
			break;
		case O_MODE:
			if (!strcmp(optarg, "missing"))
				o->mode = WL_MISSING;
			else if (!strcmp(optarg, "minor"))
				o->mode = WL_MINOR;
			else
				bad_usage("--mode: '%s' is not missing or minor", optarg);
			break;
		case O_RESOLVE:
			o->resolve = RES_NONE;
			for (int i = 0; i < RES_NR; i++)
				if (!strcmp(optarg, wl_res_name[i]))
					o->resolve = i;
			if (!strcmp(optarg, "mix"))
				o->resolve = RES_MIX;
			if (o->resolve == RES_NONE)
				bad_usage("--resolve: '%s' is not copy, zeropage, continue, poison, "
					  "wake or mix", optarg);
			break;
		case O_DELAY:
			o->delay_us = parse_num("--delay-us", optarg, 0, 60000000ul);
			break;
		case O_HTHREADS:
			o->handler_threads = (unsigned)parse_num("--handler-threads", optarg, 1, 256);
			break;
		case O_OUT:
			o->out_path = optarg;
			break;
		case O_START_DELAY:
			o->start_delay_ms = parse_num("--start-delay-ms", optarg, 0, 3600000ul);
			break;
		case O_LOOPS:
			o->loops = (unsigned)parse_num("--loops", optarg, 1, 100000000ul);
			break;
		case O_RACE:
			o->race_kind = -1;
			for (int i = 0; i < RACE_KIND_NR; i++)
				if (!strcmp(optarg, wl_race_kind_name[i]))
					o->race_kind = i;
			if (o->race_kind < 0)
				bad_usage("--race: '%s' is not munmap, mremap or mmap-fixed", optarg);
			o->race = true;
			break;
		case O_HPROC:
			o->handler_process = true;
			break;
		case O_HUGETLB:
			o->hugetlb = true;
			break;
		case O_RACE_HOLD:
			o->race_hold_ms = parse_num("--race-hold-ms", optarg, 0, 3600000ul);
			break;
		case O_STALL:
			o->stall_timeout_s = parse_num("--stall-timeout-s", optarg, 0, 86400ul);
			break;
		case O_QUIET:
			o->quiet = true;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case ':':
			bad_usage("option '%s' needs an argument", argv[optind - 1]);
		default:
			bad_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		bad_usage("unexpected argument '%s'", argv[optind]);
	if (o->resolve == RES_NONE)
		o->resolve = o->mode == WL_MINOR ? RES_CONTINUE : RES_COPY;
	if (o->mode == WL_MISSING && o->resolve == RES_CONTINUE)
		bad_usage("--resolve continue needs --mode minor");
	if (o->mode == WL_MINOR && (o->resolve == RES_COPY || o->resolve == RES_ZEROPAGE))
		bad_usage("--resolve %s needs --mode missing", wl_res_name[o->resolve]);
	if (o->threads == 0 && !o->race)
		bad_usage("--threads 0 only makes sense with --race");
	if (o->hugetlb && (o->resolve == RES_ZEROPAGE || o->resolve == RES_MIX || o->race))
		bad_usage("--hugetlb goes with --resolve copy, continue, poison or wake (hugetlbfs "
			  "has no UFFDIO_ZEROPAGE) and without --race");
	if ((uint64_t)o->threads * o->pages > (1u << 24))
		bad_usage("--threads x --pages is too large (at most %u pages)", 1u << 24);
}

static bool uses_res(const struct wl_ctx *ctx, int res)
{
	if (ctx->opt.resolve == res)
		return true;
	if (ctx->opt.resolve != RES_MIX)
		return false;
	for (size_t i = 0; i < 4; i++)
		if (wl_plan(ctx, i) == res)
			return true;
	return false;
}

static int open_uffd(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 && errno == EPERM)
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	return fd;
}

static void register_range(struct wl_ctx *ctx, void *addr, size_t len, uint64_t mode,
			   uint64_t need, const char *what)
{
	struct uffdio_register reg = { .range = { (uintptr_t)addr, len }, .mode = mode };

	if (ioctl(ctx->uffd, UFFDIO_REGISTER, &reg))
		die("UFFDIO_REGISTER of the %s (%p, %zu bytes, mode %s): %s", what, addr, len,
		    mode == UFFDIO_REGISTER_MODE_MINOR ? "MINOR" : "MISSING", strerror(errno));
	if ((reg.ioctls & need) != need)
		die("UFFDIO_REGISTER of the %s: range supports ioctls 0x%llx, need 0x%llx", what,
		    (unsigned long long)reg.ioctls, (unsigned long long)need);
}

/*
 * Zeroed memory for state the handler shares with the faulting threads:
 * MAP_SHARED with --handler-process (it survives the fork as one copy),
 * plain heap otherwise.
 */
static void *wl_zalloc(const struct wl_opts *o, size_t n, size_t size)
{
	void *p;

	if (!o->handler_process)
		return calloc(n, size);
	if (n && size > SIZE_MAX / n)
		return NULL;
	p = mmap(NULL, n && size ? n * size : 1, PROT_READ | PROT_WRITE,
		 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void setup(struct wl_ctx *ctx)
{
	const struct wl_opts *o = &ctx->opt;
	bool shmem = o->mode == WL_MINOR || uses_res(ctx, RES_WAKE);
	uint64_t need_ioctls = 1ull << _UFFDIO_WAKE;
	struct uffdio_api api;

	ctx->pid = getpid();
	ctx->ps = o->hugetlb ? HUGE_PS : (size_t)sysconf(_SC_PAGESIZE);
	ctx->npages = (size_t)o->threads * o->pages;
	ctx->len = ctx->npages * ctx->ps;
	ctx->memfd = -1;

	ctx->features = UFFD_FEATURE_THREAD_ID;
	if (uses_res(ctx, RES_POISON))
		ctx->features |= UFFD_FEATURE_POISON;
	if (o->hugetlb)
		ctx->features |= o->mode == WL_MINOR ? UFFD_FEATURE_MINOR_HUGETLBFS
						     : UFFD_FEATURE_MISSING_HUGETLBFS;
	else if (shmem)
		ctx->features |= o->mode == WL_MINOR ? UFFD_FEATURE_MINOR_SHMEM
						     : UFFD_FEATURE_MISSING_SHMEM;
	for (int r = 0; r < RES_NR; r++)
		if (uses_res(ctx, r)) {
			static const int bit[RES_NR] = {
				[RES_COPY] = _UFFDIO_COPY, [RES_ZEROPAGE] = _UFFDIO_ZEROPAGE,
				[RES_CONTINUE] = _UFFDIO_CONTINUE, [RES_POISON] = _UFFDIO_POISON,
				[RES_WAKE] = _UFFDIO_WAKE,
			};
			need_ioctls |= 1ull << bit[r];
		}
	if (uses_res(ctx, RES_WAKE))
		need_ioctls |= 1ull << (o->mode == WL_MINOR ? _UFFDIO_CONTINUE : _UFFDIO_COPY);

	ctx->uffd = open_uffd();
	if (ctx->uffd < 0)
		die("userfaultfd(O_CLOEXEC|O_NONBLOCK): %s%s", strerror(errno),
		    errno == EPERM ? " (run as root or set vm.unprivileged_userfaultfd=1)" : "");
	api = (struct uffdio_api){ .api = UFFD_API, .features = ctx->features };
	if (ioctl(ctx->uffd, UFFDIO_API, &api)) {
		int e = errno;
		int probe = open_uffd();
		struct uffdio_api p = { .api = UFFD_API, .features = 0 };

		if (probe >= 0 && ioctl(probe, UFFDIO_API, &p) == 0)
			die("UFFDIO_API with features 0x%llx: %s (kernel offers 0x%llx)",
			    (unsigned long long)ctx->features, strerror(e),
			    (unsigned long long)p.features);
		die("UFFDIO_API with features 0x%llx: %s", (unsigned long long)ctx->features,
		    strerror(e));
	}
	/* --handler-process replaces both when the handler has taken its copy. */
	ctx->huffd = ctx->uffd;
	ctx->handler_pid = ctx->pid;

	if (ctx->npages) {
		if (shmem) {
			ctx->memfd = memfd_create("faultline-uffd-workload",
						  MFD_CLOEXEC | (o->hugetlb ? MFD_HUGETLB : 0));
			if (ctx->memfd < 0)
				die("memfd_create: %s", strerror(errno));
			if (ftruncate(ctx->memfd, (off_t)ctx->len))
				die("ftruncate(memfd, %zu): %s", ctx->len, strerror(errno));
			ctx->alias = mmap(NULL, ctx->len, PROT_READ | PROT_WRITE, MAP_SHARED,
					  ctx->memfd, 0);
			if (ctx->alias == MAP_FAILED)
				die("mmap of the alias mapping (%zu bytes): %s", ctx->len,
				    strerror(errno));
			ctx->base = mmap(NULL, ctx->len, PROT_READ | PROT_WRITE, MAP_SHARED,
					 ctx->memfd, 0);
			if (ctx->base == MAP_FAILED)
				die("mmap of the registered mapping (%zu bytes): %s", ctx->len,
				    strerror(errno));
			if (o->mode == WL_MINOR)
				/* Minor faults need the pages in the page cache. */
				memset(ctx->alias, 0xEE, ctx->len);
		} else {
			ctx->base = mmap(NULL, ctx->len, PROT_READ | PROT_WRITE,
					 MAP_PRIVATE | MAP_ANONYMOUS | (o->hugetlb ? MAP_HUGETLB : 0),
					 -1, 0);
			if (ctx->base == MAP_FAILED)
				die("mmap of %zu anonymous bytes%s: %s", ctx->len,
				    o->hugetlb ? " of 2 MiB pages (is /proc/sys/vm/nr_hugepages big "
						 "enough?)" : "", strerror(errno));
		}
		register_range(ctx, ctx->base, ctx->len,
			       o->mode == WL_MINOR ? UFFDIO_REGISTER_MODE_MINOR
						   : UFFDIO_REGISTER_MODE_MISSING,
			       need_ioctls, "workload region");
	}

	if (o->race) {
		struct wl_race *r = &ctx->race;

		r->len = WL_RACE_PAGES * ctx->ps;
		r->base = mmap(NULL, r->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (r->base == MAP_FAILED)
			die("mmap of the race region: %s", strerror(errno));
		register_range(ctx, r->base, r->len, UFFDIO_REGISTER_MODE_MISSING,
			       (1ull << _UFFDIO_COPY) | (1ull << _UFFDIO_WAKE), "race region");
		r->page = r->base + WL_RACE_PAGE * ctx->ps;
		r->access = r->page + 200;
		r->value = -1;
		if (o->race_kind == RACE_MREMAP) {
			/* The destination: a reservation that mremap(MREMAP_FIXED) replaces. */
			r->moved_to = mmap(NULL, r->len, PROT_NONE,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
			if (r->moved_to == MAP_FAILED)
				die("mmap of the mremap destination: %s", strerror(errno));
		}
		{
			/* Process-shared: with --handler-process the handler is another process. */
			int ps = o->handler_process ? PTHREAD_PROCESS_SHARED : PTHREAD_PROCESS_PRIVATE;
			pthread_mutexattr_t ma;
			pthread_condattr_t ca;

			pthread_mutexattr_init(&ma);
			pthread_mutexattr_setpshared(&ma, ps);
			pthread_condattr_init(&ca);
			pthread_condattr_setpshared(&ca, ps);
			pthread_mutex_init(&r->mu, &ma);
			pthread_cond_init(&r->cv, &ca);
			pthread_mutexattr_destroy(&ma);
			pthread_condattr_destroy(&ca);
		}
	}

	ctx->stop_efd = eventfd(0, EFD_CLOEXEC);
	if (ctx->stop_efd < 0)
		die("eventfd: %s", strerror(errno));

	ctx->pages = wl_zalloc(o, ctx->npages ? ctx->npages : 1, sizeof(*ctx->pages));
	ctx->waits = calloc(ctx->npages ? ctx->npages * o->loops : 1, sizeof(*ctx->waits));
	ctx->fth = wl_zalloc(o, o->threads ? o->threads : 1, sizeof(*ctx->fth));
	ctx->hth = calloc(o->handler_threads, sizeof(*ctx->hth));
	if (!ctx->pages || !ctx->waits || !ctx->fth || !ctx->hth)
		die("out of memory for %zu pages x %u loops", ctx->npages, o->loops);
	for (unsigned i = 0; i < o->threads; i++) {
		ctx->fth[i].ctx = ctx;
		ctx->fth[i].idx = i;
		ctx->fth[i].recs = calloc(o->pages, sizeof(struct wl_rec));
		ctx->fth[i].expect = aligned_alloc(ctx->ps, ctx->ps);
		if (!ctx->fth[i].recs || !ctx->fth[i].expect)
			die("out of memory");
	}
	for (unsigned i = 0; i < o->handler_threads; i++) {
		ctx->hth[i].ctx = ctx;
		ctx->hth[i].idx = i;
		ctx->hth[i].src = aligned_alloc(ctx->ps, ctx->ps);
		if (!ctx->hth[i].src)
			die("out of memory");
	}

	if (o->out_path) {
		ctx->out = fopen(o->out_path, "w");
		if (!ctx->out)
			die("cannot open --out %s: %s", o->out_path, strerror(errno));
	} else {
		ctx->out = stdout;
	}
}

/* Make the next pass fault again on every page. */
static void drop_pages(struct wl_ctx *ctx)
{
	/* Zaps PTEs, including UFFDIO_POISON markers. */
	if (madvise(ctx->base, ctx->len, MADV_DONTNEED))
		die("madvise(MADV_DONTNEED) of the workload region: %s", strerror(errno));
	/* shmem MISSING: also empty the page cache.  MINOR keeps it (needed). */
	if (ctx->memfd >= 0 && ctx->opt.mode == WL_MISSING &&
	    fallocate(ctx->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, (off_t)ctx->len))
		die("fallocate(PUNCH_HOLE) of the memfd: %s", strerror(errno));
}

static void emit_pass(struct wl_ctx *ctx)
{
	if (ctx->opt.quiet)
		return;
	for (unsigned t = 0; t < ctx->opt.threads; t++) {
		struct wl_fthread *ft = &ctx->fth[t];

		for (unsigned j = 0; j < ctx->opt.pages; j++) {
			const struct wl_rec *r = &ft->recs[j];
			size_t idx = (size_t)t * ctx->opt.pages + j;

			fprintf(ctx->out,
				"{\"event\":\"wl_fault\",\"pid\":%d,\"tid\":%d,\"addr\":\"0x%" PRIxPTR
				"\",\"start_ns\":%" PRIu64 ",\"end_ns\":%" PRIu64
				",\"resolved_by\":\"%s\",\"sigbus\":%s,\"preempted\":%s,\"sleeps\":%u"
				",\"run_delay_ns\":%" PRIu64 ",\"cpu_ns\":%" PRIu64 ",\"bracket_ns\":%" PRIu64
				",\"handler_read_ns\":%" PRIu64 ",\"handler_resolve_ns\":%" PRIu64 "}\n",
				(int)ctx->pid, (int)atomic_load(&ft->tid),
				(uintptr_t)(ctx->base + idx * ctx->ps), r->start_ns, r->end_ns,
				r->res >= 0 ? wl_res_name[r->res] : "none",
				r->sigbus ? "true" : "false", r->preempted ? "true" : "false",
				r->sleeps, r->run_delay_ns, r->cpu_ns, r->bracket_ns, r->read_ns,
				r->resolve_ns);
		}
	}
	fflush(ctx->out);
}

static void run_race(struct wl_ctx *ctx)
{
	struct wl_race *r = &ctx->race;
	int kind = ctx->opt.race_kind;
	const char *kname = wl_race_kind_name[kind];
	/* What the woken waiter experiences (see the comment at the top). */
	bool expect_segv = kind != RACE_MMAP_FIXED;
	pthread_t th;
	int e;

	e = pthread_create(&th, NULL, race_thread_main, ctx);
	if (e)
		die("pthread_create (race thread): %s", strerror(e));

	pthread_mutex_lock(&r->mu);
	while (r->state != RACE_FAULT_READ)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);

	/* Waiter blocked, message read: pull the mapping from under it. */
	switch (kind) {
	case RACE_MUNMAP:
		if (munmap(r->base, r->len))
			r->mapchange_errno = errno;
		break;
	case RACE_MREMAP: {
		void *p = mremap(r->base, r->len, r->len, MREMAP_MAYMOVE | MREMAP_FIXED,
				 r->moved_to);

		if (p == MAP_FAILED)
			r->mapchange_errno = errno;
		else if (p != r->moved_to)
			wl_error(ctx, "race: mremap moved the region to %p, asked for %p", p,
				 (void *)r->moved_to);
		break;
	}
	case RACE_MMAP_FIXED:
		if (mmap(r->base, r->len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != r->base)
			r->mapchange_errno = errno;
		break;
	}
	if (r->mapchange_errno)
		wl_error(ctx, "race: %s of %p (%zu bytes): %s", kname, (void *)r->base, r->len,
			 strerror(r->mapchange_errno));
	r->unmap_ns = now_ns();
	r->blocked_after_unmap = !atomic_load(&r->returned);

	pthread_mutex_lock(&r->mu);
	r->state = RACE_UNMAPPED;
	pthread_cond_broadcast(&r->cv);
	pthread_mutex_unlock(&r->mu);

	pthread_join(th, NULL);
	pthread_mutex_lock(&r->mu);
	while (r->state != RACE_WOKEN)
		pthread_cond_wait(&r->cv, &r->mu);
	pthread_mutex_unlock(&r->mu);

	atomic_fetch_add(&ctx->cnt.faults, 1);
	if (r->ptid != atomic_load(&r->tid))
		wl_error(ctx, "race: fault message ptid %d != race thread %d", (int)r->ptid,
			 (int)atomic_load(&r->tid));
	if (r->copy_errno != ENOENT)
		wl_error(ctx, "race: UFFDIO_COPY after %s gave %s, expected ENOENT", kname,
			 errname(r->copy_errno));
	if (!r->blocked_after_unmap || !r->blocked_in_hold)
		wl_error(ctx, "race: the waiter did not stay blocked after %s (wchan '%s')", kname,
			 r->wchan);
	if (r->wake_errno)
		wl_error(ctx, "race: UFFDIO_WAKE of the old page after %s: %s", kname,
			 strerror(r->wake_errno));
	if (r->signo == SIGSEGV)
		atomic_fetch_add(&ctx->cnt.sigsegv, 1);
	if (expect_segv && r->signo == SIGSEGV) {
		if (r->sig_addr != (void *)r->access)
			wl_error(ctx, "race: SIGSEGV si_addr %p, accessed %p", r->sig_addr,
				 (void *)r->access);
		if (r->sig_code != SEGV_MAPERR)
			wl_error(ctx, "race: SIGSEGV si_code %d, expected SEGV_MAPERR", r->sig_code);
	} else if (expect_segv) {
		wl_error(ctx, "race: the waiter got %s after the wake (%s), expected SIGSEGV",
			 r->signo ? strsignal(r->signo) : "no signal", kname);
	} else if (r->signo) {
		wl_error(ctx, "race: the waiter got %s after the wake (%s), expected to continue "
			 "on a fresh zero page", strsignal(r->signo), kname);
	} else if (r->value != 0) {
		wl_error(ctx, "race: the waiter read 0x%02x after the wake (%s), expected 0 "
			 "(fresh anonymous memory)", r->value, kname);
	}
	if (r->end_ns < r->wake_ns)
		wl_error(ctx, "race: the waiter returned (%" PRIu64 ") before the wake (%" PRIu64 ")",
			 r->end_ns, r->wake_ns);

	if (!ctx->opt.quiet) {
		char moved[32] = "null", value[16] = "null";

		/* moved_to: the touched page's new address (mremap); value: what the
		 * waiter read when it returned without a signal. */
		if (kind == RACE_MREMAP)
			snprintf(moved, sizeof(moved), "\"0x%" PRIxPTR "\"",
				 (uintptr_t)(r->moved_to + (r->page - r->base)));
		if (r->value >= 0)
			snprintf(value, sizeof(value), "%d", r->value);
		fprintf(ctx->out,
			"{\"event\":\"wl_race\",\"tid\":%d,\"addr\":\"0x%" PRIxPTR
			"\",\"copy_errno\":\"%s\",\"unmap_ns\":%" PRIu64 ",\"wake_ns\":%" PRIu64
			",\"sigsegv\":%s,\"pid\":%d,\"start_ns\":%" PRIu64 ",\"read_ns\":%" PRIu64
			",\"end_ns\":%" PRIu64 ",\"blocked_after_unmap\":%s,\"wchan\":\"%s\""
			",\"si_code\":\"%s\",\"kind\":\"%s\",\"moved_to\":%s,\"value\":%s"
			",\"signal\":\"%s\"}\n",
			(int)atomic_load(&r->tid), (uintptr_t)r->page, errname(r->copy_errno),
			r->unmap_ns, r->wake_ns, r->signo == SIGSEGV ? "true" : "false", (int)ctx->pid,
			r->start_ns, r->read_ns, r->end_ns,
			r->blocked_after_unmap && r->blocked_in_hold ? "true" : "false", r->wchan,
			r->signo != SIGSEGV ? "none"
			: r->sig_code == SEGV_MAPERR ? "SEGV_MAPERR"
			: r->sig_code == SEGV_ACCERR ? "SEGV_ACCERR" : "other",
			kname, moved, value,
			r->signo == SIGSEGV ? "SIGSEGV" : r->signo == SIGBUS ? "SIGBUS" : "none");
		fflush(ctx->out);
	}
}

/*
 * Faulting starts only once every handler thread is in its poll loop: a
 * first fault that arrives while a handler thread is still starting up
 * waits (measured: 1-3 ms) for that, not for the handler's work.
 */
static void wait_handlers_ready(struct wl_ctx *ctx)
{
	while (atomic_load(&ctx->handlers_ready) < ctx->opt.handler_threads)
		sleep_ns(100000);
	sleep_ns(1000000); /* and let them block in poll() */
}

/* ------------------------------------------------------------------ */
/* --handler-process: the handler in its own process (Firecracker style) */

static void send_fd(int sock, int fd)
{
	char byte = 'U';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
			     .msg_controllen = sizeof(cm.buf) };
	struct cmsghdr *c;

	memset(&cm, 0, sizeof(cm));
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) != 1)
		die("sendmsg(SCM_RIGHTS) of the userfaultfd to the handler process: %s",
		    strerror(errno));
}

/* Returns the received fd, or -1 with a message on stderr. */
static int recv_fd(int sock)
{
	char byte;
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} cm;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
			     .msg_controllen = sizeof(cm.buf) };
	struct cmsghdr *c;
	ssize_t n;
	int fd;

	do
		n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	c = n == 1 ? CMSG_FIRSTHDR(&mh) : NULL;
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS ||
	    c->cmsg_len != CMSG_LEN(sizeof(int))) {
		fprintf(stderr, WL_PROG ": error: handler process: no userfaultfd received (%s)\n",
			n < 0 ? strerror(errno) : "no SCM_RIGHTS message");
		return -1;
	}
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/*
 * The handler process: starts without the userfaultfd (it closes the copy
 * fork() gave it), receives it over the socket, serves faults with
 * --handler-threads threads until stop_efd fires.  All state it shares with
 * the faulting process is in MAP_SHARED memory (wl_zalloc); the alias mapping
 * of the memfd is MAP_SHARED too, so page-cache fills work as with threads.
 * UFFDIO_COPY copies from this process's memory into the faulting process's
 * mm (the uffd's); (UN)REGISTER would act on that mm as well.
 */
static void __attribute__((noreturn)) handler_process_main(struct wl_ctx *ctx, int sock)
{
	int fd, e;

	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != ctx->pid)
		_exit(1);
	close(ctx->uffd);
	fd = recv_fd(sock);
	if (fd < 0)
		_exit(1);
	/*
	 * A number of its own, so that a tracer reporting the faulting
	 * process's fd number for the handler's ioctls would be caught.
	 */
	ctx->huffd = fcntl(fd, F_DUPFD_CLOEXEC, WL_HANDLER_FD_MIN);
	if (ctx->huffd < 0) {
		fprintf(stderr, WL_PROG ": error: handler process: F_DUPFD: %s\n", strerror(errno));
		_exit(1);
	}
	close(fd);
	ctx->handler_pid = getpid();
	for (unsigned i = 0; i < ctx->opt.handler_threads; i++)
		if ((e = pthread_create(&ctx->hth[i].th, NULL, hthread_main, &ctx->hth[i]))) {
			fprintf(stderr, WL_PROG ": error: handler process: pthread_create: %s\n",
				strerror(e));
			_exit(1);
		}
	wait_handlers_ready(ctx);
	/* Ready: the parent starts faulting only now. */
	if (write(sock, "R", 1) != 1)
		_exit(1);
	close(sock);
	for (unsigned i = 0; i < ctx->opt.handler_threads; i++)
		pthread_join(ctx->hth[i].th, NULL);
	_exit(0);
}

/* Fork the handler process and hand it the userfaultfd; keep our own open. */
static void start_handler_process(struct wl_ctx *ctx)
{
	int sv[2];
	pid_t pid;
	char ack;
	ssize_t n;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
		die("socketpair(AF_UNIX): %s", strerror(errno));
	fflush(stdout);
	fflush(stderr);
	if (ctx->out)
		fflush(ctx->out);
	pid = fork();
	if (pid < 0)
		die("fork (handler process): %s", strerror(errno));
	if (pid == 0) {
		close(sv[0]);
		handler_process_main(ctx, sv[1]);
	}
	close(sv[1]);
	send_fd(sv[0], ctx->uffd);
	do
		n = read(sv[0], &ack, 1);
	while (n < 0 && errno == EINTR);
	if (n != 1) {
		int st = 0;

		waitpid(pid, &st, 0);
		die("the handler process %d did not start (status 0x%x)", (int)pid, st);
	}
	close(sv[0]);
	/* Written by the child too; set here so it holds even before any fault. */
	ctx->handler_pid = pid;
}

static void stop_handler_process(struct wl_ctx *ctx)
{
	int st;

	if (waitpid(ctx->handler_pid, &st, 0) != ctx->handler_pid)
		wl_error(ctx, "waitpid(handler process %d): %s", (int)ctx->handler_pid,
			 strerror(errno));
	else if (!WIFEXITED(st) || WEXITSTATUS(st))
		wl_error(ctx, "the handler process %d %s %d", (int)ctx->handler_pid,
			 WIFEXITED(st) ? "exited with" : "was killed by signal",
			 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array. */
static uint64_t pct(const uint64_t *v, size_t n, unsigned p)
{
	size_t rank;

	if (!n)
		return 0;
	rank = (n * p + 99) / 100;
	return v[rank ? rank - 1 : 0];
}

int main(int argc, char **argv)
{
	struct wl_opts opt;
	struct wl_ctx *ctx;
	size_t nwaits;
	uint64_t sum = 0;
	int e;

	parse_args(argc, argv, &opt);
	ctx = wl_zalloc(&opt, 1, sizeof(*ctx));
	if (!ctx)
		die("out of memory");
	ctx->opt = opt;
	install_traps();
	setup(ctx);

	if (ctx->opt.threads) {
		if ((e = pthread_barrier_init(&ctx->bar_start, NULL, ctx->opt.threads + 1)) ||
		    (e = pthread_barrier_init(&ctx->bar_end, NULL, ctx->opt.threads + 1)))
			die("pthread_barrier_init: %s", strerror(e));
	}
	if (!ctx->opt.handler_process)
		for (unsigned i = 0; i < ctx->opt.handler_threads; i++)
			if ((e = pthread_create(&ctx->hth[i].th, NULL, hthread_main, &ctx->hth[i])))
				die("pthread_create (handler %u): %s", i, strerror(e));

	fprintf(stderr, "READY pid=%d uffd=%d base=0x%" PRIxPTR " len=%zu\n", (int)ctx->pid,
		ctx->uffd, (uintptr_t)ctx->base, ctx->len);
	if (ctx->opt.race)
		fprintf(stderr, "RACE base=0x%" PRIxPTR " len=%zu\n", (uintptr_t)ctx->race.base,
			ctx->race.len);
	fflush(stderr);
	if (ctx->opt.start_delay_ms)
		sleep_ns(ctx->opt.start_delay_ms * 1000000ull);

	/*
	 * Only now (a tracer may have attached during the delay): fork the
	 * handler process (before any other thread exists here, so the fork is
	 * clean), then create the faulting threads.
	 */
	if (ctx->opt.handler_process)
		start_handler_process(ctx);
	else
		wait_handlers_ready(ctx);
	{
		uint64_t slack;

		ctx->steal_ok = read_steal(&ctx->steal0_ns, &slack);
	}
	for (unsigned i = 0; i < ctx->opt.threads; i++)
		if ((e = pthread_create(&ctx->fth[i].th, NULL, fthread_main, &ctx->fth[i])))
			die("pthread_create (faulting thread %u): %s", i, strerror(e));

	pthread_mutex_init(&ctx->wd_mu, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&ctx->wd_cv, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (ctx->opt.stall_timeout_s &&
	    (e = pthread_create(&ctx->wd_th, NULL, watchdog_main, ctx)))
		die("pthread_create (watchdog): %s", strerror(e));

	for (unsigned pass = 0; ctx->opt.threads && pass < ctx->opt.loops; pass++) {
		if (pass)
			drop_pages(ctx);
		atomic_store(&ctx->pass, pass);
		atomic_store(&ctx->faulting, 1);
		pthread_barrier_wait(&ctx->bar_start);
		pthread_barrier_wait(&ctx->bar_end);
		atomic_store(&ctx->faulting, 0);
		emit_pass(ctx);
	}
	for (unsigned i = 0; i < ctx->opt.threads; i++)
		pthread_join(ctx->fth[i].th, NULL);
	/* a CPU accounts its steal at its next tick: let the busy ones tick */
	sleep_ns(20 * 1000000ull);
	char steal[64] = "null";
	uint64_t steal1, steal_slack;

	if (ctx->steal_ok && read_steal(&steal1, &steal_slack))
		snprintf(steal, sizeof(steal), "%" PRIu64 ",\"steal_slack_ns\":%" PRIu64,
			 steal1 - ctx->steal0_ns, steal_slack);

	if (ctx->opt.race) {
		atomic_store(&ctx->faulting, 1);
		run_race(ctx);
		atomic_store(&ctx->faulting, 0);
	}

	/* Stop the handlers and the watchdog. */
	if (eventfd_write(ctx->stop_efd, 1))
		die("eventfd_write: %s", strerror(errno));
	if (ctx->opt.handler_process)
		stop_handler_process(ctx);
	else
		for (unsigned i = 0; i < ctx->opt.handler_threads; i++)
			pthread_join(ctx->hth[i].th, NULL);
	if (ctx->opt.stall_timeout_s) {
		pthread_mutex_lock(&ctx->wd_mu);
		ctx->wd_stop = true;
		pthread_cond_broadcast(&ctx->wd_cv);
		pthread_mutex_unlock(&ctx->wd_mu);
		pthread_join(ctx->wd_th, NULL);
	}

	/* Summary. */
	nwaits = ctx->npages * ctx->opt.loops;
	qsort(ctx->waits, nwaits, sizeof(*ctx->waits), cmp_u64);
	for (size_t i = 0; i < nwaits; i++)
		sum += ctx->waits[i];

	uint64_t expect_faults = (uint64_t)nwaits + (ctx->opt.race ? 1 : 0);
	uint64_t faults = atomic_load(&ctx->cnt.faults);
	if (faults != expect_faults)
		wl_error(ctx, "%" PRIu64 " of %" PRIu64 " accesses were served by the handler", faults,
			 expect_faults);

	struct wl_counters *c = &ctx->cnt;
	fprintf(ctx->out,
		"{\"event\":\"wl_summary\",\"pid\":%d,\"faults\":%" PRIu64 ",\"sigbus\":%" PRIu64
		",\"handler_reads\":%" PRIu64 ",\"copy\":%" PRIu64 ",\"zeropage\":%" PRIu64
		",\"continue\":%" PRIu64 ",\"poison\":%" PRIu64 ",\"wake\":%" PRIu64
		",\"errors\":%" PRIu64 ",\"median_ns\":%" PRIu64 ",\"p99_ns\":%" PRIu64
		",\"min_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64 ",\"mean_ns\":%" PRIu64
		",\"waits\":%zu,\"refaults\":%" PRIu64 ",\"sigsegv\":%" PRIu64
		",\"eexist\":%" PRIu64 ",\"eagain\":%" PRIu64 ",\"other_events\":%" PRIu64
		",\"mode\":\"%s\",\"resolve\":\"%s\",\"backing\":\"%s\",\"threads\":%u"
		",\"pages\":%u,\"loops\":%u,\"handler_threads\":%u,\"delay_us\":%lu"
		",\"page_size\":%zu,\"uffd_features\":\"0x%" PRIx64 "\",\"race\":%s"
		",\"handler_pid\":%d,\"handler_uffd\":%d,\"steal_ns\":%s}\n",
		(int)ctx->pid, atomic_load(&c->faults), atomic_load(&c->sigbus),
		atomic_load(&c->handler_reads), atomic_load(&c->res[RES_COPY]),
		atomic_load(&c->res[RES_ZEROPAGE]), atomic_load(&c->res[RES_CONTINUE]),
		atomic_load(&c->res[RES_POISON]), atomic_load(&c->res[RES_WAKE]),
		atomic_load(&c->errors), pct(ctx->waits, nwaits, 50), pct(ctx->waits, nwaits, 99),
		nwaits ? ctx->waits[0] : 0, nwaits ? ctx->waits[nwaits - 1] : 0,
		nwaits ? sum / nwaits : 0, nwaits, atomic_load(&c->refaults),
		atomic_load(&c->sigsegv), atomic_load(&c->eexist), atomic_load(&c->eagain),
		atomic_load(&c->other_events), ctx->opt.mode == WL_MINOR ? "minor" : "missing",
		ctx->opt.resolve == RES_MIX ? "mix" : wl_res_name[ctx->opt.resolve],
		ctx->memfd >= 0 ? "shmem" : "anon", ctx->opt.threads, ctx->opt.pages,
		ctx->opt.loops, ctx->opt.handler_threads, ctx->opt.delay_us, ctx->ps,
		ctx->features, ctx->opt.race ? "true" : "false", (int)ctx->handler_pid,
		ctx->huffd, steal);
	if (fflush(ctx->out) || ferror(ctx->out))
		wl_error(ctx, "writing the records: %s", strerror(errno));

	fprintf(stderr,
		"SUMMARY faults=%" PRIu64 " sigbus=%" PRIu64 " handler_reads=%" PRIu64
		" copy=%" PRIu64 " zeropage=%" PRIu64 " continue=%" PRIu64 " poison=%" PRIu64
		" wake=%" PRIu64 " errors=%" PRIu64 "\n",
		atomic_load(&c->faults), atomic_load(&c->sigbus), atomic_load(&c->handler_reads),
		atomic_load(&c->res[RES_COPY]), atomic_load(&c->res[RES_ZEROPAGE]),
		atomic_load(&c->res[RES_CONTINUE]), atomic_load(&c->res[RES_POISON]),
		atomic_load(&c->res[RES_WAKE]), atomic_load(&c->errors));
	fflush(stderr);
	if (ctx->out != stdout)
		fclose(ctx->out);
	return atomic_load(&c->errors) ? 1 : 0;
}
