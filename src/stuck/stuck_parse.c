// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline stuck: the pure parsers of /proc text (fdinfo, syscall lines,
 * VmFlags, sched, stacks), durations and names; unit-tested on fixtures.
 */
#include "stuck_int.h"

/* ---- pure parsers ----------------------------------------------------------- */

const char *fl_verdict_name(enum fl_verdict v)
{
	static const char *const names[FL_V_NR] = {
		[FL_V_NOT_READ] = "not_read", [FL_V_NOT_RESOLVED] = "not_resolved",
		[FL_V_PLACEMENT_FAILED] = "placement_failed",
		[FL_V_RANGE_UNMAPPED] = "range_unmapped", [FL_V_HANDLER_GONE] = "handler_gone",
		[FL_V_HANDLER_STALLED] = "handler_stalled",
	};

	return (unsigned)v < FL_V_NR ? names[v] : "?";
}

const char *fl_fault_path_name(enum fl_fault_path p)
{
	switch (p) {
	case FL_PATH_USER: return "user";
	case FL_PATH_KVM: return "kvm";
	case FL_PATH_GUP: return "gup";
	case FL_PATH_KERNEL: return "kernel";
	default: return "unknown";
	}
}

const char *fl_attrib_name(enum fl_attrib a)
{
	switch (a) {
	case FL_ATTR_HELD: return "held";
	case FL_ATTR_INFERRED: return "inferred";
	case FL_ATTR_AMBIGUOUS: return "ambiguous";
	default: return "none";
	}
}

const char *fl_uffd_modes_str(unsigned modes, char *buf, size_t len)
{
	static const struct { unsigned bit; const char *name; } m[] = {
		{ FL_UM_MISSING, "missing" }, { FL_UM_WP, "wp" }, { FL_UM_MINOR, "minor" },
	};
	size_t off = 0;

	buf[0] = 0;
	for (unsigned i = 0; i < sizeof(m) / sizeof(m[0]); i++)
		if (modes & m[i].bit) {
			int n = snprintf(buf + off, len - off, "%s%s", off ? "+" : "", m[i].name);

			if (n < 0 || (size_t)n >= len - off)
				break;
			off += (size_t)n;
		}
	return buf;
}

int fl_parse_duration(const char *s, uint64_t *ns)
{
	static const struct { const char *unit; uint64_t ns; } units[] = {
		{ "ns", 1 }, { "us", 1000 }, { "ms", 1000000 }, { "s", 1000000000ull },
		{ "m", 60000000000ull }, { "h", 3600000000000ull },
	};
	uint64_t whole = 0, frac = 0, scale = 1, mult = 0, v;
	const char *p = s;
	int ndig = 0;

	if (!s)
		return -EINVAL;
	/* digits only: no sign, blanks, exponents, hex, "inf" (what strtod would take) */
	for (; isdigit((unsigned char)*p); p++, ndig++)
		if (__builtin_mul_overflow(whole, 10, &whole) ||
		    __builtin_add_overflow(whole, (uint64_t)(*p - '0'), &whole))
			return -ERANGE;
	if (!ndig)
		return -EINVAL;
	if (*p == '.') {
		int nfrac = 0;

		for (p++; isdigit((unsigned char)*p); p++, nfrac++)
			if (nfrac < 9) {	/* below a nanosecond of an hour's unit: dropped */
				frac = frac * 10 + (uint64_t)(*p - '0');
				scale *= 10;
			}
		if (!nfrac)
			return -EINVAL;
	}
	if (!*p) {
		/* a bare number needs a unit, except zero, which is zero in any unit */
		if (whole || frac)
			return -EINVAL;
		*ns = 0;
		return 0;
	}
	for (unsigned i = 0; i < sizeof(units) / sizeof(units[0]); i++)
		if (!strcmp(p, units[i].unit))
			mult = units[i].ns;
	if (!mult)
		return -EINVAL;
	if (__builtin_mul_overflow(whole, mult, &v) ||
	    __builtin_add_overflow(v, frac * mult / scale, &v) || v > (uint64_t)INT64_MAX)
		return -ERANGE;
	*ns = v;
	return 0;
}

/* The value after "key:" (tabs/spaces skipped) on its own line of text, or NULL. */
const char *fl_stk_field(const char *text, const char *key)
{
	size_t klen = strlen(key);

	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL)
		if (!strncmp(l, key, klen) && l[klen] == ':') {
			l += klen + 1;
			while (*l == ' ' || *l == '\t')
				l++;
			return l;
		}
	return NULL;
}

int fl_parse_uffd_fdinfo(const char *text, struct fl_uffd_fdinfo *out)
{
	const char *pending = fl_stk_field(text, "pending"), *total = fl_stk_field(text, "total");
	const char *ino = fl_stk_field(text, "ino"), *api = fl_stk_field(text, "API");
	unsigned long long api_v, feat, ioctls;

	memset(out, 0, sizeof(*out));
	if (!pending || !total)
		return -EINVAL;	/* not a userfaultfd's fdinfo */
	out->pending = strtol(pending, NULL, 10);
	out->total = strtol(total, NULL, 10);
	if (ino)
		out->ino = strtoull(ino, NULL, 10);
	/* "API:\t%Lx:%x:%Lx": the API version, ctx->features, the supported ioctls */
	if (api && sscanf(api, "%llx:%llx:%llx", &api_v, &feat, &ioctls) == 3) {
		out->features = feat;
		out->ioctls = ioctls;
	}
	return 0;
}

