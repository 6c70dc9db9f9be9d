// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "metrics.h"

struct series {
	char *key;		/* label values, each followed by '\0' */
	size_t keylen;
	uint64_t hash;
	const char *vals[FL_METRICS_MAX_LABELS];	/* into key */
	double value;		/* counter, gauge */
	double sum;		/* histogram */
	uint64_t count;
	uint64_t *buckets;	/* nbounds + 1, not cumulative; the last is beyond every bound */
};

struct fl_metric {
	struct fl_metrics *m;
	char *name, *help;
	enum fl_metric_type type;
	unsigned nlabels;
	char *labels[FL_METRICS_MAX_LABELS];
	int limited;		/* index of the limited label, -1 none */
	double bounds[FL_METRICS_MAX_BUCKETS];
	unsigned nbounds;
	struct series **tab;	/* open addressing */
	size_t cap, n;
};

struct lvalue {
	char *name;
	uint64_t weight;
	uint64_t seq;		/* first seen: breaks ties, so ranks do not flap */
	bool own;		/* rendered under its own name (set per render) */
};

struct fl_metrics {
	char *limited_label;
	unsigned top_n;
	struct fl_metric **fams;
	unsigned nfams;
	struct lvalue *vals;	/* open addressing, FL_METRICS_MAX_VALUES * 2 slots */
	size_t nvals;
	uint64_t seq, dropped;
};

#define VAL_SLOTS (2 * FL_METRICS_MAX_VALUES)

static uint64_t fnv1a(const void *p, size_t n)
{
	const unsigned char *c = p;
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++)
		h = (h ^ c[i]) * 0x100000001b3ULL;
	return h;
}

struct fl_metrics *fl_metrics_new(const struct fl_metrics_cfg *cfg)
{
	struct fl_metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	if (cfg && cfg->limited_label) {
		m->limited_label = strdup(cfg->limited_label);
		m->vals = calloc(VAL_SLOTS, sizeof(*m->vals));
		if (!m->limited_label || !m->vals) {
			fl_metrics_free(m);
			return NULL;
		}
		m->top_n = cfg->top_n;
	}
	return m;
}

static void family_free(struct fl_metric *f)
{
	for (size_t i = 0; i < f->cap; i++)
		if (f->tab[i]) {
			free(f->tab[i]->key);
			free(f->tab[i]->buckets);
			free(f->tab[i]);
		}
	free(f->tab);
	for (unsigned i = 0; i < f->nlabels; i++)
		free(f->labels[i]);
	free(f->name);
	free(f->help);
	free(f);
}

void fl_metrics_free(struct fl_metrics *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->nfams; i++)
		family_free(m->fams[i]);
	free(m->fams);
	if (m->vals)
		for (size_t i = 0; i < VAL_SLOTS; i++)
			free(m->vals[i].name);
	free(m->vals);
	free(m->limited_label);
	free(m);
}

