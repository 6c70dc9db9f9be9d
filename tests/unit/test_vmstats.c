// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of the per-VM statistics (src/trace/vmstats.c): latency buckets,
 * per-vCPU and non-vCPU totals, vCPU detection from QEMU thread names, and
 * the all-vCPU blocktime sweep on hand-built interval sets.
 *
 * Times are plain nanoseconds; every expected value is worked out by hand
 * in the comment next to it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmstats.h"

#define PID 4242u
#define PID2 5151u
#define US 1000ull
#define MS 1000000ull

/* comm buffers are FL_COMM_LEN bytes, as the ring-buffer records carry them */
static const char QEMU[FL_COMM_LEN] = "qemu-system-x86";
static const char OTHER[FL_COMM_LEN] = "cloud-hypervis";

static int setup(void **state)
{
	struct fl_vmstats *s = calloc(1, sizeof(*s));

	if (!s)
		return -1;
	*state = s;
	return 0;
}

static int teardown(void **state)
{
	struct fl_vmstats *s = *state;

	fl_vms_free(s);
	free(s);
	return 0;
}

static struct fl_vm_stats *vm_of(struct fl_vmstats *s, uint32_t pid)
{
	struct fl_vm_stats *vm = fl_vms_find(s, pid);

	assert_non_null(vm);
	assert_int_equal(vm->pid, pid);
	return vm;
}

static const struct fl_vcpu_stats *vcpu_slot(const struct fl_vm_stats *vm, uint32_t tid)
{
	for (int i = 0; i < vm->nvcpus; i++)
		if (vm->vcpus[i].tid == tid)
			return &vm->vcpus[i];
	fail_msg("tid %u is not a vCPU of pid %u", tid, vm->pid);
	return NULL;
}

/* Buckets equal exp[] (a list of bucket:count pairs, -1 terminated); every other is 0. */
static void assert_buckets(const struct fl_lat_stats *l, const int *exp)
{
	uint64_t want[FL_LAT_BUCKETS] = { 0 };

	for (int i = 0; exp[i] >= 0; i += 2)
		want[exp[i]] = (uint64_t)exp[i + 1];
	for (int b = 0; b < FL_LAT_BUCKETS; b++)
		if (l->buckets[b] != want[b])
			fail_msg("bucket %d: %llu, want %llu", b, (unsigned long long)l->buckets[b],
				 (unsigned long long)want[b]);
}

/* A plain interval helper: vCPU thread tid waits [start, end). */
static void wait_(struct fl_vmstats *s, uint32_t tid, uint64_t start, uint64_t end)
{
	fl_vms_add(s, PID, QEMU, tid, "vcpu", start, end);
}

/* vCPUs with tids 1..n (vCPU index tid - 1). */
static void vcpus(struct fl_vmstats *s, int n)
{
	for (int i = 1; i <= n; i++)
		fl_vms_set_vcpu(s, PID, QEMU, (uint32_t)i, i - 1);
	assert_int_equal(vm_of(s, PID)->nvcpus, n);
}

/* ---- 1. latency buckets --------------------------------------------------- */

static void test_lat_bucket(void **state)
{
	(void)state;
	assert_int_equal(FL_LAT_BUCKETS, 24);
	/* bucket 0: below 2 µs (< 1 µs folds in) */
	assert_int_equal(fl_lat_bucket(0), 0);
	assert_int_equal(fl_lat_bucket(1), 0);
	assert_int_equal(fl_lat_bucket(999), 0);
	assert_int_equal(fl_lat_bucket(1 * US), 0);
	assert_int_equal(fl_lat_bucket(2 * US - 1), 0);
	/* bucket i: [2^i, 2^(i+1)) µs */
	assert_int_equal(fl_lat_bucket(2 * US), 1);
	assert_int_equal(fl_lat_bucket(3 * US), 1);
	assert_int_equal(fl_lat_bucket(4 * US - 1), 1);
	assert_int_equal(fl_lat_bucket(4 * US), 2);
	assert_int_equal(fl_lat_bucket(7999), 2);
	assert_int_equal(fl_lat_bucket(8 * US), 3);
	assert_int_equal(fl_lat_bucket(1 * MS), 9);	/* 512 <= 1000 < 1024 µs */
	assert_int_equal(fl_lat_bucket(1024 * US), 10);
	assert_int_equal(fl_lat_bucket((1ull << 22) * US - 1), 21);
	assert_int_equal(fl_lat_bucket((1ull << 22) * US), 22);
	assert_int_equal(fl_lat_bucket((1ull << 23) * US - 1), 22);
	/* 23 takes 2^23 µs (8.4 s) and everything beyond */
	assert_int_equal(fl_lat_bucket((1ull << 23) * US), 23);
	assert_int_equal(fl_lat_bucket((1ull << 24) * US), 23);
	assert_int_equal(fl_lat_bucket((1ull << 40) * US), 23);
	assert_int_equal(fl_lat_bucket(UINT64_MAX), 23);
}

