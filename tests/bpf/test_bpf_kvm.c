// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * BPF tests of the KVM, poison and machine-error handlers, driven through
 * BPF_PROG_TEST_RUN like tests/bpf/test_bpf_handlers.c: the probe is loaded
 * with test_hooks and no_attach, so every record comes from a test run.
 *
 *   KVM ioctls       test_ioctl_enter on a real VM's fds (KVM_RUN on a vCPU
 *                    created with id 3, KVM_SET_USER_MEMORY_REGION{,2})
 *   exits            test_kvm_exit / test_kvm_userspace_exit / test_kvm_mmio,
 *                    read back through fl_probe_each_exit
 *   poison           memslots (fl_memslots) + UFFDIO_POISON through
 *                    test_ioctl_enter/exit on a real userfaultfd
 *                    (fl_poison_hva), then test_kvm_mmio
 *   machine errors   raw_memory_failure_event, raw_mce_record
 *   signals          raw_signal_deliver
 *   thread exit      raw_sched_process_exit and fl_vcpus
 *
 * mce_record and signal_deliver take a pointer to a kernel struct. The test
 * builds the struct in kernel memory it controls: the value of a BPF array
 * map. A tiny hand-assembled program stores the map value's own address
 * into the value (map[0].self = &map[0]); userspace reads it back, writes
 * the fake struct mce / kernel_siginfo into the same value with
 * bpf_map_update_elem, and passes the address to the handler.
 *
 * Needs root and /dev/kvm; exits 77 (skip) otherwise.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <asm/mce.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <cmocka.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include "uffd_compat.h"
#include "faultline.skel.h"
#include "faultline_events.h"
#include "probe.h"

#define KVM_RUN_NR 0xae80u			/* _IO(KVMIO, 0x80) */
#define KVM_SET_MEMREGION 0x4020ae46u		/* _IOW(KVMIO, 0x46, struct kvm_userspace_memory_region) */
#define KVM_SET_MEMREGION2 0x40a0ae49u		/* _IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2) */

/* linux/kvm.h of 6.8+; Debian 12's headers predate it. */
struct t_region2 {
	uint32_t slot;
	uint32_t flags;
	uint64_t guest_phys_addr;
	uint64_t memory_size;
	uint64_t userspace_addr;
	uint64_t guest_memfd_offset;
	uint32_t guest_memfd;
	uint32_t pad1;
	uint64_t pad2[14];
};

_Static_assert(KVM_RUN == KVM_RUN_NR, "KVM_RUN");
_Static_assert(KVM_SET_USER_MEMORY_REGION == KVM_SET_MEMREGION, "KVM_SET_USER_MEMORY_REGION");
_Static_assert(sizeof(struct t_region2) == 0xa0, "kvm_userspace_memory_region2 size");
/* the uapi struct mce layout the handler reads */
_Static_assert(offsetof(struct mce, ip) == 32, "mce.ip");
_Static_assert(offsetof(struct mce, bank) == 65, "mce.bank");
_Static_assert(offsetof(struct mce, extcpu) == 68, "mce.extcpu");
/* kernel_siginfo: si_signo, si_errno, si_code, then the union (si_addr first) at 16 */
_Static_assert(offsetof(siginfo_t, si_code) == 8, "si_code");
_Static_assert(offsetof(siginfo_t, si_addr) == 16, "si_addr");

#define SIGBUS_ 7
#define SIGSEGV_ 11
#define SIGUSR1_ 10
#define BUS_MCEERR_AR_ 4
#define SEGV_ACCERR_ 2

#define KERNEL_MIN 0xffff800000000000ull	/* x86_64 kernel half */
#define FX_MAX_RECS 256
#include "bpf_harness.h"
#include "test_uffd.h"
#define MAX_EXITS 64

/* A real VM: /dev/kvm, the VM and one vCPU. */
struct vm {
	int kvm, vm, vcpu;
};

static char g_comm[16];

/* ---- helpers ------------------------------------------------------------ */

static void skip_because(const char *why)
{
	printf("# SKIP: %s\n", why);
	skip();
}

#define U(x) ((uint64_t)(uintptr_t)(x))

static int map_count(struct bpf_map *m)
{
	int fd = bpf_map__fd(m);
	uint8_t key[64], next[64];
	void *prev = NULL;
	int n = 0;

	assert_true(bpf_map__key_size(m) <= sizeof(key));
	while (!bpf_map_get_next_key(fd, prev, next)) {
		memcpy(key, next, sizeof(key));
		prev = key;
		n++;
	}
	return n;
}

static void track_self(struct fx *f)
{
	assert_true(fl_probe_track(&f->p, getpid(), FL_TRACK_USER) >= 0);
}

static void assert_self(const struct fl_event *e, uint32_t type)
{
	assert_int_equal(e->type, type);
	assert_int_equal(e->pid, (uint32_t)getpid());
	assert_int_equal(e->tid, tid());
	assert_string_equal(e->comm, g_comm);
	assert_true(e->ts != 0);
}

/* The vCPU id fl_vcpus holds for t, or INT32_MIN if none. */
static int32_t vcpus_get(struct fx *f, uint32_t t)
{
	struct fl_vcpu_info v;

	assert_int_equal(bpf_map__value_size(f->s->maps.fl_vcpus), sizeof(v));
	return bpf_map_lookup_elem(bpf_map__fd(f->s->maps.fl_vcpus), &t, &v) ? INT32_MIN
									       : v.vcpu_id;
}

static uint64_t current_task(struct fx *f)
{
	f->s->bss->test_current_task = 0;
	run_prog(f->s->progs.test_get_current_task, NULL, 0);
	assert_true(f->s->bss->test_current_task != 0);
	return f->s->bss->test_current_task;
}

/* ---- exit counts ------------------------------------------------------------ */

struct exits {
	int n;
	struct fl_exit_key k[MAX_EXITS];
	uint64_t c[MAX_EXITS];
};

static void exit_cb(void *arg, const struct fl_exit_key *k, uint64_t count)
{
	struct exits *x = arg;

	if (x->n < MAX_EXITS) {
		x->k[x->n] = *k;
		x->c[x->n] = count;
	}
	x->n++;
}

static void exits_read(struct fx *f, struct exits *x)
{
	int n;

	memset(x, 0, sizeof(*x));
	n = fl_probe_each_exit(&f->p, exit_cb, x);
	assert_int_equal(n, x->n);
	assert_true(x->n <= MAX_EXITS);
}

/* The count for (tid, kind, reason), 0 if absent. */
static uint64_t exits_get(const struct exits *x, uint32_t t, uint32_t kind, uint32_t reason)
{
	for (int i = 0; i < x->n; i++)
		if (x->k[i].tid == t && x->k[i].kind == kind && x->k[i].reason == reason)
			return x->c[i];
	return 0;
}