static bool valid_name(const char *s, bool colon)
{
	if (!s || !*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_' || (colon && *s == ':')))
			return false;
	return true;
}

struct fl_metric *fl_metrics_family(struct fl_metrics *m, const char *name, const char *help,
				    enum fl_metric_type type, const char *const *labels,
				    const double *bounds, unsigned nbounds)
{
	struct fl_metric *f, **fams;
	unsigned nl = 0;

	errno = EINVAL;
	if (!valid_name(name, true) || type > FL_METRIC_HISTOGRAM ||
	    (type == FL_METRIC_HISTOGRAM ? nbounds > FL_METRICS_MAX_BUCKETS : nbounds != 0))
		return NULL;
	for (unsigned i = 0; i < nbounds; i++)
		if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
			return NULL;
	for (; labels && labels[nl]; nl++) {
		/* "le" is the histogram's own; "__" names are reserved for Prometheus */
		if (nl == FL_METRICS_MAX_LABELS || !valid_name(labels[nl], false) ||
		    !strcmp(labels[nl], "le") || !strncmp(labels[nl], "__", 2))
			return NULL;
		for (unsigned j = 0; j < nl; j++)
			if (!strcmp(labels[j], labels[nl]))
				return NULL;
	}
	for (unsigned i = 0; i < m->nfams; i++)
		if (!strcmp(m->fams[i]->name, name)) {
			errno = EEXIST;
			return NULL;
		}
	errno = ENOMEM;
	f = calloc(1, sizeof(*f));
	fams = realloc(m->fams, (m->nfams + 1) * sizeof(*fams));
	if (!f || !fams) {
		free(f);
		if (fams)
			m->fams = fams;
		return NULL;
	}
	m->fams = fams;
	f->m = m;
	f->type = type;
	f->limited = -1;
	f->name = strdup(name);
	f->help = strdup(help ? help : "");
	f->nlabels = nl;
	for (unsigned i = 0; i < nl; i++) {
		f->labels[i] = strdup(labels[i]);
		if (!f->labels[i])
			goto nomem;
		if (m->limited_label && !strcmp(labels[i], m->limited_label))
			f->limited = (int)i;
	}
	if (!f->name || !f->help)
		goto nomem;
	memcpy(f->bounds, bounds, nbounds * sizeof(*bounds));
	f->nbounds = nbounds;
	m->fams[m->nfams++] = f;
	errno = 0;
	return f;
nomem:
	family_free(f);
	errno = ENOMEM;
	return NULL;
}

/* The limited label's value, interned; NULL once the table is full (use `other`). */
static struct lvalue *lvalue_get(struct fl_metrics *m, const char *name)
{
	uint64_t h = fnv1a(name, strlen(name));

	for (size_t i = 0; i < VAL_SLOTS; i++) {
		struct lvalue *v = &m->vals[(h + i) % VAL_SLOTS];

		if (!v->name) {
			if (m->nvals == FL_METRICS_MAX_VALUES || !(v->name = strdup(name)))
				return NULL;
			v->seq = m->seq++;
			m->nvals++;
			return v;
		}
		if (!strcmp(v->name, name))
			return v;
	}
	return NULL;
}

void fl_metrics_weigh(struct fl_metrics *m, const char *value, uint64_t w)
{
	struct lvalue *v;

	if (!m->vals)
		return;
	v = lvalue_get(m, value);
	if (v)
		v->weight += w;
}

uint64_t fl_metrics_dropped(const struct fl_metrics *m)
{
	return m->dropped;
}

static size_t join(const struct fl_metric *f, const char *const *values, char *buf, size_t len)
{
	size_t n = 0;

	for (unsigned i = 0; i < f->nlabels; i++) {
		size_t l = strlen(values[i]) + 1;

		if (n + l <= len)
			memcpy(buf + n, values[i], l);
		n += l;
	}
	return n;
}

static int grow(struct fl_metric *f)
{
	size_t cap = f->cap ? f->cap * 2 : 16;
	struct series **tab = calloc(cap, sizeof(*tab));

	if (!tab)
		return -ENOMEM;
	for (size_t i = 0; i < f->cap; i++) {
		struct series *s = f->tab[i];
		size_t j;

		if (!s)
			continue;
		for (j = s->hash % cap; tab[j]; j = (j + 1) % cap)
			;
		tab[j] = s;
	}
	free(f->tab);
	f->tab = tab;
	f->cap = cap;
	return 0;
}

static struct series *find_or_create(struct fl_metric *f, const char *const *values, int *err)
{
	const char *v[FL_METRICS_MAX_LABELS];
	char small[512], *key = small;
	size_t keylen, slot;
	uint64_t h;
	struct series *s;

	memcpy(v, values, f->nlabels * sizeof(*v));
	for (unsigned i = 0; i < f->nlabels; i++)
		if (!v[i])
			v[i] = "";
	for (;;) {
		keylen = join(f, v, small, sizeof(small));
		if (keylen > sizeof(small)) {
			key = malloc(keylen);
			if (!key) {
				*err = -ENOMEM;
				return NULL;
			}
			join(f, v, key, keylen);
		}
		h = fnv1a(key, keylen);
		for (slot = f->cap ? h % f->cap : 0; f->cap && f->tab[slot];
		     slot = (slot + 1) % f->cap) {
			s = f->tab[slot];
			if (s->hash == h && s->keylen == keylen && !memcmp(s->key, key, keylen)) {
				if (key != small)
					free(key);
				return s;
			}
		}
		/* new series: a limited value beyond the table is recorded as `other` */
		if (f->limited < 0 || lvalue_get(f->m, v[f->limited]) ||
		    !strcmp(v[f->limited], FL_METRICS_OTHER))
			break;
		if (key != small)
			free(key);
		key = small;
		v[f->limited] = FL_METRICS_OTHER;
	}
	*err = -ENOSPC;
	if (f->n >= FL_METRICS_MAX_SERIES)
		goto fail;
	*err = -ENOMEM;
	if (2 * (f->n + 1) > f->cap && grow(f))
		goto fail;
	s = calloc(1, sizeof(*s));
	if (!s)
		goto fail;
	s->key = malloc(keylen ? keylen : 1);
	if (f->type == FL_METRIC_HISTOGRAM)
		s->buckets = calloc(f->nbounds + 1, sizeof(*s->buckets));
	if (!s->key || (f->type == FL_METRIC_HISTOGRAM && !s->buckets)) {
		free(s->key);
		free(s);
		goto fail;
	}
	memcpy(s->key, key, keylen);
	s->keylen = keylen;
	s->hash = h;
	for (unsigned i = 0, off = 0; i < f->nlabels; i++) {
		s->vals[i] = s->key + off;
		off += strlen(s->key + off) + 1;
	}
	for (slot = h % f->cap; f->tab[slot]; slot = (slot + 1) % f->cap)
		;
	f->tab[slot] = s;
	f->n++;
	if (key != small)
		free(key);
	return s;
fail:
	if (*err == -ENOSPC)
		f->m->dropped++;
	if (key != small)
		free(key);
	return NULL;
}

unsigned fl_metrics_bucket_of(const double *bounds, unsigned nbounds, double v)
{
	unsigned lo = 0, hi = nbounds;

	/* first i with v <= bounds[i]: Prometheus buckets are upper-inclusive */
	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (v <= bounds[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}

enum op { OP_ADD, OP_SET, OP_OBSERVE };

static int update(struct fl_metric *f, enum op op, double v, const char *const *values)
{
	struct series *s;
	int err = 0;

	if (isnan(v))
		return -EINVAL;
	switch (op) {
	case OP_ADD:
		if (f->type == FL_METRIC_HISTOGRAM || (f->type == FL_METRIC_COUNTER && v < 0))
			return -EINVAL;
		break;
	case OP_SET:
		if (f->type != FL_METRIC_GAUGE)
			return -EINVAL;
		break;
	case OP_OBSERVE:
		if (f->type != FL_METRIC_HISTOGRAM)
			return -EINVAL;
		break;
	}
	s = find_or_create(f, values, &err);
	if (!s)
		return err;
	switch (op) {
	case OP_ADD: s->value += v; break;
	case OP_SET: s->value = v; break;
	case OP_OBSERVE:
		s->buckets[fl_metrics_bucket_of(f->bounds, f->nbounds, v)]++;
		s->sum += v;
		s->count++;
		break;
	}
	return 0;
}

static int updatev(struct fl_metric *f, enum op op, double v, va_list ap)
{
	const char *vals[FL_METRICS_MAX_LABELS];

	for (unsigned i = 0; i < f->nlabels; i++)
		vals[i] = va_arg(ap, const char *);
	return update(f, op, v, vals);
}

#define VARIADIC(fn, op)                                  \
	int fn(struct fl_metric *f, double v, ...)        \
	{                                                 \
		va_list ap;                               \
		int ret;                                  \
                                                          \
		va_start(ap, v);                          \
		ret = updatev(f, op, v, ap);              \
		va_end(ap);                               \
		return ret;                               \
	}

VARIADIC(fl_metric_add, OP_ADD)
VARIADIC(fl_metric_set, OP_SET)
VARIADIC(fl_metric_observe, OP_OBSERVE)

int fl_metric_addv(struct fl_metric *f, double v, const char *const *values)
{
	return update(f, OP_ADD, v, values);
}

int fl_metric_setv(struct fl_metric *f, double v, const char *const *values)
{
	return update(f, OP_SET, v, values);
}

int fl_metric_observev(struct fl_metric *f, double v, const char *const *values)
{
	return update(f, OP_OBSERVE, v, values);
}

void fl_metric_clear(struct fl_metric *f)
{
	for (size_t i = 0; i < f->cap; i++)
		if (f->tab[i]) {
			free(f->tab[i]->key);
			free(f->tab[i]->buckets);
			free(f->tab[i]);
			f->tab[i] = NULL;
		}
	f->n = 0;
}

/* --- rendering --- */

/* Length of the well-formed UTF-8 sequence at s (1..4), 0 if it is not
 * one: overlong forms, surrogates and code points past U+10FFFF included. */
static size_t utf8_len(const unsigned char *s)
{
	unsigned c = s[0];
	size_t n;
	uint32_t cp;

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1f;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0f;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;	/* also stops at the terminating NUL */
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
	    (cp >= 0xd800 && cp <= 0xdfff))
		return 0;
	return n;
}

/*
 * Prometheus rejects a scrape with a label value that is not UTF-8, and a
 * process may name itself anything: a byte that is not part of a
 * well-formed sequence is written as the four characters \xNN.
 */
void fl_metrics_escape_label(FILE *out, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p) {
		size_t n = utf8_len(p);

		if (!n) {
			fprintf(out, "\\\\x%02x", *p++);
		} else if (*p == '\\') {
			fputs("\\\\", out);
			p++;
		} else if (*p == '"') {
			fputs("\\\"", out);
			p++;
		} else if (*p == '\n') {
			fputs("\\n", out);
			p++;
		} else {
			fwrite(p, 1, n, out);
			p += n;
		}
	}
}

void fl_metrics_escape_help(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\')
			fputs("\\\\", out);
		else if (*s == '\n')
			fputs("\\n", out);
		else
			fputc(*s, out);
	}
}

