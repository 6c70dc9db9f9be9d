/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Per-VM postcopy statistics with QEMU 10.1 parity, for any VMM: per-vCPU
 * blocktime, all-vCPU blocktime (every vCPU blocked at once), average
 * latency per vCPU and for non-vCPU threads, and a 24-bucket log2 µs latency
 * distribution. Pure bookkeeping over finished episodes; no BPF, no /proc.
 */
#ifndef FAULTLINE_VMSTATS_H
#define FAULTLINE_VMSTATS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "faultline_events.h"

#define FL_LAT_BUCKETS 24	/* bucket i: [2^i, 2^(i+1)) µs; 0 takes < 1 µs, 23 takes the rest */
#define FL_MAX_VCPUS 256
#define FL_MAX_VMS 64

struct fl_lat_stats {
	uint64_t faults;
	uint64_t blocked_ns;	/* sum of fault latencies */
	uint64_t buckets[FL_LAT_BUCKETS];
};

struct fl_vcpu_stats {
	uint32_t tid;
	int32_t vcpu;
	struct fl_lat_stats lat;
};

struct fl_interval {
	uint64_t start, end;
	uint32_t slot;	/* index into vcpus[] */
};

struct fl_vm_stats {
	uint32_t pid;
	char comm[FL_COMM_LEN];
	int nvcpus;
	struct fl_vcpu_stats vcpus[FL_MAX_VCPUS];
	struct fl_lat_stats nonvcpu;
	/* vCPU wait intervals, for the all-vCPU blocktime */
	struct fl_interval *iv;
	size_t niv, cap;
	uint64_t iv_dropped;	/* beyond the interval cap: all-vCPU time is a lower bound */
};

struct fl_vmstats {
	struct fl_vm_stats *vms[FL_MAX_VMS];
	int nvms;
};

unsigned fl_lat_bucket(uint64_t latency_ns);

/* A thread is vCPU vcpu of process pid (KVM_RUN, a KVM tracepoint, or its name). */
void fl_vms_set_vcpu(struct fl_vmstats *s, uint32_t pid, const char *comm, uint32_t tid,
		     int32_t vcpu);
/* The vCPU index of tid, or -1. Learns QEMU's "CPU N/KVM" / "CPU N/TCG" names on the way. */
int32_t fl_vms_vcpu_of(struct fl_vmstats *s, uint32_t pid, uint32_t tid, const char *thread_comm);
/* Account one finished fault of pid/tid lasting [start, end). */
void fl_vms_add(struct fl_vmstats *s, uint32_t pid, const char *comm, uint32_t tid,
		const char *thread_comm, uint64_t start, uint64_t end);
struct fl_vm_stats *fl_vms_find(struct fl_vmstats *s, uint32_t pid);
/* Time during which every known vCPU of the VM was blocked at once. */
uint64_t fl_vms_all_vcpu_blocked(const struct fl_vm_stats *vm);
void fl_vms_free(struct fl_vmstats *s);

#endif
