// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The router (libfaultline) against a real userfaultfd, with a scripted
 * source peer on a loopback TCP socket: every decision is checked by what a
 * faulting thread really reads — page bytes, zeros, or SIGBUS — and by the
 * router's counters.  The scripted peer lets each test pin one protocol
 * situation (no map yet, map first, late poison, MINOR precopy, journal
 * reload after a restart) that a real source would only hit by timing.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <cmocka.h>

#include "faultline/faultline.h"
#include "statemap.h"
#include "uffd_compat.h"
#include "wire.h"

#define NPAGES 64
#define PS 4096
#define S_CLEAN FAULTLINE__WIRE__PAGE_STATE__PAGE_CLEAN
#define S_DIRTY FAULTLINE__WIRE__PAGE_STATE__PAGE_DIRTY
#define S_POISON FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED
#define S_ZERO FAULTLINE__WIRE__PAGE_STATE__PAGE_ZERO

/* The scripted source: memory, states, and what to do when. */
struct peer {
	int lsock, port;
	uint8_t *mem;			/* source contents */
	struct fl_statemap states;
	bool send_map;			/* push the whole map right after hello */
	bool push_all;			/* push every page the target lacks, then End */
	bool minor;			/* the target has precopy: push only DIRTY */
	int poison_after_requests;	/* PoisonUpdate of poison_late_page after N requests */
	uint64_t poison_late_page;
	int requests;			/* PageRequest frames answered */
	int queries;
	pthread_t thr;
};

static void fill_pattern(uint8_t *p, uint64_t page)
{
	for (int i = 0; i < PS; i += 8) {
		uint64_t v = page * 0x9e3779b97f4a7c15ull ^ (uint64_t)i;

		memcpy(p + i, &v, 8);
	}
}

static int send_frame(int fd, fl_frame *f)
{
	return fl_wire_send(fd, f);
}

static void peer_send_pages(struct peer *p, int fd, uint64_t seq, const uint64_t *pages, size_t n,
			    bool background)
{
	Faultline__Wire__PageData d = FAULTLINE__WIRE__PAGE_DATA__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;
	uint8_t states[(FL_WIRE_MAX_PAGES + 3) / 4] = { 0 };
	static uint8_t data[FL_WIRE_MAX_PAGES * PS];
	size_t len = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned s = fl_statemap_get(&p->states, pages[i]);

		fl_wire_state_set(states, i, s);
		if (s == S_CLEAN || s == S_DIRTY) {
			memcpy(data + len, p->mem + pages[i] * PS, PS);
			len += PS;
		}
	}
	d.seq = seq;
	d.region = 0;
	d.n_pages = n;
	d.pages = (uint64_t *)pages;
	d.states.data = states;
	d.states.len = fl_wire_states_bytes(n);
	d.data.data = data;
	d.data.len = len;
	d.background = background;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA;
	f.page_data = &d;
	assert_int_equal(send_frame(fd, &f), 0);
}

static void peer_poison(int fd, uint64_t page)
{
	Faultline__Wire__PoisonUpdate u = FAULTLINE__WIRE__POISON_UPDATE__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	u.n_pages = 1;
	u.pages = &page;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_POISON;
	f.poison = &u;
	assert_int_equal(send_frame(fd, &f), 0);
}

