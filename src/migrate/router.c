// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The target router (libfaultline): every userfault of the migrating guest
 * is routed to its resolution —
 *   poisoned on the source   -> UFFDIO_POISON (journaled first; a page that
 *                               was already mapped is zapped, then poisoned)
 *   zero on the source       -> UFFDIO_ZEROPAGE, no network round trip
 *   clean (MINOR, precopied) -> UFFDIO_CONTINUE of the page cache copy
 *   dirty / unknown          -> ask the source, then UFFDIO_COPY (MISSING)
 *                               or write the page cache + CONTINUE (MINOR)
 * Before the source's page-state map has arrived, pages past the map's
 * frontier are unknown and each fault asks (StateQuery for a MINOR fault,
 * PageRequest otherwise); afterwards decisions are local.  POISONED and
 * ZERO are known wherever they stand and stay through map merges: poison
 * is never undone, and a page the VMM discarded (UFFD_EVENT_REMOVE) reads
 * zero from then on, whatever the source still holds for it.
 *
 * A page once placed belongs to the guest: the router never writes over
 * it again, whatever arrives later (a resumed source pushing its old
 * contents, a duplicate answer, a restarted router).  UFFDIO_COPY says so
 * itself (EEXIST), but in MINOR mode the contents go into the page cache
 * first, where a write would silently replace what the guest wrote since:
 * so the router keeps an `owned` bit a page (set on every placement, and at
 * start from the VMM's page tables, for pages a previous router placed).
 * Pages the router cached but the source later calls ZERO (zeroed after
 * their precopy) are punched out of the page cache at once: left there,
 * the guest would read the stale copy once the range is unregistered.
 *
 * Memory: the state map (2 bits a page), one bit a page more for owned
 * pages and in MINOR mode one for cached ones, a bounded table of pages
 * with waiting faults, and the connection's buffers.
 *
 * The kernel's userfaultfd is the only source of truth for waiters, so every
 * placement failure ends in a UFFDIO_WAKE or a retry: no waiter is left
 * behind (ENOENT/ESRCH: range gone; EEXIST: present; EAGAIN: the mm is
 * changing, retried once its UFFD events are read).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "faultline/faultline.h"
#include "journal.h"
#include "netaddr.h"
#include "router_test.h"
#include "statemap.h"
#include "tls.h"
#include "uffd_compat.h"
#include "wire.h"

#define ST_CLEAN FAULTLINE__WIRE__PAGE_STATE__PAGE_CLEAN
#define ST_DIRTY FAULTLINE__WIRE__PAGE_STATE__PAGE_DIRTY
#define ST_POISONED FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED
#define ST_ZERO FAULTLINE__WIRE__PAGE_STATE__PAGE_ZERO
_Static_assert((int)FL_PAGE_POISONED == (int)ST_POISONED && (int)FL_PAGE_ZERO == (int)ST_ZERO &&
	       (int)FL_PAGE_DIRTY == (int)ST_DIRTY && (int)FL_PAGE_CLEAN == (int)ST_CLEAN,
	       "public page states are the wire's");

/* Pages with waiting faults; beyond this the router stops reading the uffd
 * (the kernel keeps the rest queued) instead of growing. */
#define PEND_CAP (1u << 16)
#define PEND_MAX (PEND_CAP / 2)
#define MAX_SPANS 256
#define UFFD_BATCH 64

enum {
	P_FAULT_MINOR = 1 << 0,	/* the page cache has a page: CONTINUE resolves the fault */
	P_DATA_ASKED = 1 << 1,
	P_STATE_ASKED = 1 << 2,
	P_RETRY = 1 << 3,		/* placement got EAGAIN: decide again after events */
	P_QUEUED = 1 << 4,		/* in an ask batch not yet sent */
	P_NOWAIT = 1 << 5,		/* no fault waits: data that could not be placed */
};

/* Beyond this many entries, pages without a waiter are not tracked one by
 * one: the router reconnects and the source sends everything again. */
#define PEND_NOWAIT_MAX (PEND_CAP / 4 * 3)
/* A connection whose source has not said Hello by then is half-open. */
#define HELLO_TIMEOUT_NS 5000000000ull
#define BACKOFF_MAX_MS 5000u
/* After the final UNREGISTER, events raised just before it are still
 * queued (a discard's madvise waits until its REMOVE is read): read them
 * until the uffd has been quiet this long. */
#define DRAIN_QUIET_MS 50

struct pend {
	uint64_t key;			/* page_key() + 1; 0: empty slot */
	uint64_t since_ns;		/* first fault seen */
	uint8_t flags;
};

/* Where the VMM has a region's pages mapped; mremap can split a region. */
struct span {
	uint64_t start, len;
	uint32_t region;
	uint64_t first_page;
};

struct rt_region {
	uint64_t length, npages;
	int memfd;
	uint64_t memfd_offset;
	struct fl_statemap map;		/* unknown pages read as DIRTY: ask the source */
	uint64_t frontier;		/* [0, frontier) came from the source's map */
	uint64_t *ask_data, *ask_state;	/* batches of pages to ask, FL_WIRE_MAX_PAGES each */
	size_t n_data, n_state;
	uint64_t *owned;		/* placed for the guest: never written over */
	uint64_t *cached;		/* MINOR: the router put (or found) a copy in the page cache */
};

struct poison_q {
	uint32_t region;
	uint64_t page;
};

struct fl_router {
	struct fl_router_config cfg;
	int uffd;
	uint32_t page_size;
	unsigned nregions;
	struct rt_region reg[FL_WIRE_MAX_REGIONS];
	struct span spans[MAX_SPANS];
	unsigned nspans;

	struct fl_journal journal;
	bool journal_applied;
	uint64_t session;		/* the migration's session; 0: not known yet */
	struct poison_q *pq;		/* pages to poison once their journal records are durable */
	size_t npq, cappq;

	char host[256], port[16];
	struct sockaddr_storage src_addr;	/* resolved once, up front */
	socklen_t src_addrlen;
	unsigned backoff_ms;
	uint64_t hello_deadline_ns;
	struct fl_tls *tls;		/* NULL: plaintext (loopback, or --insecure) */
	struct fl_chan ch;		/* the connection's stream, TLS or not */
	bool resync;			/* lost track of pages to fetch: reconnect */
	int sock;
	bool connecting, hello_done, switchover, src_end, end_sent, unregistered;
	bool ever_switched;		/* a Switchover was seen: precopy is over for good */
	uint64_t next_connect_ns;
	uint64_t connects;
	struct fl_wire_reader rd;
	struct fl_wire_writer wr;
	struct fl_wire_limits lim;
	uint64_t seq;

	struct pend *pend;
	size_t npend;
	bool retry_due;

	int stop_efd;
	bool in_zap;			/* waiting for a zap: faults are deferred */
	bool got_msgs;			/* the last read_uffd() returned messages */
	uint64_t last_msg_ns, spin_ns;
	uint8_t *zero_page;
	uint8_t *fetch_buf;		/* one page for the local provider */
	int fetch_err;
	struct fl_router_stats st;
	char err[256];
};

static void set_err(struct fl_router *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(struct fl_router *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
}

/* ---- per-page bits ---------------------------------------------------------- */

static bool bit_test(const uint64_t *b, uint64_t i)
{
	return b[i / 64] >> (i % 64) & 1;
}

static void bit_put(uint64_t *b, uint64_t i, bool v)
{
	if (v)
		b[i / 64] |= 1ull << (i % 64);
	else
		b[i / 64] &= ~(1ull << (i % 64));
}

static bool owned(const struct fl_router *r, uint32_t region, uint64_t page)
{
	return bit_test(r->reg[region].owned, page);
}

/* ---- pages with waiting faults ------------------------------------------ */

static uint64_t page_key(uint32_t region, uint64_t page)
{
	return ((uint64_t)region << 48 | page) + 1;
}

static size_t pend_slot(uint64_t key)
{
	uint64_t h = key * 0x9e3779b97f4a7c15ull;

	return (size_t)(h >> 48) & (PEND_CAP - 1);
}

static struct pend *pend_find(struct fl_router *r, uint32_t region, uint64_t page)
{
	uint64_t key = page_key(region, page);

	for (size_t i = pend_slot(key);; i = (i + 1) & (PEND_CAP - 1)) {
		if (r->pend[i].key == key)
			return &r->pend[i];
		if (!r->pend[i].key)
			return NULL;
	}
}

static struct pend *pend_get(struct fl_router *r, uint32_t region, uint64_t page, bool *fresh)
{
	uint64_t key = page_key(region, page);
	size_t i;

	for (i = pend_slot(key); r->pend[i].key; i = (i + 1) & (PEND_CAP - 1)) {
		if (r->pend[i].key == key) {
			*fresh = false;
			return &r->pend[i];
		}
	}
	r->pend[i] = (struct pend){ .key = key, .since_ns = fl_now_ns() };
	r->npend++;
	*fresh = true;
	return &r->pend[i];
}

/* Backward-shift deletion keeps probe chains intact without tombstones. */
static void pend_del(struct fl_router *r, struct pend *p)
{
	size_t i = (size_t)(p - r->pend), j = i;

	r->pend[i].key = 0;
	r->npend--;
	for (;;) {
		j = (j + 1) & (PEND_CAP - 1);
		if (!r->pend[j].key)
			return;
		size_t home = pend_slot(r->pend[j].key);

		/* can entry j move to the hole at i? only if i lies in [home, j) cyclically */
		if (((j - home) & (PEND_CAP - 1)) >= ((j - i) & (PEND_CAP - 1))) {
			r->pend[i] = r->pend[j];
			r->pend[j].key = 0;
			i = j;
		}
	}
}

static void pend_done(struct fl_router *r, struct pend *p)
{
	if (!p)
		return;
	if (!(p->flags & P_NOWAIT)) {
		r->st.latency_sum_ns += fl_now_ns() - p->since_ns;
		r->st.latency_n++;
	}
	pend_del(r, p);
}

/* ---- addresses ------------------------------------------------------------ */

static bool addr_to_page(const struct fl_router *r, uint64_t addr, uint32_t *region, uint64_t *page)
{
	for (unsigned i = 0; i < r->nspans; i++) {
		const struct span *s = &r->spans[i];

		if (addr >= s->start && addr - s->start < s->len) {
			*region = s->region;
			*page = s->first_page + (addr - s->start) / r->page_size;
			return true;
		}
	}
	return false;
}

/* 0 when the page is not mapped by the VMM any more (unmapped under us). */
static uint64_t page_to_addr(const struct fl_router *r, uint32_t region, uint64_t page)
{
	for (unsigned i = 0; i < r->nspans; i++) {
		const struct span *s = &r->spans[i];

		if (s->region == region && page >= s->first_page &&
		    (page - s->first_page) * r->page_size < s->len)
			return s->start + (page - s->first_page) * r->page_size;
	}
	return 0;
}

/* ---- userfaultfd operations ---------------------------------------------- */

static int uffd_wake(struct fl_router *r, uint64_t addr)
{
	struct uffdio_range range = { .start = addr, .len = r->page_size };

	if (ioctl(r->uffd, UFFDIO_WAKE, &range) < 0)
		return -errno;
	r->st.wakes++;
	return 0;
}

struct zap_job {
	struct fl_router *r;
	void *addr;
	uint64_t len;
	int efd;
	int result;
};

static void *zap_thread(void *arg)
{
	struct zap_job *j = arg;
	uint64_t one = 1;

	if (j->r->cfg.zap)
		j->result = j->r->cfg.zap(j->r->cfg.zap_ctx, j->addr, j->len);
	else
		j->result = madvise(j->addr, j->len, MADV_DONTNEED) < 0 ? -errno : 0;
	if (write(j->efd, &one, sizeof(one)) < 0)
		j->result = j->result ? j->result : -errno;
	return NULL;
}

static int read_uffd(struct fl_router *r);

/*
 * Zap one page of anonymous guest memory and wait for it, reading UFFD
 * events meanwhile: the VMM's madvise raises UFFD_EVENT_REMOVE and blocks
 * until that is read, so waiting without reading would deadlock.
 */
static int zap_anon(struct fl_router *r, uint64_t addr)
{
	struct zap_job job = { .r = r, .addr = (void *)(uintptr_t)addr, .len = r->page_size, .efd = -1 };
	bool async = r->cfg.zap_finish != NULL;
	uint64_t deadline = fl_now_ns() + 5000000000ull;
	pthread_t thr;
	int wait_fd, ret = 0;

	if (async) {
		ret = r->cfg.zap(r->cfg.zap_ctx, job.addr, job.len);
		if (ret)
			return ret;
		wait_fd = r->cfg.zap_wait_fd;
	} else {
		job.efd = eventfd(0, EFD_CLOEXEC);
		if (job.efd < 0)
			return -errno;
		if (pthread_create(&thr, NULL, zap_thread, &job)) {
			close(job.efd);
			return -EAGAIN;
		}
		wait_fd = job.efd;
	}
	r->in_zap = true;
	for (;;) {
		struct pollfd pfd[2] = { { .fd = wait_fd, .events = POLLIN }, { .fd = r->uffd, .events = POLLIN } };
		uint64_t now = fl_now_ns();

		if (now >= deadline) {
			ret = -ETIMEDOUT;
			break;
		}
		if (poll(pfd, 2, (int)((deadline - now) / 1000000ull) + 1) < 0 && errno != EINTR) {
			ret = -errno;
			break;
		}
		if (pfd[1].revents & POLLIN) {
			ret = read_uffd(r);
			if (ret)
				break;
		}
		if (pfd[0].revents & POLLIN) {
			if (!async) {
				ret = 1;
				break;
			}
			ret = r->cfg.zap_finish(r->cfg.zap_ctx);
			if (ret)
				break;
		}
	}
	r->in_zap = false;
	r->retry_due = true;	/* faults that came in meanwhile */
	if (!async) {
		/* the helper always finishes: madvise returns once its event was read */
		pthread_join(thr, NULL);
		close(job.efd);
		ret = ret == 1 ? job.result : ret;
	}
	return ret == 1 ? 0 : ret;
}

static int do_zap(struct fl_router *r, uint32_t region, uint64_t page, uint64_t addr)
{
	struct rt_region *g = &r->reg[region];

	/* A shared file mapping is zapped in every process by punching the page
	 * out of the file; that also drops the stale page-cache copy. */
	if (g->memfd >= 0) {
		if (fallocate(g->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)(g->memfd_offset + page * r->page_size), r->page_size) < 0)
			return -errno;
		return 0;
	}
	return zap_anon(r, addr);
}

static int uffd_poison(struct fl_router *r, uint32_t region, uint64_t page)
{
	uint64_t addr = page_to_addr(r, region, page);
	struct uffdio_poison p = { .range = { .start = addr, .len = r->page_size } };
	bool zapped = false;
	int ret;

	if (!addr)
		return 0;	/* no longer mapped: nothing can read it */
again:
	if (ioctl(r->uffd, UFFDIO_POISON, &p) == 0) {
		r->st.poisons++;
		if (zapped)
			r->st.poisons_late++;
		return 0;
	}
	switch (errno) {
	case EEXIST:
		/* Mapped already (or carrying a marker): zap, then poison.  A
		 * second EEXIST means a poison marker was there: done. */
		if (zapped)
			return 0;
		ret = do_zap(r, region, page, addr);
		if (ret < 0) {
			set_err(r, "cannot zap page %llu of region %u before poisoning it: %s",
				(unsigned long long)page, region, strerror(-ret));
			return -EIO;
		}
		zapped = true;
		goto again;
	case EAGAIN:
		r->st.eagain++;
		return -EAGAIN;
	case ENOENT:
	case ESRCH:
		r->st.enoent++;
		uffd_wake(r, addr);
		return 0;
	default:
		set_err(r, "UFFDIO_POISON of page %llu of region %u failed: %s",
			(unsigned long long)page, region, strerror(errno));
		return -errno;
	}
}

/* Map result of a placing ioctl: 0 placed / present / gone (waiters woken),
 * -EAGAIN retry later, other negative errno fatal.  Placed or present, the
 * page is the guest's from now on. */
static int placed(struct fl_router *r, int ret_errno, uint32_t region, uint64_t page, uint64_t addr,
		  uint64_t *counter)
{
	switch (ret_errno) {
	case 0:
		(*counter)++;
		bit_put(r->reg[region].owned, page, true);
		return 0;
	case EEXIST:
		r->st.eexist++;
		bit_put(r->reg[region].owned, page, true);
		uffd_wake(r, addr);
		return 0;
	case ENOENT:
	case ESRCH:
		r->st.enoent++;
		uffd_wake(r, addr);
		return 0;
	case EAGAIN:
		r->st.eagain++;
		return -EAGAIN;
	default:
		return -ret_errno;
	}
}

static int uffd_copy(struct fl_router *r, uint32_t region, uint64_t page, uint64_t addr,
		     const void *data)
{
	struct uffdio_copy c = { .dst = addr, .src = (uint64_t)(uintptr_t)data, .len = r->page_size };

	return placed(r, ioctl(r->uffd, UFFDIO_COPY, &c) < 0 ? errno : 0, region, page, addr,
		      &r->st.copies);
}

static int uffd_zeropage(struct fl_router *r, uint32_t region, uint64_t page, uint64_t addr)
{
	struct uffdio_zeropage z = { .range = { .start = addr, .len = r->page_size } };

	return placed(r, ioctl(r->uffd, UFFDIO_ZEROPAGE, &z) < 0 ? errno : 0, region, page, addr,
		      &r->st.zeropages);
}

static int uffd_continue(struct fl_router *r, uint32_t region, uint64_t page, uint64_t addr)
{
	struct uffdio_continue c = { .range = { .start = addr, .len = r->page_size } };

	return placed(r, ioctl(r->uffd, UFFDIO_CONTINUE, &c) < 0 ? errno : 0, region, page, addr,
		      &r->st.continues);
}

/*
 * MINOR mode: put contents into the guest's page cache, unless the guest
 * has the page (1: left alone).  Only an unowned page is safe to write: no
 * mapping of the guest can reach it without a fault the router resolves.
 */
static int cache_write(struct fl_router *r, uint32_t region, uint64_t page, const void *data)
{
	struct rt_region *g = &r->reg[region];
	off_t off = (off_t)(g->memfd_offset + page * r->page_size);

	if (owned(r, region, page)) {
		r->st.kept_guest++;
		return 1;
	}
	if (pwrite(g->memfd, data, r->page_size, off) != (ssize_t)r->page_size) {
		set_err(r, "cannot write page %llu of region %u into the guest's page cache: %s",
			(unsigned long long)page, region, strerror(errno));
		return -EIO;
	}
	bit_put(g->cached, page, true);
	return 0;
}

/*
 * The page is ZERO at the source.  A copy the router cached before (precopy)
 * is stale: punch it out, so the page reads zero when the guest gets it,
 * also after the final UNREGISTER when nobody resolves its faults any more.
 */
static int settle_zero(struct fl_router *r, uint32_t region, uint64_t page)
{
	struct rt_region *g = &r->reg[region];

	if (r->cfg.mode != FL_MODE_MINOR || !bit_test(g->cached, page) || owned(r, region, page))
		return 0;
	if (fallocate(g->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(g->memfd_offset + page * r->page_size), r->page_size) < 0) {
		set_err(r, "cannot drop the stale copy of page %llu of region %u from the page cache: %s",
			(unsigned long long)page, region, strerror(errno));
		return -EIO;
	}
	bit_put(g->cached, page, false);
	r->st.stale_dropped++;
	return 0;
}

/* ---- poison -------------------------------------------------------------- */

/*
 * A page to come back to without a waiting fault (data that met EAGAIN):
 * an entry of the pending table, decided again after the mm settles.  When
 * the table is too full for such pages the router stops tracking them one
 * by one and reconnects, and the source sends everything again.
 */
static void retry_later(struct fl_router *r, uint32_t region, uint64_t page)
{
	struct pend *p = pend_find(r, region, page);
	bool fresh;

	if (!p) {
		if (r->npend >= PEND_NOWAIT_MAX) {
			r->resync = true;
			return;
		}
		p = pend_get(r, region, page, &fresh);
		p->flags |= P_NOWAIT;
	}
	p->flags |= P_RETRY;
	r->retry_due = true;
}

/*
 * Once poisoned, never un-poisoned: poison_mark() journals (buffered) and
 * queues the page, poison_flush() makes the batch durable with one
 * fdatasync and only then places the markers.  `replace`: place the marker
 * even if this page is already known poisoned (a fault on it, or a discard
 * that zapped the marker); otherwise a page already handled is left alone,
 * so repeated news of it costs nothing.
 */
static int poison_mark(struct fl_router *r, uint32_t region, uint64_t page, bool replace)
{
	struct rt_region *g = &r->reg[region];
	int ret;

	if (fl_statemap_get(&g->map, page) == ST_POISONED) {
		if (!replace && !pend_find(r, region, page))
			return 0;
	} else {
		ret = fl_journal_add(&r->journal, region, page);
		if (ret) {
			set_err(r, "cannot journal poison of page %llu: %s", (unsigned long long)page,
				strerror(-ret));
			return ret;
		}
		fl_statemap_set(&g->map, page, ST_POISONED);
	}
	if (r->npq == r->cappq) {
		size_t cap = r->cappq ? 2 * r->cappq : 64;
		struct poison_q *q = realloc(r->pq, cap * sizeof(*q));

		if (!q) {
			set_err(r, "out of memory queueing poison");
			return -ENOMEM;
		}
		r->pq = q;
		r->cappq = cap;
	}
	r->pq[r->npq++] = (struct poison_q){ region, page };
	return 0;
}

static int poison_flush(struct fl_router *r)
{
	int ret = fl_journal_sync(&r->journal);

	if (ret) {
		set_err(r, "cannot make the poison journal durable: %s", strerror(-ret));
		return ret;
	}
	/* uffd_poison may read UFFD events while zapping; those never queue
	 * poison (in_zap defers them), but index, don't hold a pointer. */
	for (size_t i = 0; i < r->npq; i++) {
		struct poison_q q = r->pq[i];

		ret = uffd_poison(r, q.region, q.page);
		if (ret == -EAGAIN) {
			retry_later(r, q.region, q.page);
			continue;
		}
		if (ret) {
			r->npq = 0;
			return ret;
		}
		pend_done(r, pend_find(r, q.region, q.page));
	}
	r->npq = 0;
	return 0;
}

static int poison_page(struct fl_router *r, uint32_t region, uint64_t page, bool replace)
{
	int ret = poison_mark(r, region, page, replace);

	return ret ? ret : poison_flush(r);
}

/* The journal's migration is confirmed: poison what it holds. */
static int journal_apply(struct fl_router *r)
{
	int ret;

	if (r->journal_applied)
		return 0;
	r->journal_applied = true;
	for (size_t i = 0; i < r->journal.nloaded; i++) {
		const struct fl_journal_page *jp = &r->journal.loaded[i];

		fl_statemap_set(&r->reg[jp->region].map, jp->page, ST_POISONED);
		r->st.journal_loaded++;
		ret = poison_mark(r, jp->region, jp->page, true);
		if (ret)
			return ret;
	}
	return poison_flush(r);
}

/* ---- deciding ------------------------------------------------------------ */

/* Past the frontier the map holds DIRTY (unknown), CLEAN for precopied
 * contents that may have gone stale since, and only knowledge otherwise:
 * POISONED, or ZERO (a discard, or the source's answer after switchover;
 * precopy never writes ZERO there). */
static bool state_known(const struct fl_router *r, uint32_t region, uint64_t page)
{
	const struct rt_region *g = &r->reg[region];
	unsigned st = fl_statemap_get(&g->map, page);

	return page < g->frontier || st == ST_POISONED || st == ST_ZERO;
}

static int send_asks(struct fl_router *r, uint32_t region, bool state);
static int decide(struct fl_router *r, uint32_t region, uint64_t page, struct pend *p, int st);

/* A local provider answers at once; its data is placed like the network's. */
static void local_fetch(struct fl_router *r, uint32_t region, uint64_t page, struct pend *p)
{
	int st = r->cfg.fetch(r->cfg.fetch_ctx, region, page, r->fetch_buf);
	uint64_t addr = page_to_addr(r, region, page);
	int ret;

	if (st < 0) {
		set_err(r, "the local page provider failed for page %llu of region %u: %s",
			(unsigned long long)page, region, strerror(-st));
		r->fetch_err = st;
		return;
	}
	if (st != ST_CLEAN && st != ST_DIRTY) {
		fl_statemap_set(&r->reg[region].map, page, (unsigned)st);
		r->fetch_err = st == ST_ZERO ? settle_zero(r, region, page) : 0;
		if (!r->fetch_err)
			r->fetch_err = decide(r, region, page, p, st);
		return;
	}
	r->st.remote_requests++;
	r->st.pages_received++;
	r->st.bytes_received += r->page_size;
	if (r->cfg.mode == FL_MODE_MINOR) {
		ret = cache_write(r, region, page, r->fetch_buf);
		if (ret >= 0) {
			p->flags |= P_FAULT_MINOR;	/* even if it faulted as MISSING */
			ret = decide(r, region, page, p, ST_CLEAN);
		}
	} else {
		ret = uffd_copy(r, region, page, addr, r->fetch_buf);
		if (ret == -EAGAIN) {
			p->flags |= P_RETRY;
			r->retry_due = true;
			ret = 0;
		} else if (!ret) {
			pend_done(r, p);
		}
	}
	if (ret)
		r->fetch_err = ret;
}

static void ask(struct fl_router *r, uint32_t region, uint64_t page, struct pend *p, bool state_only)
{
	struct rt_region *g = &r->reg[region];

	if (p->flags & (P_DATA_ASKED | (state_only ? P_STATE_ASKED : 0)))
		return;
	if (r->cfg.fetch) {
		local_fetch(r, region, page, p);
		return;
	}
	/* Not connected, or the source VM still running (its pages still
	 * changing): redecide_all() asks once the Switchover arrives. */
	if (!r->hello_done || !r->switchover)
		return;
	if ((state_only ? g->n_state : g->n_data) == FL_WIRE_MAX_PAGES)
		send_asks(r, region, state_only);
	if (state_only) {
		p->flags |= P_STATE_ASKED;
		g->ask_state[g->n_state++] = page;
		r->st.state_queries++;
	} else {
		p->flags |= P_DATA_ASKED;
		g->ask_data[g->n_data++] = page;
		r->st.remote_requests++;
	}
	p->flags |= P_QUEUED;
}


/* Resolve what we can now for a page with a waiting fault; `st` is the
 * state to act on (-1: look it up). */
static int decide(struct fl_router *r, uint32_t region, uint64_t page, struct pend *p, int st)
{
	bool minor_fault = p->flags & P_FAULT_MINOR;
	uint64_t addr = page_to_addr(r, region, page);
	int ret;

	p->flags &= (uint8_t)~P_RETRY;
	if (!addr) {
		pend_done(r, p);
		return 0;
	}
	if (st < 0 && state_known(r, region, page))
		st = (int)fl_statemap_get(&r->reg[region].map, page);
	if (st == ST_POISONED)
		return poison_page(r, region, page, true);
	if (owned(r, region, page)) {
		/* The guest's page left its page tables (MADV_DONTNEED of shared
		 * memory) but its contents stay in the page cache: map them back.
		 * A MISSING fault means they went too (punched): no longer owned. */
		if (minor_fault && r->cfg.mode == FL_MODE_MINOR) {
			ret = uffd_continue(r, region, page, addr);
			goto out;
		}
		bit_put(r->reg[region].owned, page, false);
	}
	switch (st) {
	case ST_ZERO:
		if (minor_fault) {
			ret = cache_write(r, region, page, r->zero_page);
			if (ret >= 0)
				ret = uffd_continue(r, region, page, addr);
		} else {
			ret = uffd_zeropage(r, region, page, addr);
		}
		break;
	case ST_CLEAN:
		if (minor_fault && r->cfg.mode == FL_MODE_MINOR) {
			ret = uffd_continue(r, region, page, addr);
			break;
		}
		/* the page has to come from the source */
		__attribute__((fallthrough));
	case ST_DIRTY:
		ask(r, region, page, p, false);
		return 0;
	default:
		ask(r, region, page, p, minor_fault && r->cfg.mode == FL_MODE_MINOR);
		return 0;
	}
out:
	if (ret == -EAGAIN) {
		p->flags |= P_RETRY;
		r->retry_due = true;
		return 0;
	}
	if (!ret)
		pend_done(r, p);
	return ret;
}

/* ---- userfaultfd messages --------------------------------------------------- */

static int on_pagefault(struct fl_router *r, const struct uffd_msg *m)
{
	uint64_t addr = m->arg.pagefault.address & ~((uint64_t)r->page_size - 1);
	uint32_t region;
	uint64_t page;
	struct pend *p;
	bool fresh;

	r->st.fault_messages++;
	if (!addr_to_page(r, addr, &region, &page)) {
		/* Not ours (a range the VMM registered and did not hand over):
		 * waking lets it re-fault rather than hang silently. */
		uffd_wake(r, addr);
		return 0;
	}
	p = pend_get(r, region, page, &fresh);
	if (fresh)
		r->st.faults++;
	if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_MINOR)
		p->flags |= P_FAULT_MINOR;
	if (r->in_zap) {
		p->flags |= P_RETRY;	/* decided once the zap is over */
		return 0;
	}
	if (!fresh && (p->flags & (P_DATA_ASKED | P_STATE_ASKED)))
		return 0;	/* another thread on the same page: the answer wakes both */
	return decide(r, region, page, p, -1);
}

