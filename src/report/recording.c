// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "errmsg.h"
#include "recording.h"

/* The input is read in chunks this big; a line must fit (RP_MAX_LINE + its newline). */
#define RP_BUF (2 * (size_t)RP_MAX_LINE)

static const char *const kind_names[RP_NKINDS] = {
	[RP_FAULT] = "fault", [RP_RACE] = "race", [RP_POISON] = "poison", [RP_LOST] = "lost",
	[RP_SUMMARY] = "summary", [RP_VMSTATS] = "vm_stats", [RP_LATE] = "tracked_late",
	[RP_SIGNAL] = "signal", [RP_MEMFAULT] = "kvm_memory_fault", [RP_HIST] = "hist",
	[RP_OTHER] = "other",
};

const char *rp_kind_name(enum rp_kind k)
{
	return (unsigned)k < RP_NKINDS ? kind_names[k] : "?";
}

const char *rp_res_name(unsigned res)
{
	return res < RP_RES_OTHER ? fl_resolution_name((enum fl_resolution)res) : "other";
}

const char *rp_mode_name(unsigned mode)
{
	return mode < RP_MODE_OTHER ? fl_fault_mode_name((enum fl_fault_mode)mode) : "other";
}

/* Field access for one record; the first problem is kept in why. */
struct fields {
	struct rj_doc *d;
	const char *event;
	char *why;
	size_t whylen;
	int rc;
};

__attribute__((format(printf, 2, 3)))
static void bad(struct fields *f, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (f->rc)
		return;
	f->rc = -EINVAL;
	n = snprintf(f->why, f->whylen, "%s record: ", f->event);
	if (n < 0 || (size_t)n >= f->whylen)
		return;
	va_start(ap, fmt);
	vsnprintf(f->why + n, f->whylen - (size_t)n, fmt, ap);
	va_end(ap);
}

/* A non-negative integer member; absent or null gives dflt unless required. */
static uint64_t u64_of(struct fields *f, uint32_t obj, const char *key, bool required,
		       uint64_t dflt)
{
	uint32_t i = rj_get(f->d, obj, key);
	uint64_t v;
	int rc;

	if (rj_null(f->d, i)) {
		if (required)
			bad(f, "%s %s", key, i == RJ_NONE ? "missing" : "is null");
		return dflt;
	}
	rc = rj_u64(f->d, i, &v);
	if (rc == -ERANGE)
		bad(f, "%s out of range (more than 2^64-1)", key);
	else if (rc)
		bad(f, "%s is not a non-negative integer", key);
	return rc ? dflt : v;
}

static uint32_t u32_of(struct fields *f, uint32_t obj, const char *key, bool required)
{
	uint64_t v = u64_of(f, obj, key, required, 0);

	if (v > UINT32_MAX) {
		bad(f, "%s out of range (more than 2^32-1)", key);
		return 0;
	}
	return (uint32_t)v;
}

/* A small signed integer (vcpu, signo, si_code); absent or null gives -1. */
static int32_t i32_of(struct fields *f, uint32_t obj, const char *key)
{
	uint32_t i = rj_get(f->d, obj, key);
	int64_t v;

	if (rj_null(f->d, i))
		return -1;
	if (rj_i64(f->d, i, &v) || v < INT32_MIN || v > INT32_MAX) {
		bad(f, "%s is not a 32-bit integer", key);
		return -1;
	}
	return (int32_t)v;
}

/* An address: "0x..." as the tracer writes it (or a plain number); absent or null 0. */
static uint64_t addr_of(struct fields *f, uint32_t obj, const char *key)
{
	uint32_t i = rj_get(f->d, obj, key);
	const char *s = rj_str(f->d, i);
	uint64_t v = 0;

	if (rj_null(f->d, i))
		return 0;
	if (!s)
		return u64_of(f, obj, key, false, 0);
	if (s[0] != '0' || (s[1] != 'x' && s[1] != 'X') || !s[2]) {
		bad(f, "%s is not a hex address (\"0x...\")", key);
		return 0;
	}
	for (s += 2; *s; s++) {
		int h = *s >= '0' && *s <= '9' ? *s - '0' : *s >= 'a' && *s <= 'f' ? *s - 'a' + 10 :
			*s >= 'A' && *s <= 'F' ? *s - 'A' + 10 : -1;

		if (h < 0 || v >> 60) {
			bad(f, "%s is not a 64-bit hex address", key);
			return 0;
		}
		v = v << 4 | (uint64_t)h;
	}
	return v;
}

