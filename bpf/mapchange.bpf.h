/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Mapping changes by tracked processes: munmap, mremap, mmap MAP_FIXED,
 * madvise, fallocate (the races with waiting faults).
 * A fragment of faultline.bpf.c (one program, one skeleton): included
 * there in lifecycle order, not on its own.
 */

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
	{
		/* its mappings may have changed */
		struct fl_vma_key k = { .mm = e->map.mm, .tgid = bpf_get_current_pid_tgid() >> 32 };

		bpf_map_delete_elem(&fl_vmas, &k);
	}
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
