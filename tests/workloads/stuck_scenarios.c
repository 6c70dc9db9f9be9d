// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * stuck-scenarios — builds one real "thread stuck in a userfault" state and
 * holds it, for `faultline stuck` to diagnose.
 *
 * Every scenario registers one 4-page anonymous region (MISSING mode) on a
 * userfaultfd and lets a "waiter" thread read page 1.  What happens next is
 * the scenario:
 *
 *   not_read            a separate handler process holds the uffd (inherited
 *                       by fork, Firecracker style: this process keeps its
 *                       copy too; with --handoff it closes it, CRIU style)
 *                       and never reads it: the fault message stays queued
 *                       (fdinfo pending 1, total 1).
 *   not_resolved        a handler thread reads the message, then goes back to
 *                       polling the uffd without ever resolving the fault
 *                       (pending 0, total 1, a live reader).
 *   munmap_failed_copy  a handler thread reads the message; the main thread
 *                       munmaps the region under the waiter; the handler's
 *                       UFFDIO_COPY then fails with ENOENT and no UFFDIO_WAKE
 *                       follows (the QEMU resize race).  The waiter stays
 *                       blocked, no registered range is left.
 *   range_unmapped      the same munmap under a waiter whose message was read,
 *                       but the handler tries no placement at all: the range
 *                       is simply gone (no COPY, no WAKE).
 *   handler_gone        a handler process (inherited fd) serves a first fault
 *                       on page 0, then is SIGKILLed and reaped; the waiter
 *                       then faults on page 1 while only this process holds
 *                       the uffd and nobody reads it.
 *   handler_stalled_unread  a handler thread named like QEMU's postcopy fault
 *                       thread ("postcopy/fault") serves a first fault on page
 *                       0, then blocks on a semaphore (a paused postcopy
 *                       waiting for recovery) before it reads the waiter's
 *                       message for page 1: alive, not reading (pending 1).
 *   handler_stalled_read  the same, but it reads page 1's message before it
 *                       blocks (pending 0, total 1).
 *   healthy             a handler thread resolves every fault at once while
 *                       the waiter faults page 1 again and again
 *                       (MADV_DONTNEED in between): nothing is stuck.
 *
 * Each scenario checks its own state before announcing it (the waiter's
 * wchan or kernel stack shows handle_userfault; fdinfo pending/total as
 * expected; COPY really failed with ENOENT) and then prints on stderr
 *
 *   READY pid=P waiter_tid=T addr=0xA uffd_fd=F handler_pid=H killed_handler_pid=K
 *         blocked_since_ns=N pending=N total=N handler_tid=T read_ns=N
 *         unmap_ns=N copy_enter_ns=N copy_exit_ns=N copy_errno=E
 *
 * (on one line; handler_pid is 0 when the handler is a thread of P or gone,
 * killed_handler_pid the handler process handler_gone killed; blocked_since_ns
 * is the waiter's CLOCK_MONOTONIC right before its access, 0 for healthy;
 * pending/total are the uffd's fdinfo counters).  addr is the page the
 * waiter faulted on (for munmap_failed_copy, where it was).  The rest is what
 * a tracer with history should have seen, 0 where it did not happen:
 * handler_tid the handler thread, read_ns when its read() of the fault
 * message returned, unmap_ns when munmap returned, copy_enter_ns and
 * copy_exit_ns bracket the failed UFFDIO_COPY, copy_errno its errno.
 *
 * --start-delay-ms N waits N ms after creating the uffd before building the
 * state, so a tracer that finds uffd holders by scanning /proc is attached
 * before the first fault.
 * It holds the state until SIGTERM/SIGINT or --hold-ms, then releases every
 * waiter (ZEROPAGE, or WAKE for the unmapped range, whose retried access
 * takes the SIGSEGV this program traps) and exits 0: nothing is left hanging.
 *
 * Build: make build/stuck-scenarios
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/select.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "uffd_compat.h"

#define SC_PROG "stuck-scenarios"
#define SC_PAGES 4u
#define SC_WAIT_PAGE 1u		/* the page the waiter gets stuck on */
#define SC_SETTLE_NS 5000000000ull	/* how long a state may take to appear */

enum sc_kind {
	SC_NOT_READ, SC_NOT_RESOLVED, SC_MUNMAP, SC_UNMAPPED, SC_HANDLER_GONE, SC_STALLED_UNREAD,
	SC_STALLED_READ, SC_HEALTHY, SC_NR
};

/* How the handler thread waits for a fault message (what faultline must recognise). */
enum sc_wait { W_POLL, W_PPOLL, W_SELECT, W_EPOLL, W_READ, W_NR };

static const char *const sc_wait_names[W_NR] = {
	[W_POLL] = "poll", [W_PPOLL] = "ppoll", [W_SELECT] = "select", [W_EPOLL] = "epoll",
	[W_READ] = "read",
};

static const char *const sc_names[SC_NR] = {
	[SC_NOT_READ] = "not_read", [SC_NOT_RESOLVED] = "not_resolved",
	[SC_MUNMAP] = "munmap_failed_copy", [SC_UNMAPPED] = "range_unmapped",
	[SC_HANDLER_GONE] = "handler_gone",
	[SC_STALLED_UNREAD] = "handler_stalled_unread", [SC_STALLED_READ] = "handler_stalled_read",
	[SC_HEALTHY] = "healthy",
};

/* Everything the scenario's threads share. */
struct sc_ctx {
	enum sc_kind kind;
	long hold_ms;		/* < 0: until a signal */
	size_t ps;
	int uffd;
	int stop_fd;		/* eventfd: handler thread, stop */
	enum sc_wait wait;	/* --handler-wait */
	bool handoff;		/* --handoff: not_read's process keeps no uffd of its own */
	int epfd;		/* W_EPOLL: uffd and stop_fd */
	_Atomic int handler_done;	/* W_READ: the handler thread left its read() */
	uint8_t *base;
	pid_t pid, handler_pid;
	pid_t killed_handler_pid;	/* handler_gone: the handler process that was killed */
	_Atomic pid_t waiter_tid;
	_Atomic uint64_t blocked_since_ns;
	_Atomic int msgs_read;	/* fault messages the handler thread read */
	_Atomic int stop;	/* healthy: the waiter's loop ends */
	_Atomic long faults;	/* healthy: accesses completed */
	_Atomic int unmapped;	/* munmap_failed_copy: the region is gone, COPY now */
	_Atomic int copy_errno;	/* munmap_failed_copy: the failed COPY's errno, -1 before */
	/* what a tracer should have recorded (CLOCK_MONOTONIC ns, 0: did not happen) */
	_Atomic pid_t handler_tid;
	_Atomic uint64_t read_ns, unmap_ns, copy_enter_ns, copy_exit_ns;
	_Atomic int waiter_signal;
	_Atomic int paused;	/* handler_stalled_*: the handler thread blocks on resume */
	sem_t resume;
	pthread_t waiter, handler;
	bool have_handler_thread;
};

/* The waiter's SIGSEGV trap (the unmapped range's access after the WAKE). */
struct sc_trap {
	sigjmp_buf jmp;
	volatile sig_atomic_t armed;
};
static __thread struct sc_trap sc_tls_trap;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

static void die(const char *fmt, ...)
{
	va_list ap;

	fputs(SC_PROG ": error: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static void on_segv(int sig, siginfo_t *si, void *uc)
{
	(void)si;
	(void)uc;
	if (!sc_tls_trap.armed) {
		/* not the waiter: a real crash, let it happen */
		signal(sig, SIG_DFL);
		raise(sig);
		return;
	}
	sc_tls_trap.armed = 0;
	siglongjmp(sc_tls_trap.jmp, sig);
}

static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = 0;
	return 0;
}

/* Is the thread asleep in handle_userfault (wchan, or its kernel stack)? */
static bool in_userfault(pid_t pid, pid_t tid)
{
	char path[96], buf[4096];

	snprintf(path, sizeof(path), "/proc/%d/task/%d/wchan", pid, tid);
	if (!read_small(path, buf, sizeof(buf)) && !strcmp(buf, "handle_userfault"))
		return true;
	/* wchan reads 0 while EEVDF's delayed dequeue keeps the sleeper on the runqueue */
	snprintf(path, sizeof(path), "/proc/%d/task/%d/stack", pid, tid);
	return !read_small(path, buf, sizeof(buf)) && strstr(buf, "handle_userfault+");
}

/* fdinfo pending/total of our uffd (the handler's copy after a --handoff). */
static void uffd_counts(struct sc_ctx *c, long *pending, long *total)
{
	char path[64], buf[1024], *p;

	*pending = *total = -1;
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", c->handoff ? c->handler_pid : c->pid,
		 c->uffd);
	if (read_small(path, buf, sizeof(buf)))
		return;
	if ((p = strstr(buf, "pending:")))
		*pending = strtol(p + 8, NULL, 10);
	if ((p = strstr(buf, "total:")))
		*total = strtol(p + 6, NULL, 10);
}

/* Wait until the waiter is blocked and fdinfo says pending/total (or time out and die). */
static void settle(struct sc_ctx *c, long want_pending, long want_total)
{
	uint64_t deadline = now_ns() + SC_SETTLE_NS;
	long pending = -1, total = -1;
	bool blocked = false;

	for (;;) {
		pid_t tid = atomic_load(&c->waiter_tid);

		blocked = tid && in_userfault(c->pid, tid);
		uffd_counts(c, &pending, &total);
		if (blocked && pending == want_pending && total == want_total)
			return;
		if (now_ns() > deadline)
			die("%s: state did not settle in 5 s: waiter %sin handle_userfault, fdinfo "
			    "pending %ld total %ld (want %ld/%ld)", sc_names[c->kind],
			    blocked ? "" : "not ", pending, total, want_pending, want_total);
		sleep_ms(5);
	}
}

static void uffd_ioctl(struct sc_ctx *c, unsigned long op, void *arg, const char *what)
{
	if (ioctl(c->uffd, op, arg))
		die("%s: %s", what, strerror(errno));
}

static void zeropage(struct sc_ctx *c, unsigned page)
{
	struct uffdio_zeropage z = {
		.range = { .start = (uintptr_t)c->base + page * c->ps, .len = c->ps },
	};

	if (ioctl(c->uffd, UFFDIO_ZEROPAGE, &z) && errno != EEXIST)
		die("UFFDIO_ZEROPAGE of page %u: %s", page, strerror(errno));
}

static void *waiter_main(void *arg)
{
	struct sc_ctx *c = arg;
	volatile uint8_t *p = c->base + SC_WAIT_PAGE * c->ps + 100;

	atomic_store(&c->waiter_tid, (pid_t)syscall(SYS_gettid));
	if (c->kind == SC_HEALTHY) {
		while (!atomic_load(&c->stop)) {
			(void)*p;
			atomic_fetch_add(&c->faults, 1);
			/* drop the page so the next access faults again */
			if (madvise(c->base, SC_PAGES * c->ps, MADV_DONTNEED))
				die("madvise(MADV_DONTNEED): %s", strerror(errno));
			usleep(1000);
		}
		return NULL;
	}
	if (c->kind == SC_HANDLER_GONE || c->kind == SC_STALLED_UNREAD ||
	    c->kind == SC_STALLED_READ) {
		/* the first fault proves the handler works */
		(void)*(volatile uint8_t *)c->base;
		while (!atomic_load(&c->stop))	/* main kills the handler meanwhile */
			usleep(1000);
	}
	if (sigsetjmp(sc_tls_trap.jmp, 1)) {
		atomic_store(&c->waiter_signal, SIGSEGV);
		return NULL;
	}
	sc_tls_trap.armed = 1;
	atomic_store(&c->blocked_since_ns, now_ns());
	(void)*p;
	sc_tls_trap.armed = 0;
	return NULL;
}

/* Waits until the uffd is readable (true) or the stop eventfd fires (false). */
static bool wait_readable(struct sc_ctx *c)
{
	for (;;) {
		struct pollfd pfd[2] = { { c->uffd, POLLIN, 0 }, { c->stop_fd, POLLIN, 0 } };
		struct epoll_event evs[2];
		fd_set rd;
		int n;

		switch (c->wait) {
		case W_POLL:
			n = poll(pfd, 2, -1);
			break;
		case W_PPOLL:
			n = ppoll(pfd, 2, NULL, NULL);
			break;
		case W_SELECT:
			FD_ZERO(&rd);
			FD_SET(c->uffd, &rd);
			FD_SET(c->stop_fd, &rd);
			n = select((c->uffd > c->stop_fd ? c->uffd : c->stop_fd) + 1, &rd, NULL, NULL,
				   NULL);
			pfd[0].revents = n > 0 && FD_ISSET(c->uffd, &rd);
			pfd[1].revents = n > 0 && FD_ISSET(c->stop_fd, &rd);
			break;
		case W_EPOLL:
			n = epoll_wait(c->epfd, evs, 2, -1);
			for (int i = 0; i < n; i++)
				pfd[evs[i].data.fd == c->stop_fd].revents = 1;
			break;
		default:
			die("wait mode %d", c->wait);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("%s on the uffd: %s", sc_wait_names[c->wait], strerror(errno));
		}
		if (pfd[1].revents)
			return false;
		if (pfd[0].revents)
			return true;
	}
}

/* Reads one fault message, or returns false when told to stop. */
static bool read_fault(struct sc_ctx *c, struct uffd_msg *msg)
{
	for (;;) {
		if (c->wait != W_READ && !wait_readable(c))
			return false;
		/* W_READ: a blocking read(); release() interrupts it with SIGUSR1 */
		if (read(c->uffd, msg, sizeof(*msg)) != sizeof(*msg)) {
			if (c->wait == W_READ && atomic_load(&c->stop))
				return false;
			if (errno == EAGAIN || errno == EINTR)
				continue;
			die("read of the uffd: %s", strerror(errno));
		}
		if (msg->event != UFFD_EVENT_PAGEFAULT)
			die("unexpected uffd event %u", msg->event);
		if (!atomic_load(&c->read_ns))
			atomic_store(&c->read_ns, now_ns());
		atomic_fetch_add(&c->msgs_read, 1);
		return true;
	}
}

static void on_usr1(int sig)
{
	(void)sig;	/* only there to interrupt a blocking read() */
}

static void *handler_main(void *arg)
{
	struct sc_ctx *c = arg;
	struct uffd_msg msg;
	uint8_t *src = aligned_alloc(c->ps, c->ps);

	if (!src)
		die("out of memory");
	memset(src, 0x5a, c->ps);
	atomic_store(&c->handler_tid, (pid_t)syscall(SYS_gettid));
	if (c->wait == W_READ) {
		sigset_t usr1;

		sigemptyset(&usr1);
		sigaddset(&usr1, SIGUSR1);
		pthread_sigmask(SIG_UNBLOCK, &usr1, NULL);
	}
	while (read_fault(c, &msg)) {
		uint64_t addr = msg.arg.pagefault.address & ~((uint64_t)c->ps - 1);

		if ((pid_t)msg.arg.pagefault.feat.ptid != atomic_load(&c->waiter_tid))
			die("fault from tid %u, not the waiter", msg.arg.pagefault.feat.ptid);
		switch (c->kind) {
		case SC_HEALTHY:
			zeropage(c, (unsigned)((addr - (uintptr_t)c->base) / c->ps));
			break;
		case SC_NOT_RESOLVED:
		case SC_UNMAPPED:
			/* read, then back to polling: the fault is forgotten */
			break;
		case SC_STALLED_UNREAD:
		case SC_STALLED_READ: {
			unsigned page = (unsigned)((addr - (uintptr_t)c->base) / c->ps);
			bool serve_first = c->kind == SC_STALLED_UNREAD && page == 0;

			/* page 0 served; then paused once, before (unread) or after
			 * (read) taking the waiter's next message, until release() */
			/* read_ns: the read of the waiter's message (page 1), 0 if none */
			atomic_store(&c->read_ns, page ? now_ns() : 0);
			if (serve_first)
				zeropage(c, 0);
			if (!atomic_load(&c->paused) && (serve_first || page != 0)) {
				atomic_store(&c->paused, 1);
				while (sem_wait(&c->resume) && errno == EINTR)
					;
			}
			if (!serve_first)
				zeropage(c, page);
			break;
		}
		case SC_MUNMAP: {
			/* wait for the main thread's munmap, then place the page anyway */
			while (!atomic_load(&c->unmapped))
				usleep(1000);
			struct uffdio_copy cp = { .dst = addr, .src = (uintptr_t)src, .len = c->ps };
			int err;

			atomic_store(&c->copy_enter_ns, now_ns());
			err = ioctl(c->uffd, UFFDIO_COPY, &cp) ? errno : 0;
			atomic_store(&c->copy_exit_ns, now_ns());
			atomic_store(&c->copy_errno, err);
			break;	/* and no UFFDIO_WAKE */
		}
		default:
			die("handler thread in scenario %s", sc_names[c->kind]);
		}
	}
	free(src);
	atomic_store(&c->handler_done, 1);
	return NULL;
}

/*
 * The forked handler process.  not_read: holds the uffd, never reads it.
 * handler_gone: serves faults (ZEROPAGE) until it is killed.
 */
static void handler_process(struct sc_ctx *c)
{
	struct uffd_msg msg;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != c->pid)
		_exit(0);
	prctl(PR_SET_NAME, "stuck-handler");
	for (;;) {
		if (c->kind == SC_NOT_READ) {
			pause();
			continue;
		}
		struct pollfd pfd = { c->uffd, POLLIN, 0 };

		if (poll(&pfd, 1, -1) < 0)
			continue;
		if (read(c->uffd, &msg, sizeof(msg)) != sizeof(msg))
			continue;
		if (msg.event == UFFD_EVENT_PAGEFAULT)
			zeropage(c, (unsigned)(((msg.arg.pagefault.address & ~((uint64_t)c->ps - 1)) -
						(uintptr_t)c->base) / c->ps));
	}
}

