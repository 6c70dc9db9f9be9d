/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Poison and signals: SIGBUS/SIGSEGV delivered to tracked threads,
 * memory-failure events and machine-check records.
 * A fragment of faultline.bpf.c (one program, one skeleton): included
 * there in lifecycle order, not on its own.
 */

#define SIGBUS_ 7
#define SIGSEGV_ 11

static __always_inline int on_signal_deliver(int sig, struct kernel_siginfo *info)
{
	struct fl_event *e;

	if ((sig != SIGBUS_ && sig != SIGSEGV_) || !current_tracked())
		return 0;
	e = ev_current(FL_EV_SIGNAL);
	if (!e)
		return 0;
	e->signal.signo = sig;
	e->signal.code = BPF_CORE_READ(info, si_code);
	e->signal.err = BPF_CORE_READ(info, si_errno);
	e->signal.addr = (__u64)BPF_CORE_READ(info, _sifields._sigfault._addr);
	ev_submit(e);
	return 0;
}

SEC("tp_btf/signal_deliver")
int BPF_PROG(tpbtf_signal_deliver, int sig, struct kernel_siginfo *info, struct k_sigaction *ka)
{
	return on_signal_deliver(sig, info);
}

SEC("raw_tp/signal_deliver")
int BPF_PROG(raw_signal_deliver, int sig, struct kernel_siginfo *info, struct k_sigaction *ka)
{
	return on_signal_deliver(sig, info);
}

/*
 * Memory errors are machine-wide: not filtered by process. Both tracepoints
 * are missing where CONFIG_MEMORY_FAILURE / CONFIG_X86_MCE are off; the raw_tp
 * handlers are then only loaded for BPF_PROG_TEST_RUN.
 */
SEC("raw_tp/memory_failure_event")
int BPF_PROG(raw_memory_failure_event, unsigned long pfn, int type, int result)
{
	struct fl_event *e = ev_current(FL_EV_MEMFAIL);

	if (!e)
		return 0;
	e->memfail.pfn = pfn;
	e->memfail.mf_type = type;
	e->memfail.result = result;
	ev_submit(e);
	return 0;
}

/* struct mce's layout is uapi (asm/mce.h); read it without CO-RE, which lacks the type here */
struct fl_uapi_mce {
	__u64 status, misc, addr, mcgstatus, ip, tsc, time;
	__u8 cpuvendor, inject_flags, severity, pad;
	__u32 cpuid;
	__u8 cs, bank, cpu, finished;
	__u32 extcpu;
};

SEC("raw_tp/mce_record")
int BPF_PROG(raw_mce_record, void *m)
{
	struct fl_uapi_mce mce;
	struct fl_event *e;

	if (bpf_probe_read_kernel(&mce, sizeof(mce), m))
		return 0;
	e = ev_current(FL_EV_MCE);
	if (!e)
		return 0;
	e->mce.status = mce.status;
	e->mce.misc = mce.misc;
	e->mce.addr = mce.addr;
	e->mce.mcgstatus = mce.mcgstatus;
	e->mce.ip = mce.ip;
	e->mce.cpu = mce.extcpu;
	e->mce.bank = mce.bank;
	ev_submit(e);
	return 0;
}
