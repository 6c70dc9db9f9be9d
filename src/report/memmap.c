// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "memmap.h"

static uint64_t mix(uint64_t x)
{
	/* splitmix64's finaliser: neighbouring pages land far apart */
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static struct rp_unit *slot(struct rp_unit *tab, size_t cap, uint32_t pid, uint64_t page)
{
	size_t i = mix(page ^ (uint64_t)pid << 40 ^ pid) & (cap - 1);

	while (tab[i].used && (tab[i].page != page || tab[i].pid != pid))
		i = (i + 1) & (cap - 1);
	return &tab[i];
}

/* Every unit into a table of cap slots with units of 2^shift bytes (merging). */
static int rebuild(struct rp_memmap *m, size_t cap, unsigned shift)
{
	struct rp_unit *tab = calloc(cap, sizeof(*tab));
	size_t n = 0;

	if (!tab)
		return -ENOMEM;
	for (size_t i = 0; i < m->cap; i++) {
		struct rp_unit *u = &m->units[i], *d;
		uint64_t page;

		if (!u->used)
			continue;
		page = u->page >> (shift - m->shift);
		d = slot(tab, cap, u->pid, page);
		if (!d->used) {
			*d = *u;
			d->page = page;
			n++;
			continue;
		}
		if (u->count && (!d->count || u->first < d->first))
			d->first = u->first;
		if (u->count && (!d->count || u->last > d->last))
			d->last = u->last;
		d->count += u->count;
		d->flags |= u->flags;
	}
	free(m->units);
	m->units = tab;
	m->cap = cap;
	m->n = n;
	m->shift = shift;
	return 0;
}

int rp_mm_init(struct rp_memmap *m)
{
	memset(m, 0, sizeof(*m));
	m->shift = RP_MM_SHIFT0;
	m->cap = 1024;
	m->units = calloc(m->cap, sizeof(*m->units));
	return m->units ? 0 : -ENOMEM;
}

void rp_mm_free(struct rp_memmap *m)
{
	free(m->units);
	free(m->ranges);
	memset(m, 0, sizeof(*m));
}

/* The unit of addr, made if new; NULL on ENOMEM. Keeps the table at most half full. */
static struct rp_unit *unit_of(struct rp_memmap *m, uint32_t pid, uint64_t addr)
{
	struct rp_unit *u = slot(m->units, m->cap, pid, addr >> m->shift);

	if (u->used)
		return u;
	if (m->n + 1 > m->cap / 2) {
		int rc = 0;

		if (m->cap < 2 * (size_t)RP_MM_MAX_UNITS)
			rc = rebuild(m, m->cap * 2, m->shift);
		else	/* coarser units until a quarter of the table is free again */
			while (!rc && m->n + 1 > m->cap / 4 && m->shift < 63)
				rc = rebuild(m, m->cap, m->shift + 1);
		if (rc)
			return NULL;
		u = slot(m->units, m->cap, pid, addr >> m->shift);
		if (u->used)
			return u;
	}
	*u = (struct rp_unit){ .page = addr >> m->shift, .pid = pid, .used = 1 };
	m->n++;
	return u;
}

int rp_mm_fault(struct rp_memmap *m, uint32_t pid, uint64_t addr, uint64_t ts, uint8_t flags)
{
	struct rp_unit *u = unit_of(m, pid, addr);

	if (!u)
		return -ENOMEM;
	if (!u->count || ts < u->first)
		u->first = ts;
	if (!u->count || ts > u->last)
		u->last = ts;
	if (u->count < UINT32_MAX)
		u->count++;
	u->flags |= flags;
	return 0;
}

int rp_mm_mark(struct rp_memmap *m, uint32_t pid, uint64_t addr, uint64_t len, uint8_t flag)
{
	uint64_t end = len && addr + len > addr ? addr + len : len ? UINT64_MAX : addr + 1;

	if (end <= addr)
		end = UINT64_MAX;	/* the last page of the address space */
	if ((end - 1 - addr) >> m->shift < RP_MM_MARK_UNITS) {
		/* unit by unit (the unit may grow on the way: then fewer steps) */
		for (uint64_t a = addr;;) {
			struct rp_unit *u = unit_of(m, pid, a);
			uint64_t next;

			if (!u)
				return -ENOMEM;
			u->flags |= flag;
			next = ((a >> m->shift) + 1) << m->shift;
			if (next <= a || next >= end)
				return 0;
			a = next;
		}
	}
	/* a long range: its first unit now, its display cells when they are drawn */
	struct rp_unit *u = unit_of(m, pid, addr);

	if (!u)
		return -ENOMEM;
	u->flags |= flag;
	if (m->nranges == RP_MM_MAX_RANGES) {
		m->ranges_dropped++;
		return 0;
	}
	if (!m->ranges) {
		m->ranges = malloc(RP_MM_MAX_RANGES * sizeof(*m->ranges));
		if (!m->ranges)
			return -ENOMEM;
	}
	m->ranges[m->nranges++] = (struct rp_range){
		.start = addr, .end = end, .pid = pid,
		.flag = flag,
	};
	return 0;
}

static int unit_cmp(const void *a, const void *b)
{
	const struct rp_unit *x = a, *y = b;

	if (x->pid != y->pid)
		return x->pid < y->pid ? -1 : 1;
	return x->page < y->page ? -1 : x->page > y->page;
}

struct group {
	uint32_t pid;
	size_t from, to;	/* units [from, to) */
	uint64_t faults;
};

static int group_cmp(const void *a, const void *b)
{
	const struct group *x = a, *y = b;

	if (x->faults != y->faults)
		return x->faults > y->faults ? -1 : 1;
	return x->pid < y->pid ? -1 : x->pid > y->pid;
}

static int group_pid_cmp(const void *a, const void *b)
{
	const struct group *x = a, *y = b;

	return x->pid < y->pid ? -1 : x->pid > y->pid;
}

struct gap {
	size_t at;		/* a region starts at unit `at` */
	uint64_t units;
};

static int gap_cmp(const void *a, const void *b)
{
	const struct gap *x = a, *y = b;

	if (x->units != y->units)
		return x->units > y->units ? -1 : 1;
	return x->at < y->at ? -1 : x->at > y->at;
}

/* The cells of one region: units [from, to) of u, sorted, same pid. */
static int fill_region(const struct rp_memmap *m, const struct rp_unit *u, size_t from,
		       size_t to, uint32_t budget, struct rp_mm_region *r)
{
	uint64_t span = u[to - 1].page - u[from].page + 1, first;
	unsigned k = 0;	/* a cell is 2^k units */
	uint32_t n = 0;

	while (k < 63 && ((span - 1) >> k) + 1 > budget)
		k++;
	first = u[from].page & ~((1ull << k) - 1);
	r->pid = u[from].pid;
	r->cell_shift = m->shift + k;
	r->start = first << m->shift;
	{
		uint64_t ncells = ((u[to - 1].page - first) >> k) + 1;

		r->end = ncells > (UINT64_MAX - r->start) >> r->cell_shift ? UINT64_MAX :
			 r->start + (ncells << r->cell_shift);
	}
	r->cells = calloc(to - from, sizeof(*r->cells));
	if (!r->cells)
		return -ENOMEM;
	for (size_t i = from; i < to; i++) {
		uint32_t idx = (uint32_t)((u[i].page - first) >> k);
		struct rp_mm_cell *c = n && r->cells[n - 1].idx == idx ? &r->cells[n - 1] : NULL;

		if (!c) {
			c = &r->cells[n++];
			c->idx = idx;
		}
		if (u[i].count) {
			if (!c->count || u[i].first < c->first)
				c->first = u[i].first;
			if (!c->count || u[i].last > c->last)
				c->last = u[i].last;
			c->count = c->count + u[i].count < c->count ? UINT32_MAX : c->count + u[i].count;
		}
		c->flags |= u[i].flags;
		r->faults += u[i].count;
	}
	r->n = n;
	/* long marked ranges: every cell they touch */
	for (size_t q = 0; q < m->nranges; q++) {
		const struct rp_range *g = &m->ranges[q];

		if (g->pid != r->pid || g->end <= r->start || g->start >= r->end)
			continue;
		for (uint32_t c = 0; c < n; c++) {
			uint64_t cs = r->start + ((uint64_t)r->cells[c].idx << r->cell_shift);

			if (cs < g->end && (cs + (1ull << r->cell_shift) > g->start ||
					    cs + (1ull << r->cell_shift) < cs))
				r->cells[c].flags |= g->flag;
		}
	}
	for (uint32_t c = 0; c < n; c++)
		r->flags |= r->cells[c].flags;
	return 0;
}

int rp_mm_regions(const struct rp_memmap *m, uint32_t max_regions, uint32_t cell_budget,
		  struct rp_mm_region **out, uint32_t *nout, uint32_t *dropped)
{
	struct rp_unit *u = malloc((m->n ? m->n : 1) * sizeof(*u));
	struct group *g = malloc((m->n ? m->n : 1) * sizeof(*g));
	struct gap *gaps = malloc((m->n ? m->n : 1) * sizeof(*gaps));
	uint8_t *cut = calloc(m->n ? m->n : 1, 1);
	struct rp_mm_region *r = NULL;
	size_t nu = 0, ng = 0, ngaps = 0, nr = 0;
	uint32_t budget;
	int rc = -ENOMEM;

	*out = NULL;
	*nout = *dropped = 0;
	if (!u || !g || !gaps || !cut || !max_regions)
		goto out;
	for (size_t i = 0; i < m->cap; i++)
		if (m->units[i].used)
			u[nu++] = m->units[i];
	qsort(u, nu, sizeof(*u), unit_cmp);
	for (size_t i = 0; i < nu; i++) {
		if (!i || u[i].pid != u[i - 1].pid)
			g[ng++] = (struct group){ .pid = u[i].pid, .from = i };
		g[ng - 1].to = i + 1;
		g[ng - 1].faults += u[i].count;
	}
	/* the processes with most faults keep a region each */
	qsort(g, ng, sizeof(*g), group_cmp);
	if (ng > max_regions) {
		*dropped = (uint32_t)(ng - max_regions);
		ng = max_regions;
	}
	qsort(g, ng, sizeof(*g), group_pid_cmp);
	/* and the regions left are cut where pages are furthest apart */
	for (size_t k = 0; k < ng; k++)
		for (size_t i = g[k].from + 1; i < g[k].to; i++) {
			uint64_t units = u[i].page - u[i - 1].page - 1;

			if (units > RP_MM_GAP >> m->shift)
				gaps[ngaps++] = (struct gap){ i, units };
		}
	qsort(gaps, ngaps, sizeof(*gaps), gap_cmp);
	for (size_t i = 0; i < ngaps && i < max_regions - ng; i++)
		cut[gaps[i].at] = 1;
	for (size_t k = 0; k < ng; k++) {
		nr++;
		for (size_t i = g[k].from + 1; i < g[k].to; i++)
			nr += cut[i];
	}
	r = calloc(nr ? nr : 1, sizeof(*r));
	if (!r)
		goto out;
	rc = 0;
	budget = nr ? cell_budget / (uint32_t)nr : cell_budget;
	if (budget < 64)
		budget = 64;
	nr = 0;
	for (size_t k = 0; k < ng && !rc; k++) {
		size_t from = g[k].from;

		for (size_t i = g[k].from + 1; i <= g[k].to && !rc; i++) {
			if (i < g[k].to && !cut[i])
				continue;
			rc = fill_region(m, u, from, i, budget, &r[nr++]);
			from = i;
		}
	}
	if (rc) {
		rp_mm_free_regions(r, (uint32_t)nr);
		r = NULL;
		nr = 0;
	}
	*out = r;
	*nout = (uint32_t)nr;
out:
	free(u);
	free(g);
	free(gaps);
	free(cut);
	return rc;
}

void rp_mm_free_regions(struct rp_mm_region *r, uint32_t n)
{
	for (uint32_t i = 0; r && i < n; i++)
		free(r[i].cells);
	free(r);
}
