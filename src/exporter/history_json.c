// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The history socket's protocol: a request and an answer as JSON lines,
 * written and read (the reader is fuzzed: tests/fuzz/fuzz_history.c).
 */
#include "history_int.h"

/* ---- writing ------------------------------------------------------------------------ */

static void w_u64(FILE *out, const char *key, uint64_t v)
{
	fprintf(out, ",\"%s\":%" PRIu64, key, v);
}

static void w_u64_or_null(FILE *out, const char *key, uint64_t v)
{
	if (v)
		w_u64(out, key, v);
	else
		fprintf(out, ",\"%s\":null", key);
}

static void w_hex_or_null(FILE *out, const char *key, uint64_t v)
{
	if (v)
		fprintf(out, ",\"%s\":\"0x%" PRIx64 "\"", key, v);
	else
		fprintf(out, ",\"%s\":null", key);
}

static void w_str(FILE *out, const char *key, const char *s, size_t max)
{
	fprintf(out, ",\"%s\":", key);
	fl_json_str(out, s, max);
}

static const char *errno_name(int64_t ret)
{
	const char *n = ret < 0 && ret > -4096 ? strerrorname_np((int)-ret) : NULL;

	return n ? n : "E?";
}

static const char *state_name(enum fl_hist_state s)
{
	return s == FL_HF_PENDING ? "pending" : s == FL_HF_BLOCKED ? "blocked" : "running";
}

static void write_fault(FILE *out, const struct fl_hist_fault *f)
{
	fprintf(out, "{\"record\":\"fault\",\"pid\":%u,\"tid\":%u", f->pid, f->tid);
	w_str(out, "comm", f->comm, FL_COMM_LEN);
	fprintf(out, ",\"state\":\"%s\"", state_name(f->state));
	w_hex_or_null(out, "mm", f->mm);
	w_hex_or_null(out, "addr", f->addr);
	w_u64(out, "start_ns", f->start_ts);
	w_u64_or_null(out, "block_ns", f->block_ts);
	w_u64_or_null(out, "last_block_ns", f->last_block_ts);
	w_u64_or_null(out, "run_ns", f->run_ts);
	w_u64_or_null(out, "pf_ns", f->pf_ts);
	w_u64_or_null(out, "read_ns", f->read_ts);
	if (f->read_ts)
		fprintf(out, ",\"read_pid\":%u,\"read_tid\":%u,\"read_fd\":%d", f->read_pid,
			f->read_tid, f->read_fd);
	else
		fputs(",\"read_pid\":null,\"read_tid\":null,\"read_fd\":null", out);
	w_hex_or_null(out, "ctx", f->ctx);
	fprintf(out, ",\"reads\":%u,\"retries\":%u,\"ioctls\":%u,\"maps\":%u,\"user_pf\":%s,"
		"\"inferred\":%s,\"placed\":%s}\n", f->reads, f->retries, f->nioctls, f->nmaps,
		f->user_pf ? "true" : "false", f->inferred ? "true" : "false",
		f->placed ? "true" : "false");
}

static void write_ioctl(FILE *out, const struct fl_hist_ioctl *io)
{
	fputs("{\"record\":\"ioctl\"", out);
	w_u64_or_null(out, "waiter", io->waiter);
	fprintf(out, ",\"op\":\"%s\"", fl_op_name(io->op));
	w_hex_or_null(out, "ctx", io->ctx);
	w_hex_or_null(out, "mm", io->mm);
	fprintf(out, ",\"pid\":%u,\"tid\":%u", io->pid, io->tid);
	w_str(out, "comm", io->comm, FL_COMM_LEN);
	fprintf(out, ",\"fd\":%d,\"start\":\"0x%" PRIx64 "\",\"len\":%" PRIu64 ",\"mode\":%" PRIu64
		",\"ret\":%" PRId64 ",\"errno\":", io->fd, io->start, io->len, io->mode, io->ret);
	if (io->ret < 0)
		fprintf(out, "\"%s\"", errno_name(io->ret));
	else
		fputs("null", out);
	fprintf(out, ",\"result\":%" PRId64, io->result);
	w_u64(out, "enter_ns", io->enter_ts);
	w_u64(out, "ns", io->ts);
	fputs("}\n", out);
}

