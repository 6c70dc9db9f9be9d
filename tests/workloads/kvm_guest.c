// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * kvm-guest — a minimal test VMM on /dev/kvm whose guest data memory is
 * registered with userfaultfd (MISSING mode) and served by an in-process
 * handler thread.  Its own counters are the independent reference that a
 * tracer's output (faultline) is checked against.
 *
 * Structure (kept separate so migration tests can reuse the pieces; the VM
 * plumbing migrate-vm shares is in kvm_vm.c):
 *   parse_options()      command line
 *   uffd_setup()         userfaultfd with THREAD_ID (+POISON), register data
 *   vm_setup()           /dev/kvm, VM, code memslot, data memslot, vCPU fds
 *   vcpu_thread()        per-vCPU: KVM_SET_SREGS/REGS, KVM_RUN loop, exits
 *   uffd_handler_thread  reads uffd_msg, COPY or POISON, records each fault
 *   run_pass()/verify_pass()  one pass over every vCPU's slice + checking
 *   report()             JSON records + one human line on stderr
 *
 * Guest: 32-bit protected mode, flat segments set directly via KVM_SET_SREGS
 * (no GDT, no paging).  Registers in: EBX = slice start (guest physical),
 * ECX = page count, EDX = stride in bytes, ESI = first value, EDI = per-page
 * exit bits (1: `out 0xF1` after every store, 2: a 4-byte MMIO write of the
 * value to MMIO_GPA, an address no memslot backs), EBP = GPA of this vCPU's
 * touch parameter block or 0.  The loop stores ESI at offset 0 of each page
 * (value increments per page).  With EBP != 0 (--touch-loops) the guest then
 * does `out 0xF2` (fault phase over; the VMM holds the vCPU until every vCPU
 * got there) and rewrites every page of its slice N times from the block's
 * parameters (dword 0 = its value again, dwords 1..1023 = the touch fill,
 * `rep stosd`).  Last: `out 0xF0, eax` (done) and `hlt`.
 *
 * Timestamps are CLOCK_MONOTONIC nanoseconds (same clock as
 * bpf_ktime_get_ns), so records can be matched to a tracer's events.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>
#include "uffd_compat.h"
#include "kvm_vm.h"

/* Layout of run->memory_fault (6.8+), overlaid on the exit union. */
struct kvm_memory_fault_compat {
	__u64 flags;
	__u64 gpa;
	__u64 size;
};

#define PAGE_SZ 4096UL
#define MAX_VCPUS 8
#define MAX_MEM_MB 2048UL
#define EXIT_SLOTS 64

#define CODE_GPA 0x1000UL          /* guest code lives here */
#define CODE_SLOT_LEN 0x10000UL    /* code memslot: GPA 0 .. 64 KiB */
#define DATA_GPA 0x100000UL        /* data memslot starts at 1 MiB */
#define PORT_DONE 0xF0
#define PORT_PAGE 0xF1
#define PORT_TOUCH 0xF2            /* fault phase over, touch phase next */
#define MMIO_GPA 0xE0000000UL      /* --mmio-per-page target: no memslot here */
#define PARAM_GPA 0x2000UL         /* touch parameter blocks, 32 bytes per vCPU */
#define COPY_FILL 0xA5             /* byte pattern UFFDIO_COPY installs */
#define TOUCH_FILL 0x5A5A5A5Au     /* dwords 1..1023 after a touch phase */
#define LAT_BUCKETS 24             /* QEMU 10.1 BLOCKTIME_LATENCY_BUCKET_N */
#define SYNC_GATHER_NS 20000000ULL /* --sync: wait at most 20 ms for all vCPUs */

/*
 * Guest code, 32-bit.  Offsets matter: GUEST_STORE_OFF is the store that
 * touches the data page; GUEST_AFTER_STORE_OFF is where a vCPU resumes
 * when that store hit a poisoned page.  (Assembled with `as --32`.)
 *
 *   00: 85 c9              test  ecx, ecx
 *   02: 74 22              jz    26 <done>
 * loop:
 *   04: 89 33              mov   [ebx], esi        <- the data access
 *   06: f7 c7 01 00 00 00  test  edi, 1
 *   0c: 74 04              jz    12 <no_out>
 *   0e: 89 f0              mov   eax, esi
 *   10: e7 f1              out   0xf1, eax         (--io-per-page)
 * no_out:
 *   12: f7 c7 02 00 00 00  test  edi, 2
 *   18: 74 06              jz    20 <no_mmio>
 *   1a: 89 35 00 00 00 e0  mov   [0xe0000000], esi (--mmio-per-page)
 * no_mmio:
 *   20: 01 d3              add   ebx, edx
 *   22: 46                 inc   esi
 *   23: 49                 dec   ecx
 *   24: 75 de              jnz   04 <loop>
 * done:
 *   26: 85 ed              test  ebp, ebp
 *   28: 74 29              jz    53 <final>
 *   2a: 89 f0              mov   eax, esi
 *   2c: e7 f2              out   0xf2, eax         (touch phase starts)
 *   2e: 8b 55 10           mov   edx, [ebp+16]     (loops)
 * touch_loop:
 *   31: 8b 5d 00           mov   ebx, [ebp+0]      (slice start)
 *   34: 8b 75 0c           mov   esi, [ebp+12]     (first value)
 * touch_page:
 *   37: 89 33              mov   [ebx], esi
 *   39: 8d 7b 04           lea   edi, [ebx+4]
 *   3c: b9 ff 03 00 00     mov   ecx, 1023
 *   41: 8b 45 14           mov   eax, [ebp+20]     (fill)
 *   44: fc                 cld
 *   45: f3 ab              rep stosd
 *   47: 03 5d 08           add   ebx, [ebp+8]      (stride)
 *   4a: 46                 inc   esi
 *   4b: 3b 5d 04           cmp   ebx, [ebp+4]      (slice end)
 *   4e: 72 e7              jb    37 <touch_page>
 *   50: 4a                 dec   edx
 *   51: 75 de              jnz   31 <touch_loop>
 * final:
 *   53: 89 f0              mov   eax, esi
 *   55: e7 f0              out   0xf0, eax         (done; eax = next value)
 *   57: f4                 hlt
 *   58: eb fd              jmp   57
 */
static const uint8_t guest_code[] = {
	0x85, 0xc9, 0x74, 0x22,
	0x89, 0x33, 0xf7, 0xc7, 0x01, 0x00, 0x00, 0x00, 0x74, 0x04, 0x89, 0xf0,
	0xe7, PORT_PAGE,
	0xf7, 0xc7, 0x02, 0x00, 0x00, 0x00, 0x74, 0x06,
	0x89, 0x35, (uint8_t)MMIO_GPA, (uint8_t)(MMIO_GPA >> 8),
	(uint8_t)(MMIO_GPA >> 16), (uint8_t)(MMIO_GPA >> 24),
	0x01, 0xd3, 0x46, 0x49, 0x75, 0xde,
	0x85, 0xed, 0x74, 0x29, 0x89, 0xf0, 0xe7, PORT_TOUCH, 0x8b, 0x55, 0x10,
	0x8b, 0x5d, 0x00, 0x8b, 0x75, 0x0c,
	0x89, 0x33, 0x8d, 0x7b, 0x04, 0xb9, 0xff, 0x03, 0x00, 0x00, 0x8b, 0x45, 0x14,
	0xfc, 0xf3, 0xab, 0x03, 0x5d, 0x08, 0x46, 0x3b, 0x5d, 0x04, 0x72, 0xe7,
	0x4a, 0x75, 0xde,
	0x89, 0xf0, 0xe7, PORT_DONE, 0xf4, 0xeb, 0xfd,
};
#define GUEST_STORE_OFF 0x04
#define GUEST_AFTER_STORE_OFF 0x06
#define GUEST_EXIT_OUT 1u          /* EDI bits */
#define GUEST_EXIT_MMIO 2u

/*
 * Touch parameter block in the code slot (guest reads it through EBP).
 * One `rep stosd` per page keeps the guest's instruction count minimal:
 * where KVM emulates the guest instruction by instruction (kvm_pvm here,
 * ~1.3 us per instruction) it gives ~5 MB/s per vCPU, a mov/add/dec/jnz
 * loop 0.7 MB/s.
 */
struct touch_params {
	uint32_t slice_start, slice_end, stride, first_value, loops, fill;
};
_Static_assert(sizeof(struct touch_params) <= 32, "touch_params must fit its 32-byte slot");
_Static_assert(PARAM_GPA + 32 * MAX_VCPUS <= CODE_SLOT_LEN - 0x100 &&
	       PARAM_GPA >= CODE_GPA + 0x100, "touch parameter blocks overlap code or stack");

enum page_state { PAGE_NONE = 0, PAGE_COPIED = 1, PAGE_POISONED = 2 };

struct options {
	unsigned vcpus;
	unsigned long mem_mb;
	unsigned long pages;
	unsigned long delay_us;
	unsigned long stride;
	unsigned long poison_every;
	bool sync;
	unsigned long start_delay_ms;
	unsigned long loops;
	bool io_per_page;
	bool mmio_per_page;
	unsigned long touch_loops;
	unsigned long timeout_s;
	bool no_uffd;
	const char *out_path;
};

struct fault_rec {
	pid_t tid;           /* msg.arg.pagefault.feat.ptid */
	int vcpu;            /* vCPU index owning that tid, -1 if none */
	unsigned loop;
	uint64_t addr;       /* page-aligned host address */
	uint64_t flags;      /* msg.arg.pagefault.flags */
	uint64_t read_ns;    /* handler read the message */
	uint64_t fault_lb_ns;/* the message was queued after this (see below) */
	uint64_t fault_ns;   /* estimate of when the vCPU started waiting */
	uint64_t resolve_start_ns; /* COPY/POISON ioctl called */
	uint64_t wake_ns;    /* estimate of when that ioctl woke the vCPU */
	uint64_t resolved_ns;/* COPY/POISON ioctl returned */
	bool poison;
	bool woken;          /* the message woke the handler out of ppoll() */
	int err;             /* errno of the resolving ioctl, 0 if ok */
};

struct poison_hit {
	unsigned loop;
	uint64_t addr;       /* host address of the page */
	uint64_t gpa;
	uint64_t hva;        /* host address of the page, via the memslot table */
	const char *how;     /* sigbus | efault | memory_fault | mmio */
	int si_code;         /* for sigbus, else 0 */
	uint64_t rip;        /* guest RIP when the hit was reported */
	uint32_t mmio_len;   /* for mmio: the emulated write KVM handed us */
	uint32_t mmio_data;
};

struct vcpu_state {
	unsigned idx;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
	volatile pid_t tid;

	uint64_t slice_gpa;
	uint8_t *slice_hva;

