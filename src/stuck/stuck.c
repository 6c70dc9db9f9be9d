// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline stuck, the analysis: /proc facts about threads asleep in
 * handle_userfault, and a verdict for each.
 *
 * What /proc shows on this kernel (6.18), and what this file relies on:
 *
 *  - A thread asleep in a userfault has wchan "handle_userfault"; for a few
 *    ms after it blocked wchan can read "0" (EEVDF's delayed dequeue keeps
 *    it on the runqueue, and get_wchan() skips those), so a sleeper whose
 *    wchan is 0 is looked up in /proc/TID/stack as well.
 *  - Every userfaultfd has its own anonymous inode (anon_inode_create_
 *    getfile): the inode of /proc/PID/fd/N (also fdinfo "ino:") identifies
 *    one uffd across dup() and SCM_RIGHTS.  Older kernels used one shared
 *    anon inode; fl_stuck_scan checks by creating two uffds itself.
 *  - fdinfo "pending:" counts waiters whose message nobody has read yet,
 *    "total:" every waiter; the kernel hands messages out oldest first.
 *  - The fault address is not in /proc: fdinfo does not show it, and
 *    /proc/TID/syscall of a thread in a user page fault is "-1 sp pc".
 *  - Waited time: /proc/TID/sched "se.exec_start" is the scheduler's task
 *    clock (rq clock_task of its CPU, ns) when the thread last stopped
 *    running, which for a thread asleep in handle_userfault is when it
 *    blocked.  That clock is not CLOCK_MONOTONIC: it starts from the same
 *    boot but leaves out steal time (here ~3.7 s behind after 70 min, and
 *    differently per CPU), so the offset is measured per CPU by running
 *    on that CPU for a moment: after a sleep our own exec_start is the
 *    moment we were switched in.  Measured here against the waiter's own
 *    clock: within a few ms (a CPU's sched_clock wanders by ms against
 *    CLOCK_MONOTONIC), and short by any steal time that CPU accrued during
 *    the wait (clock_task does not count it).  A thread that was woken and
 *    blocked again (VM_FAULT_RETRY) counts from its last block.
 *  - When the last file reference to a uffd goes, the kernel wakes every
 *    waiter (userfaultfd_release), so a waiter always has a uffd that is
 *    still referenced: by some process's fd table, or only from inside the
 *    kernel (an SCM_RIGHTS message in flight).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include "clock.h"
#include "procscan.h"
#include "stuck.h"

#define MAX_POLL_FDS 4096	/* larger poll sets are not inspected */
#define SHOWN_HOLDERS 4		/* holders spelled out in the evidence */

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

/* ---- pure parsers ----------------------------------------------------------- */

const char *fl_verdict_name(enum fl_verdict v)
{
	static const char *const names[FL_V_NR] = {
		[FL_V_NOT_READ] = "not_read", [FL_V_NOT_RESOLVED] = "not_resolved",
		[FL_V_PLACEMENT_FAILED] = "placement_failed",
		[FL_V_RANGE_UNMAPPED] = "range_unmapped", [FL_V_HANDLER_GONE] = "handler_gone",
		[FL_V_HANDLER_STALLED] = "handler_stalled",
	};

	return (unsigned)v < FL_V_NR ? names[v] : "?";
}

const char *fl_fault_path_name(enum fl_fault_path p)
{
	switch (p) {
	case FL_PATH_USER: return "user";
	case FL_PATH_KVM: return "kvm";
	case FL_PATH_GUP: return "gup";
	case FL_PATH_KERNEL: return "kernel";
	default: return "unknown";
	}
}

const char *fl_attrib_name(enum fl_attrib a)
{
	switch (a) {
	case FL_ATTR_HELD: return "held";
	case FL_ATTR_INFERRED: return "inferred";
	case FL_ATTR_AMBIGUOUS: return "ambiguous";
	default: return "none";
	}
}