static void write_map(FILE *out, const struct fl_hist_map *m)
{
	fputs("{\"record\":\"map\"", out);
	w_u64_or_null(out, "waiter", m->waiter);
	fprintf(out, ",\"op\":\"%s\"", fl_hist_map_op_name(m->op));
	w_hex_or_null(out, "mm", m->mm);
	fprintf(out, ",\"pid\":%u,\"tid\":%u", m->pid, m->tid);
	w_str(out, "comm", m->comm, FL_COMM_LEN);
	fprintf(out, ",\"addr\":\"0x%" PRIx64 "\",\"len\":%" PRIu64, m->addr, m->len);
	w_hex_or_null(out, "new_addr", m->new_addr);
	fprintf(out, ",\"new_len\":%" PRIu64 ",\"arg\":%u,\"ret\":%" PRId64, m->new_len, m->arg,
		m->ret);
	w_u64(out, "ns", m->ts);
	fputs("}\n", out);
}

static void write_uffd(FILE *out, const struct fl_hist_uffd *u)
{
	fputs("{\"record\":\"uffd\"", out);
	w_hex_or_null(out, "ctx", u->ctx);
	w_hex_or_null(out, "mm", u->mm);
	w_u64_or_null(out, "owner_pid", u->owner_pid);
	fprintf(out, ",\"fd\":%d", u->fd);
	w_u64(out, "ioctls", u->nioctls);
	w_u64(out, "reads", u->nreads);
	w_u64_or_null(out, "last_read_ns", u->last_read_ts);
	w_u64_or_null(out, "last_read_pid", u->last_read_pid);
	w_u64_or_null(out, "last_read_tid", u->last_read_tid);
	w_u64(out, "last_ns", u->last_ts);
	fputs("}\n", out);
}

static void write_episode(FILE *out, const struct fl_hist_episode *x)
{
	fprintf(out, "{\"record\":\"episode\",\"pid\":%u,\"tid\":%u", x->pid, x->tid);
	w_str(out, "comm", x->comm, FL_COMM_LEN);
	w_hex_or_null(out, "addr", x->addr);
	w_u64(out, "start_ns", x->start_ts);
	w_u64(out, "end_ns", x->end_ts);
	w_u64_or_null(out, "notify_ns", x->notify_ts);
	w_u64_or_null(out, "resolve_ns", x->resolve_ts);
	fprintf(out, ",\"resolved_by\":\"%s\",\"place_errno\":%d,\"uffd\":%d,\"handler_pid\":%u,"
		"\"unfinished\":%s}\n", fl_resolution_name(x->resolved_by), x->place_errno, x->uffd,
		x->handler_pid, x->unfinished ? "true" : "false");
}

void fl_hist_answer_write(FILE *out, const struct fl_hist_answer *a)
{
	fprintf(out, "{\"record\":\"history\",\"version\":%d,\"daemon_pid\":%u,\"now_ns\":%" PRIu64
		",\"since_ns\":%" PRIu64 ",\"lost\":%" PRIu64 ",\"evicted\":%" PRIu64 "}\n",
		a->version, a->daemon_pid, a->now_ns, a->since_ns, a->lost, a->evicted);
	for (int i = 0; i < a->nfaults; i++)
		write_fault(out, &a->faults[i]);
	for (int i = 0; i < a->nuffds; i++)
		write_uffd(out, &a->uffds[i]);
	for (int i = 0; i < a->nioctls; i++)
		write_ioctl(out, &a->ioctls[i]);
	for (int i = 0; i < a->nmaps; i++)
		write_map(out, &a->maps[i]);
	for (int i = 0; i < a->nepisodes; i++)
		write_episode(out, &a->episodes[i]);
	fprintf(out, "{\"record\":\"end\",\"faults\":%d,\"uffds\":%d,\"ioctls\":%d,\"maps\":%d,"
		"\"episodes\":%d}\n", a->nfaults, a->nuffds, a->nioctls, a->nmaps, a->nepisodes);
}