int fl_parse_syscall_line(const char *text, struct fl_syscall_line *out)
{
	unsigned long long v[8];
	long nr;
	int n;

	memset(out, 0, sizeof(*out));
	if (!strncmp(text, "running", 7)) {
		out->running = true;
		return 0;
	}
	n = sscanf(text, "%ld %llx %llx %llx %llx %llx %llx %llx %llx", &nr, &v[0], &v[1], &v[2],
		   &v[3], &v[4], &v[5], &v[6], &v[7]);
	if (n == 3 && nr == -1) {
		/* not in a syscall: a user page fault or exception; "-1 sp pc" */
		out->nr = -1;
		out->sp = v[0];
		out->pc = v[1];
		return 0;
	}
	if (n != 9 || nr < 0)
		return -EINVAL;
	out->in_syscall = true;
	out->nr = nr;
	for (int i = 0; i < 6; i++)
		out->args[i] = v[i];
	out->sp = v[6];
	out->pc = v[7];
	return 0;
}

unsigned fl_parse_vmflags_uffd(const char *line)
{
	unsigned modes = 0;
	const char *p;

	if (strncmp(line, "VmFlags:", 8))
		return 0;
	for (p = line + 8; *p;) {
		while (isspace((unsigned char)*p))
			p++;
		if (p[0] && p[1] && (!p[2] || isspace((unsigned char)p[2]))) {
			if (!strncmp(p, "um", 2))
				modes |= FL_UM_MISSING;
			else if (!strncmp(p, "uw", 2))
				modes |= FL_UM_WP;
			else if (!strncmp(p, "ui", 2))
				modes |= FL_UM_MINOR;
		}
		while (*p && !isspace((unsigned char)*p))
			p++;
	}
	return modes;
}

int fl_parse_sched_exec_start(const char *text, uint64_t *ns)
{
	const char *l = strstr(text, "se.exec_start");
	unsigned long long ms = 0, frac = 0;
	int nfrac = 0;

	if (!l || !(l = strchr(l, ':')))
		return -EINVAL;
	/* "%Ld.%06ld" milliseconds: integer math, no float rounding */
	for (l++; *l == ' ' || *l == '\t'; l++)
		;
	if (!isdigit((unsigned char)*l))
		return -EINVAL;
	for (; isdigit((unsigned char)*l); l++)
		ms = ms * 10 + (unsigned long long)(*l - '0');
	if (*l == '.')
		for (l++; isdigit((unsigned char)*l) && nfrac < 6; l++, nfrac++)
			frac = frac * 10 + (unsigned long long)(*l - '0');
	for (; nfrac < 6; nfrac++)
		frac *= 10;
	*ns = ms * 1000000ull + frac;
	return 0;
}

enum fl_fault_path fl_parse_stack_path(const char *text)
{
	const char *last = NULL;
	bool pf = false;

	if (!strstr(text, "handle_userfault"))
		return FL_PATH_UNKNOWN;
	if (strstr(text, "kvm_") || strstr(text, "vcpu_"))
		return FL_PATH_KVM;	/* a vCPU's access to guest memory (KVM's GUP) */
	if (strstr(text, "get_user_pages") || strstr(text, "faultin_page"))
		return FL_PATH_GUP;
	/* lines are "[<0>] symbol+off/size", innermost first */
	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		const char *sym = strstr(l, "] ");
		const char *eol = strchr(l, '\n');

		if (!sym || (eol && sym > eol))
			continue;
		sym += 2;
		last = sym;
		if (!strncmp(sym, "exc_page_fault", 14))
			pf = true;
	}
	/* a user access faults straight from user mode: the exception entry is the outermost frame */
	if (last && !strncmp(last, "asm_exc_page_fault", 18))
		return FL_PATH_USER;
	return pf ? FL_PATH_KERNEL : FL_PATH_UNKNOWN;
}

const char *fl_syscall_name(long nr)
{
	static const struct { long nr; const char *name; } t[] = {
		{ SYS_read, "read" }, { SYS_readv, "readv" }, { SYS_ppoll, "ppoll" },
		{ SYS_pselect6, "pselect6" }, { SYS_epoll_pwait, "epoll_pwait" },
		{ SYS_ioctl, "ioctl" }, { SYS_futex, "futex" }, { SYS_nanosleep, "nanosleep" },
		{ SYS_clock_nanosleep, "clock_nanosleep" }, { SYS_rt_sigtimedwait, "rt_sigtimedwait" },
		{ SYS_rt_sigsuspend, "rt_sigsuspend" }, { SYS_recvfrom, "recvfrom" },
		{ SYS_recvmsg, "recvmsg" }, { SYS_accept4, "accept4" }, { SYS_wait4, "wait4" },
		{ SYS_waitid, "waitid" }, { SYS_write, "write" }, { SYS_io_uring_enter, "io_uring_enter" },
#ifdef SYS_poll
		{ SYS_poll, "poll" },
#endif
#ifdef SYS_select
		{ SYS_select, "select" },
#endif
#ifdef SYS_epoll_wait
		{ SYS_epoll_wait, "epoll_wait" },
#endif
#ifdef SYS_epoll_pwait2
		{ SYS_epoll_pwait2, "epoll_pwait2" },
#endif
#ifdef SYS_pause
		{ SYS_pause, "pause" },
#endif
#ifdef SYS_accept
		{ SYS_accept, "accept" },
#endif
	};

	for (unsigned i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (t[i].nr == nr)
			return t[i].name;
	return NULL;
}
