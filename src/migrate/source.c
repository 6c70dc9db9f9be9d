// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source (source.h): one thread, one poll loop, one context.
 *
 * Reading another process's memory safely.  Guest memory on the source is
 * usually registered with a userfaultfd (so poison can be injected), and a
 * remote read (process_vm_readv, /proc/PID/mem) of a page that is not
 * populated faults into that userfaultfd and blocks forever: nobody serves
 * it.  So every read starts from /proc/PID/pagemap: pages that are mapped
 * are read with process_vm_readv (no fault), shared file pages (memfd,
 * shmem) through the file itself (/proc/PID/map_files: a hole reads as
 * zeros, no fault), unmapped anonymous pages are zero, and a UFFDIO_POISON
 * marker (a swap-type PTE marker) is poison without touching it.  A mapped
 * page that process_vm_readv refuses is poison only with positive evidence
 * (the marker, or kpageflags HWPOISON of its frame); else it is read through
 * /proc/PID/mem (FOLL_FORCE: PROT_NONE pages too), and a page that can't be
 * read at all ends the run with an error naming it: declaring it poisoned
 * would make the target SIGBUS on memory that is fine.  VM_IO/VM_PFNMAP
 * ranges are refused at start: pagemap shows them as holes, so they would be
 * served as zeros.
 *
 * Or the VMM hands its memory over (--vmm-socket, fl_handover()): a memfd
 * per region and a duplicate of its userfaultfd.  Each region then is one
 * shared-file segment on the received memfd, so the same read path applies
 * (pread: a hole reads as zero, nothing faults) and injection is the same
 * punch + UFFDIO_POISON, with the received fds instead of ones taken from
 * /proc.  The VMM's pagemap is used only where it provably maps those
 * memfds (markers, kpageflags, soft-dirty); without it a punched + poisoned
 * page just reads as a hole, so the injected set is what remembers it.
 *
 * Dirty tracking: the pagemap soft-dirty bit after `clear_refs 4` where the
 * kernel has CONFIG_MEM_SOFT_DIRTY (probed on ourselves at start), else a
 * 64-bit keyed hash of every page as sent in precopy, compared at
 * switchover (exact: "dirty" then means "differs from the target's copy").
 *
 * Flow control: requests are parsed only while the connection's writer has
 * less than RD_HIGH pending (the rest waits in the socket: TCP pushes back
 * on the target), and background frames (precopy, map, pushes) are only
 * generated below BG_LOW, so a request never queues behind more than about
 * BG_LOW of background data and a connection never buffers more than
 * RD_HIGH + one answer.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/magic.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "handover.h"
#include "jsonstr.h"
#include "netaddr.h"
#include "tls.h"
#include "source.h"
#include "source_test.h"
#include "statemap.h"
#include "uffd_compat.h"
#include "wire.h"

#define ST_CLEAN FAULTLINE__WIRE__PAGE_STATE__PAGE_CLEAN
#define ST_DIRTY FAULTLINE__WIRE__PAGE_STATE__PAGE_DIRTY
#define ST_POISONED FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED
#define ST_ZERO FAULTLINE__WIRE__PAGE_STATE__PAGE_ZERO

#define PM_PRESENT (1ull << 63)
#define PM_SWAP (1ull << 62)
#define PM_SOFT_DIRTY (1ull << 55)
#define PM_PFN_MASK ((1ull << 55) - 1)
#define KPF_HWPOISON 19

/* Most pages per PageData; fewer where pages are so large that these would
 * not fit in one frame (s->batch_pages, s->answer_pages: fl_source_frame_pages). */
#define BATCH_PAGES 64		/* pages per precopy / push PageData */
#define ANSWER_PAGES 256	/* pages per answer frame: a request may name 1024, too big for one */
/* PageData bytes besides the contents: per page a page number (varint, up to
 * 10 bytes) and 2 state bits; once, seq/region/flags, the length prefixes of
 * the repeated fields and the Frame's own tag and length. */
#define PD_PER_PAGE 11
#define PD_FIXED 64
#define SCAN_PAGES 512		/* pages per pagemap read when classifying or scanning */
#define MAP_CHUNK_PAGES 65536	/* pages per StateMapChunk (16 KiB of states before zlib) */
#define PUSH_SCAN_PAGES 65536	/* map pages looked at per push step */
#define BG_LOW (1u << 20)
#define RD_HIGH (8u << 20)
#define MAX_CONNS 4		/* the active target + newcomers that haven't said Hello */
#define MAX_CTLS 8
#define CTL_LINE 4096
/* From accept to the target's Hello, TLS handshake included: a peer that
 * says nothing in time gives its slot back. */
#define HELLO_TIMEOUT_NS (5 * NS)
/* Newcomers from one address that may wait for their Hello at once. */
#define MAX_PENDING_PER_HOST 2
#define SCAN_BUDGET 262144	/* pages checked for new poison per tick (1 GiB) */
#define STOP_WAIT_NS (2 * NS)
#define NS 1000000000ll

/* What reading a page gave; from R_POISON on: poisoned, and the evidence. */
enum rd { R_DATA, R_ZERO, R_POISON, R_HWPOISON, R_SHMEM_EIO };

static const char *const poison_cause[] = {
	[R_POISON] = "uffd_poison_marker",
	[R_HWPOISON] = "hwpoison",
	[R_SHMEM_EIO] = "shmem_read_eio",
};

enum cphase { CP_HELLO, CP_PRECOPY, CP_WAIT, CP_MAP, CP_PUSH, CP_DONE };

/* One VMA (or the part of it inside a region). */
struct seg {
	uint64_t start, end;
	uint64_t file_off;	/* of `start` in the backing file */
	int fd;			/* map_files fd (O_RDWR where possible), -1: none */
	bool shared, file, writable_fd;
	bool shmem;		/* fd is tmpfs/hugetlbfs: EIO from a read means SIGBUS there */
	char name[96];		/* for messages: "/memfd:guest (deleted)", "[anon]" */
};

struct region {
	uint64_t addr, len, npages;
	struct seg *segs;
	unsigned nsegs;
	uint8_t *poison;	/* bit a page: known poisoned */
	uint8_t *psent;		/* bit a page: non-zero contents sent in the last precopy */
	uint64_t *hash;		/* hash mode: hash of what precopy sent */
	struct fl_statemap map;	/* final states, valid once switched */
	bool gone_warned;
};

struct conn {
	int fd;
	struct fl_chan ch;	/* the stream: TLS or plaintext */
	char host[INET6_ADDRSTRLEN];
	struct fl_wire_reader rd;
	struct fl_wire_writer wr;
	char peer[80];
	int64_t since_ns;
	enum cphase phase;
	bool want_precopy, resume;
	bool precopy_done;	/* PrecopyDone queued here */
	bool has_precopy;	/* the target holds precopied contents: CLEAN stays CLEAN */
	bool switch_sent, end_sent;
	unsigned cr;		/* cursor of the phase: region, page */
	uint64_t cp;
	uint64_t precopy_pages, push_left;
	uint8_t *sent[FL_WIRE_MAX_REGIONS];	/* contents or a declaration went out */
	uint8_t *owed[FL_WIRE_MAX_REGIONS];	/* PoisonUpdate not yet queued */
	uint64_t nowed;
};

struct ctl {
	int fd;
	size_t len;
	char buf[CTL_LINE];
};

/* Everything one run uses. */
struct src {
	const struct fl_source_config *cfg;
	FILE *out;
	pid_t pid;
	uint32_t ps;
	unsigned nreg;
	struct region reg[FL_WIRE_MAX_REGIONS];
	struct fl_wire_limits lim;
	uint64_t pages_total, session, hash_seed;
	int pagemap_fd, kpf_fd, pidfd;	/* pagemap_fd -1: no pagemap (a VMM's memfds only) */
	int mem_fd, mem_err;	/* /proc/PID/mem: pages process_vm_readv refuses (PROT_NONE) */
	char pidfd_err[160];
	struct fl_handover_recv ho;	/* --vmm-socket: sock and uffd kept; memfds moved to segs */
	int vmm_lfd;
	int lfd, cfd;
	char where[96];
	bool ctl_created;
	struct conn conns[MAX_CONNS];
	struct fl_tls *tls;		/* NULL: plaintext */
	char target_id[160];		/* the migration's target, pinned at its first Hello */
	bool target_pinned;
	struct ctl ctls[MAX_CTLS];
	bool softdirty, sd_cleared, precopy_valid, memory_failure;
	bool switched, switch_requested, vm_stopped, target_done, completed;
	bool switch_announced;	/* a Switchover was queued: a target may run the VM */
	bool vm_was_stopped;	/* already stopped before our SIGSTOP: not ours to resume */
	bool vm_resumed;	/* SIGCONT at exit: no target was ever told to take over */
	bool out_dead;		/* a write to s->out failed: events are no longer printed */
	bool no_sockets;	/* the test hook: peers come from socketpairs, no port */
	char why[512];		/* why a failed run ended: said once, sent to the target */
	unsigned batch_pages, answer_pages;	/* BATCH_PAGES, ANSWER_PAGES that fit a frame */
	int64_t t0, first_hello_ns, switch_at, next_tick, next_progress;
	unsigned scan_r;
	uint64_t scan_p;
	uint8_t *buf;		/* SCAN_PAGES pages */
	uint64_t pme[SCAN_PAGES], idx[SCAN_PAGES];
	uint8_t res[SCAN_PAGES];
	/* statistics */
	uint64_t pages_sent, data_bytes, bytes_sent, requests, pages_requested, queries;
	uint64_t precopy_pages, connections, protocol_errors, poisoned;
	uint64_t n_clean, n_dirty, n_zero, n_poisoned_map;
	uint64_t last_sent, last_scanned;
	int64_t last_rate_ns;
	int64_t bw_t0;			/* --max-bandwidth: when background sending began */
	uint64_t bw_bytes;		/* page bytes sent in background since bw_t0 */
	double rate;		/* pages per second, smoothed */
	int64_t switch_ms;
	bool tty;
};

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static int64_t now_ns(void)
{
	return (int64_t)fl_now_ns();
}

static bool bit_get(const uint8_t *b, uint64_t i)
{
	return (b[i >> 3] >> (i & 7)) & 1;
}

