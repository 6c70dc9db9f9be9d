// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * kvm-guest — a minimal test VMM on /dev/kvm whose guest data memory is
 * registered with userfaultfd (MISSING mode) and served by an in-process
 * handler thread.  Its own counters are the independent reference that a
 * tracer's output (faultline) is checked against.
 *
 * Structure (kept separate so migration tests can reuse the pieces):
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
 * ECX = page count, EDX = stride in bytes, ESI = first value, EDI = 1 to do
 * an `out 0xF1` after every store.  The loop stores ESI at offset 0 of each
 * page (value increments per page), then `out 0xF0, eax` (done) and `hlt`.
 *
 * Timestamps are CLOCK_MONOTONIC nanoseconds (same clock as
 * bpf_ktime_get_ns), so records can be matched to a tracer's events.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>
#include "uffd_compat.h"

/* KVM exits newer than Debian 12's 6.1 uapi header. */
#ifndef KVM_EXIT_LOONGARCH_IOCSR
#define KVM_EXIT_LOONGARCH_IOCSR 38
#endif
#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39
#endif
#ifndef KVM_EXIT_TDX
#define KVM_EXIT_TDX 40
#endif
#ifndef KVM_CAP_MEMORY_FAULT_INFO
#define KVM_CAP_MEMORY_FAULT_INFO 232
#endif
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
#define COPY_FILL 0xA5             /* byte pattern UFFDIO_COPY installs */
#define SYNC_GATHER_NS 20000000ULL /* --sync: wait at most 20 ms for all vCPUs */

/*
 * Guest code, 32-bit.  Offsets matter: GUEST_STORE_OFF is the store that
 * touches the data page; GUEST_AFTER_STORE_OFF is where a vCPU resumes
 * when that store hit a poisoned page.
 *
 *   00: 85 c9        test  ecx, ecx
 *   02: 74 10        jz    14 <done>
 * loop:
 *   04: 89 33        mov   [ebx], esi        <- the data access
 *   06: 85 ff        test  edi, edi
 *   08: 74 04        jz    0e <skip>
 *   0a: 89 f0        mov   eax, esi
 *   0c: e7 f1        out   0xf1, eax         (optional per-page exit)
 * skip:
 *   0e: 01 d3        add   ebx, edx
 *   10: 46           inc   esi
 *   11: 49           dec   ecx
 *   12: 75 f0        jnz   04 <loop>
 * done:
 *   14: 89 f0        mov   eax, esi
 *   16: e7 f0        out   0xf0, eax         (done; eax = next value)
 *   18: f4           hlt
 *   19: eb fd        jmp   18
 */
static const uint8_t guest_code[] = {
	0x85, 0xc9, 0x74, 0x10, 0x89, 0x33, 0x85, 0xff, 0x74, 0x04,
	0x89, 0xf0, 0xe7, PORT_PAGE, 0x01, 0xd3, 0x46, 0x49, 0x75, 0xf0,
	0x89, 0xf0, 0xe7, PORT_DONE, 0xf4, 0xeb, 0xfd,
};
#define GUEST_STORE_OFF 0x04
#define GUEST_AFTER_STORE_OFF 0x06

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
	unsigned long timeout_s;
	const char *out_path;
};

struct fault_rec {
	pid_t tid;           /* msg.arg.pagefault.feat.ptid */
	int vcpu;            /* vCPU index owning that tid, -1 if none */
	unsigned loop;
	uint64_t addr;       /* page-aligned host address */
	uint64_t flags;      /* msg.arg.pagefault.flags */
	uint64_t read_ns;    /* handler read the message */
	uint64_t resolved_ns;/* COPY/POISON ioctl returned */
	bool poison;
	int err;             /* errno of the resolving ioctl, 0 if ok */
};

struct poison_hit {
	unsigned loop;
	uint64_t addr;       /* host address of the page */
	uint64_t gpa;
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
	size_t run_size;
	pthread_t thread;
	bool thread_started;
	volatile pid_t tid;

	uint64_t slice_gpa;
	uint8_t *slice_hva;