static void fork_handler(struct sc_ctx *c)
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork: %s", strerror(errno));
	if (pid == 0)
		handler_process(c);
	c->handler_pid = pid;
}

static void setup(struct sc_ctx *c)
{
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_THREAD_ID };
	struct uffdio_register reg;
	struct sigaction sa = { .sa_sigaction = on_segv, .sa_flags = SA_SIGINFO };

	c->pid = getpid();
	c->ps = (size_t)sysconf(_SC_PAGESIZE);
	if (sem_init(&c->resume, 0, 0))
		die("sem_init: %s", strerror(errno));
	atomic_store(&c->copy_errno, -1);
	c->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (c->uffd < 0)
		die("userfaultfd: %s%s", strerror(errno),
		    errno == EPERM ? " (run as root or set vm.unprivileged_userfaultfd=1)" : "");
	uffd_ioctl(c, UFFDIO_API, &api, "UFFDIO_API");
	c->base = mmap(NULL, SC_PAGES * c->ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (c->base == MAP_FAILED)
		die("mmap of %u pages: %s", SC_PAGES, strerror(errno));
	reg = (struct uffdio_register){
		.range = { .start = (uintptr_t)c->base, .len = SC_PAGES * c->ps },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	uffd_ioctl(c, UFFDIO_REGISTER, &reg, "UFFDIO_REGISTER");
	c->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (c->stop_fd < 0)
		die("eventfd: %s", strerror(errno));
	if (c->wait == W_EPOLL) {
		struct epoll_event e1 = { .events = EPOLLIN, .data.fd = c->uffd };
		struct epoll_event e2 = { .events = EPOLLIN, .data.fd = c->stop_fd };

		c->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (c->epfd < 0 || epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->uffd, &e1) ||
		    epoll_ctl(c->epfd, EPOLL_CTL_ADD, c->stop_fd, &e2))
			die("epoll on the uffd: %s", strerror(errno));
	}
	if (c->wait == W_READ) {
		struct sigaction su = { .sa_handler = on_usr1 };	/* no SA_RESTART */
		int fl = fcntl(c->uffd, F_GETFL);

		if (fl < 0 || fcntl(c->uffd, F_SETFL, fl & ~O_NONBLOCK) || sigaction(SIGUSR1, &su, NULL))
			die("making the uffd blocking: %s", strerror(errno));
	}
	if (sigaction(SIGSEGV, &sa, NULL))
		die("sigaction(SIGSEGV): %s", strerror(errno));
}

