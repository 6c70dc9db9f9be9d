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
#include "stuck_int.h"
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
	uint64_t start = 0, end = 0, kps = 0;
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
			kps = 0;
			continue;
		}
		/* KernelPageSize comes before VmFlags in every VMA's block */
		if (sscanf(line, "KernelPageSize: %llu kB", &a) == 1) {
			kps = a * 1024;
			continue;
		}
		modes = fl_parse_vmflags_uffd(line);
		if (!modes)
			continue;
		/* neighbours with the same modes are one range to the user */
		if (p->nranges && p->ranges[p->nranges - 1].end == start &&
		    p->ranges[p->nranges - 1].modes == modes &&
		    p->ranges[p->nranges - 1].page_size == kps) {
			p->ranges[p->nranges - 1].end = end;
			continue;
		}
		void *n = grow(p->ranges, &cap, p->nranges, sizeof(*p->ranges));

		if (!n) {
			fclose(f);
			return -ENOMEM;
		}
		p->ranges = n;
		p->ranges[p->nranges++] = (struct fl_stuck_range){ start, end, modes, kps };
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