	/* counters, written only by this vCPU's thread */
	uint64_t run_ns;
	uint64_t kvm_run_calls;
	uint64_t exits[EXIT_SLOTS];
	uint64_t exits_other;
	uint64_t run_eintr;          /* KVM_RUN returned -1/EINTR */
	uint64_t run_efault;         /* KVM_RUN returned -1/EFAULT */
	uint64_t io_page_exits;
	uint64_t done_passes;
	struct poison_hit *hits;
	size_t nhits, hits_cap;

	/* set from the SIGBUS handler (this thread only) */
	volatile sig_atomic_t sigbus_pending;
	void *volatile sigbus_addr;
	volatile int sigbus_code;

	/* filled by the reporter */
	uint64_t faults;
	uint64_t verified;
	uint64_t verify_errors;

	bool failed;
	char err[256];
};

/* The one piece of global mutable state: everything lives here. */
struct kvm_guest_ctx {
	struct options opt;
	FILE *out;

	int kvm_fd, vm_fd;
	uint8_t *code_mem;
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
	uint64_t fault_seq;            /* faults seen, for --poison-every */
	uint8_t *page_state;           /* enum page_state per data page */
	uint64_t copies, poisons, eexist, resolve_errors, unexpected_msgs;
	bool handler_failed;
	char handler_err[256];

	struct vcpu_state vcpu[MAX_VCPUS];

	/* pass control */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned start_gen;            /* bumped to start a pass */
	unsigned done_count;           /* vCPUs finished the current pass */
	bool quit;
	unsigned cur_loop;             /* atomic: loop index of current pass */
	int running_vcpus;             /* atomic: vCPUs not yet done this pass */
	pthread_barrier_t sync_barrier;/* --sync: vCPUs start together */
	unsigned tids_known;
};

static struct kvm_guest_ctx kvm_guest_ctx = {
	.kvm_fd = -1, .vm_fd = -1, .uffd = -1, .stop_efd = -1,
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.faults_lock = PTHREAD_MUTEX_INITIALIZER,
	.cond = PTHREAD_COND_INITIALIZER,
};

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { .tv_sec = ns / 1000000000ULL,
			       .tv_nsec = ns % 1000000000ULL };

	while (clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, &ts) == EINTR)
		;
}

__attribute__((format(printf, 1, 2), noreturn))
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("kvm-guest: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

__attribute__((format(printf, 2, 3)))
static void set_err(char *buf, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, 256, fmt, ap);
	va_end(ap);
}

static uint32_t seed_for(unsigned vcpu, unsigned loop)
{
	/* Distinct per vCPU and per pass, so a stale value is detected. */
	return 0xC0DE0000u ^ ((uint32_t)vcpu << 28) ^ ((uint32_t)(loop & 0xfff) << 16);
}