/* A string member into buf (truncated to fit); absent or null gives "". */
static void str_of(struct fields *f, uint32_t obj, const char *key, char *buf, size_t len)
{
	uint32_t i = rj_get(f->d, obj, key);
	const char *s = rj_str(f->d, i);

	buf[0] = 0;
	if (rj_null(f->d, i))
		return;
	if (!s) {
		bad(f, "%s is not a string", key);
		return;
	}
	snprintf(buf, len, "%s", s);
}

static bool bool_of(struct fields *f, uint32_t obj, const char *key)
{
	uint32_t i = rj_get(f->d, obj, key);
	enum rj_type t = rj_type_of(f->d, i);

	if (rj_null(f->d, i))
		return false;
	if (t != RJ_TRUE && t != RJ_FALSE)
		bad(f, "%s is not true or false", key);
	return t == RJ_TRUE;
}

static unsigned res_index(const char *name)
{
	for (unsigned r = 0; r < RP_RES_OTHER; r++)
		if (!strcmp(name, rp_res_name(r)))
			return r;
	return RP_RES_OTHER;
}

static void parse_fault(struct fields *f, struct rp_fault *x)
{
	char res[32], mode[16];

	/* in the order the tracer writes them (rj_get is cheapest so) */
	memset(x, 0, sizeof(*x));
	x->pid = u32_of(f, 0, "pid", true);
	x->tid = u32_of(f, 0, "tid", true);
	str_of(f, 0, "comm", x->comm, sizeof(x->comm));
	x->addr = addr_of(f, 0, "addr");
	str_of(f, 0, "mode", mode, sizeof(mode));
	x->start = u64_of(f, 0, "start_ns", true, 0);
	x->latency = u64_of(f, 0, "latency_ns", true, 0);
	x->notify = u64_of(f, 0, "notify_ns", false, RP_NONE);
	x->resolve = u64_of(f, 0, "resolve_ns", false, RP_NONE);
	x->wake = u64_of(f, 0, "wake_ns", false, RP_NONE);
	x->run = u64_of(f, 0, "run_ns", false, RP_NONE);
	str_of(f, 0, "resolved_by", res, sizeof(res));
	x->vcpu = i32_of(f, 0, "vcpu");
	x->retries = u32_of(f, 0, "retries", false);
	x->page_size = u32_of(f, 0, "page_size", false);
	x->waiting = bool_of(f, 0, "waiting");
	x->res = (uint8_t)(res[0] ? res_index(res) : FL_RES_UNRESOLVED);
	x->mode = RP_MODE_OTHER;
	for (unsigned m = 0; m < RP_MODE_OTHER; m++)
		if (!strcmp(mode, rp_mode_name(m)))
			x->mode = (uint8_t)m;
	if (x->vcpu < -1)
		x->vcpu = -1;
	/* the end of the wait must be a time, or every time axis breaks */
	if (!f->rc && x->start + x->latency < x->start)
		bad(f, "start_ns + latency_ns is past 2^64-1");
}

static void parse_race(struct fields *f, struct rp_race *x)
{
	memset(x, 0, sizeof(*x));
	str_of(f, 0, "kind", x->kind, sizeof(x->kind));
	x->ts = u64_of(f, 0, "ts_ns", true, 0);
	x->pid = u32_of(f, 0, "pid", false);
	str_of(f, 0, "what", x->what, sizeof(x->what));
	x->start = addr_of(f, 0, "start");
	x->len = u64_of(f, 0, "len", false, 0);
	x->actor_tid = u32_of(f, 0, "actor_tid", false);
	str_of(f, 0, "actor_comm", x->actor_comm, sizeof(x->actor_comm));
	x->waiters = u32_of(f, 0, "waiters", false);
	x->waiter_tid = u32_of(f, 0, "waiter_tid", false);
	x->waiter_addr = addr_of(f, 0, "waiter_addr");
	str_of(f, 0, "errno", x->err, sizeof(x->err));
	x->waited_ns = u64_of(f, 0, "waited_ns", false, 0);
	if (!x->kind[0])
		bad(f, "kind missing");
}