static void bit_set(uint8_t *b, uint64_t i)
{
	b[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static void bit_clr(uint8_t *b, uint64_t i)
{
	b[i >> 3] &= (uint8_t)~(1u << (i & 7));
}

static uint8_t *bits_alloc(uint64_t n)
{
	return calloc((size_t)((n + 7) / 8) + 1, 1);
}

/* ---- logging ----------------------------------------------------------- */

/* Human mode: a message on stderr (clearing a progress line on a tty). */
static void say(struct src *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void say(struct src *s, const char *fmt, ...)
{
	va_list ap;

	if (s->tty)
		fputs("\r\033[K", stderr);
	fputs("faultline source: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*
 * JSON mode: may s->out still be written?  Once a write to it failed (its
 * reader went away: EPIPE, SIGPIPE being ignored) nothing more goes there,
 * but serving goes on: after the switchover the process is stopped and only
 * this source holds what the target still needs.
 */
static bool out_open(const struct src *s)
{
	return !s->out_dead;
}

/* End of one JSON line: flush it, and on the first failure say so once. */
static void out_end(struct src *s)
{
	int err = fflush(s->out) ? errno : ferror(s->out) ? EIO : 0;

	if (!err)
		return;
	s->out_dead = true;
	say(s, "cannot write events to %s (%s): no more are printed there; serving goes on",
	    s->out == stdout ? "stdout" : "the event stream", strerror(err));
}

/* Why the run fails, kept for the end (said once there, and sent to the target). */
static int fail(struct src *s, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct src *s, int err, const char *fmt, ...)
{
	va_list ap;

	if (!s->why[0]) {
		va_start(ap, fmt);
		vsnprintf(s->why, sizeof(s->why), fmt, ap);
		va_end(ap);
	}
	return err;
}

/* JSON mode: one event line on s->out; `body` continues after "event". */
static void event(struct src *s, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void event(struct src *s, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (!out_open(s))
		return;
	fprintf(s->out, "{\"event\":\"%s\",\"ts_ns\":%" PRId64, name, now_ns());
	if (fmt && *fmt) {
		fputc(',', s->out);
		va_start(ap, fmt);
		vfprintf(s->out, fmt, ap);
		va_end(ap);
	}
	fputs("}\n", s->out);
	out_end(s);
}

static void json_str_field(FILE *out, const char *key, const char *v)
{
	fprintf(out, ",\"%s\":", key);
	if (v)
		fl_json_str(out, v, 512);
	else
		fputs("null", out);
}

/* ---- small parsers (also the CLI's) ------------------------------------- */

/* Decimal, or hex with 0x (a leading 0 is not octal here). */
static int parse_u64(const char *s, uint64_t *v, char **endp)
{
	bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');

	errno = 0;
	if (!isdigit((unsigned char)*s) || (hex && !isxdigit((unsigned char)s[2])))
		return -EINVAL;
	*v = strtoull(s, endp, hex ? 16 : 10);
	return errno ? -errno : 0;
}

int fl_source_parse_range(const char *s, struct fl_source_range *r, char *err, size_t errlen)
{
	const char *colon = strchr(s, ':');
	uint64_t mult = 1;
	char *end;

	if (!colon) {
		snprintf(err, errlen, "expected ADDR:LEN, e.g. 0x7f0000000000:256M");
		return -EINVAL;
	}
	if (parse_u64(s, &r->addr, &end) || end != colon) {
		snprintf(err, errlen, "address '%.*s' is not a number (hex with 0x, or decimal)",
			 (int)(colon - s), s);
		return -EINVAL;
	}
	if (parse_u64(colon + 1, &r->len, &end)) {
		snprintf(err, errlen, "length '%s' is not a number (bytes, or with K, M, G)", colon + 1);
		return -EINVAL;
	}
	if (*end) {
		const char *u = strchr("KMG", toupper((unsigned char)*end));

		mult = u ? 1ull << (10 * (u - "KMG" + 1)) : 0;
		end++;
		if (*end == 'i')
			end++;
		if (*end == 'B')
			end++;
		if (!mult || *end) {
			snprintf(err, errlen, "length '%s': unknown unit (use K, M or G)", colon + 1);
			return -EINVAL;
		}
	}
	if (!r->len || r->len > UINT64_MAX / mult) {
		snprintf(err, errlen, "length '%s' must be above 0 and fit in 64 bits", colon + 1);
		return -EINVAL;
	}
	r->len *= mult;
	if (r->addr + r->len < r->addr) {
		snprintf(err, errlen, "range wraps around the address space");
		return -EINVAL;
	}
	return 0;
}

int fl_source_parse_pages(const char *s, uint64_t *pages, unsigned max, unsigned *n,
			  char *err, size_t errlen)
{
	const char *p = s;

	*n = 0;
	while (*p) {
		uint64_t a, b;
		char *end;

		if (parse_u64(p, &a, &end)) {
			snprintf(err, errlen, "'%s': expected a page number", p);
			return -EINVAL;
		}
		b = a;
		if (*end == '-') {
			if (parse_u64(end + 1, &b, &end) || b < a) {
				snprintf(err, errlen, "'%s': expected a range FIRST-LAST", p);
				return -EINVAL;
			}
		}
		for (uint64_t v = a; v <= b; v++) {
			if (*n == max) {
				snprintf(err, errlen, "more than %u pages in one request", max);
				return -E2BIG;
			}
			pages[(*n)++] = v;
		}
		if (*end == ',')
			end++;
		else if (*end) {
			snprintf(err, errlen, "'%s': pages are separated by commas", end);
			return -EINVAL;
		}
		p = end;
	}
	if (!*n) {
		snprintf(err, errlen, "no page given");
		return -EINVAL;
	}
	return 0;
}

/* Lane-wise multiply-xorshift: four independent chains keep the multiplier
 * pipeline busy; the finaliser mixes every lane into every output bit. */
uint64_t fl_source_page_hash(const void *p, size_t len, uint64_t seed)
{
	const uint8_t *b = p;
	uint64_t h[4] = { seed ^ 0x243f6a8885a308d3ull, seed ^ 0x13198a2e03707344ull,
			  seed ^ 0xa4093822299f31d0ull, seed ^ 0x082efa98ec4e6c89ull };
	uint64_t out;
	size_t i;

	for (i = 0; i + 32 <= len; i += 32)
		for (int l = 0; l < 4; l++) {
			uint64_t w;

			memcpy(&w, b + i + 8 * l, 8);
			h[l] = (h[l] ^ w) * 0x9e3779b97f4a7c15ull;
			h[l] ^= h[l] >> 31;
		}
	for (; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, b + i, 8);
		h[0] = (h[0] ^ w) * 0x9e3779b97f4a7c15ull;
		h[0] ^= h[0] >> 31;
	}
	out = len;
	for (int l = 0; l < 4; l++) {
		out = (out ^ h[l]) * 0xff51afd7ed558ccdull;
		out ^= out >> 33;
	}
	out *= 0xc4ceb9fe1a85ec53ull;
	return out ^ (out >> 33);
}

unsigned fl_source_frame_pages(uint32_t page_size, unsigned want)
{
	uint64_t fit;

	if (!page_size)
		return 0;
	fit = (FL_WIRE_MAX_FRAME - PD_FIXED) / ((uint64_t)page_size + PD_PER_PAGE);
	return fit < want ? (unsigned)fit : want;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	uint64_t acc = 0;

	for (size_t i = 0; i < n; i += 64) {
		uint64_t w[8];

		memcpy(w, p + i, 64);
		acc = w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7];
		if (acc)
			return false;
	}
	return true;
}

/* ---- the process's mappings ------------------------------------------- */

struct vma {
	uint64_t start, end, off;
	char perms[5];
	unsigned long inode;
	char path[256];
};

/* All VMAs of pid (malloc'd array). */
static int read_maps(pid_t pid, struct vma **out, unsigned *n)
{
	char path[64], line[512];
	struct vma *v = NULL;
	unsigned cnt = 0, cap = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	while (fgets(line, sizeof(line), f)) {
		struct vma m = { 0 };
		unsigned dmaj, dmin;
		int pos = 0;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %" SCNx64 " %x:%x %lu %n", &m.start,
			   &m.end, m.perms, &m.off, &dmaj, &dmin, &m.inode, &pos) < 7)
			continue;
		snprintf(m.path, sizeof(m.path), "%s", line + pos);
		m.path[strcspn(m.path, "\n")] = 0;
		if (cnt == cap) {
			struct vma *nv = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof(*v));

			if (!nv) {
				free(v);
				fclose(f);
				return -ENOMEM;
			}
			v = nv;
		}
		v[cnt++] = m;
	}
	fclose(f);
	*out = v;
	*n = cnt;
	return 0;
}

static bool addr_mapped(struct src *s, uint64_t addr)
{
	struct vma *v;
	unsigned n;
	bool ok = false;

	if (read_maps(s->pid, &v, &n))
		return false;
	for (unsigned i = 0; i < n && !ok; i++)
		ok = addr >= v[i].start && addr < v[i].end;
	free(v);
	return ok;
}

/* Is fd's file shmem (memfd, tmpfs) or hugetlbfs? */
static bool fd_is_shmem(int fd)
{
	struct statfs sf;

	return !fstatfs(fd, &sf) && (sf.f_type == TMPFS_MAGIC || sf.f_type == HUGETLBFS_MAGIC);
}

/* Split region r over the VMAs that cover it; every byte must be mapped. */
static int build_segments(struct src *s, struct region *r, unsigned id, const struct vma *v,
			  unsigned n)
{
	uint64_t at = r->addr, end = r->addr + r->len;

	r->segs = calloc(n ? n : 1, sizeof(*r->segs));
	if (!r->segs)
		return -ENOMEM;
	for (unsigned i = 0; i < n && at < end; i++) {
		struct seg *g;
		char mf[96];

		if (v[i].end <= at)
			continue;
		if (v[i].start > at) {
			say(s, "--range %u (0x%" PRIx64 ":%" PRIu64 "): 0x%" PRIx64 " is not mapped in "
			    "process %d (see /proc/%d/maps)", id, r->addr, r->len, at, s->pid, s->pid);
			return -EFAULT;
		}
		g = &r->segs[r->nsegs++];
		g->start = at;
		g->end = v[i].end < end ? v[i].end : end;
		g->shared = v[i].perms[3] == 's';
		g->file = v[i].inode != 0;
		g->file_off = v[i].off + (at - v[i].start);
		g->fd = -1;
		snprintf(g->name, sizeof(g->name), "%.*s", (int)sizeof(g->name) - 1,
			 v[i].path[0] ? v[i].path : "[anon]");
		if (g->file) {
			/* map_files gives the file itself (the memfd), which reads
			 * holes as zeros instead of faulting into a userfaultfd */
			snprintf(mf, sizeof(mf), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, s->pid,
				 v[i].start, v[i].end);
			g->fd = open(mf, O_RDWR | O_CLOEXEC);
			g->writable_fd = g->fd >= 0;
			if (g->fd < 0)
				g->fd = open(mf, O_RDONLY | O_CLOEXEC);
			if (g->fd < 0)
				say(s, "warning: cannot open %s (%s): unmapped pages of %s are served as "
				    "zero", mf, strerror(errno), g->name);
			else
				g->shmem = fd_is_shmem(g->fd);
		}
		at = g->end;
	}
	if (at < end) {
		say(s, "--range %u (0x%" PRIx64 ":%" PRIu64 "): 0x%" PRIx64 " is not mapped in process "
		    "%d (see /proc/%d/maps)", id, r->addr, r->len, at, s->pid, s->pid);
		return -EFAULT;
	}
	return 0;
}

static struct seg *find_seg(struct region *r, uint64_t addr)
{
	for (unsigned i = 0; i < r->nsegs; i++)
		if (addr >= r->segs[i].start && addr < r->segs[i].end)
			return &r->segs[i];
	return &r->segs[r->nsegs - 1];
}

/* ---- reading pages ------------------------------------------------------ */

/*
 * A UFFDIO_POISON marker reads in pagemap as a swap entry of the PTE-marker
 * type (the highest swap type; real swap files are the low indexes) with
 * PTE_MARKER_POISONED (bit 1) as its offset.  Offsets this small can't be
 * migration entries: PFNs below 8 are never migrated.
 */
static bool pme_marker(uint64_t e)
{
	return (e & PM_SWAP) && !(e & PM_PRESENT) && (e & 31) >= 16 &&
	       ((e & PM_PFN_MASK) >> 5) < 8;
}

static bool pme_poison_marker(uint64_t e)
{
	return pme_marker(e) && (((e & PM_PFN_MASK) >> 5) & 2);
}

/* pagemap entries of the listed pages of r (runs of consecutive pages are one pread). */
static int read_pme(struct src *s, struct region *r, const uint64_t *idx, unsigned n, uint64_t *pme)
{
	if (s->pagemap_fd < 0) {
		/* "not mapped": every read then goes to the region's memfd */
		memset(pme, 0, n * sizeof(*pme));
		return 0;
	}
	for (unsigned i = 0; i < n;) {
		unsigned k = 1;
		ssize_t got;

		while (i + k < n && idx[i + k] == idx[i] + k)
			k++;
		got = pread(s->pagemap_fd, pme + i, k * 8ul,
			    (off_t)((r->addr / s->ps + idx[i]) * 8));
		if (got < 0)
			return errno == ESRCH ? -ESRCH : -errno;
		if ((size_t)got < k * 8ul)	/* beyond the end: the process exited */
			return -ESRCH;
		i += k;
	}
	return 0;
}

static bool kpf_hwpoison(struct src *s, uint64_t pfn)
{
	uint64_t fl;

	if (s->kpf_fd < 0 || !pfn)
		return false;
	if (pread(s->kpf_fd, &fl, 8, (off_t)(pfn * 8)) != 8)
		return false;
	return (fl >> KPF_HWPOISON) & 1;
}

/*
 * Hardware poison of the frame behind a pagemap entry: a mapped frame, or the
 * one a non-swapfile swap entry names (memory_failure() replaces the PTE of a
 * poisoned page by a hwpoison entry that carries its pfn; so do migration
 * entries, whose frames are not HWPOISON).
 */
static bool pme_hwpoison(struct src *s, uint64_t e)
{
	if (e & PM_PRESENT)
		return kpf_hwpoison(s, e & PM_PFN_MASK);
	if ((e & PM_SWAP) && (e & 31) >= 16 && !pme_marker(e))
		return kpf_hwpoison(s, (e & PM_PFN_MASK) >> 5);
	return false;
}

/* A read error that may be one page's own (read the pages one by one to see). */
static bool page_read_error(int err)
{
	return err == EFAULT || err == EIO || err == EHWPOISON;
}

/*
 * One page through the file: R_DATA (short reads past EOF are zero-filled).
 * shmem and hugetlbfs fail a read with EIO exactly where an access in the
 * process would SIGBUS (a HWPoison page, or swap that can't be read back), so
 * that is poison; any other failure is an error naming the page.
 */
static int read_file_page(struct src *s, struct region *r, struct seg *g, uint64_t addr,
			  uint8_t *dst, uint8_t *res)
{
	uint64_t off = g->file_off + (addr - g->start);
	ssize_t k = pread(g->fd, dst, s->ps, (off_t)off);

	if (k < 0) {
		int err = errno;

		if ((err == EIO && g->shmem) || err == EHWPOISON) {
			*res = err == EIO ? R_SHMEM_EIO : R_HWPOISON;
			return 0;
		}
		return fail(s, -err, "page %" PRIu64 " of region %ld (0x%" PRIx64 ") cannot be read "
			    "from %s at offset 0x%" PRIx64 ": %s", (addr - r->addr) / s->ps,
			    (long)(r - s->reg), addr, g->name, off, strerror(err));
	}
	if (k == 0) {
		*res = R_ZERO;
		return 0;
	}
	if ((size_t)k < s->ps)
		memset(dst + k, 0, s->ps - (size_t)k);
	*res = R_DATA;
	return 0;
}

/*
 * Page p of r, which pagemap had mapped, and process_vm_readv refused (err).
 * Poison needs positive evidence: a UFFDIO_POISON marker or an HWPOISON frame
 * in pagemap + kpageflags, read again now.  Else the page is memory the
 * process can reach (or could, after an mprotect): PROT_NONE is the common
 * case, and /proc/PID/mem reads it the way a debugger does (FOLL_FORCE); the
 * page is mapped, so that read does not fault into a userfaultfd.  A page
 * that can't be read that way either is an error that names it, not poison:
 * the target would SIGBUS on memory that is fine here, and the guest would
 * take a machine check for it.
 */
static int read_refused(struct src *s, struct region *r, uint64_t p, int err, uint8_t *dst,
			uint8_t *res)
{
	uint64_t addr = r->addr + p * s->ps, e;
	struct seg *g = find_seg(r, addr);
	int ret = read_pme(s, r, &p, 1, &e);

	if (ret)
		return ret;
	if (pme_poison_marker(e)) {
		*res = R_POISON;
		return 0;
	}
	if (err == EHWPOISON || pme_hwpoison(s, e)) {
		*res = R_HWPOISON;
		return 0;
	}
	if ((e & (PM_PRESENT | PM_SWAP)) && !pme_marker(e)) {
		ssize_t k = s->mem_fd >= 0 ? pread(s->mem_fd, dst, s->ps, (off_t)addr) : -1;
		int merr = s->mem_fd < 0 ? s->mem_err : k < 0 ? errno : EIO;

		if (k == (ssize_t)s->ps) {
			*res = R_DATA;
			return 0;
		}
		if (addr_mapped(s, addr))
			return fail(s, -EIO, "page %" PRIu64 " of region %ld (0x%" PRIx64 ", %s) cannot "
				    "be read: process_vm_readv: %s; /proc/%d/mem: %s; it is mapped and "
				    "shows no sign of poison (no UFFDIO_POISON marker%s), so it is not "
				    "declared poisoned", p, (long)(r - s->reg), addr, g->name,
				    strerror(err), s->pid, strerror(merr),
				    s->kpf_fd >= 0 ? ", no HWPOISON frame" : "");
	} else if (addr_mapped(s, addr)) {
		/* unmapped since pagemap was read (MADV_DONTNEED, say): a hole now */
		if (g->fd >= 0)
			return read_file_page(s, r, g, addr, dst, res);
		*res = R_ZERO;
		return 0;
	}
	if (!r->gone_warned)
		say(s, "warning: 0x%" PRIx64 " (region %ld) is no longer mapped in process %d: such "
		    "pages are served as zero", addr, (long)(r - s->reg), s->pid);
	r->gone_warned = true;
	*res = R_ZERO;
	return 0;
}

/*
 * Contents of the listed pages of r: page idx[i] lands in buf + i*ps with
 * res[i] R_DATA; R_ZERO (known zero, buf untouched) or poisoned (>= R_POISON,
 * by what evidence).  pme[] must be fresh from read_pme.  Negative errno for
 * failures that are not a page's own (the process is gone, a descriptor
 * broke) and for a page that can't be read (s->why names it).
 */
static int read_data(struct src *s, struct region *r, const uint64_t *idx, unsigned n,
		     const uint64_t *pme, uint8_t *buf, uint8_t *res)
{
	struct iovec lv[SCAN_PAGES], rv[SCAN_PAGES];
	unsigned vslot[SCAN_PAGES], nv = 0;
	int ret;

	for (unsigned i = 0; i < n; i++) {
		uint64_t addr = r->addr + idx[i] * s->ps;
		struct seg *g = find_seg(r, addr);
		uint64_t e = pme[i];

		if (pme_poison_marker(e)) {
			res[i] = R_POISON;
		} else if (g->shared && g->fd >= 0) {
			/* the page cache is the truth for a shared mapping */
			unsigned k = 1;
			ssize_t got;

			while (i + k < n && idx[i + k] == idx[i] + k && !pme_poison_marker(pme[i + k]) &&
			       addr + (uint64_t)k * s->ps < g->end)
				k++;
			got = pread(g->fd, buf + (size_t)i * s->ps, (size_t)k * s->ps,
				    (off_t)(g->file_off + (addr - g->start)));
			if (got == (ssize_t)((size_t)k * s->ps)) {
				memset(res + i, R_DATA, k);
			} else {
				for (unsigned j = 0; j < k; j++) {
					ret = read_file_page(s, r, g, addr + (uint64_t)j * s->ps,
							     buf + (size_t)(i + j) * s->ps, &res[i + j]);
					if (ret)
						return ret;
				}
			}
			i += k - 1;
		} else if ((e & (PM_PRESENT | PM_SWAP)) && !pme_marker(e)) {
			/* mapped (or swapped): the process's own copy, no userfault */
			lv[nv].iov_base = buf + (size_t)i * s->ps;
			lv[nv].iov_len = s->ps;
			rv[nv].iov_base = (void *)(uintptr_t)addr;
			rv[nv].iov_len = s->ps;
			vslot[nv++] = i;
		} else if (g->fd >= 0) {
			/* private file mapping never written: the file's contents */
			ret = read_file_page(s, r, g, addr, buf + (size_t)i * s->ps, &res[i]);
			if (ret)
				return ret;
		} else {
			res[i] = R_ZERO;
		}
	}
	for (unsigned at = 0; at < nv;) {
		ssize_t k = process_vm_readv(s->pid, lv + at, nv - at, rv + at, nv - at, 0);
		unsigned done, bad;

		if (k < 0 && errno == ESRCH)
			return -ESRCH;
		if (k < 0 && !page_read_error(errno) && errno != ENOMEM)
			return -errno;
		done = k > 0 ? (unsigned)((size_t)k / s->ps) : 0;
		for (unsigned j = 0; j < done; j++)
			res[vslot[at + j]] = R_DATA;
		at += done;
		if (at >= nv)
			break;
		/* page `at` failed: alone, to tell a bad page from a bad batch */
		bad = vslot[at];
		k = process_vm_readv(s->pid, &lv[at], 1, &rv[at], 1, 0);
		if (k == (ssize_t)s->ps) {
			res[bad] = R_DATA;
		} else if (k < 0 && errno == ESRCH) {
			return -ESRCH;
		} else {
			ret = read_refused(s, r, idx[bad], k < 0 ? errno : EFAULT, lv[at].iov_base,
					   &res[bad]);
			if (ret)
				return ret;
		}
		at++;
	}
	return 0;
}

/* ---- poison ------------------------------------------------------------- */

static struct conn *active_conn(struct src *s)
{
	for (int i = 0; i < MAX_CONNS; i++)
		if (s->conns[i].fd >= 0 && s->conns[i].phase != CP_HELLO)
			return &s->conns[i];
	return NULL;
}

static void note_poison(struct src *s, unsigned ri, uint64_t p, const char *cause)
{
	struct region *r = &s->reg[ri];
	struct conn *c = active_conn(s);

	if (bit_get(r->poison, p))
		return;
	bit_set(r->poison, p);
	s->poisoned++;
	if (s->switched) {
		unsigned old = fl_statemap_get(&r->map, p);

		if (old == ST_CLEAN)
			s->n_clean--;
		else if (old == ST_DIRTY)
			s->n_dirty--;
		else if (old == ST_ZERO)
			s->n_zero--;
		if (old != ST_POISONED)
			s->n_poisoned_map++;
		fl_statemap_set(&r->map, p, ST_POISONED);
	}
	if (c) {
		bit_set(c->owed[ri], p);
		c->nowed++;
	}
	if (s->cfg->json)
		event(s, "poison", "\"region\":%u,\"page\":%" PRIu64 ",\"addr\":\"0x%" PRIx64
		      "\",\"cause\":\"%s\"", ri, p, r->addr + p * s->ps, cause);
	else
		say(s, "page %" PRIu64 " of region %u (0x%" PRIx64 ") is poisoned (%s)", p, ri,
		    r->addr + p * s->ps, cause);
}

/* The pages of the last read_data that came back poisoned become known poison. */
static void note_read_poison(struct src *s, unsigned ri, const uint64_t *idx, unsigned n,
			     const uint8_t *res)
{
	for (unsigned i = 0; i < n; i++)
		if (res[i] >= R_POISON)
			note_poison(s, ri, idx[i], poison_cause[res[i]]);
}

/*
 * Periodic look for poison that appeared on its own: hardware poison of a
 * mapped frame, or of the one a hwpoison entry in its PTE names (kpageflags
 * HWPOISON; this is the memory-failure "event stream" on kernels without the
 * ras:memory_failure_event tracepoint) and UFFDIO_POISON markers placed by
 * someone else.
 */
static int scan_poison(struct src *s)
{
	uint64_t budget = SCAN_BUDGET;

	if (s->pagemap_fd < 0)
		return 0;
	while (budget) {
		struct region *r = &s->reg[s->scan_r];
		unsigned n = (unsigned)(r->npages - s->scan_p < SCAN_PAGES ? r->npages - s->scan_p :
					SCAN_PAGES);
		int ret;

		for (unsigned i = 0; i < n; i++)
			s->idx[i] = s->scan_p + i;
		ret = read_pme(s, r, s->idx, n, s->pme);
		if (ret)
			return ret;
		for (unsigned i = 0; i < n; i++) {
			uint64_t e = s->pme[i], pfn = e & PM_PFN_MASK, fl[64];
			unsigned k = 1;

			if (pme_poison_marker(e) && !bit_get(r->poison, s->idx[i]))
				note_poison(s, s->scan_r, s->idx[i], "uffd_poison_marker");
			else if (!(e & PM_PRESENT) && pme_hwpoison(s, e) && !bit_get(r->poison, s->idx[i]))
				note_poison(s, s->scan_r, s->idx[i], "hwpoison");
			if (!(e & PM_PRESENT) || !pfn || s->kpf_fd < 0)
				continue;
			/* frames that follow each other are one read */
			while (i + k < n && k < 64 && (s->pme[i + k] & PM_PRESENT) &&
			       (s->pme[i + k] & PM_PFN_MASK) == pfn + k)
				k++;
			if (pread(s->kpf_fd, fl, k * 8ul, (off_t)(pfn * 8)) == (ssize_t)(k * 8ul))
				for (unsigned j = 0; j < k; j++)
					if (((fl[j] >> KPF_HWPOISON) & 1) && !bit_get(r->poison, s->idx[i + j]))
						note_poison(s, s->scan_r, s->idx[i + j], "hwpoison");
			i += k - 1;
		}
		budget = budget > n ? budget - n : 0;
		s->scan_p += n;
		if (s->scan_p >= r->npages) {
			s->scan_p = 0;
			if (++s->scan_r == s->nreg) {
				s->scan_r = 0;
				break;
			}
		}
	}
	return 0;
}

/* Every userfaultfd of the process, taken with pidfd_getfd (caller closes). */
static int take_uffds(struct src *s, int *fds, int max, char *err, size_t errlen)
{
	char path[64], link[64];
	struct dirent *d;
	int n = 0;
	DIR *dir;

	if (s->pidfd < 0) {
		snprintf(err, errlen, "%s", s->pidfd_err);
		return -ENOSYS;
	}
	snprintf(path, sizeof(path), "/proc/%d/fd", s->pid);
	dir = opendir(path);
	if (!dir) {
		snprintf(err, errlen, "cannot list %s: %s", path, strerror(errno));
		return -errno;
	}
	while ((d = readdir(dir)) && n < max) {
		char lp[384];
		ssize_t k;
		int fd;

		if (!isdigit((unsigned char)d->d_name[0]))
			continue;
		snprintf(lp, sizeof(lp), "%s/%s", path, d->d_name);
		k = readlink(lp, link, sizeof(link) - 1);
		if (k < 0)
			continue;
		link[k] = 0;
		if (strcmp(link, "anon_inode:[userfaultfd]"))
			continue;
		fd = (int)syscall(SYS_pidfd_getfd, s->pidfd, atoi(d->d_name), 0);
		if (fd < 0) {
			snprintf(err, errlen, "pidfd_getfd of fd %s of process %d: %s", d->d_name,
				 s->pid, strerror(errno));
			closedir(dir);
			for (int i = 0; i < n; i++)
				close(fds[i]);
			return -errno;
		}
		fds[n++] = fd;
	}
	closedir(dir);
	if (!n) {
		snprintf(err, errlen, "process %d holds no userfaultfd: UFFDIO_POISON needs the one "
			 "its guest memory is registered with", s->pid);
		return -ENOENT;
	}
	return n;
}

static int punch(struct src *s, struct seg *g, uint64_t addr)
{
	return fallocate(g->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			 (off_t)(g->file_off + (addr - g->start)), s->ps) ? -errno : 0;
}

/*
 * Make page p of region ri really poisoned in the process: UFFDIO_POISON
 * through its own userfaultfd (a marker that SIGBUSes every later access),
 * after punching the page out of the backing file so the marker can be
 * placed (POISON needs an empty PTE) and the old contents are gone.  The
 * uffd that covers the page is found by trying: POISON on a range it
 * doesn't cover fails with ENOENT/EINVAL and changes nothing, so no page is
 * punched before we know a marker can follow.
 */
static int inject_poison(struct src *s, unsigned ri, uint64_t p, char *err, size_t errlen)
{
	struct region *r = &s->reg[ri];
	uint64_t addr = r->addr + p * s->ps;
	struct seg *g = find_seg(r, addr);
	int fds[16], n, ret = -ENOENT, hit = -1;
	bool own_fds = s->ho.uffd < 0;

	if (bit_get(r->poison, p))
		return 0;
	if (!g->file) {
		snprintf(err, errlen, "cannot zap anonymous memory in another process on this kernel "
			 "(process_madvise refuses MADV_DONTNEED); back guest memory with a memfd");
		return -EOPNOTSUPP;
	}
	if (!g->shared) {
		snprintf(err, errlen, "0x%" PRIx64 " is a private mapping of %s: punching the file "
			 "would not reach the process's own copy; back guest memory with a shared "
			 "memfd", addr, g->name);
		return -EOPNOTSUPP;
	}
	if (g->fd < 0 || !g->writable_fd) {
		if (!own_fds)
			snprintf(err, errlen, "the VMM handed over the memfd of region %u (%s) "
				 "read-only: it can't be punched; pass a descriptor opened O_RDWR", ri,
				 g->name);
		else
			snprintf(err, errlen, "cannot open the file behind 0x%" PRIx64 " (%s) for "
				 "writing through /proc/%d/map_files", addr, g->name, s->pid);
		return -EACCES;
	}
	if (own_fds) {
		n = take_uffds(s, fds, 16, err, errlen);
		if (n < 0)
			return n;
	} else {
		fds[0] = s->ho.uffd;
		n = 1;
	}
	for (int i = 0; i < n && hit < 0; i++) {
		for (int tries = 0; tries < 8; tries++) {
			struct uffdio_poison up = { .range = { addr, s->ps } };

			if (!ioctl(fds[i], UFFDIO_POISON, &up)) {
				hit = i;
				ret = 0;
				break;
			}
			ret = -errno;
			if (ret == -EEXIST) {
				/* mapped: zap it everywhere, then place the marker */
				hit = i;
				ret = punch(s, g, addr);
				if (ret) {
					snprintf(err, errlen, "fallocate(PUNCH_HOLE) of %s at offset "
						 "0x%" PRIx64 ": %s", g->name,
						 g->file_off + (addr - g->start), strerror(-ret));
					break;
				}
				ret = -EEXIST;
				hit = -1;
				continue;
			}
			if (ret == -EAGAIN)	/* the mapping is changing: try again */
				continue;
			break;
		}
		if (hit < 0 && ret != -ENOENT && ret != -EINVAL && ret != -EAGAIN && ret != -EEXIST)
			break;
	}
	if (hit >= 0) {
		/* the marker is in place; drop the contents from the page cache too */
		ret = punch(s, g, addr);
		if (ret)
			snprintf(err, errlen, "marker placed but fallocate(PUNCH_HOLE) failed: %s",
				 strerror(-ret));
		ret = 0;
	} else if ((ret == -ENOENT || ret == -EINVAL) && !own_fds) {
		snprintf(err, errlen, "the userfaultfd the VMM handed over does not cover 0x%" PRIx64
			 " (region %u) or lacks UFFD_FEATURE_POISON: register guest memory with it so "
			 "it can be poisoned", addr, ri);
	} else if (ret == -ENOENT || ret == -EINVAL) {
		snprintf(err, errlen, "none of the %d userfaultfd(s) of process %d covers 0x%" PRIx64
			 ": register guest memory with a userfaultfd so it can be poisoned", n, s->pid,
			 addr);
	} else if (!err[0]) {
		snprintf(err, errlen, "UFFDIO_POISON at 0x%" PRIx64 ": %s", addr, strerror(-ret));
	}
	for (int i = 0; own_fds && i < n; i++)
		close(fds[i]);
	if (!ret)
		note_poison(s, ri, p, "injected");
	return ret;
}

/* ---- connections -------------------------------------------------------- */

static void conn_close(struct src *s, struct conn *c)
{
	(void)s;
	fl_chan_end(&c->ch);
	if (c->fd >= 0)
		close(c->fd);
	fl_wire_reader_free(&c->rd);
	fl_wire_writer_free(&c->wr);
	for (unsigned i = 0; i < FL_WIRE_MAX_REGIONS; i++) {
		free(c->sent[i]);
		free(c->owed[i]);
	}
	memset(c, 0, sizeof(*c));
	c->fd = -1;
}

static const char *phase_name(const struct src *s, const struct conn *c)
{
	if (s->completed)
		return "done";
	if (!c)
		return s->switched ? "switched_waiting_for_target" : "waiting_for_target";
	switch (c->phase) {
	case CP_PRECOPY: return "precopy";
	case CP_WAIT: return c->precopy_done ? "precopy_done" : "waiting_for_switchover";
	case CP_MAP: return "map";
	case CP_PUSH: return "push";
	case CP_DONE: return "end_sent";
	default: return "hello";
	}
}

static void drop_conn(struct src *s, struct conn *c, const char *why)
{
	bool was_active = c->phase != CP_HELLO;

	if (was_active) {
		if (s->cfg->json && out_open(s)) {
			fprintf(s->out, "{\"event\":\"target_disconnected\",\"ts_ns\":%" PRId64
				",\"peer\":\"%s\",\"phase\":\"%s\"", now_ns(), c->peer, phase_name(s, c));
			json_str_field(s->out, "reason", why);
			fputs("}\n", s->out);
			out_end(s);
		} else if (!s->cfg->json && !s->target_done) {
			say(s, "target %s disconnected during %s: %s%s", c->peer, phase_name(s, c), why,
			    s->target_done ? "" : "; waiting for it to reconnect (resume)");
		}
	}
	conn_close(s, c);
}

/* Queue an Error, push it out if the socket takes it, and close. */
static void protocol_error(struct src *s, struct conn *c, int code, const char *text)
{
	Faultline__Wire__Error e = FAULTLINE__WIRE__ERROR__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;
	char why[300];

	s->protocol_errors++;
	e.code = (uint32_t)(code < 0 ? -code : code);
	e.text = (char *)text;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_ERROR;
	f.error = &e;
	if (!c->ch.handshaking && !fl_wire_put(&c->wr, &f))
		fl_wire_flush_io(&c->wr, &c->ch.io);
	if (s->cfg->json && out_open(s)) {
		fprintf(s->out, "{\"event\":\"protocol_error\",\"ts_ns\":%" PRId64 ",\"peer\":\"%s\","
			"\"code\":%u", now_ns(), c->peer, e.code);
		json_str_field(s->out, "text", text);
		fputs("}\n", s->out);
		out_end(s);
	} else if (!s->cfg->json) {
		say(s, "protocol error from %s: %s (connection closed)", c->peer, text);
	}
	snprintf(why, sizeof(why), "protocol error: %s", text);
	drop_conn(s, c, why);
}

static int put(struct conn *c, Faultline__Wire__Frame__BodyCase kind, void *body)
{
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	f.body_case = kind;
	f.hello = body;		/* every member of the oneof is a pointer at the same place */
	return fl_wire_put(&c->wr, &f);
}

static unsigned view_state(const struct src *s, const struct conn *c, unsigned ri, uint64_t p)
{
	const struct region *r = &s->reg[ri];
	unsigned st;

	if (bit_get(r->poison, p))
		return ST_POISONED;
	st = fl_statemap_get(&r->map, p);
	return st == ST_CLEAN && !c->has_precopy ? ST_DIRTY : st;
}

static void mark_sent(struct src *s, struct conn *c, unsigned ri, uint64_t p)
{
	if (!s->switched || bit_get(c->sent[ri], p))
		return;
	if (view_state(s, c, ri, p) == ST_DIRTY && c->push_left)
		c->push_left--;
	bit_set(c->sent[ri], p);
}

/*
 * One PageData from a list of pages whose contents sit in s->buf (slot i
 * for idx[i]) with states[] decided by the caller; CLEAN/DIRTY pages carry
 * data, compacted in order.
 */
static int put_page_data(struct src *s, struct conn *c, uint64_t seq, unsigned ri,
			 const uint64_t *idx, unsigned n, const unsigned *states, bool precopy,
			 bool background)
{
	Faultline__Wire__PageData d = FAULTLINE__WIRE__PAGE_DATA__INIT;
	uint8_t st[ANSWER_PAGES / 4 + 1] = { 0 };
	unsigned k = 0;

	for (unsigned i = 0; i < n; i++) {
		fl_wire_state_set(st, i, states[i]);
		if (states[i] != ST_CLEAN && states[i] != ST_DIRTY)
			continue;
		if (k != i)
			memmove(s->buf + (size_t)k * s->ps, s->buf + (size_t)i * s->ps, s->ps);
		k++;
	}
	d.seq = seq;
	d.region = ri;
	d.n_pages = n;
	d.pages = (uint64_t *)idx;
	d.states.data = st;
	d.states.len = fl_wire_states_bytes(n);
	d.data.data = s->buf;
	d.data.len = (size_t)k * s->ps;
	d.precopy = precopy;
	d.background = background;
	s->pages_sent += k;
	s->data_bytes += d.data.len;
	if (precopy)
		s->precopy_pages += k;
	return put(c, FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA, &d);
}

/*
 * States (and for data=true the contents, in s->buf) of the listed pages as
 * this connection should see them: from the map once switched, else live
 * (poisoned, zero, or contents to take: DIRTY).
 */
static int current_states(struct src *s, struct conn *c, unsigned ri, const uint64_t *idx,
			  unsigned n, bool data, unsigned *states)
{
	unsigned want[ANSWER_PAGES], nw = 0;
	uint64_t widx[ANSWER_PAGES], wpme[ANSWER_PAGES];
	uint8_t wres[ANSWER_PAGES];
	int ret;

	for (unsigned i = 0; i < n; i++) {
		states[i] = s->switched ? view_state(s, c, ri, idx[i]) :
			    bit_get(s->reg[ri].poison, idx[i]) ? ST_POISONED : ST_DIRTY;
		if (states[i] == ST_CLEAN || states[i] == ST_DIRTY)
			if (data || !s->switched) {
				want[nw] = i;
				widx[nw++] = idx[i];
			}
	}
	if (!nw)
		return 0;
	ret = read_pme(s, &s->reg[ri], widx, nw, wpme);
	if (!ret)
		ret = read_data(s, &s->reg[ri], widx, nw, wpme, s->buf, wres);
	if (ret)
		return ret;
	note_read_poison(s, ri, widx, nw, wres);
	/* read_data filled slot j for widx[j]: move each to the slot of its page */
	for (unsigned j = nw; j-- > 0;) {
		unsigned i = want[j];

		if (wres[j] >= R_POISON) {
			states[i] = ST_POISONED;
		} else if (wres[j] == R_ZERO ||
			   (!s->switched && all_zero(s->buf + (size_t)j * s->ps, s->ps))) {
			states[i] = ST_ZERO;
		} else if (i != j) {
			memcpy(s->buf + (size_t)i * s->ps, s->buf + (size_t)j * s->ps, s->ps);
		}
	}
	return 0;
}

static int answer_request(struct src *s, struct conn *c, const Faultline__Wire__PageRequest *q)
{
	unsigned states[ANSWER_PAGES];
	int ret;

	s->requests++;
	s->pages_requested += q->n_pages;
	for (size_t at = 0; at < q->n_pages; at += s->answer_pages) {
		unsigned n = (unsigned)(q->n_pages - at < s->answer_pages ? q->n_pages - at :
					s->answer_pages);

		ret = current_states(s, c, q->region, q->pages + at, n, true, states);
		if (!ret)
			ret = put_page_data(s, c, q->seq, q->region, q->pages + at, n, states, false,
					    false);
		if (ret)
			return ret;
		for (unsigned i = 0; i < n; i++)
			mark_sent(s, c, q->region, q->pages[at + i]);
	}
	return 0;
}

static int answer_query(struct src *s, struct conn *c, const Faultline__Wire__StateQuery *q)
{
	Faultline__Wire__StateAnswer a = FAULTLINE__WIRE__STATE_ANSWER__INIT;
	uint8_t st[FL_WIRE_MAX_PAGES / 4 + 1] = { 0 };
	unsigned states[ANSWER_PAGES];
	int ret;

	s->queries++;
	for (size_t at = 0; at < q->n_pages; at += s->answer_pages) {
		unsigned n = (unsigned)(q->n_pages - at < s->answer_pages ? q->n_pages - at :
					s->answer_pages);

		ret = current_states(s, c, q->region, q->pages + at, n, false, states);
		if (ret)
			return ret;
		for (unsigned i = 0; i < n; i++)
			fl_wire_state_set(st, at + i, states[i]);
	}
	a.seq = q->seq;
	a.region = q->region;
	a.n_pages = q->n_pages;
	a.pages = q->pages;
	a.states.data = st;
	a.states.len = fl_wire_states_bytes(q->n_pages);
	return put(c, FAULTLINE__WIRE__FRAME__BODY_STATE_ANSWER, &a);
}

static int send_hello(struct src *s, struct conn *c)
{
	Faultline__Wire__Hello h = FAULTLINE__WIRE__HELLO__INIT;
	Faultline__Wire__Region rg[FL_WIRE_MAX_REGIONS], *rp[FL_WIRE_MAX_REGIONS];

	for (unsigned i = 0; i < s->nreg; i++) {
		Faultline__Wire__Region x = FAULTLINE__WIRE__REGION__INIT;

		rg[i] = x;
		rg[i].id = i;
		rg[i].length = s->reg[i].len;
		rg[i].addr = s->reg[i].addr;
		rp[i] = &rg[i];
	}
	h.version = FL_WIRE_VERSION;
	h.role = "source";
	h.page_size = s->ps;
	h.n_regions = s->nreg;
	h.regions = rp;
	h.pid = (uint32_t)s->pid;
	h.session = s->session;
	return put(c, FAULTLINE__WIRE__FRAME__BODY_HELLO, &h);
}

static int on_hello(struct src *s, struct conn *c, const Faultline__Wire__Hello *h)
{
	struct conn *old = active_conn(s);
	char text[200];
	int ret;

	if (strcmp(h->role, "target")) {
		snprintf(text, sizeof(text), "peer says it is a \"%.40s\"; only a faultline target "
			 "may connect to a source", h->role);
		protocol_error(s, c, EPROTO, text);
		return 0;
	}
	/* One migration, one target: once a target has said Hello, only the
	 * same authenticated identity (TLS) may come back, and a resume must
	 * name this migration's session.  Nobody else displaces it, ends it or
	 * gets a page. */
	if (s->target_pinned && strcmp(c->ch.peer_id, s->target_id)) {
		snprintf(text, sizeof(text), "authenticated as \"%.60s\", not as this migration's "
			 "target \"%.60s\"", c->ch.peer_id, s->target_id);
		protocol_error(s, c, EACCES, text);
		return 0;
	}
	if (h->resume && h->session != s->session) {
		snprintf(text, sizeof(text), "resume of migration session %016" PRIx64 ", but this "
			 "source serves session %016" PRIx64, h->session, s->session);
		protocol_error(s, c, EACCES, text);
		return 0;
	}
	if (old) {
		if (!h->resume) {
			snprintf(text, sizeof(text), "another target (%s) is already connected; a "
				 "reconnecting target says resume=true", old->peer);
			protocol_error(s, c, EBUSY, text);
			return 0;
		}
		drop_conn(s, old, "replaced by a resumed connection");
	}
	if (!s->target_pinned) {
		snprintf(s->target_id, sizeof(s->target_id), "%s", c->ch.peer_id);
		s->target_pinned = true;
	}
	/* for the JSON event: a certificate DN may hold quotes */
	char id[sizeof(c->ch.peer_id)];
	size_t k = 0;

	for (const char *p = c->ch.peer_id; *p && k + 1 < sizeof(id); p++)
		if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
			id[k++] = *p;
	id[k] = 0;
	for (unsigned i = 0; i < s->nreg; i++) {
		c->sent[i] = bits_alloc(s->reg[i].npages);
		c->owed[i] = bits_alloc(s->reg[i].npages);
		if (!c->sent[i] || !c->owed[i])
			return -ENOMEM;
		/* everything known poisoned is announced at once, map or not */
		for (uint64_t b = 0; b < (s->reg[i].npages + 7) / 8; b++) {
			c->owed[i][b] = s->reg[i].poison[b];
			c->nowed += (unsigned)__builtin_popcount(s->reg[i].poison[b]);
		}
	}
	c->want_precopy = h->want_precopy;
	c->resume = h->resume;
	s->connections++;
	if (!s->first_hello_ns) {
		s->first_hello_ns = now_ns();
		s->switch_at = s->cfg->precopy_ms >= 0 ? s->first_hello_ns + s->cfg->precopy_ms * 1000000 : 0;
	}
	ret = send_hello(s, c);
	if (ret)
		return ret;
	if (s->switched)
		c->phase = CP_MAP;	/* precopy can't help any more: every page comes from here */
	else if (c->want_precopy)
		c->phase = CP_PRECOPY;
	else
		c->phase = CP_WAIT;
	if (s->cfg->json)
		event(s, "target_connected", "\"peer\":\"%s\",\"want_precopy\":%s,\"resume\":%s,"
		      "\"connections\":%" PRIu64 ",\"tls\":\"%s\",\"identity\":\"%s\"", c->peer,
		      h->want_precopy ? "true" : "false", h->resume ? "true" : "false", s->connections,
		      fl_tls_kind(s->tls), id);
	else
		say(s, "target %s connected%s%s", c->peer, h->want_precopy ? ", wants precopy" : "",
		    h->resume ? " (resuming)" : "");
	return 0;
}

/* Handle one frame from connection c; 0, or negative errno for a local failure. */
static int on_frame(struct src *s, struct conn *c, const fl_frame *f)
{
	char text[200];

	if (c->phase == CP_HELLO && f->body_case != FAULTLINE__WIRE__FRAME__BODY_HELLO) {
		snprintf(text, sizeof(text), "expected Hello first, got frame type %d", f->body_case);
		protocol_error(s, c, EPROTO, text);
		return 0;
	}
	switch (f->body_case) {
	case FAULTLINE__WIRE__FRAME__BODY_HELLO:
		if (c->phase != CP_HELLO) {
			protocol_error(s, c, EPROTO, "second Hello on one connection");
			return 0;
		}
		return on_hello(s, c, f->hello);
	case FAULTLINE__WIRE__FRAME__BODY_PAGE_REQUEST:
		return answer_request(s, c, f->page_request);
	case FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY:
		return answer_query(s, c, f->state_query);
	case FAULTLINE__WIRE__FRAME__BODY_END:
		s->target_done = true;
		if (s->cfg->json)
			event(s, "target_end", "\"peer\":\"%s\",\"end_sent\":%s", c->peer,
			      c->end_sent ? "true" : "false");
		else
			say(s, "target %s reports every page placed", c->peer);
		s->completed = s->switched;
		return 0;
	case FAULTLINE__WIRE__FRAME__BODY_ERROR:
		snprintf(text, sizeof(text), "target reported an error: %.150s (%s)", f->error->text,
			 strerror((int)f->error->code));
		drop_conn(s, c, text);
		return 0;
	default:
		snprintf(text, sizeof(text), "frame type %d is not something a target sends",
			 f->body_case);
		protocol_error(s, c, EPROTO, text);
		return 0;
	}
}

/* Parse buffered frames while there is room to answer them. */
static int process_frames(struct src *s, struct conn *c)
{
	while (c->fd >= 0 && fl_wire_pending(&c->wr) < RD_HIGH) {
		char err[256] = "";
		fl_frame *f;
		int ret = fl_wire_next(&c->rd, &s->lim, &f, err, sizeof(err));

		if (ret == 0)
			return 0;
		if (ret < 0) {
			protocol_error(s, c, ret, err[0] ? err : strerror(-ret));
			return 0;
		}
		ret = on_frame(s, c, f);
		fl_wire_free(f);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- background streams ------------------------------------------------- */

static int put_poison_pages(struct conn *c, unsigned ri, uint64_t *pages, size_t n)
{
	Faultline__Wire__PoisonUpdate u = FAULTLINE__WIRE__POISON_UPDATE__INIT;

	u.region = ri;
	u.n_pages = n;
	u.pages = pages;
	return put(c, FAULTLINE__WIRE__FRAME__BODY_POISON, &u);
}

static int put_poison_updates(struct src *s, struct conn *c)
{
	for (unsigned ri = 0; ri < s->nreg && c->nowed; ri++) {
		struct region *r = &s->reg[ri];
		uint64_t pages[FL_WIRE_MAX_PAGES];
		size_t n = 0;
		int ret;

		for (uint64_t b = 0; b < (r->npages + 7) / 8 && c->nowed; b++) {
			while (c->owed[ri][b]) {
				uint64_t p = b * 8 + (uint64_t)__builtin_ctz(c->owed[ri][b]);

				bit_clr(c->owed[ri], p);
				c->nowed--;
				mark_sent(s, c, ri, p);
				pages[n++] = p;
				if (n < FL_WIRE_MAX_PAGES && c->nowed)
					continue;
				ret = put_poison_pages(c, ri, pages, n);
				if (ret)
					return ret;
				n = 0;
			}
		}
		if (n && (ret = put_poison_pages(c, ri, pages, n)))
			return ret;
	}
	return 0;
}

static int clear_soft_dirty(struct src *s)
{
	char path[64];
	int fd, ret = 0;

	snprintf(path, sizeof(path), "/proc/%d/clear_refs", s->pid);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "4", 1) != 1)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	if (ret)
		say(s, "cannot clear soft-dirty bits (%s: %s)", path, strerror(-ret));
	return ret;
}

static int precopy_step(struct src *s, struct conn *c)
{
	struct region *r;
	unsigned n, k = 0, states[BATCH_PAGES];
	uint64_t pages[BATCH_PAGES];
	int ret;

	if (s->softdirty && !s->sd_cleared) {
		/* before the first page is read: a write after this is dirty */
		ret = clear_soft_dirty(s);
		if (ret)
			return ret;
		s->sd_cleared = true;
	}
	if (c->cr == s->nreg) {
		Faultline__Wire__PrecopyDone d = FAULTLINE__WIRE__PRECOPY_DONE__INIT;

		d.pages = c->precopy_pages;
		ret = put(c, FAULTLINE__WIRE__FRAME__BODY_PRECOPY_DONE, &d);
		if (ret)
			return ret;
		c->precopy_done = c->has_precopy = true;
		s->precopy_valid = true;
		c->phase = CP_WAIT;
		if (s->cfg->json)
			event(s, "precopy_done", "\"pages\":%" PRIu64 ",\"elapsed_ms\":%" PRId64,
			      c->precopy_pages, (now_ns() - c->since_ns) / 1000000);
		else
			say(s, "precopy done: %" PRIu64 " non-zero pages sent", c->precopy_pages);
		return 0;
	}
	r = &s->reg[c->cr];
	n = (unsigned)(r->npages - c->cp < s->batch_pages ? r->npages - c->cp : s->batch_pages);
	for (unsigned i = 0; i < n; i++)
		s->idx[i] = c->cp + i;
	ret = read_pme(s, r, s->idx, n, s->pme);
	if (!ret)
		ret = read_data(s, r, s->idx, n, s->pme, s->buf, s->res);
	if (ret)
		return ret;
	note_read_poison(s, c->cr, s->idx, n, s->res);
	for (unsigned i = 0; i < n; i++) {
		uint64_t p = s->idx[i];
		uint8_t *page = s->buf + (size_t)i * s->ps;

		bit_clr(r->psent, p);
		if (s->res[i] != R_DATA || bit_get(r->poison, p) || all_zero(page, s->ps))
			continue;
		bit_set(r->psent, p);
		if (r->hash)
			r->hash[p] = fl_source_page_hash(page, s->ps, s->hash_seed);
		if (k != i)
			memcpy(s->buf + (size_t)k * s->ps, page, s->ps);
		pages[k] = p;
		states[k++] = ST_CLEAN;
	}
	c->cp += n;
	if (c->cp == r->npages) {
		c->cr++;
		c->cp = 0;
	}
	if (!k)
		return 0;
	c->precopy_pages += k;
	return put_page_data(s, c, 0, (unsigned)(r - s->reg), pages, k, states, true, false);
}

static uint64_t view_dirty_count(const struct src *s, const struct conn *c)
{
	return s->n_dirty + (c->has_precopy ? 0 : s->n_clean);
}

static int map_step(struct src *s, struct conn *c)
{
	Faultline__Wire__StateMapChunk m = FAULTLINE__WIRE__STATE_MAP_CHUNK__INIT;
	struct region *r;
	struct fl_statemap tmp = { 0 };
	uint8_t *z = NULL;
	size_t zlen = 0;
	uint64_t n;
	int ret;

	if (!c->switch_sent) {
		Faultline__Wire__Switchover sw = FAULTLINE__WIRE__SWITCHOVER__INIT;

		if (c->want_precopy && !c->precopy_done) {
			/* the conversation promises a PrecopyDone to a precopy target */
			Faultline__Wire__PrecopyDone d = FAULTLINE__WIRE__PRECOPY_DONE__INIT;

			ret = put(c, FAULTLINE__WIRE__FRAME__BODY_PRECOPY_DONE, &d);
			if (ret)
				return ret;
			c->precopy_done = true;
		}
		sw.dirty_pages = view_dirty_count(s, c);
		ret = put(c, FAULTLINE__WIRE__FRAME__BODY_SWITCHOVER, &sw);
		if (ret)
			return ret;
		/* queued is as good as delivered: cleanup flushes it, and a
		 * target may run the VM from here on (see release_vm) */
		s->switch_announced = true;
		c->switch_sent = true;
		c->cr = 0;
		c->cp = 0;
		c->push_left = sw.dirty_pages;
		return 0;
	}
	if (c->cr == s->nreg) {
		c->phase = CP_PUSH;
		c->cr = 0;
		c->cp = 0;
		return 0;
	}
	r = &s->reg[c->cr];
	n = r->npages - c->cp < MAP_CHUNK_PAGES ? r->npages - c->cp : MAP_CHUNK_PAGES;
	if (c->has_precopy) {
		ret = fl_statemap_encode(&r->map, c->cp, n, &z, &zlen);
	} else {
		/* without precopied contents a CLEAN page is one to send */
		ret = fl_statemap_init(&tmp, n, ST_ZERO);
		if (ret)
			return ret;
		for (uint64_t i = 0; i < n; i++)
			fl_statemap_set(&tmp, i, view_state(s, c, c->cr, c->cp + i));
		ret = fl_statemap_encode(&tmp, 0, n, &z, &zlen);
		fl_statemap_free(&tmp);
	}
	if (ret)
		return ret;
	m.region = c->cr;
	m.first_page = c->cp;
	m.npages = n;
	m.zdata.data = z;
	m.zdata.len = zlen;
	m.last = c->cp + n == r->npages;
	ret = put(c, FAULTLINE__WIRE__FRAME__BODY_STATE_MAP, &m);
	free(z);
	if (ret)
		return ret;
	c->cp += n;
	if (c->cp == r->npages) {
		c->cr++;
		c->cp = 0;
	}
	return 0;
}

static int put_end(struct src *s, struct conn *c)
{
	Faultline__Wire__End e = FAULTLINE__WIRE__END__INIT;
	int ret;

	e.pages_sent = s->pages_sent;
	e.pages_poisoned = s->poisoned;
	ret = put(c, FAULTLINE__WIRE__FRAME__BODY_END, &e);
	if (ret)
		return ret;
	c->end_sent = true;
	c->phase = CP_DONE;
	if (s->cfg->json)
		event(s, "end_sent", "\"peer\":\"%s\",\"pages_sent\":%" PRIu64 ",\"poisoned\":%" PRIu64,
		      c->peer, s->pages_sent, s->poisoned);
	else
		say(s, "every page sent or declared; waiting for the target to finish");
	return 0;
}

static int push_step(struct src *s, struct conn *c)
{
	unsigned n = 0, states[BATCH_PAGES];
	uint64_t scanned = 0;
	struct region *r;
	unsigned ri;
	int ret;

	while (c->cr < s->nreg && !s->reg[c->cr].npages)
		c->cr++;
	if (c->cr == s->nreg)
		return put_end(s, c);
	ri = c->cr;
	r = &s->reg[ri];
	while (n < s->batch_pages && c->cp < r->npages && scanned < PUSH_SCAN_PAGES) {
		uint64_t p = c->cp++;

		scanned++;
		if (!bit_get(c->sent[ri], p) && view_state(s, c, ri, p) == ST_DIRTY)
			s->idx[n++] = p;
	}
	if (c->cp == r->npages) {
		c->cr++;
		c->cp = 0;
	}
	if (!n)
		return 0;
	ret = read_pme(s, r, s->idx, n, s->pme);
	if (!ret)
		ret = read_data(s, r, s->idx, n, s->pme, s->buf, s->res);
	if (ret)
		return ret;
	note_read_poison(s, ri, s->idx, n, s->res);
	for (unsigned i = 0; i < n; i++)
		states[i] = s->res[i] >= R_POISON || bit_get(r->poison, s->idx[i]) ? ST_POISONED :
			    s->res[i] == R_ZERO ? ST_ZERO : ST_DIRTY;
	ret = put_page_data(s, c, 0, ri, s->idx, n, states, false, true);
	if (ret)
		return ret;
	for (unsigned i = 0; i < n; i++)
		mark_sent(s, c, ri, s->idx[i]);
	return 0;
}

/* --max-bandwidth: ns until the next background page may go, 0 now. */
static int64_t bw_wait_ns(struct src *s)
{
	int64_t t = now_ns(), allowed_ns;

	if (!s->cfg->max_bandwidth)
		return 0;
	if (!s->bw_t0)
		s->bw_t0 = t;
	allowed_ns = (int64_t)((double)s->bw_bytes * 1e9 / (double)s->cfg->max_bandwidth);
	return s->bw_t0 + allowed_ns > t ? s->bw_t0 + allowed_ns - t : 0;
}

/* Background frames while the writer is short; poison first. */
static int produce(struct src *s, struct conn *c)
{
	int ret = 0;

	while (!ret && c->fd >= 0 && fl_wire_pending(&c->wr) < BG_LOW) {
		uint64_t before = s->data_bytes;

		if (c->nowed) {
			ret = put_poison_updates(s, c);
			continue;
		}
		if ((c->phase == CP_PRECOPY || c->phase == CP_PUSH) && bw_wait_ns(s))
			return 0;
		switch (c->phase) {
		case CP_PRECOPY:
			ret = precopy_step(s, c);
			s->bw_bytes += s->data_bytes - before;
			break;
		case CP_MAP:
			ret = map_step(s, c);
			break;
		case CP_PUSH:
			ret = push_step(s, c);
			s->bw_bytes += s->data_bytes - before;
			break;
		default:
			return 0;
		}
	}
	return ret;
}

static bool has_background(const struct conn *c)
{
	return c->nowed || c->phase == CP_PRECOPY || c->phase == CP_MAP || c->phase == CP_PUSH;
}

/* ---- switchover ---------------------------------------------------------- */

/* The state letter of a /proc/.../stat file (R, S, D, T, ...), 0 if unreadable. */
static char task_state(const char *path)
{
	char buf[512], *rp;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t k;

	if (fd < 0)
		return 0;
	k = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (k <= 0)
		return 0;
	buf[k] = 0;
	rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' ? rp[2] : 0;
}

/* SIGSTOP, then wait until every thread is stopped (a thread asleep in an
 * uninterruptible wait can't write either, but is waited for too). */
static int stop_vm(struct src *s)
{
	int64_t deadline = now_ns() + STOP_WAIT_NS;
	char path[64], running[128] = "";

	snprintf(path, sizeof(path), "/proc/%d/stat", s->pid);
	s->vm_was_stopped = task_state(path) == 'T';
	if (kill(s->pid, SIGSTOP)) {
		int err = errno;

		return fail(s, -err, "cannot stop process %d at switchover: %s", s->pid,
			    err == ESRCH ? "it has exited" : strerror(err));
	}
	s->vm_stopped = true;
	snprintf(path, sizeof(path), "/proc/%d/task", s->pid);
	for (;;) {
		DIR *d = opendir(path);
		struct dirent *e;
		bool all = true;

		if (!d)
			return -ESRCH;
		while ((e = readdir(d))) {
			char sp[384], st;

			if (!isdigit((unsigned char)e->d_name[0]))
				continue;
			snprintf(sp, sizeof(sp), "%s/%s/stat", path, e->d_name);
			st = task_state(sp);
			if (st && st != 'T' && st != 't' && st != 'Z' && st != 'X') {
				all = false;
				snprintf(running, sizeof(running), "thread %.20s (state %c)", e->d_name,
					 st);
			}
		}
		closedir(d);
		if (all)
			return 0;
		if (now_ns() > deadline) {
			say(s, "warning: %s of process %d is not stopped 2 s after SIGSTOP: a write it "
			    "makes from now on may be missed", running, s->pid);
			return 0;
		}
		usleep(2000);
	}
}

/* Final state of every page (see the header comment for the dirty rule). */
static int classify(struct src *s)
{
	bool sd = s->softdirty && s->sd_cleared && s->precopy_valid;
	bool hashed = !s->softdirty && s->precopy_valid;

	s->n_clean = s->n_dirty = s->n_zero = s->n_poisoned_map = 0;
	for (unsigned ri = 0; ri < s->nreg; ri++) {
		struct region *r = &s->reg[ri];
		int ret = fl_statemap_init(&r->map, r->npages, ST_ZERO);

		if (ret)
			return ret;
		for (uint64_t at = 0; at < r->npages; at += SCAN_PAGES) {
			unsigned n = (unsigned)(r->npages - at < SCAN_PAGES ? r->npages - at : SCAN_PAGES);
			uint64_t ridx[SCAN_PAGES], rpme[SCAN_PAGES];
			unsigned nr = 0;

			for (unsigned i = 0; i < n; i++)
				s->idx[i] = at + i;
			ret = read_pme(s, r, s->idx, n, s->pme);
			if (ret)
				return ret;
			for (unsigned i = 0; i < n; i++) {
				uint64_t p = at + i, e = s->pme[i];

				if (bit_get(r->poison, p))
					continue;
				if (pme_hwpoison(s, e)) {
					note_poison(s, ri, p, "hwpoison");
					continue;
				}
				if (sd && (e & (PM_PRESENT | PM_SWAP)) && !pme_marker(e) &&
				    !(e & PM_SOFT_DIRTY)) {
					/* mapped, not written since the clear: as precopy saw it */
					fl_statemap_set(&r->map, p, bit_get(r->psent, p) ? ST_CLEAN : ST_ZERO);
					continue;
				}
				ridx[nr] = p;
				rpme[nr++] = e;
			}
			ret = read_data(s, r, ridx, nr, rpme, s->buf, s->res);
			if (ret)
				return ret;
			note_read_poison(s, ri, ridx, nr, s->res);
			for (unsigned j = 0; j < nr; j++) {
				uint64_t p = ridx[j];
				const uint8_t *page = s->buf + (size_t)j * s->ps;
				unsigned st;

				if (s->res[j] >= R_POISON || bit_get(r->poison, p))
					continue;
				if (s->res[j] == R_ZERO || all_zero(page, s->ps))
					st = ST_ZERO;
				else if (hashed && bit_get(r->psent, p) &&
					 r->hash[p] == fl_source_page_hash(page, s->ps, s->hash_seed))
					st = ST_CLEAN;
				else
					st = ST_DIRTY;
				fl_statemap_set(&r->map, p, st);
			}
		}
		/* poison known before (or found above) wins over everything */
		for (uint64_t p = 0; p < r->npages; p++)
			if (bit_get(r->poison, p))
				fl_statemap_set(&r->map, p, ST_POISONED);
		s->n_clean += fl_statemap_count(&r->map, ST_CLEAN);
		s->n_dirty += fl_statemap_count(&r->map, ST_DIRTY);
		s->n_zero += fl_statemap_count(&r->map, ST_ZERO);
		s->n_poisoned_map += fl_statemap_count(&r->map, ST_POISONED);
	}
	return 0;
}

static int do_switchover(struct src *s, struct conn *c)
{
	int64_t t = now_ns();
	int ret;

	if (!s->cfg->no_stop) {
		ret = stop_vm(s);
		if (ret)
			return ret;
	}
	ret = classify(s);
	if (ret)
		return fail(s, ret, "cannot read process %d's memory at switchover: %s", s->pid,
			    strerror(-ret));
	s->switched = true;	/* from here note_poison keeps the map and counts right */
	s->switch_ms = (now_ns() - t) / 1000000;
	c->phase = CP_MAP;
	if (s->cfg->json)
		event(s, "switchover", "\"vm_stopped\":%s,\"clean\":%" PRIu64 ",\"dirty\":%" PRIu64
		      ",\"zero\":%" PRIu64 ",\"poisoned\":%" PRIu64 ",\"dirty_for_target\":%" PRIu64
		      ",\"classify_ms\":%" PRId64, s->vm_stopped ? "true" : "false", s->n_clean,
		      s->n_dirty, s->n_zero, s->n_poisoned_map, view_dirty_count(s, c), s->switch_ms);
	else
		say(s, "switchover: process %d %s; %" PRIu64 " clean, %" PRIu64 " dirty, %" PRIu64
		    " zero, %" PRIu64 " poisoned pages (%" PRId64 " ms)", s->pid,
		    s->vm_stopped ? "stopped" : "left running (--no-stop)", s->n_clean, s->n_dirty,
		    s->n_zero, s->n_poisoned_map, s->switch_ms);
	return 0;
}

static bool switchover_due(struct src *s, struct conn *c)
{
	if (s->switched || !c || c->phase != CP_WAIT)
		return false;
	if (s->switch_requested)
		return true;
	return !s->cfg->switchover_on_command && now_ns() >= s->switch_at;
}

/* ---- control socket ------------------------------------------------------ */

static void ctl_reply(struct ctl *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctl_reply(struct ctl *k, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* small replies to a local client: one that doesn't read is dropped */
	if (send(k->fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n) {
		close(k->fd);
		k->fd = -1;
	}
}

static void ctl_status(struct src *s, struct ctl *k)
{
	struct conn *c = active_conn(s);
	char line[1024];

	snprintf(line, sizeof(line), "{\"event\":\"source_status\",\"pid\":%d,\"phase\":\"%s\","
		 "\"target\":%s%s%s,\"switched\":%s,\"vm_stopped\":%s,\"pages_total\":%" PRIu64
		 ",\"pages_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 ",\"requests_served\":%" PRIu64
		 ",\"poisoned\":%" PRIu64 ",\"clean\":%" PRIu64 ",\"dirty\":%" PRIu64 ",\"zero\":%"
		 PRIu64 ",\"connections\":%" PRIu64 "}", s->pid, phase_name(s, c), c ? "\"" : "",
		 c ? c->peer : "null", c ? "\"" : "", s->switched ? "true" : "false",
		 s->vm_stopped ? "true" : "false", s->pages_total, s->pages_sent, s->bytes_sent,
		 s->requests, s->poisoned, s->n_clean, s->n_dirty, s->n_zero, s->connections);
	ctl_reply(k, "%s", line);
}

static void ctl_line(struct src *s, struct ctl *k, char *line)
{
	char *save = NULL, *cmd = strtok_r(line, " \t", &save), *arg, *rest, err[300];
	uint64_t pages[FL_SOURCE_MAX_INJECT];
	unsigned n, region;
	char *end;

	if (!cmd)
		return;
	if (!strcmp(cmd, "status")) {
		ctl_status(s, k);
	} else if (!strcmp(cmd, "switchover")) {
		struct conn *c = active_conn(s);

		if (s->switched) {
			ctl_reply(k, "ok switchover already done");
		} else {
			s->switch_requested = true;
			if (!c)
				ctl_reply(k, "ok switchover pending: no target connected yet");
			else if (c->phase == CP_PRECOPY)
				ctl_reply(k, "ok switchover pending: precopy still running");
			else
				ctl_reply(k, "ok switchover");
		}
	} else if (!strcmp(cmd, "poison")) {
		arg = strtok_r(NULL, " \t", &save);
		rest = strtok_r(NULL, " \t", &save);
		if (arg && !rest && strchr(arg, ':')) {	/* "poison R:P,..." */
			rest = strchr(arg, ':');
			*rest++ = 0;
		}
		errno = 0;
		region = arg ? (unsigned)strtoul(arg, &end, 10) : 0;
		if (!arg || !rest || errno || *end || !isdigit((unsigned char)*arg)) {
			ctl_reply(k, "error: usage: poison REGION PAGE[,PAGE|FIRST-LAST...]");
			return;
		}
		if (region >= s->nreg) {
			ctl_reply(k, "error: no region %u (this source has %u)", region, s->nreg);
			return;
		}
		if (fl_source_parse_pages(rest, pages, FL_SOURCE_MAX_INJECT, &n, err, sizeof(err))) {
			ctl_reply(k, "error: %s", err);
			return;
		}
		for (unsigned i = 0; i < n && k->fd >= 0; i++) {
			int ret;

			err[0] = 0;
			if (pages[i] >= s->reg[region].npages) {
				ctl_reply(k, "error %u %" PRIu64 ": region %u has %" PRIu64 " pages",
					  region, pages[i], region, s->reg[region].npages);
				continue;
			}
			ret = inject_poison(s, region, pages[i], err, sizeof(err));
			if (ret)
				ctl_reply(k, "error %u %" PRIu64 ": %s", region, pages[i],
					  err[0] ? err : strerror(-ret));
			else
				ctl_reply(k, "ok %u %" PRIu64, region, pages[i]);
		}
	} else {
		ctl_reply(k, "error: unknown command '%.40s' (poison REGION PAGE[,PAGE...] | "
			  "switchover | status)", cmd);
	}
}

static void ctl_read(struct src *s, struct ctl *k)
{
	ssize_t n = read(k->fd, k->buf + k->len, sizeof(k->buf) - 1 - k->len);
	char *nl;

	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		close(k->fd);
		k->fd = -1;
		return;
	}
	k->len += (size_t)n;
	k->buf[k->len] = 0;
	while (k->fd >= 0 && (nl = strchr(k->buf, '\n'))) {
		size_t used = (size_t)(nl - k->buf) + 1;

		*nl = 0;
		if (nl > k->buf && nl[-1] == '\r')
			nl[-1] = 0;
		ctl_line(s, k, k->buf);
		if (k->fd < 0)
			return;
		memmove(k->buf, k->buf + used, k->len - used + 1);
		k->len -= used;
	}
	if (k->len == sizeof(k->buf) - 1) {
		ctl_reply(k, "error: line too long");
		if (k->fd >= 0)
			close(k->fd);
		k->fd = -1;
	}
}

static int ctl_listen(struct src *s, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		say(s, "--control %s: path too long for a Unix socket (at most %zu bytes)", path,
		    sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	if (!lstat(path, &st)) {
		int probe;

		if (!S_ISSOCK(st.st_mode)) {
			say(s, "--control %s exists and is not a socket: pick another path", path);
			return -EEXIST;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && !connect(probe, (struct sockaddr *)&sa, sizeof(sa))) {
			close(probe);
			say(s, "control socket %s is in use (another faultline source?): stop it or "
			    "pick another --control", path);
			return -EADDRINUSE;
		}
		if (probe >= 0)
			close(probe);
		unlink(path);	/* stale: nobody listens on it */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	old = umask(0177);	/* 0600: injecting poison is for its owner only */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 8)) {
		int err = errno;

		umask(old);
		close(fd);
		say(s, "cannot create control socket %s: %s", path, strerror(err));
		return -err;
	}
	umask(old);
	s->ctl_created = true;
	s->cfd = fd;
	return 0;
}

int fl_source_control(const char *path, const char *line, unsigned nreplies, FILE *out,
		      char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[4096];
	size_t len = 0;
	unsigned got = 0;
	int fd, ret = 0;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "control socket path %s is too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		snprintf(err, errlen, "cannot connect to control socket %s: %s%s", path,
			 strerror(-ret), ret == -ENOENT || ret == -ECONNREFUSED ?
			 " (is `faultline source --control` running?)" : "");
		if (fd >= 0)
			close(fd);
		return ret;
	}
	snprintf(buf, sizeof(buf), "%s\n", line);
	if (send(fd, buf, strlen(buf), MSG_NOSIGNAL) != (ssize_t)strlen(buf)) {
		ret = -errno;
		snprintf(err, errlen, "writing to control socket %s: %s", path, strerror(-ret));
		close(fd);
		return ret;
	}
	while (got < nreplies) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char *nl;
		ssize_t k;

		if (poll(&p, 1, 60000) <= 0) {
			snprintf(err, errlen, "no answer from %s within 60 s", path);
			ret = -ETIMEDOUT;
			break;
		}
		k = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (k <= 0) {
			snprintf(err, errlen, "control socket %s closed after %u of %u answers", path,
				 got, nreplies);
			ret = k < 0 ? -errno : -ECONNRESET;
			break;
		}
		len += (size_t)k;
		buf[len] = 0;
		while (got < nreplies && (nl = strchr(buf, '\n'))) {
			*nl = 0;
			fprintf(out, "%s\n", buf);
			got++;
			if (!strncmp(buf, "error", 5))
				ret = -EREMOTEIO;
			if (!strncmp(buf, "error:", 6))	/* a refused command: nothing follows */
				got = nreplies;
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len + 1);
		}
		if (len == sizeof(buf) - 1)
			len = 0;
	}
	close(fd);
	return ret;
}

