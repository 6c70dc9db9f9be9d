// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include "html.h"
#include "report_assets.h"	/* rp_css, rp_js: built from src/report/report.{css,js} */
#include "version.h"

/* A code point from UTF-8 at s (n bytes left): its length, or 0 when not valid UTF-8. */
static int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
	int len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 0;
	static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
	uint32_t v;

	if (!len || s[0] > 0xf4 || (size_t)len > n)
		return 0;
	v = s[0] & (0x7f >> len);
	for (int i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		v = v << 6 | (s[i] & 0x3f);
	}
	if (v < min[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
		return 0;	/* overlong, out of range, or a surrogate */
	*cp = v;
	return len;
}

void rp_json_str(FILE *out, const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;

	fputc('"', out);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = s[i];
		uint32_t cp;
		int n;

		if (c == '"' || c == '\\') {
			fputc('\\', out);
			fputc(c, out);
		} else if (c >= 0x20 && c < 0x7f && c != '<' && c != '>' && c != '&') {
			fputc(c, out);	/* < > &: no </script> or <!-- can end the data island */
		} else if (c < 0x80) {
			fprintf(out, "\\u%04x", c);
		} else if ((n = utf8_decode(s + i, len - i, &cp))) {
			if (cp >= 0x10000)
				fprintf(out, "\\u%04x\\u%04x", 0xd800 + ((cp - 0x10000) >> 10),
					0xdc00 + ((cp - 0x10000) & 0x3ff));
			else
				fprintf(out, "\\u%04x", cp);
			i += (size_t)n - 1;
		} else {
			fputs("\\ufffd", out);	/* a byte that is no UTF-8: replaced, not passed on */
		}
	}
	fputc('"', out);
}

static void jstr(FILE *out, const char *s)
{
	rp_json_str(out, s, strlen(s));
}

/* ,"key": */
static void key(FILE *out, const char *k, bool first)
{
	fprintf(out, "%s\"%s\":", first ? "" : ",", k);
}

static void jopt(FILE *out, uint64_t v)
{
	if (v == RP_NONE)
		fputs("null", out);
	else
		fprintf(out, "%" PRIu64, v);
}

static void jaddr(FILE *out, uint64_t a)
{
	fprintf(out, "\"0x%" PRIx64 "\"", a);
}

/* t relative to the first time of the recording (an event's t may lie before it: signed). */
static void jrel(FILE *out, const struct rp_agg *a, uint64_t t)
{
	if (t >= a->t_first)
		fprintf(out, "%" PRIu64, t - a->t_first);
	else if (a->t_first - t <= INT64_MAX)
		fprintf(out, "-%" PRIu64, a->t_first - t);
	else
		fputs("null", out);
}

static void html_text(FILE *out, const char *s)
{
	for (; *s; s++)
		switch (*s) {
		case '<': fputs("&lt;", out); break;
		case '>': fputs("&gt;", out); break;
		case '&': fputs("&amp;", out); break;
		case '"': fputs("&quot;", out); break;
		default: fputc(*s, out);
		}
}

static void names_obj(FILE *out, const struct rp_names *c)
{
	fputc('{', out);
	for (uint32_t i = 0; i < c->n; i++) {
		if (i)
			fputc(',', out);
		jstr(out, c->v[i].name);
		fprintf(out, ":%" PRIu64, c->v[i].count);
	}
	if (c->other)
		fprintf(out, "%s\"(others)\":%" PRIu64, c->n ? "," : "", c->other);
	fputc('}', out);
}

static void write_input(FILE *out, const struct rp_meta *m)
{
	const struct rp_reader *r = m->rd;

	fprintf(out, "\"input\":{\"lines\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"foreign\":%" PRIu64
		",\"malformed\":%" PRIu64 ",\"skips\":[", r->lines, r->bytes, r->foreign, r->malformed);
	for (uint64_t i = 0; i < r->malformed && i < RP_SKIP_EXAMPLES; i++) {
		fprintf(out, "%s{\"line\":%" PRIu64 ",\"why\":", i ? "," : "", r->skips[i].line);
		jstr(out, r->skips[i].why);
		fputc('}', out);
	}
	fputs("],\"records\":{", out);
	for (int k = 0; k < RP_NKINDS; k++)
		fprintf(out, "%s\"%s\":%" PRIu64, k ? "," : "", rp_kind_name((enum rp_kind)k),
			r->by_kind[k]);
	fputs("}}", out);
}

