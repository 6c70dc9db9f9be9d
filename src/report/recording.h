/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Reading a recording: the lines `faultline trace --json` printed, one
 * typed record at a time. A line that is not a JSON object at all (the
 * traced command shares the tracer's stdout) is counted as foreign; a line
 * that starts like one of ours but does not parse, or a known record with a
 * missing or mistyped field, is malformed: skipped and counted, the first
 * few kept with their line numbers and why, or in strict mode an error.
 */
#ifndef FAULTLINE_RECORDING_H
#define FAULTLINE_RECORDING_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include "correlator.h"
#include "rjson.h"
#include "vmstats.h"

#define RP_NONE UINT64_MAX	/* a duration the recording has as null (not seen) */
#define RP_MAX_LINE (1u << 20)	/* longer lines are malformed (no record is near it) */

/* The tracer's resolutions (enum fl_resolution), then one for names this build does not know. */
#define RP_RES_OTHER (FL_RES_WRITEPROTECT + 1)
#define RP_NRES (RP_RES_OTHER + 1)
/* missing, minor, wp (enum fl_fault_mode), then any other name */
#define RP_MODE_OTHER 3
#define RP_NMODES 4

enum rp_kind {
	RP_FAULT, RP_RACE, RP_POISON, RP_LOST, RP_SUMMARY, RP_VMSTATS, RP_LATE, RP_SIGNAL,
	RP_MEMFAULT, RP_HIST, RP_OTHER, RP_NKINDS,
};

struct rp_fault {
	uint64_t addr, start, latency;
	uint64_t notify, resolve, wake, run;	/* RP_NONE when not seen */
	uint32_t pid, tid, page_size, retries;	/* page_size 0: not known */
	int32_t vcpu;				/* -1: not a vCPU */
	uint8_t res, mode;
	bool waiting;				/* still blocked when the trace stopped */
	char comm[FL_COMM_LEN];
};

struct rp_race {
	uint64_t ts, start, len, waiter_addr, waited_ns;
	uint32_t pid, waiter_tid, waiters, actor_tid;
	char kind[32], what[32], err[16], actor_comm[FL_COMM_LEN];
};

struct rp_poison {
	uint64_t ts, addr, len;		/* addr 0: the record has none (memory_failure, mce: a pfn) */
	uint32_t pid, tid;
	int32_t vcpu;
	char kind[24], detail[32], comm[FL_COMM_LEN];	/* detail: errno, si_code, gpa or pfn */
};

struct rp_lost {
	uint64_t ts, count;
	char where[32];
};

struct rp_late {
	uint64_t ts, since;
	uint32_t pid;
	char comm[FL_COMM_LEN], reason[24];
};

struct rp_signal {
	uint64_t ts, addr;
	uint32_t pid, tid;
	int32_t signo, code, vcpu;
	char comm[FL_COMM_LEN];
};

struct rp_memfault {
	uint64_t ts, gpa, size;
	uint32_t pid, tid;
	int32_t vcpu;
};

/* The trace's closing summary: what it counted itself. */
struct rp_summary {
	uint64_t duration_ns, faults, races, lost;
	uint64_t by_res[RP_NRES];
};

#define RP_MAX_EXITS 48

struct rp_vm_vcpu {
	int32_t vcpu;
	uint32_t tid;
	struct fl_lat_stats lat;
	uint32_t nexits;
	struct { char name[32]; uint64_t n; } exits[RP_MAX_EXITS];
};

/* One vm_stats record: trace's per-VM summary (vmreport.c). */
struct rp_vm {
	uint32_t pid;
	char comm[FL_COMM_LEN];
	uint32_t nvcpus;
	struct rp_vm_vcpu *vcpus;
	struct fl_lat_stats nonvcpu;
	uint64_t all_vcpu_blocked_ns, total_blocked_ns;
	bool lower_bound;
	bool computed;		/* from the faults (no vm_stats record for this pid) */
};

struct rp_record {
	enum rp_kind kind;
	union {
		struct rp_fault fault;
		struct rp_race race;
		struct rp_poison poison;
		struct rp_lost lost;
		struct rp_summary summary;
		struct rp_late late;
		struct rp_signal signal;
		struct rp_memfault memfault;
	};
	struct rp_vm vm;	/* RP_VMSTATS; vcpus owned by the reader until the next record */
};

#define RP_SKIP_EXAMPLES 10

struct rp_skip {
	uint64_t line;
	char why[160];
};

struct rp_reader {
	FILE *in;
	bool strict;		/* a malformed line is an error, not a skip */
	char *buf;
	size_t cap, len, pos;
	bool eof;
	struct rj_doc doc;
	/* what was read */
	uint64_t lines, bytes, foreign, malformed, by_kind[RP_NKINDS];
	struct rp_skip skips[RP_SKIP_EXAMPLES];	/* the first malformed lines */
	char err[256];		/* strict mode or I/O: the error, with its line number */
};

int rp_reader_init(struct rp_reader *r, FILE *in, bool strict);
/*
 * The next record: 1, or 0 at the end of the input, or -errno (r->err says
 * which line and why: a read error, or a malformed line in strict mode).
 */
int rp_reader_next(struct rp_reader *r, struct rp_record *rec);
void rp_reader_free(struct rp_reader *r);

/* One line on its own (tests, the fuzzer): 1 a record, 0 foreign or blank, -EINVAL with why. */
int rp_parse_line(struct rj_doc *doc, char *line, size_t len, struct rp_record *rec,
		  char *why, size_t whylen);
void rp_record_free(struct rp_record *rec);

const char *rp_res_name(unsigned res);
const char *rp_mode_name(unsigned mode);
const char *rp_kind_name(enum rp_kind k);

#endif
