/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The page size of guest memory, as the kernel has it: what the handover,
 * the router and the source move, request and place a page of.
 */
#ifndef FAULTLINE_REGIONS_H
#define FAULTLINE_REGIONS_H

#include <stddef.h>
#include <stdint.h>
#include "faultline/faultline.h"

/* Page size of the mapping at addr in process pid (0: this one): its smaps
 * KernelPageSize, so hugetlbfs / MAP_HUGETLB memory says its huge page
 * size; 0 where the address is not mapped or smaps can't be read. */
long fl_mapping_page_size(int pid, uint64_t addr);

/* The page size of a file's pages: a hugetlbfs file's huge page, else the
 * system's; -errno. */
long fl_file_page_size(int fd);

/* The regions' page size: the system's, or the huge page size of their
 * hugetlbfs memfds (or, without a memfd, of the mapping in process pid, 0:
 * this one); -EINVAL (with why in err) when they differ, -errno. */
long fl_regions_page_size(const struct fl_region *rg, unsigned n, int pid, char *err,
			  size_t errlen);

#endif