static void write_totals(FILE *out, const struct rp_agg *a, uint32_t vcpu_lanes)
{
	fprintf(out, ",\"totals\":{\"faults\":%" PRIu64 ",\"waiting\":%" PRIu64 ",\"blocked_ns\":%"
		PRIu64 ",\"threads\":%zu,\"lanes\":%u,\"vcpu_lanes\":%u,\"by_res\":[", a->faults,
		a->waiting, a->blocked_ns, a->tids.n, a->nlanes, vcpu_lanes);
	for (int r = 0; r < RP_NRES; r++)
		fprintf(out, "%s%" PRIu64, r ? "," : "", a->by_res[r]);
	fputs("],\"by_mode\":[", out);
	for (int k = 0; k < RP_NMODES; k++)
		fprintf(out, "%s%" PRIu64, k ? "," : "", a->by_mode[k]);
	fprintf(out, "],\"races\":%" PRIu64 ",\"poison\":%" PRIu64 ",\"lost_records\":%" PRIu64
		",\"lost_events\":%" PRIu64 ",\"late\":%" PRIu64 ",\"signals\":%" PRIu64
		",\"kvm_memory_faults\":%" PRIu64 ",\"race_kinds\":", a->races.total, a->poison.total,
		a->lost_records, a->lost.total, a->late.total, a->signals.total, a->memfaults.total);
	names_obj(out, &a->race_kinds);
	fputs(",\"poison_kinds\":", out);
	names_obj(out, &a->poison_kinds);
	fputs(",\"lost_where\":", out);
	names_obj(out, &a->lost_where);
	fputc('}', out);
	fputs(",\"summary\":", out);
	if (!a->have_summary) {
		fputs("null", out);
	} else {
		fprintf(out, "{\"duration_ns\":%" PRIu64 ",\"faults\":%" PRIu64 ",\"races\":%" PRIu64
			",\"lost\":%" PRIu64 ",\"by_res\":[", a->summary.duration_ns, a->summary.faults,
			a->summary.races, a->summary.lost);
		for (int r = 0; r < RP_NRES; r++)
			fprintf(out, "%s%" PRIu64, r ? "," : "", a->summary.by_res[r]);
		fputs("]}", out);
	}
	fprintf(out, ",\"summaries\":%" PRIu64, a->nsummaries);
}

/* Lanes in display order: by process, its vCPUs by index, then its other threads by tid. */
static int lane_cmp(const void *x, const void *y, void *arg)
{
	const struct rp_agg *a = arg;
	const struct rp_lane *p = &a->lanes[*(const uint32_t *)x];
	const struct rp_lane *q = &a->lanes[*(const uint32_t *)y];

	if (!!p->threads != !!q->threads)	/* the shared lane last */
		return p->threads ? 1 : -1;
	if (p->pid != q->pid)
		return p->pid < q->pid ? -1 : 1;
	if ((p->vcpu >= 0) != (q->vcpu >= 0))
		return p->vcpu >= 0 ? -1 : 1;
	if (p->vcpu != q->vcpu)
		return p->vcpu < q->vcpu ? -1 : 1;
	return p->tid < q->tid ? -1 : p->tid > q->tid;
}

static void write_lanes(FILE *out, const struct rp_agg *a, const uint32_t *order)
{
	fputs(",\"lanes\":[", out);
	for (uint32_t d = 0; d < a->nlanes; d++) {
		const struct rp_lane *l = &a->lanes[order[d]];

		fprintf(out, "%s{\"pid\":%u,\"tid\":%u,\"comm\":", d ? "," : "", l->pid, l->tid);
		rp_json_str(out, l->comm, strnlen(l->comm, sizeof(l->comm)));
		fputs(",\"vcpu\":", out);
		if (l->vcpu >= 0)
			fprintf(out, "%d", l->vcpu);
		else
			fputs("null", out);
		fprintf(out, ",\"faults\":%" PRIu64 ",\"blocked_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64
			",\"threads\":%u}", l->faults, l->blocked_ns, l->max_ns, l->threads);
	}
	fputc(']', out);
}