static void exits_dump(const struct exits *x)
{
	for (int i = 0; i < x->n; i++)
		printf("# exit tid %u kind %u reason %#x pad %u: %" PRIu64 "\n", x->k[i].tid,
		       x->k[i].kind, x->k[i].reason, x->k[i].pad, x->c[i]);
}

/* x is exactly the n (kind, reason, count) triples given, all for thread t. */
static void exits_exactly(const struct exits *x, uint32_t t, int n, const uint32_t (*want)[3])
{
	if (x->n != n) {
		exits_dump(x);
		fail_msg("%d exit keys, want %d", x->n, n);
	}
	for (int i = 0; i < n; i++) {
		uint64_t c = exits_get(x, t, want[i][0], want[i][1]);

		if (c != want[i][2]) {
			exits_dump(x);
			fail_msg("kind %u reason %#x: count %" PRIu64 ", want %u", want[i][0],
				 want[i][1], c, want[i][2]);
		}
	}
	for (int i = 0; i < x->n; i++)
		assert_int_equal(x->k[i].pad, 0);
}

/* ---- a real VM ------------------------------------------------------------------ */

static bool vm_open(struct vm *v, int vcpu_id, char *why, size_t whylen)
{
	v->kvm = v->vm = v->vcpu = -1;
	v->kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (v->kvm < 0) {
		snprintf(why, whylen, "open /dev/kvm: %s", strerror(errno));
		return false;
	}
	v->vm = ioctl(v->kvm, KVM_CREATE_VM, 0);
	if (v->vm < 0) {
		snprintf(why, whylen, "KVM_CREATE_VM: %s", strerror(errno));
		return false;
	}
	v->vcpu = ioctl(v->vm, KVM_CREATE_VCPU, vcpu_id);
	if (v->vcpu < 0) {
		snprintf(why, whylen, "KVM_CREATE_VCPU %d: %s", vcpu_id, strerror(errno));
		return false;
	}
	return true;
}

static void vm_close(struct vm *v)
{
	if (v->vcpu >= 0)
		close(v->vcpu);
	if (v->vm >= 0)
		close(v->vm);
	if (v->kvm >= 0)
		close(v->kvm);
}

#define VM_OPEN(v, id)                                                   \
	do {                                                             \
		char why_[256];                                          \
		if (!vm_open(v, id, why_, sizeof(why_))) {               \
			vm_close(v);                                     \
			skip_because(why_);                              \
		}                                                        \
	} while (0)

/* KVM_RUN enter on v->vcpu: the one FL_EV_VCPU record, checked; returns its kvm. */
static uint64_t vcpu_register(struct fx *f, const struct vm *v, int32_t vcpu_id)
{
	const struct fl_event *e;

	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v->vcpu, KVM_RUN_NR, 0);
	assert_int_equal(drain(f), 1);
	e = &f->recs[0];
	assert_self(e, FL_EV_VCPU);
	assert_int_equal(e->vcpu.vcpu_id, vcpu_id);
	assert_int_equal(e->vcpu.fd, (uint32_t)v->vcpu);
	if (e->vcpu.kvm < KERNEL_MIN)
		fail_msg("vcpu.kvm %#" PRIx64 " is not a kernel pointer", e->vcpu.kvm);
	return e->vcpu.kvm;
}

/* ---- fixtures ----------------------------------------------------------------- */

static int setup(void **state)
{
	struct fl_probe_opts o = { .test_hooks = true, .no_attach = true };
	struct fx *f = calloc(1, sizeof(*f));
	char err[512] = "";
	int ret;

	if (!f)
		return -1;
	ret = fl_probe_start(&f->p, &o, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "fl_probe_start: %d: %s\n", ret, err);
		free(f);
		return -1;
	}
	f->s = f->p.skel;
	f->rb = ring_buffer__new(bpf_map__fd(f->s->maps.fl_events), rb_cb, f, NULL);
	if (!f->rb) {
		fprintf(stderr, "ring_buffer__new: %s\n", strerror(errno));
		fl_probe_stop(&f->p);
		free(f);
		return -1;
	}
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	if (f) {
		ring_buffer__free(f->rb);
		fl_probe_stop(&f->p);
		free(f);
	}
	return 0;
}

/* ---- 0. load ---------------------------------------------------------------------- */

static void test_load(void **state)
{
	struct fx *f = *state;
	struct bpf_program *want[] = {
		f->s->progs.test_ioctl_enter,	     f->s->progs.test_kvm_exit,
		f->s->progs.test_kvm_userspace_exit, f->s->progs.test_kvm_mmio,
		f->s->progs.raw_signal_deliver,	     f->s->progs.raw_memory_failure_event,
		f->s->progs.raw_mce_record,	     f->s->progs.raw_sched_process_exit,
	};

	for (unsigned i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (bpf_program__fd(want[i]) < 0)
			fail_msg("%s is not loaded with test_hooks", bpf_program__name(want[i]));
	assert_int_equal(map_count(f->s->maps.fl_vcpus), 0);
	assert_int_equal(map_count(f->s->maps.fl_exits), 0);
	assert_int_equal(map_count(f->s->maps.fl_memslots), 0);
	assert_int_equal(map_count(f->s->maps.fl_poison_hva), 0);
	assert_int_equal(drain(f), 0);
}

/* ---- 1. KVM_RUN --------------------------------------------------------------------- */

/* (a) KVM_RUN on a real vCPU (id 3) registers the thread once. */
static void test_kvm_run_vcpu(void **state)
{
	struct fx *f = *state;
	struct vm v;

	VM_OPEN(&v, 3);
	track_self(f);
	vcpu_register(f, &v, 3);
	assert_int_equal(vcpus_get(f, tid()), 3);
	assert_int_equal(map_count(f->s->maps.fl_vcpus), 1);

	/* known already: no second record, the entry unchanged */
	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v.vcpu, KVM_RUN_NR, 0);
	assert_int_equal(drain(f), 0);
	assert_int_equal(vcpus_get(f, tid()), 3);
	assert_int_equal(map_count(f->s->maps.fl_vcpus), 1);
	/* KVM_RUN is not an exit: nothing counted */
	assert_int_equal(map_count(f->s->maps.fl_exits), 0);
	vm_close(&v);
}

struct thread_run {
	struct fx *f;
	int fd;
	uint32_t tid;
	int err;
};

static void *run_on_thread(void *arg)
{
	struct thread_run *t = arg;
	uint64_t a[3] = { (uint64_t)t->fd, KVM_RUN_NR, 0 };

	t->tid = tid();
	t->err = try_run(t->f->s->progs.test_ioctl_enter, a, 3);
	return NULL;
}