void fl_hist_error_write(FILE *out, const char *msg)
{
	fputs("{\"record\":\"error\",\"error\":", out);
	fl_json_str(out, msg, 512);
	fputs("}\n", out);
}

void fl_hist_request_write(FILE *out, const pid_t *pids, int npids)
{
	fputs("{\"pids\":[", out);
	for (int i = 0; i < npids; i++)
		fprintf(out, "%s%d", i ? "," : "", pids[i]);
	fputs("]}\n", out);
}

/* ---- reading: one flat JSON object per line --------------------------------------- */

#define J_MAX_FIELDS 40
#define J_STR_LEN 512

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR };

struct jfield {
	char key[32];
	enum jtype type;
	bool b, neg;
	uint64_t num;		/* magnitude; neg says the sign */
	char str[J_STR_LEN];
};

struct jobj {
	int n;
	struct jfield f[J_MAX_FIELDS];
	/* the one array of numbers an object may have (a request's pids) */
	uint64_t arr[FL_HIST_MAX_PIDS];
	int narr;
	bool arr_overflow, arr_bad;
};

static const char *skip_ws(const char *p)
{
	while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
		p++;
	return p;
}

/* A JSON string at p (after its quote) into buf; the end, or NULL when malformed. */
static const char *j_string(const char *p, char *buf, size_t len)
{
	size_t o = 0;

	for (; *p && *p != '"'; p++) {
		char c = *p;

		if ((unsigned char)c < 0x20)
			return NULL;
		if (c == '\\') {
			p++;
			switch (*p) {
			case '"': case '\\': case '/': c = *p; break;
			case 'n': c = '\n'; break;
			case 't': c = '\t'; break;
			case 'r': c = '\r'; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'u': {
				unsigned v = 0;

				for (int i = 1; i <= 4; i++) {
					char h = p[i];

					if (!((h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') ||
					      (h >= 'A' && h <= 'F')))
						return NULL;
					v = v * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
				}
				p += 4;
				c = v < 0x80 ? (char)v : '?';	/* we only write ASCII escapes */
				break;
			}
			default:
				return NULL;
			}
		}
		if (o + 1 < len)
			buf[o++] = c;
	}
	if (*p != '"')
		return NULL;
	buf[o] = 0;
	return p + 1;
}

static const char *j_number(const char *p, bool *neg, uint64_t *v)
{
	const char *start;

	*neg = *p == '-';
	if (*neg)
		p++;
	start = p;
	*v = 0;
	for (; *p >= '0' && *p <= '9'; p++)
		if (__builtin_mul_overflow(*v, 10, v) ||
		    __builtin_add_overflow(*v, (uint64_t)(*p - '0'), v))
			return NULL;
	if (p == start || *p == '.' || *p == 'e' || *p == 'E')
		return NULL;	/* integers only: nothing here writes anything else */
	return p;
}

static int j_parse(const char *line, struct jobj *o)
{
	const char *p = skip_ws(line);

	memset(o, 0, sizeof(*o));
	if (*p++ != '{')
		return -EINVAL;
	p = skip_ws(p);
	if (*p == '}')
		return *skip_ws(p + 1) ? -EINVAL : 0;
	for (;;) {
		struct jfield *f = o->n < J_MAX_FIELDS ? &o->f[o->n] : NULL;
		struct jfield spill;

		if (!f)
			f = &spill;	/* parsed, not kept */
		memset(f, 0, sizeof(*f));
		if (*p++ != '"' || !(p = j_string(p, f->key, sizeof(f->key))))
			return -EINVAL;
		p = skip_ws(p);
		if (*p++ != ':')
			return -EINVAL;
		p = skip_ws(p);
		if (*p == '"') {
			f->type = J_STR;
			if (!(p = j_string(p + 1, f->str, sizeof(f->str))))
				return -EINVAL;
		} else if (!strncmp(p, "null", 4)) {
			f->type = J_NULL;
			p += 4;
		} else if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
			f->type = J_BOOL;
			f->b = *p == 't';
			p += f->b ? 4 : 5;
		} else if (*p == '[') {
			f->type = J_ARR;
			p = skip_ws(p + 1);
			while (*p != ']') {
				bool neg;
				uint64_t v;

				if (!(p = j_number(p, &neg, &v)))
					return -EINVAL;
				if (neg)
					o->arr_bad = true;
				else if (o->narr < FL_HIST_MAX_PIDS)
					o->arr[o->narr++] = v;
				else
					o->arr_overflow = true;
				p = skip_ws(p);
				if (*p == ',')
					p = skip_ws(p + 1);
				else if (*p != ']')
					return -EINVAL;
			}
			p++;
		} else {
			f->type = J_NUM;
			if (!(p = j_number(p, &f->neg, &f->num)))
				return -EINVAL;
		}
		if (f != &spill)
			o->n++;
		p = skip_ws(p);
		if (*p == '}')
			break;
		if (*p++ != ',')
			return -EINVAL;
		p = skip_ws(p);
	}
	return *skip_ws(p + 1) ? -EINVAL : 0;
}