const char *fl_uffd_modes_str(unsigned modes, char *buf, size_t len)
{
	static const struct { unsigned bit; const char *name; } m[] = {
		{ FL_UM_MISSING, "missing" }, { FL_UM_WP, "wp" }, { FL_UM_MINOR, "minor" },
	};
	size_t off = 0;

	buf[0] = 0;
	for (unsigned i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (modes & m[i].bit) {
			int n = snprintf(buf + off, len - off, "%s%s", off ? "+" : "", m[i].name);

			if (n < 0 || (size_t)n >= len - off)
				break;
			off += (size_t)n;
		}
	return buf;
}

int fl_parse_duration(const char *s, uint64_t *ns)
{
	static const struct { const char *unit; uint64_t ns; } units[] = {
		{ "ns", 1 }, { "us", 1000 }, { "ms", 1000000 }, { "s", 1000000000ull },
		{ "m", 60000000000ull }, { "h", 3600000000000ull },
	};
	uint64_t whole = 0, frac = 0, scale = 1, mult = 0, v;
	const char *p = s;
	int ndig = 0;

	if (!s)
		return -EINVAL;
	/* digits only: no sign, blanks, exponents, hex, "inf" (what strtod would take) */
	for (; isdigit((unsigned char)*p); p++, ndig++)
		if (__builtin_mul_overflow(whole, 10, &whole) ||
		    __builtin_add_overflow(whole, (uint64_t)(*p - '0'), &whole))
			return -ERANGE;
	if (!ndig)
		return -EINVAL;
	if (*p == '.') {
		int nfrac = 0;

		for (p++; isdigit((unsigned char)*p); p++, nfrac++)
			if (nfrac < 9) {	/* below a nanosecond of an hour's unit: dropped */
				frac = frac * 10 + (uint64_t)(*p - '0');
				scale *= 10;
			}
		if (!nfrac)
			return -EINVAL;
	}
	if (!*p) {
		/* a bare number needs a unit, except zero, which is zero in any unit */
		if (whole || frac)
			return -EINVAL;
		*ns = 0;
		return 0;
	}
	for (unsigned i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcmp(p, units[i].unit))
			mult = units[i].ns;
	if (!mult)
		return -EINVAL;
	if (__builtin_mul_overflow(whole, mult, &v) ||
	    __builtin_add_overflow(v, frac * mult / scale, &v) || v > (uint64_t)INT64_MAX)
		return -ERANGE;
	*ns = v;
	return 0;
}

/* The value after "key:" (tabs/spaces skipped) on its own line of text, or NULL. */
static const char *field(const char *text, const char *key)
{
	size_t klen = strlen(key);

	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
		if (!strncmp(l, key, klen) && l[klen] == ':') {
			l += klen + 1;
			while (*l == ' ' || *l == '\t')
				l++;
			return l;
		}
	return NULL;
}

int fl_parse_uffd_fdinfo(const char *text, struct fl_uffd_fdinfo *out)
{
	const char *pending = field(text, "pending"), *total = field(text, "total");
	const char *ino = field(text, "ino"), *api = field(text, "API");
	unsigned long long api_v, feat, ioctls;

	memset(out, 0, sizeof(*out));
	if (!pending || !total)
		return -EINVAL;	/* not a userfaultfd's fdinfo */
	out->pending = strtol(pending, NULL, 10);
	out->total = strtol(total, NULL, 10);
	if (ino)
		out->ino = strtoull(ino, NULL, 10);
	/* "API:\t%Lx:%x:%Lx": the API version, ctx->features, the supported ioctls */
	if (api && sscanf(api, "%llx:%llx:%llx", &api_v, &feat, &ioctls) == 3) {
		out->features = feat;
		out->ioctls = ioctls;
	}
	return 0;
}

int fl_parse_syscall_line(const char *text, struct fl_syscall_line *out)
{
	unsigned long long v[8];
	long nr;
	int n;

	memset(out, 0, sizeof(*out));
	if (!strncmp(text, "running", 7)) {
		out->running = true;
		return 0;
	}
	n = sscanf(text, "%ld %llx %llx %llx %llx %llx %llx %llx %llx", &nr, &v[0], &v[1], &v[2],
		   &v[3], &v[4], &v[5], &v[6], &v[7]);
	if (n == 3 && nr == -1) {
		/* not in a syscall: a user page fault or exception; "-1 sp pc" */
		out->nr = -1;
		out->sp = v[0];
		out->pc = v[1];
		return 0;
	}
	if (n != 9 || nr < 0)
		return -EINVAL;
	out->in_syscall = true;
	out->nr = nr;
	for (int i = 0; i < 6; i++)
		out->args[i] = v[i];
	out->sp = v[6];
	out->pc = v[7];
	return 0;
}

unsigned fl_parse_vmflags_uffd(const char *line)
{
	unsigned modes = 0;
	const char *p;

	if (strncmp(line, "VmFlags:", 8))
		return 0;
	for (p = line + 8; *p;) {
		while (isspace((unsigned char)*p))
			p++;
		if (p[0] && p[1] && (!p[2] || isspace((unsigned char)p[2]))) {
			if (!strncmp(p, "um", 2))
				modes |= FL_UM_MISSING;
			else if (!strncmp(p, "uw", 2))
				modes |= FL_UM_WP;
			else if (!strncmp(p, "ui", 2))
				modes |= FL_UM_MINOR;
		}
		while (*p && !isspace((unsigned char)*p))
			p++;
	}
	return modes;
}

int fl_parse_sched_exec_start(const char *text, uint64_t *ns)
{
	const char *l = strstr(text, "se.exec_start");
	unsigned long long ms = 0, frac = 0;
	int nfrac = 0;

	if (!l || !(l = strchr(l, ':')))
		return -EINVAL;
	/* "%Ld.%06ld" milliseconds: integer math, no float rounding */
	for (l++; *l == ' ' || *l == '\t'; l++)
		;
	if (!isdigit((unsigned char)*l))
		return -EINVAL;
	for (; isdigit((unsigned char)*l); l++)
		ms = ms * 10 + (unsigned long long)(*l - '0');
	if (*l == '.')
		for (l++; isdigit((unsigned char)*l) && nfrac < 6; l++, nfrac++)
			frac = frac * 10 + (unsigned long long)(*l - '0');
	for (; nfrac < 6; nfrac++)
		frac *= 10;
	*ns = ms * 1000000ull + frac;
	return 0;
}

enum fl_fault_path fl_parse_stack_path(const char *text)
{
	const char *last = NULL;
	bool pf = false;

	if (!strstr(text, "handle_userfault"))
		return FL_PATH_UNKNOWN;
	if (strstr(text, "kvm_") || strstr(text, "vcpu_"))
		return FL_PATH_KVM;	/* a vCPU's access to guest memory (KVM's GUP) */
	if (strstr(text, "get_user_pages") || strstr(text, "faultin_page"))
		return FL_PATH_GUP;
	/* lines are "[<0>] symbol+off/size", innermost first */
	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		const char *sym = strstr(l, "] ");
		const char *eol = strchr(l, '\n');

		if (!sym || (eol && sym > eol))
			continue;
		sym += 2;
		last = sym;
		if (!strncmp(sym, "exc_page_fault", 14))
			pf = true;
	}
	/* a user access faults straight from user mode: the exception entry is the outermost frame */
	if (last && !strncmp(last, "asm_exc_page_fault", 18))
		return FL_PATH_USER;
	return pf ? FL_PATH_KERNEL : FL_PATH_UNKNOWN;
}

const char *fl_syscall_name(long nr)
{
	static const struct { long nr; const char *name; } t[] = {
		{ SYS_read, "read" }, { SYS_readv, "readv" }, { SYS_ppoll, "ppoll" },
		{ SYS_pselect6, "pselect6" }, { SYS_epoll_pwait, "epoll_pwait" },
		{ SYS_ioctl, "ioctl" }, { SYS_futex, "futex" }, { SYS_nanosleep, "nanosleep" },
		{ SYS_clock_nanosleep, "clock_nanosleep" }, { SYS_rt_sigtimedwait, "rt_sigtimedwait" },
		{ SYS_rt_sigsuspend, "rt_sigsuspend" }, { SYS_recvfrom, "recvfrom" },
		{ SYS_recvmsg, "recvmsg" }, { SYS_accept4, "accept4" }, { SYS_wait4, "wait4" },
		{ SYS_waitid, "waitid" }, { SYS_write, "write" }, { SYS_io_uring_enter, "io_uring_enter" },
#ifdef SYS_poll
		{ SYS_poll, "poll" },
#endif
#ifdef SYS_select
		{ SYS_select, "select" },
#endif
#ifdef SYS_epoll_wait
		{ SYS_epoll_wait, "epoll_wait" },
#endif
#ifdef SYS_epoll_pwait2
		{ SYS_epoll_pwait2, "epoll_pwait2" },
#endif
#ifdef SYS_pause
		{ SYS_pause, "pause" },
#endif
#ifdef SYS_accept
		{ SYS_accept, "accept" },
#endif
	};

	for (unsigned i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (t[i].nr == nr)
			return t[i].name;
	return NULL;
}

/* ---- small /proc readers ------------------------------------------------------ */

/* Reads a small /proc file into buf (NUL-terminated). 0 or -errno. */
static int slurp(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t off = 0;

	if (fd < 0)
		return -errno;
	while (off < len - 1) {
		ssize_t n = read(fd, buf + off, len - 1 - off);

		if (n < 0) {
			int e = -errno;

			close(fd);
			return e;
		}
		if (!n)
			break;
		off += (size_t)n;
	}
	close(fd);
	buf[off] = 0;
	return 0;
}

static void chomp(char *s)
{
	s[strcspn(s, "\n")] = 0;
}

/* State char and (optionally) CPU of /proc/PID/task/TID/stat. */
static int task_stat(pid_t pid, pid_t tid, char *state, int *cpu)
{
	char path[64], buf[1024], *p;
	int field = 3, err;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", pid, tid);
	if ((err = slurp(path, buf, sizeof(buf))))
		return err;
	/* the comm may contain anything, ')' included: fields follow the last ')' */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ')
		return -EINVAL;
	p += 2;
	*state = *p;
	if (!cpu)
		return 0;
	for (; *p && field < 39; p++)
		if (*p == ' ')
			field++;
	if (field != 39)
		return -EINVAL;
	*cpu = atoi(p);
	return 0;
}

static void read_comm(const char *path, char *comm)
{
	if (slurp(path, comm, FL_STUCK_COMM))
		snprintf(comm, FL_STUCK_COMM, "?");
	chomp(comm);
}

static bool wchan_is(pid_t pid, pid_t tid, const char *want, char *got, size_t len)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/task/%d/wchan", pid, tid);
	if (slurp(path, got, len))
		return false;
	return !strcmp(got, want);
}

