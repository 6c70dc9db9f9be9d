// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <inttypes.h>
#include <stdio_ext.h>
#include <string.h>
#include "output.h"

/*
 * Output is block-buffered, but only whole lines may leave the buffer and
 * never more than PIPE_BUF at once: a traced command (`trace -- CMD`) often
 * shares the pipe, and its lines must not land inside ours.
 */
#define FL_OUT_FLUSH_AT (4096 - FL_OUT_MAX_LINE)

void fl_out_line_done(FILE *out)
{
	if (__fpending(out) > FL_OUT_FLUSH_AT)
		fflush(out);
}

const char *fl_errno_name(int err)
{
	switch (err) {
	case 0: return "0";
	case ENOENT: return "ENOENT";
	case EEXIST: return "EEXIST";
	case EAGAIN: return "EAGAIN";
	case ESRCH: return "ESRCH";
	case EINVAL: return "EINVAL";
	case EFAULT: return "EFAULT";
	case ENOMEM: return "ENOMEM";
	case EBUSY: return "EBUSY";
	case EPERM: return "EPERM";
	case ENOSPC: return "ENOSPC";
	}
	return "E?";
}

/* A count that 0 means unknown for: null then. */
static void json_u32_or_null(FILE *out, const char *key, uint32_t v)
{
	if (v)
		fprintf(out, ",\"%s\":%u", key, v);
	else
		fprintf(out, ",\"%s\":null", key);
}

/* Duration field in JSON: null when either end was not seen. */
static void json_dur(FILE *out, const char *key, uint64_t from, uint64_t to)
{
	if (from && to && to >= from)
		fprintf(out, ",\"%s\":%" PRIu64, key, to - from);
	else
		fprintf(out, ",\"%s\":null", key);
}

void fl_out_fault_header(FILE *out)
{
	fprintf(out, "%-16s %-7s %-7s %-15s %-14s %-7s %-10s %10s %9s %9s %9s\n", "TIME(s)", "PID",
		"TID", "COMM", "ADDR", "MODE", "RESOLVED", "LAT(us)", "NOTIFY", "RESOLVE", "WAKE");
}

static double us(uint64_t from, uint64_t to)
{
	return from && to && to >= from ? (double)(to - from) / 1000.0 : -1;
}

static void col_us(FILE *out, double v)
{
	if (v < 0)
		fprintf(out, " %9s", "-");
	else
		fprintf(out, " %9.1f", v);
}

void fl_out_fault(FILE *out, const struct fl_episode *ep, bool json)
{
	uint64_t notify_from = ep->start_ts;
	uint64_t resolve_from = ep->notify_ts ? ep->notify_ts : ep->start_ts;

	if (!json) {
		fprintf(out, "%-16.6f %-7u %-7u %-15.15s 0x%-12" PRIx64 " %-7s %-10s %10.1f",
			ep->start_ts / 1e9, ep->pid, ep->tid, ep->comm, ep->addr,
			fl_fault_mode_name(ep->mode),
			ep->unfinished ? "(waiting)" : fl_resolution_name(ep->resolved_by),
			(ep->end_ts - ep->start_ts) / 1000.0);
		col_us(out, us(notify_from, ep->notify_ts));
		col_us(out, us(resolve_from, ep->resolve_ts));
		col_us(out, us(ep->resolve_ts, ep->wake_ts));
		fputc('\n', out);
		fl_out_line_done(out);
		return;
	}
	fprintf(out, "{\"event\":\"fault\",\"pid\":%u,\"tid\":%u,\"comm\":", ep->pid, ep->tid);
	fl_json_str(out, ep->comm, FL_COMM_LEN);
	fprintf(out, ",\"addr\":\"0x%" PRIx64 "\",\"uffd\":", ep->addr);
	if (ep->uffd >= 0)
		fprintf(out, "%d", ep->uffd);
	else
		fputs("null", out);
	fprintf(out, ",\"mode\":\"%s\",\"start_ns\":%" PRIu64 ",\"latency_ns\":%" PRIu64,
		fl_fault_mode_name(ep->mode), ep->start_ts, ep->end_ts - ep->start_ts);
	json_dur(out, "notify_ns", notify_from, ep->notify_ts);
	json_dur(out, "resolve_ns", resolve_from, ep->resolve_ts);
	json_dur(out, "wake_ns", ep->resolve_ts, ep->wake_ts);
	json_dur(out, "run_ns", ep->wake_ts, ep->run_ts);
	fprintf(out, ",\"resolved_by\":\"%s\",\"vcpu\":",
		ep->unfinished && ep->resolved_by == FL_RES_UNRESOLVED ? "unresolved"
								      : fl_resolution_name(ep->resolved_by));
	if (ep->vcpu >= 0)
		fprintf(out, "%d", ep->vcpu);
	else
		fputs("null", out);
	fprintf(out, ",\"blocked\":%s,\"user_fault\":%s,\"retries\":%u,\"handler_pid\":",
		ep->blocked ? "true" : "false", ep->user_pf ? "true" : "false", ep->retries);
	if (ep->handler_pid)
		fprintf(out, "%u", ep->handler_pid);
	else
		fputs("null", out);
	if (ep->place_errno)
		fprintf(out, ",\"placement_errno\":\"%s\"", fl_errno_name(ep->place_errno));
	json_u32_or_null(out, "page_size", ep->page_size);
	fprintf(out, ",\"waiting\":%s}\n", ep->unfinished ? "true" : "false");
	fl_out_line_done(out);
}