/* The used bins and a merge factor (a power of two) giving at most `budget` columns. */
static void used_bins(const struct rp_agg *a, uint64_t budget, uint64_t *bmin, uint64_t *nb,
		      uint64_t *f)
{
	*bmin = a->axis.any ? rp_bin_of(&a->axis, a->axis.tmin) : 0;
	*nb = a->axis.any ? rp_bin_of(&a->axis, a->axis.tmax) - *bmin + 1 : 0;
	*f = 1;
	while (*f < RP_NBINS && (*nb + *f - 1) / *f > budget)
		*f *= 2;
}

static void write_axis(FILE *out, const struct rp_agg *a, uint64_t bmin, uint64_t nb, uint64_t f)
{
	fprintf(out, "{\"bin_ns\":%" PRIu64 ",\"first_rel\":", f << a->axis.shift);
	jrel(out, a, a->axis.any ? (a->axis.base + bmin) << a->axis.shift : a->t_first);
	fprintf(out, ",\"n\":%" PRIu64, (nb + f - 1) / f);
}

/* One lane's bins merged f at a time into m[], as (bin, faults, blocked, main resolution). */
struct merged {
	uint64_t k, n, blk;
	int res;
};

static uint64_t merge_lane(const struct rp_cell *c, uint64_t bmin, uint64_t nb, uint64_t f,
			   struct merged *m)
{
	uint64_t count = 0;

	for (uint64_t k = 0; k * f < nb; k++) {
		uint64_t blk[RP_NRES] = { 0 }, n = 0, tot = 0;
		int best = -1;

		for (uint64_t i = bmin + k * f; i < bmin + (k + 1) * f && i < bmin + nb; i++) {
			n += c[i].n;
			for (int r = 0; r < RP_NRES; r++)
				blk[r] += c[i].blocked[r];
		}
		for (int r = 0; r < RP_NRES; r++) {
			tot += blk[r];
			if (blk[r] && (best < 0 || blk[r] > blk[best]))
				best = r;
		}
		if (n || tot)
			m[count++] = (struct merged){ k, n, tot, best };
	}
	return count;
}

static int write_cells(FILE *out, const struct rp_agg *a, const uint32_t *order)
{
	uint64_t bmin, nb, f, budget = RP_CELL_BUDGET / (a->nlanes ? a->nlanes : 1);
	struct merged *m = malloc(RP_NBINS * sizeof(*m));

	if (!m)
		return -ENOMEM;
	used_bins(a, budget < 16 ? 16 : budget, &bmin, &nb, &f);
	fputs(",\"axis\":", out);
	write_axis(out, a, bmin, nb, f);
	fputs("},\"cells\":[", out);
	for (uint32_t d = 0; d < a->nlanes; d++) {
		uint64_t n = merge_lane(a->lanes[order[d]].cells, bmin, nb, f, m);

		/* columns, not objects: a quarter of the size */
		fprintf(out, "%s{\"b\":[", d ? "," : "");
		for (uint64_t i = 0; i < n; i++)
			fprintf(out, "%s%" PRIu64, i ? "," : "", m[i].k);
		fputs("],\"n\":[", out);
		for (uint64_t i = 0; i < n; i++)
			fprintf(out, "%s%" PRIu64, i ? "," : "", m[i].n);
		fputs("],\"blk\":[", out);
		for (uint64_t i = 0; i < n; i++)
			fprintf(out, "%s%" PRIu64, i ? "," : "", m[i].blk);
		fputs("],\"r\":[", out);
		for (uint64_t i = 0; i < n; i++)
			fprintf(out, "%s%d", i ? "," : "", m[i].res);
		fputs("]}", out);
	}
	fputc(']', out);
	free(m);
	return 0;
}

static void write_heat(FILE *out, const struct rp_agg *a)
{
	uint64_t bmin, nb, f;
	uint64_t col[FL_LAT_BUCKETS];
	const char *sep = "";

	used_bins(a, RP_HEAT_COLUMNS, &bmin, &nb, &f);
	fputs(",\"heat\":", out);
	write_axis(out, a, bmin, nb, f);
	fprintf(out, ",\"buckets\":%d,\"cells\":[", FL_LAT_BUCKETS);
	/* (column, bucket, faults) triples, flat */
	for (uint64_t k = 0; k * f < nb; k++) {
		memset(col, 0, sizeof(col));
		for (uint64_t i = bmin + k * f; i < bmin + (k + 1) * f && i < bmin + nb; i++)
			for (int q = 0; q < FL_LAT_BUCKETS; q++)
				col[q] += a->heat[i][q];
		for (int q = 0; q < FL_LAT_BUCKETS; q++)
			if (col[q]) {
				fprintf(out, "%s%" PRIu64 ",%d,%" PRIu64, sep, k, q, col[q]);
				sep = ",";
			}
	}
	fputs("]}", out);
}

