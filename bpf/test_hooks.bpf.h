/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Test hooks: raw_tp entry points with plain arguments, so
 * BPF_PROG_TEST_RUN can drive the syscall and KVM handlers. Never attached.
 * A fragment of faultline.bpf.c (one program, one skeleton): included
 * there in lifecycle order, not on its own.
 */

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
