/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Resolve and register: userfaultfd ioctls (COPY, ZEROPAGE, CONTINUE,
 * POISON, WAKE, REGISTER...) and the creation of userfaultfds.
 * A fragment of faultline.bpf.c (one program, one skeleton): included
 * there in lifecycle order, not on its own.
 */

static __always_inline int on_ioctl_enter(__u64 fd, __u64 cmd, __u64 arg)
{
	__u64 args[3] = { fd, cmd, arg };
	__u64 ctx = 0;
	struct fl_sc *sc;

	if (IOC_TYPE(cmd) == KVMIO) {
		if (!current_tracked()) {
			/* With -c, a VMM of that name holding no userfaultfd (QEMU
			 * without postcopy) is tracked from its first KVM ioctl,
			 * long before its first exit, not when a /proc scan finds
			 * it. Default scope stays with userfaultfd users. */
			if (!track_comm[0] || !may_track_new())
				return 0;
			track_current(FL_TRACK_USER);
		}
		return on_kvm_ioctl(fd, cmd, arg);
	}
	if (IOC_TYPE(cmd) != 0xaa)
		return 0;
	if (cmd != USERFAULTFD_IOC_NEW_CMD) {
		ctx = uffd_ctx_of(fd);
		if (!ctx)
			return 0;
	}
	if (!current_tracked()) {
		if (!may_track_new())
			return 0;
		/* A UFFDIO_* on a userfaultfd this process was handed (SCM_RIGHTS,
		 * pidfd_getfd: a migration router) makes it a holder from now on;
		 * /dev/userfaultfd: it is about to hold one. */
		if (cmd != USERFAULTFD_IOC_NEW_CMD)
			track_current(FL_TRACK_HOLDER);
	}
	sc = sc_save(SC_IOCTL, args, 3);
	if (!sc)
		return 0;
	sc->ctx = ctx;
	sc->fd = fd;
	if (ctx) {
		sc->mm = ctx_mm(ctx);
		bpf_probe_read_user(sc->words, ioc_arg_size(cmd), (void *)arg);
	}
	return 0;
}


static __always_inline void emit_uffd_new(long ret, __u32 flags, __u32 via_dev)
{
	struct fl_event *e;

	if (ret >= 0)
		track_current(FL_TRACK_HOLDER);
	e = ev_current(FL_EV_UFFD_NEW);
	if (!e)
		return;
	e->uffd_new.ret = ret;
	e->uffd_new.flags = flags;
	e->uffd_new.via_dev = via_dev;
	if (ret >= 0)
		e->uffd_new.ctx = uffd_ctx_of(ret);
	ev_submit(e);
}

static __always_inline void remember_poison(__u64 mm, __u64 start, __u64 len)
{
	struct fl_page_key k = { .mm = mm };
	__u8 one = 1;

	for (int i = 0; i < FL_POISON_PAGES_MAX; i++) {
		if ((__u64)i * 4096 >= len)
			return;
		k.page = (start >> 12) + i;
		bpf_map_update_elem(&fl_poison_hva, &k, &one, BPF_ANY);
	}
	if (len > (__u64)FL_POISON_PAGES_MAX * 4096)
		count(FL_CNT_POISON_TRUNC);
}

static __always_inline int on_ioctl_exit(long ret)
{
	struct fl_sc sc;
	__u64 w[5] = {};
	struct fl_event *e;
	bool whole;
	__u32 op;

	if (!sc_take(SC_IOCTL, &sc))
		return 0;
	if (sc.args[1] == USERFAULTFD_IOC_NEW_CMD) {
		emit_uffd_new(ret, 0, 1);
		return 0;
	}
	op = IOC_NR(sc.args[1]);
	/*
	 * Results (copy, mapped, ...) are written back into the argument. A
	 * placement that returned 0 placed its whole range (anything less is
	 * -EAGAIN), so the count is its length: no second copy from user
	 * memory (~160 ns) on every resolution.
	 */
	whole = ret == 0 && (op == FL_OP_COPY || op == FL_OP_MOVE || op == FL_OP_ZEROPAGE ||
			     op == FL_OP_CONTINUE || op == FL_OP_POISON);
	if (whole) {
		__builtin_memcpy(w, sc.words, sizeof(w));
		if (op == FL_OP_COPY || op == FL_OP_MOVE)
			w[4] = sc.words[2];	/* dst, src, len, mode, result */
		else
			w[3] = sc.words[1];	/* start, len, mode, result */
	} else if (bpf_probe_read_user(w, ioc_arg_size(sc.args[1]), (void *)sc.args[2])) {
		__builtin_memcpy(w, sc.words, sizeof(w));
	}
	e = ev_current(FL_EV_IOCTL);
	if (!e)
		return 0;
	e->ioctl.ctx = sc.ctx;
	e->ioctl.mm = sc.mm;
	e->ioctl.fd = sc.fd;
	e->ioctl.op = op;
	e->ioctl.ret = ret;
	e->ioctl.enter_ts = sc.ts;
	switch (op) {
	case FL_OP_COPY:
	case FL_OP_MOVE:
		e->ioctl.start = sc.words[0];
		e->ioctl.aux = sc.words[1];
		e->ioctl.len = sc.words[2];
		e->ioctl.mode = sc.words[3];
		e->ioctl.result = w[4];
		break;
	case FL_OP_API:
		e->ioctl.start = sc.words[0];
		e->ioctl.aux = w[1];	/* features granted */
		break;
	case FL_OP_REGISTER:
		e->ioctl.start = sc.words[0];
		e->ioctl.len = sc.words[1];
		e->ioctl.mode = sc.words[2];
		e->ioctl.aux = w[3];	/* ioctls available on the range */
		break;
	default:	/* range, mode, result */
		e->ioctl.start = sc.words[0];
		e->ioctl.len = sc.words[1];
		e->ioctl.mode = sc.words[2];
		e->ioctl.result = w[3];
		break;
	}
	ev_submit(e);
	if (op == FL_OP_POISON)
		remember_poison(sc.mm, sc.words[0],
				ret == 0 ? sc.words[1] : ((__s64)w[3] > 0 ? w[3] : 0));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_ioctl")
int tp_ioctl_enter(struct trace_event_raw_sys_enter *ctx)
{
	return on_ioctl_enter(ctx->args[0], ctx->args[1], ctx->args[2]);
}

SEC("tracepoint/syscalls/sys_exit_ioctl")
int tp_ioctl_exit(struct trace_event_raw_sys_exit *ctx)
{
	return on_ioctl_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_userfaultfd")
int tp_userfaultfd_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 a[1] = { ctx->args[0] };

	if (!current_tracked() && !may_track_new())
		return 0;
	sc_save(SC_USERFAULTFD, a, 1);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_userfaultfd")
int tp_userfaultfd_exit(struct trace_event_raw_sys_exit *ctx)
{
	struct fl_sc sc;

	if (!sc_take(SC_USERFAULTFD, &sc))
		return 0;
	emit_uffd_new(ctx->ret, sc.args[0], 0);
	return 0;
}