static const char *exit_name(unsigned r)
{
	static const char *const names[] = {
		[KVM_EXIT_UNKNOWN] = "KVM_EXIT_UNKNOWN",
		[KVM_EXIT_EXCEPTION] = "KVM_EXIT_EXCEPTION",
		[KVM_EXIT_IO] = "KVM_EXIT_IO",
		[KVM_EXIT_HYPERCALL] = "KVM_EXIT_HYPERCALL",
		[KVM_EXIT_DEBUG] = "KVM_EXIT_DEBUG",
		[KVM_EXIT_HLT] = "KVM_EXIT_HLT",
		[KVM_EXIT_MMIO] = "KVM_EXIT_MMIO",
		[KVM_EXIT_IRQ_WINDOW_OPEN] = "KVM_EXIT_IRQ_WINDOW_OPEN",
		[KVM_EXIT_SHUTDOWN] = "KVM_EXIT_SHUTDOWN",
		[KVM_EXIT_FAIL_ENTRY] = "KVM_EXIT_FAIL_ENTRY",
		[KVM_EXIT_INTR] = "KVM_EXIT_INTR",
		[KVM_EXIT_SET_TPR] = "KVM_EXIT_SET_TPR",
		[KVM_EXIT_TPR_ACCESS] = "KVM_EXIT_TPR_ACCESS",
		[KVM_EXIT_NMI] = "KVM_EXIT_NMI",
		[KVM_EXIT_INTERNAL_ERROR] = "KVM_EXIT_INTERNAL_ERROR",
		[KVM_EXIT_SYSTEM_EVENT] = "KVM_EXIT_SYSTEM_EVENT",
		[KVM_EXIT_IOAPIC_EOI] = "KVM_EXIT_IOAPIC_EOI",
		[KVM_EXIT_HYPERV] = "KVM_EXIT_HYPERV",
		[KVM_EXIT_X86_RDMSR] = "KVM_EXIT_X86_RDMSR",
		[KVM_EXIT_X86_WRMSR] = "KVM_EXIT_X86_WRMSR",
		[KVM_EXIT_DIRTY_RING_FULL] = "KVM_EXIT_DIRTY_RING_FULL",
		[KVM_EXIT_AP_RESET_HOLD] = "KVM_EXIT_AP_RESET_HOLD",
		[KVM_EXIT_X86_BUS_LOCK] = "KVM_EXIT_X86_BUS_LOCK",
		[KVM_EXIT_XEN] = "KVM_EXIT_XEN",
		[KVM_EXIT_NOTIFY] = "KVM_EXIT_NOTIFY",
		[KVM_EXIT_MEMORY_FAULT] = "KVM_EXIT_MEMORY_FAULT",
		[KVM_EXIT_TDX] = "KVM_EXIT_TDX",
	};

	if (r < sizeof(names) / sizeof(names[0]) && names[r])
		return names[r];
	return NULL;
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
"  --delay-us N        handler sleeps N us after reading each fault, before\n"
"                      resolving it (default 0)\n"
"  --poison-every N    resolve every Nth fault with UFFDIO_POISON instead of\n"
"                      UFFDIO_COPY (default 0 = never)\n"
"  --sync              vCPUs start at the same instant (barrier) and the handler\n"
"                      gathers one fault from every running vCPU before resolving,\n"
"                      so they are all blocked together (delay applied per batch)\n"
"  --start-delay-ms N  after READY, wait N ms before starting the vCPUs (default 0)\n"
"  --loops N           passes; between passes MADV_DONTNEED the data memory\n"
"                      (default 1)\n"
"  --io-per-page       guest does an `out` after every page (one KVM_EXIT_IO each)\n"
"  --timeout-s N       give up if a pass takes longer than N s (default 60, 0=never)\n"
"  --out FILE          JSON-lines records to FILE (default stdout)\n"
"  -h, --help          this help\n"
"\n"
"Output: stderr gets `READY pid=P vcpu_tids=T0,.. uffd=FD data_base=0x.. data_len=N`\n"
"before the vCPUs start, then one human summary line. The out stream gets\n"
"kvm_vcpu, kvm_fault, kvm_poison_hit, kvm_vcpu_summary and kvm_summary records.\n"
"Exit status: 0 every page served and verified, 1 failure, 2 bad usage.\n"
"\n"
"Examples:\n"
"  kvm-guest --vcpus 1 --pages 64\n"
"  kvm-guest --vcpus 4 --pages 128 --delay-us 100 --out faults.jsonl\n"
"  kvm-guest --vcpus 2 --sync --delay-us 2000\n"
"  kvm-guest --poison-every 8\n"
"  kvm-guest --loops 3 --start-delay-ms 500   # let a tracer attach after READY\n",
		MAX_VCPUS, MAX_MEM_MB);
}

__attribute__((noreturn))
static void bad_usage(const char *fmt, const char *arg)
{
	fputs("kvm-guest: ", stderr);
	fprintf(stderr, fmt, arg);
	fputs("\nTry 'kvm-guest --help'.\n", stderr);
	exit(2);
}

static unsigned long parse_ulong(const char *name, const char *s,
				 unsigned long min, unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!s || !*s || *s == '-')
		bad_usage("%s needs a non-negative integer", name);
	v = strtoul(s, &end, 0);
	if (errno || *end) {
		fprintf(stderr, "kvm-guest: %s: '%s' is not a number\n", name, s);
		exit(2);
	}
	if (v < min || v > max) {
		fprintf(stderr, "kvm-guest: %s %lu out of range %lu..%lu\n",
			name, v, min, max);
		exit(2);
	}
	return v;
}

