// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "rjson.h"

struct rj_parser {
	struct rj_doc *d;
	char *base, *p, *end;
	int rc;
};

__attribute__((format(printf, 3, 4)))
static int fail(struct rj_parser *ps, int rc, const char *fmt, ...)
{
	va_list ap;

	if (ps->rc)
		return ps->rc;	/* the first error is the one that explains */
	va_start(ap, fmt);
	vsnprintf(ps->d->err, sizeof(ps->d->err), fmt, ap);
	va_end(ap);
	ps->d->errpos = (size_t)(ps->p - ps->base);
	ps->rc = rc;
	return rc;
}

static void skip_ws(struct rj_parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' ||
				   *ps->p == '\r'))
		ps->p++;
}

static uint32_t new_node(struct rj_parser *ps, enum rj_type t)
{
	struct rj_doc *d = ps->d;

	if (d->n == d->cap) {
		uint32_t cap = d->cap ? d->cap * 2 : 64;
		struct rj_node *nn;

		if (d->cap >= RJ_MAX_NODES) {
			fail(ps, -E2BIG, "more than %u values on one line", RJ_MAX_NODES);
			return RJ_NONE;
		}
		if (cap > RJ_MAX_NODES)
			cap = RJ_MAX_NODES;
		nn = realloc(d->nodes, cap * sizeof(*nn));
		if (!nn) {
			fail(ps, -ENOMEM, "out of memory");
			return RJ_NONE;
		}
		d->nodes = nn;
		d->cap = cap;
	}
	d->nodes[d->n] = (struct rj_node){ .type = (uint8_t)t, .child = RJ_NONE, .next = RJ_NONE };
	return d->n++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Four hex digits at p (bounds checked by the caller). */
static int hex4(const char *p)
{
	int v = 0;

	for (int i = 0; i < 4; i++) {
		int h = hexval(p[i]);

		if (h < 0)
			return -1;
		v = v << 4 | h;
	}
	return v;
}

static char *put_utf8(char *w, uint32_t cp)
{
	if (cp < 0x80) {
		*w++ = (char)cp;
	} else if (cp < 0x800) {
		*w++ = (char)(0xc0 | cp >> 6);
		*w++ = (char)(0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		*w++ = (char)(0xe0 | cp >> 12);
		*w++ = (char)(0x80 | (cp >> 6 & 0x3f));
		*w++ = (char)(0x80 | (cp & 0x3f));
	} else {
		*w++ = (char)(0xf0 | cp >> 18);
		*w++ = (char)(0x80 | (cp >> 12 & 0x3f));
		*w++ = (char)(0x80 | (cp >> 6 & 0x3f));
		*w++ = (char)(0x80 | (cp & 0x3f));
	}
	return w;
}

/*
 * A string at ps->p (its opening quote), decoded in place: the decoded form
 * is never longer than the escaped one (\uXXXX is 6 bytes for at most 3, a
 * surrogate pair 12 for 4), so the writer never overtakes the reader, and the
 * NUL goes where the closing quote (already read) was or before it.
 */
static int parse_string(struct rj_parser *ps, const char **out, uint32_t *outlen)
{
	char *start = ++ps->p, *w = start;

	for (;;) {
		unsigned char c;
		char *q = ps->p;

		/* the plain run up to the next quote, escape or control character */
		while (q < ps->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20)
			q++;
		if (w != ps->p)
			memmove(w, ps->p, (size_t)(q - ps->p));
		w += q - ps->p;
		ps->p = q;
		if (ps->p >= ps->end)
			return fail(ps, -EINVAL, "string not closed (truncated line?)");
		c = (unsigned char)*ps->p;
		if (c == '"')
			break;
		if (c < 0x20)
			return fail(ps, -EINVAL, "control character 0x%02x inside a string", c);
		if (ps->end - ps->p < 2)
			return fail(ps, -EINVAL, "string not closed (truncated line?)");
		switch (ps->p[1]) {
		case '"': *w++ = '"'; break;
		case '\\': *w++ = '\\'; break;
		case '/': *w++ = '/'; break;
		case 'b': *w++ = '\b'; break;
		case 'f': *w++ = '\f'; break;
		case 'n': *w++ = '\n'; break;
		case 'r': *w++ = '\r'; break;
		case 't': *w++ = '\t'; break;
		case 'u': {
			int hi, lo;
			uint32_t cp;

			if (ps->end - ps->p < 6 || (hi = hex4(ps->p + 2)) < 0)
				return fail(ps, -EINVAL, "\\u not followed by four hex digits");
			cp = (uint32_t)hi;
			if (hi >= 0xdc00 && hi <= 0xdfff)
				return fail(ps, -EINVAL, "lone low surrogate \\u%04x", hi);
			if (hi >= 0xd800 && hi <= 0xdbff) {
				if (ps->end - ps->p < 12 || ps->p[6] != '\\' || ps->p[7] != 'u' ||
				    (lo = hex4(ps->p + 8)) < 0xdc00 || lo > 0xdfff)
					return fail(ps, -EINVAL, "high surrogate \\u%04x without its low half",
						    hi);
				cp = 0x10000 + (((uint32_t)hi - 0xd800) << 10) + ((uint32_t)lo - 0xdc00);
				ps->p += 6;
			}
			w = put_utf8(w, cp);
			ps->p += 6;
			continue;
		}
		default:
			return fail(ps, -EINVAL, "invalid escape '\\%c' in a string",
				    ps->p[1] >= 0x20 && ps->p[1] < 0x7f ? ps->p[1] : '?');
		}
		ps->p += 2;
	}
	ps->p++;	/* the closing quote */
	*w = 0;
	*out = start;
	*outlen = (uint32_t)(w - start);
	return 0;
}

static bool digit(const char *p, const char *end)
{
	return p < end && *p >= '0' && *p <= '9';
}

/* RFC 8259 numbers: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static int parse_number(struct rj_parser *ps, uint32_t node)
{
	char *s = ps->p;

	if (*ps->p == '-')
		ps->p++;
	if (!digit(ps->p, ps->end))
		return fail(ps, -EINVAL, "a number without digits");
	if (*ps->p == '0') {
		ps->p++;
		if (digit(ps->p, ps->end))
			return fail(ps, -EINVAL, "a number with a leading zero");
	} else {
		while (digit(ps->p, ps->end))
			ps->p++;
	}
	if (ps->p < ps->end && *ps->p == '.') {
		ps->p++;
		if (!digit(ps->p, ps->end))
			return fail(ps, -EINVAL, "no digits after a decimal point");
		while (digit(ps->p, ps->end))
			ps->p++;
	}
	if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
		ps->p++;
		if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
			ps->p++;
		if (!digit(ps->p, ps->end))
			return fail(ps, -EINVAL, "no digits in an exponent");
		while (digit(ps->p, ps->end))
			ps->p++;
	}
	if (ps->p - s > 64)
		return fail(ps, -EINVAL, "a number of more than 64 characters");
	ps->d->nodes[node].s = s;
	ps->d->nodes[node].len = (uint32_t)(ps->p - s);
	return 0;
}

static int parse_value(struct rj_parser *ps, int depth, uint32_t *out);

/* An object or an array at ps->p; members get their keys. */
static int parse_container(struct rj_parser *ps, int depth, uint32_t node, bool obj)
{
	char close = obj ? '}' : ']';
	uint32_t last = RJ_NONE;

	ps->p++;
	skip_ws(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		return 0;
	}
	for (;;) {
		const char *key = NULL;
		uint32_t keylen = 0, child;

		skip_ws(ps);
		if (obj) {
			if (ps->p >= ps->end)
				return fail(ps, -EINVAL, "object not closed (truncated line?)");
			if (*ps->p != '"')
				return fail(ps, -EINVAL, "expected a member name in quotes");
			if (parse_string(ps, &key, &keylen))
				return ps->rc;
			skip_ws(ps);
			if (ps->p >= ps->end || *ps->p != ':')
				return fail(ps, -EINVAL, "expected ':' after member name \"%.32s\"", key);
			ps->p++;
		}
		if (parse_value(ps, depth + 1, &child))
			return ps->rc;
		ps->d->nodes[child].key = key;
		ps->d->nodes[child].keylen = keylen;
		if (last == RJ_NONE)
			ps->d->nodes[node].child = child;
		else
			ps->d->nodes[last].next = child;
		last = child;
		ps->d->nodes[node].n++;
		skip_ws(ps);
		if (ps->p >= ps->end)
			return fail(ps, -EINVAL, "%s not closed (truncated line?)",
				    obj ? "object" : "array");
		if (*ps->p == close) {
			ps->p++;
			return 0;
		}
		if (*ps->p != ',')
			return fail(ps, -EINVAL, "expected ',' or '%c'", close);
		ps->p++;
	}
}

static bool literal(struct rj_parser *ps, const char *word)
{
	size_t n = strlen(word);

	if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n))
		return false;
	ps->p += n;
	return true;
}

