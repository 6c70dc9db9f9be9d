// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <inttypes.h>
#include <string.h>
#include "output.h"
#include "vmreport.h"

#define MAX_EXIT_KINDS 48

struct exit_count {
	uint32_t kind, reason;
	uint64_t n;
};

/* The KVM exits of one thread, gathered from the kernel's counting map. */
struct thread_exits {
	uint32_t tid;
	int n;
	struct exit_count e[MAX_EXIT_KINDS];
};

static void gather(void *arg, uint32_t tid, uint32_t kind, uint32_t reason, uint64_t count)
{
	struct thread_exits *t = arg;

	if (tid != t->tid || t->n == MAX_EXIT_KINDS)
		return;
	t->e[t->n++] = (struct exit_count){ kind, reason, count };
}

static void exits_of(struct fl_session *s, uint32_t tid, struct thread_exits *t)
{
	memset(t, 0, sizeof(*t));
	t->tid = tid;
	fl_session_exits(s, gather, t);
}

static void json_lat(FILE *out, const struct fl_lat_stats *l)
{
	fprintf(out, "\"faults\":%" PRIu64 ",\"blocked_ns\":%" PRIu64 ",\"avg_latency_ns\":%" PRIu64
		",\"latency_dist_us\":[", l->faults, l->blocked_ns,
		l->faults ? l->blocked_ns / l->faults : 0);
	for (int b = 0; b < FL_LAT_BUCKETS; b++)
		fprintf(out, "%s%" PRIu64, b ? "," : "", l->buckets[b]);
	fputc(']', out);
}

void fl_vmreport_json(FILE *out, struct fl_session *s, uint64_t ts)
{
	for (int i = 0; i < s->vms.nvms; i++) {
		struct fl_vm_stats *vm = s->vms.vms[i];
		uint64_t total = vm->nonvcpu.blocked_ns;

		fprintf(out, "{\"event\":\"vm_stats\",\"ts_ns\":%" PRIu64 ",\"pid\":%u,\"comm\":", ts,
			vm->pid);
		fl_json_str(out, vm->comm, FL_COMM_LEN);
		fputs(",\"vcpus\":[", out);
		for (int v = 0; v < vm->nvcpus; v++) {
			struct thread_exits te;
			char buf[32];

			exits_of(s, vm->vcpus[v].tid, &te);
			fprintf(out, "%s{\"vcpu\":%d,\"tid\":%u,", v ? "," : "", vm->vcpus[v].vcpu,
				vm->vcpus[v].tid);
			json_lat(out, &vm->vcpus[v].lat);
			fputs(",\"exits\":{", out);
			for (int k = 0; k < te.n; k++) {
				fputs(k ? "," : "", out);
				fl_json_str(out, fl_session_exit_name(s, te.e[k].kind, te.e[k].reason,
								      buf, sizeof(buf)), 64);
				fprintf(out, ":%" PRIu64, te.e[k].n);
			}
			fputs("}}", out);
			total += vm->vcpus[v].lat.blocked_ns;
		}
		fputs("],\"non_vcpu\":{", out);
		json_lat(out, &vm->nonvcpu);
		fprintf(out, "},\"all_vcpu_blocked_ns\":%" PRIu64 ",\"all_vcpu_lower_bound\":%s,"
			"\"total_blocked_ns\":%" PRIu64 "}\n", fl_vms_all_vcpu_blocked(vm),
			vm->iv_dropped ? "true" : "false", total);
		fl_out_line_done(out);
	}
}

static void print_exits(FILE *out, struct fl_session *s, uint32_t tid)
{
	struct thread_exits te;
	char buf[32];

	exits_of(s, tid, &te);
	for (int k = 0; k < te.n; k++)
		fprintf(out, " %s=%" PRIu64,
			fl_session_exit_name(s, te.e[k].kind, te.e[k].reason, buf, sizeof(buf)),
			te.e[k].n);
}

void fl_vmreport_print(FILE *out, struct fl_session *s)
{
	for (int i = 0; i < s->vms.nvms; i++) {
		struct fl_vm_stats *vm = s->vms.vms[i];
		const struct fl_lat_stats *nv = &vm->nonvcpu;

		fprintf(out, "\nVM pid %u (%s): %d vCPU(s), all-vCPU blocktime %.3f ms%s\n", vm->pid,
			vm->comm[0] ? vm->comm : "?", vm->nvcpus, fl_vms_all_vcpu_blocked(vm) / 1e6,
			vm->iv_dropped ? " (lower bound)" : "");
		fprintf(out, "  %-6s %-8s %8s %14s %12s  %s\n", "VCPU", "TID", "FAULTS",
			"BLOCKED(ms)", "AVG(us)", "EXITS");
		for (int v = 0; v < vm->nvcpus; v++) {
			const struct fl_lat_stats *l = &vm->vcpus[v].lat;

			fprintf(out, "  %-6d %-8u %8" PRIu64 " %14.3f %12.1f ", vm->vcpus[v].vcpu,
				vm->vcpus[v].tid, l->faults, l->blocked_ns / 1e6,
				l->faults ? l->blocked_ns / 1e3 / l->faults : 0.0);
			print_exits(out, s, vm->vcpus[v].tid);
			fputc('\n', out);
		}
		fprintf(out, "  %-6s %-8s %8" PRIu64 " %14.3f %12.1f\n", "other", "-", nv->faults,
			nv->blocked_ns / 1e6, nv->faults ? nv->blocked_ns / 1e3 / nv->faults : 0.0);
		fl_out_line_done(out);
	}
}