/* ---- set-up ---------------------------------------------------------- */

static int tcp_listen(struct src *s)
{
	const char *spec = s->cfg->listen ? s->cfg->listen : FL_SOURCE_DEFAULT_LISTEN;
	char err[320];
	/* 7411: the port of FL_SOURCE_DEFAULT_LISTEN, for the examples */
	int fd = fl_netaddr_listen(spec, 7411, 8, SOCK_NONBLOCK, s->where, sizeof(s->where), err,
				   sizeof(err));

	if (fd < 0) {
		say(s, "%s", err);
		return fd;
	}
	s->lfd = fd;
	{
		struct sockaddr_storage a;
		socklen_t alen = sizeof(a);
		char what[300];

		snprintf(what, sizeof(what), "--listen %s", spec);
		if (getsockname(fd, (struct sockaddr *)&a, &alen) < 0)
			return -errno;
		int ret = fl_tls_plain_check(s->tls, &s->cfg->tls, (struct sockaddr *)&a, what, err,
					     sizeof(err));
		if (ret)
			say(s, "%s", err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Does pagemap soft-dirty work here?  Try it on a page of our own. */
static bool probe_soft_dirty(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	volatile uint8_t *p = mmap(NULL, (size_t)ps, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t e1 = 0, e2 = 0;
	int pm, cr;
	bool ok = false;

	if (p == MAP_FAILED)
		return false;
	p[0] = 1;
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	cr = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	if (pm >= 0 && cr >= 0 && write(cr, "4", 1) == 1 &&
	    pread(pm, &e1, 8, (off_t)((uintptr_t)p / (uintptr_t)ps * 8)) == 8) {
		p[0] = 2;
		if (pread(pm, &e2, 8, (off_t)((uintptr_t)p / (uintptr_t)ps * 8)) == 8)
			ok = !(e1 & PM_SOFT_DIRTY) && (e2 & PM_SOFT_DIRTY);
	}
	if (pm >= 0)
		close(pm);
	if (cr >= 0)
		close(cr);
	munmap((void *)p, (size_t)ps);
	return ok;
}

/* Does a VmFlags line of smaps name flag `f` (two letters)? */
static bool vmflag(const char *line, const char *f)
{
	for (const char *p = line + strlen("VmFlags:"); (p = strstr(p, f)); p += 2)
		if (p[-1] == ' ' && (p[2] == ' ' || p[2] == '\n' || !p[2]))
			return true;
	return false;
}

/*
 * VM_IO / VM_PFNMAP mappings (device memory, [vvar]) inside a range: pagemap
 * walks skip VM_PFNMAP (its pages read as holes, so they would be served as
 * zeros), reading VM_IO may have side effects on a device (core dumps skip
 * it for that), and process_vm_readv refuses both.  Refused here, where it
 * can be said why.  smaps is the only place those flags show; reading it
 * walks the page tables once, at start, not during the switchover.
 */
static int refuse_device_memory(struct src *s)
{
	char path[64], line[512], name[256] = "";
	uint64_t start = 0, end = 0;
	int ret = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", s->pid);
	f = fopen(path, "re");
	if (!f) {
		ret = -errno;
		say(s, "cannot read %s: %s", path, strerror(-ret));
		return ret;
	}
	while (!ret && fgets(line, sizeof(line), f)) {
		uint64_t a, b, off;
		char perms[5];
		unsigned dmaj, dmin;
		unsigned long ino;
		int pos = 0;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %" SCNx64 " %x:%x %lu %n", &a, &b, perms,
			   &off, &dmaj, &dmin, &ino, &pos) >= 7) {
			start = a;
			end = b;
			snprintf(name, sizeof(name), "%s", line + pos);
			name[strcspn(name, "\n")] = 0;
			continue;
		}
		if (strncmp(line, "VmFlags:", 8) || (!vmflag(line, "io") && !vmflag(line, "pf")))
			continue;
		line[strcspn(line, "\n")] = 0;
		for (unsigned i = 0; i < s->nreg; i++) {
			struct region *r = &s->reg[i];

			if (start >= r->addr + r->len || end <= r->addr)
				continue;
			say(s, "--range %u (0x%" PRIx64 ":%" PRIu64 "): 0x%" PRIx64 "-0x%" PRIx64 " (%s) "
			    "is device memory (VM_IO/VM_PFNMAP: \"%s\" in %s): pagemap hides its pages "
			    "and process_vm_readv can't read it, so it can't be served; pass only guest "
			    "RAM", i, r->addr, r->len, start, end, name[0] ? name : "[anon]", line, path);
			ret = -EINVAL;
			break;
		}
	}
	fclose(f);
	return ret;
}

/* Regions from --pid + --range: every byte must be mapped in the process. */
static int regions_from_pid(struct src *s)
{
	const struct fl_source_config *cfg = s->cfg;
	char path[64];
	struct vma *v = NULL;
	unsigned nv = 0;
	int ret;

	if (geteuid()) {
		say(s, "needs root: it reads page frames from /proc/%d/pagemap and /proc/kpageflags, "
		    "opens /proc/%d/map_files and takes the process's userfaultfd with pidfd_getfd",
		    cfg->pid, cfg->pid);
		return -EPERM;
	}
	ret = read_maps(cfg->pid, &v, &nv);
	if (ret == -ESRCH || (!ret && kill(cfg->pid, 0) && errno == ESRCH)) {
		free(v);
		say(s, "no process with PID %d (--pid %d): check it with `ps -p %d`", cfg->pid,
		    cfg->pid, cfg->pid);
		return -ESRCH;
	}
	if (ret) {
		say(s, "cannot read /proc/%d/maps: %s", cfg->pid, strerror(-ret));
		return ret;
	}
	s->nreg = cfg->nranges;
	for (unsigned i = 0; i < s->nreg; i++) {
		struct region *r = &s->reg[i];

		r->addr = cfg->ranges[i].addr;
		r->len = cfg->ranges[i].len;
		if (r->addr % s->ps || r->len % s->ps) {
			say(s, "--range %u (0x%" PRIx64 ":%" PRIu64 ") is not page aligned: address and "
			    "length must be multiples of %u", i, r->addr, r->len, s->ps);
			free(v);
			return -EINVAL;
		}
		for (unsigned j = 0; j < i; j++)
			if (r->addr < s->reg[j].addr + s->reg[j].len &&
			    s->reg[j].addr < r->addr + r->len) {
				say(s, "--range %u overlaps --range %u", i, j);
				free(v);
				return -EINVAL;
			}
		ret = build_segments(s, r, i, v, nv);
		if (ret) {
			free(v);
			return ret;
		}
	}
	free(v);
	ret = refuse_device_memory(s);
	if (ret)
		return ret;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", s->pid);
	s->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->pagemap_fd < 0) {
		ret = -errno;
		say(s, "cannot open %s: %s", path, strerror(-ret));
		return ret;
	}
	snprintf(path, sizeof(path), "/proc/%d/mem", s->pid);
	s->mem_fd = open(path, O_RDONLY | O_CLOEXEC);
	s->mem_err = s->mem_fd < 0 ? errno : 0;
	s->pidfd = (int)syscall(SYS_pidfd_open, s->pid, 0);
	if (s->pidfd < 0)
		snprintf(s->pidfd_err, sizeof(s->pidfd_err), "pidfd_open(%d): %s: poison cannot be "
			 "injected", s->pid, strerror(errno));
	return 0;
}

/* Wait for one acceptable handover on --vmm-socket (SIGINT/SIGTERM end the wait). */
static int accept_vmm(struct src *s)
{
	const char *path = s->cfg->vmm_socket;
	char err[512];
	int ret = fl_handover_listen(path, err, sizeof(err));

	if (ret < 0) {
		say(s, "--vmm-socket %s: %s", path, err);
		return ret;
	}
	s->vmm_lfd = ret;
	if (s->cfg->json && out_open(s)) {
		fprintf(s->out, "{\"event\":\"vmm_wait\",\"ts_ns\":%" PRId64 ",\"listen\":\"%s\"",
			now_ns(), s->where);
		json_str_field(s->out, "vmm_socket", path);
		fputs("}\n", s->out);
		out_end(s);
	} else if (!s->cfg->json) {
		say(s, "waiting for a VMM to hand over its memory on %s (targets connect to %s)", path,
		    s->where);
	}
	for (;;) {
		struct pollfd p = { .fd = s->vmm_lfd, .events = POLLIN };

		if (stop_flag)
			return -EINTR;
		if (poll(&p, 1, 500) < 0 && errno != EINTR) {
			ret = -errno;
			say(s, "waiting for a VMM on %s: %s", path, strerror(-ret));
			return ret;
		}
		if (!(p.revents & POLLIN))
			continue;
		ret = fl_handover_accept_flags(s->vmm_lfd, &s->ho, FL_HANDOVER_NEED_MEMFD |
					       FL_HANDOVER_BASE_PAGES, 0, err, sizeof(err));
		if (!ret)
			break;
		if (ret == -EMFILE || ret == -ENFILE || ret == -ENOMEM) {
			say(s, "cannot take a handover on %s: %s", path, err);
			return ret;
		}
		/* a refused VMM got the same sentence and may try again; a hang-up
		 * without a handover is another listener's liveness probe */
		if (ret != -ECONNRESET)
			say(s, "refused a handover on %s: %s", path, err);
	}
	/* one VMM per run: a second one gets a clear "no router socket" */
	close(s->vmm_lfd);
	s->vmm_lfd = -1;
	unlink(path);
	return 0;
}

/*
 * Does the VMM map every region from its memfd, at the offsets handed over?
 * Only then do its pagemap entries describe the pages served (a pid from
 * another namespace, or a region list that isn't what it maps, would read
 * somebody else's page table).
 */
static bool vmm_maps_memfds(struct src *s, char *why, size_t len)
{
	struct vma *v;
	unsigned n;
	bool ok = true;

	if (s->pid <= 0) {
		snprintf(why, len, "the VMM's pid is unknown");
		return false;
	}
	if (read_maps(s->pid, &v, &n)) {
		snprintf(why, len, "cannot read /proc/%d/maps", s->pid);
		return false;
	}
	for (unsigned i = 0; i < s->nreg && ok; i++) {
		struct region *r = &s->reg[i];
		struct seg *g = &r->segs[0];
		uint64_t at = r->addr, end = r->addr + r->len;
		struct stat st;

		if (fstat(g->fd, &st)) {
			ok = false;
			break;
		}
		for (unsigned j = 0; j < n && at < end; j++) {
			if (v[j].end <= at)
				continue;
			if (v[j].start > at || v[j].perms[3] != 's' || v[j].inode != st.st_ino ||
			    v[j].off + (at - v[j].start) != g->file_off + (at - r->addr))
				break;
			at = v[j].end;
		}
		if (at < end) {
			snprintf(why, len, "process %d does not map region %u's memfd at 0x%" PRIx64,
				 s->pid, i, at);
			ok = false;
		}
	}
	free(v);
	return ok;
}

/* Regions from the handover: region i is the VMM's region i, read through its memfd. */
static int regions_from_handover(struct src *s)
{
	char why[160] = "", path[64];
	int ret = accept_vmm(s);

	if (ret)
		return ret;
	s->pid = s->ho.pid;
	if (s->pid <= 0 && !s->cfg->no_stop) {
		say(s, "the VMM that handed over on %s has no pid this source can see, so it can't "
		    "be stopped at switchover; use --no-stop to serve it anyway", s->cfg->vmm_socket);
		return -ESRCH;
	}
	s->nreg = s->ho.nregions;
	for (unsigned i = 0; i < s->nreg; i++) {
		struct region *r = &s->reg[i];
		struct fl_region *h = &s->ho.regions[i];
		struct seg *g;
		int fl;
		ssize_t k;

		r->addr = (uint64_t)(uintptr_t)h->base;
		r->len = h->length;
		r->segs = calloc(1, sizeof(*r->segs));
		if (!r->segs)
			return -ENOMEM;
		g = &r->segs[0];
		r->nsegs = 1;
		g->start = r->addr;
		g->end = r->addr + r->len;
		g->file_off = h->offset;
		g->fd = h->memfd;
		h->memfd = -1;	/* the segment owns it now */
		g->shared = g->file = true;
		g->shmem = fd_is_shmem(g->fd);
		fl = fcntl(g->fd, F_GETFL);
		g->writable_fd = fl >= 0 && (fl & O_ACCMODE) == O_RDWR;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", g->fd);
		k = readlink(path, g->name, sizeof(g->name) - 1);
		snprintf(g->name + (k > 0 ? k : 0), sizeof(g->name) - (size_t)(k > 0 ? k : 0), "%s",
			 k > 0 ? "" : "memfd");
	}
	if (vmm_maps_memfds(s, why, sizeof(why))) {
		snprintf(path, sizeof(path), "/proc/%d/pagemap", s->pid);
		s->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (s->pagemap_fd < 0)
			snprintf(why, sizeof(why), "cannot open %s: %s", path, strerror(errno));
	}
	if (s->pagemap_fd < 0)
		say(s, "note: %s: UFFDIO_POISON markers placed by others and hardware poison of "
		    "mapped frames are not watched (injected poison and unreadable pages still are)",
		    why);
	return 0;
}

/* What both inputs share, once regions and their segments are known. */
static int finish_regions(struct src *s)
{
	s->lim.page_size = s->ps;
	s->lim.nregions = s->nreg;
	for (unsigned i = 0; i < s->nreg; i++) {
		struct region *r = &s->reg[i];

		r->npages = r->len / s->ps;
		s->lim.region_pages[i] = r->npages;
		s->pages_total += r->npages;
		r->poison = bits_alloc(r->npages);
		r->psent = bits_alloc(r->npages);
		if (!r->poison || !r->psent)
			return -ENOMEM;
	}
	return 0;
}

static int setup(struct src *s)
{
	const struct fl_source_config *cfg = s->cfg;
	int ret;

	{
		char err[512] = "";

		/* first: bad credentials show before anything else is set up */
		ret = fl_tls_load(&cfg->tls, true, &s->tls, err, sizeof(err));
		if (ret) {
			say(s, "%s", err);
			return ret;
		}
	}
	s->ps = (uint32_t)sysconf(_SC_PAGESIZE);
	s->batch_pages = fl_source_frame_pages(s->ps, BATCH_PAGES);
	s->answer_pages = fl_source_frame_pages(s->ps, ANSWER_PAGES);
	if (!s->batch_pages) {
		say(s, "pages of %u bytes don't fit in one wire frame (at most %u bytes with its "
		    "header): this page size can't be served", s->ps, FL_WIRE_MAX_FRAME);
		return -EMSGSIZE;
	}
	if (cfg->vmm_socket) {
		/* a busy port or control socket shows before anyone waits on the VMM */
		ret = tcp_listen(s);
		if (!ret && cfg->control)
			ret = ctl_listen(s, cfg->control);
		if (!ret)
			ret = regions_from_handover(s);
	} else {
		ret = regions_from_pid(s);
	}
	if (!ret)
		ret = finish_regions(s);
	if (ret)
		return ret;
	/* the memory_failure_* sysctls exist exactly when the kernel can mark
	 * pages hardware-poisoned: without them there is nothing to watch */
	s->memory_failure = !access("/proc/sys/vm/memory_failure_recovery", F_OK);
	if (s->memory_failure)
		s->kpf_fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	if (cfg->vmm_socket) {
		/* auto means hashes here: they compare the memfd's contents, so writes
		 * through other mappings of it (vhost-user backends, write(2)) count
		 * too, which the VMM's soft-dirty bits never see */
		if (cfg->dirty == FL_DIRTY_SOFT && s->pagemap_fd < 0) {
			say(s, "--dirty soft-dirty needs the VMM's pagemap, which is not usable here "
			    "(see above); use --dirty hash");
			return -EINVAL;
		}
		s->softdirty = cfg->dirty == FL_DIRTY_SOFT;
	} else {
		s->softdirty = cfg->dirty == FL_DIRTY_SOFT ||
			       (cfg->dirty == FL_DIRTY_AUTO && probe_soft_dirty());
	}
	if (cfg->dirty == FL_DIRTY_SOFT && !probe_soft_dirty())
		say(s, "warning: --dirty soft-dirty, but this kernel's soft-dirty bits did not work on "
		    "a test page (CONFIG_MEM_SOFT_DIRTY off?): writes may be missed");
	if (!s->softdirty)
		for (unsigned i = 0; i < s->nreg; i++) {
			s->reg[i].hash = calloc(s->reg[i].npages ? s->reg[i].npages : 1, 8);
			if (!s->reg[i].hash)
				return -ENOMEM;
		}
	if (getrandom(&s->session, sizeof(s->session), 0) != sizeof(s->session) ||
	    getrandom(&s->hash_seed, sizeof(s->hash_seed), 0) != sizeof(s->hash_seed))
		s->session = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
	if (cfg->session)
		s->session = cfg->session;
	s->buf = aligned_alloc(4096, (size_t)SCAN_PAGES * s->ps);
	if (!s->buf)
		return -ENOMEM;
	if (!cfg->vmm_socket && !s->no_sockets) {
		ret = tcp_listen(s);
		if (!ret && cfg->control)
			ret = ctl_listen(s, cfg->control);
	}
	return ret;
}
static void print_ready(struct src *s)
{
	if (s->cfg->json) {
		if (!out_open(s))
			return;
		fprintf(s->out, "{\"event\":\"source_ready\",\"ts_ns\":%" PRId64 ",\"pid\":%d,"
			"\"listen\":\"%s\"", now_ns(), s->pid, s->where);
		json_str_field(s->out, "control", s->cfg->control);
		json_str_field(s->out, "vmm_socket", s->cfg->vmm_socket);
		fprintf(s->out, ",\"pagemap\":%s", s->pagemap_fd >= 0 ? "true" : "false");
		fprintf(s->out, ",\"page_size\":%u,\"pages_total\":%" PRIu64 ",\"session\":\"%016"
			PRIx64 "\",\"dirty_tracking\":\"%s\",\"kpageflags\":%s,\"memory_failure\":%s,\"regions\":[",
			s->ps, s->pages_total, s->session, s->softdirty ? "soft-dirty" : "hash",
			s->kpf_fd >= 0 ? "true" : "false", s->memory_failure ? "true" : "false");
		for (unsigned i = 0; i < s->nreg; i++) {
			const struct region *r = &s->reg[i];

			fprintf(s->out, "%s{\"id\":%u,\"addr\":\"0x%" PRIx64 "\",\"length\":%" PRIu64
				",\"pages\":%" PRIu64 ",\"shared_file\":%s,\"backing\":", i ? "," : "",
				i, r->addr, r->len, r->npages,
				r->segs[0].shared && r->segs[0].file ? "true" : "false");
			fl_json_str(s->out, r->segs[0].name, sizeof(r->segs[0].name));
			fputc('}', s->out);
		}
		fputs("]}\n", s->out);
		out_end(s);
		return;
	}
	say(s, "serving %s %d: %u region(s), %" PRIu64 " pages (%.1f MiB) on %s%s%s",
	    s->cfg->vmm_socket ? "the memfds handed over by VMM process" : "process", s->pid,
	    s->nreg, s->pages_total, s->pages_total * (double)s->ps / (1 << 20), s->where,
	    s->cfg->control ? "; control socket " : "", s->cfg->control ? s->cfg->control : "");
	say(s, "dirty tracking: %s; hardware poison: %s", s->softdirty ? "soft-dirty bits" :
	    s->cfg->vmm_socket ? "page hashes of the memfds' contents" :
	    "page hashes (this kernel's soft-dirty bits don't work)",
	    s->cfg->vmm_socket && s->pagemap_fd < 0 ? "seen only when a memfd read fails" :
	    s->kpf_fd >= 0 ? "kpageflags HWPOISON checked every second" :
	    !s->memory_failure ? "none possible (kernel without CONFIG_MEMORY_FAILURE); "
	    "UFFDIO_POISON markers checked every second" :
	    "/proc/kpageflags unreadable: can't be told from other read failures, which end "
	    "the run");
}

/* ---- progress and summary ------------------------------------------------ */

static uint64_t pages_left(const struct src *s, const struct conn *c, bool *known)
{
	uint64_t left = 0;

	*known = true;
	if (!c) {
		*known = false;
		return 0;
	}
	switch (c->phase) {
	case CP_PRECOPY:
		for (unsigned i = c->cr; i < s->nreg; i++)
			left += s->reg[i].npages - (i == c->cr ? c->cp : 0);
		return left;
	case CP_MAP:
		return c->switch_sent ? c->push_left : view_dirty_count(s, c);
	case CP_PUSH:
		return c->push_left;
	case CP_DONE:
		return 0;
	default:
		*known = false;
		return 0;
	}
}

static void progress(struct src *s)
{
	struct conn *c = active_conn(s);
	int64_t t = now_ns();
	double el = (double)(t - s->t0) / 1e9, dt = (double)(t - s->last_rate_ns) / 1e9;
	uint64_t moved = s->pages_sent - s->last_sent;
	bool known;
	uint64_t left = pages_left(s, c, &known);
	double eta = -1;
	char etas[32] = "";

	if (c && c->phase == CP_PRECOPY) {
		/* precopy skips zero pages: count pages looked at */
		uint64_t scanned = 0;

		for (unsigned i = 0; i < c->cr && i < s->nreg; i++)
			scanned += s->reg[i].npages;
		scanned += c->cp;
		moved = scanned >= s->last_scanned ? scanned - s->last_scanned : scanned;
		s->last_scanned = scanned;
	}
	if (dt > 0) {
		double r = (double)moved / dt;

		s->rate = s->rate > 0 ? 0.5 * s->rate + 0.5 * r : r;
	}
	s->last_sent = s->pages_sent;
	s->last_rate_ns = t;
	if (known && !left)
		eta = 0;
	else if (known && s->rate > 0)
		eta = (double)left / s->rate;
	if (s->cfg->json) {
		char e[32] = "null";

		if (eta >= 0)
			snprintf(e, sizeof(e), "%.2f", eta);
		event(s, "source_progress", "\"elapsed_s\":%.2f,\"phase\":\"%s\",\"pages_total\":%" PRIu64
		      ",\"pages_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 ",\"requests_served\":%" PRIu64
		      ",\"poisoned\":%" PRIu64 ",\"dirty\":%" PRIu64 ",\"eta_s\":%s", el,
		      phase_name(s, c), s->pages_total, s->pages_sent, s->bytes_sent, s->requests,
		      s->poisoned, s->switched ? s->n_dirty : 0, e);
		return;
	}
	if (eta >= 0)
		snprintf(etas, sizeof(etas), ", ~%.1fs left", eta);
	fprintf(stderr, "%sfaultline source: %6.1fs %-12s sent %" PRIu64 " pages (%.1f MiB), %"
		PRIu64 " requests, %" PRIu64 " poisoned, %" PRIu64 " dirty%s%s", s->tty ? "\r\033[K" : "",
		el, phase_name(s, c), s->pages_sent, (double)s->bytes_sent / (1 << 20), s->requests,
		s->poisoned, s->switched ? s->n_dirty : 0, etas, s->tty ? "" : "\n");
	fflush(stderr);
}

static void summary(struct src *s)
{
	double dur = (double)(now_ns() - s->t0) / 1e9;

	if (s->cfg->json) {
		if (!out_open(s))
			return;
		fprintf(s->out, "{\"event\":\"source_summary\",\"ts_ns\":%" PRId64 ",\"completed\":%s,"
			"\"pages_total\":%" PRIu64 ",\"pages_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64
			",\"data_bytes\":%" PRIu64 ",\"requests_served\":%" PRIu64 ",\"pages_requested\":%"
			PRIu64 ",\"state_queries\":%" PRIu64 ",\"precopy_pages\":%" PRIu64
			",\"poisoned\":%" PRIu64, now_ns(), s->completed ? "true" : "false",
			s->pages_total, s->pages_sent, s->bytes_sent, s->data_bytes, s->requests,
			s->pages_requested, s->queries, s->precopy_pages, s->poisoned);
		if (s->switched)
			fprintf(s->out, ",\"dirty\":%" PRIu64 ",\"zero\":%" PRIu64 ",\"clean\":%" PRIu64,
				s->n_dirty, s->n_zero, s->n_clean);
		else
			fputs(",\"dirty\":null,\"zero\":null,\"clean\":null", s->out);
		fprintf(s->out, ",\"switched\":%s,\"vm_stopped\":%s,\"vm_resumed\":%s,"
			"\"connections\":%" PRIu64 ",\"protocol_errors\":%" PRIu64
			",\"dirty_tracking\":\"%s\",\"duration_s\":%.3f}\n",
			s->switched ? "true" : "false", s->vm_stopped ? "true" : "false",
			s->vm_resumed ? "true" : "false", s->connections, s->protocol_errors,
			s->softdirty ? "soft-dirty" : "hash", dur);
		out_end(s);
		return;
	}
	if (s->tty)
		fputs("\r\033[K", stderr);
	fprintf(stderr, "\nfaultline source: %s after %.1f s\n",
		s->completed ? "migration complete" : "stopped before the target finished", dur);
	fprintf(stderr, "  pages:    %" PRIu64 " total", s->pages_total);
	if (s->switched)
		fprintf(stderr, ", %" PRIu64 " clean, %" PRIu64 " dirty, %" PRIu64 " zero",
			s->n_clean, s->n_dirty, s->n_zero);
	fprintf(stderr, ", %" PRIu64 " poisoned\n", s->poisoned);
	fprintf(stderr, "  sent:     %" PRIu64 " pages (%" PRIu64 " in precopy), %.1f MiB on the "
		"wire\n", s->pages_sent, s->precopy_pages, (double)s->bytes_sent / (1 << 20));
	fprintf(stderr, "  served:   %" PRIu64 " page requests (%" PRIu64 " pages), %" PRIu64
		" state queries; %" PRIu64 " connection(s), %" PRIu64 " protocol error(s)\n",
		s->requests, s->pages_requested, s->queries, s->connections, s->protocol_errors);
	if (s->vm_resumed)
		fprintf(stderr, "  process %d resumed (SIGCONT): no target was told to take over\n",
			s->pid);
	else if (s->vm_stopped)
		fprintf(stderr, "  process %d stays stopped (SIGSTOP)%s\n", s->pid,
			s->completed ? ": it has migrated" :
			s->vm_was_stopped ? ": it was stopped before the switchover" :
			"; a target was told to switch over and may run it: `kill -CONT` it "
			"only if none did");
}

/* ---- the loop -------------------------------------------------------------- */

static void accept_target(struct src *s)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);
	char host[INET6_ADDRSTRLEN] = "?";
	int fd = accept4(s->lfd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	int one = 1, slot = -1;
	unsigned port = 0;

	if (fd < 0)
		return;
	if (sa.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
	} else if (sa.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
	}
	/* Idle newcomers must not lock the target out: one address may hold
	 * only a few slots before its Hello, and with every slot taken the
	 * newcomer that has waited longest gives way (the target, past its
	 * Hello, never does). */
	int same_host = 0, oldest = -1;

	for (int i = 0; i < MAX_CONNS; i++) {
		struct conn *k = &s->conns[i];

		if (k->fd < 0) {
			if (slot < 0)
				slot = i;
			continue;
		}
		if (k->phase != CP_HELLO)
			continue;
		if (!strcmp(k->host, host))
			same_host++;
		if (oldest < 0 || k->since_ns < s->conns[oldest].since_ns)
			oldest = i;
	}
	if (same_host >= MAX_PENDING_PER_HOST) {
		close(fd);
		return;
	}
	if (slot < 0 && oldest >= 0) {
		drop_conn(s, &s->conns[oldest], "a newer peer needed its slot (no Hello yet)");
		slot = oldest;
	}
	if (slot < 0) {
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct conn *c = &s->conns[slot];
	char err[256] = "";

	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->phase = CP_HELLO;
	c->since_ns = now_ns();
	snprintf(c->host, sizeof(c->host), "%s", host);
	snprintf(c->peer, sizeof(c->peer), sa.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
	if (fl_wire_reader_init(&c->rd) || fl_wire_writer_init(&c->wr) ||
	    fl_chan_start(&c->ch, s->tls, fd, true, NULL, err, sizeof(err))) {
		if (*err)
			say(s, "%s: %s", c->peer, err);
		conn_close(s, c);
	}
}

static void accept_ctl(struct src *s)
{
	int fd = accept4(s->cfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CTLS; i++)
		if (s->ctls[i].fd < 0) {
			s->ctls[i].fd = fd;
			s->ctls[i].len = 0;
			return;
		}
	close(fd);
}

static int conn_io(struct src *s, struct conn *c, short rev)
{
	int ret;

	if (c->ch.handshaking) {
		char err[256] = "", why[300];

		ret = fl_chan_handshake(&c->ch, err, sizeof(err));
		if (ret == -EAGAIN)
			return 0;
		if (ret) {
			/* no page, no frame: a peer without the credentials gets nothing */
			snprintf(why, sizeof(why), "refused: %s", err);
			s->protocol_errors++;
			if (s->cfg->json && out_open(s)) {
				fprintf(s->out, "{\"event\":\"peer_refused\",\"ts_ns\":%" PRId64
					",\"peer\":\"%s\"", now_ns(), c->peer);
				json_str_field(s->out, "reason", why);
				fputs("}\n", s->out);
				out_end(s);
			} else if (!s->cfg->json) {
				say(s, "%s %s", c->peer, why);
			}
			drop_conn(s, c, why);
			return 0;
		}
		rev |= POLLIN;	/* its Hello may have come with the handshake */
	}
	while (rev & (POLLIN | POLLHUP | POLLERR)) {
		ssize_t k = fl_wire_reader_fill_io(&c->rd, &c->ch.io);

		if (k == 0) {
			/* frames that came with the FIN (its End, say) still count */
			ret = process_frames(s, c);
			if (ret || c->fd < 0)
				return ret;
			if (s->target_done && c->phase != CP_HELLO)
				return 0;	/* finished: the loop ends or drops it */
			drop_conn(s, c, "connection closed by the target");
			return 0;
		}
		if (k < 0 && k != -EAGAIN && k != -ENOBUFS) {
			char why[128];

			snprintf(why, sizeof(why), "read: %s", strerror((int)-k));
			drop_conn(s, c, why);
			return 0;
		}
		/* records TLS decrypted already: poll() would not say so */
		if (k == -ENOBUFS || !fl_chan_buffered(&c->ch))
			break;
		ret = process_frames(s, c);
		if (ret || c->fd < 0)
			return ret;
	}
	ret = process_frames(s, c);
	if (ret || c->fd < 0)
		return ret;
	if (c->phase != CP_HELLO && c->nowed)
		ret = put_poison_updates(s, c);
	return ret;
}

static int conn_flush(struct src *s, struct conn *c)
{
	size_t before = fl_wire_pending(&c->wr);
	ssize_t left = c->ch.handshaking ? (ssize_t)fl_wire_pending(&c->wr) :
		       fl_wire_flush_io(&c->wr, &c->ch.io);

	if (left < 0) {
		char why[128];

		snprintf(why, sizeof(why), "write: %s", strerror((int)-left));
		drop_conn(s, c, why);
		return 0;
	}
	s->bytes_sent += before - (size_t)left;
	return 0;
}

static int serve(struct src *s)
{
	s->next_tick = now_ns() + NS;
	s->next_progress = now_ns() + (s->cfg->progress_ms ? s->cfg->progress_ms : 1000) * 1000000ll;
	s->last_rate_ns = now_ns();
	while (!stop_flag) {
		struct pollfd pfd[2 + MAX_CONNS + MAX_CTLS];
		int kind[2 + MAX_CONNS + MAX_CTLS], np = 0, timeout;
		bool timeout_now = false;	/* a TLS layer holds decrypted records */
		struct conn *c = active_conn(s);
		int64_t t = now_ns(), wake = s->next_tick < s->next_progress ? s->next_tick :
					 s->next_progress;
		int ret;

		if (s->target_done && (!c || !fl_wire_pending(&c->wr)) && !s->cfg->keep_serving)
			return 0;
		if (s->target_done && s->cfg->keep_serving && c && !fl_wire_pending(&c->wr)) {
			drop_conn(s, c, "migration finished");
			s->target_done = false;
			c = NULL;
		}
		if (switchover_due(s, c)) {
			ret = do_switchover(s, c);
			if (ret)
				return ret;
		}
		if (c && c->fd >= 0) {
			ret = produce(s, c);
			if (ret)
				return ret;
		}
		pfd[np] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		kind[np++] = -1;
		if (s->cfd >= 0) {
			pfd[np] = (struct pollfd){ .fd = s->cfd, .events = POLLIN };
			kind[np++] = -2;
		}
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *k = &s->conns[i];

			if (k->fd < 0)
				continue;
			if (k->phase == CP_HELLO && t - k->since_ns > HELLO_TIMEOUT_NS) {
				protocol_error(s, k, ETIMEDOUT, "no Hello within 5 s of connecting");
				continue;
			}
			if (fl_wire_pending(&k->wr))
				conn_flush(s, k);
			if (k->fd < 0)
				continue;
			pfd[np] = (struct pollfd){ .fd = k->fd, .events = 0 };
			if (k->ch.handshaking)
				pfd[np].events = fl_chan_events(&k->ch);
			else if (fl_wire_pending(&k->wr) < RD_HIGH)
				pfd[np].events |= POLLIN;
			if (!k->ch.handshaking && fl_wire_pending(&k->wr))
				pfd[np].events |= POLLOUT;
			if (!k->ch.handshaking && fl_chan_buffered(&k->ch) &&
			    fl_wire_pending(&k->wr) < RD_HIGH)
				timeout_now = true;
			kind[np++] = i;
		}
		for (int i = 0; i < MAX_CTLS; i++)
			if (s->ctls[i].fd >= 0) {
				pfd[np] = (struct pollfd){ .fd = s->ctls[i].fd, .events = POLLIN };
				kind[np++] = 100 + i;
			}
		c = active_conn(s);
		timeout = wake > t ? (int)((wake - t) / 1000000) + 1 : 0;
		if (c && fl_wire_pending(&c->wr) < BG_LOW && has_background(c)) {
			int64_t bw = (c->phase == CP_PRECOPY || c->phase == CP_PUSH) && !c->nowed ?
				     bw_wait_ns(s) : 0;

			if (!bw)
				timeout = 0;
			else if (bw / 1000000 + 1 < timeout)
				timeout = (int)(bw / 1000000) + 1;
		}
		if (c && !s->switched && c->phase == CP_WAIT && !s->cfg->switchover_on_command &&
		    s->switch_at > t && (s->switch_at - t) / 1000000 < timeout)
			timeout = (int)((s->switch_at - t) / 1000000) + 1;
		if (c && !s->switched && c->phase == CP_WAIT && (s->switch_requested ||
		    (!s->cfg->switchover_on_command && s->switch_at <= t)))
			timeout = 0;
		if (timeout_now)
			timeout = 0;
		if (poll(pfd, (nfds_t)np, timeout) < 0 && errno != EINTR)
			return -errno;
		for (int i = 0; i < np; i++) {
			if (kind[i] >= 0 && kind[i] < 100 && s->conns[kind[i]].fd >= 0 &&
			    fl_chan_buffered(&s->conns[kind[i]].ch))
				pfd[i].revents |= POLLIN;
			if (!pfd[i].revents)
				continue;
			if (kind[i] == -1) {
				accept_target(s);
			} else if (kind[i] == -2) {
				accept_ctl(s);
			} else if (kind[i] >= 100) {
				if (s->ctls[kind[i] - 100].fd >= 0)
					ctl_read(s, &s->ctls[kind[i] - 100]);
			} else if (s->conns[kind[i]].fd >= 0) {
				ret = conn_io(s, &s->conns[kind[i]], pfd[i].revents);
				if (ret)
					return ret;
			}
		}
		/* frames held back by a full writer, once it drained */
		for (int i = 0; i < MAX_CONNS; i++)
			if (s->conns[i].fd >= 0 && s->conns[i].rd.len > s->conns[i].rd.off) {
				ret = process_frames(s, &s->conns[i]);
				if (ret)
					return ret;
			}
		t = now_ns();
		if (t >= s->next_tick) {
			s->next_tick = t + NS;
			ret = scan_poison(s);
			if (ret)
				return ret;
		}
		if (t >= s->next_progress) {
			s->next_progress = t + (s->cfg->progress_ms ? s->cfg->progress_ms : 1000) * 1000000ll;
			progress(s);
		}
	}
	return -EINTR;
}

/*
 * The process we SIGSTOPped, on our way out.  Once a Switchover was queued to
 * a target it stays stopped whatever ended the run: that target may already
 * run the VM, and two running copies of one guest corrupt its disks and
 * confuse its network peers; a stopped VM can still be resumed by whoever
 * knows the target never ran it, a split brain can't be undone.  If no
 * target was ever told (the run failed or was interrupted between the
 * SIGSTOP and the Switchover: a page that can't be read at switchover, say),
 * nobody else can run it, and a migration that did not happen must not leave
 * the VM paused for good: it is resumed.  A process that was already stopped
 * before our SIGSTOP is left as it was.
 */
static void release_vm(struct src *s)
{
	if (!s->vm_stopped || s->switch_announced || s->vm_was_stopped)
		return;
	if (kill(s->pid, SIGCONT)) {
		if (errno != ESRCH)
			say(s, "cannot resume process %d (SIGCONT): %s; it stays stopped", s->pid,
			    strerror(errno));
		return;
	}
	s->vm_resumed = true;
}

/* A failed run tells its targets why (best effort: cleanup flushes what the
 * sockets take), so the migration ends with the reason instead of a hang-up. */
static void tell_targets(struct src *s, int err)
{
	Faultline__Wire__Error e = FAULTLINE__WIRE__ERROR__INIT;

	e.code = (uint32_t)-err;
	e.text = s->why;
	for (int i = 0; i < MAX_CONNS; i++)
		if (s->conns[i].fd >= 0 && s->conns[i].phase != CP_HELLO)
			put(&s->conns[i], FAULTLINE__WIRE__FRAME__BODY_ERROR, &e);
}

static void cleanup(struct src *s)
{
	for (int i = 0; i < MAX_CONNS; i++)
		if (s->conns[i].fd >= 0) {
			if (!s->conns[i].ch.handshaking)
				fl_wire_flush_io(&s->conns[i].wr, &s->conns[i].ch.io);
			conn_close(s, &s->conns[i]);
		}
	fl_tls_free(s->tls);	/* after the sessions that use it */
	s->tls = NULL;
	for (int i = 0; i < MAX_CTLS; i++)
		if (s->ctls[i].fd >= 0)
			close(s->ctls[i].fd);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->cfd >= 0)
		close(s->cfd);
	if (s->ctl_created)
		unlink(s->cfg->control);
	if (s->vmm_lfd >= 0) {
		close(s->vmm_lfd);
		unlink(s->cfg->vmm_socket);
	}
	fl_handover_close(&s->ho);
	for (unsigned i = 0; i < FL_WIRE_MAX_REGIONS; i++) {
		struct region *r = &s->reg[i];

		for (unsigned j = 0; j < r->nsegs; j++)
			if (r->segs[j].fd >= 0)
				close(r->segs[j].fd);
		free(r->segs);
		free(r->poison);
		free(r->psent);
		free(r->hash);
		fl_statemap_free(&r->map);
	}
	if (s->pagemap_fd >= 0)
		close(s->pagemap_fd);
	if (s->mem_fd >= 0)
		close(s->mem_fd);
	if (s->kpf_fd >= 0)
		close(s->kpf_fd);
	if (s->pidfd >= 0)
		close(s->pidfd);
	free(s->buf);
}

