/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * libfaultline — the poison-replicating postcopy router, for VMMs.
 *
 * Two ways to use it:
 *
 *  1. Hand guest memory to a standalone `faultline target` (Firecracker's
 *     handshake): the VMM keeps its userfaultfd and sends a copy of it plus
 *     the region list over a Unix socket with fl_handover().  If the router
 *     dies, the guest freezes on its next missing page instead of reading
 *     zeros; a restarted router takes over again (send the handover anew).
 *     The VMM calls fl_handover_serve() when the returned socket is
 *     readable: the router asks it to zap pages that turn out poisoned after
 *     they were mapped (MISSING mode, anonymous memory only the VMM can zap).
 *
 *  2. Embed the router: fl_router_create() + fl_router_run() (or
 *     fl_router_step() from the VMM's own loop).  Caveat: with
 *     UFFD_FEATURE_EVENT_FORK, glibc's fork() in the VMM holds the malloc
 *     locks until the router has read the FORK event, so an embedded router
 *     caught inside malloc() deadlocks with it: fork with posix_spawn/vfork
 *     (no FORK event), leave EVENT_FORK off, or use the handover model.
 *
 * Errors are negative errno values; functions taking `err` also write one
 * sentence saying what failed.  Thread-safety: one router per thread;
 * fl_router_stop() may be called from any thread or a signal handler.
 */
#ifndef FAULTLINE_FAULTLINE_H
#define FAULTLINE_FAULTLINE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum fl_uffd_mode {
	FL_MODE_MISSING = 1,	/* anonymous memory: UFFDIO_COPY / ZEROPAGE */
	FL_MODE_MINOR = 2,	/* memfd/shmem/hugetlbfs with precopied page cache: CONTINUE */
};

struct fl_region {
	void *base;		/* guest memory in the VMM's address space */
	uint64_t length;	/* bytes, multiple of the page size */
	int memfd;		/* MINOR mode: the file backing it; -1 otherwise */
	uint64_t offset;	/* offset of `base` within memfd */
};

/* ---- VMM side of the handover ------------------------------------------ */

/*
 * Connect to a router listening on `socket_path`, send a duplicate of `uffd`
 * (and each region's memfd) with the region list.  Returns the connected
 * socket (keep it open for the whole migration) or negative errno.
 */
int fl_handover(const char *socket_path, int uffd, enum fl_uffd_mode mode,
		const struct fl_region *regions, unsigned nregions,
		char *err, size_t errlen);
/* Serve the router's pending zap requests on `sock`: 0, or -ECONNRESET once
 * the router has gone (the guest stays frozen until one is back). */
int fl_handover_serve(int sock, const struct fl_region *regions, unsigned nregions);

/* ---- the router ---------------------------------------------------------- */

struct fl_router;

/* Page states, as the source's page-state map has them. */
enum fl_page_state {
	FL_PAGE_CLEAN = 0,	/* the target's precopied copy is good */
	FL_PAGE_DIRTY = 1,	/* contents must be fetched */
	FL_PAGE_POISONED = 2,	/* poisoned at the source: poison it here too */
	FL_PAGE_ZERO = 3,	/* all zero */
};