	/* counters, written only by this vCPU's thread */
	uint64_t run_ns;
	uint64_t kvm_run_calls;
	/*
	 * Every KVM_RUN return is counted exactly once, in exits[] (returned 0,
	 * or -1/EFAULT with KVM_EXIT_MEMORY_FAULT) or in exits_err[] (other -1
	 * returns, keyed by the exit_reason KVM left in kvm_run, e.g.
	 * KVM_EXIT_INTR for EINTR): kvm_run_calls == sum(exits) + sum(exits_err).
	 */
	uint64_t exits[EXIT_SLOTS];
	uint64_t exits_other;
	uint64_t exits_err[EXIT_SLOTS];
	uint64_t exits_err_other;
	uint64_t run_eintr;          /* KVM_RUN returned -1/EINTR */
	uint64_t run_efault;         /* KVM_RUN returned -1/EFAULT */
	uint64_t io_page_exits;
	uint64_t mmio_page_exits;    /* --mmio-per-page writes to MMIO_GPA */
	uint32_t page_value;         /* value the next `out 0xF1` must carry */
	uint32_t mmio_value;         /* value the next MMIO_GPA write must carry */
	uint64_t offcpu_ns;          /* inside KVM_RUN, not on a CPU (fault phase) */
	bool in_touch;
	bool fault_phase_over;       /* this pass */
	uint64_t touch_ns;           /* inside KVM_RUN during touch phases */
	uint64_t touch_bytes;
	uint64_t touch_run_calls;
	uint64_t done_passes;
	struct poison_hit *hits;
	size_t nhits, hits_cap;

	/* set from the SIGBUS handler (this thread only) */
	volatile sig_atomic_t sigbus_pending;
	void *volatile sigbus_addr;
	volatile int sigbus_code;

	/* filled by the reporter */
	uint64_t faults;
	uint64_t resolved;           /* faults with a resolved_ns */
	uint64_t blocked_ns;         /* sum of resolved_ns - read_ns */
	uint64_t blocked_est_ns;     /* sum of wake_ns - fault_ns */
	uint64_t hist_us[LAT_BUCKETS];
	uint64_t verified;
	uint64_t verify_errors;

	bool failed;
	char err[KVM_VM_ERR_LEN];
};

struct memslot_info {
	unsigned slot;
	uint64_t gpa, hva, size;
	bool uffd;           /* registered with the userfaultfd */
};

/* The one piece of global mutable state: everything lives here. */
struct kvm_guest_ctx {
	struct options opt;
	FILE *out;

	struct kvm_vm vm;
	struct memslot_info memslots[2];
	unsigned nmemslots;
	uint8_t *data_mem;
	size_t data_len;
	unsigned long data_pages;

	int uffd;
	uint64_t uffd_features;
	int stop_efd;
	uint8_t *copy_src;             /* one page of COPY_FILL */
	pthread_t handler;
	bool handler_started;
	volatile pid_t handler_tid;

	/*
	 * Handler-owned; main reads them between passes / after join.
	 * faults_lock guards growth of the array (main may report while the
	 * handler is still running after a timeout).
	 */
	pthread_mutex_t faults_lock;
	struct fault_rec *faults;
	size_t nfaults, faults_cap;
	/*
	 * Fault records the handler has finished with (page_state and counters
	 * written). The ioctl wakes the vCPU before that bookkeeping, so a pass
	 * is checked only once this catches up with nfaults.
	 */
	size_t handled;
	uint64_t fault_seq;            /* faults seen, for --poison-every */
	uint8_t *page_state;           /* enum page_state per data page */
	uint64_t copies, poisons, eexist, resolve_errors, unexpected_msgs;
	uint64_t empty_seen_ns;        /* handler last found the uffd queue empty */
	uint64_t vcpu_resolve_start[MAX_VCPUS]; /* last COPY/POISON for its fault */
	bool handler_failed;
	char handler_err[KVM_VM_ERR_LEN];

	struct vcpu_state vcpu[MAX_VCPUS];

	/* pass control */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned start_gen;            /* bumped to start a pass */
	unsigned done_count;           /* vCPUs finished the current pass */
	bool quit;
	unsigned cur_loop;             /* atomic: loop index of current pass */
	int running_vcpus;             /* atomic: vCPUs not yet done faulting this pass */
	uint64_t pass_start_ns;        /* atomic */
	unsigned touch_arrived;        /* --touch-loops gate, under lock */
	pthread_barrier_t sync_barrier;/* --sync: vCPUs start together */
	unsigned tids_known;
};

static struct kvm_guest_ctx kvm_guest_ctx = {
	.vm = { .kvm_fd = -1, .vm_fd = -1 }, .uffd = -1, .stop_efd = -1,
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.faults_lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
};

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

const char kvm_vm_prog[] = "kvm-guest";

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000ULL,
			       .tv_nsec = ns % 1000000000ULL };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint32_t seed_for(unsigned vcpu, unsigned loop)
{
	/* Distinct per vCPU and per pass, so a stale value is detected. */
	return 0xC0DE0000u ^ ((uint32_t)vcpu << 28) ^ ((uint32_t)(loop & 0xfff) << 16);
}

/* Host address of a guest physical address via the memslot table, 0 if none. */
static uint64_t gpa_to_hva(const struct kvm_guest_ctx *c, uint64_t gpa)
{
	for (unsigned i = 0; i < c->nmemslots; i++) {
		const struct memslot_info *m = &c->memslots[i];
		if (gpa >= m->gpa && gpa - m->gpa < m->size)
			return m->hva + (gpa - m->gpa);
	}
	return 0;
}

/*
 * QEMU 10.1's postcopy latency bucket (migration/postcopy-ram.c,
 * blocktime_latency_account(), with BLOCKTIME_LATENCY_BUCKET_N = 24 and
 * SCALE_US = 1000; QAPI @postcopy-latency-dist, "Since 10.1"): the
 * latency is truncated to whole microseconds, us = ns / 1000, and
 *   index = us ? floor(log2(us)) : 0,   clamped to 23.
 * So bucket 0 holds [0, 2) us (a sub-microsecond latency goes there too),
 * bucket N (1..22) holds [2^N, 2^(N+1)) us, and bucket 23 holds everything
 * from 2^23 us (8.39 s) up.  (QEMU's comment says the last bucket covers
 * [2^24, 2^25) us; its code clamps at index 23 as above, followed here.)
 */
static unsigned lat_bucket(uint64_t ns)
{
	uint64_t us = ns / 1000;
	unsigned idx = us ? 63u - (unsigned)__builtin_clzll(us) : 0;

	return idx >= LAT_BUCKETS ? LAT_BUCKETS - 1 : idx;
}

static int vcpu_of_tid(const struct kvm_guest_ctx *c, pid_t tid)
{
	for (unsigned i = 0; i < c->opt.vcpus; i++)
		if (c->vcpu[i].tid == tid)
			return (int)i;
	return -1;
}

/* ------------------------------------------------------------------ */
/* options                                                             */

static void usage(FILE *f)
{
	fprintf(f,
"Usage: kvm-guest [OPTIONS]\n"
"\n"
"A minimal test VMM on /dev/kvm. Guest data memory is userfaultfd-registered\n"
"(MISSING mode, UFFD_FEATURE_THREAD_ID) and served by an in-process handler;\n"
"each vCPU writes one dword per page over its own slice. The VMM's own\n"
"per-fault and per-vCPU counters are the reference a tracer is checked against.\n"
"\n"
"Options:\n"
"  --vcpus N           vCPUs, 1..%d (default 1)\n"
"  --mem-mb N          uffd-registered guest data memory in MiB, 1..%lu (default 64)\n"
"  --pages N           pages each vCPU touches per pass (default 64); slices are\n"
"                      disjoint, so vcpus*pages*stride must fit in --mem-mb\n"
"  --stride N          pages between touches (default 1)\n"
"  --delay-us N        handler holds each fault N us before resolving it, one\n"
"                      at a time in arrival order (default 0); it waits in\n"
"                      ppoll() on the uffd, so faults arriving meanwhile are\n"
"                      read and time-stamped at once\n"
"  --poison-every N    resolve every Nth fault with UFFDIO_POISON instead of\n"
"                      UFFDIO_COPY (default 0 = never)\n"
"  --sync              vCPUs start at the same instant (barrier) and the handler\n"
"                      gathers one fault from every running vCPU before resolving,\n"
"                      so they are all blocked together (delay applied per batch)\n"
"  --start-delay-ms N  after READY, wait N ms before starting the vCPUs (default 0)\n"
"  --loops N           passes; between passes MADV_DONTNEED the data memory\n"
"                      (default 1)\n"
"  --io-per-page       guest does an `out` after every page (one KVM_EXIT_IO each)\n"
"  --mmio-per-page     guest writes to an unbacked GPA (0x%lx) after every page\n"
"                      (one KVM_EXIT_MMIO each); combinable with --io-per-page\n"
"  --touch-loops N     after its fault phase each vCPU waits until every vCPU\n"
"                      finished faulting, then rewrites every page of its slice\n"
"                      (4 KiB each) N times with no faults; the VMM reports bytes\n"
"                      written / time inside KVM_RUN (default 0 = no touch phase;\n"
"                      not with --poison-every)\n"
"  --timeout-s N       give up if a pass takes longer than N s (default 60, 0=never)\n"
"  --no-uffd           no userfaultfd at all: the kernel fills guest memory with\n"
"                      zeros (a VMM without postcopy; expect 0 faults, exits as\n"
"                      usual); not with --poison-every, --sync or --delay-us\n"
"  --out FILE          JSON-lines records to FILE (default stdout)\n"
"  -h, --help          this help\n"
"\n"
"Output: stderr gets `READY pid=P vcpu_tids=T0,.. uffd=FD data_base=0x.. data_len=N`\n"
"before the vCPUs start, then one human summary line. The out stream gets\n"
"kvm_vcpu, kvm_memslot, kvm_fault, kvm_poison_hit, kvm_vcpu_summary and\n"
"kvm_summary records.  Per fault: read_ns (handler read the message; the handler\n"
"waits in ppoll() on the uffd, also while delaying, so this is close to the fault),\n"
"fault_lb_ns <= fault <= read_ns, fault_ns (best estimate), resolved_ns.  Per\n"
"vCPU: blocked_ns = sum(resolved_ns - read_ns), blocked_est_ns (wake_ns - fault_ns),\n"
"avg_latency_ns, hist_us (24 log2 us buckets as QEMU 10.1 postcopy-latency-dist),\n"
"run_offcpu_ns (off-CPU time inside KVM_RUN), exits (every KVM_RUN return\n"
"counted once) with expected_exits, touch_bytes_per_s.  Summary:\n"
"all_vcpu_blocked_ns (time every vCPU was blocked at once, from the per-fault\n"
"[read_ns, resolved_ns]; meaningful with --sync), totals, touch_bytes_per_s\n"
"(sum of the per-vCPU rates; the vCPUs touch concurrently).\n"
"Exit status: 0 every page served and verified, 1 failure, 2 bad usage.\n"
"\n"
"Examples:\n"
"  kvm-guest --vcpus 1 --pages 64\n"
"  kvm-guest --vcpus 4 --pages 128 --delay-us 100 --out faults.jsonl\n"
"  kvm-guest --vcpus 2 --sync --delay-us 2000\n"
"  kvm-guest --poison-every 8\n"
"  kvm-guest --vcpus 2 --io-per-page --mmio-per-page   # exact exit counts\n"
"  kvm-guest --vcpus 2 --pages 256 --touch-loops 50    # guest write throughput\n"
"  kvm-guest --loops 3 --start-delay-ms 500   # let a tracer attach after READY\n"
"  kvm-guest --no-uffd --vcpus 2 --io-per-page   # a VMM without postcopy\n",
		MAX_VCPUS, MAX_MEM_MB, MMIO_GPA);
}