/* Two vCPUs of one VM on two threads: two records, same kvm, their own ids and tids. */
static void test_kvm_run_two_threads(void **state)
{
	struct fx *f = *state;
	struct thread_run t = { .f = f };
	uint64_t kvm;
	pthread_t th;
	struct vm v;
	int vcpu7;

	VM_OPEN(&v, 3);
	vcpu7 = ioctl(v.vm, KVM_CREATE_VCPU, 7);
	if (vcpu7 < 0)
		fail_msg("KVM_CREATE_VCPU 7: %s", strerror(errno));
	track_self(f);
	kvm = vcpu_register(f, &v, 3);

	t.fd = vcpu7;
	assert_int_equal(pthread_create(&th, NULL, run_on_thread, &t), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(t.err, 0);
	assert_int_not_equal(t.tid, tid());
	assert_int_equal(drain(f), 1);
	assert_int_equal(f->recs[0].type, FL_EV_VCPU);
	assert_int_equal(f->recs[0].pid, (uint32_t)getpid());
	assert_int_equal(f->recs[0].tid, t.tid);
	assert_int_equal(f->recs[0].vcpu.vcpu_id, 7);
	assert_int_equal(f->recs[0].vcpu.fd, (uint32_t)vcpu7);
	assert_int_equal(f->recs[0].vcpu.kvm, kvm);
	assert_int_equal(vcpus_get(f, t.tid), 7);
	assert_int_equal(vcpus_get(f, tid()), 3);
	assert_int_equal(map_count(f->s->maps.fl_vcpus), 2);
	close(vcpu7);
	vm_close(&v);
}

/* Untracked: neither KVM_RUN nor a memslot change leaves a trace. */
static void test_kvm_untracked(void **state)
{
	struct fx *f = *state;
	struct kvm_userspace_memory_region r = { .slot = 1, .guest_phys_addr = 0x100000,
						 .memory_size = 0x1000,
						 .userspace_addr = 0x7f0000000000ull };
	struct vm v;

	VM_OPEN(&v, 3);
	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v.vcpu, KVM_RUN_NR, 0);
	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v.vm, KVM_SET_MEMREGION, U(&r));
	assert_int_equal(drain(f), 0);
	assert_int_equal(map_count(f->s->maps.fl_vcpus), 0);
	/* tracked now: the same calls are seen (the handler is not broken) */
	track_self(f);
	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v.vm, KVM_SET_MEMREGION, U(&r));
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_MEMSLOT);
	vcpu_register(f, &v, 3);
	vm_close(&v);
}

/*
 * KVM_RUN issued on a fd that is not a vCPU (the VM fd, /dev/kvm) fails
 * with ENOTTY in the kernel; at syscall entry the handler must not take
 * that fd's private_data (a struct kvm, a miscdevice) for a struct kvm_vcpu,
 * or the thread is registered with a garbage vcpu_id and, fl_vcpus being
 * BPF_NOEXIST, its real KVM_RUN later is ignored.
 */
static void test_kvm_run_not_a_vcpu_fd(void **state)
{
	struct fx *f = *state;
	struct vm v;
	int n;

	VM_OPEN(&v, 3);
	track_self(f);
	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v.vm, KVM_RUN_NR, 0);
	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v.kvm, KVM_RUN_NR, 0);
	n = drain(f);
	if (n)
		fail_msg("KVM_RUN on a VM / /dev/kvm fd registered the thread as a vCPU "
			 "(vcpu_id %d, kvm %#" PRIx64 "): on_kvm_ioctl() must check that fd is a "
			 "vCPU file (d_name \"kvm-vcpu:N\", or its f_op) before reading struct "
			 "kvm_vcpu", f->recs[0].vcpu.vcpu_id, f->recs[0].vcpu.kvm);
	assert_int_equal(vcpus_get(f, tid()), INT32_MIN);
	/* the real one is still seen */
	vcpu_register(f, &v, 3);
	vm_close(&v);
}

/* ---- 2. memslots ---------------------------------------------------------------------- */

/* (b) KVM_SET_USER_MEMORY_REGION{,2} on the VM fd: the slot, exact, and the vCPU's kvm. */
static void test_memslot(void **state)
{
	struct fx *f = *state;
	struct kvm_userspace_memory_region r = {
		.slot = 0x10002,	/* address space 1, slot 2 */
		.flags = KVM_MEM_LOG_DIRTY_PAGES,
		.guest_phys_addr = 0x100000,
		.memory_size = 0x200000,
		.userspace_addr = 0x7f1234560000ull,
	};
	struct t_region2 r2 = {
		.slot = 5,
		.flags = 0x6,
		.guest_phys_addr = 0x1ffffe00000ull,
		.memory_size = 0x40000000ull,
		.userspace_addr = 0x7eeddccbb000ull,
		.guest_memfd_offset = 0x1000,
		.guest_memfd = 9,
	};
	const struct fl_event *e;
	uint64_t kvm;
	struct vm v;

	VM_OPEN(&v, 3);
	track_self(f);
	kvm = vcpu_register(f, &v, 3);

	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v.vm, KVM_SET_MEMREGION, U(&r));
	assert_int_equal(drain(f), 1);
	e = &f->recs[0];
	assert_self(e, FL_EV_MEMSLOT);
	assert_int_equal(e->memslot.slot, 0x10002);
	assert_int_equal(e->memslot.flags, KVM_MEM_LOG_DIRTY_PAGES);
	assert_int_equal(e->memslot.gpa, 0x100000);
	assert_int_equal(e->memslot.size, 0x200000);
	assert_int_equal(e->memslot.hva, 0x7f1234560000ull);
	/* the VM fd's struct kvm is the vCPU's vcpu->kvm */
	assert_int_equal(e->memslot.kvm, kvm);

	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v.vm, KVM_SET_MEMREGION2, U(&r2));
	assert_int_equal(drain(f), 1);
	e = &f->recs[0];
	assert_self(e, FL_EV_MEMSLOT);
	assert_int_equal(e->memslot.slot, 5);
	assert_int_equal(e->memslot.flags, 6);
	assert_int_equal(e->memslot.gpa, 0x1ffffe00000ull);
	assert_int_equal(e->memslot.size, 0x40000000ull);
	assert_int_equal(e->memslot.hva, 0x7eeddccbb000ull);
	assert_int_equal(e->memslot.kvm, kvm);

	/* other KVM ioctls on the VM fd are not memslots */
	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v.vm, 0xae47 /* KVM_SET_TSS_ADDR */, 0xfffbd000);
	/* an unreadable argument: no record rather than zeros */
	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v.vm, KVM_SET_MEMREGION, 16);
	assert_int_equal(drain(f), 0);
	vm_close(&v);
}

/* ---- 3. exits ----------------------------------------------------------------------------- */

