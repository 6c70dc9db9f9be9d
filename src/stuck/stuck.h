/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Why is a thread stuck in a userfault?  A one-shot analysis over /proc
 * alone (no BPF, no history): which threads sleep in handle_userfault, the
 * userfaultfd each waits on and who holds it, what the fdinfo counters and
 * the registered ranges say, how long the thread has waited, and a verdict
 * with its evidence.
 *
 * Collecting (fl_stuck_scan) reads /proc; deciding (fl_stuck_decide) is a
 * pure function of the collected facts, so it is unit-tested on synthetic
 * scans; the small parsers are pure too.
 */
#ifndef FAULTLINE_STUCK_H
#define FAULTLINE_STUCK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FL_STUCK_COMM 16
#define FL_STUCK_MAX_FDS 8	/* fds of one uffd listed per holder */
#define FL_STUCK_MAX_READERS 4	/* reader threads listed per holder */
#define FL_STUCK_MAX_THREADS 64	/* threads of a holder named in the evidence */
#define FL_STUCK_MAX_CAND 4	/* candidate uffds listed per thread */
#define FL_STUCK_MAX_EV 20	/* evidence sentences per verdict (with history: more) */
#define FL_STUCK_EV_LEN 320

enum fl_verdict {
	FL_V_NOT_READ,		/* the handler never read the fault (fdinfo pending) */
	FL_V_NOT_RESOLVED,	/* read, never resolved */
	FL_V_PLACEMENT_FAILED,	/* a COPY/CONTINUE failed, no WAKE followed: history only */
	FL_V_RANGE_UNMAPPED,	/* the range went away under the waiter */
	FL_V_HANDLER_GONE,	/* nobody left to read it */
	FL_V_HANDLER_STALLED,	/* the thread that read it last lives, but reads it no more: history */
	FL_V_NR,
};

/* How the waiter got into handle_userfault (from its kernel stack). */
enum fl_fault_path { FL_PATH_UNKNOWN, FL_PATH_USER, FL_PATH_KVM, FL_PATH_GUP, FL_PATH_KERNEL };

/* How a thread's userfaultfd was found. */
enum fl_attrib {
	FL_ATTR_NONE,		/* no uffd with waiters found anywhere */
	FL_ATTR_HELD,		/* the only uffd with waiters its process holds */
	FL_ATTR_INFERRED,	/* its process holds none: the only unclaimed uffd with waiters */
	FL_ATTR_AMBIGUOUS,	/* several candidates; counters summed */
};

/* Userfault registration modes of a range (smaps VmFlags um/uw/ui). */
#define FL_UM_MISSING 1u
#define FL_UM_WP 2u
#define FL_UM_MINOR 4u

/* The kernel-internal "API handshake done" bit fdinfo shows in the features. */
#define FL_UFFD_INITIALIZED (1ull << 31)

struct fl_uffd_fdinfo {
	long pending, total;
	uint64_t ino;
	uint64_t features;	/* as shown: may include FL_UFFD_INITIALIZED */
	uint64_t ioctls;
};

/* A /proc/TID/syscall line: "running", "-1 sp pc" or "nr a1..a6 sp pc". */
struct fl_syscall_line {
	bool running;
	bool in_syscall;
	long nr;
	uint64_t args[6], sp, pc;
};

/* One thread of a holder process, as /proc shows it. */
struct fl_stuck_task {
	pid_t tid;
	char comm[FL_STUCK_COMM];	/* its own name: QEMU names its threads (debug-threads=on) */
	char state;
	char wchan[40];
	bool waiter;		/* asleep in handle_userfault itself */
};

struct fl_stuck_holder {
	pid_t pid;
	char comm[FL_STUCK_COMM];
	char state;		/* /proc/PID/stat state of the process */
	int nfds;
	int fds[FL_STUCK_MAX_FDS];
	int nreaders;		/* threads blocked reading or polling this uffd */
	pid_t readers[FL_STUCK_MAX_READERS];
	const char *reader_how;	/* "read", "poll", "epoll_wait", ... of the first */
	int maybe_readers;	/* in poll/select/epoll with a set that could not be read */
	char doing[48];		/* what its main thread is blocked in, for the evidence */
	int blocked;		/* its own threads asleep in handle_userfault */
	int ntasks;		/* threads seen (tasks holds the first FL_STUCK_MAX_THREADS) */
	struct fl_stuck_task tasks[FL_STUCK_MAX_THREADS];
};

struct fl_stuck_uffd {
	uint64_t dev, ino;	/* the key: every uffd has its own inode (checked) */
	long pending, total;
	uint64_t features;	/* without FL_UFFD_INITIALIZED */
	bool initialized;
	int nholders, capholders;
	struct fl_stuck_holder *holders;
	int nwaiters;		/* blocked threads attributed to it */
};

struct fl_stuck_range {
	uint64_t start, end;
	unsigned modes;		/* FL_UM_* */
	uint64_t page_size;	/* smaps KernelPageSize (hugetlbfs: the huge page), 0 unknown */
};