static void parse_options(struct options *o, int argc, char **argv)
{
	enum { OPT_VCPUS = 256, OPT_MEM, OPT_PAGES, OPT_DELAY, OPT_STRIDE, OPT_POISON,
	       OPT_SYNC, OPT_START, OPT_LOOPS, OPT_OUT, OPT_IOPP, OPT_TIMEOUT,
	       OPT_MMIOPP, OPT_TOUCH, OPT_NO_UFFD };
	static const struct option lo[] = {
		{ "vcpus", required_argument, 0, OPT_VCPUS },
		{ "mem-mb", required_argument, 0, OPT_MEM },
		{ "pages", required_argument, 0, OPT_PAGES },
		{ "delay-us", required_argument, 0, OPT_DELAY },
		{ "stride", required_argument, 0, OPT_STRIDE },
		{ "poison-every", required_argument, 0, OPT_POISON },
		{ "sync", no_argument, 0, OPT_SYNC },
		{ "start-delay-ms", required_argument, 0, OPT_START },
		{ "loops", required_argument, 0, OPT_LOOPS },
		{ "io-per-page", no_argument, 0, OPT_IOPP },
		{ "mmio-per-page", no_argument, 0, OPT_MMIOPP },
		{ "touch-loops", required_argument, 0, OPT_TOUCH },
		{ "timeout-s", required_argument, 0, OPT_TIMEOUT },
		{ "out", required_argument, 0, OPT_OUT },
		{ "no-uffd", no_argument, 0, OPT_NO_UFFD },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	int c;

	*o = (struct options){ .vcpus = 1, .mem_mb = 64, .pages = 64,
			       .stride = 1, .loops = 1, .timeout_s = 60 };
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		switch (c) {
		case OPT_VCPUS: o->vcpus = (unsigned)parse_ulong("--vcpus", optarg, 1, MAX_VCPUS); break;
		case OPT_MEM: o->mem_mb = parse_ulong("--mem-mb", optarg, 1, MAX_MEM_MB); break;
		case OPT_PAGES: o->pages = parse_ulong("--pages", optarg, 1, MAX_MEM_MB * 256); break;
		case OPT_DELAY: o->delay_us = parse_ulong("--delay-us", optarg, 0, 10000000); break;
		case OPT_STRIDE: o->stride = parse_ulong("--stride", optarg, 1, MAX_MEM_MB * 256); break;
		case OPT_POISON: o->poison_every = parse_ulong("--poison-every", optarg, 0, ULONG_MAX); break;
		case OPT_SYNC: o->sync = true; break;
		case OPT_START: o->start_delay_ms = parse_ulong("--start-delay-ms", optarg, 0, 3600000); break;
		case OPT_LOOPS: o->loops = parse_ulong("--loops", optarg, 1, 100000); break;
		case OPT_IOPP: o->io_per_page = true; break;
		case OPT_MMIOPP: o->mmio_per_page = true; break;
		case OPT_TOUCH: o->touch_loops = parse_ulong("--touch-loops", optarg, 0, 1000000000); break;
		case OPT_TIMEOUT: o->timeout_s = parse_ulong("--timeout-s", optarg, 0, 86400); break;
		case OPT_OUT: o->out_path = optarg; break;
		case OPT_NO_UFFD: o->no_uffd = true; break;
		case 'h': usage(stdout); exit(0);
		case ':': bad_usage("option %s needs an argument", argv[optind - 1]);
		default: bad_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		bad_usage("unexpected argument '%s'", argv[optind]);
	if (o->no_uffd && (o->poison_every || o->sync || o->delay_us))
		bad_usage("%s", "--no-uffd has no fault handler: --poison-every, --sync and "
			  "--delay-us need one");
	if (o->touch_loops && o->poison_every)
		bad_usage("%s", "--touch-loops cannot be combined with --poison-every "
			  "(the touch phase would hit the poisoned pages)");

	unsigned long mem_pages = o->mem_mb * (1024 * 1024 / PAGE_SZ);
	/* Each slice spans (pages-1)*stride+1 pages; slices are pages*stride apart. */
	if (o->pages > mem_pages / o->stride / o->vcpus) {
		fprintf(stderr,
			"kvm-guest: --vcpus %u x --pages %lu x --stride %lu = %lu pages "
			"does not fit in --mem-mb %lu (%lu pages)\n",
			o->vcpus, o->pages, o->stride,
			(unsigned long)o->vcpus * o->pages * o->stride,
			o->mem_mb, mem_pages);
		exit(2);
	}
}

/* ------------------------------------------------------------------ */
/* userfaultfd                                                         */

static void uffd_setup(struct kvm_guest_ctx *c)
{
	struct uffdio_api api;
	uint64_t want = UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_POISON;

	c->uffd = uffd_open();
	api = (struct uffdio_api){ .api = UFFD_API, .features = want };
	if (ioctl(c->uffd, UFFDIO_API, &api) < 0) {
		/* The API handshake can only be done once per fd: reopen. */
		int e = errno;
		close(c->uffd);
		if (c->opt.poison_every)
			die("UFFDIO_API(THREAD_ID|POISON): %s — kernel lacks UFFD_FEATURE_POISON "
			    "(needs 6.6+), cannot do --poison-every", strerror(e));
		c->uffd = uffd_open();
		want = UFFD_FEATURE_THREAD_ID;
		api = (struct uffdio_api){ .api = UFFD_API, .features = want };
		if (ioctl(c->uffd, UFFDIO_API, &api) < 0)
			die("UFFDIO_API(THREAD_ID): %s", strerror(errno));
	}
	c->uffd_features = api.features;
	if (!(api.features & UFFD_FEATURE_THREAD_ID))
		die("userfaultfd lacks UFFD_FEATURE_THREAD_ID — cannot attribute faults to vCPUs");

	struct uffdio_register reg = {
		.range = { .start = (uint64_t)(uintptr_t)c->data_mem, .len = c->data_len },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	if (ioctl(c->uffd, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER(MISSING) of %zu bytes at %p: %s",
		    c->data_len, (void *)c->data_mem, strerror(errno));
	if (!(reg.ioctls & (1ULL << _UFFDIO_COPY)))
		die("UFFDIO_REGISTER: range does not support UFFDIO_COPY");
	if (c->opt.poison_every && !(reg.ioctls & (1ULL << _UFFDIO_POISON)))
		die("UFFDIO_REGISTER: range does not support UFFDIO_POISON");

	c->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->stop_efd < 0)
		die("eventfd: %s", strerror(errno));
	c->copy_src = mmap(NULL, PAGE_SZ, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c->copy_src == MAP_FAILED)
		die("mmap copy source page: %s", strerror(errno));
	memset(c->copy_src, COPY_FILL, PAGE_SZ);
}

/* ------------------------------------------------------------------ */
/* VM                                                                  */

static void vm_setup(struct kvm_guest_ctx *c)
{
	kvm_vm_create(&c->vm, guest_code, sizeof(guest_code), CODE_GPA, CODE_SLOT_LEN);
	c->memslots[c->nmemslots++] = (struct memslot_info){
		.slot = 0, .gpa = 0, .hva = (uint64_t)(uintptr_t)c->vm.code_mem,
		.size = CODE_SLOT_LEN, .uffd = false,
	};

	/* Data slot: anonymous memory, uffd-registered by uffd_setup(). */
	c->data_len = c->opt.mem_mb << 20;
	c->data_pages = c->data_len / PAGE_SZ;
	c->data_mem = kvm_vm_guest_mem(c->data_len, -1, "data memory");
	kvm_vm_add_slot(&c->vm, 1, DATA_GPA, c->data_mem, c->data_len, "data slot");
	c->memslots[c->nmemslots++] = (struct memslot_info){
		.slot = 1, .gpa = DATA_GPA, .hva = (uint64_t)(uintptr_t)c->data_mem,
		.size = c->data_len, .uffd = !c->opt.no_uffd,
	};

	c->page_state = calloc(c->data_pages, 1);
	if (!c->page_state)
		die("out of memory");

	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		struct vcpu_state *v = &c->vcpu[i];

		v->idx = i;
		v->fd = kvm_vm_add_vcpu(&c->vm, i, &v->run);
		unsigned long slice_off = (unsigned long)i * c->opt.pages * c->opt.stride * PAGE_SZ;
		v->slice_gpa = DATA_GPA + slice_off;
		v->slice_hva = c->data_mem + slice_off;
	}
}

/* ------------------------------------------------------------------ */
/* vCPU threads                                                        */

static void sigbus_handler(int sig, siginfo_t *si, void *uc)
{
	struct kvm_guest_ctx *c = &kvm_guest_ctx;
	pid_t me = gettid();

	(void)sig;
	(void)uc;
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		if (c->vcpu[i].tid == me) {
			c->vcpu[i].sigbus_addr = si->si_addr;
			c->vcpu[i].sigbus_code = si->si_code;
			c->vcpu[i].sigbus_pending = 1;
			return;
		}
	}
	static const char msg[] = "kvm-guest: SIGBUS in a non-vCPU thread (host touched a poisoned page?)\n";
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing more we can do */
	}
	_exit(1);
}

static int vcpu_init_regs(struct kvm_guest_ctx *c, struct vcpu_state *v, unsigned loop)
{
	uint64_t param_gpa = 0;
	if (c->opt.touch_loops) {
		struct touch_params tp = {
			.slice_start = (uint32_t)v->slice_gpa,
			.slice_end = (uint32_t)(v->slice_gpa + c->opt.pages * c->opt.stride * PAGE_SZ),
			.stride = (uint32_t)(c->opt.stride * PAGE_SZ),
			.first_value = seed_for(v->idx, loop),
			.loops = (uint32_t)c->opt.touch_loops,
			.fill = TOUCH_FILL,
		};
		param_gpa = PARAM_GPA + 32UL * v->idx;
		memcpy(c->vm.code_mem + param_gpa, &tp, sizeof(tp));
	}
	v->page_value = v->mmio_value = seed_for(v->idx, loop);

	struct kvm_regs regs = {
		.rip = CODE_GPA,
		.rbx = v->slice_gpa,
		.rcx = c->opt.pages,
		.rdx = c->opt.stride * PAGE_SZ,
		.rsi = seed_for(v->idx, loop),
		.rdi = (c->opt.io_per_page ? GUEST_EXIT_OUT : 0) |
		       (c->opt.mmio_per_page ? GUEST_EXIT_MMIO : 0),
		.rbp = param_gpa,
		.rsp = CODE_SLOT_LEN - 16,
	};
	return kvm_vm_enter_flat32(v->fd, &regs, v->err);
}