/* ---- 2. per-vCPU and non-vCPU totals ---------------------------------------- */

static void test_per_vcpu_stats(void **state)
{
	struct fl_vmstats *s = *state;
	const struct fl_vcpu_stats *v0, *v1;
	struct fl_vm_stats *vm;

	fl_vms_set_vcpu(s, PID, QEMU, 101, 0);
	fl_vms_set_vcpu(s, PID, QEMU, 102, 1);
	/* vCPU 0: 500 ns, 1.5 µs (bucket 0), 2 µs, 3.999 µs (1), 4 µs (2), 1 ms (9) */
	fl_vms_add(s, PID, QEMU, 101, "t", 10 * MS, 10 * MS + 500);
	fl_vms_add(s, PID, QEMU, 101, "t", 11 * MS, 11 * MS + 1500);
	fl_vms_add(s, PID, QEMU, 101, "t", 12 * MS, 12 * MS + 2000);
	fl_vms_add(s, PID, QEMU, 101, "t", 13 * MS, 13 * MS + 3999);
	fl_vms_add(s, PID, QEMU, 101, "t", 14 * MS, 14 * MS + 4000);
	fl_vms_add(s, PID, QEMU, 101, "t", 20 * MS, 21 * MS);
	/* vCPU 1: 10 µs (3), 30 µs (4) */
	fl_vms_add(s, PID, QEMU, 102, "t", 10 * MS, 10 * MS + 10 * US);
	fl_vms_add(s, PID, QEMU, 102, "t", 30 * MS, 30 * MS + 30 * US);

	vm = vm_of(s, PID);
	assert_string_equal(vm->comm, "qemu-system-x86");
	assert_int_equal(vm->nvcpus, 2);
	v0 = vcpu_slot(vm, 101);
	v1 = vcpu_slot(vm, 102);
	assert_int_equal(v0->vcpu, 0);
	assert_int_equal(v1->vcpu, 1);

	assert_int_equal(v0->lat.faults, 6);
	/* 500 + 1500 + 2000 + 3999 + 4000 + 1000000 */
	assert_int_equal(v0->lat.blocked_ns, 1011999);
	assert_int_equal(v0->lat.blocked_ns / v0->lat.faults, 168666);	/* the average */
	assert_buckets(&v0->lat, (const int[]){ 0, 2, 1, 2, 2, 1, 9, 1, -1 });

	assert_int_equal(v1->lat.faults, 2);
	assert_int_equal(v1->lat.blocked_ns, 40 * US);
	assert_int_equal(v1->lat.blocked_ns / v1->lat.faults, 20 * US);
	assert_buckets(&v1->lat, (const int[]){ 3, 1, 4, 1, -1 });

	/* nothing went to the non-vCPU side */
	assert_int_equal(vm->nonvcpu.faults, 0);
	assert_int_equal(vm->nonvcpu.blocked_ns, 0);
	assert_buckets(&vm->nonvcpu, (const int[]){ -1 });
	/* vCPU faults are remembered as intervals for the all-vCPU sweep */
	assert_int_equal(vm->niv, 8);
	assert_int_equal(vm->iv_dropped, 0);
}

