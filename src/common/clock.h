/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * faultline's one time base: CLOCK_MONOTONIC nanoseconds, what
 * bpf_ktime_get_ns() returns, so every record, event and log line can be
 * lined up with the kernel's and the user's own.  Header-only: libfaultline
 * (router, handover, wire) uses it without the rest of src/common.
 */
#ifndef FAULTLINE_CLOCK_H
#define FAULTLINE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t fl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline int64_t fl_now_ms(void)
{
	return (int64_t)(fl_now_ns() / 1000000);
}

#endif
