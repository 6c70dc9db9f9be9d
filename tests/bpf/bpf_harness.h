/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What both BPF handler test files need: the loaded skeleton with its ring
 * buffer, a sink that copies every record out (and checks its size), and
 * BPF_PROG_TEST_RUN of a raw_tp program with synthetic u64 arguments.
 * Include after <cmocka.h>, <bpf/libbpf.h>, faultline.skel.h and probe.h;
 * define FX_MAX_RECS first.
 */
#ifndef FAULTLINE_TEST_BPF_HARNESS_H
#define FAULTLINE_TEST_BPF_HARNESS_H

struct fx {
	struct fl_probe p;
	struct faultline_bpf *s;
	struct ring_buffer *rb;
	struct fl_event recs[FX_MAX_RECS];
	int nrecs;
	int bad_size;		/* records of the wrong size seen */
	uint64_t task;		/* our task_struct *, from test_get_current_task */
};

static inline uint32_t tid(void)
{
	return (uint32_t)syscall(SYS_gettid);
}

static inline int rb_cb(void *ctx, void *data, size_t sz)
{
	struct fx *f = ctx;

	if (sz != sizeof(struct fl_event)) {
		f->bad_size++;
		return 0;
	}
	if (f->nrecs < FX_MAX_RECS)
		memcpy(&f->recs[f->nrecs], data, sizeof(struct fl_event));
	f->nrecs++;
	return 0;
}

/* Consumes everything in the ring buffer into f->recs; returns the count. */
static inline int drain(struct fx *f)
{
	int n;

	f->nrecs = 0;
	f->bad_size = 0;
	n = ring_buffer__consume(f->rb);
	assert_true(n >= 0);
	assert_int_equal(f->bad_size, 0);
	assert_int_equal(n, f->nrecs);
	return f->nrecs;
}

/* 0, -EBADF (not loaded), the test run's error, or -EPROTO (nonzero retval). */
static inline int try_run(struct bpf_program *prog, const uint64_t *args, int nargs)
{
	int fd = bpf_program__fd(prog);
	LIBBPF_OPTS(bpf_test_run_opts, o, .ctx_in = nargs ? args : NULL,
		    .ctx_size_in = nargs * sizeof(uint64_t));
	int err;

	if (fd < 0)
		return -EBADF;
	err = bpf_prog_test_run_opts(fd, &o);
	if (err)
		return err;
	return o.retval ? -EPROTO : 0;
}

static inline void run_prog(struct bpf_program *prog, const uint64_t *args, int nargs)
{
	int err = try_run(prog, args, nargs);

	if (err == -EBADF)
		fail_msg("program %s is not loaded", bpf_program__name(prog));
	if (err)
		fail_msg("BPF_PROG_TEST_RUN %s: %s", bpf_program__name(prog), strerror(-err));
}

#define RUN(prog, ...)                                                   \
	do {                                                             \
		uint64_t a_[] = { __VA_ARGS__ };                         \
		run_prog(prog, a_, (int)(sizeof(a_) / sizeof(a_[0])));   \
	} while (0)

#endif
