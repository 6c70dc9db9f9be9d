// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * migrate-vm — the two ends of a postcopy migration test, on /dev/kvm or,
 * with --cpu threads (the default without /dev/kvm), on host threads.
 *
 *   --role source   guest memory is a memfd filled with a known pattern and
 *                   registered with a userfaultfd (MISSING) that this VMM
 *                   never reads: `faultline source` duplicates it
 *                   (pidfd_getfd) to inject poison — punch the page out of
 *                   the memfd, then UFFDIO_POISON it.  A vCPU touching the
 *                   page in between waits for that POISON.  The guest
 *                   writes (dirties) the hot part of each vCPU's slice.
 *                   The uffd also has WP_ASYNC: the tool can register WP
 *                   through its duplicate and find written pages with
 *                   PAGEMAP_SCAN (these kernels have no soft-dirty, and the
 *                   guest's emulated writes do go through the WP check).
 *                   --zero-at zeroes pages from a host thread, as a guest
 *                   that frees and clears memory would; --write-at writes
 *                   a stamp into pages at a set time and says when (the
 *                   guest's record for checking dirty tracking).
 *   --role target   empty guest memory (anonymous: MISSING; memfd: MINOR),
 *                   handed to a router with fl_handover(); the guest reads,
 *                   so every page must end up byte-identical to the
 *                   source's (control pages aside), except the stamps that
 *                   --write-percent makes it write (threads only), whose
 *                   last values --writes lists.  After --run-ms a host
 *                   thread touches every page, counts the SIGBUS (poisoned)
 *                   ones and hashes the rest (--dump).  --discard drops
 *                   guest pages while the guest runs, as a balloon does
 *                   (a mapping change the router sees as UFFD_EVENT_REMOVE):
 *                   they must then read zero unless poisoned.
 *
 * Guest (the same code on both ends): 32-bit protected mode, flat segments
 * set through KVM_SET_SREGS, no paging, as in kvm_guest.c.  Guest state
 * that must survive the migration lives in guest memory: each vCPU's
 * progress counter is a dword in its control page (data page = vCPU index).
 * Per-run parameters (not migrated) sit in a block in the code slot.  A
 * poisoned page reaches us as KVM_EXIT_MMIO (KVM emulates the guest here):
 * reads get zeros, writes are dropped, every hit is counted.
 *
 * --cpu threads runs the same guest program as C on host threads, straight
 * on guest memory: no KVM at all, so the tests run where /dev/kvm is
 * absent.  A poisoned page then raises SIGBUS on the thread, which jumps
 * back, counts it as the MMIO path does and goes on with the next page.
 *
 * Timestamps are CLOCK_MONOTONIC nanoseconds.
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
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <linux/kvm.h>
#include "faultline/faultline.h"
#include "uffd_compat.h"
#include "kvm_vm.h"

#define PAGE_SZ 4096UL
#define HUGE_SZ (2UL << 20)     /* --hugetlb's page */
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21U << 26)        /* linux/memfd.h: log2(2 MiB) << MFD_HUGE_SHIFT */
#endif
#ifndef MFD_HUGE_1GB
#define MFD_HUGE_1GB (30U << 26)
#endif
#define MAX_VCPUS 16
#define MAX_MEM_MIB 3072UL        /* data slot must stay below 4 GiB (32-bit guest) */
#define MAX_POISON_GPAS 256       /* distinct poisoned GPAs remembered per vCPU */
#define MAX_DISCARDS 16
#define MAX_ZEROS 16

#define CODE_GPA 0x1000UL
#define CODE_SLOT_LEN 0x10000UL
#define PARAM_GPA 0x2000UL        /* 32-byte parameter block per vCPU */
#define DATA_GPA 0x100000UL
#define CONTROL_OFF 0x20          /* counter dword in a control page */
#define HOT_OFF 0x40              /* dword a write-mode guest stores into hot pages */
#define PORT_LOOP 0xF3            /* eax = counter, once per loop */
#define PORT_PACE 0xF4            /* every --pace-pages pages */
#define MODE_READ 1u              /* EDI bit */
#define WRITE_OFF 0x80            /* --write-percent stamps: WRITE_OFF + 8 * (page % 16) */
_Static_assert(WRITE_OFF >= HOT_OFF + 4 && WRITE_OFF >= CONTROL_OFF + 4 &&
	       WRITE_OFF + 8 * 16 <= PAGE_SZ, "stamps must not overlap guest state");

/*
 * Guest code (as --32), entered with EBP = parameter block, EDI = mode.
 * Block: +0 control dword GPA, +4 slice GPA, +8 hot pages, +12 slice
 * pages, +20 pages between PORT_PACE exits.
 *
 *   00: 8b 5d 00           mov  ebx, [ebp+0]
 *   03: 8b 55 14           mov  edx, [ebp+20]
 * loop:
 *   06: 8b 03              mov  eax, [ebx]        counter (in guest memory)
 *   08: 40                 inc  eax
 *   09: 89 03              mov  [ebx], eax
 *   0b: e7 f3              out  0xf3, eax
 *   0d: 8b 75 04           mov  esi, [ebp+4]
 *   10: 8b 4d 08           mov  ecx, [ebp+8]
 *   13: f7 c7 01 00 00 00  test edi, 1
 *   19: 75 16              jnz  31 <rd>
 * wr:                                             write mode: dirty hot pages
 *   1b: 89 46 40           mov  [esi+0x40], eax
 *   1e: 81 c6 00 10 00 00  add  esi, 4096
 *   24: 4a                 dec  edx
 *   25: 75 05              jnz  2c
 *   27: e7 f4              out  0xf4, eax
 *   29: 8b 55 14           mov  edx, [ebp+20]
 *   2c: 49                 dec  ecx
 *   2d: 75 ec              jnz  1b <wr>
 *   2f: eb d5              jmp  06 <loop>
 * rd:                                             read mode: hot part, then all
 *   31: e8 0d 00 00 00     call 43 <readpass>
 *   36: 8b 75 04           mov  esi, [ebp+4]
 *   39: 8b 4d 0c           mov  ecx, [ebp+12]
 *   3c: e8 02 00 00 00     call 43 <readpass>
 *   41: eb c3              jmp  06 <loop>
 * readpass:
 *   43: 85 06              test [esi], eax
 *   45: 81 c6 00 10 00 00  add  esi, 4096
 *   4b: 4a                 dec  edx
 *   4c: 75 05              jnz  53
 *   4e: e7 f4              out  0xf4, eax
 *   50: 8b 55 14           mov  edx, [ebp+20]
 *   53: 49                 dec  ecx
 *   54: 75 ed              jnz  43 <readpass>
 *   56: c3                 ret
 *
 * One dword per page: KVM emulates every guest instruction here (~1 us
 * each), so touching a page costs ~4 instructions instead of a 1024-dword
 * `rep` that would make one pass over 64 MiB take seconds.
 */
static const uint8_t guest_code[] = {
	0x8b, 0x5d, 0x00, 0x8b, 0x55, 0x14, 0x8b, 0x03, 0x40, 0x89, 0x03, 0xe7,
	PORT_LOOP, 0x8b, 0x75, 0x04, 0x8b, 0x4d, 0x08, 0xf7, 0xc7, 0x01, 0x00, 0x00,
	0x00, 0x75, 0x16, 0x89, 0x46, HOT_OFF, 0x81, 0xc6, 0x00, 0x10, 0x00, 0x00,
	0x4a, 0x75, 0x05, 0xe7, PORT_PACE, 0x8b, 0x55, 0x14, 0x49, 0x75, 0xec, 0xeb,
	0xd5, 0xe8, 0x0d, 0x00, 0x00, 0x00, 0x8b, 0x75, 0x04, 0x8b, 0x4d, 0x0c,
	0xe8, 0x02, 0x00, 0x00, 0x00, 0xeb, 0xc3, 0x85, 0x06, 0x81, 0xc6, 0x00,
	0x10, 0x00, 0x00, 0x4a, 0x75, 0x05, 0xe7, PORT_PACE, 0x8b, 0x55, 0x14, 0x49,
	0x75, 0xed, 0xc3,
};

struct guest_params {
	uint32_t control_gpa, slice_gpa, hot_pages, slice_pages, reserved, pace_pages;
};
_Static_assert(sizeof(struct guest_params) <= 32, "guest_params must fit its 32-byte slot");
_Static_assert(PARAM_GPA + 32 * MAX_VCPUS <= CODE_SLOT_LEN - 0x100 &&
	       PARAM_GPA >= CODE_GPA + sizeof(guest_code), "parameter blocks overlap code or stack");

enum role { ROLE_SOURCE = 1, ROLE_TARGET = 2 };
enum cpu_mode { CPU_AUTO, CPU_KVM, CPU_THREADS };

/* --discard FIRST:COUNT@MS, --zero-at MS:FIRST:COUNT */
struct discard {
	uint64_t first, count;
	unsigned long at_ms;            /* after the vCPUs started */
	bool write;                     /* --write-at: stamp the pages instead of zeroing */
};

struct options {
	enum role role;
	unsigned vcpus;
	unsigned long mem_mib;
	unsigned long run_ms;           /* 0: until SIGTERM/SIGINT */
	bool json;
	double hot_fraction;
	double touch_fraction;          /* target: share of each slice its guest reads */
	unsigned long pace_us;
	unsigned long pace_pages;
	uint64_t seed;
	unsigned long zero_percent;
	const char *router;
	enum fl_uffd_mode mode;
	bool reconnect;
	const char *dump;
	const char *image;
	unsigned long connect_timeout_ms;
	unsigned long start_delay_ms;
	unsigned long verify_timeout_ms;
	bool until_router_done;
	struct discard discard[MAX_DISCARDS];
	unsigned ndiscard;
	enum cpu_mode cpu;
	unsigned long write_percent;
	const char *writes;
	struct discard zero_at[MAX_ZEROS];
	unsigned nzero;
	bool hugetlb;                   /* guest memory on hugetlbfs pages */
	unsigned long huge_sz;          /* their size: 2 MiB, or 1 GiB (--hugetlb-1g) */
};

struct vcpu {
	unsigned idx;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool started;
	volatile pid_t tid;

	uint64_t control_page;          /* data page index */
	uint64_t slice_first, slice_pages, hot_pages;
	uint64_t touch_pages;           /* target: the read pass covers these of the slice */

	/* written by this vCPU's thread; read after it stopped */
	bool seen_counter;
	uint32_t first_counter, last_counter;
	uint64_t loops, pace_exits, kvm_runs;
	uint64_t poison_reads, poison_writes;
	uint64_t poison_gpa[MAX_POISON_GPAS];
	unsigned npoison_gpa;
	bool poison_gpa_overflow;
	/* --write-percent: stamps found replaced when the page was next written
	 * (someone else wrote the page: the guest's own record says so) */
	uint64_t writes_reverted;
	uint64_t reverted_page[MAX_POISON_GPAS];
	unsigned nreverted;
	volatile sig_atomic_t sigbus;
	void *volatile sigbus_addr;
	bool failed;
	char err[KVM_VM_ERR_LEN];

	/* --cpu threads: where a guest access that hits poison jumps back to
	 * (only while armed: SIGBUS elsewhere is a bug, not a guest event) */
	sigjmp_buf jmp;
	volatile sig_atomic_t jmp_armed;
};

/* --write-percent: the last stamp a target vCPU wrote into a page */
struct page_write {
	uint32_t offset;                /* in the page; 0: never written */
	uint64_t value;
};

/* The one piece of global mutable state (signal handlers reach it). */
struct migrate_vm_ctx {
	struct options opt;
	pthread_mutex_t out_lock;       /* one JSON line at a time */

	struct kvm_vm vm;
	uint8_t *mem;                   /* guest data memory, DATA_GPA.. */
	size_t mem_len;
	uint64_t pages;
	int memfd;                      /* source; target MINOR; else -1 */
	int uffd;
	uint64_t uffd_features;         /* enabled */
	uint64_t uffd_available;        /* what UFFDIO_API reported */
	struct fl_region region;

	struct vcpu vcpu[MAX_VCPUS];
	volatile int stop;

	/* target: handover */
	int sock;
	pthread_t serve_thread;
	bool serve_started;
	volatile int serve_quit;
	uint64_t handovers, router_lost;

	/* target: --discard, done by their own thread (madvise waits for the
	 * router to read the REMOVE event it raises) */
	pthread_t discard_thread;
	bool discard_started;
	volatile int discard_quit;
	uint64_t vcpus_start_ns;
	bool discard_done[MAX_DISCARDS];        /* written by that thread, read after it ended */

	/* target, --write-percent: pages to stamp, and the record of the stamps
	 * (each page is written by the one vCPU whose slice holds it) */
	uint8_t *write_sel;
	struct page_write *last_write;

	/* source: --zero-at, done by their own thread */
	pthread_t zero_thread;
	bool zero_started;
	volatile int zero_quit;
	volatile pid_t zero_tid;
	sigjmp_buf zero_jmp;

	/* target: verification */
	volatile pid_t verify_tid;
	sigjmp_buf verify_jmp;
	volatile int verify_code;
	volatile uint64_t verify_page;
	volatile int verify_done;
};

static struct migrate_vm_ctx migrate_vm_ctx = {
	.vm = { .kvm_fd = -1, .vm_fd = -1 }, .memfd = -1, .uffd = -1, .sock = -1,
	.out_lock = PTHREAD_MUTEX_INITIALIZER,
};

/* ------------------------------------------------------------------ */
/* helpers                                                             */

const char kvm_vm_prog[] = "migrate-vm";

static void sleep_us(uint64_t us)
{
	struct timespec ts = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };

	/* Not restarted on EINTR: the stop signal should cut a pace sleep short. */
	clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
}