static const struct jfield *j_get(const struct jobj *o, const char *key)
{
	for (int i = 0; i < o->n; i++)
		if (!strcmp(o->f[i].key, key))
			return &o->f[i];
	return NULL;
}

/* Unsigned number, or a "0x..." string; 0 when null or absent. */
static uint64_t j_u64(const struct jobj *o, const char *key)
{
	const struct jfield *f = j_get(o, key);

	if (!f)
		return 0;
	if (f->type == J_NUM && !f->neg)
		return f->num;
	if (f->type == J_STR && !strncmp(f->str, "0x", 2))
		return strtoull(f->str + 2, NULL, 16);
	return 0;
}

static int64_t j_i64(const struct jobj *o, const char *key)
{
	const struct jfield *f = j_get(o, key);

	if (!f || f->type != J_NUM)
		return 0;
	return f->neg ? -(int64_t)f->num : (int64_t)f->num;
}

static bool j_bool(const struct jobj *o, const char *key)
{
	const struct jfield *f = j_get(o, key);

	return f && f->type == J_BOOL && f->b;
}

static void j_copy_str(const struct jobj *o, const char *key, char *buf, size_t len)
{
	const struct jfield *f = j_get(o, key);

	size_t n;

	buf[0] = 0;
	if (!f || f->type != J_STR)
		return;
	n = strnlen(f->str, len - 1);
	memcpy(buf, f->str, n);
	buf[n] = 0;
}

static const char *j_str(const struct jobj *o, const char *key)
{
	const struct jfield *f = j_get(o, key);

	return f && f->type == J_STR ? f->str : "";
}

static int parse_fault(struct fl_hist_answer *a, const struct jobj *o)
{
	struct fl_hist_fault f = { 0 };
	const char *st = j_str(o, "state");

	f.pid = (uint32_t)j_u64(o, "pid");
	f.tid = (uint32_t)j_u64(o, "tid");
	j_copy_str(o, "comm", f.comm, sizeof(f.comm));
	f.state = !strcmp(st, "pending") ? FL_HF_PENDING : !strcmp(st, "blocked") ? FL_HF_BLOCKED
										  : FL_HF_RUNNING;
	f.mm = j_u64(o, "mm");
	f.addr = j_u64(o, "addr");
	f.start_ts = j_u64(o, "start_ns");
	f.block_ts = j_u64(o, "block_ns");
	f.last_block_ts = j_u64(o, "last_block_ns");
	f.run_ts = j_u64(o, "run_ns");
	f.pf_ts = j_u64(o, "pf_ns");
	f.read_ts = j_u64(o, "read_ns");
	f.read_pid = (uint32_t)j_u64(o, "read_pid");
	f.read_tid = (uint32_t)j_u64(o, "read_tid");
	f.read_fd = f.read_ts ? (int32_t)j_i64(o, "read_fd") : -1;
	f.ctx = j_u64(o, "ctx");
	f.reads = (uint32_t)j_u64(o, "reads");
	f.retries = (uint32_t)j_u64(o, "retries");
	f.nioctls = (uint32_t)j_u64(o, "ioctls");
	f.nmaps = (uint32_t)j_u64(o, "maps");
	f.user_pf = j_bool(o, "user_pf");
	f.inferred = j_bool(o, "inferred");
	f.placed = j_bool(o, "placed");
	if (!f.tid)
		return -EINVAL;
	return fl_hs_push_fault(a, &f);
}