/* ---- growing arrays ---------------------------------------------------------- */

static void *grow(void *arr, int *cap, int need, size_t size)
{
	int ncap = *cap ? *cap * 2 : 16;
	void *p;

	if (need < *cap)
		return arr;
	p = realloc(arr, (size_t)ncap * size);
	if (!p)
		return NULL;
	memset((char *)p + (size_t)*cap * size, 0, (size_t)(ncap - *cap) * size);
	*cap = ncap;
	return p;
}

/* ---- the scheduler clock ------------------------------------------------------- */

static int clock_init(struct fl_stuck_clock *c)
{
	long n = sysconf(_SC_NPROCESSORS_CONF);

	c->ncpu = n > 0 ? (int)n : 1;
	c->off = calloc((size_t)c->ncpu, sizeof(*c->off));
	c->state = calloc((size_t)c->ncpu, 1);
	return c->off && c->state ? 0 : -ENOMEM;
}

/*
 * CLOCK_MONOTONIC minus the task clock of cpu, measured by running there.
 * After a short sleep our own se.exec_start is the moment we were switched
 * back in; CLOCK_MONOTONIC read right after that is later by a few µs.  Of
 * three tries, the one whose file read was quickest (not preempted midway)
 * counts.
 */
static int measure_offset(int cpu, int64_t *off)
{
	cpu_set_t old, one;
	uint64_t best_read = UINT64_MAX;
	int ret = -EAGAIN;

	if (sched_getaffinity(0, sizeof(old), &old))
		return -errno;
	CPU_ZERO(&one);
	CPU_SET(cpu, &one);
	if (sched_setaffinity(0, sizeof(one), &one))
		return -errno;
	for (int i = 0; i < 3; i++) {
		struct timespec nap = { 0, 200000 };
		char buf[4096];
		uint64_t t1, t2, es;

		nanosleep(&nap, NULL);
		t1 = fl_now_ns();
		if (slurp("/proc/thread-self/sched", buf, sizeof(buf)) ||
		    fl_parse_sched_exec_start(buf, &es)) {
			ret = -ENOENT;
			break;
		}
		t2 = fl_now_ns();
		if (t2 - t1 < best_read && sched_getcpu() == cpu) {
			best_read = t2 - t1;
			*off = (int64_t)(t1 - es);
			ret = 0;
		}
	}
	sched_setaffinity(0, sizeof(old), &old);
	return ret;
}

static int clock_offset(struct fl_stuck_clock *c, int cpu, int64_t *off)
{
	if (cpu < 0 || cpu >= c->ncpu)
		return -EINVAL;
	if (!c->state[cpu])
		c->state[cpu] = measure_offset(cpu, &c->off[cpu]) ? 2 : 1;
	if (c->state[cpu] != 1)
		return -EAGAIN;
	*off = c->off[cpu];
	return 0;
}

/* ---- the uffd table ------------------------------------------------------------- */

static int find_uffd(struct fl_stuck_scan *s, uint64_t dev, uint64_t ino)
{
	for (int i = 0; i < s->nuffds; i++)
		if (s->uffds[i].dev == dev && s->uffds[i].ino == ino)
			return i;
	return -1;
}

static struct fl_stuck_holder *holder_of(struct fl_stuck_uffd *u, pid_t pid)
{
	for (int i = 0; i < u->nholders; i++)
		if (u->holders[i].pid == pid)
			return &u->holders[i];
	return NULL;
}

static int add_uffd_fd(struct fl_stuck_scan *s, pid_t pid, int fd, const struct stat *st,
		       const struct fl_uffd_fdinfo *fi, const char *comm, char state)
{
	int i = find_uffd(s, (uint64_t)st->st_dev, (uint64_t)st->st_ino);
	struct fl_stuck_uffd *u;
	struct fl_stuck_holder *h;

	if (i < 0) {
		void *p = grow(s->uffds, &s->capuffds, s->nuffds, sizeof(*s->uffds));

		if (!p)
			return -ENOMEM;
		s->uffds = p;
		i = s->nuffds++;
		u = &s->uffds[i];
		u->dev = (uint64_t)st->st_dev;
		u->ino = (uint64_t)st->st_ino;
		u->pending = fi->pending;
		u->total = fi->total;
		u->features = fi->features & ~FL_UFFD_INITIALIZED;
		u->initialized = fi->features & FL_UFFD_INITIALIZED;
	}
	u = &s->uffds[i];
	h = holder_of(u, pid);
	if (!h) {
		void *p = grow(u->holders, &u->capholders, u->nholders, sizeof(*u->holders));

		if (!p)
			return -ENOMEM;
		u->holders = p;
		h = &u->holders[u->nholders++];
		h->pid = pid;
		snprintf(h->comm, sizeof(h->comm), "%s", comm);
		h->state = state;
	}
	if (h->nfds < FL_STUCK_MAX_FDS)
		h->fds[h->nfds++] = fd;
	return 0;
}

struct fd_walk {
	struct fl_stuck_scan *s;
	pid_t pid;
	char comm[FL_STUCK_COMM], state;
};

/* One uffd fd: its inode (the uffd's identity) and fdinfo into the table. */
static int take_fd(void *arg, int dirfd, int fd)
{
	struct fd_walk *w = arg;
	struct fl_uffd_fdinfo fi;
	char path[64], name[16], info[1024];
	struct stat st;

	/* stat follows the magic link to the file: its inode is the uffd's identity */
	snprintf(name, sizeof(name), "%d", fd);
	if (fstatat(dirfd, name, &st, 0))
		return 1;
	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", w->pid, fd);
	if (slurp(path, info, sizeof(info)) || fl_parse_uffd_fdinfo(info, &fi))
		return 1;
	if (!w->comm[0]) {
		snprintf(path, sizeof(path), "/proc/%d/comm", w->pid);
		read_comm(path, w->comm);
		task_stat(w->pid, w->pid, &w->state, NULL);
	}
	return add_uffd_fd(w->s, w->pid, fd, &st, &fi, w->comm, w->state);
}