static void parse_options(struct options *o, int argc, char **argv)
{
	enum { OPT_VCPUS = 256, OPT_MEM, OPT_PAGES, OPT_DELAY, OPT_STRIDE, OPT_POISON,
	       OPT_SYNC, OPT_START, OPT_LOOPS, OPT_OUT, OPT_IOPP, OPT_TIMEOUT };
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
		{ "timeout-s", required_argument, 0, OPT_TIMEOUT },
		{ "out", required_argument, 0, OPT_OUT },
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
		case OPT_TIMEOUT: o->timeout_s = parse_ulong("--timeout-s", optarg, 0, 86400); break;
		case OPT_OUT: o->out_path = optarg; break;
		case 'h': usage(stdout); exit(0);
		case ':': bad_usage("option %s needs an argument", argv[optind - 1]);
		default: bad_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		bad_usage("unexpected argument '%s'", argv[optind]);

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

static int uffd_open(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int serr = errno;

	if (fd >= 0)
		return fd;
	/* Fall back to /dev/userfaultfd (works when the syscall is restricted). */
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		close(dev);
		if (fd >= 0)
			return fd;
	}
	die("userfaultfd(): %s%s", strerror(serr),
	    serr == EPERM ? " — needs root/CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1"
	    : serr == ENOSYS ? " — kernel built without CONFIG_USERFAULTFD" : "");
}

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
	int r;

	c->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (c->kvm_fd < 0) {
		int e = errno;
		die("/dev/kvm: %s%s", strerror(e),
		    e == ENOENT ? " — KVM not available (no kvm module / not exposed)"
		    : e == EACCES ? " — no permission (run as root or join group kvm)" : "");
	}
	r = ioctl(c->kvm_fd, KVM_GET_API_VERSION, 0);
	if (r != KVM_API_VERSION)
		die("/dev/kvm: KVM_GET_API_VERSION returned %d, expected %d", r, KVM_API_VERSION);
	c->vm_fd = ioctl(c->kvm_fd, KVM_CREATE_VM, 0UL);
	if (c->vm_fd < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	/* Needed on Intel without unrestricted guest; harmless elsewhere. */
	if (ioctl(c->vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0 && errno != EINVAL)
		fprintf(stderr, "kvm-guest: warning: KVM_SET_TSS_ADDR: %s\n", strerror(errno));

	/* Code slot: plain anonymous memory, not registered with userfaultfd. */
	c->code_mem = mmap(NULL, CODE_SLOT_LEN, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (c->code_mem == MAP_FAILED)
		die("mmap code slot: %s", strerror(errno));
	memset(c->code_mem, 0xf4, CODE_SLOT_LEN); /* hlt everywhere else */
	memcpy(c->code_mem + CODE_GPA, guest_code, sizeof(guest_code));
	struct kvm_userspace_memory_region code = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = CODE_SLOT_LEN,
		.userspace_addr = (uint64_t)(uintptr_t)c->code_mem,
	};
	if (ioctl(c->vm_fd, KVM_SET_USER_MEMORY_REGION, &code) < 0)
		die("KVM_SET_USER_MEMORY_REGION (code slot): %s", strerror(errno));

	/* Data slot: anonymous memory, uffd-registered by uffd_setup(). */
	c->data_len = c->opt.mem_mb << 20;
	c->data_pages = c->data_len / PAGE_SZ;
	c->data_mem = mmap(NULL, c->data_len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (c->data_mem == MAP_FAILED)
		die("mmap %zu bytes of data memory: %s", c->data_len, strerror(errno));
	/* 4 KiB faults only: one userfault per touched page, deterministically. */
	if (madvise(c->data_mem, c->data_len, MADV_NOHUGEPAGE) < 0 && errno != EINVAL)
		fprintf(stderr, "kvm-guest: warning: MADV_NOHUGEPAGE: %s\n", strerror(errno));
	struct kvm_userspace_memory_region data = {
		.slot = 1, .guest_phys_addr = DATA_GPA, .memory_size = c->data_len,
		.userspace_addr = (uint64_t)(uintptr_t)c->data_mem,
	};
	if (ioctl(c->vm_fd, KVM_SET_USER_MEMORY_REGION, &data) < 0)
		die("KVM_SET_USER_MEMORY_REGION (data slot, %zu bytes at GPA 0x%lx): %s",
		    c->data_len, DATA_GPA, strerror(errno));

	int mmap_sz = ioctl(c->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (mmap_sz < (int)sizeof(struct kvm_run))
		die("KVM_GET_VCPU_MMAP_SIZE: %s", mmap_sz < 0 ? strerror(errno) : "too small");

	c->page_state = calloc(c->data_pages, 1);
	if (!c->page_state)
		die("out of memory");

	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		struct vcpu_state *v = &c->vcpu[i];

		v->idx = i;
		v->fd = ioctl(c->vm_fd, KVM_CREATE_VCPU, (unsigned long)i);
		if (v->fd < 0)
			die("KVM_CREATE_VCPU %u: %s", i, strerror(errno));
		v->run_size = (size_t)mmap_sz;
		v->run = mmap(NULL, v->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->fd, 0);
		if (v->run == MAP_FAILED)
			die("mmap kvm_run of vCPU %u: %s", i, strerror(errno));
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
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(v->fd, KVM_GET_SREGS, &sregs) < 0) {
		set_err(v->err, "KVM_GET_SREGS: %s", strerror(errno));
		return -1;
	}
	struct kvm_segment code_seg = {
		.base = 0, .limit = 0xffffffff, .selector = 0x08, .type = 11,
		.present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
	};
	struct kvm_segment data_seg = code_seg;
	data_seg.selector = 0x10;
	data_seg.type = 3;
	sregs.cs = code_seg;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data_seg;
	sregs.cr0 |= 1;              /* PE, paging stays off */
	sregs.cr0 &= ~(1UL << 31);
	sregs.efer = 0;
	if (ioctl(v->fd, KVM_SET_SREGS, &sregs) < 0) {
		set_err(v->err, "KVM_SET_SREGS: %s", strerror(errno));
		return -1;
	}
	memset(&regs, 0, sizeof(regs));
	regs.rflags = 0x2;
	regs.rip = CODE_GPA;
	regs.rbx = v->slice_gpa;
	regs.rcx = c->opt.pages;
	regs.rdx = c->opt.stride * PAGE_SZ;
	regs.rsi = seed_for(v->idx, loop);
	regs.rdi = c->opt.io_per_page ? 1 : 0;
	regs.rsp = CODE_SLOT_LEN - 16;
	if (ioctl(v->fd, KVM_SET_REGS, &regs) < 0) {
		set_err(v->err, "KVM_SET_REGS: %s", strerror(errno));
		return -1;
	}
	return 0;
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
	v->hits[v->nhits++] = (struct poison_hit){
		.loop = loop, .addr = hva, .gpa = gpa, .how = how, .si_code = si_code,
		.rip = regs.rip,
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

/* Run one pass of this vCPU until the guest reports done and halts. */
static int vcpu_run_pass(struct kvm_guest_ctx *c, struct vcpu_state *v, unsigned loop)
{
	struct kvm_run *run = v->run;
	bool done = false;
	uint32_t expect_done = seed_for(v->idx, loop) + (uint32_t)c->opt.pages;

	for (;;) {
		uint64_t t0 = now_ns();
		int r = ioctl(v->fd, KVM_RUN, 0);
		int e = errno;
		v->run_ns += now_ns() - t0;
		v->kvm_run_calls++;

		if (v->sigbus_pending) {
			uint64_t a = (uint64_t)(uintptr_t)v->sigbus_addr;
			int code = v->sigbus_code;
			v->sigbus_pending = 0;
			if (r < 0 && e == EINTR)
				v->run_eintr++;
			else if (r == 0)
				count_exit(v, run->exit_reason);
			if (vcpu_poison_hit(c, v, loop, "sigbus", a, code) < 0)
				return -1;
			continue;
		}
		if (r < 0) {
			if (e == EINTR || e == EAGAIN) {
				v->run_eintr++;
				continue;
			}
			if (e == EFAULT) {
				v->run_efault++;
				if (run->exit_reason == KVM_EXIT_MEMORY_FAULT) {
					const struct kvm_memory_fault_compat *mf = (const void *)&run->mmio;
					count_exit(v, run->exit_reason);
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

		count_exit(v, run->exit_reason);
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			const uint8_t *data = (const uint8_t *)run + run->io.data_offset;
			uint32_t val = 0;
			if (run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 4) {
				set_err(v->err, "unexpected I/O: %s port 0x%x size %u",
					run->io.direction == KVM_EXIT_IO_OUT ? "out" : "in",
					run->io.port, run->io.size);
				return -1;
			}
			memcpy(&val, data, 4);
			if (run->io.port == PORT_PAGE) {
				v->io_page_exits++;
			} else if (run->io.port == PORT_DONE) {
				if (val != expect_done) {
					set_err(v->err, "guest reported done with value 0x%x, expected 0x%x",
						val, expect_done);
					return -1;
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
		case KVM_EXIT_FAIL_ENTRY:
			set_err(v->err, "KVM_EXIT_FAIL_ENTRY: hardware_entry_failure_reason 0x%llx",
				(unsigned long long)run->fail_entry.hardware_entry_failure_reason);
			return -1;
		case KVM_EXIT_INTERNAL_ERROR:
			set_err(v->err, "KVM_EXIT_INTERNAL_ERROR: suberror %u", run->internal.suberror);
			return -1;
		case KVM_EXIT_SHUTDOWN:
			set_err(v->err, "KVM_EXIT_SHUTDOWN (guest triple fault)");
			return -1;
		default: {
			const char *n = exit_name(run->exit_reason);
			if (n)
				set_err(v->err, "unexpected exit %s", n);
			else
				set_err(v->err, "unexpected exit reason %u", run->exit_reason);
			return -1;
		}
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
		__atomic_sub_fetch(&c->running_vcpus, 1, __ATOMIC_RELEASE);

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

static int record_fault(struct kvm_guest_ctx *c, const struct uffd_msg *m, uint64_t read_ns)
{
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
	pid_t tid = (pid_t)m->arg.pagefault.feat.ptid;
	c->faults[c->nfaults] = (struct fault_rec){
		.tid = tid,
		.vcpu = vcpu_of_tid(c, tid),
		.loop = __atomic_load_n(&c->cur_loop, __ATOMIC_ACQUIRE),
		.addr = m->arg.pagefault.address & ~(uint64_t)(PAGE_SZ - 1),
		.flags = m->arg.pagefault.flags,
		.read_ns = read_ns,
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
	if (f->poison) {
		struct uffdio_poison p = { .range = { .start = addr, .len = PAGE_SZ } };
		r = ioctl(c->uffd, UFFDIO_POISON, &p);
	} else {
		struct uffdio_copy cp = { .dst = addr, .src = (uint64_t)(uintptr_t)c->copy_src,
					  .len = PAGE_SZ };
		r = ioctl(c->uffd, UFFDIO_COPY, &cp);
	}
	f->resolved_ns = now_ns();
	f->err = r < 0 ? errno : 0;

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
 * Read what is pending; returns number of page faults recorded, -1 on a
 * fatal error, and sets *stop when the stop eventfd fired.
 */
static int uffd_read_batch(struct kvm_guest_ctx *c, int timeout_ms, bool *stop)
{
	struct pollfd pfd[2] = {
		{ .fd = c->uffd, .events = POLLIN },
		{ .fd = c->stop_efd, .events = POLLIN },
	};
	struct uffd_msg msgs[64];
	int n = 0;

	int pr = poll(pfd, 2, timeout_ms);
	if (pr < 0) {
		if (errno == EINTR)
			return 0;
		set_err(c->handler_err, "poll(userfaultfd): %s", strerror(errno));
		return -1;
	}
	if (pfd[1].revents & POLLIN)
		*stop = true;
	if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL)) {
		set_err(c->handler_err, "poll(userfaultfd) revents 0x%x", pfd[0].revents);
		return -1;
	}
	if (!(pfd[0].revents & POLLIN))
		return 0;

	ssize_t got = read(c->uffd, msgs, sizeof(msgs));
	uint64_t t = now_ns();
	if (got < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		set_err(c->handler_err, "read(userfaultfd): %s", strerror(errno));
		return -1;
	}
	if (got % (ssize_t)sizeof(struct uffd_msg)) {
		set_err(c->handler_err, "read(userfaultfd): short message (%zd bytes)", got);
		return -1;
	}
	for (ssize_t k = 0; k < got / (ssize_t)sizeof(struct uffd_msg); k++) {
		if (msgs[k].event != UFFD_EVENT_PAGEFAULT) {
			c->unexpected_msgs++;
			continue;
		}
		if (record_fault(c, &msgs[k], t) < 0)
			return -1;
		n++;
	}
	return n;
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

	c->handler_tid = gettid();
	while (!stop) {
		size_t first = c->nfaults;
		int n = uffd_read_batch(c, -1, &stop);
		if (n < 0)
			goto fatal;
		if (n == 0)
			continue;

		if (!c->opt.sync) {
			/* Messages of one read() were all read at the same instant. */
			for (size_t i = first; i < c->nfaults; i++) {
				if (delay_ns)
					sleep_ns(delay_ns);
				resolve_fault(c, i);
			}
			continue;
		}
		/*
		 * --sync: hold the batch until every vCPU still running its
		 * pass is blocked on a fault (or SYNC_GATHER_NS passed), then
		 * delay once and resolve them together.
		 */
		uint64_t deadline = now_ns() + SYNC_GATHER_NS;
		while (!stop) {
			int running = __atomic_load_n(&c->running_vcpus, __ATOMIC_ACQUIRE);
			if ((int)distinct_tids(c, first) >= running || now_ns() >= deadline)
				break;
			if (uffd_read_batch(c, 1, &stop) < 0)
				goto fatal;
		}
		if (delay_ns)
			sleep_ns(delay_ns);
		for (size_t i = first; i < c->nfaults; i++)
			resolve_fault(c, i);
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

	if ((r = pthread_create(&c->handler, NULL, uffd_handler_thread, c)) != 0)
		die("pthread_create (uffd handler): %s", strerror(r));
	c->handler_started = true;
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		if ((r = pthread_create(&c->vcpu[i].thread, NULL, vcpu_thread, &c->vcpu[i])) != 0)
			die("pthread_create (vCPU %u): %s", i, strerror(r));
		c->vcpu[i].thread_started = true;
		char name[16];
		snprintf(name, sizeof(name), "vcpu%u", i);
		pthread_setname_np(c->vcpu[i].thread, name);
	}
	pthread_setname_np(c->handler, "uffd-handler");
	pthread_mutex_lock(&c->lock);
	while (c->tids_known < c->opt.vcpus)
		pthread_cond_wait(&c->cond, &c->lock);
	pthread_mutex_unlock(&c->lock);
	while (!c->handler_tid)
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

			if (st == PAGE_COPIED) {
				uint32_t got, tail;
				memcpy(&got, page, 4);
				memcpy(&tail, page + 4, 4);
				if (got == seed + (uint32_t)p && tail == 0x01010101u * COPY_FILL) {
					v->verified++;
				} else {
					if (v->verify_errors++ < 5)
						fprintf(stderr, "kvm-guest: loop %u vCPU %u page %lu (%p): "
							"found 0x%08x/0x%08x, expected 0x%08x/0x%08x\n",
							loop, i, p, (void *)page, got, tail, seed + (uint32_t)p,
							0x01010101u * COPY_FILL);
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

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void print_exits(FILE *o, const struct vcpu_state *v)
{
	bool first = true;

	fputc('{', o);
	for (unsigned r = 0; r < EXIT_SLOTS; r++) {
		if (!v->exits[r])
			continue;
		const char *n = exit_name(r);
		if (n)
			fprintf(o, "%s\"%s\":%" PRIu64, first ? "" : ",", n, v->exits[r]);
		else
			fprintf(o, "%s\"KVM_EXIT_%u\":%" PRIu64, first ? "" : ",", r, v->exits[r]);
		first = false;
	}
	if (v->exits_other)
		fprintf(o, "%s\"other\":%" PRIu64, first ? "" : ",", v->exits_other);
	fputc('}', o);
}

/* Returns true when everything is consistent. */
static bool report(struct kvm_guest_ctx *c, uint64_t wall_ns)
{
	FILE *o = c->out;
	uint64_t expected_per_vcpu = (uint64_t)c->opt.pages * c->opt.loops;
	uint64_t unattributed = 0, slice_mismatch = 0, total_hits = 0, total_verified = 0;
	uint64_t total_verify_err = 0, total_run_ns = 0;
	bool ok = !c->handler_failed;
	size_t n = 0;

	pthread_mutex_lock(&c->faults_lock);
	uint64_t *rtt = calloc(c->nfaults ? c->nfaults : 1, sizeof(*rtt));
	if (!rtt)
		die("out of memory");
	for (size_t i = 0; i < c->nfaults; i++) {
		const struct fault_rec *f = &c->faults[i];
		const char *by = f->poison ? "poison" : "copy";
		if (f->resolved_ns)
			rtt[n++] = f->resolved_ns - f->read_ns;
		else
			by = "none"; /* still pending (timeout) */
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
			",\"resolved_by\":\"%s\",\"loop\":%u,\"flags\":%" PRIu64 ",\"err\":%d}\n",
			f->tid, f->vcpu, f->addr, f->read_ns, f->resolved_ns,
			by, f->loop, f->flags, f->err);
	}
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		struct vcpu_state *v = &c->vcpu[i];
		for (size_t h = 0; h < v->nhits; h++) {
			const struct poison_hit *p = &v->hits[h];
			fprintf(o, "{\"event\":\"kvm_poison_hit\",\"vcpu\":%u,\"tid\":%d,\"loop\":%u,"
				"\"addr\":\"0x%" PRIx64 "\",\"gpa\":\"0x%" PRIx64 "\",\"how\":\"%s\","
				"\"si_code\":%d,\"rip\":\"0x%" PRIx64 "\",\"mmio_len\":%u,"
				"\"mmio_data\":\"0x%x\"}\n",
				i, v->tid, p->loop, p->addr, p->gpa, p->how, p->si_code, p->rip,
				p->mmio_len, p->mmio_data);
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
			",\"passes\":%" PRIu64 "%s%s%s}\n",
			v->verified, v->verify_errors, v->done_passes,
			v->failed ? ",\"error\":\"" : "", v->failed ? v->err : "",
			v->failed ? "\"" : "");
		if (v->failed || v->faults != expected_per_vcpu || v->verify_errors ||
		    v->verified != expected_per_vcpu || v->done_passes != c->opt.loops)
			ok = false;
		total_hits += v->nhits;
		total_verified += v->verified;
		total_verify_err += v->verify_errors;
		total_run_ns += v->run_ns;
	}
	if (unattributed || slice_mismatch || c->eexist || c->resolve_errors || c->unexpected_msgs)
		ok = false;

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
		",\"max\":%" PRIu64 ",\"mean\":%" PRIu64 "},\"ok\":%s%s%s%s}\n",
		c->nfaults, expected_total, c->opt.vcpus, c->opt.pages, c->opt.stride, c->opt.loops,
		c->opt.delay_us, c->opt.poison_every, c->opt.sync ? "true" : "false",
		c->copies, c->poisons, total_hits, c->eexist, c->resolve_errors, unattributed,
		slice_mismatch, total_verified, total_verify_err, total_run_ns, wall_ns,
		c->handler_tid, c->uffd_features, rmin, p50, p99, rmax, mean,
		ok ? "true" : "false",
		c->handler_failed ? ",\"error\":\"" : "", c->handler_failed ? c->handler_err : "",
		c->handler_failed ? "\"" : "");
	fflush(o);

	fprintf(stderr, "kvm-guest: %s: %u vCPU x %lu pages x %lu loop(s): %zu/%" PRIu64
		" faults (%" PRIu64 " copy, %" PRIu64 " poison, %" PRIu64 " poison hits), %"
		PRIu64 "/%" PRIu64 " pages verified; handler read->resolved p50 %.1f us, p99 %.1f us, "
		"max %.1f us; wall %.1f ms\n",
		ok ? "OK" : "FAILED", c->opt.vcpus, c->opt.pages, c->opt.loops, c->nfaults,
		expected_total, c->copies, c->poisons, total_hits, total_verified, expected_total,
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
	uffd_setup(c);
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