/* One JSON line (already formatted) on stdout with --json; always flushed. */
__attribute__((format(printf, 2, 3)))
static void emit(struct migrate_vm_ctx *c, const char *fmt, ...)
{
	va_list ap;

	if (!c->opt.json)
		return;
	pthread_mutex_lock(&c->out_lock);
	va_start(ap, fmt);
	vfprintf(stdout, fmt, ap);
	va_end(ap);
	fputc('\n', stdout);
	fflush(stdout);
	pthread_mutex_unlock(&c->out_lock);
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void emit_error(struct migrate_vm_ctx *c, const char *what, const char *msg)
{
	fprintf(stderr, "migrate-vm: %s: %s\n", what, msg);
	if (!c->opt.json)
		return;
	pthread_mutex_lock(&c->out_lock);
	fprintf(stdout, "{\"event\":\"error\",\"what\":");
	json_str(stdout, what);
	fprintf(stdout, ",\"error\":");
	json_str(stdout, msg);
	fputs("}\n", stdout);
	fflush(stdout);
	pthread_mutex_unlock(&c->out_lock);
}

static uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static uint64_t fnv1a64(const volatile uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

/* ------------------------------------------------------------------ */
/* options                                                             */

static void usage(FILE *f)
{
	fprintf(f,
"Usage: migrate-vm --role source|target [OPTIONS]\n"
"\n"
"Test VMM for postcopy migration with poison replication (faultline source /\n"
"faultline target). Each vCPU owns a control page (its loop counter, in guest\n"
"memory) and a slice of guest memory; the first --hot-fraction of the slice is\n"
"hot. Source guests write the loop counter into every hot page each loop;\n"
"target guests read the hot pages and then every page of the slice.\n"
"\n"
"Common options:\n"
"  --role source|target\n"
"  --cpu kvm|threads    run the guest on KVM, or as plain C on host threads\n"
"                       straight on guest memory (no KVM at all; a poisoned\n"
"                       page is a SIGBUS, counted as a poison MMIO exit is)\n"
"                       (default: kvm if /dev/kvm opens read-write, else\n"
"                       threads; stderr says which)\n"
"  --vcpus N            vCPUs, 1..%d (default 4)\n"
"  --mem-mib M          guest memory in MiB, 1..%lu (default 256)\n"
"  --run-ms N           run the guest N ms, then stop (default: source until\n"
"                       SIGTERM/SIGINT, target 3000)\n"
"  --hot-fraction F     hot part of each slice, 0 < F <= 1 (default 0.125)\n"
"  --pace-pages K       guest exits to the VMM every K pages (default 64)\n"
"  --pace-us N          VMM sleeps N us at each such exit: the dirtying rate\n"
"                       (default 1000: ~1 host CPU for 4 vCPUs here)\n"
"  --hugetlb            guest memory is a memfd on 2 MiB hugetlbfs pages (both\n"
"                       roles, both modes; needs free huge pages:\n"
"                       /proc/sys/vm/nr_hugepages); the guest still works in\n"
"                       4 KiB pages, the migration moves 2 MiB ones; --discard\n"
"                       ranges must then be whole huge pages (MADV_REMOVE)\n"
"  --hugetlb-1g         the same on 1 GiB pages (--mem-mib a multiple of 1024)\n"
"  --json               JSON lines on stdout, each with \"event\"\n"
"  --image FILE         target: raw image of guest memory as verified (poisoned\n"
"                       pages left as holes), for byte-for-byte comparison\n"
"  --dump FILE          one line per page: \"INDEX FNV1A64-HEX\", or \"INDEX sigbus\"\n"
"                       (target: poisoned), \"INDEX hole\" (source: punched out)\n"
"\n"
"Source options:\n"
"  --seed N             pattern seed (default 1; the target's --write-percent\n"
"                       page choice uses it too)\n"
"  --zero-percent P     pages left all-zero, 0..100 (default 10)\n"
"  --zero-at MS:FIRST:COUNT\n"
"                       MS ms after the vCPUs start, a host thread zeroes\n"
"                       pages [FIRST, FIRST+COUNT) of guest memory (poisoned\n"
"                       ones skipped). Repeatable (up to %d); FIRST >= --vcpus.\n"
"                       The guest re-dirties hot pages: pick cold ones\n"
"  --write-at MS:FIRST:COUNT\n"
"                       the same, but each page gets a new 8-byte stamp at\n"
"                       offset 0x80 (MS << 32 | PAGE | 1 << 63): a {\"event\":\n"
"                       \"written\",\"first\",\"count\",\"ns\",...} line records it.\n"
"                       Shares --zero-at's limit of %d ranges\n"
"\n"
"Target options:\n"
"  --router SOCK        router's handover socket (required)\n"
"  --mode missing|minor anonymous memory (MISSING) or a memfd (MISSING|MINOR)\n"
"                       (default missing)\n"
"  --reconnect          when the router goes away, keep the guest as it is\n"
"                       (faults wait) and hand over again to the next router\n"
"  --connect-timeout-ms N  wait this long for the router socket (default 10000)\n"
"  --start-delay-ms N   after the handover, wait N ms before starting vCPUs\n"
"  --verify-timeout-ms N   give up verifying after N ms (default 120000)\n"
"  --until-router-done  keep the guest running past --run-ms until the router\n"
"                       has finished and gone (at most --verify-timeout-ms), so\n"
"                       verification sees the migration's final state\n"
"  --discard FIRST:COUNT@MS\n"
"                       MS ms after the vCPUs start, discard guest pages\n"
"                       [FIRST, FIRST+COUNT) as a balloon does: MADV_DONTNEED\n"
"                       (missing mode) or MADV_REMOVE of the memfd (minor); the\n"
"                       router sees UFFD_EVENT_REMOVE and the pages must read\n"
"                       zero from then on, unless poisoned. Repeatable (up to\n"
"                       %d); FIRST >= --vcpus (control pages hold guest state)\n"
"  --touch-fraction F   the guest's read pass covers only the first F of its\n"
"                       slice, 0 < F <= 1 (default 1): the rest reaches the\n"
"                       target only by the source's background push\n"
"  --write-percent P    --cpu threads only: the guest also writes, 0..100\n"
"                       (default 0). Pages of the slices picked by a hash of\n"
"                       (page, --seed) get an 8-byte stamp at offset 0x80 +\n"
"                       8 * (page %% 16), right after the guest first read\n"
"                       them, and a new one each loop: VCPU << 56 |\n"
"                       COUNTER << 24 | PAGE. Never pages in a --discard range\n"
"  --writes FILE        after the run, one line per page written that way:\n"
"                       \"PAGE OFFSET VALUE\" (decimal, decimal, the last stamp\n"
"                       as 16 hex digits; stored little-endian); a write that\n"
"                       hit poison is not listed\n"
"\n"
"Output (--json): source: {\"event\":\"vm\",\"role\":\"source\",\"cpu\":\"kvm\"|\"threads\",\n"
"\"pid\",\"addr\",\"length\",\"page_size\",\"vcpus\",\"control_pages\",\"uffd_fd\",\n"
"\"memfd_fd\",\"tids\",...} once the guest runs; zeroed {\"first\",\"count\",\"ns\",\n"
"\"took_ns\",\"poisoned\"} for each --zero-at done; source_summary when stopped.\n"
"Target: vm (with \"cpu\"), handover, router_lost, vcpus_started, discard\n"
"{\"first\",\"count\",\"ns\",\"took_ns\",\"ok\"}, target_summary {\"pages\",\"sigbus_pages\",\n"
"\"poison_mmio\" (threads: poison SIGBUS hits),\"discarded\":[[first,count],..] (the\n"
"ones done), \"written_pages\", \"writes_reverted\" and \"reverted_pages\" (stamps\n"
"found replaced at the page's next write), \"progress\":[[counter found in memory at start,\n"
"counter at end],..],..}.\n"
"Exit status: 0 ok, 1 failure, 2 bad usage.\n"
"\n"
"Examples:\n"
"  migrate-vm --role source --json --vcpus 4 --mem-mib 256\n"
"  migrate-vm --role source --cpu threads --json --zero-at 800:30000:64\n"
"  migrate-vm --role target --router /run/fl.sock --mode minor --json --dump t.txt\n"
"  migrate-vm --role target --router /run/fl.sock --discard 4096:512@500 --dump t.txt\n"
"  migrate-vm --role target --router /run/fl.sock --cpu threads --write-percent 20 \\\n"
"             --writes w.txt --image t.img\n",
		MAX_VCPUS, MAX_MEM_MIB, MAX_ZEROS, MAX_ZEROS, MAX_DISCARDS);
}

/* "A<sep1>B<sep2>C", three non-negative decimal integers. */
static bool parse_three(const char *s, char sep1, char sep2, uint64_t v[3])
{
	const char seps[3] = { sep1, sep2, 0 };
	char *end;

	for (int i = 0; i < 3; i++) {
		if (*s < '0' || *s > '9')
			return false;
		errno = 0;
		v[i] = strtoull(s, &end, 10);
		if (errno || *end != seps[i])
			return false;
		s = end + 1;
	}
	return true;
}

/* --discard FIRST:COUNT@MS, COUNT at least 1. */
static struct discard parse_discard(const char *s)
{
	uint64_t v[3];

	if (!parse_three(s, ':', '@', v) || !v[1] || v[2] > 86400000)
		bad_usage("--discard '%s': expected FIRST:COUNT@MS (page index, pages >= 1, ms)", s);
	return (struct discard){ .first = v[0], .count = v[1], .at_ms = (unsigned long)v[2] };
}

/* --zero-at MS:FIRST:COUNT, COUNT at least 1. */
static struct discard parse_zero_at(const char *s)
{
	uint64_t v[3];

	if (!parse_three(s, ':', ':', v) || !v[2] || v[0] > 86400000)
		bad_usage("--zero-at '%s': expected MS:FIRST:COUNT (ms, page index, pages >= 1)", s);
	return (struct discard){ .first = v[1], .count = v[2], .at_ms = (unsigned long)v[0] };
}

/* --cpu's default: KVM when this process may use it. */
static void choose_cpu(struct options *o)
{
	if (o->cpu == CPU_KVM) {
		fprintf(stderr, "migrate-vm: vCPUs on KVM (--cpu kvm)\n");
		return;
	}
	if (o->cpu == CPU_THREADS) {
		fprintf(stderr, "migrate-vm: vCPUs as host threads (--cpu threads)\n");
		return;
	}
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd >= 0) {
		close(fd);
		o->cpu = CPU_KVM;
		fprintf(stderr, "migrate-vm: vCPUs on KVM (/dev/kvm is usable; --cpu threads "
			"for host threads)\n");
		return;
	}
	o->cpu = CPU_THREADS;
	fprintf(stderr, "migrate-vm: vCPUs as host threads (/dev/kvm: %s)\n", strerror(errno));
}

static void parse_options(struct options *o, int argc, char **argv)
{
	enum { OPT_ROLE = 256, OPT_VCPUS, OPT_MEM, OPT_RUN, OPT_JSON, OPT_HOT, OPT_PACE_US,
	       OPT_PACE_PAGES, OPT_SEED, OPT_ZERO, OPT_ROUTER, OPT_MODE, OPT_RECONNECT,
	       OPT_DUMP, OPT_CONNECT, OPT_START, OPT_VERIFY, OPT_IMAGE, OPT_DISCARD,
	       OPT_UNTIL_ROUTER, OPT_CPU, OPT_WRITE_PERCENT, OPT_WRITES, OPT_ZERO_AT, OPT_TOUCH,
	       OPT_HUGETLB, OPT_HUGETLB_1G, OPT_WRITE_AT };
	static const struct option lo[] = {
		{ "role", required_argument, 0, OPT_ROLE },
		{ "vcpus", required_argument, 0, OPT_VCPUS },
		{ "mem-mib", required_argument, 0, OPT_MEM },
		{ "run-ms", required_argument, 0, OPT_RUN },
		{ "json", no_argument, 0, OPT_JSON },
		{ "hot-fraction", required_argument, 0, OPT_HOT },
		{ "pace-us", required_argument, 0, OPT_PACE_US },
		{ "pace-pages", required_argument, 0, OPT_PACE_PAGES },
		{ "seed", required_argument, 0, OPT_SEED },
		{ "zero-percent", required_argument, 0, OPT_ZERO },
		{ "router", required_argument, 0, OPT_ROUTER },
		{ "mode", required_argument, 0, OPT_MODE },
		{ "reconnect", no_argument, 0, OPT_RECONNECT },
		{ "dump", required_argument, 0, OPT_DUMP },
		{ "image", required_argument, 0, OPT_IMAGE },
		{ "connect-timeout-ms", required_argument, 0, OPT_CONNECT },
		{ "start-delay-ms", required_argument, 0, OPT_START },
		{ "verify-timeout-ms", required_argument, 0, OPT_VERIFY },
		{ "until-router-done", no_argument, 0, OPT_UNTIL_ROUTER },
		{ "discard", required_argument, 0, OPT_DISCARD },
		{ "cpu", required_argument, 0, OPT_CPU },
		{ "write-percent", required_argument, 0, OPT_WRITE_PERCENT },
		{ "writes", required_argument, 0, OPT_WRITES },
		{ "zero-at", required_argument, 0, OPT_ZERO_AT },
		{ "write-at", required_argument, 0, OPT_WRITE_AT },
		{ "touch-fraction", required_argument, 0, OPT_TOUCH },
		{ "hugetlb", no_argument, 0, OPT_HUGETLB },
		{ "hugetlb-1g", no_argument, 0, OPT_HUGETLB_1G },
		{ "help", no_argument, 0, 'h' },
		{ 0, 0, 0, 0 },
	};
	bool run_given = false;
	int ch;

	*o = (struct options){ .vcpus = 4, .mem_mib = 256, .hot_fraction = 0.125, .touch_fraction = 1,
			       .pace_us = 1000, .pace_pages = 64, .seed = 1, .zero_percent = 10,
			       .mode = FL_MODE_MISSING, .connect_timeout_ms = 10000,
			       .verify_timeout_ms = 120000 };
	opterr = 0;
	while ((ch = getopt_long(argc, argv, ":h", lo, NULL)) != -1) {
		switch (ch) {
		case OPT_ROLE:
			if (!strcmp(optarg, "source"))
				o->role = ROLE_SOURCE;
			else if (!strcmp(optarg, "target"))
				o->role = ROLE_TARGET;
			else
				bad_usage("--role '%s': expected source or target", optarg);
			break;
		case OPT_VCPUS: o->vcpus = (unsigned)parse_ulong("--vcpus", optarg, 1, MAX_VCPUS); break;
		case OPT_MEM: o->mem_mib = parse_ulong("--mem-mib", optarg, 1, MAX_MEM_MIB); break;
		case OPT_RUN:
			o->run_ms = parse_ulong("--run-ms", optarg, 0, 86400000);
			run_given = true;
			break;
		case OPT_JSON: o->json = true; break;
		case OPT_HOT: {
			char *end;
			errno = 0;
			o->hot_fraction = strtod(optarg, &end);
			if (errno || *end || !(o->hot_fraction > 0 && o->hot_fraction <= 1))
				bad_usage("--hot-fraction '%s': expected a number in (0, 1]", optarg);
			break;
		}
		case OPT_PACE_US: o->pace_us = parse_ulong("--pace-us", optarg, 0, 10000000); break;
		case OPT_PACE_PAGES:
			o->pace_pages = parse_ulong("--pace-pages", optarg, 1, 1UL << 20);
			break;
		case OPT_SEED: o->seed = parse_ulong("--seed", optarg, 0, ULONG_MAX); break;
		case OPT_ZERO: o->zero_percent = parse_ulong("--zero-percent", optarg, 0, 100); break;
		case OPT_ROUTER: o->router = optarg; break;
		case OPT_MODE:
			if (!strcmp(optarg, "missing"))
				o->mode = FL_MODE_MISSING;
			else if (!strcmp(optarg, "minor"))
				o->mode = FL_MODE_MINOR;
			else
				bad_usage("--mode '%s': expected missing or minor", optarg);
			break;
		case OPT_RECONNECT: o->reconnect = true; break;
		case OPT_DUMP: o->dump = optarg; break;
		case OPT_IMAGE: o->image = optarg; break;
		case OPT_CONNECT:
			o->connect_timeout_ms = parse_ulong("--connect-timeout-ms", optarg, 0, 3600000);
			break;
		case OPT_START:
			o->start_delay_ms = parse_ulong("--start-delay-ms", optarg, 0, 3600000);
			break;
		case OPT_VERIFY:
			o->verify_timeout_ms = parse_ulong("--verify-timeout-ms", optarg, 1, 86400000);
			break;
		case OPT_UNTIL_ROUTER:
			o->until_router_done = true;
			break;
		case OPT_DISCARD:
			if (o->ndiscard == MAX_DISCARDS) {
				fprintf(stderr, "migrate-vm: --discard: at most %d of them\n", MAX_DISCARDS);
				exit(2);
			}
			o->discard[o->ndiscard++] = parse_discard(optarg);
			break;
		case OPT_CPU:
			if (!strcmp(optarg, "kvm"))
				o->cpu = CPU_KVM;
			else if (!strcmp(optarg, "threads"))
				o->cpu = CPU_THREADS;
			else
				bad_usage("--cpu '%s': expected kvm or threads", optarg);
			break;
		case OPT_WRITE_PERCENT:
			o->write_percent = parse_ulong("--write-percent", optarg, 0, 100);
			break;
		case OPT_WRITES: o->writes = optarg; break;
		case OPT_HUGETLB: o->hugetlb = true; o->huge_sz = HUGE_SZ; break;
		case OPT_HUGETLB_1G: o->hugetlb = true; o->huge_sz = 1UL << 30; break;
		case OPT_TOUCH: {
			char *end;
			errno = 0;
			o->touch_fraction = strtod(optarg, &end);
			if (errno || *end || !(o->touch_fraction > 0 && o->touch_fraction <= 1))
				bad_usage("--touch-fraction '%s': expected a number in (0, 1]", optarg);
			break;
		}
		case OPT_ZERO_AT:
			if (o->nzero == MAX_ZEROS) {
				fprintf(stderr, "migrate-vm: --zero-at: at most %d of them\n", MAX_ZEROS);
				exit(2);
			}
			o->zero_at[o->nzero++] = parse_zero_at(optarg);
			break;
		case OPT_WRITE_AT:
			if (o->nzero == MAX_ZEROS) {
				fprintf(stderr, "migrate-vm: --write-at/--zero-at: at most %d of them\n",
					MAX_ZEROS);
				exit(2);
			}
			o->zero_at[o->nzero] = parse_zero_at(optarg);
			o->zero_at[o->nzero++].write = true;
			break;
		case 'h': usage(stdout); exit(0);
		case ':': bad_usage("option %s needs an argument", argv[optind - 1]);
		default: bad_usage("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		bad_usage("unexpected argument '%s'", argv[optind]);
	if (!o->role)
		bad_usage("%s", "--role source|target is required");
	if (o->role == ROLE_TARGET && !o->router)
		bad_usage("%s", "--role target needs --router SOCK (the router's handover socket)");
	if (o->role == ROLE_SOURCE && (o->router || o->reconnect || o->ndiscard ||
				       o->write_percent || o->writes))
		bad_usage("%s", "--router/--reconnect/--discard/--write-percent/--writes are "
			  "target options");
	if (o->role == ROLE_TARGET && o->nzero)
		bad_usage("%s", "--zero-at/--write-at are source options");
	if (o->role == ROLE_TARGET && !run_given)
		o->run_ms = 3000;
	if (o->hugetlb && (o->mem_mib << 20) % o->huge_sz) {
		char what[64];

		snprintf(what, sizeof(what), "%lu MiB", o->huge_sz >> 20);
		bad_usage("--mem-mib is not a whole number of %s huge pages", what);
	}
	uint64_t pages = (uint64_t)o->mem_mib * (1024 * 1024 / PAGE_SZ);
	if (pages < 2ull * o->vcpus)
		bad_usage("%s", "--mem-mib too small: each vCPU needs a control page and at least "
			  "one page of slice");
	for (unsigned i = 0; i < o->ndiscard; i++) {
		const struct discard *d = &o->discard[i];
		const uint64_t huge = o->huge_sz / PAGE_SZ;

		if (o->hugetlb && (d->first % huge || d->count % huge)) {
			fprintf(stderr, "migrate-vm: --discard %" PRIu64 ":%" PRIu64 ": with --hugetlb a "
				"discard is whole 2 MiB pages: FIRST and COUNT multiples of %" PRIu64 "\n",
				d->first, d->count, huge);
			exit(2);
		}
		if (d->first < o->vcpus || d->first >= pages || d->count > pages - d->first) {
			fprintf(stderr, "migrate-vm: --discard %" PRIu64 ":%" PRIu64 ": pages %u..%" PRIu64
				" can be discarded (the first %u are vCPU control pages)\n", d->first,
				d->count, o->vcpus, pages - 1, o->vcpus);
			exit(2);
		}
	}
	for (unsigned i = 0; i < o->nzero; i++) {
		const struct discard *z = &o->zero_at[i];

		if (z->first < o->vcpus || z->first >= pages || z->count > pages - z->first) {
			fprintf(stderr, "migrate-vm: --zero-at %lu:%" PRIu64 ":%" PRIu64 ": pages %u..%"
				PRIu64 " can be zeroed (the first %u are vCPU control pages)\n", z->at_ms,
				z->first, z->count, o->vcpus, pages - 1, o->vcpus);
			exit(2);
		}
	}
	/* The KVM guest program has no write path on the target, nor a way to
	 * tell the VMM what it wrote. */
	bool cpu_given = o->cpu != CPU_AUTO;
	if (o->write_percent && o->cpu == CPU_KVM)
		bad_usage("%s", "--write-percent needs --cpu threads (the KVM guest only reads "
			  "on the target)");
	choose_cpu(o);
	if (o->write_percent && o->cpu == CPU_KVM && !cpu_given)
		bad_usage("%s", "--write-percent needs --cpu threads (KVM was picked because "
			  "/dev/kvm is usable)");
}

/* ------------------------------------------------------------------ */
/* memory, userfaultfd, VM                                             */

static bool zero_page_of_pattern(const struct options *o, uint64_t i)
{
	uint64_t s = o->seed ^ (i * 0xd1b54a32d192ed03ULL);

	return splitmix64(&s) % 100 < o->zero_percent;
}

/* Page i: {index, seed} header, then a stream only (seed, i) determines. */
static void fill_page(const struct options *o, uint8_t *p, uint64_t i, bool control)
{
	uint64_t *q = (uint64_t *)p;

	if (!control && zero_page_of_pattern(o, i)) {
		memset(p, 0, PAGE_SZ);
		return;
	}
	uint64_t s = (o->seed << 32) ^ i ^ 0x5eed5eed00000000ULL;
	q[0] = i;
	q[1] = o->seed;
	for (size_t k = 2; k < PAGE_SZ / 8; k++)
		q[k] = splitmix64(&s);
	if (control)
		memset(p + CONTROL_OFF, 0, 4); /* the counter starts at 0 */
}

static void memory_setup(struct migrate_vm_ctx *c)
{
	const struct options *o = &c->opt;

	c->mem_len = o->mem_mib << 20;
	c->pages = c->mem_len / PAGE_SZ;
	/* hugetlbfs is always a file: MISSING mode then is a shared mapping of it
	 * (as QEMU's memory-backend-file), handed over with its memfd */
	if (o->role == ROLE_SOURCE || o->mode == FL_MODE_MINOR || o->hugetlb) {
		unsigned flags = MFD_CLOEXEC | (!o->hugetlb ? 0 : o->huge_sz == HUGE_SZ ?
						 MFD_HUGETLB | MFD_HUGE_2MB : MFD_HUGETLB | MFD_HUGE_1GB);

		c->memfd = memfd_create(o->role == ROLE_SOURCE ? "migrate-vm-source" : "migrate-vm-target",
					flags);
		if (c->memfd < 0)
			die("memfd_create%s: %s", o->hugetlb ? " (MFD_HUGETLB)" : "", strerror(errno));
		if (o->role == ROLE_SOURCE) {
			/* Every page exists in the page cache, so only pages a poison
			 * injector punched out can fault. */
			if (fallocate(c->memfd, 0, 0, (off_t)c->mem_len) < 0)
				die("fallocate %zu bytes of guest memory: %s%s", c->mem_len, strerror(errno),
				    o->hugetlb ? " (free huge pages: /proc/sys/vm/nr_hugepages)" : "");
		} else if (ftruncate(c->memfd, (off_t)c->mem_len) < 0) {
			die("ftruncate memfd to %zu bytes: %s", c->mem_len, strerror(errno));
		}
	}
	c->mem = kvm_vm_guest_mem(c->mem_len, c->memfd, "guest memory");

	if (o->role == ROLE_SOURCE)
		for (uint64_t i = 0; i < c->pages; i++)
			fill_page(o, c->mem + i * PAGE_SZ, i, i < o->vcpus);
	c->region = (struct fl_region){ .base = c->mem, .length = c->mem_len,
					.memfd = o->role == ROLE_TARGET ? c->memfd : -1, .offset = 0 };
}

static void uffd_setup(struct migrate_vm_ctx *c)
{
	const struct options *o = &c->opt;
	uint64_t want = UFFD_FEATURE_POISON | UFFD_FEATURE_THREAD_ID;
	uint64_t mode = UFFDIO_REGISTER_MODE_MISSING;

	if (o->hugetlb)
		want |= UFFD_FEATURE_MISSING_HUGETLBFS;
	if (o->role == ROLE_SOURCE) {
		/* WP_ASYNC: an outside tool may register WP through its duplicate
		 * and track dirty pages with PAGEMAP_SCAN (no soft-dirty here). */
		want |= UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
			UFFD_FEATURE_WP_ASYNC;
	} else {
		want |= UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP;
		if (o->mode == FL_MODE_MINOR) {
			want |= UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM |
				(o->hugetlb ? UFFD_FEATURE_MINOR_HUGETLBFS : 0);
			mode |= UFFDIO_REGISTER_MODE_MINOR;
		}
	}
	c->uffd = uffd_open();
	struct uffdio_api api = { .api = UFFD_API, .features = want };
	if (ioctl(c->uffd, UFFDIO_API, &api) < 0)
		die("UFFDIO_API(features 0x%" PRIx64 "): %s — this kernel lacks some of them "
		    "(POISON needs 6.6+)", want, strerror(errno));
	c->uffd_features = want;
	c->uffd_available = api.features;

	struct uffdio_register reg = {
		.range = { .start = (uint64_t)(uintptr_t)c->mem, .len = c->mem_len },
		.mode = mode,
	};
	if (ioctl(c->uffd, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER(%s) of %zu bytes: %s", mode & UFFDIO_REGISTER_MODE_MINOR ?
		    "MISSING|MINOR" : "MISSING", c->mem_len, strerror(errno));
	if (!(reg.ioctls & (1ULL << _UFFDIO_POISON)))
		die("UFFDIO_REGISTER: the range does not support UFFDIO_POISON");
	if ((mode & UFFDIO_REGISTER_MODE_MINOR) && !(reg.ioctls & (1ULL << _UFFDIO_CONTINUE)))
		die("UFFDIO_REGISTER: the range does not support UFFDIO_CONTINUE");
}

/* --write-percent: independent of the pattern's zero pages. */
static bool write_page_selected(const struct options *o, uint64_t i)
{
	uint64_t s = o->seed ^ (i * 0x9e3779b97f4a7c15ULL) ^ 0x7772697465000000ULL;

	return splitmix64(&s) % 100 < o->write_percent;
}

/*
 * Which pages the target guest stamps.  Never a page in a --discard range:
 * the discard would race the record of what the page holds.
 */
static void writes_setup(struct migrate_vm_ctx *c)
{
	const struct options *o = &c->opt;

	if (o->role != ROLE_TARGET || !o->write_percent)
		return;
	c->write_sel = calloc(c->pages, 1);
	c->last_write = calloc(c->pages, sizeof(*c->last_write));
	if (!c->write_sel || !c->last_write)
		die("out of memory (--write-percent record of %" PRIu64 " pages)", c->pages);
	for (uint64_t i = o->vcpus; i < c->pages; i++)
		c->write_sel[i] = write_page_selected(o, i);
	for (unsigned k = 0; k < o->ndiscard; k++)
		memset(c->write_sel + o->discard[k].first, 0, o->discard[k].count);
}

/* Each vCPU's control page and slice; on KVM, the VM and its vCPUs too. */
static void vm_setup(struct migrate_vm_ctx *c)
{
	const struct options *o = &c->opt;
	bool kvm = o->cpu == CPU_KVM;

	if (kvm) {
		kvm_vm_create(&c->vm, guest_code, sizeof(guest_code), CODE_GPA, CODE_SLOT_LEN);
		kvm_vm_add_slot(&c->vm, 1, DATA_GPA, c->mem, c->mem_len, "guest memory");
	}

	uint64_t slice = (c->pages - o->vcpus) / o->vcpus;
	uint64_t hot = (uint64_t)((double)slice * o->hot_fraction);
	if (hot < 1)
		hot = 1;
	for (unsigned i = 0; i < o->vcpus; i++) {
		struct vcpu *vc = &c->vcpu[i];

		vc->idx = i;
		vc->control_page = i;
		vc->slice_first = o->vcpus + (uint64_t)i * slice;
		vc->slice_pages = slice;
		vc->hot_pages = hot;
		vc->touch_pages = (uint64_t)((double)slice * o->touch_fraction);
		if (vc->touch_pages < hot)
			vc->touch_pages = hot;
		vc->fd = -1;
		if (!kvm)
			continue;
		vc->fd = kvm_vm_add_vcpu(&c->vm, i, &vc->run);

		struct guest_params gp = {
			.control_gpa = (uint32_t)(DATA_GPA + vc->control_page * PAGE_SZ + CONTROL_OFF),
			.slice_gpa = (uint32_t)(DATA_GPA + vc->slice_first * PAGE_SZ),
			.hot_pages = (uint32_t)hot,
			.slice_pages = (uint32_t)(o->role == ROLE_TARGET ? vc->touch_pages : slice),
			.pace_pages = (uint32_t)o->pace_pages,
		};
		memcpy(c->vm.code_mem + PARAM_GPA + 32 * i, &gp, sizeof(gp));
	}
}

/* ------------------------------------------------------------------ */
/* vCPUs                                                               */

static void sig_kick(int sig)
{
	(void)sig; /* only there to make KVM_RUN / sleeps return EINTR */
}

static void sigbus_handler(int sig, siginfo_t *si, void *uc)
{
	struct migrate_vm_ctx *c = &migrate_vm_ctx;
	pid_t me = gettid();

	(void)sig;
	(void)uc;
	if (me == c->verify_tid) {
		c->verify_code = si->si_code;
		siglongjmp(c->verify_jmp, 1);
	}
	if (me == c->zero_tid)
		siglongjmp(c->zero_jmp, 1);
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		struct vcpu *v = &c->vcpu[i];

		if (v->tid != me)
			continue;
		v->sigbus_addr = si->si_addr;
		if (c->opt.cpu == CPU_KVM) {
			v->sigbus = 1;
			return;
		}
		/* Returning would retry the access for ever. */
		if (!v->jmp_armed)
			break;
		v->jmp_armed = 0;
		siglongjmp(v->jmp, 1);
	}
	static const char msg[] = "migrate-vm: SIGBUS outside a guest access, the verifier "
				  "or --zero-at (host touched a poisoned page)\n";
	if (write(2, msg, sizeof(msg) - 1) < 0) {
		/* nothing more to do */
	}
	_exit(1);
}

static int vcpu_init_regs(struct migrate_vm_ctx *c, struct vcpu *v)
{
	struct kvm_regs regs = {
		.rip = CODE_GPA,
		.rbp = PARAM_GPA + 32UL * v->idx,
		.rdi = c->opt.role == ROLE_TARGET ? MODE_READ : 0,
		/* Own stack per vCPU below the top of the code slot (for call/ret). */
		.rsp = CODE_SLOT_LEN - 16 - 64UL * v->idx,
	};

	return kvm_vm_enter_flat32(v->fd, &regs, v->err);
}

static void note_poison(struct vcpu *v, uint64_t gpa, bool write)
{
	uint64_t page = gpa & ~(uint64_t)(PAGE_SZ - 1);

	if (write)
		v->poison_writes++;
	else
		v->poison_reads++;
	for (unsigned i = 0; i < v->npoison_gpa; i++)
		if (v->poison_gpa[i] == page)
			return;
	if (v->npoison_gpa < MAX_POISON_GPAS)
		v->poison_gpa[v->npoison_gpa++] = page;
	else
		v->poison_gpa_overflow = true;
}

static int vcpu_loop(struct migrate_vm_ctx *c, struct vcpu *v)
{
	struct kvm_run *run = v->run;

	while (!__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE)) {
		int r = ioctl(v->fd, KVM_RUN, 0);
		int e = errno;

		v->kvm_runs++;
		if (v->sigbus) {
			set_err(v->err, "SIGBUS at %p inside KVM_RUN: the kernel reported a poisoned "
				"page by signal, not as an emulated MMIO exit; this VMM cannot step "
				"over that", v->sigbus_addr);
			return -1;
		}
		if (r < 0) {
			if (e == EINTR || e == EAGAIN)
				continue;
			set_err(v->err, "KVM_RUN: %s (exit reason %u)", strerror(e), run->exit_reason);
			return -1;
		}
		switch (run->exit_reason) {
		case KVM_EXIT_IO: {
			uint32_t val = 0;
			if (kvm_vm_io_out32(run, &val, v->err) < 0)
				return -1;
			if (run->io.port == PORT_LOOP) {
				if (!v->seen_counter) {
					v->first_counter = val;
					v->seen_counter = true;
				}
				v->last_counter = val;
				v->loops++;
			} else if (run->io.port == PORT_PACE) {
				v->pace_exits++;
				if (c->opt.pace_us)
					sleep_us(c->opt.pace_us);
			} else {
				set_err(v->err, "unexpected out to port 0x%x", run->io.port);
				return -1;
			}
			break;
		}
		case KVM_EXIT_MMIO: {
			uint64_t gpa = run->mmio.phys_addr;
			if (gpa < DATA_GPA || gpa - DATA_GPA >= c->mem_len) {
				set_err(v->err, "MMIO %s at GPA 0x%" PRIx64 " outside guest memory",
					run->mmio.is_write ? "write" : "read", gpa);
				return -1;
			}
			/* A poisoned page: the emulator could not access it. */
			note_poison(v, gpa, run->mmio.is_write);
			if (!run->mmio.is_write)
				memset(run->mmio.data, 0, sizeof(run->mmio.data));
			break;
		}
		case KVM_EXIT_INTR:
			break;
		case KVM_EXIT_HLT:
			set_err(v->err, "guest halted (RIP left the code)");
			return -1;
		default:
			kvm_vm_exit_err(run, v->err);
			return -1;
		}
	}
	return 0;
}

/* ---- --cpu threads: the guest program in C on host threads ---- */

static bool stopping(struct migrate_vm_ctx *c)
{
	return __atomic_load_n(&c->stop, __ATOMIC_ACQUIRE);
}

/*
 * One guest access of size 4 or 8 at guest memory offset off; false if the
 * page is poisoned, counted as the KVM_EXIT_MMIO path counts it (a read
 * gets zero, a write is dropped).  The SIGBUS handler jumps back here.
 * sigsetjmp does not save the signal mask: that would be a syscall per
 * access; the rare recovery unblocks SIGBUS itself (the kernel blocked it
 * for the handler, which never returned).
 */
static bool guest_access(struct migrate_vm_ctx *c, struct vcpu *v, uint64_t off, unsigned size,
			 bool write, uint64_t *val)
{
	uint8_t *p = c->mem + off;

	if (sigsetjmp(v->jmp, 0)) {
		sigset_t bus;

		sigemptyset(&bus);
		sigaddset(&bus, SIGBUS);
		pthread_sigmask(SIG_UNBLOCK, &bus, NULL);
		note_poison(v, DATA_GPA + off, write);
		if (!write)
			*val = 0;
		return false;
	}
	v->jmp_armed = 1;
	if (size == 8) {
		if (write)
			*(volatile uint64_t *)p = *val;
		else
			*val = *(volatile uint64_t *)p;
	} else {
		if (write)
			*(volatile uint32_t *)p = (uint32_t)*val;
		else
			*val = *(volatile uint32_t *)p;
	}
	v->jmp_armed = 0;
	return true;
}

/* The guest's PORT_PACE exit every --pace-pages pages; false: stop. */
static bool guest_pace(struct migrate_vm_ctx *c, struct vcpu *v, uint64_t *left)
{
	if (--*left)
		return !stopping(c);
	*left = c->opt.pace_pages;
	v->pace_exits++;
	if (stopping(c))
		return false;
	if (c->opt.pace_us)
		sleep_us(c->opt.pace_us);
	return !stopping(c);
}

/* --write-percent: a stamp no earlier write to the page had, then its record. */
static void guest_stamp(struct migrate_vm_ctx *c, struct vcpu *v, uint64_t page, uint32_t counter)
{
	uint32_t off = WRITE_OFF + 8 * (uint32_t)(page % 16);
	uint64_t stamp = (uint64_t)v->idx << 56 | (uint64_t)counter << 24 | (page & 0xffffff);

	/* Before the next write: is the last one still there?  A page written
	 * over behind the guest's back (a router placing old contents) shows
	 * here even if this write then hides it. */
	if (c->last_write[page].offset) {
		uint64_t now;

		if (guest_access(c, v, page * PAGE_SZ + off, 8, false, &now) &&
		    now != c->last_write[page].value) {
			v->writes_reverted++;
			if (v->nreverted < MAX_POISON_GPAS)
				v->reverted_page[v->nreverted++] = page;
		}
	}
	/* Poisoned: the write did not land, so there is nothing to record. */
	if (!guest_access(c, v, page * PAGE_SZ + off, 8, true, &stamp))
		return;
	c->last_write[page] = (struct page_write){ .offset = off, .value = stamp };
}

/*
 * Read mode: one dword of each of the first n pages of the slice.  Pages
 * [wfrom, wto) of those that --write-percent picked are stamped right after
 * their read, so each is stamped once per loop, just after its first fault.
 */
static bool guest_read_pass(struct migrate_vm_ctx *c, struct vcpu *v, uint64_t n, uint64_t wfrom,
			    uint64_t wto, uint32_t counter, uint64_t *pace_left)
{
	for (uint64_t p = 0; p < n; p++) {
		uint64_t page = v->slice_first + p, val;

		if (guest_access(c, v, page * PAGE_SZ, 4, false, &val) && c->write_sel &&
		    p >= wfrom && p < wto && c->write_sel[page])
			guest_stamp(c, v, page, counter);
		if (!guest_pace(c, v, pace_left))
			return false;
	}
	return true;
}

/* What guest_code does, with PORT_LOOP/PORT_PACE accounted in place. */
static void guest_threads_loop(struct migrate_vm_ctx *c, struct vcpu *v)
{
	const uint64_t ctrl = v->control_page * PAGE_SZ + CONTROL_OFF;
	uint64_t pace_left = c->opt.pace_pages;

	while (!stopping(c)) {
		uint64_t counter;

		guest_access(c, v, ctrl, 4, false, &counter);
		counter = (uint32_t)(counter + 1);
		guest_access(c, v, ctrl, 4, true, &counter);
		if (!v->seen_counter) {
			v->first_counter = (uint32_t)counter;
			v->seen_counter = true;
		}
		v->last_counter = (uint32_t)counter;
		v->loops++;

		if (c->opt.role == ROLE_SOURCE) {
			for (uint64_t p = 0; p < v->hot_pages; p++) {
				guest_access(c, v, (v->slice_first + p) * PAGE_SZ + HOT_OFF, 4, true,
					     &counter);
				if (!guest_pace(c, v, &pace_left))
					return;
			}
		} else if (!guest_read_pass(c, v, v->hot_pages, 0, v->hot_pages,
					    (uint32_t)counter, &pace_left) ||
			   !guest_read_pass(c, v, v->touch_pages, v->hot_pages, v->touch_pages,
					    (uint32_t)counter, &pace_left)) {
			return;
		}
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *v = arg;
	struct migrate_vm_ctx *c = &migrate_vm_ctx;

	v->tid = gettid();
	if (c->opt.cpu == CPU_THREADS)
		guest_threads_loop(c, v);
	else if (vcpu_init_regs(c, v) < 0 || vcpu_loop(c, v) < 0)
		v->failed = true;
	return NULL;
}

static void start_vcpus(struct migrate_vm_ctx *c)
{
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		kvm_vm_start_vcpu(&c->vcpu[i].thread, i, vcpu_thread, &c->vcpu[i]);
		c->vcpu[i].started = true;
	}
	for (unsigned i = 0; i < c->opt.vcpus; i++)
		while (!c->vcpu[i].tid)
			sleep_us(100);
}

/* Stop every vCPU; false if one could not be stopped (stuck in a fault). */
static bool stop_vcpus(struct migrate_vm_ctx *c, unsigned timeout_ms)
{
	bool all = true;

	__atomic_store_n(&c->stop, 1, __ATOMIC_RELEASE);
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		struct vcpu *v = &c->vcpu[i];
		if (!v->started)
			continue;
		if (v->run)
			__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_RELEASE);
		/* cuts KVM_RUN or a pace sleep short */
		pthread_kill(v->thread, SIGUSR1);
	}
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		struct vcpu *v = &c->vcpu[i];
		if (!v->started)
			continue;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += timeout_ms / 1000;
		ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (pthread_timedjoin_np(v->thread, NULL, &ts) == 0)
			v->started = false;
		else
			all = false;
	}
	return all;
}