/* (c) userspace exits, errors and kvm_exit on both ISAs, counted per thread. */
static void test_exit_counts(void **state)
{
	static const uint32_t want[][3] = {
		{ FL_EXIT_USERSPACE, 6, 3 },	  { FL_EXIT_USERSPACE, 2, 1 },
		{ FL_EXIT_USERSPACE_ERR, 4, 1 }, { FL_EXIT_VMX, 48, 1 },
		{ FL_EXIT_SVM, 0x400, 1 },
	};
	struct fx *f = *state;
	struct exits x;

	track_self(f);
	for (int i = 0; i < 3; i++)
		RUN(f->s->progs.test_kvm_userspace_exit, 6, 0);	/* KVM_EXIT_MMIO */
	RUN(f->s->progs.test_kvm_userspace_exit, 2, 0);		/* KVM_EXIT_IO */
	RUN(f->s->progs.test_kvm_userspace_exit, 0, (uint64_t)-4);	/* -EINTR */
	assert_int_equal(drain(f), 0);	/* counted, not recorded */

	/* VMX: the basic reason is the low 16 bits (bit 31 is FAILED_VMENTRY) */
	RUN(f->s->progs.test_kvm_exit, 1, 48 | 0x80000000u, 3);
	/* kvm_exit names the vCPU: one FL_EV_VCPU, without a kvm or fd */
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_VCPU);
	assert_int_equal(f->recs[0].vcpu.vcpu_id, 3);
	assert_int_equal(f->recs[0].vcpu.kvm, 0);
	assert_int_equal(f->recs[0].vcpu.fd, 0xffffffffu);
	assert_int_equal(vcpus_get(f, tid()), 3);
	/* SVM: the exit code as is */
	RUN(f->s->progs.test_kvm_exit, 2, 0x400, 3);
	assert_int_equal(drain(f), 0);

	exits_read(f, &x);
	exits_exactly(&x, tid(), 5, want);
}

static void test_exit_untracked(void **state)
{
	struct fx *f = *state;
	struct exits x;

	RUN(f->s->progs.test_kvm_userspace_exit, 6, 0);
	RUN(f->s->progs.test_kvm_userspace_exit, 0, (uint64_t)-4);
	RUN(f->s->progs.test_kvm_exit, 1, 48, 3);
	RUN(f->s->progs.test_kvm_exit, 2, 0x400, 3);
	RUN(f->s->progs.test_kvm_mmio, 2, 4, 0x105123, 0x42);
	assert_int_equal(drain(f), 0);
	exits_read(f, &x);
	assert_int_equal(x.n, 0);
	assert_int_equal(map_count(f->s->maps.fl_vcpus), 0);

	/* tracking, then untracking again: counted only in between */
	track_self(f);
	RUN(f->s->progs.test_kvm_userspace_exit, 6, 0);
	assert_int_equal(fl_probe_untrack(&f->p, getpid()), 0);
	RUN(f->s->progs.test_kvm_userspace_exit, 6, 0);
	exits_read(f, &x);
	exits_exactly(&x, tid(), 1, (const uint32_t[][3]){ { FL_EXIT_USERSPACE, 6, 1 } });
}

/* Counts are per thread: another thread's exits are its own keys. */
static void *exit_on_thread(void *arg)
{
	struct thread_run *t = arg;
	uint64_t a[2] = { 6, 0 };

	t->tid = tid();
	t->err = try_run(t->f->s->progs.test_kvm_userspace_exit, a, 2);
	if (!t->err)
		t->err = try_run(t->f->s->progs.test_kvm_userspace_exit, a, 2);
	return NULL;
}

static void test_exit_per_thread(void **state)
{
	struct fx *f = *state;
	struct thread_run t = { .f = f };
	pthread_t th;
	struct exits x;

	track_self(f);
	RUN(f->s->progs.test_kvm_userspace_exit, 6, 0);
	assert_int_equal(pthread_create(&th, NULL, exit_on_thread, &t), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(t.err, 0);
	exits_read(f, &x);
	if (x.n != 2) {
		exits_dump(&x);
		fail_msg("%d exit keys, want 2", x.n);
	}
	assert_int_equal(exits_get(&x, tid(), FL_EXIT_USERSPACE, 6), 1);
	assert_int_equal(exits_get(&x, t.tid, FL_EXIT_USERSPACE, 6), 2);
}

/* ---- 4. poison ------------------------------------------------------------------------------ */

/*
 * A poisoned guest page seen by a vCPU: the memslots of the VMM
 * (fl_memslots, from KVM_SET_USER_MEMORY_REGION) map the kvm_mmio gpa to a
 * host address, and fl_poison_hva holds the host pages UFFDIO_POISON
 * installed. Mirrors of fl_memslots' key and value:
 */
struct t_slot_key {
	uint32_t tgid;
	uint32_t slot;
};

struct t_slot {
	uint64_t gpa, size, hva;
};

#define HVA 0x7f5500000000ull	/* the guest RAM mapping of slot 1 */
#define GPA 0x100000ull		/* ... at this guest-physical address */
#define SLOT_SIZE 0x10000ull

static bool slot_get(struct fx *f, uint32_t tgid, uint32_t slot, struct t_slot *out)
{
	struct t_slot_key k = { .tgid = tgid, .slot = slot };

	assert_int_equal(bpf_map__key_size(f->s->maps.fl_memslots), sizeof(k));
	assert_int_equal(bpf_map__value_size(f->s->maps.fl_memslots), sizeof(*out));
	return !bpf_map_lookup_elem(bpf_map__fd(f->s->maps.fl_memslots), &k, out);
}

/*
 * Is host page hva >> 12 remembered as poisoned? The key's first half says
 * whose address space it is (today the tgid, padded); only the page, at
 * offset 8, is matched, so the check holds whatever identifies the owner.
 */
static bool poisoned(struct fx *f, uint64_t hva)
{
	int fd = bpf_map__fd(f->s->maps.fl_poison_hva);
	uint8_t key[16], next[16];
	void *prev = NULL;
	uint64_t page;

	assert_int_equal(bpf_map__key_size(f->s->maps.fl_poison_hva), sizeof(key));
	while (!bpf_map_get_next_key(fd, prev, next)) {
		memcpy(key, next, sizeof(key));
		prev = key;
		memcpy(&page, key + 8, 8);
		if (page == hva >> 12)
			return true;
	}
	return false;
}

/* A real userfaultfd, API done. */
static int new_uffd(void)
{
	int fd = test_uffd_open(O_CLOEXEC | O_NONBLOCK, 0);

	if (fd < 0)
		fail_msg("userfaultfd: %s", strerror(-fd));
	return fd;
}

/* KVM_SET_USER_MEMORY_REGION enter on the VM fd; drains its FL_EV_MEMSLOT. */
static void set_slot(struct fx *f, const struct vm *v, uint32_t slot, uint64_t gpa,
		     uint64_t size, uint64_t hva)
{
	struct kvm_userspace_memory_region r = { .slot = slot, .guest_phys_addr = gpa,
						 .memory_size = size, .userspace_addr = hva };

	RUN(f->s->progs.test_ioctl_enter, (uint64_t)v->vm, KVM_SET_MEMREGION, U(&r));
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_MEMSLOT);
}