/* Every uffd fd of pid into the table. Returns how many, or -errno. */
static int scan_fds(struct fl_stuck_scan *s, pid_t pid)
{
	struct fd_walk w = { .s = s, .pid = pid, .state = '?' };

	return fl_proc_each_uffd_fd(pid, take_fd, &w);
}

/* ---- is a holder's thread reading the uffd? -------------------------------------- */

static bool in_userfault(pid_t pid, pid_t tid, bool *by_stack);

static bool fd_in(const struct fl_stuck_holder *h, long fd)
{
	for (int i = 0; i < h->nfds; i++)
		if (h->fds[i] == fd)
			return true;
	return false;
}

/*
 * Reads another process's memory (a poll or select set).  Safe even if it
 * lies in a userfault-registered range: a remote access cannot wait there
 * (no FAULT_FLAG_ALLOW_RETRY), so a missing page fails with EIO at once and
 * queues no fault message (checked on 6.18).
 */
static int read_mem(pid_t pid, uint64_t addr, void *buf, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = pread(fd, buf, len, (off_t)addr);
	close(fd);
	return n == (ssize_t)len ? 0 : -EIO;
}

/* 1: the poll set has one of h's uffd fds for reading, 0: not, <0 unreadable. */
static int poll_has(pid_t pid, const struct fl_stuck_holder *h, uint64_t ufds, uint64_t nfds)
{
	struct pollfd *p;
	int ret;

	if (nfds > MAX_POLL_FDS)
		return -E2BIG;
	if (!nfds)
		return 0;
	p = calloc(nfds, sizeof(*p));
	if (!p)
		return -ENOMEM;
	ret = read_mem(pid, ufds, p, nfds * sizeof(*p));
	for (uint64_t i = 0; !ret && i < nfds; i++)
		if (fd_in(h, p[i].fd) && (p[i].events & (POLLIN | POLLRDNORM)))
			ret = 1;
	free(p);
	return ret;
}

static int select_has(pid_t pid, const struct fl_stuck_holder *h, uint64_t nfds, uint64_t readfds)
{
	unsigned char bits[FD_SETSIZE / 8];
	size_t len = (nfds + 7) / 8;
	int ret;

	if (!readfds || !nfds)
		return 0;
	if (len > sizeof(bits))
		return -E2BIG;
	if ((ret = read_mem(pid, readfds, bits, len)))
		return ret;
	for (int i = 0; i < h->nfds; i++)
		if ((uint64_t)h->fds[i] < nfds && (bits[h->fds[i] / 8] & (1u << (h->fds[i] % 8))))
			return 1;
	return 0;
}

/* An epoll set's fdinfo lists "tfd: N events: E data: D  pos:P ino:I sdev:S" per target. */
static int epoll_has(pid_t pid, long epfd, uint64_t ino)
{
	char path[64], *buf, *l;
	int ret;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%ld", pid, epfd);
	buf = malloc(65536);
	if (!buf)
		return -ENOMEM;
	if ((ret = slurp(path, buf, 65536))) {
		free(buf);
		return ret;
	}
	ret = 0;
	for (l = strstr(buf, "ino:"); l; l = strstr(l + 4, "ino:"))
		if (strtoull(l + 4, NULL, 16) == ino && l > buf && l[-1] != '\n') {
			ret = 1;	/* (a line-leading "ino:" is the epoll file's own) */
			break;
		}
	free(buf);
	return ret;
}

/* How a thread of holder h (its syscall line sc) waits on uffd u: a syscall name, or NULL. */
static const char *reads_uffd(const struct fl_stuck_uffd *u, const struct fl_stuck_holder *h,
			      const struct fl_syscall_line *sc, bool *maybe)
{
	long nr = sc->nr;
	int r = 0;

	*maybe = false;
	if (!sc->in_syscall)
		return NULL;
	if (nr == SYS_read || nr == SYS_readv)
		return fd_in(h, (long)sc->args[0]) ? fl_syscall_name(nr) : NULL;
	if (nr == SYS_ppoll
#ifdef SYS_poll
	    || nr == SYS_poll
#endif
	)
		r = poll_has(h->pid, h, sc->args[0], sc->args[1]);
	else if (nr == SYS_pselect6
#ifdef SYS_select
		 || nr == SYS_select
#endif
	)
		r = select_has(h->pid, h, sc->args[0], sc->args[1]);
	else if (nr == SYS_epoll_pwait
#ifdef SYS_epoll_wait
		 || nr == SYS_epoll_wait
#endif
#ifdef SYS_epoll_pwait2
		 || nr == SYS_epoll_pwait2
#endif
	)
		r = epoll_has(h->pid, (long)sc->args[0], u->ino);
	else
		return NULL;
	if (r < 0)
		*maybe = true;	/* waiting on a set we could not read: could be it */
	return r > 0 ? fl_syscall_name(nr) : NULL;
}

static void scan_readers(struct fl_stuck_uffd *u, struct fl_stuck_holder *h)
{
	char path[64], buf[256];
	struct dirent *d;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", h->pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((d = readdir(dir))) {
		struct fl_syscall_line sc;
		const char *how;
		pid_t tid;
		bool maybe, by_stack;

		if (!fl_proc_numeric(d->d_name))
			continue;
		tid = (pid_t)atoi(d->d_name);
		if (h->ntasks < FL_STUCK_MAX_THREADS) {
			struct fl_stuck_task *k = &h->tasks[h->ntasks];

			k->tid = tid;
			snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", h->pid, tid);
			read_comm(path, k->comm);
			if (task_stat(h->pid, tid, &k->state, NULL))
				k->state = '?';
			wchan_is(h->pid, tid, "", k->wchan, sizeof(k->wchan));
			chomp(k->wchan);
		}
		h->ntasks++;
		if (in_userfault(h->pid, tid, &by_stack)) {
			if (h->ntasks <= FL_STUCK_MAX_THREADS)
				h->tasks[h->ntasks - 1].waiter = true;
			h->blocked++;
			continue;
		}
		snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", h->pid, tid);
		if (slurp(path, buf, sizeof(buf)) || fl_parse_syscall_line(buf, &sc))
			continue;
		if (tid == h->pid) {
			const char *name = sc.in_syscall ? fl_syscall_name(sc.nr) : NULL;

			if (sc.running)
				snprintf(h->doing, sizeof(h->doing), "running");
			else if (name)
				snprintf(h->doing, sizeof(h->doing), "in %s", name);
			else if (sc.in_syscall)
				snprintf(h->doing, sizeof(h->doing), "in syscall %ld", sc.nr);
			else
				snprintf(h->doing, sizeof(h->doing), "not in a syscall");
		}
		how = reads_uffd(u, h, &sc, &maybe);
		if (how) {
			if (h->nreaders < FL_STUCK_MAX_READERS)
				h->readers[h->nreaders] = tid;
			if (!h->nreaders++)
				h->reader_how = how;
		} else if (maybe) {
			h->maybe_readers++;
		}
	}
	closedir(dir);
}

