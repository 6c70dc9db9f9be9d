// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "tpformat.h"

static const char *skip_ws(const char *p)
{
	while (*p && isspace((unsigned char)*p))
		p++;
	return p;
}

/* "0x040 + 13", "-1", "42": sums of integer literals, as the kernel's tables use. */
static const char *parse_expr(const char *p, int64_t *out)
{
	int64_t v = 0;

	for (;;) {
		char *end;
		long long x;

		p = skip_ws(p);
		x = strtoll(p, &end, 0);
		if (end == p)
			return NULL;
		v += x;
		p = skip_ws(end);
		if (*p != '+')
			break;
		p++;
	}
	*out = v;
	return p;
}

/* One or more adjacent string literals ("KVM_EXIT_" "IO"), concatenated. */
static const char *parse_strings(const char *p, char *out, size_t len)
{
	size_t n = 0;

	p = skip_ws(p);
	if (*p != '"')
		return NULL;
	while (*p == '"') {
		for (p++; *p && *p != '"'; p++)
			if (n + 1 < len)
				out[n++] = *p;
		if (*p != '"')
			return NULL;
		p = skip_ws(p + 1);
	}
	out[n] = 0;
	return p;
}

int fl_parse_symbolic(const char *fmt, int which, struct fl_symtab *out)
{
	const char *p = fmt;
	int cap = 0;

	out->n = 0;
	out->e = NULL;
	for (int i = 0; i <= which; i++) {
		p = strstr(p, "__print_symbolic(");
		if (!p)
			return -ENOENT;
		p += strlen("__print_symbolic(");
	}
	/* skip the value expression: the table starts at the first '{' */
	p = strchr(p, '{');
	while (p && *p == '{') {
		struct fl_sym s;

		p = parse_expr(p + 1, &s.val);
		if (!p || *p != ',')
			break;
		p = parse_strings(p + 1, s.name, sizeof(s.name));
		if (!p || *p != '}')
			break;
		if (out->n == cap) {
			struct fl_sym *e = realloc(out->e, (cap = cap ? cap * 2 : 32) * sizeof(*e));

			if (!e) {
				fl_symtab_free(out);
				return -ENOMEM;
			}
			out->e = e;
		}
		out->e[out->n++] = s;
		p = skip_ws(p + 1);
		if (*p != ',')
			break;
		p = skip_ws(p + 1);
	}
	return out->n ? out->n : -ENOENT;
}

int fl_tp_symbols(const char *category, const char *event, int which, struct fl_symtab *out)
{
	static const char *const roots[] = { "/sys/kernel/tracing", "/sys/kernel/debug/tracing" };
	char path[256], *line = NULL;
	size_t cap = 0;
	int ret = -ENOENT;

	out->n = 0;
	out->e = NULL;
	for (unsigned r = 0; r < 2 && ret == -ENOENT; r++) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/events/%s/%s/format", roots[r], category, event);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (getline(&line, &cap, f) > 0)
			if (!strncmp(line, "print fmt:", 10)) {
				ret = fl_parse_symbolic(line, which, out);
				break;
			}
		fclose(f);
	}
	free(line);
	return ret;
}

const char *fl_sym_name(const struct fl_symtab *t, int64_t val)
{
	/* tables may spell a u32 code as -1: compare in 32 bits too */
	for (int i = 0; i < t->n; i++)
		if (t->e[i].val == val || (uint32_t)t->e[i].val == (uint32_t)val)
			return t->e[i].name;
	return NULL;
}

void fl_symtab_free(struct fl_symtab *t)
{
	free(t->e);
	t->e = NULL;
	t->n = 0;
}