static void span_remove(struct fl_router *r, uint64_t start, uint64_t end)
{
	struct span out[MAX_SPANS];
	unsigned n = 0;

	for (unsigned i = 0; i < r->nspans && n < MAX_SPANS; i++) {
		struct span s = r->spans[i];
		uint64_t s_end = s.start + s.len;

		if (end <= s.start || start >= s_end) {
			out[n++] = s;
			continue;
		}
		if (s.start < start)
			out[n++] = (struct span){ s.start, start - s.start, s.region, s.first_page };
		if (end < s_end && n < MAX_SPANS)
			out[n++] = (struct span){ end, s_end - end, s.region,
						  s.first_page + (end - s.start) / r->page_size };
	}
	memcpy(r->spans, out, n * sizeof(out[0]));
	r->nspans = n;
}

static void on_remap(struct fl_router *r, uint64_t from, uint64_t to, uint64_t len)
{
	struct span moved[MAX_SPANS];
	unsigned n = 0;

	/* Collect the pieces of [from, from+len) we route, then re-add them at `to`. */
	for (unsigned i = 0; i < r->nspans; i++) {
		const struct span *s = &r->spans[i];
		uint64_t lo = s->start > from ? s->start : from;
		uint64_t hi = s->start + s->len < from + len ? s->start + s->len : from + len;

		if (lo >= hi)
			continue;
		moved[n++] = (struct span){ to + (lo - from), hi - lo, s->region,
					    s->first_page + (lo - s->start) / r->page_size };
	}
	span_remove(r, from, from + len);
	span_remove(r, to, to + len);
	for (unsigned i = 0; i < n && r->nspans < MAX_SPANS; i++)
		r->spans[r->nspans++] = moved[i];
}