/* ---- blocked threads and their processes ------------------------------------------- */

static int proc_index(struct fl_stuck_scan *s, pid_t pid)
{
	for (int i = 0; i < s->nprocs; i++)
		if (s->procs[i].pid == pid)
			return i;
	return -1;
}

/* Registered ranges of pid from smaps VmFlags. */
static int read_ranges(struct fl_stuck_proc *p)
{
	char path[64], line[512];
	uint64_t start = 0, end = 0;
	FILE *f;
	int cap = 0;

	snprintf(path, sizeof(path), "/proc/%d/smaps", p->pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long a, b;
		unsigned modes;

		/* a VMA's header line: "start-end perms offset dev inode [path]" */
		if (sscanf(line, "%llx-%llx ", &a, &b) == 2) {
			start = a;
			end = b;
			continue;
		}
		modes = fl_parse_vmflags_uffd(line);
		if (!modes)
			continue;
		/* neighbours with the same modes are one range to the user */
		if (p->nranges && p->ranges[p->nranges - 1].end == start &&
		    p->ranges[p->nranges - 1].modes == modes) {
			p->ranges[p->nranges - 1].end = end;
			continue;
		}
		void *n = grow(p->ranges, &cap, p->nranges, sizeof(*p->ranges));

		if (!n) {
			fclose(f);
			return -ENOMEM;
		}
		p->ranges = n;
		p->ranges[p->nranges++] = (struct fl_stuck_range){ start, end, modes };
	}
	fclose(f);
	return 0;
}

static int add_proc(struct fl_stuck_scan *s, pid_t pid)
{
	char path[64];
	struct fl_stuck_proc *p;
	void *n;
	int i = proc_index(s, pid);

	if (i >= 0)
		return i;
	n = grow(s->procs, &s->capprocs, s->nprocs, sizeof(*s->procs));
	if (!n)
		return -ENOMEM;
	s->procs = n;
	p = &s->procs[s->nprocs];
	p->pid = pid;
	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	read_comm(path, p->comm);
	p->err = read_ranges(p);
	for (int u = 0; u < s->nuffds; u++) {
		struct fl_stuck_holder *h = holder_of(&s->uffds[u], pid);

		if (h)
			p->nuffd_fds += h->nfds;
	}
	return s->nprocs++;
}

/* Fills in what /proc says about a thread known to be asleep in handle_userfault. */
static void describe_thread(struct fl_stuck_scan *s, struct fl_stuck_thread *t)
{
	char path[96], buf[4096];
	uint64_t es, now;
	int64_t off;
	char state;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", t->pid, t->tid);
	read_comm(path, t->tcomm);
	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", t->pid, t->tid);
	if (slurp(path, buf, sizeof(buf)) || fl_parse_syscall_line(buf, &t->sc))
		memset(&t->sc, 0, sizeof(t->sc));
	snprintf(path, sizeof(path), "/proc/%d/task/%d/stack", t->pid, t->tid);
	t->path = slurp(path, buf, sizeof(buf)) ? FL_PATH_UNKNOWN : fl_parse_stack_path(buf);
	if (t->path == FL_PATH_UNKNOWN && !t->sc.in_syscall && !t->sc.running && t->sc.pc)
		t->path = FL_PATH_USER;	/* no stack to read, but "-1 sp pc": not in a syscall */
	t->waited_ns = -1;
	t->cpu = -1;
	if (task_stat(t->pid, t->tid, &state, &t->cpu))
		return;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/sched", t->pid, t->tid);
	if (slurp(path, buf, sizeof(buf)) || fl_parse_sched_exec_start(buf, &es) || !es)
		return;
	now = fl_now_ns();
	if (clock_offset(&s->clock, t->cpu, &off))
		return;
	t->blocked_since_ns = (uint64_t)((int64_t)es + off);
	t->waited_ns = now > t->blocked_since_ns ? (int64_t)(now - t->blocked_since_ns) : 0;
}

/* Is tid asleep in handle_userfault? Sets *by_stack when only the stack says so. */
static bool in_userfault(pid_t pid, pid_t tid, bool *by_stack)
{
	char wchan[64], path[96], buf[4096], state = '?';

	*by_stack = false;
	if (wchan_is(pid, tid, "handle_userfault", wchan, sizeof(wchan)))
		return true;
	/* wchan is 0 while a sleeper sits on the runqueue (delayed dequeue) */
	if (strcmp(wchan, "0") || task_stat(pid, tid, &state, NULL) || !strchr("SD", state))
		return false;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/stack", pid, tid);
	if (slurp(path, buf, sizeof(buf)) || !strstr(buf, "handle_userfault+"))
		return false;
	*by_stack = true;
	return true;
}

static int scan_threads(struct fl_stuck_scan *s, pid_t pid)
{
	char path[64];
	struct dirent *d;
	DIR *dir;
	int ret = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	dir = opendir(path);
	if (!dir)
		return -errno;
	while ((d = readdir(dir))) {
		struct fl_stuck_thread *t;
		bool by_stack;
		pid_t tid;
		void *n;
		int pi;

		if (!fl_proc_numeric(d->d_name))
			continue;
		tid = (pid_t)atoi(d->d_name);
		s->threads_scanned++;
		if (!in_userfault(pid, tid, &by_stack))
			continue;
		if ((pi = add_proc(s, pid)) < 0) {
			ret = pi;
			break;
		}
		n = grow(s->threads, &s->capthreads, s->nthreads, sizeof(*s->threads));
		if (!n) {
			ret = -ENOMEM;
			break;
		}
		s->threads = n;
		t = &s->threads[s->nthreads++];
		t->pid = pid;
		t->tid = tid;
		t->proc = pi;
		t->by_stack = by_stack;
		t->rank = -1;
		describe_thread(s, t);
	}
	closedir(dir);
	return ret;
}

/* Do two fresh userfaultfds get distinct inodes here? 1, 0, or -1 (cannot tell). */
static int key_check(void)
{
	int fd[2] = { -1, -1 }, ret = -1;
	struct stat a, b;

	for (int i = 0; i < 2; i++) {
		fd[i] = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
		if (fd[i] < 0)
			fd[i] = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	}
	if (fd[0] >= 0 && fd[1] >= 0 && !fstat(fd[0], &a) && !fstat(fd[1], &b))
		ret = a.st_ino != b.st_ino;
	for (int i = 0; i < 2; i++)
		if (fd[i] >= 0)
			close(fd[i]);
	return ret;
}

static int each_pid(struct fl_stuck_scan *s, int (*fn)(struct fl_stuck_scan *s, pid_t pid))
{
	DIR *proc = opendir("/proc");
	struct dirent *d;
	int ret = 0;

	if (!proc)
		return -errno;
	while ((d = readdir(proc))) {
		pid_t pid;
		int r;

		if (!fl_proc_numeric(d->d_name))
			continue;
		pid = (pid_t)atoi(d->d_name);
		if (pid == getpid())
			continue;
		r = fn(s, pid);
		if (r == -ENOMEM) {
			ret = r;
			break;
		}
		if (r == -EACCES || r == -EPERM)
			s->unreadable++;
	}
	closedir(proc);
	return ret;
}

