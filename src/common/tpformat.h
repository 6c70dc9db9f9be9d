/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Value names taken from the running kernel: the __print_symbolic() tables
 * in a tracepoint's tracefs format file, so names never drift from the
 * kernel that produced the numbers (KVM exit reasons, memory-failure types).
 */
#ifndef FAULTLINE_TPFORMAT_H
#define FAULTLINE_TPFORMAT_H

#include <stdint.h>

struct fl_sym {
	int64_t val;
	char name[48];
};

struct fl_symtab {
	int n;
	struct fl_sym *e;
};

/*
 * Reads the which-th (0-based) __print_symbolic() table of category:event.
 * Returns the number of entries, or -errno (-ENOENT: no such tracepoint or table).
 */
int fl_tp_symbols(const char *category, const char *event, int which, struct fl_symtab *out);
/* Parses the tables out of a print-fmt string (exposed for tests). */
int fl_parse_symbolic(const char *fmt, int which, struct fl_symtab *out);
const char *fl_sym_name(const struct fl_symtab *t, int64_t val);
void fl_symtab_free(struct fl_symtab *t);

#endif