/* Pages dropped by the VMM (MADV_DONTNEED/REMOVE: balloon, discard) read as
 * zero from now on — except poisoned ones, whose marker the zap removed. */
static int on_remove(struct fl_router *r, uint64_t start, uint64_t end)
{
	for (uint64_t a = start; a < end; a += r->page_size) {
		uint32_t region;
		uint64_t page;
		struct pend *p;

		if (!addr_to_page(r, a, &region, &page))
			continue;
		if (fl_statemap_get(&r->reg[region].map, page) == ST_POISONED) {
			int ret;

			if (r->in_zap) {
				/* re-poisoned when the zap in progress is over */
				retry_later(r, region, page);
				continue;
			}
			ret = poison_page(r, region, page, true);

			if (ret)
				return ret;
			continue;
		}
		/* ZERO is sticky (state_known, on_state_map): later faults are
		 * zero-filled without asking, late data and a map chunk calling
		 * the page DIRTY are ignored.  The source never hears of it. */
		fl_statemap_set(&r->reg[region].map, page, ST_ZERO);
		/* Anonymous memory lost its contents.  Shared memory may keep them
		 * in the page cache (MADV_DONTNEED unmaps only): a page the guest
		 * owned stays owned, and its next MINOR fault maps it back. */
		if (r->cfg.mode != FL_MODE_MINOR)
			bit_put(r->reg[region].owned, page, false);
		else if (settle_zero(r, region, page))
			return -EIO;
		/* A fault waiting on the source for it need not wait any more. */
		p = pend_find(r, region, page);
		if (p) {
			p->flags |= P_RETRY;
			r->retry_due = true;
		}
	}
	return 0;
}