static void write_intervals(FILE *out, struct rp_agg *a, const uint32_t *pos, int *rc)
{
	uint32_t n, slowest;
	struct rp_iv *v = rp_agg_intervals(a, &n, &slowest);
	static const char *const cols[] = { "lane", "t", "lat", "nt", "rs", "wk", "run", "res",
					    "mode", "addr", "ps", "w", "rt", "vcpu" };

	if (!v && (a->sampling ? a->nslow + a->nsample : a->nkeep))
		*rc = -ENOMEM;
	fprintf(out, ",\"iv\":{\"n\":%u,\"slowest\":%u,\"max\":%u,\"sampled\":%s", n, slowest,
		a->cap_keep, a->sampling ? "true" : "false");
	for (unsigned col = 0; col < sizeof(cols) / sizeof(cols[0]); col++) {
		fprintf(out, ",\"%s\":[", cols[col]);
		for (uint32_t i = 0; i < n; i++) {
			const struct rp_fault *f = &v[i].f;

			if (i)
				fputc(',', out);
			switch (col) {
			case 0: fprintf(out, "%u", pos[v[i].lane]); break;
			case 1: jrel(out, a, f->start); break;
			case 2: fprintf(out, "%" PRIu64, f->latency); break;
			case 3: jopt(out, f->notify); break;
			case 4: jopt(out, f->resolve); break;
			case 5: jopt(out, f->wake); break;
			case 6: jopt(out, f->run); break;
			case 7: fprintf(out, "%u", f->res); break;
			case 8: fprintf(out, "%u", f->mode); break;
			case 9: jaddr(out, f->addr); break;
			case 10: fprintf(out, "%u", f->page_size); break;
			case 11: fputc(f->waiting ? '1' : '0', out); break;
			case 12: fprintf(out, "%u", f->retries); break;
			case 13:
				if (f->vcpu >= 0)
					fprintf(out, "%d", f->vcpu);
				else
					fputs("null", out);
				break;
			}
		}
		fputc(']', out);
	}
	fputc('}', out);
	free(v);
}

static void write_qhist(FILE *out, const char *name, const struct rp_qhist *h, bool first)
{
	key(out, name, first);
	fprintf(out, "{\"n\":%" PRIu64 ",\"nulls\":%" PRIu64 ",\"sum\":%" PRIu64 ",\"min\":%" PRIu64
		",\"max\":%" PRIu64 ",\"mean\":%" PRIu64 ",\"p50\":%" PRIu64 ",\"p90\":%" PRIu64
		",\"p99\":%" PRIu64 ",\"p999\":%" PRIu64 "}", h->n, h->nulls, h->sum,
		h->n ? h->min : 0, h->max, h->n ? h->sum / h->n : 0, rp_qhist_quantile(h, 0.5),
		rp_qhist_quantile(h, 0.9), rp_qhist_quantile(h, 0.99), rp_qhist_quantile(h, 0.999));
}

static void write_breakdown(FILE *out, const struct rp_agg *a)
{
	static const char *const parts[RP_NPARTS] = { "latency", "notify", "resolve", "wake", "run" };
	bool first = true;

	fputs(",\"parts\":{", out);
	for (int p = 0; p < RP_NPARTS; p++)
		write_qhist(out, parts[p], &a->part[p], p == 0);
	fputs("},\"by_res\":[", out);
	for (int r = 0; r < RP_NRES; r++) {
		if (!a->res_lat[r].n)
			continue;
		fprintf(out, "%s{\"res\":%d,", first ? "" : ",", r);
		first = false;
		write_qhist(out, "lat", &a->res_lat[r], true);
		fputs(",\"sums\":[", out);
		for (int p = 0; p < RP_NPARTS; p++)
			fprintf(out, "%s%" PRIu64, p ? "," : "", a->res_part_sum[r][p]);
		fputs("],\"seen\":[", out);
		for (int p = 0; p < RP_NPARTS; p++)
			fprintf(out, "%s%" PRIu64, p ? "," : "", a->res_part_n[r][p]);
		fputs("]}", out);
	}
	fputc(']', out);
}