/* UFFDIO_POISON of [start, start + len) returning ret, with updated written back. */
static void poison(struct fx *f, int uffd, uint64_t start, uint64_t len, int64_t ret,
		   int64_t updated)
{
	struct uffdio_poison p = { .range = { start, len } };

	RUN(f->s->progs.test_ioctl_enter, (uint64_t)uffd, UFFDIO_POISON, U(&p));
	p.updated = updated;
	RUN(f->s->progs.test_ioctl_exit, (uint64_t)ret);
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_IOCTL);
	assert_int_equal(f->recs[0].ioctl.op, FL_OP_POISON);
	assert_int_equal(f->recs[0].ioctl.start, start);
	assert_int_equal(f->recs[0].ioctl.ret, ret);
}

/* The one record drained already is this FL_EV_POISON_HIT of the test thread. */
static void check_hit_rec(struct fx *f, uint64_t gpa, uint64_t hva, uint64_t val,
			  uint32_t type, uint32_t len)
{
	const struct fl_event *e = &f->recs[0];

	assert_int_equal(f->nrecs, 1);
	assert_self(e, FL_EV_POISON_HIT);
	assert_int_equal(e->hit.gpa, gpa);
	assert_int_equal(e->hit.hva, hva);
	assert_int_equal(e->hit.val, val);
	assert_int_equal(e->hit.type, type);
	assert_int_equal(e->hit.len, len);
}

static void check_hit(struct fx *f, uint64_t gpa, uint64_t hva, uint64_t val, uint32_t type,
		      uint32_t len)
{
	assert_int_equal(drain(f), 1);
	check_hit_rec(f, gpa, hva, val, type, len);
}

/* (b') the memslot a tracked VMM sets is kept per process and slot; size 0 deletes it. */
static void test_memslot_map(void **state)
{
	struct fx *f = *state;
	uint32_t me = (uint32_t)getpid();
	struct t_slot sl;
	struct vm v;

	VM_OPEN(&v, 3);
	track_self(f);
	set_slot(f, &v, 1, GPA, SLOT_SIZE, HVA);
	set_slot(f, &v, 0x10002, 0xc0000000ull, 0x40000000ull, 0x7f6600000000ull);
	assert_int_equal(map_count(f->s->maps.fl_memslots), 2);
	assert_true(slot_get(f, me, 1, &sl));
	assert_int_equal(sl.gpa, GPA);
	assert_int_equal(sl.size, SLOT_SIZE);
	assert_int_equal(sl.hva, HVA);
	assert_true(slot_get(f, me, 0x10002, &sl));
	assert_int_equal(sl.gpa, 0xc0000000ull);
	assert_int_equal(sl.size, 0x40000000ull);
	assert_int_equal(sl.hva, 0x7f6600000000ull);
	/* slot 1 moved */
	set_slot(f, &v, 1, 0x200000, 0x2000, 0x7f5500100000ull);
	assert_true(slot_get(f, me, 1, &sl));
	assert_int_equal(sl.gpa, 0x200000);
	assert_int_equal(sl.size, 0x2000);
	assert_int_equal(sl.hva, 0x7f5500100000ull);
	/* size 0 deletes slot 1 (the record still tells the agent) */
	set_slot(f, &v, 1, 0x200000, 0, 0x7f5500100000ull);
	assert_int_equal(f->recs[0].memslot.size, 0);
	assert_false(slot_get(f, me, 1, &sl));
	assert_int_equal(map_count(f->s->maps.fl_memslots), 1);
	vm_close(&v);
}

/* (d) an MMIO exit on a poisoned guest page is a record; elsewhere only a count. */
static void test_poison_hit(void **state)
{
	struct fx *f = *state;
	struct exits x;
	struct vm v;
	int uffd;

	VM_OPEN(&v, 3);
	uffd = new_uffd();
	track_self(f);
	set_slot(f, &v, 1, GPA, SLOT_SIZE, HVA);
	poison(f, uffd, HVA + 0x5000, 0x1000, 0, 0x1000);
	assert_true(poisoned(f, HVA + 0x5000));
	assert_int_equal(map_count(f->s->maps.fl_poison_hva), 1);

	RUN(f->s->progs.test_kvm_mmio, 2, 4, GPA + 0x5123, 0x42);
	check_hit(f, GPA + 0x5123, HVA + 0x5123, 0x42, 2, 4);
	/* the last byte of the poisoned page, a read of 8 bytes */
	RUN(f->s->progs.test_kvm_mmio, 1, 8, GPA + 0x5fff, 0x1122334455667788ull);
	check_hit(f, GPA + 0x5fff, HVA + 0x5fff, 0x1122334455667788ull, 1, 8);

	/* the pages either side, and a gpa in no memslot (the APIC): counted only */
	RUN(f->s->progs.test_kvm_mmio, 2, 4, GPA + 0x4fff, 0x42);
	RUN(f->s->progs.test_kvm_mmio, 2, 4, GPA + 0x6000, 0x42);
	RUN(f->s->progs.test_kvm_mmio, 0, 4, 0xfee00000ull, 0);
	/* the poisoned host page's offset, but past the slot: not that page */
	RUN(f->s->progs.test_kvm_mmio, 0, 4, GPA + SLOT_SIZE + 0x5000, 0);
	assert_int_equal(drain(f), 0);
	/* the host page right after the slot's mapping is poisoned too ... */
	poison(f, uffd, HVA + SLOT_SIZE, 0x1000, 0, 0x1000);
	assert_true(poisoned(f, HVA + SLOT_SIZE));
	/* ... but the gpa right after the slot is not in it */
	RUN(f->s->progs.test_kvm_mmio, 0, 4, GPA + SLOT_SIZE, 0);
	assert_int_equal(drain(f), 0);

	exits_read(f, &x);
	exits_exactly(&x, tid(), 3,
		      (const uint32_t[][3]){ { FL_EXIT_MMIO, 2, 3 },
					     { FL_EXIT_MMIO, 1, 1 },
					     { FL_EXIT_MMIO, 0, 3 } });

	/* untracked: neither a record nor a count */
	assert_int_equal(fl_probe_untrack(&f->p, getpid()), 0);
	RUN(f->s->progs.test_kvm_mmio, 2, 4, GPA + 0x5123, 0x42);
	assert_int_equal(drain(f), 0);
	exits_read(f, &x);
	assert_int_equal(exits_get(&x, tid(), FL_EXIT_MMIO, 2), 3);

	/* the slot removed: the gpa maps nowhere, no hit */
	track_self(f);
	set_slot(f, &v, 1, GPA, 0, HVA);
	RUN(f->s->progs.test_kvm_mmio, 2, 4, GPA + 0x5123, 0x42);
	assert_int_equal(drain(f), 0);
	close(uffd);
	vm_close(&v);
}