/* Threads that are not vCPUs (I/O threads, the main loop) are kept apart. */
static void test_nonvcpu_separate(void **state)
{
	struct fl_vmstats *s = *state;
	struct fl_vm_stats *vm;

	fl_vms_set_vcpu(s, PID, QEMU, 101, 0);
	fl_vms_add(s, PID, QEMU, 101, "t", 1 * MS, 1 * MS + 6 * US);		/* vCPU: bucket 2 */
	fl_vms_add(s, PID, QEMU, 200, "IO iothread1", 1 * MS, 1 * MS + 100 * US);	/* 6 */
	fl_vms_add(s, PID, QEMU, 201, "qemu-system-x86", 2 * MS, 2 * MS + 300);	/* 0 */
	fl_vms_add(s, PID, QEMU, 200, "IO iothread1", 5 * MS, 5 * MS + 16 * US);	/* 4 */

	vm = vm_of(s, PID);
	assert_int_equal(vm->nvcpus, 1);	/* no slot for the other threads */
	assert_int_equal(vm->nonvcpu.faults, 3);
	assert_int_equal(vm->nonvcpu.blocked_ns, 100 * US + 300 + 16 * US);
	assert_int_equal(vm->nonvcpu.blocked_ns / vm->nonvcpu.faults, 38766);	/* 116300 / 3 */
	assert_buckets(&vm->nonvcpu, (const int[]){ 0, 1, 4, 1, 6, 1, -1 });
	assert_int_equal(vcpu_slot(vm, 101)->lat.faults, 1);
	assert_int_equal(vcpu_slot(vm, 101)->lat.blocked_ns, 6 * US);
	assert_buckets(&vcpu_slot(vm, 101)->lat, (const int[]){ 2, 1, -1 });
	/* only the vCPU's wait is an interval */
	assert_int_equal(vm->niv, 1);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 200, "IO iothread1"), -1);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 201, "qemu-system-x86"), -1);
	assert_int_equal(vm->nvcpus, 1);
}

/* Two processes are two VMs; an end before the start is not a fault. */
static void test_vms_apart(void **state)
{
	struct fl_vmstats *s = *state;
	struct fl_vm_stats *a, *b;

	fl_vms_set_vcpu(s, PID, QEMU, 101, 0);
	fl_vms_set_vcpu(s, PID2, OTHER, 301, 0);
	fl_vms_add(s, PID, QEMU, 101, "t", 100, 100 + 5 * US);
	fl_vms_add(s, PID2, OTHER, 301, "t", 100, 100 + 9 * US);
	fl_vms_add(s, PID2, OTHER, 301, "t", 500, 400);	/* end < start: dropped */

	assert_int_equal(s->nvms, 2);
	a = vm_of(s, PID);
	b = vm_of(s, PID2);
	assert_string_equal(a->comm, "qemu-system-x86");
	assert_string_equal(b->comm, "cloud-hypervis");
	assert_int_equal(vcpu_slot(a, 101)->lat.faults, 1);
	assert_int_equal(vcpu_slot(a, 101)->lat.blocked_ns, 5 * US);
	assert_int_equal(vcpu_slot(b, 301)->lat.faults, 1);
	assert_int_equal(vcpu_slot(b, 301)->lat.blocked_ns, 9 * US);
	assert_int_equal(b->niv, 1);
	assert_null(fl_vms_find(s, 1));
	/* tid 101 is a vCPU of PID only */
	assert_int_equal(fl_vms_vcpu_of(s, PID2, 101, "t"), -1);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 101, "t"), 0);
}

/* ---- 3. vCPU detection ------------------------------------------------------- */

static void test_vcpu_names(void **state)
{
	struct fl_vmstats *s = *state;
	struct fl_vm_stats *vm;

	assert_int_equal(fl_vms_vcpu_of(s, PID, 11, "CPU 3/KVM"), 3);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 12, "CPU 0/TCG"), 0);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 13, "CPU 12/KVM"), 12);
	/* not vCPU names */
	assert_int_equal(fl_vms_vcpu_of(s, PID, 14, "CPUfoo"), -1);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 15, "CPU 3"), -1);	/* no "/accel" */
	assert_int_equal(fl_vms_vcpu_of(s, PID, 16, "CPU -1/KVM"), -1);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 17, "qemu-system-x86"), -1);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 18, "IO mon_iothread"), -1);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 19, ""), -1);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 20, NULL), -1);

	vm = vm_of(s, PID);
	assert_int_equal(vm->nvcpus, 3);	/* learned on the way, the others not */
	assert_int_equal(vcpu_slot(vm, 11)->vcpu, 3);
	assert_int_equal(vcpu_slot(vm, 12)->vcpu, 0);
	assert_int_equal(vcpu_slot(vm, 13)->vcpu, 12);
	/* once learned, the tid is the vCPU whatever its name says later */
	assert_int_equal(fl_vms_vcpu_of(s, PID, 11, "renamed"), 3);
	assert_int_equal(vm->nvcpus, 3);
}