const char *fl_metrics_fmt_double(double v, char *buf, size_t len)
{
	if (isnan(v))
		return "NaN";
	if (isinf(v))
		return v > 0 ? "+Inf" : "-Inf";
	if (v == 0)
		return "0";	/* also -0 */
	if (v == floor(v) && fabs(v) < 1e15) {
		snprintf(buf, len, "%.0f", v);
		return buf;
	}
	/* the shortest form that reads back exactly: le="0.0005", not 0.00050000000000000001 */
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, len, "%.*g", prec, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	return buf;
}

/* One output series: a source series' labels after `other` mapping. */
struct row {
	const char *vals[FL_METRICS_MAX_LABELS];
	const struct series *s;
};

static int row_cmp(const void *a, const void *b, void *arg)
{
	const struct row *x = a, *y = b;
	const struct fl_metric *f = arg;

	for (unsigned i = 0; i < f->nlabels; i++) {
		int c = strcmp(x->vals[i], y->vals[i]);

		if (c)
			return c;
	}
	return 0;
}

static void labels_out(FILE *out, const struct fl_metric *f, const char *const *vals,
		       const char *le)
{
	bool any = f->nlabels || le;

	if (!any)
		return;
	fputc('{', out);
	for (unsigned i = 0; i < f->nlabels; i++) {
		fprintf(out, "%s%s=\"", i ? "," : "", f->labels[i]);
		fl_metrics_escape_label(out, vals[i]);
		fputc('"', out);
	}
	if (le)
		fprintf(out, "%sle=\"%s\"", f->nlabels ? "," : "", le);
	fputc('}', out);
}