static void src_init(struct src *s, const struct fl_source_config *cfg)
{
	s->cfg = cfg;
	s->out = cfg->out ? cfg->out : stdout;
	s->pid = cfg->pid;
	s->pagemap_fd = s->kpf_fd = s->pidfd = s->lfd = s->cfd = s->vmm_lfd = s->mem_fd = -1;
	s->ho.sock = s->ho.uffd = -1;
	s->tty = !cfg->json && isatty(STDERR_FILENO);
	s->t0 = now_ns();
	for (int i = 0; i < MAX_CONNS; i++)
		s->conns[i].fd = -1;
	for (int i = 0; i < MAX_CTLS; i++)
		s->ctls[i].fd = -1;
}

int fl_source_run(const struct fl_source_config *cfg)
{
	struct sigaction sa = { .sa_handler = on_signal }, ign = { .sa_handler = SIG_IGN };
	struct sigaction old_int, old_term, old_pipe;
	struct src *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	src_init(s, cfg);
	stop_flag = 0;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	/* a reader of --json's stdout (or of stderr) that goes away must not end
	 * the run: after the switchover the process is stopped and only we serve
	 * its memory; writes fail with EPIPE instead (out_end) */
	sigemptyset(&ign.sa_mask);
	sigaction(SIGPIPE, &ign, &old_pipe);
	ret = setup(s);
	if (!ret) {
		print_ready(s);
		ret = serve(s);
		if (ret == -EINTR && !s->cfg->json) {
			say(s, "interrupted");
		} else if (ret && ret != -EINTR) {
			fail(s, ret, "%s", ret == -ESRCH ? "the process exited" : strerror(-ret));
			say(s, "stopped: %s", s->why);
			tell_targets(s, ret);
		}
		release_vm(s);
		summary(s);
		if (ret == -EINTR && s->completed)	/* --keep-serving ended by the user */
			ret = 0;
		if (!ret && !s->completed)
			ret = -ECONNABORTED;
	}
	cleanup(s);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGPIPE, &old_pipe, NULL);
	free(s);
	return ret;
}