static int parse_ioctl(struct fl_hist_answer *a, const struct jobj *o)
{
	struct fl_hist_ioctl r = { 0 };

	if (fl_hist_op_parse(j_str(o, "op"), &r.op))
		return -EINVAL;
	r.waiter = (uint32_t)j_u64(o, "waiter");
	r.ctx = j_u64(o, "ctx");
	r.mm = j_u64(o, "mm");
	r.pid = (uint32_t)j_u64(o, "pid");
	r.tid = (uint32_t)j_u64(o, "tid");
	j_copy_str(o, "comm", r.comm, sizeof(r.comm));
	r.fd = (int32_t)j_i64(o, "fd");
	r.start = j_u64(o, "start");
	r.len = j_u64(o, "len");
	r.mode = j_u64(o, "mode");
	r.ret = j_i64(o, "ret");
	r.result = j_i64(o, "result");
	r.enter_ts = j_u64(o, "enter_ns");
	r.ts = j_u64(o, "ns");
	return fl_hs_push_ioctl(a, &r, r.waiter);
}

static int parse_map(struct fl_hist_answer *a, const struct jobj *o)
{
	struct fl_hist_map m = { 0 };

	if (fl_hist_map_op_parse(j_str(o, "op"), &m.op))
		return -EINVAL;
	m.waiter = (uint32_t)j_u64(o, "waiter");
	m.mm = j_u64(o, "mm");
	m.pid = (uint32_t)j_u64(o, "pid");
	m.tid = (uint32_t)j_u64(o, "tid");
	j_copy_str(o, "comm", m.comm, sizeof(m.comm));
	m.addr = j_u64(o, "addr");
	m.len = j_u64(o, "len");
	m.new_addr = j_u64(o, "new_addr");
	m.new_len = j_u64(o, "new_len");
	m.arg = (uint32_t)j_u64(o, "arg");
	m.ret = j_i64(o, "ret");
	m.ts = j_u64(o, "ns");
	return fl_hs_push_map_rec(a, &m, m.waiter);
}

static int parse_uffd(struct fl_hist_answer *a, const struct jobj *o)
{
	struct fl_hist_uffd u = { 0 };

	u.ctx = j_u64(o, "ctx");
	u.mm = j_u64(o, "mm");
	u.owner_pid = (uint32_t)j_u64(o, "owner_pid");
	u.fd = (int32_t)j_i64(o, "fd");
	u.nioctls = j_u64(o, "ioctls");
	u.nreads = j_u64(o, "reads");
	u.last_read_ts = j_u64(o, "last_read_ns");
	u.last_read_pid = (uint32_t)j_u64(o, "last_read_pid");
	u.last_read_tid = (uint32_t)j_u64(o, "last_read_tid");
	u.last_ts = j_u64(o, "last_ns");
	return fl_hs_push_uffd(a, &u);
}