/* ------------------------------------------------------------------ */
/* reporting                                                           */

static const char *cpu_name(const struct options *o)
{
	return o->cpu == CPU_KVM ? "kvm" : "threads";
}

/* What a poison hit is called on stderr. */
static const char *poison_hits_name(const struct options *o)
{
	return o->cpu == CPU_KVM ? "poison MMIO exits" : "poison SIGBUS hits";
}

static void print_vm_line(struct migrate_vm_ctx *c)
{
	const struct options *o = &c->opt;

	fprintf(stderr, "migrate-vm: %s pid %d: %u vCPUs (%s), %lu MiB at %p, uffd %d, memfd %d\n",
		o->role == ROLE_SOURCE ? "source" : "target", getpid(), o->vcpus, cpu_name(o),
		o->mem_mib, (void *)c->mem, c->uffd, c->memfd);
	if (!o->json)
		return;
	pthread_mutex_lock(&c->out_lock);
	FILE *f = stdout;
	fprintf(f, "{\"event\":\"vm\",\"role\":\"%s\",\"cpu\":\"%s\",\"pid\":%d,\"addr\":\"0x%"
		PRIxPTR "\",\"length\":%zu,\"page_size\":%lu,\"backing_page_size\":%lu,\"vcpus\":%u,"
		"\"control_pages\":[", o->role == ROLE_SOURCE ? "source" : "target", cpu_name(o), getpid(),
		(uintptr_t)c->mem, c->mem_len, PAGE_SZ, o->hugetlb ? o->huge_sz : PAGE_SZ, o->vcpus);
	for (unsigned i = 0; i < o->vcpus; i++)
		fprintf(f, "%s%" PRIu64, i ? "," : "", c->vcpu[i].control_page);
	fprintf(f, "],\"control_offset\":%d,\"uffd_fd\":%d,\"memfd_fd\":%d,\"uffd_features\":\"0x%"
		PRIx64 "\",\"uffd_available\":\"0x%" PRIx64 "\",\"gpa\":\"0x%lx\",\"slices\":[",
		CONTROL_OFF, c->uffd, c->memfd, c->uffd_features, c->uffd_available, DATA_GPA);
	for (unsigned i = 0; i < o->vcpus; i++)
		fprintf(f, "%s{\"first\":%" PRIu64 ",\"pages\":%" PRIu64 ",\"hot\":%" PRIu64 "}",
			i ? "," : "", c->vcpu[i].slice_first, c->vcpu[i].slice_pages,
			c->vcpu[i].hot_pages);
	fprintf(f, "]");
	if (o->role == ROLE_SOURCE) {
		/* The source's vCPUs already run; a target's start after the handover. */
		fprintf(f, ",\"tids\":[");
		for (unsigned i = 0; i < o->vcpus; i++)
			fprintf(f, "%s%d", i ? "," : "", c->vcpu[i].tid);
		fprintf(f, "],\"seed\":%" PRIu64 ",\"zero_percent\":%lu,\"dirty_tracking\":"
			"\"uffd-wp-async\"", o->seed, o->zero_percent);
	} else
		fprintf(f, ",\"mode\":\"%s\"", o->mode == FL_MODE_MINOR ? "minor" : "missing");
	fputs("}\n", f);
	fflush(f);
	pthread_mutex_unlock(&c->out_lock);
}