static void start_thread(pthread_t *th, void *(*fn)(void *), struct sc_ctx *c, const char *name)
{
	int e = pthread_create(th, NULL, fn, c);

	if (e)
		die("pthread_create(%s): %s", name, strerror(e));
	pthread_setname_np(*th, name);
}

/* Builds the scenario's state and checks it. */
static void build(struct sc_ctx *c)
{
	long pending, total;

	switch (c->kind) {
	case SC_NOT_READ:
		fork_handler(c);	/* before any thread: fork copies only the caller */
		/* CRIU lazy-pages style: the handler has the only copy */
		if (c->handoff && close(c->uffd))
			die("close of the handed-off uffd: %s", strerror(errno));
		start_thread(&c->waiter, waiter_main, c, "stuck-waiter");
		settle(c, 1, 1);
		break;
	case SC_NOT_RESOLVED:
		start_thread(&c->handler, handler_main, c, "stuck-handler");
		c->have_handler_thread = true;
		start_thread(&c->waiter, waiter_main, c, "stuck-waiter");
		settle(c, 0, 1);
		while (atomic_load(&c->msgs_read) < 1)
			usleep(1000);
		break;
	case SC_MUNMAP:
	case SC_UNMAPPED:
		start_thread(&c->handler, handler_main, c, "stuck-handler");
		c->have_handler_thread = true;
		start_thread(&c->waiter, waiter_main, c, "stuck-waiter");
		settle(c, 0, 1);
		while (atomic_load(&c->msgs_read) < 1)
			usleep(1000);
		/* nothing is mapped from here on: the hole must stay a hole */
		if (munmap(c->base, SC_PAGES * c->ps))
			die("munmap of the registered region: %s", strerror(errno));
		atomic_store(&c->unmap_ns, now_ns());
		atomic_store(&c->unmapped, 1);
		if (c->kind == SC_UNMAPPED) {
			settle(c, 0, 1);
			break;
		}
		while (atomic_load(&c->copy_errno) < 0)
			usleep(1000);
		if (atomic_load(&c->copy_errno) != ENOENT)
			die("UFFDIO_COPY into the unmapped range: %s, expected ENOENT",
			    atomic_load(&c->copy_errno) ? strerror(atomic_load(&c->copy_errno))
							: "succeeded");
		settle(c, 0, 1);
		break;
	case SC_HANDLER_GONE: {
		int st;

		fork_handler(c);
		start_thread(&c->waiter, waiter_main, c, "stuck-waiter");
		/* page 0 served by the handler process */
		while (!atomic_load(&c->waiter_tid))
			usleep(1000);
		for (uint64_t deadline = now_ns() + SC_SETTLE_NS;;) {
			unsigned char vec = 0;

			if (!mincore(c->base, c->ps, &vec) && (vec & 1))
				break;
			if (now_ns() > deadline)
				die("handler process did not serve the first fault");
			usleep(1000);
		}
		if (kill(c->handler_pid, SIGKILL) || waitpid(c->handler_pid, &st, 0) != c->handler_pid)
			die("killing the handler process %d: %s", c->handler_pid, strerror(errno));
		c->killed_handler_pid = c->handler_pid;
		c->handler_pid = 0;
		atomic_store(&c->stop, 1);	/* the waiter goes on to page 1 */
		settle(c, 1, 1);
		break;
	}
	case SC_STALLED_UNREAD:
	case SC_STALLED_READ:
		start_thread(&c->handler, handler_main, c, "postcopy/fault");
		c->have_handler_thread = true;
		start_thread(&c->waiter, waiter_main, c, "stuck-waiter");
		if (c->kind == SC_STALLED_UNREAD) {
			while (!atomic_load(&c->paused))
				usleep(1000);
			atomic_store(&c->stop, 1);	/* the waiter goes on to page 1 */
			settle(c, 1, 1);
		} else {
			while (atomic_load(&c->msgs_read) < 1)
				usleep(1000);
			atomic_store(&c->stop, 1);
			while (!atomic_load(&c->paused))
				usleep(1000);
			settle(c, 0, 1);
		}
		break;
	case SC_HEALTHY:
		start_thread(&c->handler, handler_main, c, "stuck-handler");
		c->have_handler_thread = true;
		start_thread(&c->waiter, waiter_main, c, "stuck-waiter");
		while (atomic_load(&c->faults) < 10)
			usleep(1000);
		break;
	case SC_NR:
		break;
	}
	uffd_counts(c, &pending, &total);
	fprintf(stderr, "READY pid=%d waiter_tid=%d addr=0x%" PRIxPTR " uffd_fd=%d handler_pid=%d "
		"killed_handler_pid=%d blocked_since_ns=%" PRIu64 " pending=%ld total=%ld "
		"handler_tid=%d read_ns=%" PRIu64 " unmap_ns=%" PRIu64 " copy_enter_ns=%" PRIu64
		" copy_exit_ns=%" PRIu64 " copy_errno=%d\n", c->pid,
		atomic_load(&c->waiter_tid), (uintptr_t)(c->base + SC_WAIT_PAGE * c->ps), c->uffd,
		c->handler_pid, c->killed_handler_pid,
		c->kind == SC_HEALTHY ? 0 : atomic_load(&c->blocked_since_ns), pending, total,
		atomic_load(&c->handler_tid), c->kind == SC_HEALTHY ? 0 : atomic_load(&c->read_ns),
		atomic_load(&c->unmap_ns), atomic_load(&c->copy_enter_ns),
		atomic_load(&c->copy_exit_ns),
		atomic_load(&c->copy_errno) < 0 ? 0 : atomic_load(&c->copy_errno));
}

