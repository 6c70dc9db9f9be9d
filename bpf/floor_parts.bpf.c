// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The parts any tracer of a fault's lifecycle is made of, each alone on
 * sys_enter_getppid: a program that does nothing; one that tests its
 * process's bit in a .bss bitmap (the least a per-process filter costs, and
 * faultline's filter); and, behind that filter, one that also writes a
 * faultline-sized record to a ring buffer, the record being the one thing
 * every traced step must do. bench-floor --parts times each; `make bench`
 * multiplies by what a fault needs (programs run, records written) to give
 * the floor no tracer of these events goes below. The other parts price
 * what faultline does beyond that floor: a per-thread hash lookup, a
 * timestamp, a copy from user memory, the current task's name.
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

__u64 parts_bits[FL_TGID_LIMIT / 64];

static __always_inline bool bit(__u32 tgid)
{
	__u32 w = tgid / 64;

	barrier_var(w);
	return tgid < FL_TGID_LIMIT && (parts_bits[w & (FL_TGID_LIMIT / 64 - 1)] >> (tgid % 64)) & 1;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int part_bit(void *ctx)
{
	return bit(bpf_get_current_pid_tgid() >> 32);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int part_lookup(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = (__u32)id;

	if (!bit(id >> 32))
		return 0;
	return bpf_map_lookup_elem(&parts_tracked, &tid) ? 1 : 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int part_ktime(void *ctx)
{
	if (!bit(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return bpf_ktime_get_ns() & 1;
}

__u64 parts_user_addr;

SEC("tracepoint/syscalls/sys_enter_getppid")
int part_user(void *ctx)
{
	__u64 buf[4];

	if (!bit(bpf_get_current_pid_tgid() >> 32))
		return 0;
	return bpf_probe_read_user(buf, sizeof(buf), (void *)parts_user_addr) ? 0 : buf[0] & 1;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int part_comm(void *ctx)
{
	char comm[16];

	if (!bit(bpf_get_current_pid_tgid() >> 32))
		return 0;
	bpf_get_current_comm(comm, sizeof(comm));
	return comm[0] & 1;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int part_record(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	struct fl_event *e;

	if (!bit(tgid))
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
