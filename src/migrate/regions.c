// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * What the kernel says about guest memory regions: their page size
 * (regions.h).  Shared by the VMM side of the handover, the router and the
 * source, which must all agree on it.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>
#include "errmsg.h"
#include "regions.h"

#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

/*
 * The page size of the mapping at addr in process pid (0: this one), from
 * /proc/PID/smaps' KernelPageSize (MAP_HUGETLB memory has no memfd to ask).
 * 0 where the address is not mapped or smaps can't be read.
 */
long fl_mapping_page_size(int pid, uint64_t addr)
{
	char path[64], line[256];
	bool in = false;
	long kb = 0;
	FILE *f;

	if (pid > 0)
		snprintf(path, sizeof(path), "/proc/%d/smaps", pid);
	else
		snprintf(path, sizeof(path), "/proc/self/smaps");
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long lo, hi;

		/* a VMA header: "lo-hi perms ..."; the fields follow it */
		if (sscanf(line, "%llx-%llx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = addr >= lo && addr < hi;
			continue;
		}
		if (in && sscanf(line, "KernelPageSize: %ld kB", &kb) == 1)
			break;
	}
	fclose(f);
	return kb > 0 ? kb * 1024 : 0;
}

long fl_file_page_size(int fd)
{
	struct statfs sfs;
	struct stat st;

	if (fstatfs(fd, &sfs) < 0 || fstat(fd, &st) < 0)
		return -errno;
	/* hugetlbfs gives its huge page size as the block size */
	return (unsigned long)sfs.f_type == HUGETLBFS_MAGIC ? (long)st.st_blksize
							     : sysconf(_SC_PAGESIZE);
}

/*
 * Page size of the VMM's regions: the system's, or the huge page size when
 * the memfds live on hugetlbfs (st_blksize there is the huge page size); a
 * region without a memfd (MAP_HUGETLB, anonymous memory) is asked of the
 * mapping itself in process pid (0: this one).  Every region must agree:
 * one router, one page size.
 */
long fl_regions_page_size(const struct fl_region *rg, unsigned n, int pid, char *err,
			     size_t errlen)
{
	long sys = sysconf(_SC_PAGESIZE), ps = 0;

	for (unsigned i = 0; i < n; i++) {
		long p = sys;
		if (rg[i].memfd >= 0) {
			p = fl_file_page_size(rg[i].memfd);
			if (p < 0) {
				fl_errmsg(err, errlen, "region %u: memfd %d: %s", i, rg[i].memfd,
					  strerror((int)-p));
				return p;
			}
		} else {
			long m = fl_mapping_page_size(pid, (uint64_t)(uintptr_t)rg[i].base);

			if (m > sys)
				p = m;
		}
		if (ps && p != ps) {
			fl_errmsg(err, errlen, "regions mix page sizes (%ld and %ld bytes); hand over "
			       "each page size through its own router", ps, p);
			return -EINVAL;
		}
		ps = p;
	}
	return ps ? ps : sys;
}