/* Lets every waiter go and reaps every helper. */
static void release(struct sc_ctx *c)
{
	uint64_t one = 1;

	if (c->kind == SC_HEALTHY) {
		atomic_store(&c->stop, 1);
	} else if (c->kind == SC_STALLED_UNREAD || c->kind == SC_STALLED_READ) {
		sem_post(&c->resume);	/* the handler resumes and serves page 1 */
	} else if (c->handoff) {
		/*
		 * The last reference goes with the handler: the kernel wakes the waiter
		 * and its retried access, no longer registered, gets a zero page.
		 */
		kill(c->handler_pid, SIGKILL);
		waitpid(c->handler_pid, NULL, 0);
		c->handler_pid = 0;
	} else if (c->kind == SC_MUNMAP || c->kind == SC_UNMAPPED) {
		/* the range is gone: only a WAKE releases the waiter (it then takes SIGSEGV) */
		struct uffdio_range r = { .start = (uintptr_t)c->base, .len = SC_PAGES * c->ps };

		uffd_ioctl(c, UFFDIO_WAKE, &r, "UFFDIO_WAKE of the unmapped range");
	} else {
		zeropage(c, SC_WAIT_PAGE);
	}
	pthread_join(c->waiter, NULL);
	if ((c->kind == SC_MUNMAP || c->kind == SC_UNMAPPED) &&
	    atomic_load(&c->waiter_signal) != SIGSEGV)
		die("the woken waiter of the unmapped range did not take SIGSEGV");
	if (c->have_handler_thread) {
		if (write(c->stop_fd, &one, sizeof(one)) != sizeof(one))
			die("eventfd write: %s", strerror(errno));
		/* a blocking read() only ends on a signal; it may not have started yet */
		atomic_store(&c->stop, 1);
		while (c->wait == W_READ && !atomic_load(&c->handler_done)) {
			pthread_kill(c->handler, SIGUSR1);
			usleep(10000);
		}
		pthread_join(c->handler, NULL);
	}
	if (c->handler_pid > 0) {
		kill(c->handler_pid, SIGKILL);
		waitpid(c->handler_pid, NULL, 0);
	}
}