/* "progress", "loops", "poison_mmio", "poison_gpas", "vcpu_errors" members. */
static void print_vcpu_stats(struct migrate_vm_ctx *c, FILE *f)
{
	const unsigned n = c->opt.vcpus;

	fputs(",\"progress\":[", f);
	for (unsigned i = 0; i < n; i++) {
		const struct vcpu *v = &c->vcpu[i];
		if (v->seen_counter)
			fprintf(f, "%s[%" PRIu32 ",%" PRIu32 "]", i ? "," : "",
				v->first_counter - 1, v->last_counter);
		else
			fprintf(f, "%s[null,null]", i ? "," : "");
	}
	fputs("],\"loops\":[", f);
	for (unsigned i = 0; i < n; i++)
		fprintf(f, "%s%" PRIu64, i ? "," : "", c->vcpu[i].loops);
	fputs("],\"poison_mmio\":{", f);
	for (unsigned i = 0; i < n; i++)
		fprintf(f, "%s\"%u\":%" PRIu64, i ? "," : "", i,
			c->vcpu[i].poison_reads + c->vcpu[i].poison_writes);
	fputs("},\"poison_gpas\":{", f);
	for (unsigned i = 0; i < n; i++) {
		const struct vcpu *v = &c->vcpu[i];
		fprintf(f, "%s\"%u\":[", i ? "," : "", i);
		for (unsigned k = 0; k < v->npoison_gpa; k++)
			fprintf(f, "%s\"0x%" PRIx64 "\"", k ? "," : "", v->poison_gpa[k]);
		fputs("]", f);
	}
	fputs("},\"poison_pages\":[", f);
	bool first = true;
	for (unsigned i = 0; i < n; i++)
		for (unsigned k = 0; k < c->vcpu[i].npoison_gpa; k++) {
			fprintf(f, "%s%" PRIu64, first ? "" : ",",
				(c->vcpu[i].poison_gpa[k] - DATA_GPA) / PAGE_SZ);
			first = false;
		}
	fputs("],\"vcpu_errors\":[", f);
	first = true;
	for (unsigned i = 0; i < n; i++) {
		if (!c->vcpu[i].failed)
			continue;
		fprintf(f, "%s{\"vcpu\":%u,\"error\":", first ? "" : ",", i);
		json_str(f, c->vcpu[i].err);
		fputs("}", f);
		first = false;
	}
	fputs("]", f);
}

