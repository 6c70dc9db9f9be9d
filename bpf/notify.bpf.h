/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Notify: a handler's read() of a userfaultfd returns the fault messages.
 * A fragment of faultline.bpf.c (one program, one skeleton): included
 * there in lifecycle order, not on its own.
 */

static __always_inline int on_read_enter(__u64 fd, __u64 buf, __u64 count_)
{
	__u64 args[3] = { fd, buf, count_ };
	__u64 ctx;
	struct fl_sc *sc;

	if (!current_tracked()) {
		/* A handler handed a userfaultfd (SCM_RIGHTS, pidfd_getfd)
		 * reading it for the first time: a holder from this read on.
		 * Cheap for everyone else only once a uffd's f_op is known. */
		if (!uffd_fops || !may_track_new() || !(ctx = uffd_ctx_of(fd)))
			return 0;
		track_current(FL_TRACK_HOLDER);
	} else {
		ctx = uffd_ctx_of(fd);
		if (!ctx)
			return 0;
	}
	sc = sc_save(SC_READ, args, 3);
	if (sc) {
		sc->ctx = ctx;
		sc->fd = fd;
	}
	return 0;
}

static __always_inline int on_read_exit(long ret)
{
	struct fl_sc sc, *slot;
	struct uffd_msg msg;
	__u64 mm;
	long n;

	if (!current_tracked() || !(slot = sc_take(SC_READ, &sc)))
		return 0;
	slot->handler = 1;
	if (ret <= 0)
		return 0;
	n = ret / FL_UFFD_MSG_SIZE;
	if (n > FL_MAX_MSGS_PER_READ) {
		__u32 i = FL_CNT_MSGS_TRUNC;
		__u64 *v = bpf_map_lookup_elem(&fl_counters, &i);

		if (v)
			*v += n - FL_MAX_MSGS_PER_READ;
	}
	mm = ctx_mm(sc.ctx);
	for (int i = 0; i < FL_MAX_MSGS_PER_READ; i++) {
		struct fl_event *e;

		if (i >= n)
			break;
		if (bpf_probe_read_user(&msg, sizeof(msg),
					(void *)(sc.args[1] + i * FL_UFFD_MSG_SIZE)))
			break;
		e = ev_current(FL_EV_NOTIFY);
		if (!e)
			break;
		e->notify.ctx = sc.ctx;
		e->notify.mm = mm;
		e->notify.fd = sc.fd;
		e->notify.event = msg.event;
		e->notify.idx = i;
		switch (msg.event) {
		case 0x12: { /* UFFD_EVENT_PAGEFAULT */
			__u32 ptid = msg.arg.pagefault.feat.ptid;
			struct fl_thread *t = ptid ? thread_of(ptid) : NULL;

			e->notify.addr = msg.arg.pagefault.address;
			e->notify.flags = msg.arg.pagefault.flags;
			e->notify.ptid = ptid;
			if (t && t->pf.ts && (t->pf.addr >> 12) == (e->notify.addr >> 12))
				e->notify.pf_ts = t->pf.ts;
			break;
		}
		case 0x13: /* FORK */
			e->notify.arg2 = msg.arg.fork.ufd;
			break;
		case 0x14: /* REMAP */
			e->notify.addr = msg.arg.remap.from;
			e->notify.arg2 = msg.arg.remap.to;
			e->notify.arg3 = msg.arg.remap.len;
			break;
		case 0x15: /* REMOVE */
		case 0x16: /* UNMAP */
			e->notify.addr = msg.arg.remove.start;
			e->notify.arg2 = msg.arg.remove.end;
			break;
		}
		ev_submit(e);
	}
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_read")
int tp_read_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_read_enter(ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_read")
int tp_read_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_read_exit(ctx->ret);
}