static void parse_poison(struct fields *f, struct rp_poison *x)
{
	uint32_t code;

	memset(x, 0, sizeof(*x));
	str_of(f, 0, "kind", x->kind, sizeof(x->kind));
	x->ts = u64_of(f, 0, "ts_ns", true, 0);
	x->pid = u32_of(f, 0, "pid", false);
	x->tid = u32_of(f, 0, "tid", false);
	x->vcpu = i32_of(f, 0, "vcpu");
	str_of(f, 0, "comm", x->comm, sizeof(x->comm));
	x->addr = addr_of(f, 0, "addr");
	x->len = u64_of(f, 0, "len", false, 0);
	/* the one detail each kind has: an errno, a si_code, a gpa or a pfn */
	code = rj_get(f->d, 0, "si_code");
	if (rj_str(f->d, code))
		str_of(f, 0, "si_code", x->detail, sizeof(x->detail));
	else if (rj_str(f->d, rj_get(f->d, 0, "gpa")))
		str_of(f, 0, "gpa", x->detail, sizeof(x->detail));
	else if (rj_str(f->d, rj_get(f->d, 0, "pfn")))
		str_of(f, 0, "pfn", x->detail, sizeof(x->detail));
	else
		str_of(f, 0, "errno", x->detail, sizeof(x->detail));
	if (!x->kind[0])
		bad(f, "kind missing");
}

static void parse_summary(struct fields *f, struct rp_summary *x)
{
	uint32_t rb = rj_get(f->d, 0, "resolved_by");

	memset(x, 0, sizeof(*x));
	x->duration_ns = u64_of(f, 0, "duration_ns", false, 0);
	x->faults = u64_of(f, 0, "faults", true, 0);
	x->races = u64_of(f, 0, "races", false, 0);
	x->lost = u64_of(f, 0, "lost", false, 0);
	if (rj_null(f->d, rb))
		return;
	if (rj_type_of(f->d, rb) != RJ_OBJ) {
		bad(f, "resolved_by is not an object");
		return;
	}
	for (uint32_t c = f->d->nodes[rb].child; c != RJ_NONE; c = f->d->nodes[c].next) {
		uint64_t v;

		if (rj_u64(f->d, c, &v)) {
			bad(f, "resolved_by.%.32s is not a count", f->d->nodes[c].key);
			return;
		}
		x->by_res[res_index(f->d->nodes[c].key)] += v;
	}
}

/* {"faults":..,"blocked_ns":..,"latency_dist_us":[24 counts]} of vm_stats */
static void parse_lat(struct fields *f, uint32_t obj, struct fl_lat_stats *l)
{
	uint32_t dist = rj_get(f->d, obj, "latency_dist_us"), b = 0;

	l->faults = u64_of(f, obj, "faults", true, 0);
	l->blocked_ns = u64_of(f, obj, "blocked_ns", true, 0);
	if (rj_null(f->d, dist))
		return;
	if (rj_type_of(f->d, dist) != RJ_ARR || f->d->nodes[dist].n > FL_LAT_BUCKETS) {
		bad(f, "latency_dist_us is not an array of at most %d counts", FL_LAT_BUCKETS);
		return;
	}
	for (uint32_t c = f->d->nodes[dist].child; c != RJ_NONE; c = f->d->nodes[c].next, b++)
		if (rj_u64(f->d, c, &l->buckets[b])) {
			bad(f, "latency_dist_us[%u] is not a count", b);
			return;
		}
}