static void group_out(FILE *out, const struct fl_metric *f, const struct row *rows, size_t n,
		      uint64_t *acc)
{
	char buf[40];
	double value = 0, sum = 0;
	uint64_t count = 0, cum = 0;

	memset(acc, 0, (f->nbounds + 1) * sizeof(*acc));
	for (size_t i = 0; i < n; i++) {
		value += rows[i].s->value;
		sum += rows[i].s->sum;
		count += rows[i].s->count;
		if (f->type == FL_METRIC_HISTOGRAM)
			for (unsigned b = 0; b <= f->nbounds; b++)
				acc[b] += rows[i].s->buckets[b];
	}
	if (f->type != FL_METRIC_HISTOGRAM) {
		fputs(f->name, out);
		labels_out(out, f, rows[0].vals, NULL);
		fprintf(out, " %s\n", fl_metrics_fmt_double(value, buf, sizeof(buf)));
		return;
	}
	for (unsigned b = 0; b < f->nbounds; b++) {
		char le[40];

		cum += acc[b];
		fprintf(out, "%s_bucket", f->name);
		labels_out(out, f, rows[0].vals, fl_metrics_fmt_double(f->bounds[b], le, sizeof(le)));
		fprintf(out, " %" PRIu64 "\n", cum);
	}
	fprintf(out, "%s_bucket", f->name);
	labels_out(out, f, rows[0].vals, "+Inf");
	fprintf(out, " %" PRIu64 "\n", count);
	fprintf(out, "%s_sum", f->name);
	labels_out(out, f, rows[0].vals, NULL);
	fprintf(out, " %s\n", fl_metrics_fmt_double(sum, buf, sizeof(buf)));
	fprintf(out, "%s_count", f->name);
	labels_out(out, f, rows[0].vals, NULL);
	fprintf(out, " %" PRIu64 "\n", count);
}