/* ---- test hook (source_test.h) ------------------------------------------------ */

/* Count what the source sent to a test peer: frames, and pages with contents. */
static void test_drain(int fd, struct fl_wire_reader *rd, const struct fl_wire_limits *lim,
		       struct fl_source_test_peer *p)
{
	for (;;) {
		ssize_t k = fl_wire_reader_fill(rd, fd);
		fl_frame *f;
		char err[256];

		while (fl_wire_next(rd, lim, &f, err, sizeof(err)) > 0) {
			p->frames++;
			if (f->body_case == FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA)
				p->pages += f->page_data->data.len / lim->page_size;
			fl_wire_free(f);
		}
		if (k <= 0 && k != -ENOBUFS)
			return;
	}
}

static struct conn *test_connect(struct src *s, int fd, unsigned i)
{
	for (int j = 0; j < MAX_CONNS; j++) {
		struct conn *c = &s->conns[j];
		char err[256] = "";

		if (c->fd >= 0)
			continue;
		memset(c, 0, sizeof(*c));
		c->fd = fd;
		c->phase = CP_HELLO;
		c->since_ns = now_ns();
		snprintf(c->host, sizeof(c->host), "peer%u", i);
		snprintf(c->peer, sizeof(c->peer), "peer%u", i);
		if (fl_wire_reader_init(&c->rd) || fl_wire_writer_init(&c->wr) ||
		    fl_chan_start(&c->ch, NULL, fd, true, NULL, err, sizeof(err))) {
			conn_close(s, c);
			return NULL;
		}
		return c;
	}
	close(fd);
	return NULL;
}