/* Which pages a UFFDIO_POISON leaves remembered, by its outcome. */
static void test_poison_ranges(void **state)
{
	struct fx *f = *state;
	uint64_t base = 0x7f7700000000ull;
	int uffd = new_uffd();

	track_self(f);
	/* done whole: every page */
	poison(f, uffd, base, 0x3000, 0, 0x3000);
	assert_int_equal(map_count(f->s->maps.fl_poison_hva), 3);
	for (int i = 0; i < 3; i++)
		assert_true(poisoned(f, base + i * 0x1000ull));
	assert_false(poisoned(f, base + 0x3000));
	assert_false(poisoned(f, base - 0x1000));

	/* -EAGAIN after one page: that page only */
	poison(f, uffd, base + 0x10000, 0x3000, -EAGAIN, 0x1000);
	assert_int_equal(map_count(f->s->maps.fl_poison_hva), 4);
	assert_true(poisoned(f, base + 0x10000));
	assert_false(poisoned(f, base + 0x11000));

	/* longer than FL_POISON_PAGES_MAX (64): the first 64, and the counter */
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_POISON_TRUNC), 0);
	poison(f, uffd, base + 0x100000, 65 * 0x1000ull, 0, 65 * 0x1000ll);
	assert_int_equal(map_count(f->s->maps.fl_poison_hva), 4 + 64);
	assert_true(poisoned(f, base + 0x100000 + 63 * 0x1000ull));
	assert_false(poisoned(f, base + 0x100000 + 64 * 0x1000ull));
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_POISON_TRUNC), 1);

	/*
	 * Failed (-EEXIST: the page is populated), with updated = -EEXIST as
	 * the kernel writes it back: nothing was poisoned.
	 */
	poison(f, uffd, base + 0x200000, 0x1000, -EEXIST, -EEXIST);
	if (map_count(f->s->maps.fl_poison_hva) != 4 + 64 || poisoned(f, base + 0x200000))
		fail_msg("a failed UFFDIO_POISON (updated = -EEXIST) left %d pages remembered as "
			 "poisoned (POISON_TRUNC %" PRIu64 "): on_ioctl_exit() tests w[3] > 0 on a "
			 "__u64, so a negative updated is a huge length; it should be "
			 "(__s64)w[3] > 0",
			 map_count(f->s->maps.fl_poison_hva) - (4 + 64),
			 fl_probe_counter(&f->p, FL_CNT_POISON_TRUNC));
	assert_int_equal(fl_probe_counter(&f->p, FL_CNT_POISON_TRUNC), 1);
	close(uffd);
}

/*
 * The userfaultfd handler in another process (Firecracker's external page
 * fault handler, tests/workloads' SCM_RIGHTS variant): UFFDIO_POISON is
 * called by the handler, on addresses of the VMM's mm (ctx->mm). The vCPU
 * that then touches the page is in the VMM, so the page must be found from
 * the VMM's side.
 */
static void test_poison_from_handler_process(void **state)
{
	struct fx *f = *state;
	struct vm v;
	pid_t child;
	int uffd, status;

	VM_OPEN(&v, 3);
	uffd = new_uffd();
	track_self(f);
	set_slot(f, &v, 1, GPA, SLOT_SIZE, HVA);

	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		/* the handler: tracked (it holds the uffd), poisons one page of the VMM */
		struct uffdio_poison p = { .range = { HVA + 0x5000, 0x1000 } };
		uint64_t ea[3] = { (uint64_t)uffd, UFFDIO_POISON, U(&p) }, xa[1] = { 0 };

		if (fl_probe_track(&f->p, getpid(), FL_TRACK_HOLDER) < 0 ||
		    try_run(f->s->progs.test_ioctl_enter, ea, 3))
			_exit(2);
		p.updated = 0x1000;
		_exit(try_run(f->s->progs.test_ioctl_exit, xa, 1) ? 3 : 0);
	}
	assert_int_equal(waitpid(child, &status, 0), child);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(drain(f), 1);
	assert_int_equal(f->recs[0].type, FL_EV_IOCTL);
	assert_int_equal(f->recs[0].pid, (uint32_t)child);
	assert_int_equal(f->recs[0].ioctl.op, FL_OP_POISON);

	RUN(f->s->progs.test_kvm_mmio, 2, 4, GPA + 0x5123, 0x42);
	if (drain(f) != 1)
		fail_msg("a page poisoned by a handler in another process (pid %d) is not "
			 "recognised when the VMM's vCPU touches it: fl_poison_hva is keyed by the "
			 "tgid calling UFFDIO_POISON; key it by the target mm instead (sc.mm, i.e. "
			 "ctx->mm, in remember_poison; current->mm in on_kvm_mmio)", (int)child);
	check_hit_rec(f, GPA + 0x5123, HVA + 0x5123, 0x42, 2, 4);
	close(uffd);
	vm_close(&v);
}

/* ---- 5. machine errors ----------------------------------------------------------------------- */

/* (e) memory_failure_event(pfn, type, result): every process, exact. */
static void test_memory_failure(void **state)
{
	struct fx *f = *state;
	const struct fl_event *e;

	/* not tracked: machine-wide events are not filtered */
	RUN(f->s->progs.raw_memory_failure_event, 0x123456789ull, 5, 3);
	assert_int_equal(drain(f), 1);
	e = &f->recs[0];
	assert_self(e, FL_EV_MEMFAIL);
	assert_int_equal(e->memfail.pfn, 0x123456789ull);
	assert_int_equal(e->memfail.mf_type, 5);
	assert_int_equal(e->memfail.result, 3);

	RUN(f->s->progs.raw_memory_failure_event, 0xfffffffffffffull, 0, (uint64_t)-2);
	assert_int_equal(drain(f), 1);
	e = &f->recs[0];
	assert_int_equal(e->type, FL_EV_MEMFAIL);
	assert_int_equal(e->memfail.pfn, 0xfffffffffffffull);
	assert_int_equal(e->memfail.mf_type, 0);
	assert_int_equal(e->memfail.result, -2);
	/* nothing else touched */
	assert_int_equal(map_count(f->s->maps.fl_exits), 0);
}