static void peer_end(int fd)
{
	Faultline__Wire__End e = FAULTLINE__WIRE__END__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	f.body_case = FAULTLINE__WIRE__FRAME__BODY_END;
	f.end = &e;
	send_frame(fd, &f);
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	Faultline__Wire__Region reg = FAULTLINE__WIRE__REGION__INIT, *regs[1] = { &reg };
	Faultline__Wire__Hello h = FAULTLINE__WIRE__HELLO__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT, *in;
	struct fl_wire_limits lim = { .page_size = PS, .nregions = 1, .region_pages = { NPAGES } };
	char err[200];
	int fd = accept(p->lsock, NULL, NULL);

	if (fd < 0)
		return NULL;
	if (fl_wire_recv(fd, NULL, 5000, &in, err, sizeof(err)) != 0) {
		print_error("scripted source: no hello: %s\n", err);
		goto out;
	}
	fl_wire_free(in);
	reg.id = 0;
	reg.length = NPAGES * PS;
	h.version = FL_WIRE_VERSION;
	h.role = "source";
	h.page_size = PS;
	h.n_regions = 1;
	h.regions = regs;
	h.session = 42;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO;
	f.hello = &h;
	send_frame(fd, &f);
	if (p->send_map) {
		Faultline__Wire__StateMapChunk c = FAULTLINE__WIRE__STATE_MAP_CHUNK__INIT;
		uint8_t *z;
		size_t zl;

		assert_int_equal(fl_statemap_encode(&p->states, 0, NPAGES, &z, &zl), 0);
		c.region = 0;
		c.first_page = 0;
		c.npages = NPAGES;
		c.zdata.data = z;
		c.zdata.len = zl;
		c.last = true;
		f = (fl_frame)FAULTLINE__WIRE__FRAME__INIT;
		f.body_case = FAULTLINE__WIRE__FRAME__BODY_STATE_MAP;
		f.state_map = &c;
		send_frame(fd, &f);
		free(z);
	}
	if (p->push_all) {
		uint64_t pages[NPAGES];
		size_t n = 0;

		for (uint64_t i = 0; i < NPAGES; i++) {
			unsigned s = fl_statemap_get(&p->states, i);

			if (s == S_DIRTY || (s == S_CLEAN && !p->minor))
				pages[n++] = i;
		}
		if (n)
			peer_send_pages(p, fd, 0, pages, n, true);
		peer_end(fd);
	}
	for (;;) {
		int ret = fl_wire_recv(fd, &lim, 10000, &in, err, sizeof(err));

		if (ret != 0) {
			if (ret != -EPIPE && ret != -ECONNRESET)
				print_error("scripted source: %s (%d)\n", err, ret);
			break;
		}
		if (in->body_case == FAULTLINE__WIRE__FRAME__BODY_PAGE_REQUEST) {
			peer_send_pages(p, fd, in->page_request->seq, in->page_request->pages,
					in->page_request->n_pages, false);
			if (++p->requests == p->poison_after_requests) {
				fl_statemap_set(&p->states, p->poison_late_page, S_POISON);
				peer_poison(fd, p->poison_late_page);
				peer_end(fd);
			}
		} else if (in->body_case == FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY) {
			Faultline__Wire__StateAnswer a = FAULTLINE__WIRE__STATE_ANSWER__INIT;
			uint8_t st[(FL_WIRE_MAX_PAGES + 3) / 4] = { 0 };

			p->queries++;
			for (size_t i = 0; i < in->state_query->n_pages; i++)
				fl_wire_state_set(st, i, fl_statemap_get(&p->states, in->state_query->pages[i]));
			a.seq = in->state_query->seq;
			a.n_pages = in->state_query->n_pages;
			a.pages = in->state_query->pages;
			a.states.data = st;
			a.states.len = fl_wire_states_bytes(a.n_pages);
			f = (fl_frame)FAULTLINE__WIRE__FRAME__INIT;
			f.body_case = FAULTLINE__WIRE__FRAME__BODY_STATE_ANSWER;
			f.state_answer = &a;
			send_frame(fd, &f);
		} else if (in->body_case == FAULTLINE__WIRE__FRAME__BODY_END) {
			fl_wire_free(in);
			break;
		}
		fl_wire_free(in);
	}
out:
	close(fd);
	return NULL;
}