static bool any_vcpu_failed(const struct migrate_vm_ctx *c)
{
	for (unsigned i = 0; i < c->opt.vcpus; i++)
		if (c->vcpu[i].failed)
			return true;
	return false;
}

static void report_vcpu_errors(const struct migrate_vm_ctx *c)
{
	for (unsigned i = 0; i < c->opt.vcpus; i++)
		if (c->vcpu[i].failed)
			fprintf(stderr, "migrate-vm: vCPU %u (tid %d): %s\n", i, c->vcpu[i].tid,
				c->vcpu[i].err);
}

/*
 * Wait for --run-ms (0: forever) or SIGTERM/SIGINT, which main() keeps
 * blocked in every thread so they arrive here.
 */
static int wait_run(const struct options *o)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (!o->run_ms) {
		int sig;
		sigwait(&set, &sig);
		return sig;
	}
	uint64_t end = now_ns() + o->run_ms * 1000000ULL;
	for (;;) {
		uint64_t now = now_ns();
		if (now >= end)
			return 0;
		struct timespec ts = { .tv_sec = (end - now) / 1000000000ULL,
				       .tv_nsec = (long)((end - now) % 1000000000ULL) };
		int sig = sigtimedwait(&set, NULL, &ts);
		if (sig > 0)
			return sig;
	}
}