/* ---- kernel memory for struct pointers ------------------------------------------------------ */

#define I_LD_MAP_VALUE(d, fd, off)                                                       \
	((struct bpf_insn){ .code = BPF_LD | BPF_DW | BPF_IMM, .dst_reg = (d),            \
			    .src_reg = BPF_PSEUDO_MAP_VALUE, .imm = (fd) }),              \
	((struct bpf_insn){ .imm = (off) })
#define I_STX_DW(d, s, o) ((struct bpf_insn){ .code = BPF_STX | BPF_MEM | BPF_DW, \
					      .dst_reg = (d), .src_reg = (s), .off = (o) })
#define I_MOV64_IMM(d, i) \
	((struct bpf_insn){ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = (d), .imm = (i) })
#define I_EXIT() ((struct bpf_insn){ .code = BPF_JMP | BPF_EXIT })

#define KMEM_SIZE 256
#define KMEM_SELF (KMEM_SIZE - 8)	/* where the program leaves the value's address */

struct kmem {
	int map;
	uint64_t addr;	/* kernel address of the map value */
};

/*
 * A one-element array map and the kernel address of its value, or false
 * with why set. The program is
 *	r1 = &map[0]		(ld_imm64, BPF_PSEUDO_MAP_VALUE)
 *	*(u64 *)(r1 + KMEM_SELF) = r1
 * which the verifier allows with CAP_PERFMON (pointer leaks are fine for root).
 */
static bool kmem_new(struct kmem *k, char *why, size_t whylen)
{
	static char log[4096];
	const struct bpf_insn insns[] = {
		I_LD_MAP_VALUE(BPF_REG_1, 0, 0),
		I_STX_DW(BPF_REG_1, BPF_REG_1, KMEM_SELF),
		I_MOV64_IMM(BPF_REG_0, 0),
		I_EXIT(),
	};
	struct bpf_insn prog_insns[sizeof(insns) / sizeof(insns[0])];
	LIBBPF_OPTS(bpf_prog_load_opts, po, .log_buf = log, .log_size = sizeof(log), .log_level = 1);
	LIBBPF_OPTS(bpf_test_run_opts, o);
	uint8_t val[KMEM_SIZE];
	uint32_t zero = 0;
	int prog;

	k->addr = 0;
	k->map = bpf_map_create(BPF_MAP_TYPE_ARRAY, "fl_test_kmem", 4, KMEM_SIZE, 1, NULL);
	if (k->map < 0) {
		snprintf(why, whylen, "bpf_map_create: %s", strerror(errno));
		return false;
	}
	memcpy(prog_insns, insns, sizeof(insns));
	prog_insns[0].imm = k->map;
	log[0] = 0;
	prog = bpf_prog_load(BPF_PROG_TYPE_RAW_TRACEPOINT, "fl_test_kmem", "GPL", prog_insns,
			     sizeof(prog_insns) / sizeof(prog_insns[0]), &po);
	if (prog < 0) {
		int err = errno;
		size_t n = strlen(log);

		for (size_t i = 0; i < n; i++)
			if (log[i] == '\n')
				log[i] = ' ';
		snprintf(why, whylen, "loading the map-value-address program: %s: %.300s",
			 strerror(err), n > 300 ? log + n - 300 : log);
		close(k->map);
		return false;
	}
	if (bpf_prog_test_run_opts(prog, &o))
		snprintf(why, whylen, "test run of the map-value-address program: %s",
			 strerror(errno));
	else if (bpf_map_lookup_elem(k->map, &zero, val))
		snprintf(why, whylen, "reading the map value: %s", strerror(errno));
	else
		memcpy(&k->addr, val + KMEM_SELF, 8);
	close(prog);
	if (k->addr < KERNEL_MIN) {
		if (k->addr)
			snprintf(why, whylen, "the map value address %#" PRIx64 " is not a kernel "
				 "address", k->addr);
		close(k->map);
		return false;
	}
	return true;
}

/* Writes len bytes of data at the start of the kernel buffer. */
static void kmem_write(struct kmem *k, const void *data, size_t len)
{
	uint8_t val[KMEM_SIZE] = { 0 };
	uint32_t zero = 0;

	assert_true(len <= KMEM_SELF);
	memcpy(val, data, len);
	memcpy(val + KMEM_SELF, &k->addr, 8);
	assert_int_equal(bpf_map_update_elem(k->map, &zero, val, BPF_ANY), 0);
}

#define KMEM_NEW(k)                                                      \
	do {                                                             \
		char why_[512] = "";                                     \
		if (!kmem_new(k, why_, sizeof(why_)))                    \
			skip_because(why_);                              \
	} while (0)

/* ---- 6. mce_record ------------------------------------------------------------------------------ */

/* (f) mce_record(struct mce *): the uapi fields, extcpu as the cpu. */
static void test_mce_record(void **state)
{
	struct fx *f = *state;
	struct mce m;
	const struct fl_event *e;
	struct kmem k;

	KMEM_NEW(&k);
	memset(&m, 0xa5, sizeof(m));	/* every field we do not check is noise */
	m.status = 0xbd80000000100134ull;
	m.misc = 0x86;
	m.addr = 0x1234567000ull;
	m.mcgstatus = 0x5;
	m.ip = 0xffffffff81234567ull;
	m.bank = 0x1b;
	m.cpu = 7;		/* obsolete u8: the handler must take extcpu */
	m.extcpu = 300;
	assert_true(sizeof(m) <= KMEM_SELF);
	kmem_write(&k, &m, sizeof(m));

	/* not tracked: machine-wide */
	RUN(f->s->progs.raw_mce_record, k.addr);
	assert_int_equal(drain(f), 1);
	e = &f->recs[0];
	assert_self(e, FL_EV_MCE);
	assert_int_equal(e->mce.status, 0xbd80000000100134ull);
	assert_int_equal(e->mce.misc, 0x86);
	assert_int_equal(e->mce.addr, 0x1234567000ull);
	assert_int_equal(e->mce.mcgstatus, 0x5);
	assert_int_equal(e->mce.ip, 0xffffffff81234567ull);
	assert_int_equal(e->mce.cpu, 300);
	assert_int_equal(e->mce.bank, 0x1b);

	/* another record through the same memory: really read each time */
	m.addr = 0x9abc000ull;
	m.bank = 3;
	m.extcpu = 1;
	kmem_write(&k, &m, sizeof(m));
	RUN(f->s->progs.raw_mce_record, k.addr);
	assert_int_equal(drain(f), 1);
	assert_int_equal(f->recs[0].mce.addr, 0x9abc000ull);
	assert_int_equal(f->recs[0].mce.bank, 3);
	assert_int_equal(f->recs[0].mce.cpu, 1);

	/* an unreadable pointer: no record */
	RUN(f->s->progs.raw_mce_record, 0);
	assert_int_equal(drain(f), 0);
	close(k.map);
}