/* One source set up once (regions, pagemap, buffers: the expensive part)
 * and the state right after it, which every session starts from. */
struct fl_source_test {
	struct src s, pristine;
};

int fl_source_test_open(const struct fl_source_config *cfg, struct fl_source_test **out)
{
	struct fl_source_test *t;
	int ret;

	if (cfg->vmm_socket || !cfg->no_stop)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	src_init(&t->s, cfg);
	t->s.no_sockets = true;
	ret = setup(&t->s);
	if (ret) {
		cleanup(&t->s);
		free(t);
		return ret;
	}
	t->pristine = t->s;
	*out = t;
	return 0;
}

void fl_source_test_close(struct fl_source_test *t)
{
	if (!t)
		return;
	cleanup(&t->s);
	free(t);
}

/* Back to the state right after setup: the per-page bits cleared in
 * place, every other field (flags, pins, counters, cursors) copied back. */
static void test_reset(struct fl_source_test *t)
{
	struct src *s = &t->s;

	for (int i = 0; i < MAX_CONNS; i++)
		if (s->conns[i].fd >= 0)
			conn_close(s, &s->conns[i]);
	for (unsigned i = 0; i < s->nreg; i++) {
		struct region *r = &s->reg[i];

		memset(r->poison, 0, (r->npages + 7) / 8);
		memset(r->psent, 0, (r->npages + 7) / 8);
		if (r->hash)
			memset(r->hash, 0, r->npages * 8);
		fl_statemap_free(&r->map);
	}
	*s = t->pristine;
}