/*
 * The guest's store hit a page the handler poisoned.  Record it and step
 * the guest past the store, so it carries on with the next page instead of
 * hitting the same marker forever.
 */
static int vcpu_poison_hit(struct kvm_guest_ctx *c, struct vcpu_state *v, unsigned loop,
			   const char *how, uint64_t addr_hint, int si_code)
{
	struct kvm_regs regs;

	if (ioctl(v->fd, KVM_GET_REGS, &regs) < 0) {
		set_err(v->err, "KVM_GET_REGS after poison hit (%s): %s", how, strerror(errno));
		return -1;
	}
	uint64_t gpa = regs.rbx & 0xffffffffULL;
	uint64_t hva = (uint64_t)(uintptr_t)c->data_mem + (gpa - DATA_GPA);
	if (gpa < DATA_GPA || gpa >= DATA_GPA + c->data_len) {
		set_err(v->err, "poison hit (%s) but guest EBX 0x%" PRIx64 " is outside the data slot",
			how, gpa);
		return -1;
	}
	if (addr_hint && (addr_hint & ~(PAGE_SZ - 1)) != hva &&
	    (addr_hint & ~(PAGE_SZ - 1)) != gpa) {
		set_err(v->err, "poison hit (%s) at 0x%" PRIx64 " but guest was storing to "
			"GPA 0x%" PRIx64 " (hva 0x%" PRIx64 ")", how, addr_hint, gpa, hva);
		return -1;
	}
	if (strcmp(how, "mmio") == 0) {
		/*
		 * The emulator treated the failed guest-memory write as MMIO:
		 * the instruction is already retired (RIP past the store) and
		 * re-entering KVM_RUN just continues.  Never touch RIP here.
		 */
	} else if (regs.rip == CODE_GPA + GUEST_STORE_OFF) {
		/* SIGBUS / EFAULT / MEMORY_FAULT: the store did not happen; skip it. */
		regs.rip = CODE_GPA + GUEST_AFTER_STORE_OFF;
		if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0) {
			set_err(v->err, "KVM_SET_REGS (skip poisoned store): %s", strerror(errno));
			return -1;
		}
	} else {
		set_err(v->err, "poison hit (%s) with guest RIP 0x%" PRIx64 ", expected 0x%lx",
			how, (uint64_t)regs.rip, CODE_GPA + GUEST_STORE_OFF);
		return -1;
	}
	if (v->nhits == v->hits_cap) {
		size_t ncap = v->hits_cap ? v->hits_cap * 2 : 16;
		struct poison_hit *n = realloc(v->hits, ncap * sizeof(*n));
		if (!n) {
			set_err(v->err, "out of memory");
			return -1;
		}
		v->hits = n;
		v->hits_cap = ncap;
	}
	/*
	 * hva: the host page the hit reports — SIGBUS gives it directly; an
	 * MMIO / memory-fault exit gives a GPA, translated by the memslot table.
	 */
	uint64_t hit_hva;
	if (strcmp(how, "sigbus") == 0 && addr_hint)
		hit_hva = addr_hint & ~(uint64_t)(PAGE_SZ - 1);
	else
		hit_hva = gpa_to_hva(c, (addr_hint ? addr_hint : gpa) & ~(uint64_t)(PAGE_SZ - 1));
	v->hits[v->nhits++] = (struct poison_hit){
		.loop = loop, .addr = hva, .gpa = gpa, .hva = hit_hva, .how = how,
		.si_code = si_code, .rip = regs.rip,
	};
	return 0;
}

static void count_exit(struct vcpu_state *v, unsigned reason)
{
	if (reason < EXIT_SLOTS)
		v->exits[reason]++;
	else
		v->exits_other++;
}

static void count_exit_err(struct vcpu_state *v, unsigned reason)
{
	if (reason < EXIT_SLOTS)
		v->exits_err[reason]++;
	else
		v->exits_err_other++;
}

static uint64_t thread_cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/*
 * This vCPU's fault phase of the pass is over (or it failed): it will not
 * fault again, so the --sync handler stops waiting for it.  With wait, hold
 * it until every vCPU got here (--touch-loops: the touch phase starts when
 * all pages of the pass are resolved).
 */