/* ---- 7. signal_deliver --------------------------------------------------------------------------- */

static void signal_rec(struct fx *f, int sig, int err, int code, uint64_t addr)
{
	const struct fl_event *e;

	assert_int_equal(drain(f), 1);
	e = &f->recs[0];
	assert_self(e, FL_EV_SIGNAL);
	assert_int_equal(e->signal.signo, sig);
	assert_int_equal(e->signal.err, err);
	assert_int_equal(e->signal.code, code);
	assert_int_equal(e->signal.addr, addr);
	assert_int_equal(e->signal.pad, 0);
}

/* (f) signal_deliver(sig, struct kernel_siginfo *, ka): SIGBUS/SIGSEGV of tracked threads. */
static void test_signal_deliver(void **state)
{
	struct fx *f = *state;
	siginfo_t si;
	struct kmem k;

	KMEM_NEW(&k);
	memset(&si, 0x5a, sizeof(si));
	si.si_signo = SIGBUS_;
	si.si_errno = 0;
	si.si_code = BUS_MCEERR_AR_;
	si.si_addr = (void *)0x7f0012345000ull;
	kmem_write(&k, &si, sizeof(si));

	/* untracked: nothing */
	RUN(f->s->progs.raw_signal_deliver, SIGBUS_, k.addr, 0);
	assert_int_equal(drain(f), 0);

	track_self(f);
	RUN(f->s->progs.raw_signal_deliver, SIGBUS_, k.addr, 0);
	signal_rec(f, SIGBUS_, 0, BUS_MCEERR_AR_, 0x7f0012345000ull);

	/* SIGSEGV, with an errno */
	si.si_signo = SIGSEGV_;
	si.si_errno = 14;
	si.si_code = SEGV_ACCERR_;
	si.si_addr = (void *)0xdeadbeef000ull;
	kmem_write(&k, &si, sizeof(si));
	RUN(f->s->progs.raw_signal_deliver, SIGSEGV_, k.addr, 0);
	signal_rec(f, SIGSEGV_, 14, SEGV_ACCERR_, 0xdeadbeef000ull);

	/* other signals are not recorded, whatever the siginfo says */
	RUN(f->s->progs.raw_signal_deliver, SIGUSR1_, k.addr, 0);
	RUN(f->s->progs.raw_signal_deliver, 0, k.addr, 0);
	RUN(f->s->progs.raw_signal_deliver, 31, k.addr, 0);
	assert_int_equal(drain(f), 0);
	close(k.map);
}

/* ---- 8. thread exit ------------------------------------------------------------------------------- */

/*
 * A vCPU thread that exits must leave fl_vcpus: tids are reused, and a new
 * thread (of any tracked process) that gets the tid would never be
 * reported as a vCPU (note_vcpu inserts with BPF_NOEXIST, KVM_RUN returns
 * early when the tid is known).
 */
static void test_vcpu_forgotten_on_exit(void **state)
{
	struct fx *f = *state;
	uint64_t task = current_task(f);

	track_self(f);
	RUN(f->s->progs.test_kvm_exit, 1, 48, 3);
	assert_int_equal(drain(f), 1);
	assert_int_equal(vcpus_get(f, tid()), 3);
	/* this thread is the group leader: the process exits */
	RUN(f->s->progs.raw_sched_process_exit, task, 1);
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_PROC_EXIT);
	if (vcpus_get(f, tid()) != INT32_MIN)
		fail_msg("fl_vcpus still holds tid %u after its exit: on_process_exit() should "
			 "bpf_map_delete_elem(&fl_vcpus, &tid) with the other per-thread maps",
			 tid());
}

/* ---- main ---------------------------------------------------------------------------------------- */

static int libbpf_warn_only(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, ap) : 0;
}

/*
 * KVM_EXIT_MEMORY_FAULT (guest_memfd / KVM-userfault postcopy): the record
 * carries the gpa, size and flags the vCPU's kvm_run holds. The test writes
 * them into the mmap'd kvm_run itself, so the values are known.
 */
static void test_kvm_memory_fault(void **state)
{
	struct fx *f = *state;
	struct kvm_run *run;
	long size;
	struct vm v;

	VM_OPEN(&v, 5);
	size = ioctl(v.kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
	assert_true(size >= (long)sizeof(*run));
	run = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, v.vcpu, 0);
	assert_true(run != MAP_FAILED);
	track_self(f);
	vcpu_register(f, &v, 5);
	/* memory_fault {flags, gpa, size} sits at the start of kvm_run's exit union */
	{
		uint64_t *mf = (uint64_t *)&run->mmio;

		mf[0] = 1ULL << 3;	/* KVM_MEMORY_EXIT_FLAG_PRIVATE */
		mf[1] = 0x123000;
		mf[2] = 0x1000;
	}
	RUN(f->s->progs.test_kvm_userspace_exit, 39, 0);	/* KVM_EXIT_MEMORY_FAULT */
	assert_int_equal(drain(f), 1);
	assert_self(&f->recs[0], FL_EV_KVM_MEMFAULT);
	assert_int_equal(f->recs[0].memfault.vcpu_id, 5);
	assert_int_equal(f->recs[0].memfault.flags, 1ULL << 3);
	assert_int_equal(f->recs[0].memfault.gpa, 0x123000);
	assert_int_equal(f->recs[0].memfault.size, 0x1000);
	/* other exits carry no record */
	RUN(f->s->progs.test_kvm_userspace_exit, 6, 0);
	assert_int_equal(drain(f), 0);
	munmap(run, size);
	vm_close(&v);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(test_load),
		T(test_kvm_run_vcpu),
		T(test_kvm_run_two_threads),
		T(test_kvm_untracked),
		T(test_kvm_run_not_a_vcpu_fd),
		T(test_memslot),
		T(test_exit_counts),
		T(test_exit_untracked),
		T(test_exit_per_thread),
		T(test_memslot_map),
		T(test_poison_hit),
		T(test_poison_ranges),
		T(test_poison_from_handler_process),
		T(test_memory_failure),
		T(test_mce_record),
		T(test_signal_deliver),
		T(test_vcpu_forgotten_on_exit),
		T(test_kvm_memory_fault),
	};
	int fd;

	if (geteuid() != 0) {
		printf("SKIP: the BPF KVM tests load BPF programs and need root\n");
		return 77;
	}
	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		printf("SKIP: the BPF KVM tests need /dev/kvm: %s\n", strerror(errno));
		return 77;
	}
	close(fd);
	if (prctl(PR_GET_NAME, g_comm, 0, 0, 0))
		return 1;
	libbpf_set_print(libbpf_warn_only);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