/* KVM_RUN / a KVM tracepoint (fl_vms_set_vcpu) beats the thread name. */
static void test_vcpu_explicit(void **state)
{
	struct fl_vmstats *s = *state;
	struct fl_vm_stats *vm;

	fl_vms_set_vcpu(s, PID, QEMU, 31, 5);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 31, "CPU 3/KVM"), 5);
	/* a name-learned vCPU is corrected by a later KVM_RUN, in place */
	assert_int_equal(fl_vms_vcpu_of(s, PID, 32, "CPU 1/KVM"), 1);
	fl_vms_set_vcpu(s, PID, QEMU, 32, 7);
	assert_int_equal(fl_vms_vcpu_of(s, PID, 32, "CPU 1/KVM"), 7);
	vm = vm_of(s, PID);
	assert_int_equal(vm->nvcpus, 2);
	assert_int_equal(vcpu_slot(vm, 31)->vcpu, 5);
	assert_int_equal(vcpu_slot(vm, 32)->vcpu, 7);
}

/* A fault of a thread named like a vCPU goes to that vCPU. */
static void test_vcpu_by_name_in_add(void **state)
{
	struct fl_vmstats *s = *state;
	struct fl_vm_stats *vm;

	fl_vms_add(s, PID, QEMU, 41, "CPU 2/KVM", 1000, 1000 + 3 * US);
	fl_vms_add(s, PID, QEMU, 42, "CPUfoo", 1000, 1000 + 3 * US);
	vm = vm_of(s, PID);
	assert_int_equal(vm->nvcpus, 1);
	assert_int_equal(vcpu_slot(vm, 41)->vcpu, 2);
	assert_int_equal(vcpu_slot(vm, 41)->lat.faults, 1);
	assert_int_equal(vcpu_slot(vm, 41)->lat.blocked_ns, 3 * US);
	assert_buckets(&vcpu_slot(vm, 41)->lat, (const int[]){ 1, 1, -1 });
	assert_int_equal(vm->nonvcpu.faults, 1);
	assert_int_equal(vm->nonvcpu.blocked_ns, 3 * US);
	assert_int_equal(vm->niv, 1);
	/* the VM's name comes from the fault when the name-learned vCPU made it first */
	assert_string_equal(vm->comm, "qemu-system-x86");
}

/* ---- 4. all-vCPU blocktime ------------------------------------------------------- */

static void test_all_blocked_none(void **state)
{
	struct fl_vmstats *s = *state;
	struct fl_vm_stats vm0 = { 0 };

	assert_int_equal(fl_vms_all_vcpu_blocked(&vm0), 0);	/* no vCPUs, no intervals */
	vcpus(s, 2);
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 0);	/* no intervals */
	/* vCPU 0 and vCPU 1 never wait at the same time */
	wait_(s, 1, 100, 200);
	wait_(s, 2, 300, 400);
	wait_(s, 1, 500, 900);
	wait_(s, 2, 901, 1000);
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 0);
}

static void test_all_blocked_full_overlap(void **state)
{
	struct fl_vmstats *s = *state;

	vcpus(s, 2);
	wait_(s, 1, 1000, 5000);
	wait_(s, 2, 2000, 4500);	/* inside vCPU 0's wait: 2500 */
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 2500);
	/* added in the other order, same answer */
	wait_(s, 2, 10000, 20000);
	wait_(s, 1, 12000, 13000);	/* + 1000 */
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 3500);
	/* partial overlap: [30000, 31000) and [30400, 32000) share 600 */
	wait_(s, 1, 30000, 31000);
	wait_(s, 2, 30400, 32000);
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 4100);
}

/* A single vCPU: every wait of it is an all-vCPU wait. */
static void test_all_blocked_one_vcpu(void **state)
{
	struct fl_vmstats *s = *state;

	vcpus(s, 1);
	wait_(s, 1, 100, 350);
	wait_(s, 1, 1000, 1010);
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 260);
}