static void usage(FILE *out)
{
	fputs("Usage: " SC_PROG " --scenario NAME [--hold-ms N] [--start-delay-ms N]\n"
	      "Builds a real stuck-userfault state and holds it for `faultline stuck`.\n\n"
	      "  --scenario NAME  not_read | not_resolved | munmap_failed_copy |\n"
	      "                   range_unmapped | handler_gone | handler_stalled_unread |\n"
	      "                   handler_stalled_read | healthy\n"
	      "  --hold-ms N      release after N ms (default: until SIGTERM/SIGINT)\n"
	      "  --start-delay-ms N  wait N ms between creating the uffd and the first\n"
	      "                   fault (lets a tracer that scans /proc attach first)\n"
	      "  --handler-wait W how the handler thread (not_resolved, munmap_failed_copy,\n"
	      "                   range_unmapped, healthy) waits for faults: poll (default), ppoll,\n"
	      "                   select, epoll or a blocking read\n"
	      "  --handoff        not_read: this process closes its uffd after the fork\n"
	      "                   (the handler holds the only copy, CRIU lazy-pages style)\n\n"
	      "Prints 'READY pid=P waiter_tid=T addr=0xA ...' on stderr once the state is\n"
	      "built; on exit every waiter is released.\n\n"
	      "Examples:\n"
	      "  " SC_PROG " --scenario not_read &\n"
	      "  " SC_PROG " --scenario munmap_failed_copy --hold-ms 3000\n"
	      "  " SC_PROG " --scenario not_resolved --handler-wait epoll\n", out);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "scenario", required_argument, NULL, 's' },
		{ "hold-ms", required_argument, NULL, 'H' },
		{ "handler-wait", required_argument, NULL, 'W' },
		{ "handoff", no_argument, NULL, 'O' },
		{ "start-delay-ms", required_argument, NULL, 'D' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct sc_ctx c = { .kind = SC_NR, .hold_ms = -1 };
	long delay_ms = 0;
	sigset_t set;
	int opt, sig;

	while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		char *end;

		switch (opt) {
		case 's':
			for (int i = 0; i < SC_NR; i++)
				if (!strcmp(optarg, sc_names[i]))
					c.kind = (enum sc_kind)i;
			if (c.kind == SC_NR) {
				fprintf(stderr, SC_PROG ": unknown scenario '%s'\n", optarg);
				usage(stderr);
				return 2;
			}
			break;
		case 'O':
			c.handoff = true;
			break;
		case 'W':
			c.wait = W_NR;
			for (int i = 0; i < W_NR; i++)
				if (!strcmp(optarg, sc_wait_names[i]))
					c.wait = (enum sc_wait)i;
			if (c.wait == W_NR) {
				fprintf(stderr, SC_PROG ": unknown --handler-wait '%s'\n", optarg);
				usage(stderr);
				return 2;
			}
			break;
		case 'D':
			errno = 0;
			delay_ms = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || delay_ms < 0) {
				fprintf(stderr, SC_PROG ": --start-delay-ms '%s' is not a number of ms\n",
					optarg);
				return 2;
			}
			break;
		case 'H':
			errno = 0;
			c.hold_ms = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || c.hold_ms < 0) {
				fprintf(stderr, SC_PROG ": --hold-ms '%s' is not a number of ms\n",
					optarg);
				return 2;
			}
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (c.kind == SC_NR) {
		usage(stderr);
		return 2;
	}
	if (c.handoff && c.kind != SC_NOT_READ) {
		fprintf(stderr, SC_PROG ": --handoff only goes with --scenario not_read\n");
		return 2;
	}
	/* Only the main thread takes SIGTERM/SIGINT (every thread inherits this mask). */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	setup(&c);
	sleep_ms(delay_ms);
	build(&c);
	if (c.hold_ms >= 0) {
		struct timespec ts = { .tv_sec = c.hold_ms / 1000,
				       .tv_nsec = (c.hold_ms % 1000) * 1000000L };

		do
			sig = sigtimedwait(&set, NULL, &ts);
		while (sig < 0 && errno == EINTR);
	} else {
		while (sigwait(&set, &sig))
			;
	}
	release(&c);
	fprintf(stderr, "RELEASED scenario=%s\n", sc_names[c.kind]);
	return 0;
}
