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
#include "router_int.h"
#include "regions.h"
void fl_rt_set_err(struct fl_router *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fl_verrmsg(r->err, sizeof(r->err), fmt, ap);
	va_end(ap);
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
			fl_rt_set_err(r, "cannot unregister the guest memory at the end: %s", strerror(errno));
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
			fl_rt_read_uffd(r);	/* placements fail with ENOENT now and wake */
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
		fl_rt_put_frame(r, &f);
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
		fl_rt_set_err(r, "the source at %s:%s said no Hello within %llu s (half-open connection?); "
			"reconnecting", r->host, r->port, HELLO_TIMEOUT_NS / 1000000000ull);
		fl_rt_conn_close(r);
	}
	if (r->resync && r->sock >= 0 && r->hello_done && !r->in_zap) {
		/* Too many pages to come back to one by one: a new connection
		 * has the source send every page again (the owned ones are
		 * left as they are). */
		r->resync = false;
		r->src_end = false;
		r->st.resyncs++;
		fl_rt_set_err(r, "pending table full: reconnecting for a full resend");
		fl_rt_conn_close(r);
		r->next_connect_ns = now;
	}
	/* After the source's End a lost connection matters only while pages
	 * are still wanted from it. */
	bool want_source = !r->cfg.fetch && (!r->src_end || r->npend || r->resync);

	if (r->cfg.fetch)
		r->src_end = false;	/* a local provider never ends: run until stopped */
	else if (r->sock < 0 && want_source && now >= r->next_connect_ns) {
		ret = fl_rt_conn_start(r);
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
		ret = fl_rt_read_uffd(r);
		if (ret)
			return ret;
		if (r->got_msgs) {
			fl_rt_flush_asks(r);
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
		fl_rt_set_err(r, "stopped");
		return -ECANCELED;
	}
	if (pfd[1].revents & POLLIN) {
		ret = fl_rt_read_uffd(r);
		if (!ret && r->fetch_err)
			ret = r->fetch_err;
		if (ret)
			return ret;
	}
	if (sock_i >= 0 && (pfd[sock_i].revents || fl_chan_buffered(&r->ch))) {
		ret = fl_rt_on_sock(r, (short)(pfd[sock_i].revents | (fl_chan_buffered(&r->ch) ? POLLIN : 0)));
		if (ret)
			return ret;
	}
	if (r->retry_due) {
		ret = fl_rt_retry_pending(r);
		if (ret)
			return ret;
	}
	fl_rt_flush_asks(r);
	if (r->sock >= 0 && !r->connecting && !r->ch.handshaking && fl_wire_pending(&r->wr)) {
		ssize_t left = fl_wire_flush_io(&r->wr, &r->ch.io);

		if (left < 0 && left != -EAGAIN) {
			fl_rt_set_err(r, "lost the source connection while sending (%s)", strerror((int)-left));
			fl_rt_conn_close(r);
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
#define PAGEMAP_UNIT 4096u	/* x86-64's base page: what /proc/PID/pagemap indexes */

static int scan_guest(struct fl_router *r, char *err, size_t errlen)
{
	char path[64];
	uint64_t buf[512];
	int fd;

	for (unsigned i = 0; i < r->nregions && !r->huge; i++) {
		/* hugetlbfs has no SEEK_DATA (the whole file reads as data): its
		 * cache is not known, so pages are fetched again (never over the
		 * guest's: those are owned, from the page tables below) */
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
				fl_rt_bit_put(g->cached, (uint64_t)(o - (off_t)g->memfd_offset) / r->page_size, true);
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
			/* pagemap has an entry per base page: a huge page is its first one's */
			size_t n = r->huge ? 1 : npages - at < 512 ? (size_t)(npages - at) : 512;
			off_t off = (off_t)((sp->start + at * r->page_size) / PAGEMAP_UNIT *
					    sizeof(uint64_t));
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
					fl_rt_bit_put(r->reg[sp->region].owned, sp->first_page + at + k, true);
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
	ret = fl_rt_resolve_source(r, err, errlen);
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
	long ps;
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
	/* hugetlbfs guests: the huge page is the unit of every placement */
	ps = fl_regions_page_size(cfg->regions, cfg->nregions, cfg->vmm_pid, err, errlen);
	if (ps < 0)
		return (int)ps;
	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->cfg = *cfg;
	r->uffd = cfg->uffd;
	r->page_size = (uint32_t)ps;
	r->huge = ps > sysconf(_SC_PAGESIZE);
	r->sock = -1;
	r->ch.fd = -1;
	r->journal.fd = -1;
	r->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	r->backoff_ms = cfg->reconnect_ms ? cfg->reconnect_ms : 200;
	r->spin_ns = cfg->spin_us ? (uint64_t)cfg->spin_us * 1000ull : 20000ull;
	r->pend = calloc(PEND_CAP, sizeof(*r->pend));
	/* mapped, not allocated: zero without a memset, and a 1 GiB page's
	 * buffers cost memory only once used */
	r->zero_page = mmap(NULL, (size_t)ps, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	r->fetch_buf = mmap(NULL, (size_t)ps, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			    -1, 0);
	if (r->zero_page == MAP_FAILED)
		r->zero_page = NULL;
	if (r->fetch_buf == MAP_FAILED)
		r->fetch_buf = NULL;
	if (r->stop_efd < 0 || !r->pend || !r->zero_page || !r->fetch_buf) {
		ret = -ENOMEM;
		snprintf(err, errlen, "out of memory setting up the router");
		goto fail;
	}
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
		if (r->huge && cfg->mode == FL_MODE_MINOR) {
			void *m = mmap(NULL, g->length, PROT_READ | PROT_WRITE, MAP_SHARED, g->memfd,
				       (off_t)g->memfd_offset);

			if (m == MAP_FAILED) {
				ret = -errno;
				snprintf(err, errlen, "cannot map region %u's hugetlbfs memfd to fill its "
					 "page cache: %s", i, strerror(-ret));
				goto fail;
			}
			g->fill = m;
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
				ret = fl_rt_journal_apply(r);
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
		if (r->reg[i].fill)
			munmap(r->reg[i].fill, r->reg[i].length);
	}
	free(r->pq);
	if (r->stop_efd >= 0)
		close(r->stop_efd);
	free(r->pend);
	if (r->zero_page)
		munmap(r->zero_page, r->page_size);
	if (r->fetch_buf)
		munmap(r->fetch_buf, r->page_size);
	if (r->asm_.buf)
		munmap(r->asm_.buf, r->page_size);
	free(r);
}