void fl_out_race(FILE *out, const struct fl_race *r, bool json)
{
	if (!json && r->kind == FL_RACE_WAITER_STRANDED) {
		fprintf(out, "%-16.6f RACE %s: tid %u of pid %u still blocked at 0x%" PRIx64
			" after its range went away, and no UFFDIO_WAKE came", r->ts / 1e9,
			fl_race_name(r->kind), r->waiter_tid, r->pid, r->waiter_addr);
	} else if (!json) {
		fprintf(out, "%-16.6f RACE %s: %s on 0x%" PRIx64 "+0x%" PRIx64 " by %s[%u], "
			"%u waiter(s), e.g. tid %u at 0x%" PRIx64, r->ts / 1e9,
			fl_race_name(r->kind), r->what, r->start, r->len, r->actor_comm,
			r->actor_tid, r->waiters, r->waiter_tid, r->waiter_addr);
	}
	if (!json) {
		if (r->err)
			fprintf(out, ", %s", fl_errno_name(r->err));
		if (r->waited_ns)
			fprintf(out, ", blocked %.1f ms", r->waited_ns / 1e6);
		fputc('\n', out);
		fl_out_line_done(out);
		return;
	}
	fprintf(out, "{\"event\":\"race\",\"kind\":\"%s\",\"ts_ns\":%" PRIu64 ",\"pid\":%u,"
		"\"what\":", fl_race_name(r->kind), r->ts, r->pid);
	fl_json_str(out, r->what, 64);
	fprintf(out, ",\"start\":\"0x%" PRIx64 "\",\"len\":%" PRIu64 ",\"actor_tid\":%u,"
		"\"actor_comm\":", r->start, r->len, r->actor_tid);
	fl_json_str(out, r->actor_comm, FL_COMM_LEN);
	fprintf(out, ",\"waiters\":%u,\"waiter_tid\":%u,\"waiter_addr\":\"0x%" PRIx64 "\","
		"\"errno\":", r->waiters, r->waiter_tid, r->waiter_addr);
	if (r->err)
		fprintf(out, "\"%s\"", fl_errno_name(r->err));
	else
		fputs("null", out);
	fprintf(out, ",\"waited_ns\":%" PRIu64, r->waited_ns);
	json_u32_or_null(out, "page_size", r->page_size);
	fputs("}\n", out);
	fl_out_line_done(out);
}

void fl_out_lost(FILE *out, const char *where, uint64_t n, uint64_t ts, bool json)
{
	if (json)
		fprintf(out, "{\"event\":\"lost\",\"ts_ns\":%" PRIu64 ",\"where\":\"%s\","
			"\"count\":%" PRIu64 "}\n", ts, where, n);
	else
		fprintf(out, "%-16.6f LOST %" PRIu64 " record(s): %s\n", ts / 1e9, n, where);
	fl_out_line_done(out);
}