/* ------------------------------------------------------------------ */
/* timed host work: --discard (target), --zero-at (source)             */

/*
 * --discard / --zero-at: the earliest range of list[0..n) not done yet,
 * once its time (after the vCPUs started) has come; -1 if *quit is set
 * first.  A range whose time has not come when the run ends is not done
 * (not reported either).
 */
static int next_timed_range(const struct migrate_vm_ctx *c, const struct discard *list,
			    unsigned n, bool *done, const volatile int *quit)
{
	unsigned k = n;

	for (unsigned i = 0; i < n; i++)
		if (!done[i] && (k == n || list[i].at_ms < list[k].at_ms))
			k = i;
	if (k == n)
		return -1;
	done[k] = true;
	uint64_t at = c->vcpus_start_ns + list[k].at_ms * 1000000ULL;

	while (!*quit && now_ns() < at) {
		uint64_t left_us = (at - now_ns()) / 1000;

		sleep_us(left_us < 10000 ? left_us + 1 : 10000);
	}
	return *quit ? -1 : (int)k;
}

/* Stop a --discard / --zero-at thread; false if it is stuck in a fault or
 * madvise (nobody serves it): then it is left behind, like the handover
 * thread. */
static bool stop_timed_thread(struct migrate_vm_ctx *c, pthread_t thread, bool *started,
			      volatile int *quit, const char *what, const char *stuck)
{
	struct timespec ts;

	if (!*started)
		return true;
	*quit = 1;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 3;
	if (pthread_timedjoin_np(thread, NULL, &ts) != 0) {
		emit_error(c, what, stuck);
		return false;
	}
	*started = false;
	return true;
}

static void start_timed_thread(struct migrate_vm_ctx *c, pthread_t *thread, bool *started,
			       void *(*fn)(void *), const char *name)
{
	int r = pthread_create(thread, NULL, fn, c);

	if (r)
		die("pthread_create (%s): %s", name, strerror(r));
	*started = true;
	pthread_setname_np(*thread, name);
}

/* ------------------------------------------------------------------ */
/* source                                                              */

/*
 * --zero-at: each range at its time, in time order, page by page through
 * the guest mapping as the guest itself would clear it.  A poisoned page
 * raises SIGBUS, which jumps back here: it stays poisoned, and is skipped.
 */
