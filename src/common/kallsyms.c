// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "kallsyms.h"

struct sym {
	uint64_t addr;
	char name[128];
};

/*
 * A function ends where the next higher symbol starts. kallsyms is not
 * sorted in every kernel (modules, aliases), so keep, for each wanted
 * function, the smallest address above its start.
 */
int fl_ksyms_resolve(const char *path, struct fl_ksym_range *syms, int n)
{
	FILE *f = fopen(path, "r");
	char line[256];
	bool zero_seen = false;

	if (!f)
		return -errno;
	for (int i = 0; i < n; i++)
		syms[i].start = syms[i].end = 0;
	/* First pass: starts. Second pass: nearest next symbol. */
	for (int pass = 0; pass < 2; pass++) {
		rewind(f);
		while (fgets(line, sizeof(line), f)) {
			struct sym s;
			char type;

			if (sscanf(line, "%" SCNx64 " %c %127s", &s.addr, &type, s.name) != 3)
				continue;
			if (!s.addr)
				zero_seen = true;
			for (int i = 0; i < n; i++) {
				if (pass == 0) {
					if (!syms[i].start && !strcmp(s.name, syms[i].name))
						syms[i].start = s.addr;
				} else if (syms[i].start && s.addr > syms[i].start &&
					   (!syms[i].end || s.addr < syms[i].end)) {
					syms[i].end = s.addr;
				}
			}
		}
		if (pass == 0 && zero_seen) {
			bool all_zero = true;

			for (int i = 0; i < n; i++)
				all_zero &= syms[i].start == 0;
			if (all_zero) {
				fclose(f);
				return -EPERM;
			}
		}
	}
	fclose(f);
	for (int i = 0; i < n; i++)
		if (!syms[i].start || !syms[i].end)
			return -ENOENT;
	return 0;
}
