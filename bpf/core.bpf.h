/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Configuration set before load, every map, and the record helpers:
 * defined once, used by every stage.
 * A fragment of faultline.bpf.c (one program, one skeleton): included
 * there in lifecycle order, not on its own.
 */

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

/*
 * A kernel pointer known only as a number (kept in a map, read from an
 * fd table) as a typed, read-only one: its fields are then plain loads the
 * JIT guards with an exception table, not a bpf_probe_read call each.
 * On the fault path these reads run several times per fault.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define KCAST(ptr, type) \
	((type *)bpf_rdonly_cast((const void *)(ptr), bpf_core_type_id_kernel(type)))

/* A thread's block (ts 0: not blocked). */
struct fl_blocked {
	__u64 ts;
	__u64 addr;
	__u32 woken;
	__u32 waker_tid;
	__u64 wake_ts;
	__u32 waker_pid;
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

/*
 * A thread's syscall slot: arguments saved at entry, consumed at exit, and
 * whether it has read a userfaultfd. A handler thread never waits on a
 * userfault itself (it would be waiting for itself), so its many sleeps in
 * poll/read need no stack walk.
 */
struct fl_sc {
	__u64 ts;
	__u64 ctx;
	__u64 mm;
	__u64 args[6];
	__u64 words[5];	/* the ioctl argument struct as it was at entry */
	__u32 nr;	/* enum fl_sc_nr */
	__u32 fd;
	__u32 handler;	/* kept across syscalls: it read a userfaultfd */
	__u32 pad;
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

/*
 * Everything faultline keeps per thread, in one slot: a block or a switch
 * looks at the syscall, the last user fault and the block together, and one
 * hash lookup costs as much as the rest of a small program. A slot is made
 * at the thread's first traced syscall, fault or block, rewritten in place
 * (nr 0, pf.ts 0, blk.ts 0: nothing there) and removed at its exit.
 */
struct fl_thread {
	struct fl_sc sc;
	struct fl_pf pf;	/* the thread's last user page fault */
	struct fl_blocked blk;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 32768);
	__type(key, __u32);	/* tid */
	__type(value, struct fl_thread);
} fl_threads SEC(".maps");

/* The value a new slot starts from (never written). */
static const struct fl_thread fl_thread_zero = {};

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

/* The last mapping a fault of each address space was in, with its page
 * shift: guest memory is a few large mappings, so bpf_find_vma (which costs
 * microseconds) runs once per mapping, not per fault.  A mapping change by
 * the process drops its entry. */
struct fl_vma_cached {
	__u64 start, end;
	__u32 shift;
	__u32 pad;
};

/* An mm's address is reused once its process is gone: the tgid with it. */
struct fl_vma_key {
	__u64 mm;
	__u32 tgid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct fl_vma_key);
	__type(value, struct fl_vma_cached);
} fl_vmas SEC(".maps");

/* Scratch for bpf_get_stack: too big for the 512-byte BPF stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64[FL_STACK_DEPTH]);
} fl_stack SEC(".maps");

/* f_op of userfaultfd files, learned from the first file named [userfaultfd]. */
__u64 uffd_fops = 0;

/*
 * fl_tracked's membership, one bit per tgid (512 KiB of .bss, shared with
 * the agent by mmap). Every program asks "tracked?" first, on every
 * context switch and traced syscall of the host: a hash lookup there costs
 * ~80 ns, this load a few. fl_tracked stays the record of why; the two
 * change together (tracked_set/tracked_clear here, fl_probe_track/untrack
 * in the agent).
 */
__u64 fl_tracked_bits[FL_TGID_LIMIT / 64];

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&fl_counters, &idx);

	if (v)
		*v += 1;
}

/* tgid's word of fl_tracked_bits (callers check tgid < FL_TGID_LIMIT; the
 * mask is for the verifier, which may not see that check on this register). */
static __always_inline __u64 *tracked_word(__u32 tgid)
{
	__u32 w = tgid / 64;

	barrier_var(w);	/* keeps clang from dropping the mask as redundant */
	return &fl_tracked_bits[w & (FL_TGID_LIMIT / 64 - 1)];
}

static __always_inline struct fl_thread *thread_of(__u32 tid)
{
	return bpf_map_lookup_elem(&fl_threads, &tid);
}

/* The thread's slot, made if it has none; NULL (counted) if the map is full. */
static __always_inline struct fl_thread *thread_get(__u32 tid)
{
	struct fl_thread *t = bpf_map_lookup_elem(&fl_threads, &tid);

	if (t)
		return t;
	/* NOEXIST: another CPU may have made it meanwhile; either way, look again */
	bpf_map_update_elem(&fl_threads, &tid, &fl_thread_zero, BPF_NOEXIST);
	t = bpf_map_lookup_elem(&fl_threads, &tid);
	if (!t)
		count(FL_CNT_THREADS_FULL);
	return t;
}

static __always_inline bool tracked(__u32 tgid)
{
	return tgid < FL_TGID_LIMIT && (*tracked_word(tgid) >> (tgid % 64)) & 1;
}

/* Records why tgid is tracked (or adds to it); false if fl_tracked is full. */
static __always_inline bool tracked_set(__u32 tgid, __u32 why)
{
	__u32 *old = bpf_map_lookup_elem(&fl_tracked, &tgid);

	if (tgid >= FL_TGID_LIMIT)
		return false;
	if (old)
		*old |= why;	/* racy but idempotent */
	else if (bpf_map_update_elem(&fl_tracked, &tgid, &why, BPF_NOEXIST) &&
		 !bpf_map_lookup_elem(&fl_tracked, &tgid))
		return false;
	__sync_fetch_and_or(tracked_word(tgid), 1ULL << (tgid % 64));
	return true;
}

static __always_inline void tracked_clear(__u32 tgid)
{
	if (tgid >= FL_TGID_LIMIT)
		return;
	__sync_fetch_and_and(tracked_word(tgid), ~(1ULL << (tgid % 64)));
	bpf_map_delete_elem(&fl_tracked, &tgid);
}

/* A record stamped ts (a timestamp the caller already took), or now if 0. */
static __always_inline struct fl_event *ev_new_at(__u32 type, __u32 pid, __u32 tid, __u64 ts)
{
	struct fl_event *e = bpf_ringbuf_reserve(&fl_events, sizeof(*e), 0);

	if (!e) {
		count(FL_CNT_RB_LOST);
		return NULL;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = ts ? ts : bpf_ktime_get_ns();
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
static __always_inline struct fl_event *ev_new(__u32 type, __u32 pid, __u32 tid)
{
	return ev_new_at(type, pid, tid, 0);
}

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