static int lvalue_rank_cmp(const void *a, const void *b)
{
	const struct lvalue *x = *(struct lvalue *const *)a, *y = *(struct lvalue *const *)b;

	if (x->weight != y->weight)
		return x->weight > y->weight ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Marks the top-N limited-label values by weight as rendered under their own name. */
static int rank(struct fl_metrics *m)
{
	struct lvalue **order;
	size_t n = 0;

	if (!m->vals)
		return 0;
	order = malloc((m->nvals ? m->nvals : 1) * sizeof(*order));
	if (!order)
		return -ENOMEM;
	for (size_t i = 0; i < VAL_SLOTS; i++)
		if (m->vals[i].name) {
			m->vals[i].own = false;
			if (strcmp(m->vals[i].name, FL_METRICS_OTHER))
				order[n++] = &m->vals[i];
		}
	qsort(order, n, sizeof(*order), lvalue_rank_cmp);
	for (size_t i = 0; i < n && i < m->top_n; i++)
		order[i]->own = true;
	free(order);
	return 0;
}

static bool is_own(struct fl_metrics *m, const char *value)
{
	uint64_t h = fnv1a(value, strlen(value));

	for (size_t i = 0; i < VAL_SLOTS; i++) {
		struct lvalue *v = &m->vals[(h + i) % VAL_SLOTS];

		if (!v->name)
			return false;
		if (!strcmp(v->name, value))
			return v->own;
	}
	return false;
}

static int family_out(FILE *out, struct fl_metrics *m, const struct fl_metric *f)
{
	static const char *const types[] = { "counter", "gauge", "histogram" };
	struct row *rows = malloc((f->n ? f->n : 1) * sizeof(*rows));
	uint64_t acc[FL_METRICS_MAX_BUCKETS + 1];
	size_t n = 0;

	if (!rows)
		return -ENOMEM;
	fprintf(out, "# HELP %s ", f->name);
	fl_metrics_escape_help(out, f->help);
	fprintf(out, "\n# TYPE %s %s\n", f->name, types[f->type]);
	for (size_t i = 0; i < f->cap; i++) {
		struct series *s = f->tab[i];

		if (!s)
			continue;
		rows[n].s = s;
		memcpy(rows[n].vals, s->vals, sizeof(rows[n].vals));
		if (f->limited >= 0 && !is_own(m, s->vals[f->limited]))
			rows[n].vals[f->limited] = FL_METRICS_OTHER;
		n++;
	}
	/* sorted, so equal label sets (values folded into `other`) are adjacent and merge */
	qsort_r(rows, n, sizeof(*rows), row_cmp, (void *)f);
	for (size_t i = 0, j; i < n; i = j) {
		for (j = i + 1; j < n && !row_cmp(&rows[i], &rows[j], (void *)f); j++)
			;
		group_out(out, f, rows + i, j - i, acc);
	}
	free(rows);
	return 0;
}

int fl_metrics_write(struct fl_metrics *m, FILE *out)
{
	int ret = rank(m);

	for (unsigned i = 0; !ret && i < m->nfams; i++)
		ret = family_out(out, m, m->fams[i]);
	if (!ret && (fflush(out) || ferror(out)))
		ret = errno ? -errno : -EIO;
	return ret;
}
