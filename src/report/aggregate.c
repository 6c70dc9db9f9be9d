// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "aggregate.h"

#define LEAD (RP_NBINS / 16)	/* bins kept free before the first, for faults printed late */

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a + b < a ? UINT64_MAX : a + b;
}

/* --- distributions ----------------------------------------------------------- */

static unsigned qidx(uint64_t v)
{
	unsigned e;

	if (v < (1u << RP_QSUB))
		return (unsigned)v;
	e = 63 - (unsigned)__builtin_clzll(v);
	return (e - RP_QSUB + 1) << RP_QSUB | (unsigned)(v >> (e - RP_QSUB) & ((1u << RP_QSUB) - 1));
}

static uint64_t qmid(unsigned i)
{
	unsigned e, m;
	uint64_t lo, w;

	if (i < (1u << RP_QSUB))
		return i;
	e = (i >> RP_QSUB) + RP_QSUB - 1;
	m = i & ((1u << RP_QSUB) - 1);
	lo = (uint64_t)((1u << RP_QSUB) + m) << (e - RP_QSUB);
	w = 1ull << (e - RP_QSUB);
	return lo + w / 2;
}

static void q_add(struct rp_qhist *h, uint64_t v)
{
	if (!h->n || v < h->min)
		h->min = v;
	if (!h->n || v > h->max)
		h->max = v;
	h->n++;
	h->sum = sat_add(h->sum, v);
	h->b[qidx(v)]++;
}

/* A part of the wait the tracer may not have seen (RP_NONE). */
static void q_add_opt(struct rp_qhist *h, uint64_t v)
{
	if (v == RP_NONE)
		h->nulls++;
	else
		q_add(h, v);
}

uint64_t rp_qhist_quantile(const struct rp_qhist *h, double q)
{
	uint64_t rank, cum = 0;

	if (!h->n)
		return 0;
	rank = (uint64_t)(q * (double)h->n);
	if ((double)rank < q * (double)h->n)
		rank++;
	if (rank < 1)
		rank = 1;
	if (rank > h->n)
		rank = h->n;
	for (unsigned i = 0; i < RP_QBUCKETS; i++) {
		cum += h->b[i];
		if (cum >= rank) {
			uint64_t v = qmid(i);

			return v < h->min ? h->min : v > h->max ? h->max : v;
		}
	}
	return h->max;
}

/* --- the time axis ------------------------------------------------------------- */

/* Every per-bin array moved to a window of bins [base, base+RP_NBINS) 2^shift ns wide. */
static int relayout(struct rp_agg *a, unsigned shift, uint64_t base)
{
	struct rp_cell *nc[RP_MAX_LANES + 1] = { 0 };
	uint32_t (*nh)[FL_LAT_BUCKETS] = calloc(RP_NBINS, sizeof(*nh));
	unsigned d = shift - a->axis.shift;
	uint64_t ob = a->axis.base;

	/* everything allocated first: a failure leaves the old layout whole */
	for (uint32_t l = 0; nh && l < a->nlanes; l++)
		if (a->lanes[l].cells && !(nc[l] = calloc(RP_NBINS, sizeof(struct rp_cell)))) {
			free(nh);
			nh = NULL;
		}
	if (!nh) {
		for (uint32_t l = 0; l < a->nlanes; l++)
			free(nc[l]);
		return -ENOMEM;
	}
	for (uint32_t l = 0; l < a->nlanes; l++) {
		struct rp_cell *oc = a->lanes[l].cells;

		if (!oc)
			continue;
		for (uint64_t i = 0; i < RP_NBINS; i++) {
			uint64_t j = ((ob + i) >> d) - base;

			if (j >= RP_NBINS)
				continue;	/* an empty bin: the window holds every time binned */
			nc[l][j].n += oc[i].n;
			for (int r = 0; r < RP_NRES; r++)
				nc[l][j].blocked[r] = sat_add(nc[l][j].blocked[r], oc[i].blocked[r]);
		}
		free(oc);
		a->lanes[l].cells = nc[l];
	}
	for (uint64_t i = 0; i < RP_NBINS; i++) {
		uint64_t j = ((ob + i) >> d) - base;

		if (j >= RP_NBINS)
			continue;
		for (int k = 0; k < FL_LAT_BUCKETS; k++)
			nh[j][k] += a->heat[i][k];
	}
	free(a->heat);
	a->heat = nh;
	return 0;
}