struct fl_router_config {
	const char *source;		/* "HOST:PORT" of `faultline source` */
	const char *journal;		/* poison journal file; NULL: none (not restart-safe) */
	enum fl_uffd_mode mode;
	int uffd;			/* registered over every region, API done */
	const struct fl_region *regions;
	unsigned nregions;
	/* Zap [addr, addr+len) in the VMM so a late UFFDIO_POISON takes effect.
	 * NULL: madvise(MADV_DONTNEED) in this process (embedded router; run
	 * on a helper thread, since with UFFD_FEATURE_EVENT_REMOVE madvise
	 * waits until the router has read the REMOVE event it raises).
	 * With zap_finish set the zap is asynchronous: zap() only sends the
	 * request; the router keeps reading UFFD events until zap_wait_fd is
	 * readable, then zap_finish() says 1 (done), 0 (not yet) or -errno. */
	int (*zap)(void *ctx, void *addr, uint64_t len);
	int (*zap_finish)(void *ctx);
	int zap_wait_fd;
	void *zap_ctx;
	unsigned reconnect_ms;		/* retry interval after a lost source; 0: 200 */
	/* After a fault message, look for the next one this long before
	 * sleeping in poll() (faults come in bursts); 0: 20 us. */
	unsigned spin_us;
	/* A local page provider instead of a network source (snapshot files,
	 * benchmarks): returns the page's fl_page_state and fills `buf` (one
	 * page) for CLEAN/DIRTY, or a negative errno.  When set, `source` is
	 * ignored and the router runs until fl_router_stop(). */
	int (*fetch)(void *ctx, unsigned region, uint64_t page, void *buf);
	void *fetch_ctx;
	/* The process whose address space `regions` are in (the VMM); 0: this
	 * one.  MINOR mode reads its page tables at start: a page already
	 * mapped there is the guest's, and the router never writes over it. */
	int vmm_pid;
	/* The migration session the journal must belong to (the source prints
	 * it); 0: learn it from the source's Hello.  Given and matching, the
	 * journal's poison is applied at once, before any connection; nothing
	 * in a journal is applied before its session is confirmed. */
	uint64_t journal_session;
	/* TLS 1.3 to the source (QEMU's credential layouts): tls_dir holds
	 * ca-cert.pem, client-cert.pem, client-key.pem; or tls_psk names a
	 * keys.psk file (username:hexkey lines; tls_psk_user picks one, default
	 * the first).  tls_name: the name the source's certificate must carry
	 * (default: the host in `source`).  Without credentials the source must
	 * be on loopback, unless `insecure` (then fl_router_create() leaves a
	 * warning in err and succeeds). */
	const char *tls_dir, *tls_psk, *tls_psk_user, *tls_name;
	int insecure;
};

struct fl_router_stats {
	uint64_t total_pages;
	uint64_t faults;		/* pages a thread started waiting for */
	uint64_t fault_messages;	/* PAGEFAULT messages read (a waiting thread
					 * the kernel retries sends another) */
	uint64_t copies, zeropages, continues, poisons, wakes;
	uint64_t poisons_late;		/* poisoned after the page had been mapped */
	uint64_t remote_requests;	/* pages asked of the source on a fault */
	uint64_t state_queries;
	uint64_t pages_received, bytes_received;
	uint64_t map_pages_known;	/* pages whose state arrived in the map */
	uint64_t eagain, enoent, eexist;
	uint64_t events;		/* REMOVE/UNMAP/REMAP/FORK handled */
	uint64_t reconnects;
	uint64_t journal_loaded;	/* poisoned pages reloaded from the journal */
	uint64_t refused_data;		/* page data refused for a poisoned page */
	uint64_t kept_guest;		/* page data not written: the guest has the page */
	uint64_t stale_dropped;		/* precopied copies punched: the page went zero */
	uint64_t resyncs;		/* reconnects to have the source send everything again */
	uint64_t pages_done;		/* placed, zero-filled or poisoned */
	uint64_t pending;		/* pages with a waiting fault right now */
	uint64_t connected;		/* 1 while the source connection is up */
	uint64_t source_end;		/* the source has sent everything */
	uint64_t latency_sum_ns;	/* fault read -> placed, summed over faults */
	uint64_t latency_n;
	int finished;			/* every page placed or declared, ranges unregistered */
};

int fl_router_create(const struct fl_router_config *cfg, struct fl_router **out,
		     char *err, size_t errlen);
/* What fl_router_create() would say of cfg's source before any guest memory
 * is at stake: resolves it, loads the TLS credentials, applies the
 * plaintext policy.  0 (err may hold --insecure's warning) or -errno. */
int fl_router_check_source(const struct fl_router_config *cfg, char *err, size_t errlen);
/* Route until the migration ends or fl_router_stop(): 0 or negative errno. */
int fl_router_run(struct fl_router *r);
/* One round of work, waiting at most timeout_ms: 1 finished, 0 not yet, <0 error. */
int fl_router_step(struct fl_router *r, int timeout_ms);
void fl_router_stop(struct fl_router *r);
void fl_router_get_stats(const struct fl_router *r, struct fl_router_stats *st);
/* Why the last call failed (one sentence), or "". */
const char *fl_router_error(const struct fl_router *r);
void fl_router_destroy(struct fl_router *r);

#ifdef __cplusplus
}
#endif
#endif