static int write_memmap(FILE *out, const struct rp_agg *a)
{
	struct rp_mm_region *r;
	uint32_t n, dropped;
	int rc = rp_mm_regions(&a->mm, RP_MAP_REGIONS, RP_MAP_CELLS, &r, &n, &dropped);
	static const char *const cols[5] = { "c", "n", "t", "tl", "f" };

	if (rc)
		return rc;
	fprintf(out, ",\"mem\":{\"unit\":%" PRIu64 ",\"dropped_pids\":%u,\"ranges_dropped\":%" PRIu64
		",\"regions\":[", (uint64_t)1 << a->mm.shift, dropped, a->mm.ranges_dropped);
	for (uint32_t i = 0; i < n; i++) {
		fprintf(out, "%s{\"pid\":%u,\"start\":", i ? "," : "", r[i].pid);
		jaddr(out, r[i].start);
		fputs(",\"end\":", out);
		jaddr(out, r[i].end);
		fprintf(out, ",\"cell\":%" PRIu64 ",\"ncells\":%" PRIu64 ",\"faults\":%" PRIu64
			",\"flags\":%u", (uint64_t)1 << r[i].cell_shift,
			r[i].n ? (uint64_t)r[i].cells[r[i].n - 1].idx + 1 : 0, r[i].faults, r[i].flags);
		for (int col = 0; col < 5; col++) {
			fprintf(out, ",\"%s\":[", cols[col]);
			for (uint32_t k = 0; k < r[i].n; k++) {
				const struct rp_mm_cell *c = &r[i].cells[k];

				if (k)
					fputc(',', out);
				if (col == 0)
					fprintf(out, "%u", c->idx);
				else if (col == 1)
					fprintf(out, "%u", c->count);
				else if (col == 4)
					fprintf(out, "%u", c->flags);
				else if (!c->count)
					fputs("null", out);
				else
					jrel(out, a, col == 2 ? c->first : c->last);
			}
			fputc(']', out);
		}
		fputc('}', out);
	}
	fputs("]}", out);
	rp_mm_free_regions(r, n);
	return 0;
}

static void write_lat(FILE *out, const struct fl_lat_stats *l)
{
	fprintf(out, "\"faults\":%" PRIu64 ",\"blocked_ns\":%" PRIu64 ",\"dist\":[", l->faults,
		l->blocked_ns);
	for (int b = 0; b < FL_LAT_BUCKETS; b++)
		fprintf(out, "%s%" PRIu64, b ? "," : "", l->buckets[b]);
	fputc(']', out);
}

static int write_vms(FILE *out, struct rp_agg *a)
{
	uint32_t n, rows = RP_VCPU_ROWS;
	struct rp_vm *v = rp_agg_vms(a, &n);

	if (!v)
		return -ENOMEM;
	fputs(",\"vms\":[", out);
	for (uint32_t i = 0; i < n; i++) {
		uint32_t shown = v[i].nvcpus < rows ? v[i].nvcpus : rows;

		rows -= shown;
		fprintf(out, "%s{\"pid\":%u,\"comm\":", i ? "," : "", v[i].pid);
		rp_json_str(out, v[i].comm, strnlen(v[i].comm, sizeof(v[i].comm)));
		fprintf(out, ",\"computed\":%s,\"all_vcpu_blocked_ns\":%" PRIu64 ",\"lower_bound\":%s,"
			"\"total_blocked_ns\":%" PRIu64 ",\"non_vcpu\":{", v[i].computed ? "true" : "false",
			v[i].all_vcpu_blocked_ns, v[i].lower_bound ? "true" : "false",
			v[i].total_blocked_ns);
		write_lat(out, &v[i].nonvcpu);
		fprintf(out, "},\"vcpus_omitted\":%u,\"vcpus\":[", v[i].nvcpus - shown);
		for (uint32_t k = 0; k < shown; k++) {
			const struct rp_vm_vcpu *c = &v[i].vcpus[k];

			fprintf(out, "%s{\"vcpu\":%d,\"tid\":%u,", k ? "," : "", c->vcpu, c->tid);
			write_lat(out, &c->lat);
			fputs(",\"exits\":[", out);
			for (uint32_t e = 0; e < c->nexits; e++) {
				fprintf(out, "%s[", e ? "," : "");
				jstr(out, c->exits[e].name);
				fprintf(out, ",%" PRIu64 "]", c->exits[e].n);
			}
			fputs("]}", out);
		}
		fputs("]}", out);
	}
	fprintf(out, "],\"vms_dropped\":%" PRIu64, a->vms_dropped);
	rp_agg_free_vms(v, n);
	return 0;
}