void fl_stuck_free(struct fl_stuck_scan *s)
{
	for (int i = 0; i < s->nuffds; i++)
		free(s->uffds[i].holders);
	for (int i = 0; i < s->nprocs; i++)
		free(s->procs[i].ranges);
	free(s->uffds);
	free(s->procs);
	free(s->threads);
	free(s->clock.off);
	free(s->clock.state);
	memset(s, 0, sizeof(*s));
}

int fl_stuck_scan(struct fl_stuck_scan *s, const pid_t *pids, int npids)
{
	int ret;

	memset(s, 0, sizeof(*s));
	if ((ret = clock_init(&s->clock)))
		goto fail;
	s->key_unique = key_check();
	/* every uffd in the system: its holders may be any process, not just pids */
	if ((ret = each_pid(s, scan_fds)))
		goto fail;
	if (npids) {
		for (int i = 0; i < npids; i++) {
			ret = scan_threads(s, pids[i]);
			if (ret == -ENOMEM)
				goto fail;
			if (ret == -EACCES || ret == -EPERM)
				s->unreadable++;
		}
	} else if ((ret = each_pid(s, scan_threads))) {
		goto fail;
	}
	for (int i = 0; i < s->nuffds; i++)
		for (int h = 0; h < s->uffds[i].nholders; h++)
			scan_readers(&s->uffds[i], &s->uffds[i].holders[h]);
	s->now_ns = fl_now_ns();
	fl_stuck_attribute(s);
	for (int i = 0; i < s->nthreads; i++)
		fl_stuck_decide(s, &s->threads[i]);
	return 0;
fail:
	fl_stuck_free(s);
	return ret;
}

/* ---- attribution (pure) ----------------------------------------------------------- */

static bool holds(const struct fl_stuck_uffd *u, pid_t pid)
{
	for (int i = 0; i < u->nholders; i++)
		if (u->holders[i].pid == pid)
			return true;
	return false;
}

/*
 * Does some holder of u have threads asleep in handle_userfault (so u is
 * probably its own)?  Counted for every holder, -p or not.
 */
static bool claimed(const struct fl_stuck_uffd *u)
{
	for (int i = 0; i < u->nholders; i++)
		if (u->holders[i].blocked)
			return true;
	return false;
}

static int cmp_since(const void *a, const void *b, void *arg)
{
	const struct fl_stuck_thread *th = arg;
	const struct fl_stuck_thread *x = &th[*(const int *)a], *y = &th[*(const int *)b];

	return x->blocked_since_ns < y->blocked_since_ns ? -1 : x->blocked_since_ns > y->blocked_since_ns;
}

void fl_stuck_attribute(struct fl_stuck_scan *s)
{
	int *order = s->nthreads ? calloc((size_t)s->nthreads, sizeof(int)) : NULL;

	for (int i = 0; i < s->nuffds; i++)
		s->uffds[i].nwaiters = 0;
	for (int i = 0; i < s->nthreads; i++) {
		struct fl_stuck_thread *t = &s->threads[i];
		int n = 0;

		t->ncand = 0;
		t->rank = -1;
		/* the uffds with waiters that its own process holds */
		for (int u = 0; u < s->nuffds; u++)
			if (s->uffds[u].total > 0 && holds(&s->uffds[u], t->pid) &&
			    n++ < FL_STUCK_MAX_CAND)
				t->cand[t->ncand++] = u;
		if (n) {
			t->attrib = n == 1 ? FL_ATTR_HELD : FL_ATTR_AMBIGUOUS;
			continue;
		}
		/* none: a uffd with waiters that no blocked process holds (a handed-off uffd) */
		for (int u = 0; u < s->nuffds; u++)
			if (s->uffds[u].total > 0 && !claimed(&s->uffds[u]) &&
			    n++ < FL_STUCK_MAX_CAND)
				t->cand[t->ncand++] = u;
		t->attrib = !n ? FL_ATTR_NONE : n == 1 ? FL_ATTR_INFERRED : FL_ATTR_AMBIGUOUS;
	}
	/* rank each uffd's waiters, oldest first: the kernel hands faults out in that order */
	for (int u = 0; order && u < s->nuffds; u++) {
		int n = 0;
		bool timed = true;

		for (int i = 0; i < s->nthreads; i++) {
			const struct fl_stuck_thread *t = &s->threads[i];

			if ((t->attrib == FL_ATTR_HELD || t->attrib == FL_ATTR_INFERRED) &&
			    t->cand[0] == u) {
				order[n++] = i;
				timed &= t->waited_ns >= 0;
			}
		}
		s->uffds[u].nwaiters = n;
		if (!timed)
			continue;
		qsort_r(order, (size_t)n, sizeof(int), cmp_since, s->threads);
		for (int k = 0; k < n; k++)
			s->threads[order[k]].rank = k;
	}
	free(order);
}

/* ---- the verdict (pure) -------------------------------------------------------------- */

void fl_stuck_ev(struct fl_stuck_verdict *v, const char *fmt, ...)
{
	va_list ap;

	if (v->nev == FL_STUCK_MAX_EV)
		return;
	va_start(ap, fmt);
	vsnprintf(v->ev[v->nev++], FL_STUCK_EV_LEN, fmt, ap);
	va_end(ap);
}

static const char *fds_str(const struct fl_stuck_holder *h, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = 0;
	for (int i = 0; i < h->nfds && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%d", i ? "," : "", h->fds[i]);

		if (n < 0)
			break;
		off += (size_t)n;
	}
	return buf;
}

const struct fl_stuck_task *fl_stuck_holder_task(const struct fl_stuck_uffd *u, pid_t tid)
{
	for (int i = 0; i < u->nholders; i++) {
		const struct fl_stuck_holder *h = &u->holders[i];

		for (int j = 0; j < h->ntasks && j < FL_STUCK_MAX_THREADS; j++)
			if (h->tasks[j].tid == tid)
				return &h->tasks[j];
	}
	return NULL;
}

int fl_stuck_live_tasks(const struct fl_stuck_uffd *u)
{
	int n = 0;

	for (int i = 0; i < u->nholders; i++)
		n += u->holders[i].ntasks - u->holders[i].blocked;
	return n;
}

/* "1234 postcopy/fault S futex_wait_queue": one thread, for the evidence. */
static int task_str(char *buf, size_t len, const struct fl_stuck_task *k)
{
	const char *w = k->waiter ? "handle_userfault (a waiter)" :
			k->wchan[0] && strcmp(k->wchan, "0") ? k->wchan : "-";

	return snprintf(buf, len, "%d %s %c %s", k->tid, k->comm, k->state, w);
}