static void peer_start(struct peer *p)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	int one = 1;

	p->lsock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(p->lsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	assert_int_equal(bind(p->lsock, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(p->lsock, 4), 0);
	getsockname(p->lsock, (struct sockaddr *)&a, &len);
	p->port = ntohs(a.sin_port);
	pthread_create(&p->thr, NULL, peer_main, p);
}

static void peer_init(struct peer *p)
{
	memset(p, 0, sizeof(*p));
	p->mem = aligned_alloc(PS, NPAGES * PS);
	assert_non_null(p->mem);
	assert_int_equal(fl_statemap_init(&p->states, NPAGES, S_DIRTY), 0);
	for (uint64_t i = 0; i < NPAGES; i++) {
		if (i % 8 == 3) {
			memset(p->mem + i * PS, 0, PS);
			fl_statemap_set(&p->states, i, S_ZERO);
		} else {
			fill_pattern(p->mem + i * PS, i);
		}
		if (i % 16 == 5)
			fl_statemap_set(&p->states, i, S_POISON);
	}
}

static void peer_finish(struct peer *p)
{
	pthread_join(p->thr, NULL);
	close(p->lsock);
	fl_statemap_free(&p->states);
	free(p->mem);
}

/* ---- the "VMM": guest memory registered with a real userfaultfd ---------- */

struct vmm {
	int uffd, memfd;
	uint8_t *mem;
	bool minor;
};

static void vmm_init_features(struct vmm *v, bool minor, uint64_t extra)
{
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_POISON | UFFD_FEATURE_THREAD_ID | extra |
					      (minor ? UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM : 0) };
	struct uffdio_register reg;

	v->minor = minor;
	v->memfd = -1;
	v->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	assert_true(v->uffd >= 0);
	assert_int_equal(ioctl(v->uffd, UFFDIO_API, &api), 0);
	if (minor) {
		v->memfd = memfd_create("guest", MFD_CLOEXEC);
		assert_int_equal(ftruncate(v->memfd, NPAGES * PS), 0);
		v->mem = mmap(NULL, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_SHARED, v->memfd, 0);
	} else {
		v->mem = mmap(NULL, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	assert_true(v->mem != MAP_FAILED);
	reg = (struct uffdio_register){ .range = { (uint64_t)(uintptr_t)v->mem, NPAGES * PS },
					.mode = UFFDIO_REGISTER_MODE_MISSING |
						(minor ? UFFDIO_REGISTER_MODE_MINOR : 0) };
	assert_int_equal(ioctl(v->uffd, UFFDIO_REGISTER, &reg), 0);
}

static void vmm_init(struct vmm *v, bool minor)
{
	vmm_init_features(v, minor, 0);
}

static void vmm_fini(struct vmm *v)
{
	munmap(v->mem, NPAGES * PS);
	close(v->uffd);
	if (v->memfd >= 0)
		close(v->memfd);
}

/* Per-thread SIGBUS recovery for the reader. */
static __thread sigjmp_buf *bus_jmp;

static void on_sigbus(int sig)
{
	(void)sig;
	if (bus_jmp)
		siglongjmp(*bus_jmp, 1);
	abort();
}

/* 1: SIGBUS, 0: read fine (bytes copied to out) */
static int read_page(const uint8_t *addr, uint8_t *out)
{
	/* cmocka installs its own crash handlers around each test: ours goes on top */
	struct sigaction sa = { .sa_handler = on_sigbus, .sa_flags = SA_NODEFER };
	sigjmp_buf jb;

	sigaction(SIGBUS, &sa, NULL);
	bus_jmp = &jb;
	if (sigsetjmp(jb, 1)) {
		bus_jmp = NULL;
		return 1;
	}
	memcpy(out, addr, PS);
	bus_jmp = NULL;
	return 0;
}

struct run {
	struct fl_router *r;
	int ret;
	pthread_t thr;
};

static void *router_main(void *arg)
{
	struct run *run = arg;

	run->ret = fl_router_run(run->r);
	return NULL;
}

static struct fl_router *router_new(struct vmm *v, int port, const char *journal)
{
	char src[64], err[256] = "";
	struct fl_region reg = { .base = v->mem, .length = NPAGES * PS, .memfd = v->memfd };
	struct fl_router_config cfg = { .source = src, .mode = v->minor ? FL_MODE_MINOR : FL_MODE_MISSING,
					.uffd = v->uffd, .regions = &reg, .nregions = 1,
					.journal = journal, .reconnect_ms = 50 };
	struct fl_router *r;
	int ret;

	snprintf(src, sizeof(src), "127.0.0.1:%d", port);
	ret = fl_router_create(&cfg, &r, err, sizeof(err));
	if (ret)
		print_error("fl_router_create: %s\n", err);
	assert_int_equal(ret, 0);
	return r;
}

/* Read every page through the registered mapping; check against the source. */
static void check_all(struct vmm *v, struct peer *p, int *sigbus)
{
	uint8_t *buf = malloc(PS), *zero = calloc(1, PS);

	*sigbus = 0;
	for (uint64_t i = 0; i < NPAGES; i++) {
		unsigned s = fl_statemap_get(&p->states, i);
		int bus = read_page(v->mem + i * PS, buf);

		if (s == S_POISON) {
			if (!bus)
				print_error("page %llu: poisoned on the source, readable here\n",
					    (unsigned long long)i);
			assert_int_equal(bus, 1);
			(*sigbus)++;
			continue;
		}
		assert_int_equal(bus, 0);
		assert_memory_equal(buf, s == S_ZERO ? zero : p->mem + i * PS, PS);
	}
	free(buf);
	free(zero);
}

static void expect_poisoned(const struct peer *p, int sigbus)
{
	assert_int_equal(sigbus, (int)fl_statemap_count(&p->states, S_POISON));
}

/* No map: every fault asks; data, zero and poison come with the answer. */
static void test_missing_per_fault(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	int bus;

	(void)state;
	peer_init(&p);
	p.poison_after_requests = -1;
	peer_start(&p);
	vmm_init(&v, false);
	run.r = router_new(&v, p.port, NULL);
	pthread_create(&run.thr, NULL, router_main, &run);
	check_all(&v, &p, &bus);
	expect_poisoned(&p, bus);
	/* the reader can run before the router counted its last ioctl: stop first */
	fl_router_stop(run.r);
	pthread_join(run.thr, NULL);
	fl_router_get_stats(run.r, &st);
	assert_true(st.remote_requests >= 1);
	assert_int_equal(st.poisons, fl_statemap_count(&p.states, S_POISON));
	assert_int_equal(st.zeropages, fl_statemap_count(&p.states, S_ZERO));
	assert_int_equal(st.copies, fl_statemap_count(&p.states, S_DIRTY));
	assert_int_equal(run.ret, 0);
	fl_router_destroy(run.r);	/* closes the connection: the peer returns */
	peer_finish(&p);
	vmm_fini(&v);
}

/* Map first, everything pushed, End: the router finishes, unregisters, and
 * zero/poison pages never needed a request. */
static void test_missing_map_push_end(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	int bus;

	(void)state;
	peer_init(&p);
	p.send_map = p.push_all = true;
	p.poison_after_requests = -1;
	peer_start(&p);
	vmm_init(&v, false);
	run.r = router_new(&v, p.port, NULL);
	pthread_create(&run.thr, NULL, router_main, &run);
	pthread_join(run.thr, NULL);	/* finishes by itself after End */
	assert_int_equal(run.ret, 0);
	fl_router_get_stats(run.r, &st);
	assert_int_equal(st.finished, 1);
	assert_int_equal(st.poisons, fl_statemap_count(&p.states, S_POISON));
	assert_int_equal(st.copies, fl_statemap_count(&p.states, S_DIRTY));
	/* After the router unregistered, zero pages fill themselves and poison
	 * markers stay: read with no router at all. */
	fl_router_destroy(run.r);
	check_all(&v, &p, &bus);
	expect_poisoned(&p, bus);
	peer_finish(&p);
	vmm_fini(&v);
}

/* A page read (placed) first and poisoned on the source afterwards: zapped,
 * then poisoned; the next access gets SIGBUS. */
static void late_poison(uint64_t features)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	uint8_t *buf = malloc(PS);

	peer_init(&p);
	p.poison_after_requests = 2;
	p.poison_late_page = 1;		/* DIRTY in peer_init */
	peer_start(&p);
	vmm_init_features(&v, false, features);
	run.r = router_new(&v, p.port, NULL);
	pthread_create(&run.thr, NULL, router_main, &run);
	assert_int_equal(read_page(v.mem + 1 * PS, buf), 0);
	assert_memory_equal(buf, p.mem + 1 * PS, PS);
	assert_int_equal(read_page(v.mem + 2 * PS, buf), 0);	/* 2nd request: triggers the poison */
	pthread_join(run.thr, NULL);	/* End follows the poison */
	fl_router_get_stats(run.r, &st);
	assert_int_equal(st.poisons_late, 1);
	assert_int_equal(read_page(v.mem + 1 * PS, buf), 1);
	if (features & UFFD_FEATURE_EVENT_REMOVE)
		assert_true(st.events >= 1);	/* the zap's REMOVE was read, not deadlocked on */
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
	free(buf);
}

static void test_late_poison(void **state)
{
	(void)state;
	late_poison(0);
}

/* With EVENT_REMOVE the zap's madvise waits for its REMOVE event to be
 * read: the router must keep reading while it zaps. */
static void test_late_poison_event_remove(void **state)
{
	(void)state;
	late_poison(UFFD_FEATURE_EVENT_REMOVE);
}

/* MINOR: the page cache holds precopied contents (stale for DIRTY pages);
 * CLEAN faults are CONTINUEd without asking, DIRTY ones fetched. */
static void test_minor(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	uint64_t clean = 0, dirty = 0;
	int bus;

	(void)state;
	peer_init(&p);
	p.poison_after_requests = -1;
	p.send_map = true;
	vmm_init(&v, true);
	for (uint64_t i = 0; i < NPAGES; i++) {
		unsigned s = fl_statemap_get(&p.states, i);

		if (s == S_DIRTY && i % 2 == 0) {
			fl_statemap_set(&p.states, i, S_CLEAN);
			s = S_CLEAN;
		}
		if (s == S_CLEAN || s == S_DIRTY) {
			/* precopy: clean pages have their final bytes, dirty ones stale bytes */
			uint8_t stale[PS];

			memset(stale, 0xee, PS);
			assert_int_equal(pwrite(v.memfd, s == S_CLEAN ? p.mem + i * PS : stale, PS,
						(off_t)(i * PS)), PS);
			if (s == S_CLEAN)
				clean++;
			else
				dirty++;
		}
	}
	peer_start(&p);
	run.r = router_new(&v, p.port, NULL);
	pthread_create(&run.thr, NULL, router_main, &run);
	usleep(100000);		/* let the map arrive: decisions become local */
	check_all(&v, &p, &bus);
	expect_poisoned(&p, bus);
	fl_router_stop(run.r);
	pthread_join(run.thr, NULL);
	fl_router_get_stats(run.r, &st);
	assert_int_equal(st.continues, clean + dirty);
	assert_int_equal(st.pages_received, dirty);
	assert_int_equal(st.remote_requests, dirty);
	fl_router_destroy(run.r);	/* closes the connection: the peer returns */
	peer_finish(&p);
	vmm_fini(&v);
}

/* A restarted router reloads its journal and poisons before any source is
 * reachable: the page cannot come back to life in between. */
static void test_journal_reload(void **state)
{
	char path[] = "/tmp/faultline-journal-XXXXXX";
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router *r2;
	struct fl_router_stats st;
	uint8_t *buf = malloc(PS);
	int fd = mkstemp(path);

	(void)state;
	close(fd);
	unlink(path);
	peer_init(&p);
	p.send_map = p.push_all = true;
	p.poison_after_requests = -1;
	peer_start(&p);
	vmm_init(&v, false);
	run.r = router_new(&v, p.port, path);
	pthread_create(&run.thr, NULL, router_main, &run);
	pthread_join(run.thr, NULL);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);

	/* Fresh guest memory (as if the VMM were reset), no source listening. */
	vmm_init(&v, false);
	r2 = router_new(&v, 1, path);
	fl_router_get_stats(r2, &st);
	assert_int_equal(st.journal_loaded, NPAGES / 16);
	assert_int_equal(st.poisons, NPAGES / 16);
	assert_int_equal(read_page(v.mem + 5 * PS, buf), 1);
	fl_router_destroy(r2);
	vmm_fini(&v);

	/* A journal of another shape is refused, not applied. */
	{
		struct fl_region reg = { .base = (void *)0x10000000, .length = 2 * NPAGES * PS, .memfd = -1 };
		struct fl_router_config cfg = { .source = "127.0.0.1:1", .mode = FL_MODE_MISSING, .uffd = -1,
						.regions = &reg, .nregions = 1, .journal = path };
		char err[256] = "";

		assert_int_equal(fl_router_create(&cfg, &r2, err, sizeof(err)), -ESTALE);
		assert_non_null(strstr(err, "another migration"));
	}
	unlink(path);
	free(buf);
}

static void test_bad_config(void **state)
{
	struct fl_region reg = { .base = (void *)0x10000000, .length = PS, .memfd = -1 };
	struct fl_router_config cfg = { .source = "nohostport", .mode = FL_MODE_MISSING, .uffd = -1,
					.regions = &reg, .nregions = 1 };
	struct fl_router *r;
	char err[256] = "";

	(void)state;
	assert_int_equal(fl_router_create(&cfg, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "HOST:PORT"));
	cfg.source = "127.0.0.1:1";
	cfg.mode = FL_MODE_MINOR;
	assert_int_equal(fl_router_create(&cfg, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "memfd"));
	cfg.mode = FL_MODE_MISSING;
	reg.length = PS + 1;
	assert_int_equal(fl_router_create(&cfg, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "page aligned"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_missing_per_fault),
		cmocka_unit_test(test_missing_map_push_end),
		cmocka_unit_test(test_late_poison),
		cmocka_unit_test(test_late_poison_event_remove),
		cmocka_unit_test(test_minor),
		cmocka_unit_test(test_journal_reload),
		cmocka_unit_test(test_bad_config),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