/*
 * Threads blocked on a range that was unmapped or moved away are not woken
 * by the kernel, and nothing the router places later wakes them (the range
 * is gone, or the pages land at the new address): wake them now, so they
 * fault again and see what the VMM did (SIGSEGV if nothing is mapped there).
 */
static void wake_range(struct fl_router *r, uint64_t start, uint64_t end)
{
	struct uffdio_range range = { .start = start, .len = end - start };

	if (end > start && ioctl(r->uffd, UFFDIO_WAKE, &range) == 0)
		r->st.wakes++;
}

static int on_uffd_msg(struct fl_router *r, const struct uffd_msg *m)
{
	switch (m->event) {
	case UFFD_EVENT_PAGEFAULT:
		return on_pagefault(r, m);
	case UFFD_EVENT_REMOVE:
		r->st.events++;
		return on_remove(r, m->arg.remove.start, m->arg.remove.end);
	case UFFD_EVENT_UNMAP:
		r->st.events++;
		span_remove(r, m->arg.remove.start, m->arg.remove.end);
		wake_range(r, m->arg.remove.start, m->arg.remove.end);
		return 0;
	case UFFD_EVENT_REMAP:
		r->st.events++;
		on_remap(r, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
		wake_range(r, m->arg.remap.from, m->arg.remap.from + m->arg.remap.len);
		return 0;
	case UFFD_EVENT_FORK:
		/* A forked child's copy of guest memory is not migrated by us:
		 * closing its uffd unregisters it, and wakes it if it waits.
		 * (An embedded router cannot serve a VMM forking with glibc's
		 * fork(): that holds the malloc locks until this event is read,
		 * and the router may be inside malloc().  posix_spawn/vfork raise
		 * no FORK event.) */
		r->st.events++;
		close((int)m->arg.fork.ufd);
		return 0;
	default:
		return 0;
	}
}

static int retry_pending(struct fl_router *r)
{
	if (r->in_zap)
		return 0;
	r->retry_due = false;
	for (size_t i = 0; r->npend && i < PEND_CAP; i++) {
		struct pend *p = &r->pend[i];

		if (!p->key || !(p->flags & P_RETRY))
			continue;
		uint64_t k = p->key - 1;
		uint32_t region = (uint32_t)(k >> 48);
		uint64_t page = k & ((1ull << 48) - 1);
		int ret;

		p->flags &= (uint8_t)~(P_RETRY | P_DATA_ASKED | P_STATE_ASKED);
		ret = decide(r, region, page, p, -1);
		if (ret)
			return ret;
		/* pend_del may have shifted a later entry into slot i */
		if (r->pend[i].key && r->pend[i].key != k + 1)
			i--;
	}
	return 0;
}

static int read_uffd(struct fl_router *r)
{
	struct uffd_msg msgs[UFFD_BATCH];
	ssize_t n = read(r->uffd, msgs, sizeof(msgs));
	bool events = false;
	int ret;

	r->got_msgs = n > 0;
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -errno;
	r->last_msg_ns = fl_now_ns();
	for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
		if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
			events = true;
		ret = on_uffd_msg(r, &msgs[i]);
		if (ret)
			return ret;
	}
	/* EAGAIN placements were waiting for exactly these events to be read. */
	if (!r->in_zap && (events || r->retry_due))
		return retry_pending(r);
	return 0;
}

/* ---- the source connection ---------------------------------------------- */

static void put_frame(struct fl_router *r, fl_frame *f)
{
	int ret = fl_wire_put(&r->wr, f);

	if (ret)
		set_err(r, "cannot queue a frame for the source: %s", strerror(-ret));
}

static int send_asks(struct fl_router *r, uint32_t region, bool state)
{
	struct rt_region *g = &r->reg[region];
	uint64_t *pages = state ? g->ask_state : g->ask_data;
	size_t *n = state ? &g->n_state : &g->n_data;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	if (!*n || !r->hello_done)
		return 0;
	if (state) {
		Faultline__Wire__StateQuery q = FAULTLINE__WIRE__STATE_QUERY__INIT;

		q.seq = ++r->seq;
		q.region = region;
		q.n_pages = *n;
		q.pages = pages;
		f.body_case = FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY;
		f.state_query = &q;
		put_frame(r, &f);
	} else {
		Faultline__Wire__PageRequest q = FAULTLINE__WIRE__PAGE_REQUEST__INIT;

		q.seq = ++r->seq;
		q.region = region;
		q.n_pages = *n;
		q.pages = pages;
		f.body_case = FAULTLINE__WIRE__FRAME__BODY_PAGE_REQUEST;
		f.page_request = &q;
		put_frame(r, &f);
	}
	for (size_t i = 0; i < *n; i++) {
		struct pend *p = pend_find(r, region, pages[i]);

		if (p)
			p->flags &= (uint8_t)~P_QUEUED;
	}
	*n = 0;
	return 0;
}

static int flush_asks(struct fl_router *r)
{
	for (unsigned i = 0; i < r->nregions; i++) {
		send_asks(r, i, false);
		send_asks(r, i, true);
	}
	return 0;
}