void fl_stuck_threads_evidence(struct fl_stuck_verdict *v, const struct fl_stuck_uffd *u)
{
	for (int i = 0; i < u->nholders && i < SHOWN_HOLDERS; i++) {
		const struct fl_stuck_holder *h = &u->holders[i];
		int shown = h->ntasks < FL_STUCK_MAX_THREADS ? h->ntasks : FL_STUCK_MAX_THREADS;
		int j = 0;

		/* as many sentences as the threads need, at most 4 per holder */
		for (int part = 0; part < 4 && j < shown; part++) {
			char line[FL_STUCK_EV_LEN];
			size_t off = (size_t)snprintf(line, sizeof(line), "pid %d (%s) threads%s "
						      "(tid name state wait-channel): ", h->pid,
						      h->comm, part ? ", continued" : "");

			for (bool first = true; j < shown; j++, first = false) {
				char one[96];
				int n = task_str(one, sizeof(one), &h->tasks[j]);

				if (off + (size_t)n + 8 >= sizeof(line) - 24)
					break;
				off += (size_t)snprintf(line + off, sizeof(line) - off, "%s%s",
							first ? "" : "; ", one);
			}
			if (j == shown && h->ntasks > shown)
				snprintf(line + off, sizeof(line) - off, "; and %d more",
					 h->ntasks - shown);
			fl_stuck_ev(v, "%s", line);
		}
	}
}

/* One sentence per holder (the first SHOWN_HOLDERS): who, and whether it reads the uffd. */
static void holder_evidence(struct fl_stuck_verdict *v, const struct fl_stuck_uffd *u, pid_t self)
{
	for (int i = 0; i < u->nholders && i < SHOWN_HOLDERS; i++) {
		const struct fl_stuck_holder *h = &u->holders[i];
		char fds[64], reading[96] = "";

		fds_str(h, fds, sizeof(fds));
		if (h->nreaders)
			snprintf(reading, sizeof(reading), "thread %d waits on it in %s%s",
				 h->readers[0], h->reader_how ? h->reader_how : "?",
				 h->nreaders > 1 ? " (and others)" : "");
		else if (h->maybe_readers)
			snprintf(reading, sizeof(reading),
				 "%d thread(s) wait in poll/select/epoll on a set that could not be read",
				 h->maybe_readers);
		else
			snprintf(reading, sizeof(reading), "no thread of it reads or polls it%s%s%s",
				 h->doing[0] ? " (main thread " : "", h->doing,
				 h->doing[0] ? ")" : "");
		fl_stuck_ev(v, "uffd ino %" PRIu64 " is held by pid %d (%s%s, state %c) as "
			    "fd %s: %s", u->ino, h->pid, h->comm,
			    h->pid == self ? ", the waiter's process" : "", h->state, fds, reading);
		if (h->pid != self && (h->state == 'T' || h->state == 't'))
			fl_stuck_ev(v, "pid %d is stopped (state %c): it cannot read or resolve "
				    "anything until it is continued (SIGCONT, or the tracer "
				    "lets go)", h->pid, h->state);
	}
	if (u->nholders > SHOWN_HOLDERS)
		fl_stuck_ev(v, "uffd ino %" PRIu64 " has %d more holder(s)", u->ino,
			    u->nholders - SHOWN_HOLDERS);
}

/*
 * The verdict for a waiter whose process still has registered ranges (or
 * unknown ones): decided by the uffd's counters and who holds and reads it.
 */
static void decide_by_handler(const struct fl_stuck_scan *s, struct fl_stuck_thread *t);

void fl_stuck_decide(const struct fl_stuck_scan *s, struct fl_stuck_thread *t)
{
	struct fl_stuck_verdict *v = &t->v;
	const struct fl_stuck_proc *p = &s->procs[t->proc];
	const struct fl_stuck_uffd *u1 = t->ncand ? &s->uffds[t->cand[0]] : NULL;
	long pending = 0;

	memset(v, 0, sizeof(*v));
	for (int c = 0; c < t->ncand; c++)
		pending += s->uffds[t->cand[c]].pending;

	/* 1. no registered range left: the waiter's range went away under it */
	if (!p->err && !p->nranges) {
		v->verdict = FL_V_RANGE_UNMAPPED;
		fl_stuck_ev(v, "pid %d (%s) has no userfaultfd-registered range left (no um/uw/ui "
			    "in /proc/%d/smaps VmFlags), yet the thread sleeps in "
			    "handle_userfault: the range it faulted on was unmapped, remapped or "
			    "resized under it", p->pid, p->comm, p->pid);
		if (u1 && t->ncand == 1) {
			fl_stuck_ev(v, "uffd ino %" PRIu64 ": fdinfo pending %ld, total %ld",
				    u1->ino, u1->pending, u1->total);
			if (!(u1->features & (UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
					      UFFD_FEATURE_EVENT_REMOVE)))
				fl_stuck_ev(v, "the uffd has none of UFFD_FEATURE_EVENT_UNMAP/"
					    "REMAP/REMOVE (features 0x%" PRIx64 "): its handler "
					    "was not told of the change", u1->features);
		}
		fl_stuck_ev(v, "%s; only UFFDIO_WAKE on the old range releases the thread (its "
			    "retried access then takes SIGSEGV, or runs on in whatever is mapped "
			    "there now)",
			    pending ? "the fault message is still queued, but a COPY/CONTINUE "
				      "into the gone range would fail with ENOENT and wake nobody"
				    : "the fault was read (pending 0); a COPY/CONTINUE into the "
				      "gone range fails with ENOENT and wakes nobody");
		v->needs_history = "whether a COPY/CONTINUE failed there with no WAKE after it "
				   "(placement_failed), and which call changed the mapping, needs "
				   "the daemon's history";
		v->unstick = "UFFDIO_WAKE on the old range from a process holding the uffd; the "
			     "handler should also handle UNMAP/REMAP events (or WAKE after every "
			     "ENOENT from COPY/CONTINUE)";
		return;
	}
	decide_by_handler(s, t);
	/* last: what one-shot cannot tell about the range */
	if (!p->err)
		fl_stuck_ev(v, "pid %d still has %d registered range(s), so whether the waiter's "
			    "own range went away needs its fault address (not in /proc; the daemon "
			    "has it)", p->pid, p->nranges);
	else
		fl_stuck_ev(v, "the registered ranges of pid %d are unknown (smaps: %s)", p->pid,
			    strerror(-p->err));
}