static void fault_phase_over(struct kvm_guest_ctx *c, struct vcpu_state *v, bool wait)
{
	pthread_mutex_lock(&c->lock);
	if (!v->fault_phase_over) {
		v->fault_phase_over = true;
		c->touch_arrived++;
		__atomic_sub_fetch(&c->running_vcpus, 1, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&c->cond);
	}
	while (wait && c->touch_arrived < c->opt.vcpus && !c->quit)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

/* Run one pass of this vCPU until the guest reports done and halts. */
static int vcpu_run_pass(struct kvm_guest_ctx *c, struct vcpu_state *v, unsigned loop)
{
	struct kvm_run *run = v->run;
	bool done = false;
	uint32_t expect_done = seed_for(v->idx, loop) + (uint32_t)c->opt.pages;

	for (;;) {
		bool touching = v->in_touch;
		uint64_t c0 = touching ? 0 : thread_cpu_ns();
		uint64_t t0 = now_ns();
		int r = ioctl(v->fd, KVM_RUN, 0);
		int e = errno;
		uint64_t t1 = now_ns();

		v->run_ns += t1 - t0;
		v->kvm_run_calls++;
		if (touching) {
			v->touch_ns += t1 - t0;
			v->touch_run_calls++;
		} else {
			/* Off-CPU inside KVM_RUN: asleep in handle_userfault, or runnable. */
			uint64_t cpu = thread_cpu_ns() - c0;
			if (t1 - t0 > cpu)
				v->offcpu_ns += (t1 - t0) - cpu;
		}

		/* Every return of KVM_RUN is counted exactly once, here. */
		if (r == 0) {
			count_exit(v, run->exit_reason);
		} else if (e == EFAULT && run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
			v->run_efault++;
			count_exit(v, run->exit_reason);
		} else {
			if (e == EINTR || e == EAGAIN)
				v->run_eintr++;
			else if (e == EFAULT)
				v->run_efault++;
			count_exit_err(v, run->exit_reason);
		}

		if (v->sigbus_pending) {
			uint64_t a = (uint64_t)(uintptr_t)v->sigbus_addr;
			int code = v->sigbus_code;
			v->sigbus_pending = 0;
			if (vcpu_poison_hit(c, v, loop, "sigbus", a, code) < 0)
				return -1;
			continue;
		}
		if (r < 0) {
			if (e == EINTR || e == EAGAIN)
				continue;
			if (e == EFAULT) {
				if (run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
					const struct kvm_memory_fault_compat *mf = (const void *)&run->mmio;
					if (vcpu_poison_hit(c, v, loop, "memory_fault", mf->gpa, 0) < 0)
						return -1;
				} else if (vcpu_poison_hit(c, v, loop, "efault", 0, 0) < 0) {
					return -1;
				}
				continue;
			}
			set_err(v->err, "KVM_RUN: %s", strerror(e));
			return -1;
		}

		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			uint32_t val = 0;
			if (kvm_vm_io_out32(run, &val, v->err) < 0)
				return -1;
			if (run->io.port == PORT_PAGE) {
				if (val != v->page_value) {
					set_err(v->err, "per-page out carried 0x%x, expected 0x%x",
						val, v->page_value);
					return -1;
				}
				v->page_value++;
				v->io_page_exits++;
			} else if (run->io.port == PORT_TOUCH) {
				if (!c->opt.touch_loops || v->in_touch || val != expect_done) {
					set_err(v->err, "unexpected touch-phase start (value 0x%x, "
						"expected 0x%x)", val, expect_done);
					return -1;
				}
				/* Outside KVM_RUN, so not in the phase's time. */
				fault_phase_over(c, v, true);
				v->in_touch = true;
			} else if (run->io.port == PORT_DONE) {
				if (val != expect_done) {
					set_err(v->err, "guest reported done with value 0x%x, expected 0x%x",
						val, expect_done);
					return -1;
				}
				if (c->opt.touch_loops && !v->in_touch) {
					set_err(v->err, "guest reported done without a touch phase");
					return -1;
				}
				if (v->in_touch) {
					v->in_touch = false;
					v->touch_bytes += (uint64_t)c->opt.touch_loops * c->opt.pages * PAGE_SZ;
				}
				done = true;
			} else {
				set_err(v->err, "unexpected out to port 0x%x", run->io.port);
				return -1;
			}
			break;
		}
		case KVM_EXIT_HLT:
			if (!done) {
				set_err(v->err, "guest halted before reporting done");
				return -1;
			}
			return 0;
		case KVM_EXIT_INTR:
			break;
		case KVM_EXIT_MMIO: {
			uint64_t gpa = run->mmio.phys_addr;
			if (gpa == MMIO_GPA && c->opt.mmio_per_page) {
				uint32_t val = 0;
				if (!run->mmio.is_write || run->mmio.len != 4) {
					set_err(v->err, "unexpected MMIO %s of %u bytes at GPA 0x%" PRIx64,
						run->mmio.is_write ? "write" : "read", run->mmio.len, gpa);
					return -1;
				}
				memcpy(&val, run->mmio.data, 4);
				if (val != v->mmio_value) {
					set_err(v->err, "per-page MMIO write carried 0x%x, expected 0x%x",
						val, v->mmio_value);
					return -1;
				}
				v->mmio_value++;
				v->mmio_page_exits++;
				break;
			}
			if (run->mmio.is_write && gpa >= DATA_GPA && gpa < DATA_GPA + c->data_len) {
				/* Emulated write whose copy to the host page failed. */
				if (vcpu_poison_hit(c, v, loop, "mmio", gpa, 0) < 0)
					return -1;
				struct poison_hit *h = &v->hits[v->nhits - 1];
				h->mmio_len = run->mmio.len;
				memcpy(&h->mmio_data, run->mmio.data,
				       run->mmio.len < 4 ? run->mmio.len : 4);
				break;
			}
			set_err(v->err, "unexpected MMIO %s at GPA 0x%" PRIx64 " len %u",
				run->mmio.is_write ? "write" : "read", gpa, run->mmio.len);
			return -1;
		}
		case KVM_EXIT_MEMORY_FAULT: {
			const struct kvm_memory_fault_compat *mf = (const void *)&run->mmio;
			if (vcpu_poison_hit(c, v, loop, "memory_fault", mf->gpa, 0) < 0)
				return -1;
			break;
		}
		default:
			kvm_vm_exit_err(run, v->err);
			return -1;
		}
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu_state *v = arg;
	struct kvm_guest_ctx *c = &kvm_guest_ctx;
	unsigned seen_gen = 0;

	pthread_mutex_lock(&c->lock);
	v->tid = gettid();
	c->tids_known++;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);

	for (;;) {
		unsigned loop;

		pthread_mutex_lock(&c->lock);
		while (c->start_gen == seen_gen && !c->quit)
			pthread_cond_wait(&c->cond, &c->lock);
		if (c->quit) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		seen_gen = c->start_gen;
		loop = __atomic_load_n(&c->cur_loop, __ATOMIC_ACQUIRE);
		v->in_touch = false;
		v->fault_phase_over = false;
		pthread_mutex_unlock(&c->lock);

		int r = vcpu_init_regs(c, v, loop);
		if (r == 0 && c->opt.sync)
			pthread_barrier_wait(&c->sync_barrier);
		if (r == 0)
			r = vcpu_run_pass(c, v, loop);
		if (r < 0)
			v->failed = true;
		else
			v->done_passes++;
		fault_phase_over(c, v, false); /* no-op if the touch phase did it */

		pthread_mutex_lock(&c->lock);
		c->done_count++;
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
		if (r < 0)
			break; /* main sees failed and stops the run */
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* userfaultfd handler thread                                          */

/*
 * When did the vCPU start waiting?  (kvm_fault "fault_lb_ns", "fault_ns")
 *
 * The handler never sleeps blind: between faults, and while it holds a
 * fault for --delay-us, it waits in ppoll() on the userfaultfd (timer slack
 * 1 ns), so a new fault message wakes it at once and read_ns is taken right
 * after read() returns.  (Faults that arrive while another is being held
 * are read and time-stamped at once, and served in order afterwards.)
 * Every read() that comes back short (EAGAIN, or fewer messages than the
 * buffer holds) proves the queue empty when that read started, so what is
 * read later was queued after it.  For each fault:
 *   fault_lb_ns = max(that last "queue empty" time, the pass start, the
 *                 start of the COPY/POISON that woke this vCPU from its
 *                 previous fault): the message was queued within
 *                 [fault_lb_ns, read_ns] — guaranteed;
 *   fault_ns    = if the message woke the handler out of ppoll()
 *                 (read_how "woken"): when ppoll() returned, i.e. read_ns
 *                 less the read() itself; if it was already queued when
 *                 the handler came back from other work (read_how
 *                 "queued"): read_ns.
 * Expected error, checked per fault against the vCPU thread's sched_switch
 * out of handle_userfault (tracefs, mono clock) on this 2-CPU VM host,
 * kernel 6.18, --delay-us 0..2000, 1-2 vCPUs, --sync too: fault_ns came
 * 1-35 us after the switch-out, p50 3-10 us (read_ns 1.5-2.5 us later
 * still) — the handler's wake-up latency; "queued" ones ranged from 4 us
 * before (the message is queued before the vCPU is off the CPU) to 60 us
 * after (the handler was busy); the middle of [fault_lb_ns, read_ns] was
 * 12-25 us early, so it is not used.  A loaded host adds the time the
 * handler waits for a CPU.  Subtracting a start-up calibration of the
 * wake-up latency was tried and dropped: it depends on where the scheduler
 * puts the woken handler (same CPU ~6 us, another, halted CPU of the host
 * VM 15-50 us) and made the estimate worse.
 *   wake_ns     = when the COPY/POISON woke the vCPU: resolve_start_ns plus
 *                 the handler's CPU time inside the ioctl (see
 *                 resolve_fault()), at most resolved_ns; measured 2-7 us
 *                 after sched_waking, p50 (resolved_ns: 4-8 us, up to 50 us
 *                 when the woken vCPU preempts the handler).
 * blocked_ns sums resolved_ns - read_ns, QEMU's definition (its fault
 * thread's read to the page placed); blocked_est_ns sums wake_ns - fault_ns.
 * Neither covers the guest access -> message queued part (KVM exit, GUP,
 * handle_userfault; ~1 us) or the vCPU's wake-to-run delay (10-20 us here).
 * The vCPU thread measures the whole span in aggregate: run_offcpu_ns in
 * kvm_vcpu_summary is its time inside KVM_RUN spent off a CPU (wall clock
 * minus CLOCK_THREAD_CPUTIME_ID around every KVM_RUN of the fault phase):
 * asleep in handle_userfault plus runnable-but-waiting — the "blocked until
 * running again" span a scheduler-based tracer measures (within ~2-4% of
 * the sched_switch sums here).
 */
static int record_fault(struct kvm_guest_ctx *c, const struct uffd_msg *m,
			uint64_t read_ns, uint64_t poll_ns)
{
	pid_t tid = (pid_t)m->arg.pagefault.feat.ptid;
	int vcpu = vcpu_of_tid(c, tid);
	uint64_t lb = c->empty_seen_ns, pass_start = __atomic_load_n(&c->pass_start_ns, __ATOMIC_ACQUIRE);

	if (pass_start > lb)
		lb = pass_start;
	if (vcpu >= 0 && c->vcpu_resolve_start[vcpu] > lb)
		lb = c->vcpu_resolve_start[vcpu];
	if (lb > read_ns)
		lb = read_ns;
	uint64_t est = poll_ns ? poll_ns : read_ns;
	if (est < lb)
		est = lb;
	if (est > read_ns)
		est = read_ns;

	pthread_mutex_lock(&c->faults_lock);
	if (c->nfaults == c->faults_cap) {
		size_t ncap = c->faults_cap ? c->faults_cap * 2 : 1024;
		struct fault_rec *n = realloc(c->faults, ncap * sizeof(*n));
		if (!n) {
			pthread_mutex_unlock(&c->faults_lock);
			set_err(c->handler_err, "out of memory for fault records");
			return -1;
		}
		c->faults = n;
		c->faults_cap = ncap;
	}
	c->faults[c->nfaults] = (struct fault_rec){
		.tid = tid,
		.vcpu = vcpu,
		.loop = __atomic_load_n(&c->cur_loop, __ATOMIC_ACQUIRE),
		.addr = m->arg.pagefault.address & ~(uint64_t)(PAGE_SZ - 1),
		.flags = m->arg.pagefault.flags,
		.read_ns = read_ns,
		.fault_lb_ns = lb,
		.fault_ns = est,
		.woken = poll_ns != 0,
	};
	__atomic_store_n(&c->nfaults, c->nfaults + 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&c->faults_lock);
	return 0;
}

/* Resolve fault record i with COPY or POISON; always leaves the waiter woken. */
static void resolve_fault(struct kvm_guest_ctx *c, size_t i)
{
	struct fault_rec *f = &c->faults[i];
	uint64_t addr = f->addr;
	int r;

	c->fault_seq++;
	f->poison = c->opt.poison_every && c->fault_seq % c->opt.poison_every == 0;
	f->resolve_start_ns = now_ns();
	if (f->vcpu >= 0)
		c->vcpu_resolve_start[f->vcpu] = f->resolve_start_ns;
	uint64_t cpu0 = thread_cpu_ns();
	if (f->poison) {
		struct uffdio_poison p = { .range = { .start = addr, .len = PAGE_SZ } };
		r = ioctl(c->uffd, UFFDIO_POISON, &p);
	} else {
		struct uffdio_copy cp = { .dst = addr, .src = (uint64_t)(uintptr_t)c->copy_src,
					  .len = PAGE_SZ };
		r = ioctl(c->uffd, UFFDIO_COPY, &cp);
	}
	f->err = r < 0 ? errno : 0;
	uint64_t cpu1 = thread_cpu_ns();
	f->resolved_ns = now_ns();
	/*
	 * The ioctl wakes the waiter as its last step.  If the woken vCPU then
	 * preempts the handler (small hosts), resolved_ns is late by however
	 * long the handler sat off-CPU; the handler's own CPU time inside the
	 * ioctl puts the wake-up right where its work ended.
	 */
	f->wake_ns = f->resolve_start_ns + (cpu1 - cpu0);
	if (f->wake_ns > f->resolved_ns)
		f->wake_ns = f->resolved_ns;

	if (r == 0) {
		if (addr >= (uint64_t)(uintptr_t)c->data_mem &&
		    addr < (uint64_t)(uintptr_t)c->data_mem + c->data_len) {
			size_t pg = (addr - (uint64_t)(uintptr_t)c->data_mem) / PAGE_SZ;
			__atomic_store_n(&c->page_state[pg], f->poison ? PAGE_POISONED : PAGE_COPIED,
					 __ATOMIC_RELEASE);
		}
		if (f->poison)
			c->poisons++;
		else
			c->copies++;
		return;
	}
	/* A failed resolve does not wake the waiter: wake it explicitly. */
	if (f->err == EEXIST)
		c->eexist++;
	else
		c->resolve_errors++;
	struct uffdio_range wr = { .start = addr, .len = PAGE_SZ };
	if (ioctl(c->uffd, UFFDIO_WAKE, &wr) < 0 && !c->handler_failed) {
		c->handler_failed = true;
		set_err(c->handler_err, "UFFDIO_WAKE at 0x%" PRIx64 ": %s", addr, strerror(errno));
	}
	if (f->err != EEXIST && !c->handler_failed) {
		c->handler_failed = true;
		set_err(c->handler_err, "%s at 0x%" PRIx64 ": %s",
			f->poison ? "UFFDIO_POISON" : "UFFDIO_COPY", addr, strerror(f->err));
	}
}

/*
 * One non-blocking read() of the userfaultfd.  poll_ns: when ppoll() woke
 * the handler for these messages, else 0.  Returns messages read (0: the
 * queue was empty), -1 on a fatal error.
 */
static int uffd_read_some(struct kvm_guest_ctx *c, uint64_t poll_ns)
{
	struct uffd_msg msgs[64];
	uint64_t before = now_ns();
	ssize_t got = read(c->uffd, msgs, sizeof(msgs));
	uint64_t t = now_ns();

	if (got < 0) {
		if (errno == EAGAIN) {
			c->empty_seen_ns = before;
			return 0;
		}
		if (errno == EINTR)
			return 0;
		set_err(c->handler_err, "read(userfaultfd): %s", strerror(errno));
		return -1;
	}
	if (got % (ssize_t)sizeof(struct uffd_msg)) {
		set_err(c->handler_err, "read(userfaultfd): short message (%zd bytes)", got);
		return -1;
	}
	int nmsg = (int)(got / (ssize_t)sizeof(struct uffd_msg));
	/* Messages of one read() were all read at the same instant. */
	for (int k = 0; k < nmsg; k++) {
		if (msgs[k].event != UFFD_EVENT_PAGEFAULT) {
			c->unexpected_msgs++;
			continue;
		}
		if (record_fault(c, &msgs[k], t, poll_ns) < 0)
			return -1;
	}
	/* A short read drained the queue: anything later was queued after `before`. */
	if ((size_t)nmsg < sizeof(msgs) / sizeof(msgs[0]))
		c->empty_seen_ns = before;
	return nmsg;
}

/*
 * Read what is queued; if nothing is, wait in ppoll() up to timeout_ns
 * (-1: forever, 0: don't wait) and read what woke us.  Returns messages read, -1 on a fatal error, and
 * sets *stop when the stop eventfd fired.
 */
static int uffd_read_batch(struct kvm_guest_ctx *c, int64_t timeout_ns, bool *stop)
{
	struct pollfd pfd[2] = {
		{ .fd = c->uffd, .events = POLLIN },
		{ .fd = c->stop_efd, .events = POLLIN },
	};
	struct timespec ts, *tsp = NULL;

	int n = uffd_read_some(c, 0);
	if (n != 0 || timeout_ns == 0)
		return n;
	if (timeout_ns > 0) {
		ts.tv_sec = (time_t)(timeout_ns / 1000000000LL);
		ts.tv_nsec = (long)(timeout_ns % 1000000000LL);
		tsp = &ts;
	}
	int pr = ppoll(pfd, 2, tsp, NULL);
	uint64_t t_poll = now_ns();
	if (pr < 0) {
		if (errno == EINTR)
			return 0;
		set_err(c->handler_err, "ppoll(userfaultfd): %s", strerror(errno));
		return -1;
	}
	if (pfd[1].revents & POLLIN)
		*stop = true;
	if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
		set_err(c->handler_err, "ppoll(userfaultfd) revents 0x%x", pfd[0].revents);
		return -1;
	}
	if (!(pfd[0].revents & POLLIN))
		return 0;
	return uffd_read_some(c, t_poll);
}

