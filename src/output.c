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

void fl_json_str(FILE *out, const char *s, size_t maxlen)
{
	fputc('"', out);
	for (size_t i = 0; i < maxlen && s[i]; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
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

/*
 * Fault lines are most of what trace prints (one per userfault, thousands
 * a second): built by hand into a line buffer, without fprintf's format
 * parsing, and handed to stdio with one fwrite.
 */
struct line {
	char buf[FL_OUT_MAX_LINE];
	size_t n;
};

static void l_mem(struct line *l, const char *s, size_t len)
{
	if (len > sizeof(l->buf) - l->n)
		len = sizeof(l->buf) - l->n;
	memcpy(l->buf + l->n, s, len);
	l->n += len;
}

#define l_lit(l, s) l_mem(l, s, sizeof(s) - 1)

static void l_str(struct line *l, const char *s)
{
	l_mem(l, s, strlen(s));
}

static void l_chr(struct line *l, char c)
{
	if (l->n < sizeof(l->buf))
		l->buf[l->n++] = c;
}

static void l_pad(struct line *l, size_t from, size_t width)
{
	while (l->n - from < width)
		l_chr(l, ' ');
}

/* Decimal digits of v, at least mindigits of them (zero-padded); two at a time. */
static void l_u64w(struct line *l, uint64_t v, int mindigits)
{
	static const char pairs[] = "00010203040506070809101112131415161718192021222324"
				    "25262728293031323334353637383940414243444546474849"
				    "50515253545556575859606162636465666768697071727374"
				    "75767778798081828384858687888990919293949596979899";
	char tmp[24];
	int i = sizeof(tmp);

	while (v >= 100) {
		unsigned d = (unsigned)(v % 100) * 2;

		v /= 100;
		tmp[--i] = pairs[d + 1];
		tmp[--i] = pairs[d];
	}
	if (v >= 10) {
		tmp[--i] = pairs[v * 2 + 1];
		tmp[--i] = pairs[v * 2];
	} else {
		tmp[--i] = (char)('0' + v);
	}
	while ((int)sizeof(tmp) - i < mindigits)
		tmp[--i] = '0';
	l_mem(l, tmp + i, sizeof(tmp) - i);
}

static void l_u64(struct line *l, uint64_t v)
{
	l_u64w(l, v, 1);
}

static void l_i64(struct line *l, int64_t v)
{
	if (v < 0) {
		l_chr(l, '-');
		l_u64(l, -(uint64_t)v);
	} else {
		l_u64(l, (uint64_t)v);
	}
}

static void l_hex(struct line *l, uint64_t v)
{
	char tmp[16];
	int i = sizeof(tmp);

	do {
		tmp[--i] = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	l_mem(l, tmp + i, sizeof(tmp) - i);
}

/* v / 10^scale with `decimals` decimals, rounded half up (what %.Nf prints bar ties). */
static void l_fixed(struct line *l, uint64_t v, uint64_t scale, int decimals)
{
	uint64_t unit = scale;

	for (int i = 0; i < decimals; i++)
		unit /= 10;
	v = (v + unit / 2) / unit;
	scale /= unit;
	l_u64(l, v / scale);
	if (decimals) {
		l_chr(l, '.');
		l_u64w(l, v % scale, decimals);
	}
}

static void l_json_str(struct line *l, const char *s, size_t maxlen)
{
	l_chr(l, '"');
	for (size_t i = 0; i < maxlen && s[i]; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\') {
			l_chr(l, '\\');
			l_chr(l, (char)ch);
		} else if (ch < 0x20 || ch >= 0x7f) {
			l_lit(l, "\\u00");
			l_chr(l, "0123456789abcdef"[ch >> 4]);
			l_chr(l, "0123456789abcdef"[ch & 15]);
		} else {
			l_chr(l, (char)ch);
		}
	}
	l_chr(l, '"');
}

static void l_json_dur(struct line *l, const char *key, uint64_t from, uint64_t to)
{
	l_chr(l, ',');
	l_chr(l, '"');
	l_str(l, key);
	l_lit(l, "\":");
	if (from && to && to >= from)
		l_u64(l, to - from);
	else
		l_lit(l, "null");
}

/* Column of microseconds between two times, "-" when either was not seen. */
static void l_col_us(struct line *l, uint64_t from, uint64_t to)
{
	size_t at;

	l_chr(l, ' ');
	at = l->n;
	if (from && to && to >= from) {
		struct line t = { .n = 0 };

		l_fixed(&t, to - from, 1000, 1);
		l_pad(l, at, 9 - (t.n < 9 ? t.n : 9));
		l_mem(l, t.buf, t.n);
	} else {
		l_pad(l, at, 8);
		l_chr(l, '-');
	}
}

static void l_done(FILE *out, struct line *l)
{
	fwrite(l->buf, 1, l->n, out);
	fl_out_line_done(out);
}

void fl_out_fault_header(FILE *out)
{
	fprintf(out, "%-16s %-7s %-7s %-15s %-14s %-7s %-10s %10s %9s %9s %9s\n", "TIME(s)", "PID",
		"TID", "COMM", "ADDR", "MODE", "RESOLVED", "LAT(us)", "NOTIFY", "RESOLVE", "WAKE");
}

void fl_out_fault(FILE *out, const struct fl_episode *ep, bool json)
{
	uint64_t notify_from = ep->start_ts;
	uint64_t resolve_from = ep->notify_ts ? ep->notify_ts : ep->start_ts;
	struct line l = { .n = 0 };
	size_t at;

	if (!json) {
		/* "%-16.6f %-7u %-7u %-15.15s 0x%-12x %-7s %-10s %10.1f" and three " %9.1f" */
		at = l.n;
		l_fixed(&l, ep->start_ts, 1000000000, 6);
		l_pad(&l, at, 16);
		l_chr(&l, ' ');
		at = l.n;
		l_u64(&l, ep->pid);
		l_pad(&l, at, 7);
		l_chr(&l, ' ');
		at = l.n;
		l_u64(&l, ep->tid);
		l_pad(&l, at, 7);
		l_chr(&l, ' ');
		at = l.n;
		l_mem(&l, ep->comm, strnlen(ep->comm, 15));
		l_pad(&l, at, 15);
		l_lit(&l, " 0x");
		at = l.n;
		l_hex(&l, ep->addr);
		l_pad(&l, at, 12);
		l_chr(&l, ' ');
		at = l.n;
		l_str(&l, fl_mode_name(ep->mode));
		l_pad(&l, at, 7);
		l_chr(&l, ' ');
		at = l.n;
		l_str(&l, ep->unfinished ? "(waiting)" : fl_resolution_name(ep->resolved_by));
		l_pad(&l, at, 10);
		l_chr(&l, ' ');
		{
			struct line t = { .n = 0 };

			l_fixed(&t, ep->end_ts - ep->start_ts, 1000, 1);
			at = l.n;
			l_pad(&l, at, 10 - (t.n < 10 ? t.n : 10));
			l_mem(&l, t.buf, t.n);
		}
		l_col_us(&l, notify_from, ep->notify_ts);
		l_col_us(&l, resolve_from, ep->resolve_ts);
		l_col_us(&l, ep->resolve_ts, ep->wake_ts);
		l_chr(&l, '\n');
		l_done(out, &l);
		return;
	}
	l_lit(&l, "{\"event\":\"fault\",\"pid\":");
	l_u64(&l, ep->pid);
	l_lit(&l, ",\"tid\":");
	l_u64(&l, ep->tid);
	l_lit(&l, ",\"comm\":");
	l_json_str(&l, ep->comm, FL_COMM_LEN);
	l_lit(&l, ",\"addr\":\"0x");
	l_hex(&l, ep->addr);
	l_lit(&l, "\",\"uffd\":");
	if (ep->uffd >= 0)
		l_i64(&l, ep->uffd);
	else
		l_lit(&l, "null");
	l_lit(&l, ",\"mode\":\"");
	l_str(&l, fl_mode_name(ep->mode));
	l_lit(&l, "\",\"start_ns\":");
	l_u64(&l, ep->start_ts);
	l_lit(&l, ",\"latency_ns\":");
	l_u64(&l, ep->end_ts - ep->start_ts);
	l_json_dur(&l, "notify_ns", notify_from, ep->notify_ts);
	l_json_dur(&l, "resolve_ns", resolve_from, ep->resolve_ts);
	l_json_dur(&l, "wake_ns", ep->resolve_ts, ep->wake_ts);
	l_json_dur(&l, "run_ns", ep->wake_ts, ep->run_ts);
	l_lit(&l, ",\"resolved_by\":\"");
	l_str(&l, ep->unfinished && ep->resolved_by == FL_RES_UNRESOLVED
			  ? "unresolved" : fl_resolution_name(ep->resolved_by));
	l_lit(&l, "\",\"vcpu\":");
	if (ep->vcpu >= 0)
		l_i64(&l, ep->vcpu);
	else
		l_lit(&l, "null");
	l_lit(&l, ",\"blocked\":");
	l_str(&l, ep->blocked ? "true" : "false");
	l_lit(&l, ",\"user_fault\":");
	l_str(&l, ep->user_pf ? "true" : "false");
	l_lit(&l, ",\"retries\":");
	l_u64(&l, ep->retries);
	l_lit(&l, ",\"handler_pid\":");
	if (ep->handler_pid)
		l_u64(&l, ep->handler_pid);
	else
		l_lit(&l, "null");
	if (ep->place_errno) {
		l_lit(&l, ",\"placement_errno\":\"");
		l_str(&l, fl_errno_name(ep->place_errno));
		l_chr(&l, '"');
	}
	l_lit(&l, ",\"waiting\":");
	l_str(&l, ep->unfinished ? "true" : "false");
	l_lit(&l, "}\n");
	l_done(out, &l);
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
	fprintf(out, ",\"waited_ns\":%" PRIu64 "}\n", r->waited_ns);
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