static void decide_by_handler(const struct fl_stuck_scan *s, struct fl_stuck_thread *t)
{
	struct fl_stuck_verdict *v = &t->v;
	const struct fl_stuck_proc *p = &s->procs[t->proc];
	const struct fl_stuck_uffd *u1 = t->ncand ? &s->uffds[t->cand[0]] : NULL;
	long pending = 0, total = 0;
	int others = 0, readers = 0, maybe = 0, live = 0;
	bool unread;

	for (int c = 0; c < t->ncand; c++) {
		const struct fl_stuck_uffd *u = &s->uffds[t->cand[c]];

		pending += u->pending;
		total += u->total;
		live += fl_stuck_live_tasks(u);
		for (int h = 0; h < u->nholders; h++) {
			others += u->holders[h].pid != t->pid;
			readers += u->holders[h].nreaders;
			maybe += u->holders[h].maybe_readers;
		}
	}

	/* 2. no uffd with waiters anywhere: referenced only from inside the kernel */
	if (t->attrib == FL_ATTR_NONE) {
		v->verdict = FL_V_HANDLER_GONE;
		fl_stuck_ev(v, "no process holds a userfaultfd with waiters that this thread could "
			    "be waiting on (pid %d holds %d uffd fd(s), none with waiters): the "
			    "uffd lives on only inside the kernel (e.g. an SCM_RIGHTS message "
			    "never received), so nobody can read it", t->pid, p->nuffd_fds);
		if (s->unreadable)
			fl_stuck_ev(v, "%d process(es) could not be inspected (not root?): a "
				    "holder may be among them", s->unreadable);
		if (s->key_unique == 0)
			fl_stuck_ev(v, "this kernel gives every userfaultfd the same inode: uffds "
				    "cannot be told apart across processes");
		v->unstick = "nothing outside the kernel can resolve it; killing the process "
			     "(or delivering the pending SCM_RIGHTS message) ends the wait";
		return;
	}
	if (t->attrib == FL_ATTR_INFERRED)
		fl_stuck_ev(v, "pid %d holds no userfaultfd; uffd ino %" PRIu64 " is the only one "
			    "with waiters that no blocked process holds, so it is taken as this "
			    "thread's", t->pid, u1->ino);
	if (t->attrib == FL_ATTR_AMBIGUOUS) {
		char inos[96] = "";
		size_t off = 0;

		for (int c = 0; c < t->ncand && off < sizeof(inos); c++)
			off += (size_t)snprintf(inos + off, sizeof(inos) - off, "%s%" PRIu64,
						c ? ", " : "", s->uffds[t->cand[c]].ino);
		fl_stuck_ev(v, "%d userfaultfds with waiters could be this thread's (ino %s): "
			    "their counters are summed", t->ncand, inos);
	}

	/* 3. read or not: fdinfo pending, and for a mix, the kernel's oldest-first order */
	if (!pending) {
		unread = false;
	} else if (pending >= total) {
		unread = true;
	} else if (t->attrib != FL_ATTR_AMBIGUOUS && t->rank >= 0 && u1->nwaiters == total) {
		unread = t->rank >= total - pending;
		fl_stuck_ev(v, "%ld of its %ld waiters are unread; the kernel hands faults out "
			    "oldest first and this thread is number %d by time waited, so it is "
			    "taken as %s", pending, total, t->rank + 1, unread ? "unread" : "read");
	} else {
		unread = true;
		fl_stuck_ev(v, "%ld of %ld waiters are unread and which ones cannot be told (%d "
			    "waiter(s) found): taken as unread", pending, total,
			    u1 ? u1->nwaiters : 0);
	}

	/* 4. who could read it: gone only if nobody but waiters is left */
	if (!others && !readers && !maybe && !live) {
		v->verdict = FL_V_HANDLER_GONE;
		fl_stuck_ev(v, "uffd ino %" PRIu64 " is held only by the waiter's own process %d, "
			    "whose every thread is itself asleep in a userfault: no handler is "
			    "left", u1->ino, t->pid);
		if (unread)
			fl_stuck_ev(v, "the fault message is still queued (fdinfo pending %ld, "
				    "total %ld): nobody has read it", pending, total);
		else {
			fl_stuck_ev(v, "the fault was read (fdinfo pending 0, total %ld) by a "
				    "thread that is gone: nothing reads the uffd any more", total);
			v->needs_history = "whether the handler died after reading the fault, or a "
					   "placement failed (placement_failed), needs the daemon's "
					   "history";
		}
		v->unstick = "start a new handler and hand it the uffd (SCM_RIGHTS from the "
			     "holding process), or resolve/WAKE the range from the holder itself";
		fl_stuck_threads_evidence(v, u1);
		return;
	}
	if (!readers && !maybe) {
		/* Somebody lives, nobody reads: a stalled handler (QEMU's fault
		 * thread while a postcopy is paused) and a gone one look alike. */
		v->verdict = unread ? FL_V_NOT_READ : FL_V_NOT_RESOLVED;
		fl_stuck_ev(v, "fdinfo pending %ld, total %ld: %s", pending, total, unread ?
			    "the fault message is still queued: the handler never read it" :
			    "the handler read the fault and never resolved it");
		fl_stuck_ev(v, "no thread of any holder reads or polls uffd ino %" PRIu64 " now, "
			    "yet %d live thread(s) of its holder(s) remain (listed below): a "
			    "handler thread that stalled (blocked elsewhere, e.g. a paused "
			    "postcopy waiting for recovery) and one that is gone look the same "
			    "from /proc", u1->ino, live);
		v->needs_history = "which thread last read this uffd, and whether it still lives "
				   "(handler_stalled) or not (handler_gone), needs the daemon's "
				   "history";
		v->unstick = "if a live handler thread stalled: find what it waits for and let it "
			     "go on (a paused postcopy: migrate-recover on the destination, then "
			     "resume the migration on the source) and start no second handler; if "
			     "the handler is gone: hand the uffd to a new handler (SCM_RIGHTS from "
			     "the holder), or resolve/WAKE the range from the holder itself";
	} else if (unread) {
		v->verdict = FL_V_NOT_READ;
		fl_stuck_ev(v, "fdinfo pending %ld, total %ld: the fault message is still queued: "
			    "the handler never read it", pending, total);
		v->unstick = "the handler must read the uffd: is it polling this fd for POLLIN, "
			     "is it wedged or stopped elsewhere?";
	} else {
		v->verdict = FL_V_NOT_RESOLVED;
		fl_stuck_ev(v, "fdinfo pending 0, total %ld: the handler read the fault and never "
			    "resolved it (no COPY/ZEROPAGE/CONTINUE/WAKE has reached this thread)",
			    total);
		v->needs_history = "a COPY/CONTINUE that failed (ENOENT, EEXIST, EAGAIN) with no "
				   "WAKE after it looks the same from /proc: placement_failed needs "
				   "the daemon's history";
		v->unstick = "the handler must place the page (COPY/ZEROPAGE/CONTINUE) or "
			     "UFFDIO_WAKE the thread; check where its page request went";
	}
	for (int c = 0; c < t->ncand; c++)
		holder_evidence(v, &s->uffds[t->cand[c]], t->pid);
	for (int c = 0; c < t->ncand; c++)
		fl_stuck_threads_evidence(v, &s->uffds[t->cand[c]]);
	if (unread && readers)
		fl_stuck_ev(v, "a thread waits on the uffd yet the message stays unread: it may be "
			    "busy elsewhere between polls, or polling for the wrong events");
}
