// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Seed corpus for build/fuzz-frame: `fuzz-make-corpus DIR` writes one
 * valid, framed message of each type (and a few streams of several) into
 * DIR, consistent with the fuzz target's session limits (fuzz_common.h),
 * so the fuzzer starts from inputs that reach the deepest checks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz_common.h"
#include "statemap.h"

#define CLEAN FAULTLINE__WIRE__PAGE_STATE__PAGE_CLEAN
#define DIRTY FAULTLINE__WIRE__PAGE_STATE__PAGE_DIRTY
#define POISONED FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED
#define ZERO FAULTLINE__WIRE__PAGE_STATE__PAGE_ZERO

static int write_seed(const char *dir, const char *name, const struct fl_wire_writer *w)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(w->buf, 1, w->len, f) != w->len || fclose(f)) {
		fprintf(stderr, "fuzz-make-corpus: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* One seed file holding the given frames; every frame must pass decoding. */
static int seed(const char *dir, const char *name, const fl_frame *const *frames, int n)
{
	struct fl_wire_limits lim = fuzz_limits();
	struct fl_wire_writer w;
	int rc = 0;

	fl_wire_writer_init(&w);
	for (int i = 0; i < n && !rc; i++) {
		char err[256];
		fl_frame *back;
		size_t at = w.len;

		rc = fl_wire_put(&w, frames[i]);
		if (!rc)
			rc = fl_wire_decode(w.buf + at + 4, w.len - at - 4, &lim, &back, err,
					    sizeof(err));
		if (rc)
			fprintf(stderr, "fuzz-make-corpus: %s: seed frame %d invalid: %s\n", name, i,
				rc == -EMSGSIZE ? "too big" : err);
		else
			fl_wire_free(back);
	}
	if (!rc)
		rc = write_seed(dir, name, &w);
	fl_wire_writer_free(&w);
	return rc;
}

#define FRAME(var, CASE, field, msg)                                      \
	fl_frame var = FAULTLINE__WIRE__FRAME__INIT;                      \
	var.body_case = FAULTLINE__WIRE__FRAME__BODY_##CASE;              \
	var.field = &msg

int main(int argc, char **argv)
{
	Faultline__Wire__Region reg[FUZZ_NREGIONS], *regp[FUZZ_NREGIONS];
	uint64_t pages[4] = { 0, 5, 63, 2 };
	uint8_t states[1] = { 0 }, data[2 * FUZZ_PAGE_SIZE];
	struct fl_statemap map;
	uint8_t *z[3];
	size_t zlen[3];
	int rc = 0;

	if (argc != 2) {
		fprintf(stderr, "usage: fuzz-make-corpus DIR\n");
		return 2;
	}
	if (mkdir(argv[1], 0755) && errno != EEXIST) {
		perror(argv[1]);
		return 1;
	}

	Faultline__Wire__Hello src = FAULTLINE__WIRE__HELLO__INIT;
	for (unsigned i = 0; i < FUZZ_NREGIONS; i++) {
		faultline__wire__region__init(&reg[i]);
		reg[i].id = i;
		reg[i].length = fuzz_region_pages[i] * FUZZ_PAGE_SIZE;
		reg[i].addr = 0x7f0000000000ull + (uint64_t)i * (1ull << 32);
		regp[i] = &reg[i];
	}
	src.version = FL_WIRE_VERSION, src.role = "source", src.page_size = FUZZ_PAGE_SIZE;
	src.n_regions = FUZZ_NREGIONS, src.regions = regp, src.session = 0x1234567890abcdefull;
	Faultline__Wire__Hello tgt = FAULTLINE__WIRE__HELLO__INIT;
	tgt.version = FL_WIRE_VERSION, tgt.role = "target", tgt.want_precopy = 1, tgt.resume = 1;
	Faultline__Wire__Hello vmm = src;
	vmm.role = "vmm", vmm.mode = "minor", vmm.pid = 4321;
	reg[1].has_memfd = 1, reg[1].memfd_offset = 1 << 20;

	fl_wire_state_set(states, 0, DIRTY);
	fl_wire_state_set(states, 1, POISONED);
	fl_wire_state_set(states, 2, CLEAN);
	fl_wire_state_set(states, 3, ZERO);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 31 + 7);
	Faultline__Wire__StateQuery sq = FAULTLINE__WIRE__STATE_QUERY__INIT;
	sq.seq = 1, sq.region = 0, sq.n_pages = 4, sq.pages = pages;
	Faultline__Wire__StateAnswer sa = FAULTLINE__WIRE__STATE_ANSWER__INIT;
	sa.seq = 1, sa.region = 0, sa.n_pages = 4, sa.pages = pages;
	sa.states.len = 1, sa.states.data = states;
	Faultline__Wire__PageRequest pr = FAULTLINE__WIRE__PAGE_REQUEST__INIT;
	pr.seq = 2, pr.region = 0, pr.n_pages = 4, pr.pages = pages;
	Faultline__Wire__PageData pd = FAULTLINE__WIRE__PAGE_DATA__INIT;
	pd.seq = 2, pd.region = 0, pd.n_pages = 4, pd.pages = pages;
	pd.states.len = 1, pd.states.data = states;
	pd.data.len = sizeof(data), pd.data.data = data;
	Faultline__Wire__PrecopyDone pdone = FAULTLINE__WIRE__PRECOPY_DONE__INIT;
	pdone.pages = 5000;
	Faultline__Wire__Switchover sw = FAULTLINE__WIRE__SWITCHOVER__INIT;
	sw.dirty_pages = 17;
	Faultline__Wire__PoisonUpdate pu = FAULTLINE__WIRE__POISON_UPDATE__INIT;
	pu.region = 0, pu.n_pages = 2, pu.pages = pages + 1;
	Faultline__Wire__End end = FAULTLINE__WIRE__END__INIT;
	end.pages_sent = 5000, end.pages_poisoned = 3;
	Faultline__Wire__Error er = FAULTLINE__WIRE__ERROR__INIT;
	er.code = EPROTO, er.text = "StateMapChunk first_page 5 is not a multiple of 4.";
	Faultline__Wire__Zap zap = FAULTLINE__WIRE__ZAP__INIT;
	zap.region = 2, zap.first_page = 4000, zap.npages = 99;
	Faultline__Wire__Zap zapd = zap;
	zapd.done = 1, zapd.err = 0;

	/* real map chunks: region 2 has a partial last byte */
	if (fl_statemap_init(&map, fuzz_region_pages[2], CLEAN))
		return 1;
	for (uint64_t p = 0; p < map.npages; p++)
		if (p % 37 == 0 || (p >= 1000 && p < 1200))
			fl_statemap_set(&map, p, DIRTY);
		else if (p >= 3000)
			fl_statemap_set(&map, p, ZERO);
	fl_statemap_set(&map, 4098, POISONED);
	fl_statemap_set(&map, 12, POISONED);
	if (fl_statemap_encode(&map, 0, 64, &z[0], &zlen[0]) ||
	    fl_statemap_encode(&map, 0, 1000, &z[1], &zlen[1]) ||
	    fl_statemap_encode(&map, 2048, 2051, &z[2], &zlen[2]))
		return 1;
	Faultline__Wire__StateMapChunk c0 = FAULTLINE__WIRE__STATE_MAP_CHUNK__INIT;
	c0.region = 0, c0.first_page = 0, c0.npages = 64, c0.last = 1;
	c0.zdata.len = zlen[0], c0.zdata.data = z[0];
	Faultline__Wire__StateMapChunk c1 = c0;
	c1.region = 1, c1.npages = 1000, c1.zdata.len = zlen[1], c1.zdata.data = z[1];
	Faultline__Wire__StateMapChunk c2 = c0;
	c2.region = 2, c2.first_page = 2048, c2.npages = 2051;
	c2.zdata.len = zlen[2], c2.zdata.data = z[2];

	FRAME(f_src, HELLO, hello, src);
	FRAME(f_tgt, HELLO, hello, tgt);
	FRAME(f_vmm, HELLO, hello, vmm);
	FRAME(f_sq, STATE_QUERY, state_query, sq);
	FRAME(f_sa, STATE_ANSWER, state_answer, sa);
	FRAME(f_pr, PAGE_REQUEST, page_request, pr);
	FRAME(f_pd, PAGE_DATA, page_data, pd);
	FRAME(f_pdone, PRECOPY_DONE, precopy_done, pdone);
	FRAME(f_sw, SWITCHOVER, switchover, sw);
	FRAME(f_c0, STATE_MAP, state_map, c0);
	FRAME(f_c1, STATE_MAP, state_map, c1);
	FRAME(f_c2, STATE_MAP, state_map, c2);
	FRAME(f_pu, POISON, poison, pu);
	FRAME(f_end, END, end, end);
	FRAME(f_er, ERROR, error, er);
	FRAME(f_zap, ZAP, zap, zap);
	FRAME(f_zapd, ZAP, zap, zapd);

	const struct {
		const char *name;
		const fl_frame *f;
	} one[] = {
		{ "hello-source", &f_src }, { "hello-target", &f_tgt }, { "hello-vmm", &f_vmm },
		{ "state-query", &f_sq },   { "state-answer", &f_sa },  { "page-request", &f_pr },
		{ "page-data", &f_pd },     { "precopy-done", &f_pdone }, { "switchover", &f_sw },
		{ "chunk-r0", &f_c0 },      { "chunk-r1", &f_c1 },      { "chunk-r2-tail", &f_c2 },
		{ "poison", &f_pu },        { "end", &f_end },          { "error", &f_er },
		{ "zap", &f_zap },          { "zap-done", &f_zapd },
	};
	for (size_t i = 0; i < sizeof(one) / sizeof(one[0]) && !rc; i++)
		rc = seed(argv[1], one[i].name, &one[i].f, 1);

	const fl_frame *target_side[] = { &f_tgt, &f_sq, &f_pr, &f_end };
	const fl_frame *source_side[] = { &f_src, &f_sw, &f_c0, &f_c1, &f_c2, &f_sa,
					  &f_pu, &f_pd, &f_end };
	const fl_frame *handover[] = { &f_vmm, &f_zap, &f_zapd, &f_er };
	if (!rc)
		rc = seed(argv[1], "stream-target", target_side, 4);
	if (!rc)
		rc = seed(argv[1], "stream-source", source_side, 9);
	if (!rc)
		rc = seed(argv[1], "stream-handover", handover, 4);

	for (int i = 0; i < 3; i++)
		free(z[i]);
	fl_statemap_free(&map);
	if (!rc)
		printf("fuzz-make-corpus: %zu seeds in %s\n", sizeof(one) / sizeof(one[0]) + 3,
		       argv[1]);
	return rc ? 1 : 0;
}