/* Hold until deadline, reading (and time-stamping) new faults meanwhile. */
static int wait_reading(struct kvm_guest_ctx *c, uint64_t deadline, bool *stop)
{
	for (;;) {
		uint64_t now = now_ns();
		if (*stop || now >= deadline)
			return 0;
		if (uffd_read_batch(c, (int64_t)(deadline - now), stop) < 0)
			return -1;
	}
}

static unsigned distinct_tids(const struct kvm_guest_ctx *c, size_t from)
{
	unsigned mask = 0, n = 0;

	for (size_t i = from; i < c->nfaults; i++) {
		int v = c->faults[i].vcpu;
		if (v < 0) {
			n++;
		} else if (!(mask & (1u << v))) {
			mask |= 1u << v;
			n++;
		}
	}
	return n;
}

static void *uffd_handler_thread(void *arg)
{
	struct kvm_guest_ctx *c = arg;
	uint64_t delay_ns = c->opt.delay_us * 1000ULL;
	bool stop = false;
	size_t next = 0; /* first fault record not yet resolved */

	/* ppoll() timeouts are the --delay-us holds: no 50 us default slack. */
	if (prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL) < 0)
		fprintf(stderr, "kvm-guest: warning: PR_SET_TIMERSLACK: %s\n", strerror(errno));
	c->handler_tid = gettid();
	while (!stop || next < c->nfaults) {
		if (next == c->nfaults) {
			if (uffd_read_batch(c, -1, &stop) < 0)
				goto fatal;
			continue;
		}
		size_t end;
		if (!c->opt.sync) {
			/* One at a time, in order, each held --delay-us. */
			end = next + 1;
		} else {
			/*
			 * --sync: hold the batch until every vCPU still in its
			 * fault phase is blocked on a fault (or SYNC_GATHER_NS
			 * passed), then delay once and resolve them together.
			 */
			uint64_t deadline = now_ns() + SYNC_GATHER_NS;
			while (!stop) {
				int running = __atomic_load_n(&c->running_vcpus, __ATOMIC_ACQUIRE);
				uint64_t now = now_ns();
				if ((int)distinct_tids(c, next) >= running || now >= deadline)
					break;
				/* Re-check running_vcpus at least every ms. */
				uint64_t wait = deadline - now < 1000000 ? deadline - now : 1000000;
				if (uffd_read_batch(c, (int64_t)wait, &stop) < 0)
					goto fatal;
			}
			end = c->nfaults;
		}
		/* Faults arriving meanwhile are read (time-stamped) now, served later. */
		if (delay_ns && wait_reading(c, now_ns() + delay_ns, &stop) < 0)
			goto fatal;
		for (; next < end; next++) {
			resolve_fault(c, next);
			__atomic_store_n(&c->handled, next + 1, __ATOMIC_RELEASE);
		}
	}
	return NULL;
fatal:
	c->handler_failed = true;
	return NULL;
}

/* ------------------------------------------------------------------ */
/* passes                                                              */

static void start_threads(struct kvm_guest_ctx *c)
{
	int r;

	if (c->opt.sync &&
	    (r = pthread_barrier_init(&c->sync_barrier, NULL, c->opt.vcpus)) != 0)
		die("pthread_barrier_init: %s", strerror(r));
	struct sigaction sa = { .sa_sigaction = sigbus_handler, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL) < 0)
		die("sigaction(SIGBUS): %s", strerror(errno));

	if (!c->opt.no_uffd) {
		if ((r = pthread_create(&c->handler, NULL, uffd_handler_thread, c)) != 0)
			die("pthread_create (uffd handler): %s", strerror(r));
		c->handler_started = true;
	}
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		kvm_vm_start_vcpu(&c->vcpu[i].thread, i, vcpu_thread, &c->vcpu[i]);
		c->vcpu[i].thread_started = true;
	}
	if (c->handler_started)
		pthread_setname_np(c->handler, "uffd-handler");
	pthread_mutex_lock(&c->lock);
	while (c->tids_known < c->opt.vcpus)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	while (c->handler_started && !c->handler_tid)
		sleep_ns(100000);
}

static void announce(struct kvm_guest_ctx *c)
{
	fprintf(stderr, "READY pid=%d vcpu_tids=", getpid());
	for (unsigned i = 0; i < c->opt.vcpus; i++)
		fprintf(stderr, "%s%d", i ? "," : "", c->vcpu[i].tid);
	fprintf(stderr, " uffd=%d data_base=0x%" PRIxPTR " data_len=%zu\n",
		c->uffd, (uintptr_t)c->data_mem, c->data_len);
	fflush(stderr);
	for (unsigned i = 0; i < c->opt.vcpus; i++)
		fprintf(c->out, "{\"event\":\"kvm_vcpu\",\"vcpu\":%u,\"tid\":%d}\n",
			i, c->vcpu[i].tid);
	for (unsigned i = 0; i < c->nmemslots; i++) {
		const struct memslot_info *m = &c->memslots[i];
		fprintf(c->out, "{\"event\":\"kvm_memslot\",\"slot\":%u,\"gpa\":\"0x%" PRIx64
			"\",\"hva\":\"0x%" PRIx64 "\",\"size\":%" PRIu64 ",\"uffd\":%s}\n",
			m->slot, m->gpa, m->hva, m->size, m->uffd ? "true" : "false");
	}
	fflush(c->out);
}