static void jlane(FILE *out, const struct rp_agg *a, const uint32_t *pos, uint32_t pid,
		  uint32_t tid)
{
	int l = tid ? rp_agg_lane_find(a, pid, tid) : -1;

	if (l >= 0)
		fprintf(out, "%u", pos[l]);
	else
		fputs("null", out);
}

static void jcomm(FILE *out, const char *comm)
{
	rp_json_str(out, comm, strnlen(comm, FL_COMM_LEN));
}

static void write_events(FILE *out, const struct rp_agg *a, const uint32_t *pos)
{
	fputs(",\"events\":{\"races\":[", out);
	for (uint32_t i = 0; i < a->races.n; i++) {
		const struct rp_race *r = &a->races.v[i];

		fprintf(out, "%s{\"t\":", i ? "," : "");
		jrel(out, a, r->ts);
		fputs(",\"kind\":", out);
		jstr(out, r->kind);
		fprintf(out, ",\"pid\":%u,\"what\":", r->pid);
		jstr(out, r->what);
		fputs(",\"start\":", out);
		jaddr(out, r->start);
		fprintf(out, ",\"len\":%" PRIu64 ",\"actor_tid\":%u,\"actor_comm\":", r->len,
			r->actor_tid);
		jcomm(out, r->actor_comm);
		fprintf(out, ",\"waiters\":%u,\"waiter_tid\":%u,\"waiter_addr\":", r->waiters,
			r->waiter_tid);
		jaddr(out, r->waiter_addr);
		fputs(",\"errno\":", out);
		jstr(out, r->err);
		fprintf(out, ",\"waited_ns\":%" PRIu64 ",\"lane\":", r->waited_ns);
		jlane(out, a, pos, r->pid, r->waiter_tid);
		fputc('}', out);
	}
	fputs("],\"poison\":[", out);
	for (uint32_t i = 0; i < a->poison.n; i++) {
		const struct rp_poison *p = &a->poison.v[i];

		fprintf(out, "%s{\"t\":", i ? "," : "");
		jrel(out, a, p->ts);
		fputs(",\"kind\":", out);
		jstr(out, p->kind);
		fprintf(out, ",\"pid\":%u,\"tid\":%u,\"comm\":", p->pid, p->tid);
		jcomm(out, p->comm);
		fprintf(out, ",\"vcpu\":%d,\"addr\":", p->vcpu);
		jaddr(out, p->addr);
		fprintf(out, ",\"len\":%" PRIu64 ",\"detail\":", p->len);
		jstr(out, p->detail);
		fputs(",\"lane\":", out);
		jlane(out, a, pos, p->pid, p->tid);
		fputc('}', out);
	}
	fputs("],\"lost\":[", out);
	for (uint32_t i = 0; i < a->lost.n; i++) {
		fprintf(out, "%s{\"t\":", i ? "," : "");
		if (a->lost.v[i].ts)
			jrel(out, a, a->lost.v[i].ts);
		else
			fputs("null", out);
		fputs(",\"where\":", out);
		jstr(out, a->lost.v[i].where);
		fprintf(out, ",\"count\":%" PRIu64 "}", a->lost.v[i].count);
	}
	fputs("],\"late\":[", out);
	for (uint32_t i = 0; i < a->late.n; i++) {
		const struct rp_late *l = &a->late.v[i];

		fprintf(out, "%s{\"t\":", i ? "," : "");
		jrel(out, a, l->ts);
		fprintf(out, ",\"pid\":%u,\"comm\":", l->pid);
		jcomm(out, l->comm);
		fputs(",\"reason\":", out);
		jstr(out, l->reason);
		fputc('}', out);
	}
	fputs("],\"signals\":[", out);
	for (uint32_t i = 0; i < a->signals.n; i++) {
		const struct rp_signal *s = &a->signals.v[i];

		fprintf(out, "%s{\"t\":", i ? "," : "");
		jrel(out, a, s->ts);
		fprintf(out, ",\"signo\":%d,\"code\":%d,\"pid\":%u,\"tid\":%u,\"vcpu\":%d,\"comm\":",
			s->signo, s->code, s->pid, s->tid, s->vcpu);
		jcomm(out, s->comm);
		fputs(",\"addr\":", out);
		jaddr(out, s->addr);
		fputs(",\"lane\":", out);
		jlane(out, a, pos, s->pid, s->tid);
		fputc('}', out);
	}
	fputs("],\"kvm\":[", out);
	for (uint32_t i = 0; i < a->memfaults.n; i++) {
		const struct rp_memfault *k = &a->memfaults.v[i];

		fprintf(out, "%s{\"t\":", i ? "," : "");
		jrel(out, a, k->ts);
		fprintf(out, ",\"pid\":%u,\"tid\":%u,\"vcpu\":%d,\"gpa\":", k->pid, k->tid, k->vcpu);
		jaddr(out, k->gpa);
		fprintf(out, ",\"size\":%" PRIu64 ",\"lane\":", k->size);
		jlane(out, a, pos, k->pid, k->tid);
		fputc('}', out);
	}
	fputs("]}", out);
}

