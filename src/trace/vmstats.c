// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "vmstats.h"

#define IV_CAP_MAX (4u << 20)	/* 4M intervals, 96 MiB: then all-vCPU time is a lower bound */

unsigned fl_lat_bucket(uint64_t latency_ns)
{
	uint64_t us = latency_ns / 1000;
	unsigned b = 0;

	while (us > 1 && b < FL_LAT_BUCKETS - 1) {
		us >>= 1;
		b++;
	}
	return b;
}

struct fl_vm_stats *fl_vms_find(struct fl_vmstats *s, uint32_t pid)
{
	for (int i = 0; i < s->nvms; i++)
		if (s->vms[i]->pid == pid)
			return s->vms[i];
	return NULL;
}

static struct fl_vm_stats *vm_get(struct fl_vmstats *s, uint32_t pid, const char *comm)
{
	struct fl_vm_stats *vm = fl_vms_find(s, pid);

	if (vm || s->nvms == FL_MAX_VMS)
		return vm;
	vm = calloc(1, sizeof(*vm));
	if (!vm)
		return NULL;
	vm->pid = pid;
	if (comm)
		strncpy(vm->comm, comm, FL_COMM_LEN - 1);
	s->vms[s->nvms++] = vm;
	return vm;
}

static int slot_of(const struct fl_vm_stats *vm, uint32_t tid)
{
	for (int i = 0; i < vm->nvcpus; i++)
		if (vm->vcpus[i].tid == tid)
			return i;
	return -1;
}

void fl_vms_set_vcpu(struct fl_vmstats *s, uint32_t pid, const char *comm, uint32_t tid,
		     int32_t vcpu)
{
	struct fl_vm_stats *vm = vm_get(s, pid, comm);
	int i;

	if (!vm)
		return;
	i = slot_of(vm, tid);
	if (i < 0) {
		if (vm->nvcpus == FL_MAX_VCPUS)
			return;
		i = vm->nvcpus++;
		vm->vcpus[i].tid = tid;
	}
	vm->vcpus[i].vcpu = vcpu;
}

/* QEMU names its vCPU threads "CPU <n>/KVM" (or /TCG, /HVF ...). */
static int32_t vcpu_from_name(const char *thread_comm)
{
	int n, len = 0;

	if (thread_comm && sscanf(thread_comm, "CPU %d/%n", &n, &len) == 1 && len > 0 && n >= 0)
		return n;
	return -1;
}

int32_t fl_vms_vcpu_of(struct fl_vmstats *s, uint32_t pid, uint32_t tid, const char *thread_comm)
{
	struct fl_vm_stats *vm = fl_vms_find(s, pid);
	int i = vm ? slot_of(vm, tid) : -1;
	int32_t n;

	if (i >= 0)
		return vm->vcpus[i].vcpu;
	n = vcpu_from_name(thread_comm);
	if (n >= 0)
		fl_vms_set_vcpu(s, pid, NULL, tid, n);
	return n;
}

static void lat_add(struct fl_lat_stats *l, uint64_t ns)
{
	l->faults++;
	l->blocked_ns += ns;
	l->buckets[fl_lat_bucket(ns)]++;
}

void fl_vms_add(struct fl_vmstats *s, uint32_t pid, const char *comm, uint32_t tid,
		const char *thread_comm, uint64_t start, uint64_t end)
{
	int32_t vcpu = fl_vms_vcpu_of(s, pid, tid, thread_comm);
	struct fl_vm_stats *vm = vm_get(s, pid, comm);
	int i;

	if (!vm || end < start)
		return;
	if (!vm->comm[0] && comm)
		strncpy(vm->comm, comm, FL_COMM_LEN - 1);
	i = vcpu >= 0 ? slot_of(vm, tid) : -1;
	if (i < 0) {
		lat_add(&vm->nonvcpu, end - start);
		return;
	}
	lat_add(&vm->vcpus[i].lat, end - start);
	if (vm->niv == vm->cap) {
		size_t cap = vm->cap ? vm->cap * 2 : 1024;
		struct fl_interval *iv;

		if (cap > IV_CAP_MAX || !(iv = realloc(vm->iv, cap * sizeof(*iv)))) {
			vm->iv_dropped++;
			return;
		}
		vm->iv = iv;
		vm->cap = cap;
	}
	vm->iv[vm->niv++] = (struct fl_interval){ start, end, (uint32_t)i };
}

struct edge {
	uint64_t t;
	int delta;	/* +1 a vCPU starts waiting, -1 it runs again */
	uint32_t slot;
};

static int edge_cmp(const void *a, const void *b)
{
	const struct edge *x = a, *y = b;

	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	return x->delta - y->delta;	/* ends before starts at the same instant */
}

uint64_t fl_vms_all_vcpu_blocked(const struct fl_vm_stats *vm)
{
	uint32_t active[FL_MAX_VCPUS] = { 0 };
	uint64_t total = 0, since = 0;
	struct edge *ev;
	int blocked = 0;	/* distinct vCPUs with an open wait */

	if (!vm->nvcpus || !vm->niv)
		return 0;
	ev = malloc(2 * vm->niv * sizeof(*ev));
	if (!ev)
		return 0;
	for (size_t i = 0; i < vm->niv; i++) {
		ev[2 * i] = (struct edge){ vm->iv[i].start, +1, vm->iv[i].slot };
		ev[2 * i + 1] = (struct edge){ vm->iv[i].end, -1, vm->iv[i].slot };
	}
	qsort(ev, 2 * vm->niv, sizeof(*ev), edge_cmp);
	for (size_t i = 0; i < 2 * vm->niv; i++) {
		uint32_t *a = &active[ev[i].slot];

		if (ev[i].delta > 0) {
			if ((*a)++ == 0 && ++blocked == vm->nvcpus)
				since = ev[i].t;
		} else if (*a && --(*a) == 0) {
			if (blocked-- == vm->nvcpus)
				total += ev[i].t - since;
		}
	}
	free(ev);
	return total;
}

void fl_vms_free(struct fl_vmstats *s)
{
	for (int i = 0; i < s->nvms; i++) {
		free(s->vms[i]->iv);
		free(s->vms[i]);
	}
	s->nvms = 0;
}
