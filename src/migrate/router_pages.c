// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The router's pages: the owned/cached bits, the pages with waiting faults,
 * guest addresses, and the userfaultfd operations that place a page
 * (COPY, ZEROPAGE, CONTINUE, POISON, WAKE), each outcome recorded.
 */
#include "router_int.h"

/* ---- per-page bits ---------------------------------------------------------- */

static bool bit_test(const uint64_t *b, uint64_t i)
{
	return b[i / 64] >> (i % 64) & 1;
}

void fl_rt_bit_put(uint64_t *b, uint64_t i, bool v)
{
	if (v)
		b[i / 64] |= 1ull << (i % 64);
	else
		b[i / 64] &= ~(1ull << (i % 64));
}

bool fl_rt_owned(const struct fl_router *r, uint32_t region, uint64_t page)
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

struct pend *fl_rt_pend_find(struct fl_router *r, uint32_t region, uint64_t page)
{
	uint64_t key = page_key(region, page);

	for (size_t i = pend_slot(key);; i = (i + 1) & (PEND_CAP - 1)) {
		if (r->pend[i].key == key)
			return &r->pend[i];
		if (!r->pend[i].key)
			return NULL;
	}
}

struct pend *fl_rt_pend_get(struct fl_router *r, uint32_t region, uint64_t page, bool *fresh)
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
void fl_rt_pend_del(struct fl_router *r, struct pend *p)
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

void fl_rt_pend_done(struct fl_router *r, struct pend *p)
{
	if (!p)
		return;
	if (!(p->flags & P_NOWAIT)) {
		r->st.latency_sum_ns += fl_now_ns() - p->since_ns;
		r->st.latency_n++;
	}
	fl_rt_pend_del(r, p);
}

/* ---- addresses ------------------------------------------------------------ */

bool fl_rt_addr_to_page(const struct fl_router *r, uint64_t addr, uint32_t *region, uint64_t *page)
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
uint64_t fl_rt_page_to_addr(const struct fl_router *r, uint32_t region, uint64_t page)
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

int fl_rt_uffd_wake(struct fl_router *r, uint64_t addr)
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
			ret = fl_rt_read_uffd(r);
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

int fl_rt_uffd_poison(struct fl_router *r, uint32_t region, uint64_t page)
{
	uint64_t addr = fl_rt_page_to_addr(r, region, page);
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
			fl_rt_set_err(r, "cannot zap page %llu of region %u before poisoning it: %s",
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
		fl_rt_uffd_wake(r, addr);
		return 0;
	default:
		fl_rt_set_err(r, "UFFDIO_POISON of page %llu of region %u failed: %s",
			(unsigned long long)page, region, strerror(errno));
		return -errno;
	}
}

/* Map result of a placing ioctl: 0 placed / present / gone (waiters woken),
 * -EAGAIN retry later, other negative errno fatal.  Placed or present, the
 * page is the guest's from now on. */
int fl_rt_placed(struct fl_router *r, int ret_errno, uint32_t region, uint64_t page, uint64_t addr,
		  uint64_t *counter)
{
	switch (ret_errno) {
	case 0:
		(*counter)++;
		fl_rt_bit_put(r->reg[region].owned, page, true);
		return 0;
	case EEXIST:
		r->st.eexist++;
		fl_rt_bit_put(r->reg[region].owned, page, true);
		fl_rt_uffd_wake(r, addr);
		return 0;
	case ENOENT:
	case ESRCH:
		r->st.enoent++;
		fl_rt_uffd_wake(r, addr);
		return 0;
	case EAGAIN:
		r->st.eagain++;
		return -EAGAIN;
	default:
		return -ret_errno;
	}
}

int fl_rt_uffd_copy(struct fl_router *r, uint32_t region, uint64_t page, uint64_t addr,
		     const void *data)
{
	struct uffdio_copy c = { .dst = addr, .src = (uint64_t)(uintptr_t)data, .len = r->page_size };

	return fl_rt_placed(r, ioctl(r->uffd, UFFDIO_COPY, &c) < 0 ? errno : 0, region, page, addr,
		      &r->st.copies);
}