int fl_source_test_session(struct fl_source_test *t, struct fl_source_test_peer *p, unsigned n,
			   unsigned switch_after)
{
	struct src *s = &t->s;
	int ret = 0, peer[MAX_CONNS];
	struct fl_wire_reader prd[MAX_CONNS];
	struct fl_wire_limits lim;

	if (n > MAX_CONNS)
		return -EINVAL;
	test_reset(t);
	lim = s->lim;
	/* what the target reads: the source's frames, any region, any page */
	for (unsigned i = 0; i < s->nreg; i++)
		lim.region_pages[i] = s->reg[i].npages;
	for (unsigned i = 0; i < n; i++) {
		peer[i] = -1;
		fl_wire_reader_init(&prd[i]);
	}
	for (unsigned i = 0; !ret && i < n; i++) {
		struct conn *c, *tgt = active_conn(s);
		int sv[2];
		size_t off = 0;

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
			ret = -errno;
			break;
		}
		peer[i] = sv[1];
		p[i].target_before = tgt != NULL;
		c = test_connect(s, sv[0], i);
		/* feed it, answer, drain, until the source neither reads nor says more */
		for (unsigned round = 0; !ret && c && c->fd >= 0 && round < 1000; round++) {
			ssize_t k = off < p[i].len ? write(sv[1], p[i].in + off, p[i].len - off) : 0;
			uint64_t before = p[i].frames;

			if (k > 0)
				off += (size_t)k;
			ret = conn_io(s, c, POLLIN);
			for (int j = 0; !ret && j < MAX_CONNS; j++) {
				struct conn *a = &s->conns[j];

				if (a->fd >= 0 && a == active_conn(s))
					ret = produce(s, a);
				if (!ret && a->fd >= 0 && fl_wire_pending(&a->wr))
					ret = conn_flush(s, a);
			}
			for (unsigned j = 0; j <= i; j++)
				if (peer[j] >= 0)
					test_drain(peer[j], &prd[j], &lim, &p[j]);
			if (off == p[i].len && k <= 0 && p[i].frames == before &&
			    (c->fd < 0 || !fl_wire_pending(&c->wr)) && c->rd.len == c->rd.off)
				break;
		}
		p[i].target_before_stays = tgt && tgt->fd >= 0 && tgt == active_conn(s) && tgt != c;
		p[i].target_after = c && c->fd >= 0 && c == active_conn(s);
		if (!ret && i == switch_after && active_conn(s) && active_conn(s)->phase == CP_WAIT)
			ret = do_switchover(s, active_conn(s));
	}
	for (unsigned i = 0; i < n; i++) {
		if (peer[i] >= 0)
			close(peer[i]);
		fl_wire_reader_free(&prd[i]);
	}
	test_reset(t);
	return ret;
}
