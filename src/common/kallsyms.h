/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* Text ranges of kernel functions, for recognising them on a kernel stack. */
#ifndef FAULTLINE_KALLSYMS_H
#define FAULTLINE_KALLSYMS_H

#include <stdint.h>

struct fl_ksym_range {
	const char *name;	/* in: function to find */
	uint64_t start, end;	/* out: [start, end), end = next symbol */
};

/*
 * Fills every range in syms from path (normally /proc/kallsyms). Returns 0,
 * -ENOENT if a symbol is missing, -EPERM if addresses are hidden
 * (kptr_restrict), or another -errno from opening the file.
 */
int fl_ksyms_resolve(const char *path, struct fl_ksym_range *syms, int n);

#endif