/* The window made to hold [lo, hi] besides every time binned before. */
static int axis_fit(struct rp_agg *a, uint64_t lo, uint64_t hi)
{
	struct rp_axis *x = &a->axis;
	uint64_t tmin = x->any && x->tmin < lo ? x->tmin : lo;
	uint64_t tmax = x->any && x->tmax > hi ? x->tmax : hi;
	unsigned shift = x->any ? x->shift : RP_SHIFT0;
	uint64_t base;
	int rc = 0;

	while (shift < 63 && (tmax >> shift) - (tmin >> shift) + 1 + LEAD > RP_NBINS)
		shift++;
	if (!x->any || shift != x->shift || tmin >> shift < x->base ||
	    tmax >> shift >= x->base + RP_NBINS) {
		base = tmin >> shift > LEAD ? (tmin >> shift) - LEAD : 0;
		if (x->any)
			rc = relayout(a, shift, base);
		if (rc)
			return rc;
		x->shift = shift;
		x->base = base;
		x->any = true;
	}
	x->tmin = tmin;
	x->tmax = tmax;
	return 0;
}

static void note_time(struct rp_agg *a, uint64_t t)
{
	if (!a->any_time || t < a->t_first)
		a->t_first = t;
	if (!a->any_time || t > a->t_last)
		a->t_last = t;
	a->any_time = true;
}

/* --- lanes ----------------------------------------------------------------------- */

static int tids_grow(struct rp_agg *a)
{
	size_t cap = a->tids.cap ? a->tids.cap * 2 : 256;
	uint64_t *keys = calloc(cap, sizeof(*keys));
	uint32_t *lane = malloc(cap * sizeof(*lane));

	if (!keys || !lane) {
		free(keys);
		free(lane);
		return -ENOMEM;
	}
	memset(lane, 0xff, cap * sizeof(*lane));
	for (size_t i = 0; i < a->tids.cap; i++) {
		size_t j;

		if (a->tids.lane[i] == UINT32_MAX)
			continue;
		for (j = a->tids.keys[i] * 0x9e3779b97f4a7c15ULL >> 20 & (cap - 1);
		     lane[j] != UINT32_MAX; j = (j + 1) & (cap - 1))
			;
		keys[j] = a->tids.keys[i];
		lane[j] = a->tids.lane[i];
	}
	free(a->tids.keys);
	free(a->tids.lane);
	a->tids.keys = keys;
	a->tids.lane = lane;
	a->tids.cap = cap;
	return 0;
}

/* The lane of pid/tid, made for a thread not seen before; NULL on ENOMEM. */
static struct rp_lane *lane_of(struct rp_agg *a, const struct rp_fault *f, uint32_t *idx)
{
	uint64_t key = (uint64_t)f->pid << 32 | f->tid;
	struct rp_lane *l;
	size_t j;

	if (a->tids.n + 1 > a->tids.cap / 2 && tids_grow(a))
		return NULL;
	for (j = key * 0x9e3779b97f4a7c15ULL >> 20 & (a->tids.cap - 1);
	     a->tids.lane[j] != UINT32_MAX; j = (j + 1) & (a->tids.cap - 1))
		if (a->tids.keys[j] == key) {
			*idx = a->tids.lane[j];
			l = &a->lanes[*idx];
			if (f->vcpu >= 0 && !l->threads)
				l->vcpu = f->vcpu;	/* known as a vCPU only from some fault on */
			return l;
		}
	*idx = a->nlanes < RP_MAX_LANES ? a->nlanes : RP_MAX_LANES;
	l = &a->lanes[*idx];
	if (!l->cells) {
		l->cells = calloc(RP_NBINS, sizeof(*l->cells));
		if (!l->cells)
			return NULL;
		l->vcpu = -1;
	}
	if (*idx < RP_MAX_LANES) {
		a->nlanes++;
		l->pid = f->pid;
		l->tid = f->tid;
		l->vcpu = f->vcpu;
		memcpy(l->comm, f->comm, sizeof(l->comm));
	} else {
		if (!a->shared_used)
			a->nlanes++;
		a->shared_used = true;
		l->threads++;
	}
	a->tids.keys[j] = key;
	a->tids.lane[j] = *idx;
	a->tids.n++;
	return l;
}