int rp_html_write(FILE *out, struct rp_agg *a, const struct rp_meta *m)
{
	uint32_t order[RP_MAX_LANES + 1], pos[RP_MAX_LANES + 1], vcpu_lanes = 0;
	int rc = 0;

	for (uint32_t l = 0, d = 0; l <= RP_MAX_LANES; l++)
		if (a->lanes[l].cells)
			order[d++] = l;
	/* order[display] = lane, pos[lane] = display */
	qsort_r(order, a->nlanes, sizeof(order[0]), lane_cmp, a);
	for (uint32_t d = 0; d < a->nlanes; d++) {
		pos[order[d]] = d;
		vcpu_lanes += a->lanes[order[d]].vcpu >= 0 && !a->lanes[order[d]].threads;
	}

	fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
	      /* a promise to whoever opens it: nothing leaves this file */
	      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
	      "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">\n"
	      "<meta name=\"generator\" content=\"faultline " FL_VERSION "\">\n<title>", out);
	html_text(out, m->title);
	fputs("</title>\n<style>\n", out);
	fputs(rp_css, out);
	fputs("</style>\n</head>\n<body data-rendered=\"no\">\n<noscript>This report draws with "
	      "JavaScript (inline, nothing is fetched): allow scripts for this file.</noscript>\n"
	      "<pre id=\"errors\" hidden></pre>\n<main id=\"app\"></main>\n"
	      "<script id=\"fl-data\" type=\"application/json\">{\"format\":1,\"tool\":"
	      "\"faultline " FL_VERSION "\",\"title\":", out);
	jstr(out, m->title);
	fputs(",\"source\":", out);
	jstr(out, m->source);
	fputc(',', out);
	write_input(out, m);
	fprintf(out, ",\"t0\":%" PRIu64 ",\"span_ns\":%" PRIu64 ",\"res\":[",
		a->any_time ? a->t_first : 0, a->any_time ? a->t_last - a->t_first : 0);
	for (int r = 0; r < RP_NRES; r++) {
		fputs(r ? "," : "", out);
		jstr(out, rp_res_name((unsigned)r));
	}
	fputs("],\"modes\":[", out);
	for (int k = 0; k < RP_NMODES; k++) {
		fputs(k ? "," : "", out);
		jstr(out, rp_mode_name((unsigned)k));
	}
	fprintf(out, "],\"lat_buckets\":%d", FL_LAT_BUCKETS);
	write_totals(out, a, vcpu_lanes);
	write_lanes(out, a, order);
	rc = write_cells(out, a, order);
	write_heat(out, a);
	write_intervals(out, a, pos, &rc);
	write_breakdown(out, a);
	if (!rc)
		rc = write_memmap(out, a);
	if (!rc)
		rc = write_vms(out, a);
	write_events(out, a, pos);
	fputs("}</script>\n<script>\n", out);
	fputs(rp_js, out);
	fputs("</script>\n</body>\n</html>\n", out);
	return rc;
}