const char *fl_late_reason_name(enum fl_late_reason r)
{
	return r == FL_LATE_PREDATES ? "predates_faultline" : "found_by_scan";
}

void fl_out_late(FILE *out, const struct fl_late_note *n, bool json)
{
	double ago = n->since_ns && n->ts > n->since_ns ? (n->ts - n->since_ns) / 1e9 : -1;

	if (json) {
		fprintf(out, "{\"event\":\"tracked_late\",\"ts_ns\":%" PRIu64 ",\"pid\":%u,"
			"\"comm\":", n->ts, n->pid);
		fl_json_str(out, n->comm, FL_COMM_LEN);
		fprintf(out, ",\"since_ns\":%" PRIu64 ",\"reason\":\"%s\","
			"\"earlier_faults_unseen\":true}\n", n->since_ns, fl_late_reason_name(n->reason));
	} else if (ago >= 0) {
		fprintf(out, "%-16.6f LATE %u (%s): %s; its faults in the %.3f s before now were not "
			"seen\n", n->ts / 1e9, n->pid, n->comm, n->reason == FL_LATE_PREDATES ?
			"it started before faultline" : "found by the /proc scan", ago);
	} else {
		fprintf(out, "%-16.6f LATE %u (%s): %s; its earlier faults were not seen\n",
			n->ts / 1e9, n->pid, n->comm, n->reason == FL_LATE_PREDATES ?
			"it started before faultline" : "found by the /proc scan");
	}
	fl_out_line_done(out);
}

static const char *const poison_kind[] = {
	[FL_POISON_INSTALLED] = "installed", [FL_POISON_SIGBUS] = "sigbus",
	[FL_POISON_KVM_MMIO] = "kvm_mmio", [FL_POISON_MEMORY_FAILURE] = "memory_failure",
	[FL_POISON_MCE] = "mce",
};

static const char *sigbus_code(int32_t code)
{
	switch (code) {
	case 1: return "BUS_ADRALN";
	case 2: return "BUS_ADRERR";
	case 3: return "BUS_OBJERR";
	case 4: return "BUS_MCEERR_AR";
	case 5: return "BUS_MCEERR_AO";
	}
	return "?";
}

void fl_out_poison(FILE *out, const struct fl_poison_note *n, bool json)
{
	const char *kind = poison_kind[n->kind];

	if (!json) {
		fprintf(out, "%-16.6f POISON %s: %s[%u/%u]", n->ts / 1e9, kind, n->comm, n->pid,
			n->tid);
		if (n->vcpu >= 0)
			fprintf(out, " vcpu %d", n->vcpu);
		switch (n->kind) {
		case FL_POISON_INSTALLED:
			fprintf(out, " UFFDIO_POISON 0x%" PRIx64 "+0x%" PRIx64 " %s", n->addr, n->len,
				n->ret ? fl_errno_name((int)-n->ret) : "ok");
			break;
		case FL_POISON_SIGBUS:
			fprintf(out, " addr 0x%" PRIx64 " %s", n->addr, sigbus_code(n->code));
			break;
		case FL_POISON_KVM_MMIO:
			fprintf(out, " gpa 0x%" PRIx64 " hva 0x%" PRIx64, n->gpa, n->addr);
			break;
		default:
			fprintf(out, " pfn 0x%" PRIx64 " %s %s", n->pfn, n->type ? n->type : "",
				n->result ? n->result : "");
		}
		fputc('\n', out);
		fl_out_line_done(out);
		return;
	}
	fprintf(out, "{\"event\":\"poison\",\"kind\":\"%s\",\"ts_ns\":%" PRIu64 ",\"pid\":%u,"
		"\"tid\":%u,\"comm\":", kind, n->ts, n->pid, n->tid);
	fl_json_str(out, n->comm, FL_COMM_LEN);
	fputs(",\"vcpu\":", out);
	if (n->vcpu >= 0)
		fprintf(out, "%d", n->vcpu);
	else
		fputs("null", out);
	switch (n->kind) {
	case FL_POISON_INSTALLED:
		fprintf(out, ",\"addr\":\"0x%" PRIx64 "\",\"len\":%" PRIu64 ",\"errno\":", n->addr,
			n->len);
		if (n->ret)
			fprintf(out, "\"%s\"", fl_errno_name((int)-n->ret));
		else
			fputs("null", out);
		break;
	case FL_POISON_SIGBUS:
		fprintf(out, ",\"addr\":\"0x%" PRIx64 "\",\"si_code\":\"%s\"", n->addr,
			sigbus_code(n->code));
		break;
	case FL_POISON_KVM_MMIO:
		fprintf(out, ",\"gpa\":\"0x%" PRIx64 "\",\"addr\":\"0x%" PRIx64 "\"", n->gpa, n->addr);
		break;
	case FL_POISON_MEMORY_FAILURE:
		fprintf(out, ",\"pfn\":\"0x%" PRIx64 "\",\"type\":", n->pfn);
		fl_json_str(out, n->type ? n->type : "?", 64);
		fputs(",\"result\":", out);
		fl_json_str(out, n->result ? n->result : "?", 64);
		break;
	case FL_POISON_MCE:
		fprintf(out, ",\"pfn\":\"0x%" PRIx64 "\",\"status\":\"0x%" PRIx64 "\"", n->pfn,
			n->status);
		break;
	}
	fputs("}\n", out);
	fl_out_line_done(out);
}