static void parse_vm(struct fields *f, struct rp_vm *x)
{
	uint32_t vcpus = rj_get(f->d, 0, "vcpus"), nv = rj_get(f->d, 0, "non_vcpu"), k = 0;

	x->pid = u32_of(f, 0, "pid", true);
	str_of(f, 0, "comm", x->comm, sizeof(x->comm));
	x->all_vcpu_blocked_ns = u64_of(f, 0, "all_vcpu_blocked_ns", false, 0);
	x->total_blocked_ns = u64_of(f, 0, "total_blocked_ns", false, 0);
	x->lower_bound = bool_of(f, 0, "all_vcpu_lower_bound");
	if (rj_type_of(f->d, nv) == RJ_OBJ)
		parse_lat(f, nv, &x->nonvcpu);
	else if (!rj_null(f->d, nv))
		bad(f, "non_vcpu is not an object");
	if (rj_null(f->d, vcpus) || f->rc)
		return;
	if (rj_type_of(f->d, vcpus) != RJ_ARR || f->d->nodes[vcpus].n > FL_MAX_VCPUS) {
		bad(f, "vcpus is not an array of at most %d vCPUs", FL_MAX_VCPUS);
		return;
	}
	if (!f->d->nodes[vcpus].n)
		return;
	x->vcpus = calloc(f->d->nodes[vcpus].n, sizeof(*x->vcpus));
	if (!x->vcpus) {
		bad(f, "out of memory");
		f->rc = -ENOMEM;
		return;
	}
	for (uint32_t c = f->d->nodes[vcpus].child; c != RJ_NONE && !f->rc;
	     c = f->d->nodes[c].next, k++) {
		struct rp_vm_vcpu *v = &x->vcpus[k];
		uint32_t ex = rj_get(f->d, c, "exits");

		if (rj_type_of(f->d, c) != RJ_OBJ) {
			bad(f, "vcpus[%u] is not an object", k);
			break;
		}
		v->vcpu = i32_of(f, c, "vcpu");
		v->tid = u32_of(f, c, "tid", true);
		parse_lat(f, c, &v->lat);
		if (rj_null(f->d, ex))
			continue;
		if (rj_type_of(f->d, ex) != RJ_OBJ) {
			bad(f, "vcpus[%u].exits is not an object", k);
			break;
		}
		for (uint32_t e = f->d->nodes[ex].child; e != RJ_NONE && v->nexits < RP_MAX_EXITS;
		     e = f->d->nodes[e].next) {
			if (rj_u64(f->d, e, &v->exits[v->nexits].n)) {
				bad(f, "vcpus[%u].exits.%.32s is not a count", k, f->d->nodes[e].key);
				break;
			}
			snprintf(v->exits[v->nexits++].name, sizeof(v->exits[0].name), "%s",
				 f->d->nodes[e].key);
		}
	}
	x->nvcpus = k;
}

void rp_record_free(struct rp_record *rec)
{
	free(rec->vm.vcpus);
	rec->vm.vcpus = NULL;
	rec->vm.nvcpus = 0;
}

int rp_parse_line(struct rj_doc *doc, char *line, size_t len, struct rp_record *rec,
		  char *why, size_t whylen)
{
	struct fields f = { .d = doc, .why = why, .whylen = whylen };
	size_t i = 0;
	const char *ev;
	int rc;

	rp_record_free(rec);
	memset(rec, 0, sizeof(*rec));
	while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
		i++;
	if (i == len || line[i] != '{')
		return 0;	/* not ours: blank, or the traced command's own output */
	rc = rj_parse(doc, line, len);
	if (rc) {
		fl_errmsg(why, whylen, "%s at column %zu", doc->err, doc->errpos + 1);
		return rc;
	}
	ev = rj_str(doc, rj_get(doc, 0, "event"));
	rec->kind = RP_OTHER;
	for (int k = 0; ev && k < RP_OTHER; k++)
		if (!strcmp(ev, kind_names[k]))
			rec->kind = (enum rp_kind)k;
	f.event = ev ? ev : "?";
	switch (rec->kind) {
	case RP_FAULT: parse_fault(&f, &rec->fault); break;
	case RP_RACE: parse_race(&f, &rec->race); break;
	case RP_POISON: parse_poison(&f, &rec->poison); break;
	case RP_LOST:
		rec->lost.ts = u64_of(&f, 0, "ts_ns", false, 0);
		rec->lost.count = u64_of(&f, 0, "count", true, 0);
		str_of(&f, 0, "where", rec->lost.where, sizeof(rec->lost.where));
		break;
	case RP_SUMMARY: parse_summary(&f, &rec->summary); break;
	case RP_VMSTATS: parse_vm(&f, &rec->vm); break;
	case RP_LATE:
		rec->late.ts = u64_of(&f, 0, "ts_ns", true, 0);
		rec->late.pid = u32_of(&f, 0, "pid", true);
		rec->late.since = u64_of(&f, 0, "since_ns", false, 0);
		str_of(&f, 0, "comm", rec->late.comm, sizeof(rec->late.comm));
		str_of(&f, 0, "reason", rec->late.reason, sizeof(rec->late.reason));
		break;
	case RP_SIGNAL:
		rec->signal.ts = u64_of(&f, 0, "ts_ns", true, 0);
		rec->signal.pid = u32_of(&f, 0, "pid", false);
		rec->signal.tid = u32_of(&f, 0, "tid", false);
		rec->signal.signo = i32_of(&f, 0, "signo");
		rec->signal.code = i32_of(&f, 0, "si_code");
		rec->signal.vcpu = i32_of(&f, 0, "vcpu");
		rec->signal.addr = addr_of(&f, 0, "addr");
		str_of(&f, 0, "comm", rec->signal.comm, sizeof(rec->signal.comm));
		break;
	case RP_MEMFAULT:
		rec->memfault.ts = u64_of(&f, 0, "ts_ns", true, 0);
		rec->memfault.pid = u32_of(&f, 0, "pid", false);
		rec->memfault.tid = u32_of(&f, 0, "tid", false);
		rec->memfault.vcpu = i32_of(&f, 0, "vcpu");
		rec->memfault.gpa = addr_of(&f, 0, "gpa");
		rec->memfault.size = u64_of(&f, 0, "size", false, 0);
		break;
	default:
		break;	/* hist repeats the faults; other events are not ours to draw */
	}
	if (f.rc) {
		rp_record_free(rec);
		return f.rc;
	}
	return 1;
}