/* A process with blocked threads: its registered ranges. */
struct fl_stuck_proc {
	pid_t pid;
	char comm[FL_STUCK_COMM];
	int err;		/* -errno reading its smaps; the ranges are unknown */
	int nranges;
	struct fl_stuck_range *ranges;
	int nuffd_fds;		/* uffd fds it holds (any uffd) */
};

struct fl_stuck_verdict {
	enum fl_verdict verdict;
	int nev;
	char ev[FL_STUCK_MAX_EV][FL_STUCK_EV_LEN];
	/* what only the daemon's history can settle, or NULL */
	const char *needs_history;
	/* what would let the thread go */
	const char *unstick;
};

struct fl_stuck_thread {
	pid_t pid, tid;
	char tcomm[FL_STUCK_COMM];
	int proc;		/* index into procs */
	bool by_stack;		/* wchan did not say handle_userfault, the stack did */
	enum fl_fault_path path;
	struct fl_syscall_line sc;
	int cpu;
	int64_t waited_ns;	/* -1: unknown */
	uint64_t blocked_since_ns;	/* CLOCK_MONOTONIC; valid when waited_ns >= 0 */
	enum fl_attrib attrib;
	int ncand;
	int cand[FL_STUCK_MAX_CAND];	/* indexes into uffds; cand[0] when attributed */
	int rank;		/* among its uffd's waiters, 0 = waited longest; -1 unknown */
	struct fl_stuck_verdict v;
};

/* Per-CPU offsets from the scheduler's task clock to CLOCK_MONOTONIC. */
struct fl_stuck_clock {
	int ncpu;
	int64_t *off;
	unsigned char *state;	/* 0 not tried, 1 measured, 2 failed */
};

/* One scan: everything it found; freed with fl_stuck_free. */
struct fl_stuck_scan {
	struct fl_stuck_uffd *uffds;
	int nuffds, capuffds;
	struct fl_stuck_proc *procs;
	int nprocs, capprocs;
	struct fl_stuck_thread *threads;
	int nthreads, capthreads;
	int threads_scanned;
	int unreadable;		/* processes whose fds could not be read */
	int key_unique;		/* 1 yes, 0 no (uffds share one inode), -1 unknown */
	uint64_t now_ns;
	struct fl_stuck_clock clock;
};

/*
 * Scans /proc: every thread of pids (all processes when npids == 0) asleep
 * in handle_userfault, every userfaultfd in the system and its holders, and
 * decides a verdict for each thread.  Returns 0 or -errno (s is then empty).
 */
int fl_stuck_scan(struct fl_stuck_scan *s, const pid_t *pids, int npids);
void fl_stuck_free(struct fl_stuck_scan *s);

/* The thread tid of a holder of uffd u, or NULL (pure). */
const struct fl_stuck_task *fl_stuck_holder_task(const struct fl_stuck_uffd *u, pid_t tid);
/* Threads of u's holders that could still read it: alive and not themselves waiters. */
int fl_stuck_live_tasks(const struct fl_stuck_uffd *u);
/* Threads of u's holders that read or poll it, or may (a set not readable). */
int fl_stuck_possible_readers(const struct fl_stuck_uffd *u);
/* Evidence naming every thread of every holder of u: tid, name, state, wait channel. */
void fl_stuck_threads_evidence(struct fl_stuck_verdict *v, const struct fl_stuck_uffd *u);

/* Decides t's verdict from the scan's facts (pure: no /proc access). */
void fl_stuck_decide(const struct fl_stuck_scan *s, struct fl_stuck_thread *t);

/*
 * Attributes every thread to its userfaultfd and ranks the waiters of each
 * (pure; fl_stuck_scan calls it before deciding).
 */
void fl_stuck_attribute(struct fl_stuck_scan *s);

/*
 * Adds one evidence sentence to v (dropped once FL_STUCK_MAX_EV are there,
 * cut at FL_STUCK_EV_LEN); the history merge (stuck_hist.c) adds its own
 * to the same verdict.
 */
void fl_stuck_ev(struct fl_stuck_verdict *v, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

const char *fl_verdict_name(enum fl_verdict v);
const char *fl_fault_path_name(enum fl_fault_path p);
const char *fl_attrib_name(enum fl_attrib a);
/* "missing", "wp", "minor" joined with '+' into buf. */
const char *fl_uffd_modes_str(unsigned modes, char *buf, size_t len);

/* "500ms", "2s", "1.5m", "250us", "10ns", "1h" -> ns. -EINVAL or -ERANGE. */
int fl_parse_duration(const char *s, uint64_t *ns);

/* Parsers of /proc text (pure). Return 0 or -EINVAL. */
int fl_parse_uffd_fdinfo(const char *text, struct fl_uffd_fdinfo *out);
int fl_parse_syscall_line(const char *text, struct fl_syscall_line *out);
/* FL_UM_* bits of a "VmFlags: ..." line (0 when none). */
unsigned fl_parse_vmflags_uffd(const char *line);
/* se.exec_start of a /proc/TID/sched text, in ns. */
int fl_parse_sched_exec_start(const char *text, uint64_t *ns);
/* The fault path from a /proc/TID/stack text. */
enum fl_fault_path fl_parse_stack_path(const char *text);
/* The name of a syscall number on this architecture, or NULL. */
const char *fl_syscall_name(long nr);

#endif
