/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * faultline source's insides, shared by its parts (not an API): the one
 * context of a run (struct src), its connections and regions, and the
 * functions one part calls in another.  How the source works: source.c.
 */
#ifndef FAULTLINE_SOURCE_INT_H
#define FAULTLINE_SOURCE_INT_H

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

#include "errmsg.h"
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
#define SCAN_BYTES (64u << 20)	/* at most this much page data read at once (huge pages) */
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
	enum fl_source_dirty dirty;	/* the method in use (source_dirty.c): WP, SOFT or HASH */
	char dirty_why[400];		/* why that one, said at start */
	struct src_wp *wp;		/* FL_DIRTY_WP: the VMM's uffd and what we registered */
	bool switched, switch_requested, vm_stopped, target_done, completed;
	bool switch_announced;	/* a Switchover was queued: a target may run the VM */
	bool vm_was_stopped;	/* already stopped before our SIGSTOP: not ours to resume */
	bool vm_resumed;	/* SIGCONT at exit: no target was ever told to take over */
	bool out_dead;		/* a write to s->out failed: events are no longer printed */
	bool no_sockets;	/* the test hook: peers come from socketpairs, no port */
	char why[512];		/* why a failed run ended: said once, sent to the target */
	unsigned batch_pages, answer_pages;	/* BATCH_PAGES, ANSWER_PAGES that fit a frame */
	unsigned scan_pages;	/* pages read at once (SCAN_PAGES, fewer of huge ones: s->buf) */
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

/* Set by SIGINT/SIGTERM while a run is on (the only process-wide state). */
extern volatile sig_atomic_t src_stop_flag;

static inline int64_t src_now_ns(void)
{
	return (int64_t)fl_now_ns();
}

static inline bool src_bit_get(const uint8_t *b, uint64_t i)
{
	return (b[i >> 3] >> (i & 7)) & 1;
}

static inline void src_bit_set(uint8_t *b, uint64_t i)
{
	b[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static inline void src_bit_clr(uint8_t *b, uint64_t i)
{
	b[i >> 3] &= (uint8_t)~(1u << (i & 7));
}

static inline uint8_t *src_bits_alloc(uint64_t n)
{
	return calloc((size_t)((n + 7) / 8) + 1, 1);
}

/* One line of /proc/PID/maps. */
struct vma {
	uint64_t start, end, off;
	char perms[5];
	unsigned long inode;
	char path[256];
};

/* ---- shared between the parts (each defined in one of them) ---- */

void src_say(struct src *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

bool src_out_open(const struct src *s);

void src_out_end(struct src *s);

int src_fail(struct src *s, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* JSON mode: one event line on s->out; `fmt` continues after "event". */
void src_event(struct src *s, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void src_json_str_field(FILE *out, const char *key, const char *v);

bool src_all_zero(const uint8_t *p, size_t n);

int src_read_maps(pid_t pid, struct vma **out, unsigned *n);

bool src_fd_is_shmem(int fd);

int src_build_segments(struct src *s, struct region *r, unsigned id, const struct vma *v,
			  unsigned n);

struct seg *src_find_seg(struct region *r, uint64_t addr);

bool src_pme_marker(uint64_t e);

bool src_pme_poison_marker(uint64_t e);

int src_read_pme(struct src *s, struct region *r, const uint64_t *idx, unsigned n, uint64_t *pme);

bool src_pme_hwpoison(struct src *s, uint64_t e);

int src_read_data(struct src *s, struct region *r, const uint64_t *idx, unsigned n,
		     const uint64_t *pme, uint8_t *buf, uint8_t *res);

struct conn *src_active_conn(struct src *s);

void src_note_poison(struct src *s, unsigned ri, uint64_t p, const char *cause);

void src_note_read_poison(struct src *s, unsigned ri, const uint64_t *idx, unsigned n,
			     const uint8_t *res);

int src_scan_poison(struct src *s);

int src_list_uffds(pid_t pid, int *fds, int max);
int src_punch(struct src *s, struct seg *g, uint64_t addr);

int src_inject_poison(struct src *s, unsigned ri, uint64_t p, char *err, size_t errlen);

void src_conn_close(struct src *s, struct conn *c);

const char *src_phase_name(const struct src *s, const struct conn *c);

void src_drop_conn(struct src *s, struct conn *c, const char *why);

void src_protocol_error(struct src *s, struct conn *c, int code, const char *text);

int src_put(struct conn *c, Faultline__Wire__Frame__BodyCase kind, void *body);

unsigned src_view_state(const struct src *s, const struct conn *c, unsigned ri, uint64_t p);

void src_mark_sent(struct src *s, struct conn *c, unsigned ri, uint64_t p);

int src_put_page_data(struct src *s, struct conn *c, uint64_t seq, unsigned ri,
			 const uint64_t *idx, unsigned n, const unsigned *states, bool precopy,
			 bool background);

int src_process_frames(struct src *s, struct conn *c);

int src_put_poison_updates(struct src *s, struct conn *c);

uint64_t src_view_dirty_count(const struct src *s, const struct conn *c);

int64_t src_bw_wait_ns(struct src *s);

int src_produce(struct src *s, struct conn *c);

bool src_has_background(const struct conn *c);

int src_do_switchover(struct src *s, struct conn *c);

bool src_switchover_due(struct src *s, struct conn *c);

void src_ctl_read(struct src *s, struct ctl *k);

int src_ctl_listen(struct src *s, const char *path);

int src_setup(struct src *s);

/* source_dirty.c: how pages written since precopy are found */
int src_dirty_choose(struct src *s);

const char *src_dirty_name(const struct src *s);

int src_dirty_before_read(struct src *s, unsigned ri, uint64_t first, unsigned n);

int src_dirty_classify(struct src *s, unsigned ri);

void src_dirty_release(struct src *s);

void src_dirty_free(struct src *s);

void src_dirty_before_poison(struct src *s, uint64_t addr);

void src_print_ready(struct src *s);

void src_progress(struct src *s);

int src_serve(struct src *s);

void src_release_vm(struct src *s);

void src_cleanup(struct src *s);

#endif