static void *zero_thread(void *arg)
{
	struct migrate_vm_ctx *c = arg;
	const struct options *o = &c->opt;
	bool done[MAX_ZEROS] = { false };
	int k;

	c->zero_tid = gettid();
	while ((k = next_timed_range(c, o->zero_at, o->nzero, done, &c->zero_quit)) >= 0) {
		const struct discard *z = &o->zero_at[k];
		/* volatile: live across the SIGBUS jumps */
		volatile uint64_t page, poisoned = 0;
		uint64_t t = now_ns();

		for (page = z->first; page < z->first + z->count; page++) {
			if (sigsetjmp(c->zero_jmp, 1)) {
				poisoned++;
				continue;
			}
			if (z->write) {
				uint64_t stamp = (uint64_t)z->at_ms << 32 | page | 1ULL << 63;

				memcpy(c->mem + page * PAGE_SZ + WRITE_OFF, &stamp, 8);
			} else {
				memset(c->mem + page * PAGE_SZ, 0, PAGE_SZ);
			}
		}
		uint64_t took = now_ns() - t;

		fprintf(stderr, "migrate-vm: %s pages %" PRIu64 "..%" PRIu64 " at %.1f ms (%.2f ms"
			", %" PRIu64 " poisoned ones skipped)\n", z->write ? "wrote" : "zeroed", z->first,
			z->first + z->count - 1, (t - c->vcpus_start_ns) / 1e6, took / 1e6,
			(uint64_t)poisoned);
		emit(c, "{\"event\":\"%s\",\"first\":%" PRIu64 ",\"count\":%" PRIu64 ",\"ns\":%"
		     PRIu64 ",\"took_ns\":%" PRIu64 ",\"poisoned\":%" PRIu64 "}",
		     z->write ? "written" : "zeroed", z->first, z->count, t, took, (uint64_t)poisoned);
	}
	c->zero_tid = 0;
	return NULL;
}

