/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux 6.7), missing from
 * Debian 12's linux-libc-dev (6.1); the running kernel (6.18) has it.  Filled
 * in only where the installed <linux/fs.h> lacks it.
 */
#ifndef FAULTLINE_PAGEMAP_SCAN_H
#define FAULTLINE_PAGEMAP_SCAN_H

#include <linux/fs.h>
#include <linux/ioctl.h>
#include <linux/types.h>

#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)

struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};

#define PM_SCAN_WP_MATCHING (1 << 0)	/* write-protect the pages matched */
#define PM_SCAN_CHECK_WPASYNC (1 << 1)	/* fail (EPERM) on a VMA without async WP */

struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

#endif /* FAULTLINE_PAGEMAP_SCAN_H */
