/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The error convention, written once: a function that fails returns a
 * negative errno and, where it takes (err, errlen), leaves there one
 * sentence saying what failed and why; whoever is at the edge (a command,
 * a VMM embedding libfaultline) reports it once.  Header-only, so
 * libfaultline needs nothing else.
 */
#ifndef FAULTLINE_ERRMSG_H
#define FAULTLINE_ERRMSG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

static inline void fl_verrmsg(char *err, size_t errlen, const char *fmt, va_list ap)
{
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
}

/* The sentence, into err (nothing when err is NULL or errlen 0). */
__attribute__((format(printf, 3, 4)))
static inline void fl_errmsg(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fl_verrmsg(err, errlen, fmt, ap);
	va_end(ap);
}

/* The sentence, and rc back: `return fl_err(err, errlen, -EINVAL, "...")`. */
__attribute__((format(printf, 4, 5)))
static inline int fl_err(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fl_verrmsg(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

#endif