static int parse_value(struct rj_parser *ps, int depth, uint32_t *out)
{
	uint32_t node;
	char c;

	if (depth > RJ_MAX_DEPTH)
		return fail(ps, -E2BIG, "nested deeper than %d levels", RJ_MAX_DEPTH);
	skip_ws(ps);
	if (ps->p >= ps->end)
		return fail(ps, -EINVAL, "value missing (truncated line?)");
	c = *ps->p;
	switch (c) {
	case '{':
	case '[':
		node = new_node(ps, c == '{' ? RJ_OBJ : RJ_ARR);
		if (node == RJ_NONE)
			return ps->rc;
		*out = node;
		return parse_container(ps, depth, node, c == '{');
	case '"':
		node = new_node(ps, RJ_STR);
		if (node == RJ_NONE)
			return ps->rc;
		*out = node;
		{
			const char *s;
			uint32_t len;

			if (parse_string(ps, &s, &len))
				return ps->rc;
			ps->d->nodes[node].s = s;
			ps->d->nodes[node].len = len;
		}
		return 0;
	case 't':
	case 'f':
	case 'n':
		node = new_node(ps, c == 't' ? RJ_TRUE : c == 'f' ? RJ_FALSE : RJ_NULL);
		if (node == RJ_NONE)
			return ps->rc;
		*out = node;
		if (!literal(ps, c == 't' ? "true" : c == 'f' ? "false" : "null"))
			return fail(ps, -EINVAL, "unknown word (not true, false or null)");
		return 0;
	default:
		if (c != '-' && (c < '0' || c > '9'))
			return fail(ps, -EINVAL, "unexpected character '%c'",
				    c >= 0x20 && c < 0x7f ? c : '?');
		node = new_node(ps, RJ_NUM);
		if (node == RJ_NONE)
			return ps->rc;
		*out = node;
		return parse_number(ps, node);
	}
}

