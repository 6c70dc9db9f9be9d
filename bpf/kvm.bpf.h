/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * KVM: vCPU threads and memslots learned from their ioctls, and the exits
 * of vCPU threads (classic kvm tracepoints).
 * A fragment of faultline.bpf.c (one program, one skeleton): included
 * there in lifecycle order, not on its own.
 */

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
