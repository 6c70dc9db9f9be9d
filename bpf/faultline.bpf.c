// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline's kernel side: the userfault lifecycle from tracepoints alone.
 *
 *   block   sched_switch whose prev task has handle_userfault on its stack
 *           (page_fault_user supplies the address of user faults)
 *   notify  exit of read() on a userfaultfd: the uffd_msg records
 *   resolve exit of ioctl() on a userfaultfd: COPY, ZEROPAGE, ... WAKE
 *   wake    sched_wakeup of a blocked thread
 *   run     sched_switch into a blocked thread
 *
 * Every handler starts with one lookup in fl_tracked; untracked tasks pay
 * nothing more. Each scheduler handler is written once and exposed as
 * tp_btf (preferred) and raw_tp (fallback, and the BPF_PROG_TEST_RUN hook).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "faultline_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Kernel text ranges, from /proc/kallsyms, set before load. */
const volatile __u64 huf_start = 0;	/* handle_userfault */
const volatile __u64 huf_end = 0;
/* Start tracking any process that creates a userfaultfd (or uses one it
 * was handed), from that syscall on; with track_comm set, only processes
 * of that name (the group leader's comm, as /proc/PID/comm shows it). */
const volatile bool track_new = true;
const volatile char track_comm[16] = {};
const volatile __u32 self_tgid = 0;
/* Block detection for user faults by inference, confirmed in the agent (not in --lite). */
const volatile bool infer_user_faults = false;
/* Wake the agent once this much is waiting in the ring buffer. */
const volatile __u64 wakeup_bytes = 1 << 20;

#define UFFD_NAME "[userfaultfd]"

struct fl_blocked {
	__u64 ts;
	__u64 addr;
	__u32 woken;
	__u32 pad;
};

/*
 * The user registers identify the kernel entry: a block belongs to this
 * page fault only if the task's saved user ip/sp are still the ones the
 * fault saw. (Under KVM, exc_page_fault can be on a vCPU's stack for a
 * guest access while the thread's last user fault is long over.)
 */
struct fl_pf {
	__u64 addr;
	__u64 ts;
	__u64 err;
	__u64 ip, sp;
	__u64 regs;
};

/* Arguments saved at syscall entry, consumed at exit. */
struct fl_sc {
	__u64 ts;
	__u64 ctx;
	__u64 mm;
	__u64 args[6];
	__u64 words[5];	/* the ioctl argument struct as it was at entry */
	__u32 nr;	/* enum fl_sc_nr */
	__u32 fd;
};

enum fl_sc_nr {
	SC_READ = 1,
	SC_IOCTL,
	SC_MUNMAP,
	SC_MREMAP,
	SC_MMAP,
	SC_MADVISE,
	SC_FALLOCATE,
	SC_USERFAULTFD,
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);	/* tgid */
	__type(value, __u32);	/* FL_TRACK_* */
} fl_tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);	/* tid */
	__type(value, struct fl_blocked);
} fl_blocked SEC(".maps");

/* Last user page fault per thread; a cache, so LRU eviction is harmless. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct fl_pf);
} fl_pf_last SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, struct fl_sc);
} fl_sc SEC(".maps");

/*
 * Threads that read a userfaultfd. A handler thread never waits on a
 * userfault itself (it would be waiting for itself), so its many sleeps in
 * poll/read need no stack walk.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u8);
} fl_handlers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FL_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} fl_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20);
} fl_events SEC(".maps");

/* vCPU threads already reported, so KVM_RUN costs one lookup after the first. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);	/* tid */
	__type(value, struct fl_vcpu_info);
} fl_vcpus SEC(".maps");

/*
 * KVM exits counted in the kernel: one record per exit would flood the ring.
 * LRU, so threads that come and go cannot fill it and stop the counting.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct fl_exit_key);
	__type(value, __u64);
} fl_exits SEC(".maps");

/*
 * Poison seen from a vCPU. The vCPU may touch a page microseconds after the
 * UFFDIO_POISON that woke it, long before the agent reads the record, so the
 * kernel side keeps both halves: the memslots (guest-physical <-> host) of
 * tracked VMMs and the host pages poisoned through their userfaultfds.
 */
struct fl_slot_key {
	__u32 tgid;
	__u32 slot;
};

struct fl_slot {
	__u64 gpa, size, hva;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fl_slot_key);
	__type(value, struct fl_slot);
} fl_memslots SEC(".maps");

struct fl_page_key {
	__u64 mm;	/* the address space the page belongs to (ctx->mm) */
	__u64 page;	/* host address >> 12 */
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct fl_page_key);
	__type(value, __u8);
} fl_poison_hva SEC(".maps");

/* At most this many pages of one UFFDIO_POISON are remembered (counted beyond). */
#define FL_POISON_PAGES_MAX 64

/* Scratch for bpf_get_stack: too big for the 512-byte BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[FL_STACK_DEPTH]);
} fl_stack SEC(".maps");

/* f_op of userfaultfd files, learned from the first file named [userfaultfd]. */
__u64 uffd_fops = 0;

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&fl_counters, &idx);

	if (v)
		*v += 1;
}

static __always_inline bool tracked(__u32 tgid)
{
	return bpf_map_lookup_elem(&fl_tracked, &tgid) != NULL;
}