int rj_parse(struct rj_doc *d, char *text, size_t len)
{
	struct rj_parser ps = { .d = d, .base = text, .p = text, .end = text + len };
	uint32_t root;

	d->n = 0;
	d->hint_obj = d->hint = RJ_NONE;
	d->err[0] = 0;
	d->errpos = 0;
	skip_ws(&ps);
	if (ps.p >= ps.end)
		return fail(&ps, -EINVAL, "empty line");
	if (*ps.p != '{')
		return fail(&ps, -EINVAL, "not a JSON object (does not start with '{')");
	if (parse_value(&ps, 1, &root))
		return ps.rc;
	skip_ws(&ps);
	if (ps.p != ps.end)
		return fail(&ps, -EINVAL, "text after the end of the object");
	return 0;
}

void rj_free(struct rj_doc *d)
{
	free(d->nodes);
	d->nodes = NULL;
	d->n = d->cap = 0;
}

uint32_t rj_get(struct rj_doc *d, uint32_t obj, const char *key)
{
	size_t kl = strlen(key);
	uint32_t first, start, c;

	if (obj >= d->n || d->nodes[obj].type != RJ_OBJ)
		return RJ_NONE;
	first = d->nodes[obj].child;
	start = d->hint_obj == obj && d->hint < d->n ? d->hint : first;
	c = start;
	for (bool wrapped = false; c != RJ_NONE || !wrapped;) {
		if (c == RJ_NONE) {
			c = first;
			wrapped = true;
			continue;
		}
		if (wrapped && c == start)
			break;
		if (d->nodes[c].keylen == kl && !memcmp(d->nodes[c].key, key, kl)) {
			d->hint_obj = obj;
			d->hint = d->nodes[c].next;
			return c;
		}
		c = d->nodes[c].next;
	}
	return RJ_NONE;
}

enum rj_type rj_type_of(const struct rj_doc *d, uint32_t i)
{
	return i < d->n ? (enum rj_type)d->nodes[i].type : RJ_NULL;
}

bool rj_null(const struct rj_doc *d, uint32_t i)
{
	return i >= d->n || d->nodes[i].type == RJ_NULL;
}

const char *rj_str(const struct rj_doc *d, uint32_t i)
{
	return i < d->n && d->nodes[i].type == RJ_STR ? d->nodes[i].s : NULL;
}

/* Digits only (the grammar was checked): the magnitude, or -ERANGE. */
static int magnitude(const char *s, uint32_t len, uint64_t *v)
{
	uint64_t x = 0;

	for (uint32_t k = 0; k < len; k++) {
		unsigned dg = (unsigned)(s[k] - '0');

		if (dg > 9)
			return -EINVAL;	/* a fraction or an exponent: not an integer */
		if (x > (UINT64_MAX - dg) / 10)
			return -ERANGE;
		x = x * 10 + dg;
	}
	*v = x;
	return 0;
}

int rj_u64(const struct rj_doc *d, uint32_t i, uint64_t *v)
{
	if (i >= d->n || d->nodes[i].type != RJ_NUM || d->nodes[i].s[0] == '-')
		return -EINVAL;
	return magnitude(d->nodes[i].s, d->nodes[i].len, v);
}

int rj_i64(const struct rj_doc *d, uint32_t i, int64_t *v)
{
	bool neg;
	uint64_t m;
	int rc;

	if (i >= d->n || d->nodes[i].type != RJ_NUM)
		return -EINVAL;
	neg = d->nodes[i].s[0] == '-';
	rc = magnitude(d->nodes[i].s + neg, d->nodes[i].len - neg, &m);
	if (rc)
		return rc;
	if (m > (uint64_t)INT64_MAX + neg)
		return -ERANGE;
	*v = neg ? (int64_t)(0 - m) : (int64_t)m;
	return 0;
}
