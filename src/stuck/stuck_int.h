/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * stuck's insides, shared by its parts (not an API): collecting from /proc
 * (stuck.c), the pure parsers (stuck_parse.c), deciding (stuck_verdict.c).
 */
#ifndef FAULTLINE_STUCK_INT_H
#define FAULTLINE_STUCK_INT_H

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include "clock.h"
#include "procscan.h"
#include "stuck.h"

#define MAX_POLL_FDS 4096	/* larger poll sets are not inspected */
#define SHOWN_HOLDERS 4		/* holders spelled out in the evidence */

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif


/* ---- shared between the parts (each defined in one of them) ---- */

const char *fl_stk_field(const char *text, const char *key);

#endif