static int source_dump(struct migrate_vm_ctx *c, const char *path)
{
	unsigned char *res = malloc(c->pages);
	uint8_t *buf = malloc(PAGE_SZ);
	FILE *f = fopen(path, "w");

	if (!f || !res || !buf) {
		fprintf(stderr, "migrate-vm: --dump %s: %s\n", path, strerror(errno));
		free(res);
		free(buf);
		if (f)
			fclose(f);
		return -1;
	}
	/* Residency in the memfd's page cache: a punched-out page is not there.
	 * Read through the memfd, never the mapping: a hole there would fault
	 * on a userfaultfd nobody serves. */
	if (mincore(c->mem, c->mem_len, res) < 0) {
		fprintf(stderr, "migrate-vm: mincore: %s\n", strerror(errno));
		memset(res, 1, c->pages);
	}
	for (uint64_t i = 0; i < c->pages; i++) {
		if (!(res[i] & 1)) {
			fprintf(f, "%" PRIu64 " hole\n", i);
			continue;
		}
		if (pread(c->memfd, buf, PAGE_SZ, (off_t)(i * PAGE_SZ)) != (ssize_t)PAGE_SZ) {
			fprintf(f, "%" PRIu64 " error\n", i);
			continue;
		}
		fprintf(f, "%" PRIu64 " %016" PRIx64 "\n", i, fnv1a64(buf, PAGE_SZ));
	}
	free(res);
	free(buf);
	if (fclose(f) != 0) {
		fprintf(stderr, "migrate-vm: --dump %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

static int run_source(struct migrate_vm_ctx *c)
{
	uint64_t t0 = now_ns();

	c->vcpus_start_ns = t0;
	start_vcpus(c);
	print_vm_line(c);
	if (c->opt.nzero)
		start_timed_thread(c, &c->zero_thread, &c->zero_started, zero_thread, "zero");
	int sig = wait_run(&c->opt);
	bool stopped = stop_vcpus(c, 2000);
	uint64_t ran = now_ns() - t0;
	int rc = 0;

	if (!stop_timed_thread(c, c->zero_thread, &c->zero_started, &c->zero_quit, "zero-at",
			       "zeroing is still waiting in a userfault after the run (a punched "
			       "page nobody poisoned?)"))
		rc = 1;

	if (c->opt.dump && source_dump(c, c->opt.dump) < 0)
		rc = 1;
	if (any_vcpu_failed(c)) {
		report_vcpu_errors(c);
		rc = 1;
	}
	uint64_t loops = 0, hits = 0;
	for (unsigned i = 0; i < c->opt.vcpus; i++) {
		loops += c->vcpu[i].loops;
		hits += c->vcpu[i].poison_reads + c->vcpu[i].poison_writes;
	}
	fprintf(stderr, "migrate-vm: source ran %.1f ms: %" PRIu64 " guest loops, %" PRIu64
		" %s%s\n", ran / 1e6, loops, hits, poison_hits_name(&c->opt),
		stopped ? "" : "; some vCPUs did not stop (blocked in a userfault)");
	if (c->opt.json) {
		pthread_mutex_lock(&c->out_lock);
		fprintf(stdout, "{\"event\":\"source_summary\",\"run_ns\":%" PRIu64 ",\"signal\":%d,"
			"\"stopped\":%s", ran, sig, stopped ? "true" : "false");
		print_vcpu_stats(c, stdout);
		fprintf(stdout, ",\"ok\":%s}\n", rc ? "false" : "true");
		fflush(stdout);
		pthread_mutex_unlock(&c->out_lock);
	}
	return rc;
}

/* ------------------------------------------------------------------ */
/* target                                                              */

/* fl_handover(), retrying while nobody listens yet; timeout_ms 0: for ever. */
static int handover(struct migrate_vm_ctx *c, uint64_t timeout_ms, char *err, size_t errlen)
{
	uint64_t end = now_ns() + timeout_ms * 1000000ULL;
	unsigned attempts = 0;

	for (;;) {
		uint64_t t = now_ns();
		int s = fl_handover(c->opt.router, c->uffd, c->opt.mode, &c->region, 1, err, errlen);
		attempts++;
		if (s >= 0) {
			c->handovers++;
			if (c->opt.json) {
				pthread_mutex_lock(&c->out_lock);
				fputs("{\"event\":\"handover\",\"socket\":", stdout);
				json_str(stdout, c->opt.router);
				printf(",\"attempts\":%u,\"handover_ns\":%" PRIu64 ",\"count\":%" PRIu64
				       "}\n", attempts, now_ns() - t, c->handovers);
				fflush(stdout);
				pthread_mutex_unlock(&c->out_lock);
			}
			return s;
		}
		if (s != -ENOENT && s != -ECONNREFUSED)
			return s;
		if (c->serve_quit)
			return -ECANCELED;
		if (timeout_ms && now_ns() >= end) {
			snprintf(err, errlen, "no router listening on %s after %.1f s; start "
				 "`faultline target` with that socket first (or raise "
				 "--connect-timeout-ms)", c->opt.router, timeout_ms / 1e3);
			return -ETIMEDOUT;
		}
		sleep_us(100000);
	}
}

static void *serve_thread(void *arg)
{
	struct migrate_vm_ctx *c = arg;

	while (!c->serve_quit) {
		if (c->sock < 0) {
			char err[512];
			int s = handover(c, 0, err, sizeof(err));
			if (s == -ECANCELED)
				break;
			if (s < 0) {
				emit_error(c, "handover", err);
				sleep_us(1000000);
				continue;
			}
			c->sock = s;
		}
		struct pollfd p = { .fd = c->sock, .events = POLLIN };
		int r = poll(&p, 1, 200);
		if (r <= 0)
			continue;
		r = fl_handover_serve(c->sock, &c->region, 1);
		if (r == 0)
			continue;
		close(c->sock);
		c->sock = -1;
		__atomic_add_fetch(&c->router_lost, 1, __ATOMIC_RELEASE);
		emit(c, "{\"event\":\"router_lost\",\"error\":\"%s\",\"reconnect\":%s,\"count\":%"
		     PRIu64 "}", strerror(-r), c->opt.reconnect ? "true" : "false", c->router_lost);
		fprintf(stderr, "migrate-vm: router connection lost (%s)%s\n", strerror(-r),
			c->opt.reconnect ? "; guest waits, handing over again when a router listens" : "");
		if (!c->opt.reconnect)
			break;
	}
	return NULL;
}

/*
 * Touch every page from a host thread.  The router places whatever is still
 * missing; a poisoned page raises SIGBUS, which jumps back here.
 */
struct verify_result {
	uint64_t *hash;
	uint8_t *sigbus;
	uint64_t nsigbus;
	uint64_t ns;
};

static void verify_pages(struct migrate_vm_ctx *c, struct verify_result *vr)
{
	uint64_t t0 = now_ns();

	c->verify_tid = gettid();
	for (c->verify_page = 0; c->verify_page < c->pages; c->verify_page++) {
		uint64_t i = c->verify_page;
		if (sigsetjmp(c->verify_jmp, 1)) {
			vr->sigbus[c->verify_page] = 1;
			vr->nsigbus++;
			continue;
		}
		vr->hash[i] = fnv1a64(c->mem + i * PAGE_SZ, PAGE_SZ);
	}
	c->verify_tid = 0;
	vr->ns = now_ns() - t0;
	__atomic_store_n(&c->verify_done, 1, __ATOMIC_RELEASE);
}

static void *verify_thread(void *arg)
{
	struct migrate_vm_ctx *c = &migrate_vm_ctx;

	verify_pages(c, arg);
	return NULL;
}

static int target_dump(struct migrate_vm_ctx *c, const struct verify_result *vr)
{
	FILE *f = fopen(c->opt.dump, "w");

	if (!f) {
		fprintf(stderr, "migrate-vm: --dump %s: %s\n", c->opt.dump, strerror(errno));
		return -1;
	}
	for (uint64_t i = 0; i < c->pages; i++) {
		if (vr->sigbus[i])
			fprintf(f, "%" PRIu64 " sigbus\n", i);
		else
			fprintf(f, "%" PRIu64 " %016" PRIx64 "\n", i, vr->hash[i]);
	}
	if (fclose(f) != 0) {
		fprintf(stderr, "migrate-vm: --dump %s: %s\n", c->opt.dump, strerror(errno));
		return -1;
	}
	return 0;
}

/* A sparse file: page i at offset i * PAGE_SZ, poisoned pages left as holes. */
static int target_image(struct migrate_vm_ctx *c, const struct verify_result *vr)
{
	int fd = open(c->opt.image, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	int ret = 0;

	if (fd < 0 || ftruncate(fd, (off_t)(c->pages * PAGE_SZ)) < 0) {
		fprintf(stderr, "migrate-vm: --image %s: %s\n", c->opt.image, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (uint64_t i = 0; i < c->pages && !ret; i++) {
		if (vr->sigbus[i])
			continue;
		if (pwrite(fd, c->mem + i * PAGE_SZ, PAGE_SZ, (off_t)(i * PAGE_SZ)) != PAGE_SZ) {
			fprintf(stderr, "migrate-vm: --image %s: %s\n", c->opt.image, strerror(errno));
			ret = -1;
		}
	}
	close(fd);
	return ret;
}

/* --discard: each range at its time, in time order. */
static void *discard_thread(void *arg)
{
	struct migrate_vm_ctx *c = arg;
	const struct options *o = &c->opt;
	bool done[MAX_DISCARDS] = { false };
	int k;

	while ((k = next_timed_range(c, o->discard, o->ndiscard, done, &c->discard_quit)) >= 0) {
		const struct discard *d = &o->discard[k];
		/* Anonymous memory: the pages go, the next access faults as missing.
		 * The memfd: punched out of the page cache, so the precopied copy
		 * goes too (MADV_DONTNEED would keep it). */
		int advice = o->mode == FL_MODE_MINOR || o->hugetlb ? MADV_REMOVE : MADV_DONTNEED;
		uint64_t t = now_ns();
		int ret = madvise(c->mem + d->first * PAGE_SZ, d->count * PAGE_SZ, advice);
		int err = errno;
		uint64_t took = now_ns() - t;

		c->discard_done[k] = ret == 0;
		if (ret) {
			char msg[160];

			snprintf(msg, sizeof(msg), "pages %" PRIu64 "..%" PRIu64 ": %s: %s", d->first,
				 d->first + d->count - 1, advice == MADV_REMOVE ? "MADV_REMOVE" :
				 "MADV_DONTNEED", strerror(err));
			emit_error(c, "discard", msg);
			continue;
		}
		fprintf(stderr, "migrate-vm: discarded pages %" PRIu64 "..%" PRIu64 " at %.1f ms (%.2f ms)\n",
			d->first, d->first + d->count - 1, (t - c->vcpus_start_ns) / 1e6, took / 1e6);
		emit(c, "{\"event\":\"discard\",\"first\":%" PRIu64 ",\"count\":%" PRIu64 ",\"ns\":%"
		     PRIu64 ",\"took_ns\":%" PRIu64 ",\"advice\":\"%s\",\"ok\":true}", d->first, d->count,
		     t, took, advice == MADV_REMOVE ? "remove" : "dontneed");
	}
	return NULL;
}

/* False if the discard thread is stuck in madvise (no router reads the
 * REMOVE event). */
static bool stop_discards(struct migrate_vm_ctx *c)
{
	return stop_timed_thread(c, c->discard_thread, &c->discard_started, &c->discard_quit,
				 "discard", "a discard is still waiting in madvise() after the "
				 "run (is the router reading UFFD events?)");
}

/* --writes: the last stamp of each page, once no vCPU writes any more. */
static int target_writes(struct migrate_vm_ctx *c, uint64_t *written)
{
	FILE *f = c->opt.writes ? fopen(c->opt.writes, "w") : NULL;

	*written = 0;
	if (c->opt.writes && !f) {
		fprintf(stderr, "migrate-vm: --writes %s: %s\n", c->opt.writes, strerror(errno));
		return -1;
	}
	for (uint64_t i = 0; c->last_write && i < c->pages; i++) {
		if (!c->last_write[i].offset)
			continue;
		(*written)++;
		if (f)
			fprintf(f, "%" PRIu64 " %" PRIu32 " %016" PRIx64 "\n", i,
				c->last_write[i].offset, c->last_write[i].value);
	}
	if (f && fclose(f) != 0) {
		fprintf(stderr, "migrate-vm: --writes %s: %s\n", c->opt.writes, strerror(errno));
		return -1;
	}
	return 0;
}

static int run_target(struct migrate_vm_ctx *c)
{
	char err[512];
	int rc = 0;

	print_vm_line(c);
	int s = handover(c, c->opt.connect_timeout_ms ? c->opt.connect_timeout_ms : 1, err,
			 sizeof(err));
	if (s < 0) {
		emit_error(c, "handover", err);
		return 1;
	}
	c->sock = s;
	fprintf(stderr, "migrate-vm: handed guest memory over to the router at %s\n", c->opt.router);
	int r = pthread_create(&c->serve_thread, NULL, serve_thread, c);
	if (r)
		die("pthread_create (handover): %s", strerror(r));
	c->serve_started = true;
	pthread_setname_np(c->serve_thread, "handover");

	if (c->opt.start_delay_ms)
		sleep_us(c->opt.start_delay_ms * 1000ULL);
	uint64_t t0 = now_ns();
	c->vcpus_start_ns = t0;
	start_vcpus(c);
	if (c->opt.ndiscard)
		start_timed_thread(c, &c->discard_thread, &c->discard_started, discard_thread,
				   "discard");
	if (c->opt.json) {
		pthread_mutex_lock(&c->out_lock);
		fprintf(stdout, "{\"event\":\"vcpus_started\",\"start_ns\":%" PRIu64 ",\"tids\":[", t0);
		for (unsigned i = 0; i < c->opt.vcpus; i++)
			fprintf(stdout, "%s%d", i ? "," : "", c->vcpu[i].tid);
		fputs("]}\n", stdout);
		fflush(stdout);
		pthread_mutex_unlock(&c->out_lock);
	}
	int sig = wait_run(&c->opt);
	if (c->opt.until_router_done) {
		uint64_t until = now_ns() + c->opt.verify_timeout_ms * 1000000ULL;

		while (!__atomic_load_n(&c->router_lost, __ATOMIC_ACQUIRE) && now_ns() < until)
			sleep_us(20000);
	}
	bool stopped = stop_vcpus(c, 5000);
	uint64_t ran = now_ns() - t0;
	if (!stop_discards(c))
		rc = 1;
	if (!stopped)
		emit_error(c, "stop", "a vCPU did not stop within 5 s (blocked in a userfault "
			   "nobody resolves?)");
	/* Before verification, which may wait for the router: the record is
	 * complete now (a vCPU that did not stop is blocked in a read fault). */
	uint64_t written_pages;
	if (target_writes(c, &written_pages) < 0)
		rc = 1;

	/* Verify in its own thread so a page nobody places cannot hang us. */
	struct verify_result vr = { .hash = calloc(c->pages, sizeof(uint64_t)),
				    .sigbus = calloc(c->pages, 1) };
	if (!vr.hash || !vr.sigbus)
		die("out of memory");
	pthread_t vt;
	r = pthread_create(&vt, NULL, verify_thread, &vr);
	if (r)
		die("pthread_create (verify): %s", strerror(r));
	uint64_t vend = now_ns() + c->opt.verify_timeout_ms * 1000000ULL;
	while (!__atomic_load_n(&c->verify_done, __ATOMIC_ACQUIRE) && now_ns() < vend)
		sleep_us(10000);
	if (!__atomic_load_n(&c->verify_done, __ATOMIC_ACQUIRE)) {
		snprintf(err, sizeof(err), "page %" PRIu64 " (0x%" PRIxPTR ") still not placed after "
			 "%lu ms; is the router still running?", c->verify_page,
			 (uintptr_t)(c->mem + c->verify_page * PAGE_SZ), c->opt.verify_timeout_ms);
		emit_error(c, "verify", err);
		fflush(NULL);
		_exit(1);
	}
	pthread_join(vt, NULL);

	if (c->opt.dump && target_dump(c, &vr) < 0)
		rc = 1;
	if (c->opt.image && target_image(c, &vr) < 0)
		rc = 1;
	if (any_vcpu_failed(c)) {
		report_vcpu_errors(c);
		rc = 1;
	}
	uint64_t hits = 0;
	for (unsigned i = 0; i < c->opt.vcpus; i++)
		hits += c->vcpu[i].poison_reads + c->vcpu[i].poison_writes;
	fprintf(stderr, "migrate-vm: target ran %.1f ms, verified %" PRIu64 " pages in %.1f ms: "
		"%" PRIu64 " SIGBUS (poisoned), %" PRIu64 " %s, %" PRIu64 " pages written\n",
		ran / 1e6, c->pages, vr.ns / 1e6, vr.nsigbus, hits, poison_hits_name(&c->opt),
		written_pages);
	if (c->opt.json) {
		pthread_mutex_lock(&c->out_lock);
		FILE *f = stdout;
		fprintf(f, "{\"event\":\"target_summary\",\"mode\":\"%s\",\"pages\":%" PRIu64
			",\"sigbus_count\":%" PRIu64 ",\"sigbus_pages\":[",
			c->opt.mode == FL_MODE_MINOR ? "minor" : "missing", c->pages, vr.nsigbus);
		bool first = true;
		for (uint64_t i = 0; i < c->pages; i++)
			if (vr.sigbus[i]) {
				fprintf(f, "%s%" PRIu64, first ? "" : ",", i);
				first = false;
			}
		fprintf(f, "],\"run_ns\":%" PRIu64 ",\"verify_ns\":%" PRIu64 ",\"signal\":%d,"
			"\"stopped\":%s,\"handovers\":%" PRIu64 ",\"router_lost\":%" PRIu64,
			ran, vr.ns, sig, stopped ? "true" : "false", c->handovers, c->router_lost);
		fputs(",\"discarded\":[", f);
		first = true;
		for (unsigned i = 0; i < c->opt.ndiscard; i++) {
			if (c->discard_started || !c->discard_done[i])
				continue;	/* not done, or its thread still runs */
			fprintf(f, "%s[%" PRIu64 ",%" PRIu64 "]", first ? "" : ",",
				c->opt.discard[i].first, c->opt.discard[i].count);
			first = false;
		}
		fprintf(f, "],\"written_pages\":%" PRIu64 ",\"writes_reverted\":", written_pages);
		uint64_t reverted = 0;
		for (unsigned i = 0; i < c->opt.vcpus; i++)
			reverted += c->vcpu[i].writes_reverted;
		fprintf(f, "%" PRIu64 ",\"reverted_pages\":[", reverted);
		first = true;
		for (unsigned i = 0; i < c->opt.vcpus; i++)
			for (unsigned k = 0; k < c->vcpu[i].nreverted; k++) {
				fprintf(f, "%s%" PRIu64, first ? "" : ",", c->vcpu[i].reverted_page[k]);
				first = false;
			}
		fputs("]", f);
		print_vcpu_stats(c, f);
		fprintf(f, ",\"ok\":%s}\n", rc ? "false" : "true");
		fflush(f);
		pthread_mutex_unlock(&c->out_lock);
	}
	free(vr.hash);
	free(vr.sigbus);

	c->serve_quit = 1;
	/* It may sit in a zap's madvise() whose REMOVE event nobody reads any
	 * more (router gone): don't wait for it for ever. */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 3;
	if (pthread_timedjoin_np(c->serve_thread, NULL, &ts) == 0 && c->sock >= 0)
		close(c->sock);
	return rc;
}

/* ------------------------------------------------------------------ */

int main(int argc, char **argv)
{
	struct migrate_vm_ctx *c = &migrate_vm_ctx;

	parse_options(&c->opt, argc, argv);

	struct sigaction sa = { .sa_sigaction = sigbus_handler, .sa_flags = SA_SIGINFO };
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, NULL) < 0)
		die("sigaction(SIGBUS): %s", strerror(errno));
	struct sigaction kick = { .sa_handler = sig_kick };
	sigemptyset(&kick.sa_mask);
	if (sigaction(SIGUSR1, &kick, NULL) < 0)
		die("sigaction(SIGUSR1): %s", strerror(errno));
	/* Every thread inherits this: the stop signals reach only wait_run(). */
	sigset_t stopset;
	sigemptyset(&stopset);
	sigaddset(&stopset, SIGTERM);
	sigaddset(&stopset, SIGINT);
	pthread_sigmask(SIG_BLOCK, &stopset, NULL);
	/* A router that vanishes must not kill the VMM through SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);

	memory_setup(c);
	vm_setup(c);
	writes_setup(c);
	uffd_setup(c);
	return c->opt.role == ROLE_SOURCE ? run_source(c) : run_target(c);
}