int rp_reader_init(struct rp_reader *r, FILE *in, bool strict)
{
	memset(r, 0, sizeof(*r));
	r->in = in;
	r->strict = strict;
	r->cap = RP_BUF;
	r->buf = malloc(r->cap);
	return r->buf ? 0 : -ENOMEM;
}

void rp_reader_free(struct rp_reader *r)
{
	free(r->buf);
	r->buf = NULL;
	rj_free(&r->doc);
}

/*
 * The next line (without its newline) in *line and *len; 1, 0 at the end, -EIO.
 * *too_long: the line was longer than RP_MAX_LINE and has been skipped;
 * *last: it had no newline (the input ended inside it).
 */
static int next_line(struct rp_reader *r, char **line, size_t *len, bool *too_long, bool *last)
{
	bool skipping = false;

	*too_long = *last = false;
	for (;;) {
		char *nl = memchr(r->buf + r->pos, '\n', r->len - r->pos);
		size_t got;

		if (nl) {
			*line = r->buf + r->pos;
			*len = (size_t)(nl - *line);
			r->pos += *len + 1;
			r->bytes += *len + 1;
			if (skipping || *len > RP_MAX_LINE)
				*too_long = true;
			return 1;
		}
		if (r->eof) {
			if (r->pos == r->len && !skipping)
				return 0;
			*line = r->buf + r->pos;
			*len = r->len - r->pos;
			r->bytes += *len;
			r->pos = r->len;
			*last = true;
			*too_long = skipping || *len > RP_MAX_LINE;
			return 1;
		}
		if (r->len - r->pos > RP_MAX_LINE) {
			/* no newline within the limit: drop what is buffered, find the line's end */
			r->bytes += r->len - r->pos;
			skipping = true;
			r->pos = r->len = 0;
		} else if (r->pos) {
			memmove(r->buf, r->buf + r->pos, r->len - r->pos);
			r->len -= r->pos;
			r->pos = 0;
		}
		got = fread(r->buf + r->len, 1, r->cap - r->len, r->in);
		r->len += got;
		if (!got) {
			if (ferror(r->in))
				return -EIO;
			r->eof = true;
		}
	}
}

int rp_reader_next(struct rp_reader *r, struct rp_record *rec)
{
	for (;;) {
		char why[160], *line;
		size_t len;
		bool too_long, last;
		int rc = next_line(r, &line, &len, &too_long, &last);

		if (rc < 0)
			return fl_err(r->err, sizeof(r->err), rc, "read error after line %llu: %s",
				      (unsigned long long)r->lines, strerror(-rc));
		if (!rc)
			return 0;
		r->lines++;
		if (too_long) {
			rc = -E2BIG;
			snprintf(why, sizeof(why), "longer than %u bytes", RP_MAX_LINE);
		} else {
			rc = rp_parse_line(&r->doc, line, len, rec, why, sizeof(why));
			if (rc == 0) {
				r->foreign += len > 0;
				continue;
			}
		}
		if (rc > 0) {
			r->by_kind[rec->kind]++;
			return 1;
		}
		if (rc == -ENOMEM)
			return fl_err(r->err, sizeof(r->err), rc, "line %llu: out of memory",
				      (unsigned long long)r->lines);
		if (last && rc == -EINVAL)	/* the usual way: a trace killed mid-line */
			snprintf(why + strlen(why), sizeof(why) - strlen(why),
				 " (the last line, without a newline: cut short?)");
		if (r->strict)
			return fl_err(r->err, sizeof(r->err), -EINVAL, "line %llu: %s",
				      (unsigned long long)r->lines, why);
		if (r->malformed < RP_SKIP_EXAMPLES) {
			r->skips[r->malformed].line = r->lines;
			snprintf(r->skips[r->malformed].why, sizeof(r->skips[0].why), "%s", why);
		}
		r->malformed++;
	}
}
