// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* faultline features: probe the kernel, say what works and what each gap costs. */
#include <argp.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "commands.h"
#include "kallsyms.h"
#include "output.h"
#include "probe.h"
#include "tracefs.h"
#include "uffd_compat.h"

struct feat_report {
	bool json;
	int missing;
};

static void row(struct feat_report *r, const char *name, bool ok, const char *detail,
		const char *disables)
{
	if (!ok)
		r->missing++;
	if (r->json) {
		printf("{\"event\":\"feature\",\"name\":");
		fl_json_str(stdout, name, 128);
		printf(",\"available\":%s,\"detail\":", ok ? "true" : "false");
		fl_json_str(stdout, detail, 512);
		printf(",\"disables\":");
		if (ok || !disables)
			printf("null");
		else
			fl_json_str(stdout, disables, 512);
		printf("}\n");
		return;
	}
	printf("%-42s %-8s %s", name, ok ? "yes" : "MISSING", detail);
	if (!ok && disables)
		printf(" -> %s", disables);
	printf("\n");
}

static const struct {
	uint64_t bit;
	const char *name, *disables;
} uffd_feats[] = {
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP", "write-protect faults" },
	{ UFFD_FEATURE_EVENT_FORK, "EVENT_FORK", "following forked children" },
	{ UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP", "REMAP events" },
	{ UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE", "REMOVE events" },
	{ UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS", "hugetlbfs MISSING mode" },
	{ UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM", "shmem MISSING mode" },
	{ UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP", "UNMAP events" },
	{ UFFD_FEATURE_SIGBUS, "SIGBUS", "SIGBUS mode" },
	{ UFFD_FEATURE_THREAD_ID, "THREAD_ID",
	  "faults on the GUP path (KVM) matched to threads only by address" },
	{ UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS", "hugetlbfs MINOR mode" },
	{ UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM", "shmem MINOR mode (UFFDIO_CONTINUE)" },
	{ UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS", "exact fault addresses" },
	{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM", "WP on shmem/hugetlbfs" },
	{ UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED", "WP on unpopulated pages" },
	{ UFFD_FEATURE_POISON, "POISON", "UFFDIO_POISON: poison replication" },
	{ UFFD_FEATURE_WP_ASYNC, "WP_ASYNC", "async write-protect" },
	{ UFFD_FEATURE_MOVE, "MOVE", "UFFDIO_MOVE" },
};

static void probe_uffd(struct feat_report *r)
{
	struct uffdio_api api = { .api = UFFD_API };
	char detail[256];
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0) {
		snprintf(detail, sizeof(detail), "userfaultfd(): %s", strerror(errno));
		row(r, "userfaultfd", false, detail, "nothing to trace (CONFIG_USERFAULTFD)");
		return;
	}
	if (ioctl(fd, UFFDIO_API, &api)) {
		snprintf(detail, sizeof(detail), "UFFDIO_API: %s", strerror(errno));
		row(r, "userfaultfd", false, detail, "nothing to trace");
		close(fd);
		return;
	}
	close(fd);
	snprintf(detail, sizeof(detail), "API features 0x%llx", (unsigned long long)api.features);
	row(r, "userfaultfd", true, detail, NULL);
	for (unsigned i = 0; i < sizeof(uffd_feats) / sizeof(uffd_feats[0]); i++) {
		char name[64];

		snprintf(name, sizeof(name), "uffd feature %s", uffd_feats[i].name);
		row(r, name, api.features & uffd_feats[i].bit, "", uffd_feats[i].disables);
	}
	row(r, "/dev/userfaultfd", !access("/dev/userfaultfd", F_OK), "",
	    "USERFAULTFD_IOC_NEW (the syscall still works)");
}

static const struct {
	const char *cat, *name, *disables;
} tps[] = {
	{ "sched", "sched_switch", "block/run detection: nothing works" },
	{ "sched", "sched_wakeup", "wake timing" },
	{ "exceptions", "page_fault_user", "fault addresses/start of user faults (block time used)" },
	{ "sched", "sched_process_fork", "following forked processes" },
	{ "sched", "sched_process_exit", "prompt clean-up of exited processes" },
	{ "syscalls", "sys_enter_read", "notify (handler reads)" },
	{ "syscalls", "sys_enter_ioctl", "resolutions and registrations" },
	{ "syscalls", "sys_enter_munmap", "munmap race detection" },
	{ "syscalls", "sys_enter_mremap", "mremap race detection" },
	{ "syscalls", "sys_enter_mmap", "mmap MAP_FIXED race detection" },
	{ "syscalls", "sys_enter_madvise", "madvise race detection" },
	{ "syscalls", "sys_enter_fallocate", "PUNCH_HOLE events" },
	{ "syscalls", "sys_enter_userfaultfd", "instant pick-up of new uffd users (/proc scan remains)" },
	{ "signal", "signal_deliver", "SIGBUS/SIGSEGV delivery (poison consumed by a thread)" },
	{ NULL, "memory_failure_event", "hardware memory-failure events (CONFIG_MEMORY_FAILURE)" },
	{ "mce", "mce_record", "MCE records" },
	{ "kvm", "kvm_exit", "KVM exit reasons" },
	{ "kvm", "kvm_userspace_exit", "KVM userspace exits" },
	{ "kvm", "kvm_page_fault", "KVM page-fault events" },
	{ "kvm", "kvm_mmio", "MMIO exits (poison consumed by an emulated vCPU)" },
	{ "kvm", "kvm_async_pf_not_present", "async page-fault events" },
};

static int features_run(struct feat_report *r)
{
	struct fl_ksym_range ks[] = { { .name = "handle_userfault" } };
	struct fl_probe_opts po = { .no_attach = true };
	struct fl_probe probe;
	char detail[600];
	bool root = geteuid() == 0;
	int ret;

	row(r, "root", root, root ? "" : "not running as root",
	    "loading BPF: run faultline with sudo");
	row(r, "BTF (/sys/kernel/btf/vmlinux)", !access("/sys/kernel/btf/vmlinux", R_OK), "",
	    "CO-RE: faultline cannot run (CONFIG_DEBUG_INFO_BTF)");
	ret = fl_ksyms_resolve("/proc/kallsyms", ks, 1);
	snprintf(detail, sizeof(detail), "handle_userfault 0x%llx-0x%llx",
		 (unsigned long long)ks[0].start, (unsigned long long)ks[0].end);
	row(r, "kallsyms handle_userfault", !ret, ret ? strerror(-ret) : detail,
	    "block detection (kptr_restrict=0 needed)");
	ret = fl_tracefs_ensure();
	row(r, "tracefs", !ret, ret ? strerror(-ret) : "mounted", "classic tracepoints");
	if (root) {
		ret = fl_probe_start(&probe, &po, detail, sizeof(detail));
		if (!ret) {
			row(r, "BPF programs load", true,
			    probe.tp_btf ? "tp_btf (BTF-typed tracepoints)" : "raw_tp fallback", NULL);
			row(r, "tp_btf", probe.tp_btf, probe.tp_btf ? "" : "raw_tp used instead",
			    "nothing (raw_tp fallback is equivalent)");
			fl_probe_stop(&probe);
		} else {
			row(r, "BPF programs load", false, detail, "all tracing");
		}
	}
	row(r, "ring buffer", true, "BPF_MAP_TYPE_RINGBUF (checked by the load above)", NULL);
	for (unsigned i = 0; i < sizeof(tps) / sizeof(tps[0]); i++) {
		/* NULL: the memory-failure one, in whichever group this kernel has it */
		const char *cat = tps[i].cat ? tps[i].cat : FL_MEMORY_FAILURE_GROUP;
		char name[96];

		snprintf(name, sizeof(name), "tracepoint %s:%s", cat, tps[i].name);
		row(r, name, fl_tracepoint_exists(cat, tps[i].name), "", tps[i].disables);
	}
	row(r, "kprobes", !access("/sys/kernel/tracing/kprobe_events", F_OK), "optional, unused",
	    "nothing: faultline works on tracepoints alone");
	probe_uffd(r);
	row(r, "/dev/kvm", !access("/dev/kvm", R_OK | W_OK), "", "KVM guest tests and vCPU views");
	if (!r->json)
		printf("\n%d feature(s) missing; faultline %s on this kernel.\n", r->missing,
		       root ? "runs" : "needs root to run");
	return 0;
}

static error_t feat_parse(int key, char *arg, struct argp_state *state)
{
	struct feat_report *r = state->input;

	(void)arg;
	if (key == 'j') {
		r->json = true;
		return 0;
	}
	return ARGP_ERR_UNKNOWN;
}

int fl_cmd_features(int argc, char **argv)
{
	static const struct argp_option opts[] = {
		{ "json", 'j', NULL, 0, "One JSON object per feature", 0 },
		{ 0 },
	};
	const struct argp argp = {
		opts, feat_parse, NULL,
		"Report which kernel features faultline uses are present and what each missing one "
		"disables.\v"
		"EXAMPLES:\n  faultline features\n  faultline features --json | jq 'select(.available|not)'\n",
		NULL, NULL, NULL,
	};
	struct feat_report r = { 0 };
	int ret = argp_parse(&argp, argc, argv, 0, NULL, &r);

	if (ret)
		return -ret;
	return features_run(&r);
}