int rp_agg_lane_find(const struct rp_agg *a, uint32_t pid, uint32_t tid)
{
	uint64_t key = (uint64_t)pid << 32 | tid;

	for (size_t j = key * 0x9e3779b97f4a7c15ULL >> 20 & (a->tids.cap - 1);
	     a->tids.lane[j] != UINT32_MAX; j = (j + 1) & (a->tids.cap - 1))
		if (a->tids.keys[j] == key)
			return (int)a->tids.lane[j];
	return -1;
}

/* --- individual faults ------------------------------------------------------------- */

static uint64_t rnd(struct rp_agg *a)
{
	/* xorshift64*: a fixed seed, so the same recording gives the same report */
	a->rng ^= a->rng >> 12;
	a->rng ^= a->rng << 25;
	a->rng ^= a->rng >> 27;
	return a->rng * 0x2545f4914f6cdd1dULL;
}

static void sift_down(struct rp_iv *h, uint32_t n, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		struct rp_iv t;

		if (l < n && h[l].f.latency < h[m].f.latency)
			m = l;
		if (r < n && h[r].f.latency < h[m].f.latency)
			m = r;
		if (m == i)
			return;
		t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

static int lat_desc(const void *a, const void *b)
{
	const struct rp_iv *x = a, *y = b;

	if (x->f.latency != y->f.latency)
		return x->f.latency > y->f.latency ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Every fault so far was kept; from now on the slowest half and a uniform sample. */
static int start_sampling(struct rp_agg *a)
{
	uint32_t n = a->nkeep;

	a->cap_slow = n / 2;
	a->cap_sample = n - a->cap_slow;
	a->slow = malloc((a->cap_slow ? a->cap_slow : 1) * sizeof(*a->slow));
	a->sample = malloc((a->cap_sample ? a->cap_sample : 1) * sizeof(*a->sample));
	if (!a->slow || !a->sample)
		return -ENOMEM;
	/* a uniform subset of what was seen: a partial Fisher-Yates shuffle */
	for (uint32_t i = 0; i < a->cap_sample; i++) {
		uint32_t j = i + (uint32_t)(rnd(a) % (n - i));
		struct rp_iv t = a->keep[i];

		a->keep[i] = a->keep[j];
		a->keep[j] = t;
		a->sample[i] = a->keep[i];
	}
	a->nsample = a->cap_sample;
	qsort(a->keep, n, sizeof(*a->keep), lat_desc);
	memcpy(a->slow, a->keep, a->cap_slow * sizeof(*a->slow));
	a->nslow = a->cap_slow;
	for (uint32_t i = a->nslow / 2; i-- > 0;)
		sift_down(a->slow, a->nslow, i);
	free(a->keep);
	a->keep = NULL;
	a->nkeep = 0;
	a->sampling = true;
	return 0;
}

static int keep_fault(struct rp_agg *a, const struct rp_fault *f, uint32_t lane)
{
	struct rp_iv iv = { .f = *f, .seq = a->seq, .lane = lane };
	uint64_t j;

	if (!a->cap_keep)
		return 0;
	if (!a->sampling) {
		if (a->nkeep < a->cap_keep) {
			a->keep[a->nkeep++] = iv;
			return 0;
		}
		if (start_sampling(a))
			return -ENOMEM;
	}
	if (a->nslow && f->latency > a->slow[0].f.latency) {
		a->slow[0] = iv;
		sift_down(a->slow, a->nslow, 0);
	}
	/* reservoir sampling (Algorithm R) over every fault, seq being this one's index */
	j = rnd(a) % (a->seq + 1);
	if (j < a->nsample)
		a->sample[j] = iv;
	return 0;
}

static int seq_cmp(const void *a, const void *b)
{
	const struct rp_iv *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int lane_start_cmp(const void *a, const void *b)
{
	const struct rp_iv *x = a, *y = b;

	if (x->lane != y->lane)
		return x->lane < y->lane ? -1 : 1;
	if (x->f.start != y->f.start)
		return x->f.start < y->f.start ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

struct rp_iv *rp_agg_intervals(struct rp_agg *a, uint32_t *n, uint32_t *slowest)
{
	uint32_t total = a->sampling ? a->nslow + a->nsample : a->nkeep, m = 0;
	struct rp_iv *v;

	*n = *slowest = 0;
	if (!total)
		return NULL;
	v = malloc(total * sizeof(*v));
	if (!v)
		return NULL;
	if (!a->sampling) {
		memcpy(v, a->keep, total * sizeof(*v));
		m = total;
	} else {
		/* the slow ones first: a fault in both sets is kept as slow */
		memcpy(v, a->slow, a->nslow * sizeof(*v));
		qsort(v, a->nslow, sizeof(*v), seq_cmp);
		memcpy(v + a->nslow, a->sample, a->nsample * sizeof(*v));
		qsort(v + a->nslow, a->nsample, sizeof(*v), seq_cmp);
		m = a->nslow;
		for (uint32_t i = a->nslow; i < total; i++)
			if (!bsearch(&v[i], v, a->nslow, sizeof(*v), seq_cmp))
				v[m++] = v[i];
		*slowest = a->nslow;
	}
	qsort(v, m, sizeof(*v), lane_start_cmp);
	*n = m;
	return v;
}

/* --- records --------------------------------------------------------------------------- */

static void count_name(struct rp_names *c, const char *name)
{
	for (uint32_t i = 0; i < c->n; i++)
		if (!strcmp(c->v[i].name, name)) {
			c->v[i].count++;
			return;
		}
	if (c->n == RP_MAX_NAMES) {
		c->other++;
		return;
	}
	snprintf(c->v[c->n].name, sizeof(c->v[0].name), "%s", name);
	c->v[c->n++].count = 1;
}

#define EV_KEEP(list, item)					\
	do {							\
		(list).total++;					\
		if ((list).n < RP_MAX_EVENTS)			\
			(list).v[(list).n++] = (item);		\
	} while (0)

static int add_fault(struct rp_agg *a, const struct rp_fault *f)
{
	uint64_t s = f->start, e = f->start + f->latency, last = e > s ? e - 1 : s;
	uint64_t w, b0, b1;
	struct rp_lane *l;
	uint32_t li;
	int rc;

	l = lane_of(a, f, &li);
	if (!l)
		return -ENOMEM;
	rc = axis_fit(a, s, last);
	if (rc)
		return rc;
	note_time(a, s);
	note_time(a, e);
	w = 1ull << a->axis.shift;
	b0 = rp_bin_of(&a->axis, s);
	b1 = rp_bin_of(&a->axis, last);
	l->cells[b0].n++;
	a->heat[b0][fl_lat_bucket(f->latency)]++;
	for (uint64_t b = b0; e > s && b <= b1; b++) {
		uint64_t bs = (a->axis.base + b) << a->axis.shift;
		uint64_t be = bs + w < bs ? UINT64_MAX : bs + w;

		l->cells[b].blocked[f->res] += (e < be ? e : be) - (s > bs ? s : bs);
	}
	l->faults++;
	l->blocked_ns = sat_add(l->blocked_ns, f->latency);
	if (f->latency > l->max_ns)
		l->max_ns = f->latency;

	a->faults++;
	a->waiting += f->waiting;
	a->blocked_ns = sat_add(a->blocked_ns, f->latency);
	a->by_res[f->res]++;
	a->by_mode[f->mode]++;
	q_add(&a->part[RP_LAT], f->latency);
	q_add_opt(&a->part[RP_NOTIFY], f->notify);
	q_add_opt(&a->part[RP_RESOLVE], f->resolve);
	q_add_opt(&a->part[RP_WAKE], f->wake);
	q_add_opt(&a->part[RP_RUN], f->run);
	q_add(&a->res_lat[f->res], f->latency);
	{
		const uint64_t parts[RP_NPARTS] = { f->latency, f->notify, f->resolve, f->wake, f->run };

		for (int p = 0; p < RP_NPARTS; p++)
			if (parts[p] != RP_NONE || p == RP_LAT) {
				a->res_part_sum[f->res][p] = sat_add(a->res_part_sum[f->res][p], parts[p]);
				a->res_part_n[f->res][p]++;
			}
	}
	rc = rp_mm_fault(&a->mm, f->pid, f->addr, s, f->waiting ? RP_MM_STUCK : 0);
	if (!rc)
		rc = keep_fault(a, f, li);
	if (rc)
		return rc;
	if (f->vcpu >= 0)
		fl_vms_set_vcpu(&a->computed, f->pid, f->comm, f->tid, f->vcpu);
	fl_vms_add(&a->computed, f->pid, f->comm, f->tid, f->comm, s, e);
	a->seq++;
	return 0;
}

static int add_race(struct rp_agg *a, const struct rp_race *r)
{
	bool stranded = !strcmp(r->kind, "waiter_stranded");
	int rc = 0;

	note_time(a, r->ts);
	EV_KEEP(a->races, *r);
	count_name(&a->race_kinds, r->kind);
	if (!stranded && r->start)
		rc = rp_mm_mark(&a->mm, r->pid, r->start, r->len, RP_MM_RACE);
	if (!rc && r->waiter_addr)
		rc = rp_mm_mark(&a->mm, r->pid, r->waiter_addr, 0, stranded ? RP_MM_STUCK : RP_MM_RACE);
	return rc;
}

static int add_poison(struct rp_agg *a, const struct rp_poison *p)
{
	note_time(a, p->ts);
	EV_KEEP(a->poison, *p);
	count_name(&a->poison_kinds, p->kind);
	if (!p->addr)
		return 0;	/* a machine error names a pfn, not an address of the process */
	return rp_mm_mark(&a->mm, p->pid, p->addr, p->len, RP_MM_POISON);
}

static int add_vm(struct rp_agg *a, const struct rp_vm *vm)
{
	struct rp_vm *d = NULL;

	for (uint32_t i = 0; i < a->nvms; i++)
		if (a->vms[i].pid == vm->pid)
			d = &a->vms[i];	/* top --json repeats them: the last one holds */
	if (!d) {
		if (a->nvms == FL_MAX_VMS) {
			a->vms_dropped++;
			return 0;
		}
		d = &a->vms[a->nvms++];
	}
	free(d->vcpus);
	*d = *vm;
	d->vcpus = NULL;
	if (vm->nvcpus) {
		d->vcpus = malloc(vm->nvcpus * sizeof(*d->vcpus));
		if (!d->vcpus) {
			d->nvcpus = 0;
			return -ENOMEM;
		}
		memcpy(d->vcpus, vm->vcpus, vm->nvcpus * sizeof(*d->vcpus));
	}
	return 0;
}

int rp_agg_add(struct rp_agg *a, const struct rp_record *rec)
{
	switch (rec->kind) {
	case RP_FAULT:
		return add_fault(a, &rec->fault);
	case RP_RACE:
		return add_race(a, &rec->race);
	case RP_POISON:
		return add_poison(a, &rec->poison);
	case RP_LOST:
		if (rec->lost.ts)
			note_time(a, rec->lost.ts);
		EV_KEEP(a->lost, rec->lost);
		count_name(&a->lost_where, rec->lost.where);
		a->lost_records = sat_add(a->lost_records, rec->lost.count);
		return 0;
	case RP_LATE:
		note_time(a, rec->late.ts);
		EV_KEEP(a->late, rec->late);
		return 0;
	case RP_SIGNAL:
		note_time(a, rec->signal.ts);
		EV_KEEP(a->signals, rec->signal);
		return 0;
	case RP_MEMFAULT:
		note_time(a, rec->memfault.ts);
		EV_KEEP(a->memfaults, rec->memfault);
		return 0;
	case RP_SUMMARY:
		a->have_summary = true;
		a->summary = rec->summary;
		a->nsummaries++;
		return 0;
	case RP_VMSTATS:
		return add_vm(a, &rec->vm);
	default:
		return 0;
	}
}

int rp_agg_init(struct rp_agg *a, const struct rp_opts *o)
{
	memset(a, 0, sizeof(*a));
	a->o = *o;
	if (a->o.max_intervals > RP_MAX_INTERVALS)
		a->o.max_intervals = RP_MAX_INTERVALS;
	a->cap_keep = a->o.max_intervals;
	a->rng = 0x6661756c746c696eULL;	/* "faultlin" */
	a->heat = calloc(RP_NBINS, sizeof(*a->heat));
	a->keep = malloc((a->cap_keep ? a->cap_keep : 1) * sizeof(*a->keep));
	if (!a->heat || !a->keep || tids_grow(a) || rp_mm_init(&a->mm)) {
		rp_agg_free(a);
		return -ENOMEM;
	}
	return 0;
}

void rp_agg_free(struct rp_agg *a)
{
	for (uint32_t l = 0; l <= RP_MAX_LANES; l++)
		free(a->lanes[l].cells);
	for (uint32_t i = 0; i < a->nvms; i++)
		free(a->vms[i].vcpus);
	free(a->tids.keys);
	free(a->tids.lane);
	free(a->heat);
	free(a->keep);
	free(a->slow);
	free(a->sample);
	rp_mm_free(&a->mm);
	fl_vms_free(&a->computed);
	memset(a, 0, sizeof(*a));
}

/* --- per-VM statistics ------------------------------------------------------------------ */

static int vm_pid_cmp(const void *a, const void *b)
{
	const struct rp_vm *x = a, *y = b;

	return x->pid < y->pid ? -1 : x->pid > y->pid;
}

struct rp_vm *rp_agg_vms(struct rp_agg *a, uint32_t *n)
{
	uint32_t cap = a->nvms + (uint32_t)a->computed.nvms, m = 0;
	struct rp_vm *v = calloc(cap ? cap : 1, sizeof(*v));

	*n = 0;
	if (!v)
		return NULL;
	for (uint32_t i = 0; i < a->nvms; i++) {
		v[m] = a->vms[i];
		v[m].vcpus = NULL;
		if (a->vms[i].nvcpus) {
			v[m].vcpus = malloc(a->vms[i].nvcpus * sizeof(*v[m].vcpus));
			if (!v[m].vcpus)
				goto fail;
			memcpy(v[m].vcpus, a->vms[i].vcpus, a->vms[i].nvcpus * sizeof(*v[m].vcpus));
		}
		m++;
	}
	/* a process the recording has no vm_stats for: the same figures from its faults */
	for (int i = 0; i < a->computed.nvms; i++) {
		const struct fl_vm_stats *c = a->computed.vms[i];
		bool recorded = false;

		for (uint32_t k = 0; k < a->nvms; k++)
			recorded |= a->vms[k].pid == c->pid;
		if (recorded)
			continue;
		v[m] = (struct rp_vm){ .pid = c->pid, .nvcpus = (uint32_t)c->nvcpus,
				       .nonvcpu = c->nonvcpu, .computed = true,
				       .all_vcpu_blocked_ns = fl_vms_all_vcpu_blocked(c),
				       .lower_bound = c->iv_dropped != 0 };
		memcpy(v[m].comm, c->comm, sizeof(v[m].comm));
		v[m].total_blocked_ns = c->nonvcpu.blocked_ns;
		if (c->nvcpus) {
			v[m].vcpus = calloc((size_t)c->nvcpus, sizeof(*v[m].vcpus));
			if (!v[m].vcpus)
				goto fail;
		}
		for (int k = 0; k < c->nvcpus; k++) {
			v[m].vcpus[k].vcpu = c->vcpus[k].vcpu;
			v[m].vcpus[k].tid = c->vcpus[k].tid;
			v[m].vcpus[k].lat = c->vcpus[k].lat;
			v[m].total_blocked_ns = sat_add(v[m].total_blocked_ns, c->vcpus[k].lat.blocked_ns);
		}
		m++;
	}
	qsort(v, m, sizeof(*v), vm_pid_cmp);
	*n = m;
	return v;
fail:
	rp_agg_free_vms(v, m + 1);
	return NULL;
}

void rp_agg_free_vms(struct rp_vm *v, uint32_t n)
{
	for (uint32_t i = 0; v && i < n; i++)
		free(v[i].vcpus);
	free(v);
}