int fl_rt_uffd_zeropage(struct fl_router *r, uint32_t region, uint64_t page, uint64_t addr)
{
	struct uffdio_zeropage z = { .range = { .start = addr, .len = r->page_size } };

	if (r->huge) {
		/* hugetlbfs has no UFFDIO_ZEROPAGE: a copy of zeros is the same page */
		struct uffdio_copy c = { .dst = addr, .src = (uint64_t)(uintptr_t)r->zero_page,
					 .len = r->page_size };

		return fl_rt_placed(r, ioctl(r->uffd, UFFDIO_COPY, &c) < 0 ? errno : 0, region, page,
				    addr, &r->st.zeropages);
	}
	return fl_rt_placed(r, ioctl(r->uffd, UFFDIO_ZEROPAGE, &z) < 0 ? errno : 0, region, page, addr,
		      &r->st.zeropages);
}

int fl_rt_uffd_continue(struct fl_router *r, uint32_t region, uint64_t page, uint64_t addr)
{
	struct uffdio_continue c = { .range = { .start = addr, .len = r->page_size } };

	return fl_rt_placed(r, ioctl(r->uffd, UFFDIO_CONTINUE, &c) < 0 ? errno : 0, region, page, addr,
		      &r->st.continues);
}

/*
 * MINOR mode: put contents into the guest's page cache, unless the guest
 * has the page (1: left alone).  Only an unowned page is safe to write: no
 * mapping of the guest can reach it without a fault the router resolves.
 */
int fl_rt_cache_write(struct fl_router *r, uint32_t region, uint64_t page, const void *data)
{
	struct rt_region *g = &r->reg[region];
	off_t off = (off_t)(g->memfd_offset + page * r->page_size);

	if (fl_rt_owned(r, region, page)) {
		r->st.kept_guest++;
		return 1;
	}
	if (g->fill) {
		/* hugetlbfs: allocate the huge page first (a pool that ran dry is
		 * ENOSPC here, not a SIGBUS in the memcpy), then fill it through
		 * the router's own mapping; the guest's mapping stays unpopulated,
		 * so its access still faults and is CONTINUEd */
		if (fallocate(g->memfd, FALLOC_FL_KEEP_SIZE, off, r->page_size) < 0) {
			fl_rt_set_err(r, "cannot allocate huge page %llu of region %u in the guest's page "
				      "cache: %s", (unsigned long long)page, region, strerror(errno));
			return -EIO;
		}
		memcpy(g->fill + page * r->page_size, data, r->page_size);
	} else if (pwrite(g->memfd, data, r->page_size, off) != (ssize_t)r->page_size) {
		fl_rt_set_err(r, "cannot write page %llu of region %u into the guest's page cache: %s",
			(unsigned long long)page, region, strerror(errno));
		return -EIO;
	}
	fl_rt_bit_put(g->cached, page, true);
	return 0;
}

/*
 * The page is ZERO at the source.  A copy the router cached before (precopy)
 * is stale: punch it out, so the page reads zero when the guest gets it,
 * also after the final UNREGISTER when nobody resolves its faults any more.
 */
int fl_rt_settle_zero(struct fl_router *r, uint32_t region, uint64_t page)
{
	struct rt_region *g = &r->reg[region];

	if (r->cfg.mode != FL_MODE_MINOR || !bit_test(g->cached, page) || fl_rt_owned(r, region, page))
		return 0;
	if (fallocate(g->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(g->memfd_offset + page * r->page_size), r->page_size) < 0) {
		fl_rt_set_err(r, "cannot drop the stale copy of page %llu of region %u from the page cache: %s",
			(unsigned long long)page, region, strerror(errno));
		return -EIO;
	}
	fl_rt_bit_put(g->cached, page, false);
	r->st.stale_dropped++;
	return 0;
}