static void conn_close(struct fl_router *r)
{
	fl_chan_end(&r->ch);
	if (r->sock >= 0)
		close(r->sock);
	r->sock = -1;
	r->connecting = r->hello_done = false;
	r->st.connected = 0;
	fl_wire_reader_free(&r->rd);
	fl_wire_writer_free(&r->wr);
	fl_wire_reader_init(&r->rd);
	fl_wire_writer_init(&r->wr);
	/* Whatever was asked is lost with the connection: ask again later. */
	for (unsigned i = 0; i < r->nregions; i++)
		r->reg[i].n_data = r->reg[i].n_state = 0;
	for (size_t i = 0; r->npend && i < PEND_CAP; i++)
		if (r->pend[i].key)
			r->pend[i].flags &= (uint8_t)~(P_DATA_ASKED | P_STATE_ASKED | P_QUEUED);
	/* Back off while the source keeps failing (refused, busy with the old
	 * connection, errors); a connection that got as far as Hello resets it. */
	r->next_connect_ns = fl_now_ns() + (uint64_t)r->backoff_ms * 1000000ull;
	r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* Resolved once, before the migration starts: a DNS outage later must not
 * stall the fault path (getaddrinfo blocks) or end the migration. */
static int resolve_source(struct fl_router *r, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	int ret;

	for (int attempt = 0;; attempt++) {
		ret = getaddrinfo(r->host, r->port, &hints, &ai);
		if (ret != EAI_AGAIN || attempt == 20)
			break;
		usleep(250000);
	}
	if (ret) {
		snprintf(err, errlen, "cannot resolve source %s:%s: %s", r->host, r->port,
			 ret == EAI_SYSTEM ? strerror(errno) : gai_strerror(ret));
		return -EHOSTUNREACH;
	}
	memcpy(&r->src_addr, ai->ai_addr, ai->ai_addrlen);
	r->src_addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int conn_start(struct fl_router *r)
{
	int one = 1, idle = 5, intvl = 2, cnt = 3;
	unsigned user_timeout_ms = 15000;

	r->sock = socket(r->src_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (r->sock < 0) {
		conn_close(r);
		return 0;	/* fd or memory pressure: retried after the back-off */
	}
	setsockopt(r->sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* A source host that vanishes without a FIN (power, partition) must not
	 * leave the guest waiting on a dead connection for TCP's 15 minutes. */
	setsockopt(r->sock, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(r->sock, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(r->sock, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(r->sock, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(r->sock, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
	if (connect(r->sock, (struct sockaddr *)&r->src_addr, r->src_addrlen) < 0 &&
	    errno != EINPROGRESS) {
		conn_close(r);
		return 0;	/* retried after the back-off */
	}
	r->connecting = true;
	r->hello_deadline_ns = fl_now_ns() + HELLO_TIMEOUT_NS;
	return 0;
}

static void send_hello(struct fl_router *r)
{
	Faultline__Wire__Hello h = FAULTLINE__WIRE__HELLO__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	h.version = FL_WIRE_VERSION;
	h.role = "target";
	h.page_size = r->page_size;
	/* Precopy only before the switchover: after it the page cache already
	 * holds what precopy delivered and the dirty map says what is stale. */
	h.want_precopy = r->cfg.mode == FL_MODE_MINOR && !r->ever_switched && r->connects == 0 &&
			 !r->journal.session;
	/* A resume names the migration this router took part in (the source
	 * refuses any other).  A journal alone proves nothing: it may be
	 * another migration's, which the source's Hello will tell. */
	h.resume = r->connects > 0;
	h.session = r->session;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO;
	f.hello = &h;
	put_frame(r, &f);
}

static int on_source_hello(struct fl_router *r, const Faultline__Wire__Hello *h)
{
	char err[200] = "";
	int ret;

	if (strcmp(h->role, "source")) {
		set_err(r, "peer at %s:%s is a \"%s\", not a faultline source", r->host, r->port, h->role);
		return -EPROTO;
	}
	ret = fl_wire_limits_from_hello(&r->lim, h, err, sizeof(err));
	if (ret) {
		set_err(r, "source hello refused: %s", err);
		return ret;
	}
	if (h->page_size != r->page_size || h->n_regions != r->nregions) {
		set_err(r, "source serves %zu regions of %u-byte pages; the VMM handed over %u of %u",
			h->n_regions, h->page_size, r->nregions, r->page_size);
		return -EINVAL;
	}
	for (unsigned i = 0; i < r->nregions; i++) {
		/* by id, as the limits every later frame is checked against */
		if ((uint64_t)r->lim.region_pages[i] * r->lim.page_size != r->reg[i].length) {
			set_err(r, "region %u is %llu bytes on the source but %llu on the target", i,
				(unsigned long long)r->lim.region_pages[i] * r->lim.page_size,
				(unsigned long long)r->reg[i].length);
			return -EINVAL;
		}
	}
	/* Fatal, and nothing applied: a new router (or the right source) can
	 * take over the VMM's uffd as it is. */
	if (r->session && h->session != r->session) {
		set_err(r, "the source at %s:%s serves migration session %016" PRIx64 ", but this "
			"migration is session %016" PRIx64 " (a restarted source needs --session %016"
			PRIx64 ")", r->host, r->port, h->session, r->session, r->session);
		return -ESTALE;
	}
	ret = fl_journal_session(&r->journal, h->session);
	if (ret == -ESTALE) {
		set_err(r, "the poison journal belongs to another migration (session %016" PRIx64
			", the source serves %016" PRIx64 "); nothing of it was applied: move it away",
			r->journal.session, h->session);
		return ret;
	}
	if (ret) {
		set_err(r, "cannot journal the migration session: %s", strerror(-ret));
		return ret;
	}
	r->session = h->session;
	r->src_end = false;	/* this connection sends its own End */
	ret = journal_apply(r);
	if (ret)
		return ret;
	r->hello_done = true;
	r->st.connected = 1;
	r->backoff_ms = r->cfg.reconnect_ms ? r->cfg.reconnect_ms : 200;
	if (r->connects++)
		r->st.reconnects++;
	/* Every connection announces its own Switchover (also on resume). */
	r->switchover = false;
	return 0;
}

/* Decide every waiting page again: after a (re)connection's Switchover. */
static int redecide_all(struct fl_router *r)
{
	for (size_t i = 0; r->npend && i < PEND_CAP; i++) {
		struct pend *p = &r->pend[i];

		if (!p->key)
			continue;
		uint64_t k = p->key - 1;
		int ret = decide(r, (uint32_t)(k >> 48), k & ((1ull << 48) - 1), p, -1);

		if (ret)
			return ret;
		if (r->pend[i].key && r->pend[i].key != k + 1)
			i--;
	}
	return 0;
}

static int on_page_data(struct fl_router *r, const Faultline__Wire__PageData *d)
{
	const uint8_t *data = d->data.data;
	uint32_t region = d->region;
	struct rt_region *g = &r->reg[region];

	for (size_t i = 0; i < d->n_pages; i++) {
		uint64_t page = d->pages[i];
		unsigned st = fl_wire_state_at(d->states.data, i);
		const uint8_t *bytes = NULL;
		struct pend *p = pend_find(r, region, page);
		int ret = 0;

		if (st == ST_CLEAN || st == ST_DIRTY) {
			bytes = data;
			data += r->page_size;
			r->st.pages_received++;
			r->st.bytes_received += r->page_size;
		}
		if (st == ST_POISONED || fl_statemap_get(&g->map, page) == ST_POISONED) {
			if (bytes)
				r->st.refused_data++;
			ret = poison_mark(r, region, page, false);
			if (ret)
				return ret;
			continue;
		}
		if (p)
			p->flags &= (uint8_t)~(P_DATA_ASKED | P_STATE_ASKED);
		uint64_t addr = page_to_addr(r, region, page);

		if (bytes && fl_statemap_get(&g->map, page) == ST_ZERO) {
			/* discarded by the VMM (REMOVE): late data must not revive it */
			bytes = NULL;
		}
		if (!bytes) {	/* ZERO */
			/* precopy's word is not final: the map may call it DIRTY later */
			if (page >= g->frontier && !d->precopy)
				fl_statemap_set(&g->map, page, ST_ZERO);
			if (!d->precopy)
				ret = settle_zero(r, region, page);
			if (!ret && p && !d->precopy)
				ret = decide(r, region, page, p, ST_ZERO);
		} else if (r->cfg.mode == FL_MODE_MINOR) {
			ret = cache_write(r, region, page, bytes);
			if (ret > 0) {
				/* the guest has it: its own writes stand */
				ret = p && !d->precopy ? decide(r, region, page, p, -1) : 0;
			} else if (!ret) {
				/* The page cache now holds the final contents: CONTINUE
				 * resolves the fault, also a MISSING one (the page was not
				 * cached); asking again would loop. */
				fl_statemap_set(&g->map, page, ST_CLEAN);
				/* ...unless it is precopy: that may go stale before the
				 * switchover, a waiter is decided by the map or a query. */
				if (p && !d->precopy) {
					p->flags |= P_FAULT_MINOR;
					ret = decide(r, region, page, p, ST_CLEAN);
				}
			}
		} else if (d->precopy) {
			continue;	/* MISSING mode never asked for precopy */
		} else if (owned(r, region, page)) {
			r->st.kept_guest++;	/* placed already: the kernel would say EEXIST */
			pend_done(r, p);
		} else if (addr) {
			ret = uffd_copy(r, region, page, addr, bytes);
			if (ret == -EAGAIN) {
				/* The data is not kept: ask again once the mm settles,
				 * also for a page nobody waits for (a background push),
				 * or the page would be missing when the migration ends. */
				ret = 0;
				retry_later(r, region, page);
			} else if (!ret && p) {
				pend_done(r, p);
			}
		} else if (p) {
			pend_done(r, p);
		}
		if (ret)
			return ret;
	}
	return poison_flush(r);
}

static int on_state_answer(struct fl_router *r, const Faultline__Wire__StateAnswer *a)
{
	struct rt_region *g = &r->reg[a->region];

	for (size_t i = 0; i < a->n_pages; i++) {
		uint64_t page = a->pages[i];
		unsigned st = fl_wire_state_at(a->states.data, i);
		struct pend *p = pend_find(r, a->region, page);
		int ret = 0;

		if (st == ST_POISONED) {
			ret = poison_mark(r, a->region, page, false);
		} else if (p) {
			unsigned known = fl_statemap_get(&g->map, page);

			p->flags &= (uint8_t)~P_STATE_ASKED;
			/* poisoned or discarded meanwhile */
			if (known == ST_POISONED || known == ST_ZERO)
				st = known;
			if (st == ST_ZERO)
				ret = settle_zero(r, a->region, page);
			if (!ret)
				ret = decide(r, a->region, page, p, (int)st);
		}
		if (ret)
			return ret;
	}
	return poison_flush(r);
}

/* Per byte of the map: which of its four pages are in state `st`. */
static uint8_t state_lanes(uint8_t b, unsigned st)
{
	uint8_t m = 0;

	for (int l = 0; l < 4; l++)
		if (((b >> (2 * l)) & 3) == st)
			m |= (uint8_t)(3u << (2 * l));
	return m;
}

static int on_state_map(struct fl_router *r, const Faultline__Wire__StateMapChunk *c)
{
	struct rt_region *g = &r->reg[c->region];
	struct fl_statemap chunk;
	int ret;

	if (c->first_page > g->frontier) {
		set_err(r, "state map chunk of region %u starts at page %llu past the %llu received so far",
			c->region, (unsigned long long)c->first_page, (unsigned long long)g->frontier);
		return -EPROTO;
	}
	ret = fl_statemap_init(&chunk, c->npages, ST_DIRTY);
	if (ret)
		return ret;
	ret = fl_statemap_decode(&chunk, 0, c->npages, c->zdata.data, c->zdata.len);
	if (ret) {
		set_err(r, "state map chunk of region %u at page %llu is corrupt", c->region,
			(unsigned long long)c->first_page);
		fl_statemap_free(&chunk);
		return ret;
	}
	/* Poison (and journal) every page the chunk names before merging, so no
	 * fault decided from the merged map can see it un-poisoned. */
	for (size_t i = 0; i < (c->npages + 3) / 4; i++) {
		if (!state_lanes(chunk.bits[i], ST_POISONED))
			continue;
		for (uint64_t pg = i * 4; pg < i * 4 + 4 && pg < c->npages; pg++) {
			if (fl_statemap_get(&chunk, pg) != ST_POISONED)
				continue;
			ret = poison_mark(r, c->region, c->first_page + pg, false);
			if (ret) {
				fl_statemap_free(&chunk);
				return ret;
			}
		}
	}
	ret = poison_flush(r);
	if (ret) {
		fl_statemap_free(&chunk);
		return ret;
	}
	/* Merge byte-wise: poison and zero already known here stay, whatever the
	 * chunk says (the source knows nothing of the VMM's discards). */
	uint8_t *dst = &g->map.bits[c->first_page / 4];
	size_t nbytes = (size_t)(c->npages / 4);

	for (size_t i = 0; i < nbytes; i++) {
		uint8_t keep = state_lanes(dst[i], ST_POISONED) | state_lanes(dst[i], ST_ZERO);

		dst[i] = (uint8_t)((dst[i] & keep) | (chunk.bits[i] & ~keep));
	}
	for (uint64_t pg = nbytes * 4; pg < c->npages; pg++) {
		unsigned cur = fl_statemap_get(&g->map, c->first_page + pg);

		if (cur != ST_POISONED && cur != ST_ZERO)
			fl_statemap_set(&g->map, c->first_page + pg, fl_statemap_get(&chunk, pg));
	}
	/* Cached copies of pages that went zero at the source since: stale. */
	for (uint64_t pg = 0; r->cfg.mode == FL_MODE_MINOR && pg < c->npages; pg++) {
		uint64_t page = c->first_page + pg;

		if (!(page % 64) && !g->cached[page / 64] && pg + 64 <= c->npages) {
			pg += 63;	/* nothing cached in these 64 */
			continue;
		}
		if (fl_statemap_get(&g->map, page) == ST_ZERO) {
			ret = settle_zero(r, c->region, page);
			if (ret) {
				fl_statemap_free(&chunk);
				return ret;
			}
		}
	}
	if (c->first_page + c->npages > g->frontier)
		g->frontier = c->first_page + c->npages;
	r->st.map_pages_known = 0;
	for (unsigned i = 0; i < r->nregions; i++)
		r->st.map_pages_known += r->reg[i].frontier;
	fl_statemap_free(&chunk);
	/* Waiting faults on pages that are now known can be decided locally. */
	for (size_t i = 0; r->npend && i < PEND_CAP; i++) {
		struct pend *p = &r->pend[i];

		if (!p->key || (p->flags & P_DATA_ASKED))
			continue;
		uint64_t k = p->key - 1;

		if ((uint32_t)(k >> 48) != c->region || (k & ((1ull << 48) - 1)) < c->first_page ||
		    (k & ((1ull << 48) - 1)) >= c->first_page + c->npages)
			continue;
		ret = decide(r, c->region, k & ((1ull << 48) - 1), p, -1);
		if (ret)
			return ret;
		if (r->pend[i].key && r->pend[i].key != k + 1)
			i--;
	}
	return 0;
}

static int on_frame(struct fl_router *r, const fl_frame *f)
{
	switch (f->body_case) {
	case FAULTLINE__WIRE__FRAME__BODY_HELLO:
		return on_source_hello(r, f->hello);
	default:
		break;
	}
	if (!r->hello_done && f->body_case != FAULTLINE__WIRE__FRAME__BODY_ERROR) {
		set_err(r, "source sent frame %d before its hello", f->body_case);
		return -EPROTO;
	}
	switch (f->body_case) {
	case FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA:
		return on_page_data(r, f->page_data);
	case FAULTLINE__WIRE__FRAME__BODY_STATE_ANSWER:
		return on_state_answer(r, f->state_answer);
	case FAULTLINE__WIRE__FRAME__BODY_STATE_MAP:
		return on_state_map(r, f->state_map);
	case FAULTLINE__WIRE__FRAME__BODY_POISON:
		for (size_t i = 0; i < f->poison->n_pages; i++) {
			int ret = poison_mark(r, f->poison->region, f->poison->pages[i], false);

			if (ret)
				return ret;
		}
		return poison_flush(r);
	case FAULTLINE__WIRE__FRAME__BODY_PRECOPY_DONE:
		return 0;
	case FAULTLINE__WIRE__FRAME__BODY_SWITCHOVER:
		r->switchover = true;
		r->ever_switched = true;
		return redecide_all(r);
	case FAULTLINE__WIRE__FRAME__BODY_END:
		r->src_end = true;
		r->st.source_end = 1;
		return 0;
	case FAULTLINE__WIRE__FRAME__BODY_ERROR:
		/* EBUSY (the source still holds our old connection), a source
		 * restarting, a refusal of something we sent: none of it ends a
		 * live migration.  Said, then retried with back-off. */
		set_err(r, "source reported an error: %s (%s); reconnecting", f->error->text,
			strerror((int)f->error->code));
		return -ECONNRESET;
	default:
		set_err(r, "unexpected frame %d from the source", f->body_case);
		return -EPROTO;
	}
}

static void send_error(struct fl_router *r, int code, const char *text)
{
	Faultline__Wire__Error e = FAULTLINE__WIRE__ERROR__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	e.code = (uint32_t)code;
	e.text = (char *)text;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_ERROR;
	f.error = &e;
	if (!r->ch.handshaking && !fl_wire_put(&r->wr, &f))
		fl_wire_flush_io(&r->wr, &r->ch.io);
}

/* <0 only for errors that end the migration; a broken connection just
 * reconnects. */
static int on_sock(struct fl_router *r, short revents)
{
	if (r->connecting) {
		int soerr = 0;
		socklen_t len = sizeof(soerr);

		if (!(revents & (POLLOUT | POLLERR | POLLHUP)))
			return 0;
		getsockopt(r->sock, SOL_SOCKET, SO_ERROR, &soerr, &len);
		if (soerr) {
			conn_close(r);
			return 0;
		}
		r->connecting = false;
		if (fl_chan_start(&r->ch, r->tls, r->sock, false, r->host, r->err, sizeof(r->err))) {
			conn_close(r);
			return 0;
		}
		if (!r->ch.handshaking)
			send_hello(r);
	}
	if (r->ch.handshaking) {
		char err[200] = "";
		int ret = fl_chan_handshake(&r->ch, err, sizeof(err));

		if (ret == -EAGAIN)
			return 0;
		if (ret) {
			/* wrong CA, wrong key, an impostor: said, retried after the
			 * back-off (the operator may fix the files meanwhile) */
			set_err(r, "source %s:%s: %s; retrying", r->host, r->port, err);
			conn_close(r);
			return 0;
		}
		send_hello(r);
		revents |= POLLIN;	/* records may have come with the handshake */
	}
	while (revents & (POLLIN | POLLHUP | POLLERR)) {
		ssize_t n = fl_wire_reader_fill_io(&r->rd, &r->ch.io);
		char err[200] = "";
		fl_frame *f;
		int ret;

		while ((ret = fl_wire_next(&r->rd, r->hello_done ? &r->lim : NULL, &f, err, sizeof(err))) > 0) {
			ret = on_frame(r, f);
			fl_wire_free(f);
			if (ret == -EPROTO) {
				send_error(r, EPROTO, r->err);
				conn_close(r);
				return 0;
			}
			if (ret == -ECONNRESET) {
				conn_close(r);
				return 0;
			}
			if (ret)
				return ret;
		}
		if (ret < 0) {
			/* A malformed frame: say why, drop the connection, reconnect;
			 * everything accepted so far stays applied. */
			set_err(r, "malformed frame from the source: %s", err);
			send_error(r, -ret, err);
			conn_close(r);
			return 0;
		}
		if (n <= 0 && n != -EAGAIN && n != -ENOBUFS) {
			if (!r->src_end)
				set_err(r, "lost the source connection (%s)", n ? strerror((int)-n) : "closed");
			conn_close(r);
			return 0;
		}
		/* TLS may hold decrypted records poll() knows nothing of */
		if (r->sock < 0 || !fl_chan_buffered(&r->ch))
			break;
	}
	return 0;
}

/*
 * Fuzzing and tests (src/migrate/router_test.h): `len` bytes arrive from the source
 * on a fresh plaintext connection, as if after a connect, and are handled
 * exactly as on_sock() handles a real one.  Returns what on_sock() would
 * make the router return (0: carry on, <0: the router ends).
 */
int fl_router_test_feed(struct fl_router *r, const uint8_t *data, size_t len)
{
	int sv[2], ret = 0;
	size_t off = 0;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	conn_close(r);
	r->sock = sv[0];
	r->connecting = true;
	ret = on_sock(r, POLLOUT);	/* connected: plaintext channel, our Hello queued */
	while (!ret && r->sock >= 0) {
		ssize_t k = off < len ? write(sv[1], data + off, len - off) : 0;

		if (k > 0)
			off += (size_t)k;
		if (off == len)
			shutdown(sv[1], SHUT_WR);
		ret = on_sock(r, POLLIN);
		if (r->sock >= 0 && fl_wire_pending(&r->wr))
			fl_wire_flush_io(&r->wr, &r->ch.io);
		/* drain what the router sent, or the socket fills up */
		char sink[4096];

		while (read(sv[1], sink, sizeof(sink)) > 0)
			;
		if (off == len && k <= 0 && r->sock >= 0) {
			ret = on_sock(r, POLLIN | POLLHUP);
			break;
		}
	}
	if (r->sock >= 0)
		conn_close(r);
	close(sv[1]);
	return ret;
}

/* ---- finishing ------------------------------------------------------------- */

/* Everything the source had is placed, cached or declared: unregister so
 * the guest runs free of the router (zero pages fill themselves, poison
 * markers stay in the page tables). */
static int finish(struct fl_router *r)
{
	for (unsigned i = 0; i < r->nspans; i++) {
		struct uffdio_range range = { .start = r->spans[i].start, .len = r->spans[i].len };

		if (ioctl(r->uffd, UFFDIO_UNREGISTER, &range) < 0 && errno != EINVAL && errno != ENOMEM) {
			set_err(r, "cannot unregister the guest memory at the end: %s", strerror(errno));
			return -errno;
		}
		/* UNREGISTER wakes the range's waiters before it write-locks the
		 * VMA: a fault taken under the per-VMA lock can queue itself in
		 * between and would wait for ever, nobody reading the uffd after
		 * this (seen on 6.18).  Once UNREGISTER has returned, every such
		 * fault is queued: wake them to fault again, unregistered. */
		ioctl(r->uffd, UFFDIO_WAKE, &range);
	}
	r->unregistered = true;
	/* A discard raised around now waits in madvise() until its event is
	 * read, and nobody reads this uffd after us: read until it is quiet. */
	for (uint64_t quiet_until = fl_now_ns() + DRAIN_QUIET_MS * 1000000ull; fl_now_ns() < quiet_until;) {
		struct pollfd pfd = { .fd = r->uffd, .events = POLLIN };

		if (poll(&pfd, 1, DRAIN_QUIET_MS) > 0 && (pfd.revents & POLLIN)) {
			read_uffd(r);	/* placements fail with ENOENT now and wake */
			if (r->got_msgs)
				quiet_until = fl_now_ns() + DRAIN_QUIET_MS * 1000000ull;
		}
	}
	if (r->sock >= 0 && r->hello_done && !r->end_sent) {
		Faultline__Wire__End e = FAULTLINE__WIRE__END__INIT;
		fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

		e.pages_sent = r->st.pages_received;
		e.pages_poisoned = r->st.poisons;
		f.body_case = FAULTLINE__WIRE__FRAME__BODY_END;
		f.end = &e;
		put_frame(r, &f);
		r->end_sent = true;
	}
	r->st.finished = 1;
	return 1;
}

/* ---- public API ------------------------------------------------------------ */

int fl_router_step(struct fl_router *r, int timeout_ms)
{
	struct pollfd pfd[3];
	uint64_t now = fl_now_ns();
	int ret, n = 0, sock_i = -1;

	if (r->st.finished) {
		if (r->sock >= 0 && !r->ch.handshaking && fl_wire_pending(&r->wr))
			fl_wire_flush_io(&r->wr, &r->ch.io);
		return 1;
	}
	if (r->sock >= 0 && !r->hello_done && now >= r->hello_deadline_ns) {
		set_err(r, "the source at %s:%s said no Hello within %llu s (half-open connection?); "
			"reconnecting", r->host, r->port, HELLO_TIMEOUT_NS / 1000000000ull);
		conn_close(r);
	}
	if (r->resync && r->sock >= 0 && r->hello_done && !r->in_zap) {
		/* Too many pages to come back to one by one: a new connection
		 * has the source send every page again (the owned ones are
		 * left as they are). */
		r->resync = false;
		r->src_end = false;
		r->st.resyncs++;
		set_err(r, "pending table full: reconnecting for a full resend");
		conn_close(r);
		r->next_connect_ns = now;
	}
	/* After the source's End a lost connection matters only while pages
	 * are still wanted from it. */
	bool want_source = !r->cfg.fetch && (!r->src_end || r->npend || r->resync);

	if (r->cfg.fetch)
		r->src_end = false;	/* a local provider never ends: run until stopped */
	else if (r->sock < 0 && want_source && now >= r->next_connect_ns) {
		ret = conn_start(r);
		if (ret)
			return ret;
	}
	if (r->sock >= 0 && !r->hello_done) {
		int until = (int)((r->hello_deadline_ns - now) / 1000000ull) + 1;

		if (timeout_ms < 0 || until < timeout_ms)
			timeout_ms = until;
	}
	if (r->sock < 0 && want_source) {
		int until = now >= r->next_connect_ns ? 0 : (int)((r->next_connect_ns - now) / 1000000ull) + 1;

		if (timeout_ms < 0 || until < timeout_ms)
			timeout_ms = until;
	}
	/* EAGAIN lasts until the event's raiser runs again, microseconds after
	 * the event was read; nothing else would end the poll for it. */
	if (r->retry_due && !r->in_zap && (timeout_ms < 0 || timeout_ms > 1))
		timeout_ms = 1;
	/* Faults come in bursts: a thread just woken faults again within
	 * microseconds.  Looking for its message for a short while costs less
	 * than sleeping in poll() and being woken for it. */
	if (r->npend < PEND_MAX && now - r->last_msg_ns < r->spin_ns) {
		ret = read_uffd(r);
		if (ret)
			return ret;
		if (r->got_msgs) {
			flush_asks(r);
			return 0;
		}
		if (r->sock < 0 || !fl_wire_pending(&r->wr))
			return 0;
	}
	pfd[n++] = (struct pollfd){ .fd = r->stop_efd, .events = POLLIN };
	pfd[n++] = (struct pollfd){ .fd = r->uffd, .events = r->npend < PEND_MAX ? POLLIN : 0 };
	if (r->sock >= 0) {
		sock_i = n;
		pfd[n++] = (struct pollfd){ .fd = r->sock,
					    .events = r->connecting ? POLLOUT :
					    r->ch.handshaking ? fl_chan_events(&r->ch) :
					    (short)(POLLIN | (fl_wire_pending(&r->wr) ? POLLOUT : 0)) };
		if (fl_chan_buffered(&r->ch))
			timeout_ms = 0;
	}
	ret = poll(pfd, (nfds_t)n, timeout_ms);
	if (ret < 0)
		return errno == EINTR ? 0 : -errno;
	if (pfd[0].revents) {
		set_err(r, "stopped");
		return -ECANCELED;
	}
	if (pfd[1].revents & POLLIN) {
		ret = read_uffd(r);
		if (!ret && r->fetch_err)
			ret = r->fetch_err;
		if (ret)
			return ret;
	}
	if (sock_i >= 0 && (pfd[sock_i].revents || fl_chan_buffered(&r->ch))) {
		ret = on_sock(r, (short)(pfd[sock_i].revents | (fl_chan_buffered(&r->ch) ? POLLIN : 0)));
		if (ret)
			return ret;
	}
	if (r->retry_due) {
		ret = retry_pending(r);
		if (ret)
			return ret;
	}
	flush_asks(r);
	if (r->sock >= 0 && !r->connecting && !r->ch.handshaking && fl_wire_pending(&r->wr)) {
		ssize_t left = fl_wire_flush_io(&r->wr, &r->ch.io);

		if (left < 0 && left != -EAGAIN) {
			set_err(r, "lost the source connection while sending (%s)", strerror((int)-left));
			conn_close(r);
		}
	}
	r->st.pending = r->npend;
	if (r->src_end && r->npend == 0 && !r->resync)
		return finish(r);
	return 0;
}

int fl_router_run(struct fl_router *r)
{
	int ret;

	while ((ret = fl_router_step(r, 1000)) == 0)
		;
	if (ret == -ECANCELED)
		return 0;
	return ret < 0 ? ret : 0;
}

void fl_router_stop(struct fl_router *r)
{
	uint64_t one = 1;
	ssize_t n = write(r->stop_efd, &one, sizeof(one));

	(void)n;
}

void fl_router_get_stats(const struct fl_router *r, struct fl_router_stats *st)
{
	*st = r->st;
	st->pending = r->npend;
	st->pages_done = st->copies + st->zeropages + st->continues + st->poisons;
}

const char *fl_router_error(const struct fl_router *r)
{
	return r->err;
}

/*
 * MINOR mode, at start: which pages does the guest have already (placed by
 * a router before us, or touched by the VMM), and which has the page cache?
 * Both from the kernel: the VMM's page tables (/proc/PID/pagemap, present
 * bit) and the memfd's data extents (SEEK_DATA/SEEK_HOLE).
 */
static int scan_guest(struct fl_router *r, char *err, size_t errlen)
{
	char path[64];
	uint64_t buf[512];
	int fd;

	for (unsigned i = 0; i < r->nregions; i++) {
		struct rt_region *g = &r->reg[i];
		off_t end = (off_t)(g->memfd_offset + g->length), at = (off_t)g->memfd_offset;

		while (at < end) {
			off_t data = lseek(g->memfd, at, SEEK_DATA), hole;

			if (data < 0 || data >= end)
				break;
			hole = lseek(g->memfd, data, SEEK_HOLE);
			if (hole < 0 || hole > end)
				hole = end;
			for (off_t o = data / r->page_size * r->page_size; o < hole; o += r->page_size)
				bit_put(g->cached, (uint64_t)(o - (off_t)g->memfd_offset) / r->page_size, true);
			at = hole;
		}
	}
	snprintf(path, sizeof(path), "/proc/%d/pagemap", r->cfg.vmm_pid > 0 ? r->cfg.vmm_pid : getpid());
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;

		snprintf(err, errlen, "cannot read the VMM's page tables (%s: %s): MINOR mode must know "
			 "which pages the guest has before writing the page cache; run as root or as "
			 "the VMM's user", path, strerror(e));
		return -e;
	}
	for (unsigned i = 0; i < r->nspans; i++) {
		const struct span *sp = &r->spans[i];
		uint64_t npages = sp->len / r->page_size;

		for (uint64_t at = 0; at < npages;) {
			size_t n = npages - at < 512 ? (size_t)(npages - at) : 512;
			off_t off = (off_t)((sp->start / r->page_size + at) * sizeof(uint64_t));
			ssize_t got = pread(fd, buf, n * sizeof(uint64_t), off);

			if (got <= 0) {
				int e = got < 0 ? errno : EIO;

				snprintf(err, errlen, "cannot read %s at page 0x%llx: %s", path,
					 (unsigned long long)(sp->start / r->page_size + at), strerror(e));
				close(fd);
				return -e;
			}
			n = (size_t)got / sizeof(uint64_t);
			for (size_t k = 0; k < n; k++)
				if (buf[k] >> 63)	/* present */
					bit_put(r->reg[sp->region].owned, sp->first_page + at + k, true);
			at += n;
		}
	}
	close(fd);
	return 0;
}

/*
 * Everything about the source that can be refused before guest memory is at
 * stake: its address (resolved once, here), the TLS credentials, and the
 * plaintext policy.  0, 1 (a warning in err: --insecure), or -errno.
 */
static int source_setup(struct fl_router *r, const struct fl_router_config *cfg, char *err,
			size_t errlen)
{
	struct fl_tls_opts o = { .dir = cfg->tls_dir, .psk_file = cfg->tls_psk,
				 .psk_user = cfg->tls_psk_user, .peer_name = cfg->tls_name,
				 .insecure = cfg->insecure };
	char what[300];
	const char *src = cfg->source ? cfg->source : "";
	char why[200];
	/* 7411: faultline source's default port, for the examples */
	int ret = fl_netaddr_split(src, 7411, r->host, sizeof(r->host), r->port, sizeof(r->port),
				   why, sizeof(why));

	if (ret) {
		snprintf(err, errlen, "source address \"%.80s\" is not HOST:PORT: %s", src, why);
		return ret;
	}
	ret = resolve_source(r, err, errlen);
	if (!ret)
		ret = fl_tls_load(&o, false, &r->tls, err, errlen);
	if (ret)
		return ret;
	snprintf(what, sizeof(what), "source %s:%s", r->host, r->port);
	return fl_tls_plain_check(r->tls, &o, (struct sockaddr *)&r->src_addr, what, err, errlen);
}

int fl_router_check_source(const struct fl_router_config *cfg, char *err, size_t errlen)
{
	struct fl_router *r = calloc(1, sizeof(*r));
	int ret;

	if (!r)
		return -ENOMEM;
	*err = 0;
	ret = source_setup(r, cfg, err, errlen);
	fl_tls_free(r->tls);
	free(r);
	return ret > 0 ? 0 : ret;
}

int fl_router_create(const struct fl_router_config *cfg, struct fl_router **out, char *err, size_t errlen)
{
	struct fl_router *r;
	long ps = sysconf(_SC_PAGESIZE);
	uint64_t pages[FL_WIRE_MAX_REGIONS];
	int ret;

	*out = NULL;
	if (!cfg->nregions || cfg->nregions > FL_WIRE_MAX_REGIONS) {
		snprintf(err, errlen, "%u regions handed over; between 1 and %u are supported",
			 cfg->nregions, FL_WIRE_MAX_REGIONS);
		return -EINVAL;
	}
	if (cfg->mode != FL_MODE_MISSING && cfg->mode != FL_MODE_MINOR) {
		snprintf(err, errlen, "unknown userfaultfd mode %d", cfg->mode);
		return -EINVAL;
	}
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->cfg = *cfg;
	r->uffd = cfg->uffd;
	r->page_size = (uint32_t)ps;
	r->sock = -1;
	r->ch.fd = -1;
	r->journal.fd = -1;
	r->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	r->backoff_ms = cfg->reconnect_ms ? cfg->reconnect_ms : 200;
	r->spin_ns = cfg->spin_us ? (uint64_t)cfg->spin_us * 1000ull : 20000ull;
	r->pend = calloc(PEND_CAP, sizeof(*r->pend));
	r->zero_page = aligned_alloc((size_t)ps, (size_t)ps);
	r->fetch_buf = aligned_alloc((size_t)ps, (size_t)ps);
	if (r->stop_efd < 0 || !r->pend || !r->zero_page || !r->fetch_buf) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory setting up the router");
		goto fail;
	}
	memset(r->zero_page, 0, (size_t)ps);
	/* a local provider has no source to reach */
	ret = cfg->fetch ? 0 : source_setup(r, cfg, err, errlen);
	if (ret < 0)
		goto fail;
	ret = 0;	/* 1: --insecure's warning is left in err */
	fl_wire_reader_init(&r->rd);
	fl_wire_writer_init(&r->wr);
	/* The kernel refuses to poll a userfaultfd without O_NONBLOCK
	 * (userfaultfd_poll: EPOLLERR, since a waiter woken before its message
	 * is read would leave a blocking read asleep), so the flag is required
	 * on the open file description the VMM shares; VMMs that hand their
	 * uffd to a handler (QEMU, Firecracker) create it non-blocking anyway. */
	fcntl(r->uffd, F_SETFL, fcntl(r->uffd, F_GETFL) | O_NONBLOCK);

	r->nregions = cfg->nregions;
	for (unsigned i = 0; i < cfg->nregions; i++) {
		const struct fl_region *src = &cfg->regions[i];
		struct rt_region *g = &r->reg[i];

		if (!src->length || src->length % (uint64_t)ps || (uintptr_t)src->base % (uintptr_t)ps) {
			snprintf(err, errlen, "region %u (%p, %llu bytes) is not page aligned", i, src->base,
				 (unsigned long long)src->length);
			ret = -EINVAL;
			goto fail;
		}
		if (cfg->mode == FL_MODE_MINOR && src->memfd < 0) {
			snprintf(err, errlen, "region %u has no memfd: MINOR mode needs the file backing guest memory", i);
			ret = -EINVAL;
			goto fail;
		}
		g->length = src->length;
		g->npages = src->length / (uint64_t)ps;
		g->memfd = src->memfd;
		g->memfd_offset = src->offset;
		g->ask_data = calloc(FL_WIRE_MAX_PAGES, sizeof(uint64_t));
		g->ask_state = calloc(FL_WIRE_MAX_PAGES, sizeof(uint64_t));
		g->owned = calloc((g->npages + 63) / 64, sizeof(uint64_t));
		/* only MINOR mode writes (and finds) copies in the page cache */
		if (cfg->mode == FL_MODE_MINOR)
			g->cached = calloc((g->npages + 63) / 64, sizeof(uint64_t));
		ret = fl_statemap_init(&g->map, g->npages, ST_DIRTY);
		if (ret || !g->ask_data || !g->ask_state || !g->owned ||
		    (cfg->mode == FL_MODE_MINOR && !g->cached)) {
			snprintf(err, errlen, "out of memory for region %u's page-state map", i);
			ret = -ENOMEM;
			goto fail;
		}
		r->spans[r->nspans++] = (struct span){ (uint64_t)(uintptr_t)src->base, src->length, i, 0 };
		r->st.total_pages += g->npages;
		pages[i] = g->npages;
	}
	if (cfg->mode == FL_MODE_MINOR) {
		ret = scan_guest(r, err, errlen);
		if (ret)
			goto fail;
	}
	if (cfg->journal) {
		struct fl_journal_id id = { .nregions = cfg->nregions, .region_pages = pages };
		/* A local provider has no Hello: its session is the operator's word. */
		uint64_t confirmed = cfg->journal_session ? cfg->journal_session : cfg->fetch ? 1 : 0;

		ret = fl_journal_open(&r->journal, cfg->journal, &id, err, errlen);
		if (ret)
			goto fail;
		if (confirmed && r->journal.session && r->journal.session != confirmed) {
			snprintf(err, errlen, "poison journal %s belongs to migration session %016" PRIx64
				 ", not %016" PRIx64 "; nothing of it was applied: move it away",
				 cfg->journal, r->journal.session, confirmed);
			ret = -ESTALE;
			goto fail;
		}
		r->session = confirmed;
		if (confirmed) {
			/* Confirmed: pages poisoned before a restart are poisoned
			 * again before anything else, source or not. */
			ret = fl_journal_session(&r->journal, confirmed);
			if (!ret)
				ret = journal_apply(r);
			if (ret) {
				snprintf(err, errlen, "%s", *r->err ? r->err : strerror(-ret));
				goto fail;
			}
		}
	}
	/* Faults whose messages a previous router read and died with are
	 * waiting for a wake nobody will send: wake them to fault again. */
	for (unsigned i = 0; i < r->nspans; i++) {
		struct uffdio_range range = { .start = r->spans[i].start, .len = r->spans[i].len };

		ioctl(r->uffd, UFFDIO_WAKE, &range);
	}
	*out = r;
	return 0;
fail:
	fl_router_destroy(r);
	return ret;
}

void fl_router_destroy(struct fl_router *r)
{
	if (!r)
		return;
	if (r->sock >= 0) {
		/* The End frame (and anything else queued) must reach the source,
		 * which otherwise waits for a reconnect: give it a moment. */
		uint64_t deadline = fl_now_ns() + 2000000000ull;

		while (!r->connecting && !r->ch.handshaking && fl_wire_pending(&r->wr) &&
		       fl_now_ns() < deadline) {
			struct pollfd p = { .fd = r->sock, .events = POLLOUT };
			ssize_t left;

			if (poll(&p, 1, 100) < 0 && errno != EINTR)
				break;
			left = fl_wire_flush_io(&r->wr, &r->ch.io);
			if (left < 0 && left != -EAGAIN)
				break;
		}
		fl_chan_end(&r->ch);
		close(r->sock);
	}
	fl_tls_free(r->tls);
	fl_wire_reader_free(&r->rd);
	fl_wire_writer_free(&r->wr);
	fl_journal_close(&r->journal);
	for (unsigned i = 0; i < r->nregions; i++) {
		fl_statemap_free(&r->reg[i].map);
		free(r->reg[i].ask_data);
		free(r->reg[i].ask_state);
		free(r->reg[i].owned);
		free(r->reg[i].cached);
	}
	free(r->pq);
	if (r->stop_efd >= 0)
		close(r->stop_efd);
	free(r->pend);
	free(r->zero_page);
	free(r->fetch_buf);
	free(r);
}