void fl_out_signal(FILE *out, const struct fl_event *e, int32_t vcpu, bool json)
{
	if (!json) {
		fprintf(out, "%-16.6f SIGNAL %d to %s[%u/%u] addr 0x%llx code %d\n", e->ts / 1e9,
			e->signal.signo, e->comm, e->pid, e->tid,
			(unsigned long long)e->signal.addr, e->signal.code);
		fl_out_line_done(out);
		return;
	}
	fprintf(out, "{\"event\":\"signal\",\"ts_ns\":%llu,\"signo\":%d,\"pid\":%u,\"tid\":%u,"
		"\"comm\":", (unsigned long long)e->ts, e->signal.signo, e->pid, e->tid);
	fl_json_str(out, e->comm, FL_COMM_LEN);
	fprintf(out, ",\"vcpu\":");
	if (vcpu >= 0)
		fprintf(out, "%d", vcpu);
	else
		fputs("null", out);
	fprintf(out, ",\"addr\":\"0x%llx\",\"si_code\":%d}\n", (unsigned long long)e->signal.addr,
		e->signal.code);
	fl_out_line_done(out);
}

void fl_out_kvm_memfault(FILE *out, const struct fl_event *e, bool json)
{
	static const struct { uint64_t bit; const char *name; } flags[] = {
		{ 1ULL << 3, "PRIVATE" },	/* KVM_MEMORY_EXIT_FLAG_PRIVATE */
	};
	uint64_t known = 0;
	bool first = true;

	for (unsigned i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		known |= flags[i].bit;
	if (!json) {
		fprintf(out, "%-16.6f KVM_EXIT_MEMORY_FAULT vcpu %d (%s[%u/%u]) gpa 0x%llx size 0x%llx "
			"flags 0x%llx\n", e->ts / 1e9, e->memfault.vcpu_id, e->comm, e->pid, e->tid,
			(unsigned long long)e->memfault.gpa, (unsigned long long)e->memfault.size,
			(unsigned long long)e->memfault.flags);
		fl_out_line_done(out);
		return;
	}
	fprintf(out, "{\"event\":\"kvm_memory_fault\",\"ts_ns\":%llu,\"pid\":%u,\"tid\":%u,"
		"\"vcpu\":%d,\"gpa\":\"0x%llx\",\"size\":%llu,\"flags\":[",
		(unsigned long long)e->ts, e->pid, e->tid, e->memfault.vcpu_id,
		(unsigned long long)e->memfault.gpa, (unsigned long long)e->memfault.size);
	for (unsigned i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
		if (e->memfault.flags & flags[i].bit) {
			fprintf(out, "%s\"%s\"", first ? "" : ",", flags[i].name);
			first = false;
		}
	/* bits this build has no name for, e.g. a KVM-userfault flag, as numbers */
	for (int b = 0; b < 64; b++)
		if ((e->memfault.flags & ~known) >> b & 1) {
			fprintf(out, "%s\"0x%llx\"", first ? "" : ",", 1ULL << b);
			first = false;
		}
	fputs("]}\n", out);
	fl_out_line_done(out);
}
