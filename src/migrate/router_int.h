/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The router's insides, shared by its parts (not an API): struct fl_router
 * and the functions one part calls in another.  What the router does and
 * why: router.c.
 */
#ifndef FAULTLINE_ROUTER_INT_H
#define FAULTLINE_ROUTER_INT_H

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

#include "errmsg.h"
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
	/* MINOR on hugetlbfs: the memfd range mapped here, since hugetlbfs has
	 * no write(): the page cache is filled through it */
	uint8_t *fill;
};

/* A page bigger than a frame, being put together from its chunks. */
struct fl_rt_assembly {
	uint8_t *buf;			/* one page, mapped on first use */
	uint32_t region;
	uint64_t page, have;
	bool live;
};

struct poison_q {
	uint32_t region;
	uint64_t page;
};

struct fl_router {
	struct fl_router_config cfg;
	int uffd;
	uint32_t page_size;
	bool huge;			/* hugetlbfs pages: no ZEROPAGE, no write(), no SEEK_DATA */
	struct fl_rt_assembly asm_;	/* pages of more than FL_WIRE_PAGE_CHUNK */
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
	bool got_msgs;			/* the last fl_rt_read_uffd() returned messages */
	uint64_t last_msg_ns, spin_ns;
	uint8_t *zero_page;
	uint8_t *fetch_buf;		/* one page for the local provider */
	int fetch_err;
	struct fl_router_stats st;
	char err[256];
};


/* ---- shared between the parts (each defined in one of them) ---- */

/* The router's error sentence (fl_router_error), replaced. */
void fl_rt_set_err(struct fl_router *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void fl_rt_bit_put(uint64_t *b, uint64_t i, bool v);

bool fl_rt_owned(const struct fl_router *r, uint32_t region, uint64_t page);

struct pend *fl_rt_pend_find(struct fl_router *r, uint32_t region, uint64_t page);

struct pend *fl_rt_pend_get(struct fl_router *r, uint32_t region, uint64_t page, bool *fresh);

void fl_rt_pend_del(struct fl_router *r, struct pend *p);

void fl_rt_pend_done(struct fl_router *r, struct pend *p);

bool fl_rt_addr_to_page(const struct fl_router *r, uint64_t addr, uint32_t *region, uint64_t *page);

uint64_t fl_rt_page_to_addr(const struct fl_router *r, uint32_t region, uint64_t page);

int fl_rt_uffd_wake(struct fl_router *r, uint64_t addr);

int fl_rt_uffd_poison(struct fl_router *r, uint32_t region, uint64_t page);

int fl_rt_placed(struct fl_router *r, int ret_errno, uint32_t region, uint64_t page, uint64_t addr,
		  uint64_t *counter);

int fl_rt_uffd_copy(struct fl_router *r, uint32_t region, uint64_t page, uint64_t addr,
		     const void *data);

int fl_rt_uffd_zeropage(struct fl_router *r, uint32_t region, uint64_t page, uint64_t addr);

int fl_rt_uffd_continue(struct fl_router *r, uint32_t region, uint64_t page, uint64_t addr);

int fl_rt_cache_write(struct fl_router *r, uint32_t region, uint64_t page, const void *data);

int fl_rt_settle_zero(struct fl_router *r, uint32_t region, uint64_t page);

void fl_rt_retry_later(struct fl_router *r, uint32_t region, uint64_t page);

int fl_rt_poison_mark(struct fl_router *r, uint32_t region, uint64_t page, bool replace);

int fl_rt_poison_flush(struct fl_router *r);

int fl_rt_poison_page(struct fl_router *r, uint32_t region, uint64_t page, bool replace);

int fl_rt_journal_apply(struct fl_router *r);

bool fl_rt_state_known(const struct fl_router *r, uint32_t region, uint64_t page);

void fl_rt_ask(struct fl_router *r, uint32_t region, uint64_t page, struct pend *p, bool state_only);

int fl_rt_decide(struct fl_router *r, uint32_t region, uint64_t page, struct pend *p, int st);

int fl_rt_retry_pending(struct fl_router *r);

int fl_rt_read_uffd(struct fl_router *r);

void fl_rt_put_frame(struct fl_router *r, fl_frame *f);

int fl_rt_send_asks(struct fl_router *r, uint32_t region, bool state);

int fl_rt_flush_asks(struct fl_router *r);

void fl_rt_conn_close(struct fl_router *r);

int fl_rt_resolve_source(struct fl_router *r, char *err, size_t errlen);

int fl_rt_conn_start(struct fl_router *r);

int fl_rt_redecide_all(struct fl_router *r);

int fl_rt_on_state_map(struct fl_router *r, const Faultline__Wire__StateMapChunk *c);

int fl_rt_on_sock(struct fl_router *r, short revents);

#endif