static int parse_episode(struct fl_hist_answer *a, const struct jobj *o)
{
	struct fl_hist_episode x = { 0 };
	const char *res = j_str(o, "resolved_by");

	x.pid = (uint32_t)j_u64(o, "pid");
	x.tid = (uint32_t)j_u64(o, "tid");
	j_copy_str(o, "comm", x.comm, sizeof(x.comm));
	x.addr = j_u64(o, "addr");
	x.start_ts = j_u64(o, "start_ns");
	x.end_ts = j_u64(o, "end_ns");
	x.notify_ts = j_u64(o, "notify_ns");
	x.resolve_ts = j_u64(o, "resolve_ns");
	x.place_errno = (int32_t)j_i64(o, "place_errno");
	x.uffd = (int32_t)j_i64(o, "uffd");
	x.handler_pid = (uint32_t)j_u64(o, "handler_pid");
	x.unfinished = j_bool(o, "unfinished");
	for (int r = FL_RES_UNRESOLVED; r <= FL_RES_WRITEPROTECT; r++)
		if (!strcmp(res, fl_resolution_name(r)))
			x.resolved_by = r;
	return fl_hs_push_episode(a, &x);
}

int fl_hist_answer_parse_line(struct fl_hist_answer *a, const char *line)
{
	struct jobj *o = malloc(sizeof(*o));
	const char *rec;
	int ret = -EINVAL;

	if (!o)
		return -ENOMEM;
	if (j_parse(line, o))
		goto out;
	rec = j_str(o, "record");
	if (!strcmp(rec, "history")) {
		a->version = (int)j_u64(o, "version");
		a->daemon_pid = (uint32_t)j_u64(o, "daemon_pid");
		a->now_ns = j_u64(o, "now_ns");
		a->since_ns = j_u64(o, "since_ns");
		a->lost = j_u64(o, "lost");
		a->evicted = j_u64(o, "evicted");
		ret = a->version >= 1 ? 0 : -EINVAL;
	} else if (!strcmp(rec, "fault")) {
		ret = parse_fault(a, o);
	} else if (!strcmp(rec, "ioctl")) {
		ret = parse_ioctl(a, o);
	} else if (!strcmp(rec, "map")) {
		ret = parse_map(a, o);
	} else if (!strcmp(rec, "uffd")) {
		ret = parse_uffd(a, o);
	} else if (!strcmp(rec, "episode")) {
		ret = parse_episode(a, o);
	} else if (!strcmp(rec, "end")) {
		a->complete = true;
		ret = 0;
	} else if (!strcmp(rec, "error")) {
		j_copy_str(o, "error", a->error, sizeof(a->error));
		if (!a->error[0])
			snprintf(a->error, sizeof(a->error), "unspecified error");
		ret = 0;
	} else {
		ret = 0;	/* a newer daemon's record kind: skipped */
	}
out:
	free(o);
	return ret;
}

int fl_hist_request_parse(const char *line, pid_t *pids, int max, int *npids, char *err,
			  size_t errlen)
{
	struct jobj *o = malloc(sizeof(*o));
	const struct jfield *f;
	int ret = -EINVAL;

	*npids = 0;
	if (!o) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (j_parse(line, o)) {
		snprintf(err, errlen, "the request is not one JSON object on one line, like "
			 "{\"pids\":[1234]}");
		goto out;
	}
	f = j_get(o, "pids");
	if (!f || f->type != J_ARR) {
		snprintf(err, errlen, "the request has no \"pids\" array, like {\"pids\":[1234]}");
		goto out;
	}
	if (o->arr_overflow || o->narr > max) {
		snprintf(err, errlen, "at most %d pids per request", max < FL_HIST_MAX_PIDS ? max :
			 FL_HIST_MAX_PIDS);
		goto out;
	}
	for (int i = 0; i < o->narr; i++)
		if (!o->arr[i] || o->arr[i] > INT32_MAX)
			o->arr_bad = true;
	if (o->arr_bad) {
		snprintf(err, errlen, "pids are positive numbers");
		goto out;
	}
	for (int i = 0; i < o->narr; i++)
		pids[i] = (pid_t)o->arr[i];
	*npids = o->narr;
	ret = 0;
out:
	free(o);
	return ret;
}