static __always_inline struct fl_event *ev_new(__u32 type, __u32 pid, __u32 tid)
{
	struct fl_event *e = bpf_ringbuf_reserve(&fl_events, sizeof(*e), 0);

	if (!e) {
		count(FL_CNT_RB_LOST);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	e->type = type;
	e->pid = pid;
	e->tid = tid;
	e->cpu = bpf_get_smp_processor_id();
	return e;
}

/*
 * Waking the consumer for every record would put the agent on a CPU for
 * every fault, on the same cores as the workload; it polls every few ms
 * instead and is only woken early when the buffer starts to fill.
 */
static __always_inline void ev_submit(struct fl_event *e)
{
	__u64 avail = bpf_ringbuf_query(&fl_events, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(e, avail > wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline struct fl_event *ev_current(__u32 type)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct fl_event *e = ev_new(type, id >> 32, (__u32)id);

	if (e)
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	return e;
}

/* ---- block / wake / run ------------------------------------------------ */

/* The page fault the task is inside right now, if any. */
static __always_inline struct fl_pf *current_user_fault(__u32 tid)
{
	struct fl_pf *pf = bpf_map_lookup_elem(&fl_pf_last, &tid);
	struct pt_regs *ur;

	/*
	 * Inside that user page fault iff the task's user-entry frame
	 * (pf->regs) still holds the ip/sp the fault saw; a syscall or KVM_RUN
	 * entered since would have replaced them.
	 */
	if (!pf)
		return NULL;
	ur = (struct pt_regs *)pf->regs;
	if (!ur || pf->ip != BPF_CORE_READ(ur, ip) || pf->sp != BPF_CORE_READ(ur, sp))
		return NULL;
	return pf;
}

/* Is handle_userfault among the innermost frames of the current stack? */
static __always_inline bool in_handle_userfault(void *ctx)
{
	__u32 zero = 0;
	__u64 *stack = bpf_map_lookup_elem(&fl_stack, &zero);
	long n;

	if (!stack)
		return false;
	count(FL_CNT_STACK_WALKS);
	n = bpf_get_stack(ctx, stack, FL_STACK_DEPTH * sizeof(__u64), 0);
	if (n <= 0) {
		count(FL_CNT_STACK_MISS);
		return false;
	}
	for (int i = 0; i < FL_STACK_DEPTH; i++) {
		if (i >= n / 8)
			break;
		if (stack[i] >= huf_start && stack[i] < huf_end)
			return true;
	}
	return false;
}

static __always_inline void on_block(void *ctx, struct task_struct *prev, __u32 tgid,
				     unsigned int prev_state)
{
	__u32 tid = BPF_CORE_READ(prev, pid);
	struct fl_sc *sc = bpf_map_lookup_elem(&fl_sc, &tid);
	struct fl_blocked b = {};
	struct fl_event *e;
	struct fl_pf *pf;
	__u32 flags = 0;

	/* Asleep in read()/ioctl() on a userfaultfd, or a handler: not in a fault. */
	if ((sc && (sc->nr == SC_READ || sc->nr == SC_IOCTL)) ||
	    bpf_map_lookup_elem(&fl_handlers, &tid))
		return;
	pf = current_user_fault(tid);
	if (pf && infer_user_faults) {
		/*
		 * A sleep inside a user fault of a uffd process is almost always
		 * handle_userfault; the agent confirms it by the uffd_msg or the
		 * resolution that follows, so the ~4 us stack walk is skipped.
		 */
		flags |= FL_BLOCK_INFERRED;
	} else if (!in_handle_userfault(ctx)) {
		return;
	}
	b.ts = bpf_ktime_get_ns();
	if (pf)
		b.addr = pf->addr;
	count(FL_CNT_BLOCKS);
	if (bpf_map_update_elem(&fl_blocked, &tid, &b, BPF_ANY))
		count(FL_CNT_BLOCKED_FULL);
	e = ev_new(FL_EV_BLOCK, tgid, tid);
	if (!e)
		return;
	e->ts = b.ts;
	BPF_CORE_READ_STR_INTO(&e->comm, prev, comm);
	BPF_CORE_READ_STR_INTO(&e->block.pcomm, prev, group_leader, comm);
	e->block.state = prev_state;
	e->block.mm = (__u64)BPF_CORE_READ(prev, mm);
	if (pf) {
		flags |= FL_BLOCK_USER_PF;
		e->block.addr = pf->addr;
		e->block.pf_ts = pf->ts;
		e->block.pf_err = pf->err;
	}
	e->block.flags = flags;
	ev_submit(e);
}

static __always_inline int on_sched_switch(void *ctx, bool preempt,
					   struct task_struct *prev,
					   struct task_struct *next,
					   unsigned int prev_state)
{
	__u32 prev_tgid = BPF_CORE_READ(prev, tgid);
	__u32 next_tgid = BPF_CORE_READ(next, tgid);

	/* sched_switch runs in prev's context: bpf_get_stack sees prev's stack */
	if (!preempt && prev_state != 0 && tracked(prev_tgid))
		on_block(ctx, prev, prev_tgid, prev_state);

	if (tracked(next_tgid)) {
		__u32 tid = BPF_CORE_READ(next, pid);
		struct fl_blocked *b = bpf_map_lookup_elem(&fl_blocked, &tid);
		struct fl_event *e;

		if (!b)
			return 0;
		e = ev_new(FL_EV_RUN, next_tgid, tid);
		if (e) {
			BPF_CORE_READ_STR_INTO(&e->comm, next, comm);
			e->wake.block_ts = b->ts;
			ev_submit(e);
		}
		bpf_map_delete_elem(&fl_blocked, &tid);
	}
	return 0;
}

static __always_inline int on_sched_wakeup(struct task_struct *p)
{
	__u32 tgid = BPF_CORE_READ(p, tgid), tid;
	struct fl_blocked *b;
	struct fl_event *e;
	__u64 id;

	if (!tracked(tgid))
		return 0;
	tid = BPF_CORE_READ(p, pid);
	b = bpf_map_lookup_elem(&fl_blocked, &tid);
	if (!b || b->woken)
		return 0;
	b->woken = 1;
	e = ev_new(FL_EV_WAKEUP, tgid, tid);
	if (!e)
		return 0;
	BPF_CORE_READ_STR_INTO(&e->comm, p, comm);
	id = bpf_get_current_pid_tgid();
	e->wake.waker_tid = (__u32)id;
	e->wake.waker_pid = id >> 32;
	e->wake.block_ts = b->ts;
	ev_submit(e);
	return 0;
}

static __always_inline int on_page_fault_user(unsigned long address, struct pt_regs *regs,
					      unsigned long err)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;
	struct fl_pf pf, *old;

	if (!tracked(id >> 32))
		return 0;
	pf.addr = address;
	pf.ts = bpf_ktime_get_ns();
	pf.err = err;
	pf.ip = BPF_CORE_READ(regs, ip);
	pf.sp = BPF_CORE_READ(regs, sp);
	pf.regs = (__u64)regs;
	/* user faults are frequent: overwrite in place, insert only once per thread */
	old = bpf_map_lookup_elem(&fl_pf_last, &tid);
	if (old)
		*old = pf;
	else
		bpf_map_update_elem(&fl_pf_last, &tid, &pf, BPF_ANY);
	return 0;
}

static __always_inline int on_process_fork(struct task_struct *parent,
					   struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 cpid = BPF_CORE_READ(child, pid);
	__u32 *why = bpf_map_lookup_elem(&fl_tracked, &ptgid);
	__u32 v = FL_TRACK_CHILD;
	struct fl_event *e;

	/* Threads share the tgid and are tracked already; fds travel with new processes. */
	if (!why || BPF_CORE_READ(child, tgid) != cpid)
		return 0;
	bpf_map_update_elem(&fl_tracked, &cpid, &v, BPF_NOEXIST);
	e = ev_current(FL_EV_PROC_FORK);
	if (e) {
		e->proc.child_pid = cpid;
		ev_submit(e);
	}
	return 0;
}

static __always_inline int on_process_exit(struct task_struct *p)
{
	__u32 tgid = BPF_CORE_READ(p, tgid), tid;
	struct fl_event *e;

	if (!tracked(tgid))
		return 0;
	tid = BPF_CORE_READ(p, pid);
	bpf_map_delete_elem(&fl_blocked, &tid);
	bpf_map_delete_elem(&fl_pf_last, &tid);
	bpf_map_delete_elem(&fl_sc, &tid);
	bpf_map_delete_elem(&fl_handlers, &tid);
	bpf_map_delete_elem(&fl_vcpus, &tid);
	if (tid != tgid)
		return 0;
	/* The group leader exits last: the process is gone. */
	bpf_map_delete_elem(&fl_tracked, &tgid);
	e = ev_current(FL_EV_PROC_EXIT);
	if (e)
		ev_submit(e);
	return 0;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(tpbtf_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	return on_sched_switch(ctx, preempt, prev, next, prev_state);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(raw_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	return on_sched_switch(ctx, preempt, prev, next, prev_state);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(tpbtf_sched_wakeup, struct task_struct *p)
{
	return on_sched_wakeup(p);
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(raw_sched_wakeup, struct task_struct *p)
{
	return on_sched_wakeup(p);
}

SEC("tp_btf/page_fault_user")
int BPF_PROG(tpbtf_page_fault_user, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	return on_page_fault_user(address, regs, error_code);
}

SEC("raw_tp/page_fault_user")
int BPF_PROG(raw_page_fault_user, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	return on_page_fault_user(address, regs, error_code);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(tpbtf_sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	return on_process_fork(parent, child);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(raw_sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	return on_process_fork(parent, child);
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(tpbtf_sched_process_exit, struct task_struct *p)
{
	return on_process_exit(p);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(raw_sched_process_exit, struct task_struct *p)
{
	return on_process_exit(p);
}

/* ---- syscalls: notify, resolve, register, mapping changes -------------- */

/* The file behind fd in the current task, or NULL. */
static __always_inline struct file *file_of_fd(__u32 fd)
{
	/* a BTF task pointer: the loads below are direct, not helper calls */
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file **fdarr = fdt->fd;
	struct file *f = NULL;

	if (fd >= fdt->max_fds)
		return NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fdarr[fd]);
	return f;
}

/* The userfaultfd_ctx behind fd in the current task, or 0 if fd is not a userfaultfd. */
static __always_inline __u64 uffd_ctx_of(__u32 fd)
{
	struct file *f = file_of_fd(fd);
	__u64 fops;

	if (!f)
		return 0;
	fops = (__u64)BPF_CORE_READ(f, f_op);
	if (!uffd_fops) {
		char name[sizeof(UFFD_NAME)] = {};
		const unsigned char *dname = BPF_CORE_READ(f, f_path.dentry, d_name.name);
		const char want[] = UFFD_NAME;

		bpf_probe_read_kernel_str(name, sizeof(name), dname);
		for (int i = 0; i < (int)sizeof(want); i++)
			if (name[i] != want[i])
				return 0;
		uffd_fops = fops;
	} else if (fops != uffd_fops) {
		return 0;
	}
	return (__u64)BPF_CORE_READ(f, private_data);
}

static __always_inline __u64 ctx_mm(__u64 ctx)
{
	return (__u64)BPF_CORE_READ((struct userfaultfd_ctx *)ctx, mm);
}

static __always_inline struct fl_sc *sc_save(__u32 nr, const __u64 *args, int nargs)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct fl_sc sc = { .ts = bpf_ktime_get_ns(), .nr = nr };

	for (int i = 0; i < 6; i++)
		if (i < nargs)
			sc.args[i] = args[i];
	if (bpf_map_update_elem(&fl_sc, &tid, &sc, BPF_ANY)) {
		count(FL_CNT_SC_FULL);
		return NULL;
	}
	return bpf_map_lookup_elem(&fl_sc, &tid);
}

/* Pops the saved entry of this thread if it belongs to syscall nr. */
static __always_inline bool sc_take(__u32 nr, struct fl_sc *out)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct fl_sc *sc = bpf_map_lookup_elem(&fl_sc, &tid);

	if (!sc)
		return false;
	if (sc->nr != nr) {
		bpf_map_delete_elem(&fl_sc, &tid);
		return false;
	}
	__builtin_memcpy(out, sc, sizeof(*out));
	bpf_map_delete_elem(&fl_sc, &tid);
	return true;
}

static __always_inline bool current_tracked(void)
{
	return tracked(bpf_get_current_pid_tgid() >> 32);
}

static __always_inline void track_current(__u32 why)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u32 *old = bpf_map_lookup_elem(&fl_tracked, &tgid);
	__u32 v = why;

	if (tgid == self_tgid)
		return;
	if (old)
		*old |= why;	/* racy but idempotent */
	else
		bpf_map_update_elem(&fl_tracked, &tgid, &v, BPF_NOEXIST);
}

/* May the current, untracked process start being tracked? */
static __always_inline bool may_track_new(void)
{
	struct task_struct *t;
	char comm[16];

	if (!track_new)
		return false;
	if (!track_comm[0])
		return true;
	t = (struct task_struct *)bpf_get_current_task();
	BPF_CORE_READ_STR_INTO(&comm, t, group_leader, comm);
	for (int i = 0; i < 16; i++) {
		if (comm[i] != track_comm[i])
			return false;
		if (!comm[i])
			break;
	}
	return true;
}

static __always_inline int on_read_enter(__u64 fd, __u64 buf, __u64 count_)
{
	__u64 args[3] = { fd, buf, count_ };
	__u64 ctx;
	struct fl_sc *sc;

	if (!current_tracked()) {
		/* A handler handed a userfaultfd (SCM_RIGHTS, pidfd_getfd)
		 * reading it for the first time: a holder from this read on.
		 * Cheap for everyone else only once a uffd's f_op is known. */
		if (!uffd_fops || !may_track_new() || !(ctx = uffd_ctx_of(fd)))
			return 0;
		track_current(FL_TRACK_HOLDER);
	} else {
		ctx = uffd_ctx_of(fd);
		if (!ctx)
			return 0;
	}
	sc = sc_save(SC_READ, args, 3);
	if (sc) {
		sc->ctx = ctx;
		sc->fd = fd;
	}
	return 0;
}

static __always_inline int on_read_exit(long ret)
{
	struct fl_sc sc;
	struct uffd_msg msg;
	__u64 mm;
	long n;

	if (!current_tracked() || !sc_take(SC_READ, &sc))
		return 0;
	{
		__u32 tid = (__u32)bpf_get_current_pid_tgid();
		__u8 one = 1;

		if (!bpf_map_lookup_elem(&fl_handlers, &tid))
			bpf_map_update_elem(&fl_handlers, &tid, &one, BPF_ANY);
	}
	if (ret <= 0)
		return 0;
	n = ret / FL_UFFD_MSG_SIZE;
	if (n > FL_MAX_MSGS_PER_READ) {
		__u32 i = FL_CNT_MSGS_TRUNC;
		__u64 *v = bpf_map_lookup_elem(&fl_counters, &i);

		if (v)
			*v += n - FL_MAX_MSGS_PER_READ;
	}
	mm = ctx_mm(sc.ctx);
	for (int i = 0; i < FL_MAX_MSGS_PER_READ; i++) {
		struct fl_event *e;

		if (i >= n)
			break;
		if (bpf_probe_read_user(&msg, sizeof(msg),
					(void *)(sc.args[1] + i * FL_UFFD_MSG_SIZE)))
			break;
		e = ev_current(FL_EV_NOTIFY);
		if (!e)
			break;
		e->notify.ctx = sc.ctx;
		e->notify.mm = mm;
		e->notify.fd = sc.fd;
		e->notify.event = msg.event;
		e->notify.idx = i;
		switch (msg.event) {
		case 0x12: { /* UFFD_EVENT_PAGEFAULT */
			__u32 ptid = msg.arg.pagefault.feat.ptid;
			struct fl_pf *pf = ptid ? bpf_map_lookup_elem(&fl_pf_last, &ptid) : NULL;

			e->notify.addr = msg.arg.pagefault.address;
			e->notify.flags = msg.arg.pagefault.flags;
			e->notify.ptid = ptid;
			if (pf && (pf->addr >> 12) == (e->notify.addr >> 12))
				e->notify.pf_ts = pf->ts;
			break;
		}
		case 0x13: /* FORK */
			e->notify.arg2 = msg.arg.fork.ufd;
			break;
		case 0x14: /* REMAP */
			e->notify.addr = msg.arg.remap.from;
			e->notify.arg2 = msg.arg.remap.to;
			e->notify.arg3 = msg.arg.remap.len;
			break;
		case 0x15: /* REMOVE */
		case 0x16: /* UNMAP */
			e->notify.addr = msg.arg.remove.start;
			e->notify.arg2 = msg.arg.remove.end;
			break;
		}
		ev_submit(e);
	}
	return 0;
}

#define IOC_TYPE(cmd) (((cmd) >> 8) & 0xff)
#define IOC_SIZE(cmd) (((cmd) >> 16) & 0x3fff)

/* Read only the argument struct's own size: a range is 16 bytes, COPY 40. */
static __always_inline __u32 ioc_arg_size(__u64 cmd)
{
	__u32 sz = IOC_SIZE(cmd);

	return sz > 40 ? 40 : sz;
}
#define IOC_NR(cmd) ((cmd) & 0xff)
#define USERFAULTFD_IOC_NEW_CMD 0xaa00	/* _IO(0xAA, 0x00) */

#define KVMIO 0xae
#define KVM_RUN_CMD 0xae80		/* _IO(KVMIO, 0x80) */
#define KVM_SET_USER_MEMORY_REGION_CMD 0x4020ae46
#define KVM_SET_USER_MEMORY_REGION2_CMD 0x40a0ae49

static __always_inline void note_vcpu(__u32 tid, __s32 vcpu_id, __u64 kvm, __u32 fd,
				      __u64 vcpu)
{
	struct fl_vcpu_info info = { .vcpu_id = vcpu_id, .vcpu = vcpu };
	struct fl_event *e;

	if (bpf_map_update_elem(&fl_vcpus, &tid, &info, BPF_NOEXIST))
		return;	/* known already (or table full) */
	e = ev_current(FL_EV_VCPU);
	if (!e)
		return;
	e->vcpu.vcpu_id = vcpu_id;
	e->vcpu.kvm = kvm;
	e->vcpu.fd = fd;
	ev_submit(e);
}

/* A KVM fd's private_data: struct kvm_vcpu * for a vCPU fd, struct kvm * for a VM fd. */
static __always_inline void *kvm_private_of_fd(__u32 fd)
{
	struct file *f = file_of_fd(fd);

	return f ? BPF_CORE_READ(f, private_data) : NULL;
}

#define KVM_VCPU_NAME "kvm-vcpu:"

/* struct kvm_vcpu * of a vCPU fd ("anon_inode:kvm-vcpu:N"), NULL for any other file. */
static __always_inline struct kvm_vcpu *kvm_vcpu_of_fd(__u32 fd)
{
	struct file *f = file_of_fd(fd);
	const char want[] = KVM_VCPU_NAME;
	char name[sizeof(KVM_VCPU_NAME)] = {};

	if (!f)
		return NULL;
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(f, f_path.dentry, d_name.name));
	for (int i = 0; i < (int)sizeof(want) - 1; i++)
		if (name[i] != want[i])
			return NULL;
	return BPF_CORE_READ(f, private_data);
}

static __always_inline int on_kvm_ioctl(__u64 fd, __u64 cmd, __u64 arg)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct kvm_userspace_memory_region r;
	struct fl_event *e;

	if (cmd == KVM_RUN_CMD) {
		__u32 tid = (__u32)id;
		struct kvm_vcpu *v;

		if (bpf_map_lookup_elem(&fl_vcpus, &tid))
			return 0;
		v = kvm_vcpu_of_fd(fd);
		if (v)
			note_vcpu(tid, BPF_CORE_READ(v, vcpu_id), (__u64)BPF_CORE_READ(v, kvm), fd,
				  (__u64)v);
		return 0;
	}
	if (cmd != KVM_SET_USER_MEMORY_REGION_CMD && cmd != KVM_SET_USER_MEMORY_REGION2_CMD)
		return 0;
	/* region2 starts with the same five fields */
	if (bpf_probe_read_user(&r, sizeof(r), (void *)arg))
		return 0;
	{
		struct fl_slot_key k = { .tgid = id >> 32, .slot = r.slot };
		struct fl_slot v = { r.guest_phys_addr, r.memory_size, r.userspace_addr };

		if (r.memory_size)
			bpf_map_update_elem(&fl_memslots, &k, &v, BPF_ANY);
		else
			bpf_map_delete_elem(&fl_memslots, &k);
	}
	e = ev_current(FL_EV_MEMSLOT);
	if (!e)
		return 0;
	e->memslot.slot = r.slot;
	e->memslot.flags = r.flags;
	e->memslot.gpa = r.guest_phys_addr;
	e->memslot.size = r.memory_size;
	e->memslot.hva = r.userspace_addr;
	e->memslot.kvm = (__u64)kvm_private_of_fd(fd);
	ev_submit(e);
	return 0;
}


static __always_inline int on_ioctl_enter(__u64 fd, __u64 cmd, __u64 arg)
{
	__u64 args[3] = { fd, cmd, arg };
	__u64 ctx = 0;
	struct fl_sc *sc;

	if (IOC_TYPE(cmd) == KVMIO)
		return current_tracked() ? on_kvm_ioctl(fd, cmd, arg) : 0;
	if (IOC_TYPE(cmd) != 0xaa)
		return 0;
	if (cmd != USERFAULTFD_IOC_NEW_CMD) {
		ctx = uffd_ctx_of(fd);
		if (!ctx)
			return 0;
	}
	if (!current_tracked()) {
		if (!may_track_new())
			return 0;
		/* A UFFDIO_* on a userfaultfd this process was handed (SCM_RIGHTS,
		 * pidfd_getfd: a migration router) makes it a holder from now on;
		 * /dev/userfaultfd: it is about to hold one. */
		if (cmd != USERFAULTFD_IOC_NEW_CMD)
			track_current(FL_TRACK_HOLDER);
	}
	sc = sc_save(SC_IOCTL, args, 3);
	if (!sc)
		return 0;
	sc->ctx = ctx;
	sc->fd = fd;
	if (ctx) {
		sc->mm = ctx_mm(ctx);
		bpf_probe_read_user(sc->words, ioc_arg_size(cmd), (void *)arg);
	}
	return 0;
}


static __always_inline void emit_uffd_new(long ret, __u32 flags, __u32 via_dev)
{
	struct fl_event *e;

	if (ret >= 0)
		track_current(FL_TRACK_HOLDER);
	e = ev_current(FL_EV_UFFD_NEW);
	if (!e)
		return;
	e->uffd_new.ret = ret;
	e->uffd_new.flags = flags;
	e->uffd_new.via_dev = via_dev;
	if (ret >= 0)
		e->uffd_new.ctx = uffd_ctx_of(ret);
	ev_submit(e);
}

static __always_inline void remember_poison(__u64 mm, __u64 start, __u64 len)
{
	struct fl_page_key k = { .mm = mm };
	__u8 one = 1;

	for (int i = 0; i < FL_POISON_PAGES_MAX; i++) {
		if ((__u64)i * 4096 >= len)
			return;
		k.page = (start >> 12) + i;
		bpf_map_update_elem(&fl_poison_hva, &k, &one, BPF_ANY);
	}
	if (len > (__u64)FL_POISON_PAGES_MAX * 4096)
		count(FL_CNT_POISON_TRUNC);
}

static __always_inline int on_ioctl_exit(long ret)
{
	struct fl_sc sc;
	__u64 w[5] = {};
	struct fl_event *e;
	__u32 op;

	if (!sc_take(SC_IOCTL, &sc))
		return 0;
	if (sc.args[1] == USERFAULTFD_IOC_NEW_CMD) {
		emit_uffd_new(ret, 0, 1);
		return 0;
	}
	op = IOC_NR(sc.args[1]);
	/* Results (copy, mapped, ...) are written back into the argument. */
	if (bpf_probe_read_user(w, ioc_arg_size(sc.args[1]), (void *)sc.args[2]))
		__builtin_memcpy(w, sc.words, sizeof(w));
	e = ev_current(FL_EV_IOCTL);
	if (!e)
		return 0;
	e->ioctl.ctx = sc.ctx;
	e->ioctl.mm = sc.mm;
	e->ioctl.fd = sc.fd;
	e->ioctl.op = op;
	e->ioctl.ret = ret;
	e->ioctl.enter_ts = sc.ts;
	switch (op) {
	case FL_OP_COPY:
	case FL_OP_MOVE:
		e->ioctl.start = sc.words[0];
		e->ioctl.aux = sc.words[1];
		e->ioctl.len = sc.words[2];
		e->ioctl.mode = sc.words[3];
		e->ioctl.result = w[4];
		break;
	case FL_OP_API:
		e->ioctl.start = sc.words[0];
		e->ioctl.aux = w[1];	/* features granted */
		break;
	case FL_OP_REGISTER:
		e->ioctl.start = sc.words[0];
		e->ioctl.len = sc.words[1];
		e->ioctl.mode = sc.words[2];
		e->ioctl.aux = w[3];	/* ioctls available on the range */
		break;
	default:	/* range, mode, result */
		e->ioctl.start = sc.words[0];
		e->ioctl.len = sc.words[1];
		e->ioctl.mode = sc.words[2];
		e->ioctl.result = w[3];
		break;
	}
	ev_submit(e);
	if (op == FL_OP_POISON)
		remember_poison(sc.mm, sc.words[0],
				ret == 0 ? sc.words[1] : ((__s64)w[3] > 0 ? w[3] : 0));
	return 0;
}

static __always_inline int on_map_enter(__u32 nr, const __u64 *args, int nargs)
{
	if (!current_tracked())
		return 0;
	sc_save(nr, args, nargs);
	return 0;
}

static __always_inline int on_map_exit(__u32 nr, long ret)
{
	struct fl_sc sc;
	struct fl_event *e;
	struct task_struct *task;

	if (!current_tracked() || !sc_take(nr, &sc))
		return 0;
	e = ev_current(FL_EV_MAPCHANGE);
	if (!e)
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	e->map.mm = (__u64)BPF_CORE_READ(task, mm);
	e->map.ret = ret;
	e->map.enter_ts = sc.ts;
	e->map.fd = -1;
	switch (nr) {
	case SC_MUNMAP:
		e->map.op = FL_MAP_MUNMAP;
		e->map.addr = sc.args[0];
		e->map.len = sc.args[1];
		break;
	case SC_MREMAP:
		e->map.op = FL_MAP_MREMAP;
		e->map.addr = sc.args[0];
		e->map.len = sc.args[1];
		e->map.new_len = sc.args[2];
		e->map.arg = sc.args[3];
		e->map.new_addr = ret < 0 ? sc.args[4] : (__u64)ret;
		break;
	case SC_MMAP:
		e->map.op = FL_MAP_MMAP_FIXED;
		e->map.addr = sc.args[0];
		e->map.len = sc.args[1];
		e->map.arg = sc.args[3];
		e->map.fd = (__s32)sc.args[4];
		break;
	case SC_MADVISE:
		e->map.op = FL_MAP_MADVISE;
		e->map.addr = sc.args[0];
		e->map.len = sc.args[1];
		e->map.arg = sc.args[2];
		break;
	case SC_FALLOCATE:
		e->map.op = FL_MAP_FALLOCATE;
		e->map.fd = (__s32)sc.args[0];
		e->map.arg = sc.args[1];
		e->map.addr = sc.args[2];	/* file offset */
		e->map.len = sc.args[3];
		break;
	}
	ev_submit(e);
	return 0;
}

#define MAP_FIXED_FLAG 0x10
#define MADV_DONTNEED_ 4
#define MADV_FREE_ 8
#define MADV_REMOVE_ 9
#define MADV_DONTNEED_LOCKED_ 24
#define FALLOC_FL_PUNCH_HOLE_ 0x02

SEC("tracepoint/syscalls/sys_enter_read")
int tp_read_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_read_enter(ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_read")
int tp_read_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_read_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_ioctl")
int tp_ioctl_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_ioctl_enter(ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_ioctl")
int tp_ioctl_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_ioctl_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_munmap")
int tp_munmap_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 a[2] = { ctx->args[0], ctx->args[1] };

	return on_map_enter(SC_MUNMAP, a, 2);
}

SEC("tracepoint/syscalls/sys_exit_munmap")
int tp_munmap_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_map_exit(SC_MUNMAP, ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_mremap")
int tp_mremap_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 a[5] = { ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[3], ctx->args[4] };

	return on_map_enter(SC_MREMAP, a, 5);
}

SEC("tracepoint/syscalls/sys_exit_mremap")
int tp_mremap_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_map_exit(SC_MREMAP, ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_mmap")
int tp_mmap_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 a[5] = { ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[3], ctx->args[4] };

	/* Only MAP_FIXED can replace (and so silently unregister) a mapping. */
	if (!(ctx->args[3] & MAP_FIXED_FLAG))
		return 0;
	return on_map_enter(SC_MMAP, a, 5);
}

SEC("tracepoint/syscalls/sys_exit_mmap")
int tp_mmap_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_map_exit(SC_MMAP, ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_madvise")
int tp_madvise_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 a[3] = { ctx->args[0], ctx->args[1], ctx->args[2] };
	__u64 adv = ctx->args[2];

	if (adv != MADV_DONTNEED_ && adv != MADV_REMOVE_ && adv != MADV_FREE_ &&
	    adv != MADV_DONTNEED_LOCKED_)
		return 0;
	return on_map_enter(SC_MADVISE, a, 3);
}

SEC("tracepoint/syscalls/sys_exit_madvise")
int tp_madvise_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_map_exit(SC_MADVISE, ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_fallocate")
int tp_fallocate_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 a[4] = { ctx->args[0], ctx->args[1], ctx->args[2], ctx->args[3] };

	if (!(ctx->args[1] & FALLOC_FL_PUNCH_HOLE_))
		return 0;
	return on_map_enter(SC_FALLOCATE, a, 4);
}

SEC("tracepoint/syscalls/sys_exit_fallocate")
int tp_fallocate_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_map_exit(SC_FALLOCATE, ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_userfaultfd")
int tp_userfaultfd_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 a[1] = { ctx->args[0] };

	if (!current_tracked() && !may_track_new())
		return 0;
	sc_save(SC_USERFAULTFD, a, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_userfaultfd")
int tp_userfaultfd_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct fl_sc sc;

	if (!sc_take(SC_USERFAULTFD, &sc))
		return 0;
	emit_uffd_new(ctx->ret, sc.args[0], 0);
	return 0;
}

/*
 * Test hooks: the syscall handlers behind raw_tp entry points that take
 * plain u64 arguments, so BPF_PROG_TEST_RUN can drive them. Never attached.
 */
SEC("raw_tp/faultline_test_ioctl_enter")
int BPF_PROG(test_ioctl_enter, __u64 fd, __u64 cmd, __u64 arg)
{
	return on_ioctl_enter(fd, cmd, arg);
}

SEC("raw_tp/faultline_test_ioctl_exit")
int BPF_PROG(test_ioctl_exit, long ret)
{
	return on_ioctl_exit(ret);
}

SEC("raw_tp/faultline_test_read_enter")
int BPF_PROG(test_read_enter, __u64 fd, __u64 buf, __u64 cnt)
{
	return on_read_enter(fd, buf, cnt);
}

SEC("raw_tp/faultline_test_read_exit")
int BPF_PROG(test_read_exit, long ret)
{
	return on_read_exit(ret);
}

SEC("raw_tp/faultline_test_munmap_enter")
int BPF_PROG(test_munmap_enter, __u64 addr, __u64 len)
{
	__u64 a[2] = { addr, len };

	return on_map_enter(SC_MUNMAP, a, 2);
}

SEC("raw_tp/faultline_test_munmap_exit")
int BPF_PROG(test_munmap_exit, long ret)
{
	return on_map_exit(SC_MUNMAP, ret);
}

/* Hands a test the current task pointer to pass to the sched handlers. */
__u64 test_current_task = 0;

SEC("raw_tp/faultline_test_current_task")
int BPF_PROG(test_get_current_task)
{
	test_current_task = bpf_get_current_task();
	return 0;
}

/* ---- KVM exits, poison and signals --------------------------------------- */

static __always_inline void count_exit(__u32 kind, __u32 reason)
{
	struct fl_exit_key k = { .tid = (__u32)bpf_get_current_pid_tgid(), .kind = kind,
				 .reason = reason };
	__u64 one = 1, *v = bpf_map_lookup_elem(&fl_exits, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
	else
		bpf_map_update_elem(&fl_exits, &k, &one, BPF_NOEXIST);
}

#define KVM_EXIT_MEMORY_FAULT_ 39

/*
 * KVM_EXIT_MEMORY_FAULT is how guest_memfd / KVM-userfault postcopy reports
 * a missing page: the gpa and flags live in the vCPU's kvm_run.
 */
static __always_inline void emit_memory_fault(void)
{
	__u32 tid = (__u32)bpf_get_current_pid_tgid();
	struct fl_vcpu_info *vi = bpf_map_lookup_elem(&fl_vcpus, &tid);
	struct kvm_vcpu *v;
	struct kvm_run *run;
	struct fl_event *e;

	if (!vi || !vi->vcpu)
		return;
	v = (struct kvm_vcpu *)vi->vcpu;
	run = BPF_CORE_READ(v, run);
	e = ev_current(FL_EV_KVM_MEMFAULT);
	if (!e)
		return;
	e->memfault.vcpu_id = vi->vcpu_id;
	e->memfault.flags = BPF_CORE_READ(run, memory_fault.flags);
	e->memfault.gpa = BPF_CORE_READ(run, memory_fault.gpa);
	e->memfault.size = BPF_CORE_READ(run, memory_fault.size);
	ev_submit(e);
}

static __always_inline int on_kvm_userspace_exit(__u32 reason, int err)
{
	if (!current_tracked())
		return 0;
	if (err < 0) {
		count_exit(FL_EXIT_USERSPACE_ERR, -err);
		return 0;
	}
	count_exit(FL_EXIT_USERSPACE, reason);
	if (reason == KVM_EXIT_MEMORY_FAULT_)
		emit_memory_fault();
	return 0;
}

#define KVM_ISA_VMX 1

static __always_inline int on_kvm_exit(__u32 isa, __u32 reason, __u32 vcpu_id)
{
	if (!current_tracked())
		return 0;
	/* tracepoints in vCPU context name the vCPU even where KVM_RUN was not seen */
	note_vcpu((__u32)bpf_get_current_pid_tgid(), vcpu_id, 0, (__u32)-1, 0);
	if (isa == KVM_ISA_VMX)
		count_exit(FL_EXIT_VMX, reason & 0xffff);
	else
		count_exit(FL_EXIT_SVM, reason);
	return 0;
}

struct slot_walk {
	__u32 tgid;
	__u64 gpa, hva;
};

static long slot_of_gpa(struct bpf_map *map, struct fl_slot_key *k, struct fl_slot *v,
			struct slot_walk *w)
{
	if (k->tgid == w->tgid && w->gpa >= v->gpa && w->gpa - v->gpa < v->size) {
		w->hva = v->hva + (w->gpa - v->gpa);
		return 1;	/* found: stop */
	}
	return 0;
}

static __always_inline int on_kvm_mmio(__u32 type, __u32 len, __u64 gpa, __u64 val)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct slot_walk w = { .tgid = id >> 32, .gpa = gpa };
	struct fl_page_key k = { .mm = (__u64)bpf_get_current_task_btf()->mm };
	struct fl_event *e;

	if (!current_tracked())
		return 0;
	count_exit(FL_EXIT_MMIO, type);
	/* where KVM emulates guest memory, a poisoned page shows up as MMIO */
	bpf_for_each_map_elem(&fl_memslots, slot_of_gpa, &w, 0);
	if (!w.hva)
		return 0;
	k.page = w.hva >> 12;
	if (!bpf_map_lookup_elem(&fl_poison_hva, &k))
		return 0;
	e = ev_current(FL_EV_POISON_HIT);
	if (!e)
		return 0;
	e->hit.hva = w.hva;
	e->hit.gpa = gpa;
	e->hit.val = val;
	e->hit.type = type;
	e->hit.len = len;
	ev_submit(e);
	return 0;
}

SEC("tracepoint/kvm/kvm_userspace_exit")
int tp_kvm_userspace_exit(struct trace_event_raw_kvm_userspace_exit *ctx)
{
	return on_kvm_userspace_exit(ctx->reason, ctx->errno);
}

SEC("tracepoint/kvm/kvm_exit")
int tp_kvm_exit(struct trace_event_raw_kvm_exit *ctx)
{
	return on_kvm_exit(ctx->isa, ctx->exit_reason, ctx->vcpu_id);
}

SEC("tracepoint/kvm/kvm_mmio")
int tp_kvm_mmio(struct trace_event_raw_kvm_mmio *ctx)
{
	return on_kvm_mmio(ctx->type, ctx->len, ctx->gpa, ctx->val);
}

SEC("tracepoint/kvm/kvm_page_fault")
int tp_kvm_page_fault(struct trace_event_raw_kvm_page_fault *ctx)
{
	if (current_tracked()) {
		note_vcpu((__u32)bpf_get_current_pid_tgid(), ctx->vcpu_id, 0, (__u32)-1, 0);
		count_exit(FL_EXIT_PAGE_FAULT, 0);
	}
	return 0;
}

#define ASYNC_PF(tp, which)                                              \
	SEC("tracepoint/kvm/" #tp)                                       \
	int tp_##tp(void *ctx)                                           \
	{                                                                \
		if (current_tracked())                                   \
			count_exit(FL_EXIT_ASYNC_PF, which);             \
		return 0;                                                \
	}

ASYNC_PF(kvm_async_pf_not_present, FL_APF_NOT_PRESENT)
ASYNC_PF(kvm_async_pf_ready, FL_APF_READY)
ASYNC_PF(kvm_async_pf_completed, FL_APF_COMPLETED)
ASYNC_PF(kvm_async_pf_repeated_fault, FL_APF_REPEATED)

#define SIGBUS_ 7
#define SIGSEGV_ 11

static __always_inline int on_signal_deliver(int sig, struct kernel_siginfo *info)
{
	struct fl_event *e;

	if ((sig != SIGBUS_ && sig != SIGSEGV_) || !current_tracked())
		return 0;
	e = ev_current(FL_EV_SIGNAL);
	if (!e)
		return 0;
	e->signal.signo = sig;
	e->signal.code = BPF_CORE_READ(info, si_code);
	e->signal.err = BPF_CORE_READ(info, si_errno);
	e->signal.addr = (__u64)BPF_CORE_READ(info, _sifields._sigfault._addr);
	ev_submit(e);
	return 0;
}

SEC("tp_btf/signal_deliver")
int BPF_PROG(tpbtf_signal_deliver, int sig, struct kernel_siginfo *info, struct k_sigaction *ka)
{
	return on_signal_deliver(sig, info);
}

SEC("raw_tp/signal_deliver")
int BPF_PROG(raw_signal_deliver, int sig, struct kernel_siginfo *info, struct k_sigaction *ka)
{
	return on_signal_deliver(sig, info);
}

/*
 * Memory errors are machine-wide: not filtered by process. Both tracepoints
 * are missing where CONFIG_MEMORY_FAILURE / CONFIG_X86_MCE are off; the raw_tp
 * handlers are then only loaded for BPF_PROG_TEST_RUN.
 */
SEC("raw_tp/memory_failure_event")
int BPF_PROG(raw_memory_failure_event, unsigned long pfn, int type, int result)
{
	struct fl_event *e = ev_current(FL_EV_MEMFAIL);

	if (!e)
		return 0;
	e->memfail.pfn = pfn;
	e->memfail.mf_type = type;
	e->memfail.result = result;
	ev_submit(e);
	return 0;
}

/* struct mce's layout is uapi (asm/mce.h); read it without CO-RE, which lacks the type here */
struct fl_uapi_mce {
	__u64 status, misc, addr, mcgstatus, ip, tsc, time;
	__u8 cpuvendor, inject_flags, severity, pad;
	__u32 cpuid;
	__u8 cs, bank, cpu, finished;
	__u32 extcpu;
};

SEC("raw_tp/mce_record")
int BPF_PROG(raw_mce_record, void *m)
{
	struct fl_uapi_mce mce;
	struct fl_event *e;

	if (bpf_probe_read_kernel(&mce, sizeof(mce), m))
		return 0;
	e = ev_current(FL_EV_MCE);
	if (!e)
		return 0;
	e->mce.status = mce.status;
	e->mce.misc = mce.misc;
	e->mce.addr = mce.addr;
	e->mce.mcgstatus = mce.mcgstatus;
	e->mce.ip = mce.ip;
	e->mce.cpu = mce.extcpu;
	e->mce.bank = mce.bank;
	ev_submit(e);
	return 0;
}

/* Test hooks for the classic KVM tracepoints (which BPF_PROG_TEST_RUN cannot drive). */
SEC("raw_tp/faultline_test_kvm_exit")
int BPF_PROG(test_kvm_exit, __u32 isa, __u32 reason, __u32 vcpu_id)
{
	return on_kvm_exit(isa, reason, vcpu_id);
}

SEC("raw_tp/faultline_test_kvm_userspace_exit")
int BPF_PROG(test_kvm_userspace_exit, __u32 reason, int err)
{
	return on_kvm_userspace_exit(reason, err);
}

SEC("raw_tp/faultline_test_kvm_mmio")
int BPF_PROG(test_kvm_mmio, __u32 type, __u32 len, __u64 gpa, __u64 val)
{
	return on_kvm_mmio(type, len, gpa, val);
}