/* Start one pass on every vCPU and wait until all have finished it. */
static int run_pass(struct kvm_guest_ctx *c, unsigned loop)
{
	struct timespec deadline;
	int rc = 0;

	pthread_mutex_lock(&c->lock);
	__atomic_store_n(&c->cur_loop, loop, __ATOMIC_RELEASE);
	__atomic_store_n(&c->running_vcpus, (int)c->opt.vcpus, __ATOMIC_RELEASE);
	__atomic_store_n(&c->pass_start_ns, now_ns(), __ATOMIC_RELEASE);
	c->touch_arrived = 0;
	c->done_count = 0;
	c->start_gen++;
	pthread_cond_broadcast(&c->cond);

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += (time_t)c->opt.timeout_s;
	while (c->done_count < c->opt.vcpus) {
		if (c->opt.timeout_s == 0) {
			pthread_cond_wait(&c->cond, &c->lock);
		} else if (pthread_cond_timedwait(&c->cond, &c->lock, &deadline) == ETIMEDOUT) {
			rc = -1;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	/* every vCPU is past its faults; let the handler finish its bookkeeping */
	while (rc == 0 && __atomic_load_n(&c->handled, __ATOMIC_ACQUIRE) <
			  __atomic_load_n(&c->nfaults, __ATOMIC_ACQUIRE) && !c->handler_failed) {
		struct timespec now;

		clock_gettime(CLOCK_REALTIME, &now);
		if (c->opt.timeout_s && (now.tv_sec > deadline.tv_sec ||
					 (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec)))
			rc = -1;
		else
			sleep_ns(100000);
	}
	if (rc < 0) {
		fprintf(stderr, "kvm-guest: pass %u timed out after %lu s: %u of %u vCPUs done, "
			"%zu faults read so far\n", loop, c->opt.timeout_s, c->done_count,
			c->opt.vcpus, c->nfaults);
		for (unsigned i = 0; i < c->opt.vcpus; i++) {
			char path[64], wchan[64] = "?";
			snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", c->vcpu[i].tid);
			FILE *f = fopen(path, "r");
			if (f) {
				if (!fgets(wchan, sizeof(wchan), f))
					strcpy(wchan, "?");
				fclose(f);
			}
			fprintf(stderr, "kvm-guest:   vCPU %u tid %d wchan %s\n", i, c->vcpu[i].tid, wchan);
		}
	}
	return rc;
}

/*
 * After a pass: every page of every slice must have been faulted and
 * either copied (and hold the guest's value over the COPY pattern) or
 * poisoned (and the owning vCPU must have seen the poison).
 */
static void verify_pass(struct kvm_guest_ctx *c, unsigned loop)
{
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		struct vcpu_state *v = &c->vcpu[i];
		uint32_t seed = seed_for(i, loop);

		for (unsigned long p = 0; p < c->opt.pages; p++) {
			uint8_t *page = v->slice_hva + p * c->opt.stride * PAGE_SZ;
			size_t pg = (size_t)(page - c->data_mem) / PAGE_SZ;
			uint8_t st = __atomic_load_n(&c->page_state[pg], __ATOMIC_ACQUIRE);

			if (st == PAGE_COPIED || c->opt.no_uffd) {
				/* After a touch phase every dword but the first is TOUCH_FILL;
				 * without a uffd the kernel's zero page was there before. */
				uint32_t fill = c->opt.touch_loops ? TOUCH_FILL :
						c->opt.no_uffd ? 0 : 0x01010101u * COPY_FILL;
				uint32_t got, tail, last;
				memcpy(&got, page, 4);
				memcpy(&tail, page + 4, 4);
				memcpy(&last, page + PAGE_SZ - 4, 4);
				if (got == seed + (uint32_t)p && tail == fill && last == fill) {
					v->verified++;
				} else {
					if (v->verify_errors++ < 5)
						fprintf(stderr, "kvm-guest: loop %u vCPU %u page %lu (%p): "
							"found 0x%08x/0x%08x/0x%08x, expected 0x%08x/0x%08x/0x%08x\n",
							loop, i, p, (void *)page, got, tail, last,
							seed + (uint32_t)p, fill, fill);
				}
			} else if (st == PAGE_POISONED) {
				bool seen = false;
				for (size_t h = 0; h < v->nhits && !seen; h++)
					seen = v->hits[h].loop == loop &&
					       v->hits[h].addr == (uint64_t)(uintptr_t)page;
				if (seen) {
					v->verified++;
				} else if (v->verify_errors++ < 5) {
					fprintf(stderr, "kvm-guest: loop %u vCPU %u page %lu (%p): poisoned "
						"but the vCPU never reported hitting it\n",
						loop, i, p, (void *)page);
				}
			} else if (v->verify_errors++ < 5) {
				fprintf(stderr, "kvm-guest: loop %u vCPU %u page %lu (%p): never "
					"faulted/served\n", loop, i, p, (void *)page);
			}
		}
	}
}

/* Drop the data pages (and poison markers) so the next pass faults again. */
static void reset_data(struct kvm_guest_ctx *c)
{
	if (madvise(c->data_mem, c->data_len, MADV_DONTNEED) < 0)
		die("madvise(MADV_DONTNEED) on data memory: %s", strerror(errno));
	memset(c->page_state, 0, c->data_pages);
}

static void stop_threads(struct kvm_guest_ctx *c, bool join)
{
	uint64_t one = 1;

	pthread_mutex_lock(&c->lock);
	c->quit = true;
	pthread_cond_broadcast(&c->cond);
	pthread_mutex_unlock(&c->lock);
	if (write(c->stop_efd, &one, sizeof(one)) < 0)
		fprintf(stderr, "kvm-guest: warning: eventfd write: %s\n", strerror(errno));
	if (!join)
		return;
	for (unsigned i = 0; i < c->opt.vcpus; i++)
		if (c->vcpu[i].thread_started)
			pthread_join(c->vcpu[i].thread, NULL);
	if (c->handler_started)
		pthread_join(c->handler, NULL);
}

/* ------------------------------------------------------------------ */
/* reporting                                                           */

static void print_exit_map(FILE *o, const uint64_t *exits, uint64_t other)
{
	bool first = true;

	fputc('{', o);
	for (unsigned r = 0; r < EXIT_SLOTS; r++) {
		if (!exits[r])
			continue;
		const char *n = kvm_vm_exit_name(r);
		if (n)
			fprintf(o, "%s\"%s\":%" PRIu64, first ? "" : ",", n, exits[r]);
		else
			fprintf(o, "%s\"KVM_EXIT_%u\":%" PRIu64, first ? "" : ",", r, exits[r]);
		first = false;
	}
	if (other)
		fprintf(o, "%s\"other\":%" PRIu64, first ? "" : ",", other);
	fputc('}', o);
}

static void print_exits(FILE *o, const struct vcpu_state *v)
{
	print_exit_map(o, v->exits, v->exits_other);
}

static void print_hist(FILE *o, const uint64_t *h)
{
	fputc('[', o);
	for (unsigned b = 0; b < LAT_BUCKETS; b++)
		fprintf(o, "%s%" PRIu64, b ? "," : "", h[b]);
	fputc(']', o);
}

struct sweep_ev {
	uint64_t t;
	int vcpu;
	int d;               /* +1 starts blocking, -1 stops */
};

static int cmp_ev(const void *a, const void *b)
{
	const struct sweep_ev *x = a, *y = b;
	if (x->t != y->t)
		return x->t < y->t ? -1 : 1;
	return x->d - y->d;  /* ends before starts at the same instant */
}

/*
 * Total time during which every vCPU was blocked at once: sweep over the
 * per-fault intervals [read_ns, resolved_ns] (or, with est, the estimates
 * [fault_ns, wake_ns]), counting vCPUs with at least one open interval.  Like QEMU's
 * postcopy-blocktime, a vCPU that is not blocked (running, halted, done)
 * ends the all-blocked span.  Call with faults_lock held.
 */
static uint64_t all_vcpu_blocked(const struct kvm_guest_ctx *c, bool est)
{
	struct sweep_ev *ev = calloc(2 * c->nfaults + 1, sizeof(*ev));
	unsigned depth[MAX_VCPUS] = { 0 }, blocked = 0;
	uint64_t total = 0, prev = 0;
	size_t n = 0;

	if (!ev)
		die("out of memory");
	for (size_t i = 0; i < c->nfaults; i++) {
		const struct fault_rec *f = &c->faults[i];
		uint64_t start = est ? f->fault_ns : f->read_ns;
		uint64_t end = est ? f->wake_ns : f->resolved_ns;
		if (f->vcpu < 0 || !f->resolved_ns || start >= end)
			continue;
		ev[n++] = (struct sweep_ev){ .t = start, .vcpu = f->vcpu, .d = 1 };
		ev[n++] = (struct sweep_ev){ .t = end, .vcpu = f->vcpu, .d = -1 };
	}
	qsort(ev, n, sizeof(*ev), cmp_ev);
	for (size_t i = 0; i < n; i++) {
		if (blocked == c->opt.vcpus)
			total += ev[i].t - prev;
		prev = ev[i].t;
		if (ev[i].d > 0) {
			if (depth[ev[i].vcpu]++ == 0)
				blocked++;
		} else if (--depth[ev[i].vcpu] == 0) {
			blocked--;
		}
	}
	free(ev);
	return total;
}

/* Returns true when everything is consistent. */
static bool report(struct kvm_guest_ctx *c, uint64_t wall_ns)
{
	FILE *o = c->out;
	uint64_t pages_per_vcpu = (uint64_t)c->opt.pages * c->opt.loops;
	uint64_t expected_per_vcpu = c->opt.no_uffd ? 0 : pages_per_vcpu;
	uint64_t unattributed = 0, slice_mismatch = 0, total_hits = 0, total_verified = 0;
	uint64_t total_verify_err = 0, total_run_ns = 0;
	uint64_t hist_all[LAT_BUCKETS] = { 0 }, lat_sum_all = 0, lat_n_all = 0;
	uint64_t total_blocked = 0, total_blocked_est = 0, total_exits = 0;
	uint64_t total_touch_bytes = 0, total_touch_ns = 0;
	double total_touch_rate = 0;
	bool exit_accounting_ok = true, exits_as_expected = true;
	bool ok = !c->handler_failed;
	size_t n = 0;

	pthread_mutex_lock(&c->faults_lock);
	uint64_t *rtt = calloc(c->nfaults ? c->nfaults : 1, sizeof(*rtt));
	if (!rtt)
		die("out of memory");
	for (size_t i = 0; i < c->nfaults; i++) {
		const struct fault_rec *f = &c->faults[i];
		const char *by = f->poison ? "poison" : "copy";
		if (f->resolved_ns) {
			uint64_t lat = f->resolved_ns - f->read_ns;
			rtt[n++] = lat;
			hist_all[lat_bucket(lat)]++;
			lat_sum_all += lat;
			lat_n_all++;
			if (f->vcpu >= 0) {
				struct vcpu_state *v = &c->vcpu[f->vcpu];
				v->resolved++;
				v->blocked_ns += lat;
				v->blocked_est_ns += f->wake_ns - f->fault_ns;
				v->hist_us[lat_bucket(lat)]++;
			}
		} else {
			by = "none"; /* still pending (timeout) */
		}
		if (f->vcpu < 0) {
			unattributed++;
		} else {
			struct vcpu_state *v = &c->vcpu[f->vcpu];
			uint64_t lo = (uint64_t)(uintptr_t)v->slice_hva;
			uint64_t hi = lo + c->opt.pages * c->opt.stride * PAGE_SZ;
			if (f->addr < lo || f->addr >= hi)
				slice_mismatch++;
			v->faults++;
		}
		fprintf(o, "{\"event\":\"kvm_fault\",\"tid\":%d,\"vcpu\":%d,\"addr\":\"0x%" PRIx64
			"\",\"read_ns\":%" PRIu64 ",\"resolved_ns\":%" PRIu64
			",\"resolved_by\":\"%s\",\"loop\":%u,\"flags\":%" PRIu64 ",\"err\":%d"
			",\"fault_ns\":%" PRIu64 ",\"fault_lb_ns\":%" PRIu64
			",\"resolve_start_ns\":%" PRIu64 ",\"wake_ns\":%" PRIu64
			",\"read_how\":\"%s\"}\n",
			f->tid, f->vcpu, f->addr, f->read_ns, f->resolved_ns,
			by, f->loop, f->flags, f->err, f->fault_ns, f->fault_lb_ns,
			f->resolve_start_ns, f->wake_ns, f->woken ? "woken" : "queued");
	}
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		struct vcpu_state *v = &c->vcpu[i];
		for (size_t h = 0; h < v->nhits; h++) {
			const struct poison_hit *p = &v->hits[h];
			fprintf(o, "{\"event\":\"kvm_poison_hit\",\"vcpu\":%u,\"tid\":%d,\"loop\":%u,"
				"\"addr\":\"0x%" PRIx64 "\",\"gpa\":\"0x%" PRIx64 "\",\"how\":\"%s\","
				"\"si_code\":%d,\"rip\":\"0x%" PRIx64 "\",\"mmio_len\":%u,"
				"\"mmio_data\":\"0x%x\",\"hva\":\"0x%" PRIx64 "\"}\n",
				i, v->tid, p->loop, p->addr, p->gpa, p->how, p->si_code, p->rip,
				p->mmio_len, p->mmio_data, p->hva);
		}
	}
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		struct vcpu_state *v = &c->vcpu[i];
		fprintf(o, "{\"event\":\"kvm_vcpu_summary\",\"vcpu\":%u,\"tid\":%d,\"faults\":%" PRIu64
			",\"expected_faults\":%" PRIu64 ",\"run_ns\":%" PRIu64
			",\"kvm_run_calls\":%" PRIu64 ",\"exits\":",
			i, v->tid, v->faults, expected_per_vcpu, v->run_ns, v->kvm_run_calls);
		print_exits(o, v);
		fprintf(o, ",\"run_eintr\":%" PRIu64 ",\"run_efault\":%" PRIu64
			",\"io_page_exits\":%" PRIu64 ",\"poison_hits\":%zu,\"poison_addrs\":[",
			v->run_eintr, v->run_efault, v->io_page_exits, v->nhits);
		for (size_t h = 0; h < v->nhits; h++)
			fprintf(o, "%s\"0x%" PRIx64 "\"", h ? "," : "", v->hits[h].addr);
		fprintf(o, "],\"pages_verified\":%" PRIu64 ",\"verify_errors\":%" PRIu64
			",\"passes\":%" PRIu64,
			v->verified, v->verify_errors, v->done_passes);

		/* Exits: every KVM_RUN return in exactly one of exits / exits_on_error. */
		uint64_t nexits = v->exits_other, nerr = v->exits_err_other, mmio_hits = 0;
		for (unsigned r = 0; r < EXIT_SLOTS; r++) {
			nexits += v->exits[r];
			nerr += v->exits_err[r];
		}
		for (size_t h = 0; h < v->nhits; h++)
			mmio_hits += strcmp(v->hits[h].how, "mmio") == 0;
		if (nexits + nerr != v->kvm_run_calls)
			exit_accounting_ok = false;
		uint64_t exp_io = c->opt.loops * (c->opt.pages * (c->opt.io_per_page ? 1 : 0) + 1 +
						  (c->opt.touch_loops ? 1 : 0));
		uint64_t exp_mmio = c->opt.loops * c->opt.pages * (c->opt.mmio_per_page ? 1 : 0) + mmio_hits;
		uint64_t exp_hlt = c->opt.loops;
		if (v->exits[KVM_EXIT_IO] != exp_io || v->exits[KVM_EXIT_MMIO] != exp_mmio ||
		    v->exits[KVM_EXIT_HLT] != exp_hlt)
			exits_as_expected = false;
		fprintf(o, ",\"exits_total\":%" PRIu64 ",\"exits_on_error\":", nexits);
		print_exit_map(o, v->exits_err, v->exits_err_other);
		fprintf(o, ",\"expected_exits\":{\"KVM_EXIT_IO\":%" PRIu64 ",\"KVM_EXIT_MMIO\":%"
			PRIu64 ",\"KVM_EXIT_HLT\":%" PRIu64 "},\"mmio_page_exits\":%" PRIu64,
			exp_io, exp_mmio, exp_hlt, v->mmio_page_exits);

		/* Own blocked time (QEMU 10.1 postcopy-vcpu-blocktime / -vcpu-latency). */
		fprintf(o, ",\"blocked_ns\":%" PRIu64 ",\"blocked_est_ns\":%" PRIu64
			",\"avg_latency_ns\":%" PRIu64 ",\"hist_us\":",
			v->blocked_ns, v->blocked_est_ns, v->resolved ? v->blocked_ns / v->resolved : 0);
		print_hist(o, v->hist_us);
		fprintf(o, ",\"run_offcpu_ns\":%" PRIu64, v->offcpu_ns);

		double rate = v->touch_ns ? (double)v->touch_bytes * 1e9 / (double)v->touch_ns : 0;
		fprintf(o, ",\"touch_bytes\":%" PRIu64 ",\"touch_ns\":%" PRIu64
			",\"touch_run_calls\":%" PRIu64 ",\"touch_bytes_per_s\":%.0f",
			v->touch_bytes, v->touch_ns, v->touch_run_calls, rate);
		fprintf(o, "%s%s%s}\n", v->failed ? ",\"error\":\"" : "", v->failed ? v->err : "",
			v->failed ? "\"" : "");
		if (v->failed || v->faults != expected_per_vcpu || v->verify_errors ||
		    v->verified != pages_per_vcpu || v->done_passes != c->opt.loops)
			ok = false;
		if (c->opt.touch_loops &&
		    v->touch_bytes != c->opt.loops * c->opt.touch_loops * c->opt.pages * PAGE_SZ)
			ok = false;
		total_blocked += v->blocked_ns;
		total_blocked_est += v->blocked_est_ns;
		total_exits += nexits;
		total_touch_bytes += v->touch_bytes;
		total_touch_ns += v->touch_ns;
		total_touch_rate += rate;
		total_hits += v->nhits;
		total_verified += v->verified;
		total_verify_err += v->verify_errors;
		total_run_ns += v->run_ns;
	}
	if (unattributed || slice_mismatch || c->eexist || c->resolve_errors || c->unexpected_msgs)
		ok = false;
	if (!exit_accounting_ok || !exits_as_expected)
		ok = false;
	uint64_t all_blocked = all_vcpu_blocked(c, false);
	uint64_t all_blocked_est = all_vcpu_blocked(c, true);

	qsort(rtt, n, sizeof(*rtt), cmp_u64);
	uint64_t sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += rtt[i];
	uint64_t rmin = n ? rtt[0] : 0, rmax = n ? rtt[n - 1] : 0;
	uint64_t p50 = n ? rtt[n / 2] : 0, p99 = n ? rtt[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] : 0;
	uint64_t mean = n ? sum / n : 0;
	uint64_t expected_total = expected_per_vcpu * c->opt.vcpus;

	fprintf(o, "{\"event\":\"kvm_summary\",\"faults\":%zu,\"expected_faults\":%" PRIu64
		",\"vcpus\":%u,\"pages_per_vcpu\":%lu,\"stride\":%lu,\"loops\":%lu"
		",\"delay_us\":%lu,\"poison_every\":%lu,\"sync\":%s"
		",\"copies\":%" PRIu64 ",\"poisons\":%" PRIu64 ",\"poison_hits\":%" PRIu64
		",\"eexist\":%" PRIu64 ",\"resolve_errors\":%" PRIu64 ",\"unattributed\":%" PRIu64
		",\"slice_mismatch\":%" PRIu64 ",\"pages_verified\":%" PRIu64
		",\"verify_errors\":%" PRIu64 ",\"run_ns\":%" PRIu64 ",\"wall_ns\":%" PRIu64
		",\"handler_tid\":%d,\"uffd_features\":\"0x%" PRIx64 "\""
		",\"rtt_ns\":{\"min\":%" PRIu64 ",\"p50\":%" PRIu64 ",\"p99\":%" PRIu64
		",\"max\":%" PRIu64 ",\"mean\":%" PRIu64 "}",
		c->nfaults, expected_total, c->opt.vcpus, c->opt.pages, c->opt.stride, c->opt.loops,
		c->opt.delay_us, c->opt.poison_every, c->opt.sync ? "true" : "false",
		c->copies, c->poisons, total_hits, c->eexist, c->resolve_errors, unattributed,
		slice_mismatch, total_verified, total_verify_err, total_run_ns, wall_ns,
		c->handler_tid, c->uffd_features, rmin, p50, p99, rmax, mean);
	fprintf(o, ",\"io_per_page\":%s,\"mmio_per_page\":%s,\"touch_loops\":%lu"
		",\"exits_total\":%" PRIu64 ",\"exit_accounting_ok\":%s,\"exits_as_expected\":%s"
		",\"blocked_ns\":%" PRIu64 ",\"blocked_est_ns\":%" PRIu64
		",\"all_vcpu_blocked_ns\":%" PRIu64 ",\"all_vcpu_blocked_est_ns\":%" PRIu64
		",\"avg_latency_ns\":%" PRIu64 ",\"hist_us\":",
		c->opt.io_per_page ? "true" : "false", c->opt.mmio_per_page ? "true" : "false",
		c->opt.touch_loops, total_exits, exit_accounting_ok ? "true" : "false",
		exits_as_expected ? "true" : "false", total_blocked, total_blocked_est,
		all_blocked, all_blocked_est, lat_n_all ? lat_sum_all / lat_n_all : 0);
	print_hist(o, hist_all);
	fprintf(o, ",\"touch_bytes\":%" PRIu64 ",\"touch_ns\":%" PRIu64 ",\"touch_bytes_per_s\":%.0f"
		",\"ok\":%s%s%s%s}\n",
		total_touch_bytes, total_touch_ns,
		total_touch_rate, ok ? "true" : "false",
		c->handler_failed ? ",\"error\":\"" : "", c->handler_failed ? c->handler_err : "",
		c->handler_failed ? "\"" : "");
	fflush(o);

	fprintf(stderr, "kvm-guest: %s: %u vCPU x %lu pages x %lu loop(s): %zu/%" PRIu64
		" faults (%" PRIu64 " copy, %" PRIu64 " poison, %" PRIu64 " poison hits), %"
		PRIu64 "/%" PRIu64 " pages verified; handler read->resolved p50 %.1f us, p99 %.1f us, "
		"max %.1f us; wall %.1f ms\n",
		ok ? "OK" : "FAILED", c->opt.vcpus, c->opt.pages, c->opt.loops, c->nfaults,
		expected_total, c->copies, c->poisons, total_hits, total_verified,
		pages_per_vcpu * c->opt.vcpus,
		p50 / 1e3, p99 / 1e3, rmax / 1e3, wall_ns / 1e6);
	if (c->handler_failed)
		fprintf(stderr, "kvm-guest: uffd handler: %s\n", c->handler_err);
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		const struct vcpu_state *v = &c->vcpu[i];
		if (v->failed)
			fprintf(stderr, "kvm-guest: vCPU %u (tid %d): %s\n", i, v->tid, v->err);
		else if (v->faults != expected_per_vcpu)
			fprintf(stderr, "kvm-guest: vCPU %u (tid %d): %" PRIu64 " faults, expected %"
				PRIu64 "\n", i, v->tid, v->faults, expected_per_vcpu);
	}
	if (unattributed)
		fprintf(stderr, "kvm-guest: %" PRIu64 " faults with a ptid that is no vCPU\n", unattributed);
	if (slice_mismatch)
		fprintf(stderr, "kvm-guest: %" PRIu64 " faults outside the faulting vCPU's slice\n",
			slice_mismatch);
	if (c->eexist)
		fprintf(stderr, "kvm-guest: %" PRIu64 " duplicate fault messages (resolve gave EEXIST)\n",
			c->eexist);
	if (!exit_accounting_ok)
		fprintf(stderr, "kvm-guest: KVM_RUN returns and counted exits disagree "
			"(kvm_run_calls != exits + exits_on_error)\n");
	if (!exits_as_expected)
		fprintf(stderr, "kvm-guest: exit counts differ from expected_exits "
			"(see kvm_vcpu_summary)\n");
	if (c->opt.touch_loops)
		fprintf(stderr, "kvm-guest: touch phase: %" PRIu64 " bytes in %.1f ms inside KVM_RUN "
			"(all vCPUs), %.2f MB/s total\n", total_touch_bytes, total_touch_ns / 1e6,
			total_touch_rate / 1e6);
	pthread_mutex_unlock(&c->faults_lock);
	free(rtt);
	return ok;
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct kvm_guest_ctx *c = &kvm_guest_ctx;
	bool ok = true;

	parse_options(&c->opt, argc, argv);
	if (c->opt.out_path) {
		c->out = fopen(c->opt.out_path, "w");
		if (!c->out)
			die("--out %s: %s", c->opt.out_path, strerror(errno));
	} else {
		c->out = stdout;
	}

	vm_setup(c);
	if (!c->opt.no_uffd) {
		uffd_setup(c);
	} else if ((c->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
		die("eventfd: %s", strerror(errno));
	}
	start_threads(c);
	announce(c);
	if (c->opt.start_delay_ms)
		sleep_ns(c->opt.start_delay_ms * 1000000ULL);

	uint64_t t0 = now_ns();
	for (unsigned loop = 0; loop < c->opt.loops; loop++) {
		if (loop)
			reset_data(c);
		if (run_pass(c, loop) < 0) {
			/* vCPUs may be stuck in the kernel: report what we have, don't join. */
			stop_threads(c, false);
			report(c, now_ns() - t0);
			fflush(NULL);
			_exit(1);
		}
		bool failed = c->handler_failed;
		for (unsigned i = 0; i < c->opt.vcpus; i++)
			failed |= c->vcpu[i].failed;
		if (failed) {
			ok = false;
			break;
		}
		verify_pass(c, loop);
	}
	uint64_t wall = now_ns() - t0;
	stop_threads(c, true);
	ok = report(c, wall) && ok;
	if (c->out != stdout && fclose(c->out) != 0) {
		fprintf(stderr, "kvm-guest: --out %s: %s\n", c->opt.out_path, strerror(errno));
		ok = false;
	}
	return ok ? 0 : 1;
}