/* Three vCPUs, only two of them ever wait together: never all blocked. */
static void test_all_blocked_three_two_overlap(void **state)
{
	struct fl_vmstats *s = *state;

	vcpus(s, 3);
	wait_(s, 1, 1000, 5000);
	wait_(s, 2, 2000, 6000);
	wait_(s, 3, 6000, 7000);	/* starts as vCPU 1 runs again: touching, no overlap */
	wait_(s, 3, 100, 1000);		/* ends as vCPU 0 starts */
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 0);
	/* now vCPU 2 joins inside [2000, 5000): all three blocked [3000, 3500) */
	wait_(s, 3, 3000, 3500);
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 500);
}

/* Intervals that touch: an end and a start at the same instant do not overlap. */
static void test_all_blocked_touching(void **state)
{
	struct fl_vmstats *s = *state;

	vcpus(s, 2);
	wait_(s, 1, 0 + 10, 10 + 10);
	wait_(s, 2, 10 + 10, 20 + 10);
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 0);
	/*
	 * vCPU 0: [100, 110) then [110, 120); vCPU 1: [105, 110) then [110, 115).
	 * All blocked [105, 110) and [110, 115): 10, with both boundaries at 110.
	 */
	wait_(s, 1, 100, 110);
	wait_(s, 2, 105, 110);
	wait_(s, 1, 110, 120);
	wait_(s, 2, 110, 115);
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 10);
}

/* A vCPU thread's faults are intervals; a non-vCPU thread's are not. */
static void test_all_blocked_ignores_nonvcpu(void **state)
{
	struct fl_vmstats *s = *state;

	vcpus(s, 2);
	wait_(s, 1, 0, 100);
	fl_vms_add(s, PID, QEMU, 900, "IO iothread1", 0, 1000);	/* not a vCPU */
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 0);
	wait_(s, 2, 50, 150);
	assert_int_equal(fl_vms_all_vcpu_blocked(vm_of(s, PID)), 50);
}

/*
 * Many intervals (past the first 1024-entry allocation): 2000 rounds, each
 * vCPU 0 [r*100, r*100+60), vCPU 1 [r*100+30, r*100+90), vCPU 2
 * [r*100+40, r*100+100): all three blocked [r*100+40, r*100+60) = 20 per
 * round, added in a scrambled order.
 */
static void test_all_blocked_many(void **state)
{
	struct fl_vmstats *s = *state;
	enum { ROUNDS = 2000 };
	struct fl_vm_stats *vm;

	vcpus(s, 3);
	for (int i = 0; i < ROUNDS; i++) {
		uint64_t r = (uint64_t)((i * 7919) % ROUNDS) * 100 + 1000;

		wait_(s, 2, r + 30, r + 90);
		wait_(s, 3, r + 40, r + 100);
		wait_(s, 1, r, r + 60);
	}
	vm = vm_of(s, PID);
	assert_int_equal(vm->niv, 3 * ROUNDS);
	assert_int_equal(vm->iv_dropped, 0);
	assert_int_equal(fl_vms_all_vcpu_blocked(vm), 20 * ROUNDS);
	assert_int_equal(vcpu_slot(vm, 1)->lat.blocked_ns, 60 * ROUNDS);
	assert_int_equal(vcpu_slot(vm, 3)->lat.faults, ROUNDS);
	/* a fourth vCPU that never waits: never all blocked */
	fl_vms_set_vcpu(s, PID, QEMU, 4, 3);
	assert_int_equal(fl_vms_all_vcpu_blocked(vm), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lat_bucket),
		cmocka_unit_test_setup_teardown(test_per_vcpu_stats, setup, teardown),
		cmocka_unit_test_setup_teardown(test_nonvcpu_separate, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vms_apart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vcpu_names, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vcpu_explicit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vcpu_by_name_in_add, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_blocked_none, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_blocked_full_overlap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_blocked_one_vcpu, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_blocked_three_two_overlap, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_all_blocked_touching, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_blocked_ignores_nonvcpu, setup, teardown),
		cmocka_unit_test_setup_teardown(test_all_blocked_many, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
