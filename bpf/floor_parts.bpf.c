// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The parts any tracer of a fault's lifecycle is made of, each alone on
 * sys_enter_getppid: a program that does nothing, one that looks its task
 * up in a hash (the least a per-process filter costs), and one that also
 * writes a faultline-sized record to a ring buffer.  bench-floor --parts
 * times each; `make bench` multiplies by what a fault needs (programs run,
 * records written) to give the floor no tracer of these events goes below.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "faultline_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u32);
	__type(value, __u32);
} parts_tracked SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 << 20);
} parts_events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int part_nothing(void *ctx)
{
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int part_lookup(void *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	return bpf_map_lookup_elem(&parts_tracked, &tgid) ? 1 : 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int part_record(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct fl_event *e;

	if (!bpf_map_lookup_elem(&parts_tracked, &tgid))
		return 0;
	e = bpf_ringbuf_reserve(&parts_events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->ts = bpf_ktime_get_ns();
	e->pid = tgid;
	e->tid = (__u32)id;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}
