/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Block, wake, run: the scheduler's view of a userfault (sched_switch,
 * sched_wakeup, page_fault_user), and following forks and exits.
 * A fragment of faultline.bpf.c (one program, one skeleton): included
 * there in lifecycle order, not on its own.
 */

/* ---- block / wake / run ------------------------------------------------ */

/* The page fault the thread is inside right now, if any. */
static __always_inline struct fl_pf *current_user_fault(struct fl_thread *t)
{
	struct fl_pf *pf = &t->pf;
	struct pt_regs *ur;

	/*
	 * Inside that user page fault iff the task's user-entry frame
	 * (pf->regs) still holds the ip/sp the fault saw; a syscall or KVM_RUN
	 * entered since would have replaced them.
	 */
	ur = (struct pt_regs *)pf->regs;
	if (!ur)
		return NULL;
	ur = KCAST(ur, struct pt_regs);
	if (pf->ip != ur->ip || pf->sp != ur->sp)
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

#define VM_HUGETLB_ 0x00400000UL

/* bpf_find_vma's callback: the mapping's range and page shift (hugetlbfs:
 * its hstate's), into *data. */
static long vma_page_shift(struct task_struct *task, struct vm_area_struct *vma, void *data)
{
	struct fl_vma_cached *v = data;
	struct hugetlbfs_sb_info *sbi;
	unsigned int order;

	(void)task;
	v->start = BPF_CORE_READ(vma, vm_start);
	v->end = BPF_CORE_READ(vma, vm_end);
	v->shift = 12;
	if (!(BPF_CORE_READ(vma, vm_flags) & VM_HUGETLB_))
		return 0;
	sbi = (struct hugetlbfs_sb_info *)BPF_CORE_READ(vma, vm_file, f_inode, i_sb, s_fs_info);
	order = BPF_CORE_READ(sbi, hstate, order);
	v->shift = order && order < 40 ? 12 + order : 0;
	return 0;
}

/* The page shift at addr in the current task's mm (0 unknown). */
static __always_inline __u32 page_shift_at(__u64 mm, __u32 tgid, __u64 addr)
{
	struct fl_vma_key k = { .mm = mm, .tgid = tgid };
	struct fl_vma_cached *c = bpf_map_lookup_elem(&fl_vmas, &k), v = {};

	if (c && addr >= c->start && addr < c->end)
		return c->shift;
	if (bpf_find_vma(bpf_get_current_task_btf(), addr, vma_page_shift, &v, 0) || !v.shift)
		return 0;	/* the mm is busy (bpf_find_vma only tries its lock) */
	bpf_map_update_elem(&fl_vmas, &k, &v, BPF_ANY);
	return v.shift;
}

static __always_inline void on_block(void *ctx, struct task_struct *prev, __u32 tgid,
				     __u32 tid, unsigned int prev_state)
{
	struct fl_thread *t = thread_of(tid);
	struct fl_blocked b = {};
	struct fl_event *e;
	struct fl_pf *pf;
	__u32 flags = 0;

	/* Asleep in read()/ioctl() on a userfaultfd, or a handler: not in a fault. */
	if (t && (t->sc.nr == SC_READ || t->sc.nr == SC_IOCTL || t->sc.handler))
		return;
	pf = t ? current_user_fault(t) : NULL;
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
	if (!t)
		t = thread_get(tid);	/* counts a full table */
	if (t)
		t->blk = b;
	e = ev_new_at(FL_EV_BLOCK, tgid, tid, b.ts);
	if (!e)
		return;
	/* comm is always NUL-terminated within its 16 bytes: a plain copy, not a string read */
	BPF_CORE_READ_INTO(&e->comm, prev, comm);
	BPF_CORE_READ_INTO(&e->block.pcomm, prev, group_leader, comm);
	e->block.state = prev_state;
	e->block.mm = (__u64)BPF_CORE_READ(prev, mm);
	if (pf) {
		flags |= FL_BLOCK_USER_PF;
		e->block.addr = pf->addr;
		e->block.pf_ts = pf->ts;
		e->block.pf_err = pf->err;
	}
	e->block.flags = flags;
	/* The mapping's page size, while the thread still has it (a process
	 * can be gone before the agent reads this): user faults only, and only
	 * if the mm is not busy (bpf_find_vma only tries its lock). */
	if (pf)
		e->block.page_shift = page_shift_at(e->block.mm, tgid, pf->addr);
	ev_submit(e);
}

/*
 * The ids of the tasks involved come in read by the caller: the tp_btf
 * programs load them directly from their trusted task pointers, the raw_tp
 * twins through bpf_probe_read (a helper call each, on every context switch).
 */
struct fl_ids {
	__u32 tgid, tid;
};

static __always_inline int on_sched_switch(void *ctx, bool preempt,
					   struct task_struct *prev, struct fl_ids p,
					   struct fl_ids n, unsigned int prev_state)
{
	/* sched_switch runs in prev's context: bpf_get_stack sees prev's stack */
	if (!preempt && prev_state != 0 && tracked(p.tgid))
		on_block(ctx, prev, p.tgid, p.tid, prev_state);

	if (tracked(n.tgid)) {
		struct fl_thread *t = thread_of(n.tid);
		struct fl_blocked *b = t ? &t->blk : NULL;
		struct fl_event *e;

		if (!b || !b->ts)
			return 0;
		e = ev_new(FL_EV_RUN, n.tgid, n.tid);
		if (e) {
			/* no comm: the BLOCK it ends named the thread */
			e->wake.block_ts = b->ts;
			if (b->woken) {
				e->wake.wake_ts = b->wake_ts;
				e->wake.waker_tid = b->waker_tid;
				e->wake.waker_pid = b->waker_pid;
			}
			ev_submit(e);
		}
		b->ts = 0;
	}
	return 0;
}

static __always_inline int on_sched_wakeup(struct fl_ids p)
{
	struct fl_thread *t;
	struct fl_blocked *b;
	__u64 id;

	if (!tracked(p.tgid))
		return 0;
	t = thread_of(p.tid);
	b = t ? &t->blk : NULL;
	if (!b || !b->ts || b->woken)
		return 0;
	/* kept with the block and sent with the RUN: one record fewer per fault */
	id = bpf_get_current_pid_tgid();
	b->wake_ts = bpf_ktime_get_ns();
	b->waker_tid = (__u32)id;
	b->waker_pid = id >> 32;
	b->woken = 1;
	return 0;
}

/* The user registers' ip and sp come in read by the caller, as the ids above. */
static __always_inline bool pf_tracked(void)
{
	return tracked(bpf_get_current_pid_tgid() >> 32);
}

static __always_inline int on_page_fault_user(unsigned long address, struct pt_regs *regs,
					      __u64 ip, __u64 sp, unsigned long err)
{
	struct fl_thread *t = thread_get((__u32)bpf_get_current_pid_tgid());
	struct fl_pf pf;

	if (!t)
		return 0;
	pf.addr = address;
	pf.ts = bpf_ktime_get_ns();
	pf.err = err;
	pf.ip = ip;
	pf.sp = sp;
	pf.regs = (__u64)regs;
	t->pf = pf;	/* user faults are frequent: in place */
	return 0;
}

static __always_inline int on_process_fork(struct task_struct *parent,
					   struct task_struct *child)
{
	__u32 ptgid = BPF_CORE_READ(parent, tgid);
	__u32 cpid = BPF_CORE_READ(child, pid);
	struct fl_event *e;

	/* Threads share the tgid and are tracked already; fds travel with new processes. */
	if (!tracked(ptgid) || BPF_CORE_READ(child, tgid) != cpid)
		return 0;
	tracked_set(cpid, FL_TRACK_CHILD);
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
	bpf_map_delete_elem(&fl_threads, &tid);
	bpf_map_delete_elem(&fl_vcpus, &tid);
	if (tid != tgid)
		return 0;
	/* The group leader exits last: the process is gone. */
	tracked_clear(tgid);
	e = ev_current(FL_EV_PROC_EXIT);
	if (e)
		ev_submit(e);
	return 0;
}

#define IDS_BTF(t) ((struct fl_ids){ .tgid = (t)->tgid, .tid = (t)->pid })
#define IDS_RAW(t) ((struct fl_ids){ .tgid = BPF_CORE_READ(t, tgid), .tid = BPF_CORE_READ(t, pid) })

SEC("tp_btf/sched_switch")
int BPF_PROG(tpbtf_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	return on_sched_switch(ctx, preempt, prev, IDS_BTF(prev), IDS_BTF(next), prev_state);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(raw_sched_switch, bool preempt, struct task_struct *prev,
	     struct task_struct *next, unsigned int prev_state)
{
	return on_sched_switch(ctx, preempt, prev, IDS_RAW(prev), IDS_RAW(next), prev_state);
}

SEC("tp_btf/sched_wakeup")
int BPF_PROG(tpbtf_sched_wakeup, struct task_struct *p)
{
	return on_sched_wakeup(IDS_BTF(p));
}

SEC("raw_tp/sched_wakeup")
int BPF_PROG(raw_sched_wakeup, struct task_struct *p)
{
	return on_sched_wakeup(IDS_RAW(p));
}

SEC("tp_btf/page_fault_user")
int BPF_PROG(tpbtf_page_fault_user, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	if (!pf_tracked())
		return 0;
	return on_page_fault_user(address, regs, regs->ip, regs->sp, error_code);
}

SEC("raw_tp/page_fault_user")
int BPF_PROG(raw_page_fault_user, unsigned long address, struct pt_regs *regs,
	     unsigned long error_code)
{
	if (!pf_tracked())
		return 0;
	return on_page_fault_user(address, regs, BPF_CORE_READ(regs, ip), BPF_CORE_READ(regs, sp),
				  error_code);
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
