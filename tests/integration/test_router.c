// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The router (libfaultline) against a real userfaultfd, with a scripted
 * source peer on a loopback TCP socket: every decision is checked by what a
 * faulting thread really reads — page bytes, zeros, or SIGBUS — and by the
 * router's counters.  The scripted peer lets each test pin one protocol
 * situation (no map yet, map first, late poison, MINOR precopy, journal
 * reload after a restart) that a real source would only hit by timing.
 *
 * The mapping-change tests build each UFFD event for real (madvise, munmap,
 * mremap, fork of the "VMM") while the router runs, and check that no
 * faulting thread is left blocked: a thread the router forgets is caught by
 * a timed join, released by hand (UNREGISTER + WAKE) and reported, so a
 * regression fails the test instead of hanging the suite.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "faultline/faultline.h"
#include "statemap.h"
#include "uffd_compat.h"
#include "wire.h"
#include "test_uffd.h"

#define NPAGES 64
#define PS 4096
#define S_CLEAN FAULTLINE__WIRE__PAGE_STATE__PAGE_CLEAN
#define S_DIRTY FAULTLINE__WIRE__PAGE_STATE__PAGE_DIRTY
#define S_POISON FAULTLINE__WIRE__PAGE_STATE__PAGE_POISONED
#define S_ZERO FAULTLINE__WIRE__PAGE_STATE__PAGE_ZERO

/* The scripted source: memory, states, and what to do when. */
enum { FIRST_SERVE, FIRST_ERROR_BUSY, FIRST_HALF_OPEN };
#define PEER_MAX_CONNS 4

struct peer {
	int lsock, port;
	uint8_t *mem;			/* source contents */
	struct fl_statemap states;
	bool send_map;			/* push the whole map right after hello */
	bool push_all;			/* push every page the target lacks, then End */
	bool minor;			/* the target has precopy: push only DIRTY */
	int end_delay_ms;		/* push_all: wait this long before End */
	int poison_after_requests;	/* PoisonUpdate of poison_late_page after N requests */
	uint64_t poison_late_page;
	uint64_t session;		/* its Hello's migration session; 0: 42 */
	int first_conn;			/* FIRST_*: how the first connection misbehaves */
	int requests;			/* PageRequest frames answered */
	int queries;
	pthread_t thr;

	/* Connection scripting (0: off).  Only the first connection misbehaves;
	 * the ones after it are served normally. */
	int max_conns;			/* connections served before the peer returns; 0: 1 */
	int close_after_requests;	/* drop the connection on the Nth PageRequest, unanswered */
	int bad_after_requests;		/* after answering the Nth: PoisonUpdate(bad_poison_page)
					 * and a malformed frame in the same write */
	uint64_t bad_poison_page;

	/* Shared with the test thread, under `lock`.  Sends on `fd` take it too,
	 * so the test can answer held pages while the peer thread serves. */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int fd;				/* the connection being served, -1 between */
	int conns;			/* connections accepted */
	bool hold[NPAGES];		/* questions about these pages are counted, not answered */
	int asked[PEER_MAX_CONNS][NPAGES]; /* PageRequest/StateQuery mentions, per connection */
	uint64_t dropped[FL_WIRE_MAX_PAGES]; /* pages of the request close_after_requests dropped */
	size_t ndropped;
	char error_text[256];		/* the Error frame the router sent, if any */
	uint32_t error_code;
	int failures;			/* the peer thread cannot use cmocka's asserts */
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

/* Append a PageData frame answering `pages` (states and bytes from the peer's
 * memory) to `w`. */
static int peer_put_pages(struct peer *p, struct fl_wire_writer *w, uint64_t seq,
			  const uint64_t *pages, size_t n, bool background)
{
	Faultline__Wire__PageData d = FAULTLINE__WIRE__PAGE_DATA__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;
	uint8_t states[(FL_WIRE_MAX_PAGES + 3) / 4] = { 0 };
	uint8_t *data = malloc(n * PS + 1);
	size_t len = 0;
	int ret;

	if (!data)
		return -ENOMEM;
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
	ret = fl_wire_put(w, &f);
	free(data);
	return ret;
}

static int peer_put_poison(struct fl_wire_writer *w, uint64_t page)
{
	Faultline__Wire__PoisonUpdate u = FAULTLINE__WIRE__POISON_UPDATE__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	u.n_pages = 1;
	u.pages = &page;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_POISON;
	f.poison = &u;
	return fl_wire_put(w, &f);
}

/* Everything in `w` in one write where the socket takes it: the router then
 * reads the frames in one go and handles them back to back. */
static int writer_send(struct fl_wire_writer *w, int fd)
{
	ssize_t left = fl_wire_flush(w, fd);

	fl_wire_writer_free(w);
	return left == 0 ? 0 : left < 0 ? (int)left : -EIO;
}

static int peer_send_pages(struct peer *p, int fd, uint64_t seq, const uint64_t *pages, size_t n,
			   bool background)
{
	struct fl_wire_writer w;
	int ret;

	fl_wire_writer_init(&w);
	ret = peer_put_pages(p, &w, seq, pages, n, background);
	if (ret) {
		fl_wire_writer_free(&w);
		return ret;
	}
	return writer_send(&w, fd);
}

static void peer_poison(int fd, uint64_t page)
{
	struct fl_wire_writer w;

	fl_wire_writer_init(&w);
	assert_int_equal(peer_put_poison(&w, page), 0);
	assert_int_equal(writer_send(&w, fd), 0);
}

static void peer_end(int fd)
{
	Faultline__Wire__End e = FAULTLINE__WIRE__END__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	f.body_case = FAULTLINE__WIRE__FRAME__BODY_END;
	f.end = &e;
	send_frame(fd, &f);
}

static int peer_send_map_fd(struct peer *p, int fd)
{
	Faultline__Wire__StateMapChunk c = FAULTLINE__WIRE__STATE_MAP_CHUNK__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;
	uint8_t *z;
	size_t zl;
	int ret = fl_statemap_encode(&p->states, 0, NPAGES, &z, &zl);

	if (ret)
		return ret;
	c.region = 0;
	c.first_page = 0;
	c.npages = NPAGES;
	c.zdata.data = z;
	c.zdata.len = zl;
	c.last = true;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_STATE_MAP;
	f.state_map = &c;
	ret = send_frame(fd, &f);
	free(z);
	return ret;
}

static void peer_fail(struct peer *p, const char *what, int err)
{
	print_error("scripted source: %s: %s\n", what, strerror(-err));
	pthread_mutex_lock(&p->lock);
	p->failures++;
	pthread_mutex_unlock(&p->lock);
}

/* PoisonUpdate for a page the source still calls DIRTY (so only the router
 * can remember it), then a PageData naming a page past the region's end. */
static void peer_send_bad(struct peer *p, int fd)
{
	Faultline__Wire__PageData d = FAULTLINE__WIRE__PAGE_DATA__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;
	struct fl_wire_writer w;
	uint64_t bad_page = 1000;
	uint8_t state = 0;
	int ret;

	fl_wire_writer_init(&w);
	ret = peer_put_poison(&w, p->bad_poison_page);
	d.n_pages = 1;
	d.pages = &bad_page;
	d.states.data = &state;		/* CLEAN, but with no bytes: invalid twice over */
	d.states.len = 1;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA;
	f.page_data = &d;
	if (!ret)
		ret = fl_wire_put(&w, &f);
	if (!ret)
		ret = writer_send(&w, fd);
	else
		fl_wire_writer_free(&w);
	if (ret)
		peer_fail(p, "sending the malformed frame", ret);
}

/* Record what a PageRequest/StateQuery asks; returns how many of its pages
 * are not held (copied to `answer`).  Called with p->lock held. */
static size_t peer_note_asked(struct peer *p, int conn, const uint64_t *pages, size_t n,
			      uint64_t *answer)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i++) {
		p->asked[conn][pages[i]]++;
		if (!p->hold[pages[i]])
			answer[k++] = pages[i];
	}
	pthread_cond_broadcast(&p->cond);
	return k;
}

/* Serve one connection until the router closes it (or the script drops it). */
static void peer_conn(struct peer *p, int fd, int conn)
{
	Faultline__Wire__Region reg = FAULTLINE__WIRE__REGION__INIT, *regs[1] = { &reg };
	Faultline__Wire__Hello h = FAULTLINE__WIRE__HELLO__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT, *in;
	struct fl_wire_limits lim = { .page_size = PS, .nregions = 1, .region_pages = { NPAGES } };
	uint64_t answer[FL_WIRE_MAX_PAGES];
	int64_t end_at = 0;
	char err[200];

	if (fl_wire_recv(fd, NULL, 5000, &in, err, sizeof(err)) != 0) {
		print_error("scripted source: no hello: %s\n", err);
		return;
	}
	fl_wire_free(in);
	reg.id = 0;
	reg.length = NPAGES * PS;
	h.version = FL_WIRE_VERSION;
	h.role = "source";
	h.page_size = PS;
	h.n_regions = 1;
	h.regions = regs;
	h.session = p->session ? p->session : 42;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO;
	f.hello = &h;
	pthread_mutex_lock(&p->lock);
	send_frame(fd, &f);
	{
		/* the source VM is stopped: the router may ask for pages now */
		Faultline__Wire__Switchover sw = FAULTLINE__WIRE__SWITCHOVER__INIT;
		fl_frame fs = FAULTLINE__WIRE__FRAME__INIT;

		fs.body_case = FAULTLINE__WIRE__FRAME__BODY_SWITCHOVER;
		fs.switchover = &sw;
		send_frame(fd, &fs);
	}
	if (p->send_map)
		peer_send_map_fd(p, fd);
	pthread_mutex_unlock(&p->lock);
	if (p->push_all) {
		uint64_t pages[NPAGES];
		size_t n = 0;

		for (uint64_t i = 0; i < NPAGES; i++) {
			unsigned s = fl_statemap_get(&p->states, i);

			if (s == S_DIRTY || (s == S_CLEAN && !p->minor))
				pages[n++] = i;
		}
		pthread_mutex_lock(&p->lock);
		if (n)
			peer_send_pages(p, fd, 0, pages, n, true);
		if (p->end_delay_ms)
			end_at = mono_ms() + p->end_delay_ms;	/* answering meanwhile */
		else
			peer_end(fd);
		pthread_mutex_unlock(&p->lock);
	}
	for (bool draining = false;;) {
		int64_t left = end_at ? end_at - mono_ms() : 10000;
		int ret = fl_wire_recv(fd, &lim, left > 0 ? (int)left : 0, &in, err, sizeof(err));

		if (ret == -ETIMEDOUT && end_at) {
			pthread_mutex_lock(&p->lock);
			peer_end(fd);
			pthread_mutex_unlock(&p->lock);
			end_at = 0;
			continue;
		}
		if (ret != 0) {
			if (ret != -EPIPE && ret != -ECONNRESET)
				print_error("scripted source: %s (%d)\n", err, ret);
			break;
		}
		if (draining && in->body_case != FAULTLINE__WIRE__FRAME__BODY_ERROR) {
			/* after the bad frame: nothing more is answered here */
			fl_wire_free(in);
			continue;
		}
		if (in->body_case == FAULTLINE__WIRE__FRAME__BODY_PAGE_REQUEST) {
			const Faultline__Wire__PageRequest *q = in->page_request;
			size_t k;
			int n;

			pthread_mutex_lock(&p->lock);
			k = peer_note_asked(p, conn, q->pages, q->n_pages, answer);
			n = ++p->requests;
			if (conn == 0 && n == p->close_after_requests) {
				memcpy(p->dropped, q->pages, q->n_pages * sizeof(q->pages[0]));
				p->ndropped = q->n_pages;
				pthread_mutex_unlock(&p->lock);
				fl_wire_free(in);
				break;	/* the connection goes down with the request unanswered */
			}
			/* a send error means the router went away: recv says so next */
			if (k)
				(void)peer_send_pages(p, fd, q->seq, answer, k, false);
			if (n == p->poison_after_requests) {
				fl_statemap_set(&p->states, p->poison_late_page, S_POISON);
				peer_poison(fd, p->poison_late_page);
				peer_end(fd);
			}
			if (conn == 0 && n == p->bad_after_requests) {
				peer_send_bad(p, fd);
				draining = true;
			}
			pthread_mutex_unlock(&p->lock);
		} else if (in->body_case == FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY) {
			const Faultline__Wire__StateQuery *q = in->state_query;
			Faultline__Wire__StateAnswer a = FAULTLINE__WIRE__STATE_ANSWER__INIT;
			uint8_t st[(FL_WIRE_MAX_PAGES + 3) / 4] = { 0 };
			size_t k;

			pthread_mutex_lock(&p->lock);
			p->queries++;
			k = peer_note_asked(p, conn, q->pages, q->n_pages, answer);
			for (size_t i = 0; i < k; i++)
				fl_wire_state_set(st, i, fl_statemap_get(&p->states, answer[i]));
			a.seq = q->seq;
			a.n_pages = k;
			a.pages = answer;
			a.states.data = st;
			a.states.len = fl_wire_states_bytes(k);
			f = (fl_frame)FAULTLINE__WIRE__FRAME__INIT;
			f.body_case = FAULTLINE__WIRE__FRAME__BODY_STATE_ANSWER;
			f.state_answer = &a;
			if (k)
				send_frame(fd, &f);
			pthread_mutex_unlock(&p->lock);
		} else if (in->body_case == FAULTLINE__WIRE__FRAME__BODY_ERROR) {
			pthread_mutex_lock(&p->lock);
			snprintf(p->error_text, sizeof(p->error_text), "%s", in->error->text);
			p->error_code = in->error->code;
			pthread_mutex_unlock(&p->lock);
		} else if (in->body_case == FAULTLINE__WIRE__FRAME__BODY_END) {
			fl_wire_free(in);
			break;
		}
		fl_wire_free(in);
	}
}

/* A source still holding the old connection (an Error frame, EBUSY, where
 * the Hello should be), or a half-open one (the Hello never comes): either
 * way, until the router gives up on this connection. */
static void peer_misbehave(struct peer *p, int fd)
{
	fl_frame *in;
	char err[200], buf[256];

	if (fl_wire_recv(fd, NULL, 5000, &in, err, sizeof(err)) == 0)
		fl_wire_free(in);
	if (p->first_conn == FIRST_ERROR_BUSY) {
		Faultline__Wire__Error e = FAULTLINE__WIRE__ERROR__INIT;
		fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

		e.code = EBUSY;
		e.text = "another target is already connected";
		f.body_case = FAULTLINE__WIRE__FRAME__BODY_ERROR;
		f.error = &e;
		send_frame(fd, &f);
	}
	while (recv(fd, buf, sizeof(buf), 0) > 0)
		;
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	int max = p->max_conns ? p->max_conns : 1;

	for (int conn = 0; conn < max && conn < PEER_MAX_CONNS; conn++) {
		int fd = accept(p->lsock, NULL, NULL);

		if (fd < 0)
			return NULL;
		pthread_mutex_lock(&p->lock);
		p->fd = fd;
		p->conns++;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
		if (conn == 0 && p->first_conn != FIRST_SERVE)
			peer_misbehave(p, fd);
		else
			peer_conn(p, fd, conn);
		pthread_mutex_lock(&p->lock);
		p->fd = -1;
		pthread_mutex_unlock(&p->lock);
		close(fd);
	}
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
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	p->fd = -1;
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
	assert_int_equal(p->failures, 0);
	fl_statemap_free(&p->states);
	free(p->mem);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->cond);
}

/* Wait until `page` was asked about at least `n` times on any connection. */
static bool peer_wait_asked(struct peer *p, uint64_t page, int n, int timeout_ms)
{
	int64_t end = mono_ms() + timeout_ms;
	bool ok;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		int sum = 0;

		for (int c = 0; c < PEER_MAX_CONNS; c++)
			sum += p->asked[c][page];
		ok = sum >= n;
		if (ok || mono_ms() >= end)
			break;
		pthread_mutex_unlock(&p->lock);
		usleep(1000);
		pthread_mutex_lock(&p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	return ok;
}

static int peer_asked(struct peer *p, uint64_t page)
{
	int sum = 0;

	pthread_mutex_lock(&p->lock);
	for (int c = 0; c < PEER_MAX_CONNS; c++)
		sum += p->asked[c][page];
	pthread_mutex_unlock(&p->lock);
	return sum;
}

static void peer_set_hold(struct peer *p, uint64_t page, bool hold)
{
	pthread_mutex_lock(&p->lock);
	p->hold[page] = hold;
	pthread_mutex_unlock(&p->lock);
}

/* The answer a held page never got, sent now (late) on the live connection. */
static void peer_answer_late(struct peer *p, uint64_t page)
{
	pthread_mutex_lock(&p->lock);
	assert_true(p->fd >= 0);
	assert_int_equal(peer_send_pages(p, p->fd, 0, &page, 1, false), 0);
	pthread_mutex_unlock(&p->lock);
}

static void peer_send_map(struct peer *p)
{
	pthread_mutex_lock(&p->lock);
	assert_true(p->fd >= 0);
	assert_int_equal(peer_send_map_fd(p, p->fd), 0);
	pthread_mutex_unlock(&p->lock);
}

/* ---- the "VMM": guest memory registered with a real userfaultfd ---------- */

struct vmm {
	int uffd, memfd;
	uint8_t *mem;
	bool minor;
};

static void vmm_init_features(struct vmm *v, bool minor, uint64_t extra)
{
	uint64_t features = UFFD_FEATURE_POISON | UFFD_FEATURE_THREAD_ID | extra |
			    (minor ? UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM : 0);

	v->minor = minor;
	v->memfd = -1;
	v->uffd = test_uffd_open(O_CLOEXEC, features);
	assert_true(v->uffd >= 0);
	if (minor) {
		v->memfd = memfd_create("guest", MFD_CLOEXEC);
		assert_int_equal(ftruncate(v->memfd, NPAGES * PS), 0);
		v->mem = mmap(NULL, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_SHARED, v->memfd, 0);
	} else {
		v->mem = mmap(NULL, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	assert_true(v->mem != MAP_FAILED);
	assert_int_equal(test_uffd_register(v->uffd, v->mem, NPAGES * PS,
					    UFFDIO_REGISTER_MODE_MISSING |
					    (minor ? UFFDIO_REGISTER_MODE_MINOR : 0)), 0);
}

static void vmm_init(struct vmm *v, bool minor)
{
	vmm_init_features(v, minor, 0);
}

static void vmm_fini(struct vmm *v)
{
	/* uffd first: with EVENT_UNMAP a munmap would wait for a reader */
	close(v->uffd);
	munmap(v->mem, NPAGES * PS);
	if (v->memfd >= 0)
		close(v->memfd);
}

/* Per-thread SIGBUS/SIGSEGV recovery for readers. */
static __thread sigjmp_buf *bus_jmp;

static void on_fault_signal(int sig)
{
	if (bus_jmp)
		siglongjmp(*bus_jmp, sig);
	abort();
}

/* 0: read fine (bytes copied to out), else the signal the read took
 * (SIGBUS: poisoned; SIGSEGV: the mapping went away). */
static int touch_page(const uint8_t *addr, uint8_t *out)
{
	/* cmocka installs its own crash handlers around each test: ours goes on top */
	struct sigaction sa = { .sa_handler = on_fault_signal, .sa_flags = SA_NODEFER };
	sigjmp_buf jb;
	int sig;

	sigaction(SIGBUS, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
	bus_jmp = &jb;
	sig = sigsetjmp(jb, 1);
	if (sig) {
		bus_jmp = NULL;
		return sig;
	}
	memcpy(out, addr, PS);
	bus_jmp = NULL;
	return 0;
}

/* 1: SIGBUS, 0: read fine (bytes copied to out), -1: SIGSEGV */
static int read_page(const uint8_t *addr, uint8_t *out)
{
	int sig = touch_page(addr, out);

	return sig == SIGBUS ? 1 : sig ? -1 : 0;
}

/* A thread reading pages, for faults that must wait on something. */
struct toucher {
	uint8_t *base;
	unsigned n;
	uint8_t *copy;			/* n pages: what was read */
	int sig[NPAGES];		/* per page: 0, SIGBUS or SIGSEGV */
	pthread_t thr;
};

static void *toucher_main(void *arg)
{
	struct toucher *t = arg;

	for (unsigned i = 0; i < t->n; i++)
		t->sig[i] = touch_page(t->base + (size_t)i * PS, t->copy + (size_t)i * PS);
	return NULL;
}

static void toucher_start(struct toucher *t, uint8_t *base, unsigned n)
{
	memset(t, 0, sizeof(*t));
	t->base = base;
	t->n = n;
	t->copy = calloc(n, PS);
	assert_non_null(t->copy);
	assert_int_equal(pthread_create(&t->thr, NULL, toucher_main, t), 0);
}

/* True while the thread is still running after `ms`. */
static bool thread_stuck(pthread_t thr, int ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return pthread_timedjoin_np(thr, NULL, &ts) == ETIMEDOUT;
}

/* True while the reader is still blocked after `ms`. */
static bool toucher_blocked(struct toucher *t, int ms)
{
	return thread_stuck(t->thr, ms);
}

/*
 * Join the reader; 0, or -ETIMEDOUT when it was still blocked after
 * timeout_ms.  A reader the router left behind is released by hand
 * (unregister: it re-faults and gets a zero page; wake: for ranges that
 * are gone) so the failing test can report instead of hanging the suite.
 */
static int toucher_join(struct toucher *t, int uffd, int timeout_ms)
{
	struct uffdio_range range = { (uint64_t)(uintptr_t)t->base, (uint64_t)t->n * PS };

	if (!toucher_blocked(t, timeout_ms))
		return 0;
	print_error("a faulting thread is still blocked after %d ms: releasing it by hand\n", timeout_ms);
	ioctl(uffd, UFFDIO_UNREGISTER, &range);
	ioctl(uffd, UFFDIO_WAKE, &range);
	if (toucher_blocked(t, 5000)) {
		print_error("and it stays blocked: giving up\n");
		abort();
	}
	return -ETIMEDOUT;
}

static void toucher_free(struct toucher *t)
{
	free(t->copy);
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

/* `base`: zap hooks and the like to start from (NULL: none). */
static struct fl_router *router_new_cfg(struct vmm *v, int port, const char *journal,
					const struct fl_router_config *base)
{
	char src[64], err[256] = "";
	struct fl_region reg = { .base = v->mem, .length = NPAGES * PS, .memfd = v->memfd };
	struct fl_router_config cfg = { 0 };
	struct fl_router *r;
	int ret;

	if (base)
		cfg = *base;
	cfg.source = src;
	cfg.mode = v->minor ? FL_MODE_MINOR : FL_MODE_MISSING;
	cfg.uffd = v->uffd;
	cfg.regions = &reg;
	cfg.nregions = 1;
	cfg.journal = journal;
	cfg.reconnect_ms = 50;
	snprintf(src, sizeof(src), "127.0.0.1:%d", port);
	ret = fl_router_create(&cfg, &r, err, sizeof(err));
	if (ret)
		print_error("fl_router_create: %s\n", err);
	assert_int_equal(ret, 0);
	return r;
}

static struct fl_router *router_new(struct vmm *v, int port, const char *journal)
{
	return router_new_cfg(v, port, journal, NULL);
}

static void router_start(struct run *run, struct vmm *v, struct peer *p,
			 const struct fl_router_config *base)
{
	run->r = router_new_cfg(v, p->port, NULL, base);
	assert_int_equal(pthread_create(&run->thr, NULL, router_main, run), 0);
}

static void router_stop(struct run *run, struct fl_router_stats *st)
{
	fl_router_stop(run->r);
	pthread_join(run->thr, NULL);
	fl_router_get_stats(run->r, st);
	assert_int_equal(run->ret, 0);
}

/* What page `page` must read as on the target: 0 and its bytes, or SIGBUS. */
static int expect_page(const struct peer *p, uint64_t page, const uint8_t **bytes)
{
	static const uint8_t zero[PS];
	unsigned s = fl_statemap_get(&p->states, page);

	*bytes = s == S_ZERO ? zero : p->mem + page * PS;
	return s == S_POISON ? SIGBUS : 0;
}

/* Read [first, first+n) at `at` and check each page against the source's
 * page first+i: its bytes, zeros, or SIGBUS. */
static void check_pages_at(const uint8_t *at, struct peer *p, uint64_t first, unsigned n)
{
	uint8_t *buf = malloc(PS);

	for (unsigned i = 0; i < n; i++) {
		const uint8_t *want;
		int sig = expect_page(p, first + i, &want);
		int got = touch_page(at + (size_t)i * PS, buf);

		if (got != sig)
			print_error("page %llu: signal %d, expected %d\n", (unsigned long long)(first + i), got, sig);
		assert_int_equal(got, sig);
		if (!sig)
			assert_memory_equal(buf, want, PS);
	}
	free(buf);
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
/* Does the page carry a UFFDIO_POISON marker?  pagemap shows one as a
 * swap entry of the PTE-marker type with PTE_MARKER_POISONED set. */
static bool poison_marker_at(const void *addr)
{
	uint64_t e = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &e, 8, (off_t)((uintptr_t)addr / PS * 8)), 8);
	close(fd);
	return (e >> 62 & 1) && !(e >> 63) && (e & 31) >= 16 && ((e & ((1ull << 55) - 1)) >> 5 & 2);
}

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

	/* Fresh guest memory (the next migration of a VM of the same shape),
	 * no source listening: nothing of the journal may be applied before
	 * its migration is confirmed — no page poisoned, none marked. */
	vmm_init(&v, false);
	r2 = router_new(&v, 1, path);
	fl_router_get_stats(r2, &st);
	assert_int_equal(st.journal_loaded, 0);
	assert_int_equal(st.poisons, 0);
	for (uint64_t pg = 0; pg < NPAGES; pg++)
		assert_false(poison_marker_at(v.mem + pg * PS));
	fl_router_destroy(r2);
	/* The operator names the journal's session (the scripted source's is
	 * 42): applied at once, before any connection. */
	{
		struct fl_router_config base = { .journal_session = 42 };

		r2 = router_new_cfg(&v, 1, path, &base);
	}
	fl_router_get_stats(r2, &st);
	assert_int_equal(st.journal_loaded, NPAGES / 16);
	assert_int_equal(st.poisons, NPAGES / 16);
	assert_int_equal(read_page(v.mem + 5 * PS, buf), 1);
	fl_router_destroy(r2);
	vmm_fini(&v);

	/* Another session named: refused, nothing applied. */
	vmm_init(&v, false);
	{
		struct fl_region reg = { .base = v.mem, .length = NPAGES * PS, .memfd = -1 };
		struct fl_router_config cfg = { .source = "127.0.0.1:1", .mode = FL_MODE_MISSING,
						.uffd = v.uffd, .regions = &reg, .nregions = 1,
						.journal = path, .journal_session = 43 };
		char err[256] = "";

		assert_int_equal(fl_router_create(&cfg, &r2, err, sizeof(err)), -ESTALE);
		assert_non_null(strstr(err, "nothing of it was applied"));
		for (uint64_t pg = 0; pg < NPAGES; pg++)
			assert_false(poison_marker_at(v.mem + pg * PS));
	}
	vmm_fini(&v);

	/* A source of another migration (session 7): the router refuses it
	 * and ends with a named error, having poisoned nothing. */
	vmm_init(&v, false);
	peer_init(&p);
	p.session = 7;
	p.poison_after_requests = -1;
	peer_start(&p);
	r2 = router_new(&v, p.port, path);
	{
		int ret;

		while ((ret = fl_router_step(r2, 100)) == 0)
			;
		assert_int_equal(ret, -ESTALE);
		assert_non_null(strstr(fl_router_error(r2), "another migration"));
	}
	fl_router_get_stats(r2, &st);
	assert_int_equal(st.poisons, 0);
	for (uint64_t pg = 0; pg < NPAGES; pg++)
		assert_false(poison_marker_at(v.mem + pg * PS));
	fl_router_destroy(r2);
	peer_finish(&p);
	vmm_fini(&v);

	/* Corrupt or truncated journals are refused with a reason, not applied. */
	{
		char bad[] = "/tmp/faultline-journal-bad-XXXXXX";
		int bfd = mkstemp(bad);
		uint8_t junk[40];
		struct fl_region reg = { .base = (void *)0x10000000, .length = NPAGES * PS, .memfd = -1 };
		struct fl_router_config cfg = { .source = "127.0.0.1:1", .mode = FL_MODE_MISSING, .uffd = -1,
						.regions = &reg, .nregions = 1, .journal = bad };
		char err[256] = "";

		memset(junk, 0x5a, sizeof(junk));
		assert_int_equal(write(bfd, junk, sizeof(junk)), sizeof(junk));
		close(bfd);
		assert_int_equal(fl_router_create(&cfg, &r2, err, sizeof(err)), -EBADMSG);
		assert_non_null(strstr(err, "truncated"));
		unlink(bad);
	}

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

/*
 * The journal file itself: never through a symlink, never one somebody else
 * may write, never two routers on one.  Each refused with the reason, the
 * guest untouched.
 */
static void test_journal_files_refused(void **state)
{
	char dir[] = "/tmp/faultline-jdir-XXXXXX", path[128], link[128], bad[128];
	struct fl_region reg = { .base = (void *)0x10000000, .length = NPAGES * PS, .memfd = -1 };
	struct fl_router_config cfg = { .source = "127.0.0.1:1", .mode = FL_MODE_MISSING, .uffd = -1,
					.regions = &reg, .nregions = 1 };
	struct fl_router *r1, *r2;
	struct vmm v;
	char err[256] = "";
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/j", dir);
	snprintf(link, sizeof(link), "%s/link", dir);
	snprintf(bad, sizeof(bad), "%s/bad", dir);
	assert_int_equal(symlink(path, link), 0);
	cfg.journal = link;
	assert_int_equal(fl_router_create(&cfg, &r2, err, sizeof(err)), -ELOOP);
	assert_non_null(strstr(err, "symlink"));

	fd = open(bad, O_CREAT | O_WRONLY, 0666);
	assert_true(fd >= 0);
	assert_int_equal(fchmod(fd, 0666), 0);
	close(fd);
	cfg.journal = bad;
	assert_int_equal(fl_router_create(&cfg, &r2, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "writable by it alone"));

	vmm_init(&v, false);
	r1 = router_new(&v, 1, path);
	{
		struct fl_region vr = { .base = v.mem, .length = NPAGES * PS, .memfd = -1 };
		struct fl_router_config c2 = cfg;

		c2.regions = &vr;
		c2.uffd = v.uffd;
		c2.journal = path;
		assert_int_equal(fl_router_create(&c2, &r2, err, sizeof(err)), -EBUSY);
		assert_non_null(strstr(err, "in use by another router"));
	}
	fl_router_destroy(r1);
	vmm_fini(&v);
	unlink(link);
	unlink(bad);
	unlink(path);
	rmdir(dir);
}

/* ---- mapping changes: UFFD events built for real ----------------------------- */

static uint64_t total_asked(struct peer *p, uint64_t first, unsigned n)
{
	uint64_t sum = 0;

	for (unsigned i = 0; i < n; i++)
		sum += (uint64_t)peer_asked(p, first + i);
	return sum;
}

/* MINOR: the page cache holds precopy; even DIRTY pages become CLEAN (final
 * bytes cached), the other DIRTY ones are cached stale. */
static void precopy_into_memfd(struct vmm *v, struct peer *p)
{
	uint8_t stale[PS];

	memset(stale, 0xee, PS);
	for (uint64_t i = 0; i < NPAGES; i++) {
		unsigned s = fl_statemap_get(&p->states, i);

		if (s == S_DIRTY && i % 2 == 0) {
			fl_statemap_set(&p->states, i, S_CLEAN);
			s = S_CLEAN;
		}
		if (s == S_CLEAN || s == S_DIRTY)
			assert_int_equal(pwrite(v->memfd, s == S_CLEAN ? p->mem + i * PS : stale, PS,
						(off_t)(i * PS)), PS);
	}
}

/*
 * MINOR mode, pages missing from the page cache (zero at precopy, written
 * on the source since: precopy sends only non-zero pages): their faults are
 * MISSING ones.  Once the data is in the page cache, CONTINUE resolves them;
 * asking the source again would loop for ever.
 */
static void test_minor_uncached(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	struct toucher t;

	(void)state;
	peer_init(&p);
	p.poison_after_requests = -1;
	vmm_init(&v, true);
	precopy_into_memfd(&v, &p);
	for (uint64_t pg = 1; pg <= 7; pg += 6)	/* 1 and 7: DIRTY, now uncached */
		assert_int_equal(fallocate(v.memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
					   (off_t)(pg * PS), PS), 0);
	peer_start(&p);
	router_start(&run, &v, &p, NULL);

	toucher_start(&t, v.mem, 8);
	assert_int_equal(toucher_join(&t, v.uffd, 5000), 0);
	for (unsigned i = 0; i < 8; i++) {
		const uint8_t *want;

		assert_int_equal(t.sig[i], expect_page(&p, i, &want));
		if (!t.sig[i])
			assert_memory_equal(t.copy + (size_t)i * PS, want, PS);
	}
	toucher_free(&t);
	assert_int_equal(peer_asked(&p, 1), 1);
	assert_int_equal(peer_asked(&p, 7), 1);
	router_stop(&run, &st);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
}

/*
 * The router finishes (source End, nothing pending: it unregisters the
 * guest memory and stops reading the uffd) while a thread keeps faulting on
 * a zero page it drops again and again.  A fault caught in the middle of
 * the unregistration must still be woken; otherwise it waits for ever on a
 * uffd nobody reads.  A race: many rounds.
 */
struct hammer {
	uint8_t *page;
	int memfd;			/* MINOR: punch the page out instead */
	off_t off;
	int stop;			/* atomic */
	pthread_t thr;
};

/* madvise() takes the mmap lock, serializing with UNREGISTER; a punch
 * through the memfd does not, so the fault can land right in it. */
static void *hammer_main(void *arg)
{
	struct hammer *h = arg;

	while (!__atomic_load_n(&h->stop, __ATOMIC_RELAXED)) {
		if (h->memfd >= 0)
			fallocate(h->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, h->off, PS);
		else
			madvise(h->page, PS, MADV_DONTNEED);
		(void)*(volatile uint8_t *)h->page;
	}
	return NULL;
}

static void finish_while_faulting(bool minor, int rounds)
{
	uint64_t faults = 0;

	for (int round = 0; round < rounds; round++) {
		struct peer p;
		struct vmm v;
		struct run run;
		struct fl_router_stats st;
		struct hammer h = { 0 };

		peer_init(&p);
		p.send_map = p.push_all = true;
		p.end_delay_ms = 20;	/* the router serves the hammer meanwhile */
		p.minor = minor;
		p.poison_after_requests = -1;
		vmm_init(&v, minor);
		if (minor)
			precopy_into_memfd(&v, &p);
		peer_start(&p);
		/* a zero page: never pushed, each fault is zero-filled */
		h.page = v.mem + 3 * PS;
		h.memfd = v.memfd;
		h.off = 3 * PS;
		assert_int_equal(pthread_create(&h.thr, NULL, hammer_main, &h), 0);
		router_start(&run, &v, &p, NULL);
		pthread_join(run.thr, NULL);	/* finishes by itself after End */
		fl_router_get_stats(run.r, &st);
		assert_int_equal(st.finished, 1);
		usleep(1000);
		__atomic_store_n(&h.stop, 1, __ATOMIC_RELAXED);
		if (thread_stuck(h.thr, 2000)) {
			struct uffdio_range range = { (uint64_t)(uintptr_t)h.page, PS };

			print_error("%s round %d: a fault from the unregistration was left waiting\n", minor ? "minor" : "missing", round);
			ioctl(v.uffd, UFFDIO_WAKE, &range);
			pthread_join(h.thr, NULL);
			fail();
		}
		faults += st.faults;
		fl_router_destroy(run.r);
		peer_finish(&p);
		vmm_fini(&v);
	}
	/* the router was serving the hammer, not idle, when it finished */
	assert_true(faults > 2ull * (uint64_t)rounds);
}

static void test_finish_while_faulting(void **state)
{
	(void)state;
	finish_while_faulting(false, 40);
	finish_while_faulting(true, 40);
}

/*
 * The VMM discards [16, 32) the way a balloon does while the router runs
 * (MISSING: MADV_DONTNEED of anonymous memory; MINOR: MADV_REMOVE of the
 * memfd).  Pages 16..23 were read before, 24..29 and 31 never, 30 has a
 * fault waiting for a source answer held back until after the discard;
 * page 21 is poisoned.  Afterwards every discarded page reads zero without
 * a question to the source — also once the source's map arrives calling
 * them DIRTY, and when the held answer for 30 finally comes — and 21 still
 * raises SIGBUS.
 */
static void discard_range(bool minor)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	struct toucher t;
	uint64_t asked_before;

	peer_init(&p);
	p.poison_after_requests = -1;
	p.hold[30] = true;
	vmm_init_features(&v, minor, UFFD_FEATURE_EVENT_REMOVE);
	if (minor)
		precopy_into_memfd(&v, &p);
	peer_start(&p);
	router_start(&run, &v, &p, NULL);

	check_pages_at(v.mem + 16 * PS, &p, 16, 8);
	toucher_start(&t, v.mem + 30 * PS, 1);
	assert_true(peer_wait_asked(&p, 30, 1, 5000));
	asked_before = total_asked(&p, 16, 16);

	/* With EVENT_REMOVE this returns only once the router read the event. */
	assert_int_equal(madvise(v.mem + 16 * PS, 16 * PS, minor ? MADV_REMOVE : MADV_DONTNEED), 0);

	/* The waiter on 30 is resolved by the discard: zeros, no source data. */
	assert_int_equal(toucher_join(&t, v.uffd, 5000), 0);
	assert_int_equal(t.sig[0], 0);
	{
		static const uint8_t zero[PS];

		assert_memory_equal(t.copy, zero, PS);
	}
	toucher_free(&t);

	/* Late answer for 30 and the source's map (calling most of the range
	 * DIRTY/CLEAN), then a fresh page as a barrier: its answer comes after
	 * both on the same stream, so once it is read the router has them. */
	peer_answer_late(&p, 30);
	peer_send_map(&p);
	check_pages_at(v.mem + 40 * PS, &p, 40, 1);

	for (uint64_t i = 16; i < 32; i++) {
		uint8_t buf[PS];
		const uint8_t *want;
		int sig = expect_page(&p, i, &want);

		assert_int_equal(touch_page(v.mem + i * PS, buf), sig);	/* 21: still poisoned */
		if (!sig) {
			static const uint8_t zero[PS];

			if (memcmp(buf, zero, PS))
				print_error("discarded page %llu reads non-zero\n", (unsigned long long)i);
			assert_memory_equal(buf, zero, PS);
		}
	}
	assert_int_equal(total_asked(&p, 16, 16), asked_before);
	/* pages outside the discarded range are untouched by it */
	check_pages_at(v.mem + 8 * PS, &p, 8, 8);
	check_pages_at(v.mem + 32 * PS, &p, 32, 4);

	router_stop(&run, &st);
	assert_true(st.events >= 1);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
}

static void test_remove_missing(void **state)
{
	(void)state;
	discard_range(false);
}

static void test_remove_minor(void **state)
{
	(void)state;
	discard_range(true);
}

/*
 * A thread waits on page 2 while the source holds its answer; the VMM
 * munmaps [0, 4).  The waiter must not stay blocked: it is woken and takes
 * SIGSEGV.  With EVENT_UNMAP the router learns of the unmap and wakes the
 * range; without it the late answer's COPY gets ENOENT and the router wakes.
 * Either way it keeps serving the rest.
 */
static void unmap_waiter(uint64_t features)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	struct toucher t;

	peer_init(&p);
	p.poison_after_requests = -1;
	p.hold[2] = true;
	vmm_init_features(&v, false, features);
	peer_start(&p);
	router_start(&run, &v, &p, NULL);

	toucher_start(&t, v.mem + 2 * PS, 1);
	assert_true(peer_wait_asked(&p, 2, 1, 5000));
	assert_int_equal(munmap(v.mem, 4 * PS), 0);
	if (!(features & UFFD_FEATURE_EVENT_UNMAP))
		peer_answer_late(&p, 2);
	assert_int_equal(toucher_join(&t, v.uffd, 5000), 0);
	assert_int_equal(t.sig[0], SIGSEGV);
	toucher_free(&t);
	if (features & UFFD_FEATURE_EVENT_UNMAP)
		peer_answer_late(&p, 2);	/* late data for an unmapped page: dropped */

	check_pages_at(v.mem + 4 * PS, &p, 4, 8);
	router_stop(&run, &st);
	assert_true(st.wakes >= 1);
	if (features & UFFD_FEATURE_EVENT_UNMAP)
		assert_true(st.events >= 1);
	else
		assert_true(st.enoent >= 1);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
}

static void test_unmap_event(void **state)
{
	(void)state;
	unmap_waiter(UFFD_FEATURE_EVENT_UNMAP);
}

static void test_unmap_no_event(void **state)
{
	(void)state;
	unmap_waiter(0);
}

/* A free spot for `n` pages to mremap onto. */
static uint8_t *reserve(unsigned n)
{
	uint8_t *dst = mmap(NULL, (size_t)n * PS, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(dst != MAP_FAILED);
	return dst;
}

/* [16, 24) moves before it is touched: faults at the new address are served
 * with the moved pages (the page index follows the move), the rest of the
 * region stays where it was. */
static void test_remap(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	uint8_t *dst = reserve(8);

	(void)state;
	peer_init(&p);
	p.poison_after_requests = -1;
	vmm_init_features(&v, false, UFFD_FEATURE_EVENT_REMAP);
	peer_start(&p);
	router_start(&run, &v, &p, NULL);

	check_pages_at(v.mem, &p, 0, 4);
	assert_ptr_equal(mremap(v.mem + 16 * PS, 8 * PS, 8 * PS, MREMAP_MAYMOVE | MREMAP_FIXED, dst), dst);
	check_pages_at(dst, &p, 16, 8);	/* 19 zero, 21 poisoned */
	check_pages_at(v.mem + 8 * PS, &p, 8, 8);
	check_pages_at(v.mem + 24 * PS, &p, 24, 8);

	router_stop(&run, &st);
	assert_true(st.events >= 1);
	assert_int_equal(st.poisons, 1);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
	munmap(dst, 8 * PS);
}

/* A thread waits on page 18 (answer held) when [16, 24) moves: it must be
 * woken (it re-faults at the old, now unmapped address: SIGSEGV), and the
 * late answer lands at the new address without a second request. */
static void test_remap_waiter(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	struct toucher t;
	uint8_t *dst = reserve(8);

	(void)state;
	peer_init(&p);
	p.poison_after_requests = -1;
	p.hold[18] = true;
	vmm_init_features(&v, false, UFFD_FEATURE_EVENT_REMAP);
	peer_start(&p);
	router_start(&run, &v, &p, NULL);

	toucher_start(&t, v.mem + 18 * PS, 1);
	assert_true(peer_wait_asked(&p, 18, 1, 5000));
	assert_ptr_equal(mremap(v.mem + 16 * PS, 8 * PS, 8 * PS, MREMAP_MAYMOVE | MREMAP_FIXED, dst), dst);
	assert_int_equal(toucher_join(&t, v.uffd, 5000), 0);
	assert_int_equal(t.sig[0], SIGSEGV);
	toucher_free(&t);

	peer_answer_late(&p, 18);
	check_pages_at(dst, &p, 16, 8);
	assert_int_equal(peer_asked(&p, 18), 1);

	router_stop(&run, &st);
	assert_true(st.events >= 1);
	assert_true(st.wakes >= 1);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
	munmap(dst, 8 * PS);
}

/* Someone else places page 2 (without waking) while the router's request is
 * outstanding: the router's COPY gets EEXIST and its WAKE releases the
 * waiter, which reads what the other party placed. */
static void test_eexist(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	struct toucher t;
	uint8_t *mine = aligned_alloc(PS, PS);
	struct uffdio_copy c;

	(void)state;
	peer_init(&p);
	p.poison_after_requests = -1;
	p.hold[2] = true;
	vmm_init(&v, false);
	peer_start(&p);
	router_start(&run, &v, &p, NULL);

	toucher_start(&t, v.mem + 2 * PS, 1);
	assert_true(peer_wait_asked(&p, 2, 1, 5000));
	memset(mine, 0xab, PS);
	c = (struct uffdio_copy){ .dst = (uint64_t)(uintptr_t)(v.mem + 2 * PS),
				  .src = (uint64_t)(uintptr_t)mine, .len = PS,
				  .mode = UFFDIO_COPY_MODE_DONTWAKE };
	assert_int_equal(ioctl(v.uffd, UFFDIO_COPY, &c), 0);
	assert_true(toucher_blocked(&t, 100));	/* placed, but nobody woke it */
	peer_answer_late(&p, 2);
	assert_int_equal(toucher_join(&t, v.uffd, 5000), 0);
	assert_int_equal(t.sig[0], 0);
	assert_memory_equal(t.copy, mine, PS);
	toucher_free(&t);

	check_pages_at(v.mem + 4 * PS, &p, 4, 4);
	router_stop(&run, &st);
	assert_true(st.eexist >= 1);
	assert_true(st.wakes >= 1);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
	free(mine);
}

/*
 * EAGAIN, forced (the kernel selftest's "EAGAIN while a REMOVE event is
 * pending"): the ioctls of a uffd fail with EAGAIN from the moment a
 * non-cooperative event is raised until it has been read.  The router's
 * zap hooks give the one deterministic window: when zap_finish() returns,
 * the router handles the rest of the frames it has already read without
 * reading the uffd.  So the source sends PoisonUpdate(1) (page 1 mapped:
 * zap, then poison) and the held answer for page 2 in one write; zap_finish
 * starts a VMM thread discarding page 10 and waits until its REMOVE event
 * is queued.  The poison and the COPY of page 2 both get EAGAIN; the router
 * must not lose either: page 2 is asked again and placed, page 1 poisoned.
 */
struct eagain_hook {
	int uffd;
	int efd;			/* zap_wait_fd */
	void *zap_addr;
	uint64_t zap_len;
	uint8_t *other;			/* page discarded while the router is busy */
	pthread_t zapper, discarder;
	bool zapping, discarding;
	int errors;
};

static void *hook_zapper(void *arg)
{
	struct eagain_hook *h = arg;
	uint64_t one = 1;

	if (madvise(h->zap_addr, h->zap_len, MADV_DONTNEED))
		h->errors++;
	if (write(h->efd, &one, sizeof(one)) != sizeof(one))
		h->errors++;
	return NULL;
}

static void *hook_discarder(void *arg)
{
	struct eagain_hook *h = arg;

	if (madvise(h->other, PS, MADV_DONTNEED))
		h->errors++;
	return NULL;
}

/* Runs on the router's thread: the madvise must not (its REMOVE event
 * waits for the router), so a VMM thread does it. */
static int hook_zap(void *ctx, void *addr, uint64_t len)
{
	struct eagain_hook *h = ctx;

	h->zap_addr = addr;
	h->zap_len = len;
	if (pthread_create(&h->zapper, NULL, hook_zapper, h))
		return -EAGAIN;
	h->zapping = true;
	return 0;
}

static int hook_zap_finish(void *ctx)
{
	struct eagain_hook *h = ctx;
	struct pollfd pfd = { .fd = h->uffd, .events = POLLIN };
	uint64_t v;

	if (read(h->efd, &v, sizeof(v)) != sizeof(v))
		return 0;
	pthread_join(h->zapper, NULL);
	h->zapping = false;
	if (!h->discarding) {
		if (pthread_create(&h->discarder, NULL, hook_discarder, h))
			return -EAGAIN;
		h->discarding = true;
		/* queued and unread: every placement now gets EAGAIN */
		if (poll(&pfd, 1, 5000) != 1)
			h->errors++;
	}
	return 1;
}

static void test_eagain(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	struct toucher t;
	struct eagain_hook h = { .efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) };
	struct fl_router_config hooks = { .zap = hook_zap, .zap_finish = hook_zap_finish,
					  .zap_ctx = &h, .zap_wait_fd = h.efd };
	struct fl_wire_writer w;
	uint8_t buf[PS];
	uint64_t pages24[2] = { 2, 4 };

	(void)state;
	assert_true(h.efd >= 0);
	peer_init(&p);
	p.poison_after_requests = -1;
	p.hold[2] = true;
	vmm_init_features(&v, false, UFFD_FEATURE_EVENT_REMOVE);
	h.uffd = v.uffd;
	h.other = v.mem + 10 * PS;
	peer_start(&p);
	router_start(&run, &v, &p, &hooks);

	check_pages_at(v.mem + 1 * PS, &p, 1, 1);	/* mapped: its poison needs a zap */
	toucher_start(&t, v.mem + 2 * PS, 1);
	assert_true(peer_wait_asked(&p, 2, 1, 5000));
	peer_set_hold(&p, 2, false);		/* the question asked again is answered */

	fl_wire_writer_init(&w);
	pthread_mutex_lock(&p.lock);
	fl_statemap_set(&p.states, 1, S_POISON);
	assert_int_equal(peer_put_poison(&w, 1), 0);
	/* page 4 rides along as a background push: nobody waits for it */
	assert_int_equal(peer_put_pages(&p, &w, 0, pages24, 2, true), 0);
	assert_int_equal(writer_send(&w, p.fd), 0);
	pthread_mutex_unlock(&p.lock);

	assert_int_equal(toucher_join(&t, v.uffd, 5000), 0);
	assert_int_equal(t.sig[0], 0);
	assert_memory_equal(t.copy, p.mem + 2 * PS, PS);
	toucher_free(&t);
	/* The push that met EAGAIN is not dropped: the router asks for page 4
	 * again on its own and places it, before anyone touches it (else it
	 * would read zero once the range is unregistered at the end). */
	assert_true(peer_wait_asked(&p, 4, 1, 5000));
	{
		unsigned char vec = 0;
		int64_t until = mono_ms() + 5000;

		while (mincore(v.mem + 4 * PS, PS, &vec) == 0 && !(vec & 1) && mono_ms() < until)
			usleep(1000);
		assert_true(vec & 1);
	}
	check_pages_at(v.mem + 4 * PS, &p, 4, 1);
	assert_int_equal(read_page(v.mem + 1 * PS, buf), 1);
	/* the discard that raised the EAGAIN is a discard like any other */
	assert_int_equal(read_page(v.mem + 10 * PS, buf), 0);
	{
		static const uint8_t zero[PS];

		assert_memory_equal(buf, zero, PS);
	}

	router_stop(&run, &st);
	assert_true(h.discarding);
	pthread_join(h.discarder, NULL);
	assert_int_equal(h.errors, 0);
	assert_true(st.eagain >= 2);		/* the poison's and the COPY's */
	assert_true(peer_asked(&p, 2) >= 2);	/* the EAGAINed data was not kept: asked again */
	assert_true(st.poisons >= 1);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
	close(h.efd);
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1;	/* the directory's own fd */
}

/*
 * The VMM forks with EVENT_FORK: the router gets a uffd for the child (an
 * fd installed in this process when it reads the event) and must close it,
 * not leak it; the child, whose guest memory nobody migrates, must not hang
 * on it either; the parent keeps being served.
 */
static void test_fork(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	int before, after = -1, status = 0;
	pid_t pid;

	(void)state;
	peer_init(&p);
	p.poison_after_requests = -1;
	vmm_init_features(&v, false, UFFD_FEATURE_EVENT_FORK);
	peer_start(&p);
	router_start(&run, &v, &p, NULL);

	check_pages_at(v.mem, &p, 0, 3);
	before = count_fds();
	/* Returns once the router has read the FORK event.  Not glibc's fork():
	 * it holds the malloc locks across the syscall, and an embedded router
	 * caught inside malloc() would then never read the event (seen here).
	 * The child only reads memory and exits. */
	pid = (pid_t)syscall(SYS_fork);
	assert_true(pid >= 0);
	if (pid == 0) {
		static const uint8_t zero[PS];
		volatile uint8_t *mem = v.mem;
		uint8_t page[PS];

		alarm(5);	/* a child left blocked on its uffd dies, and says so */
		for (int i = 0; i < PS; i++)
			page[i] = mem[1 * PS + i];
		if (memcmp(page, p.mem + 1 * PS, PS))
			_exit(2);	/* placed before the fork: the child has it */
		for (int i = 0; i < PS; i++)
			page[i] = mem[40 * PS + i];
		_exit(memcmp(page, zero, PS) ? 3 : 0);	/* never placed: not ours to fill */
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFEXITED(status))
		print_error("forked child: %s\n", WIFSIGNALED(status) ? strsignal(WTERMSIG(status)) : "?");
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	for (int i = 0; i < 2000 && (after = count_fds()) != before; i++)
		usleep(1000);
	assert_int_equal(after, before);

	check_pages_at(v.mem + 3 * PS, &p, 3, 13);
	check_pages_at(v.mem + 40 * PS, &p, 40, 1);
	router_stop(&run, &st);
	assert_true(st.events >= 1);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
}

/* ---- the source connection ------------------------------------------------ */

/* Four readers over the whole region; the source drops the connection on
 * the third request, unanswered, and accepts again: what was outstanding is
 * asked again on the new connection and every page arrives. */
static void test_source_reconnect(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	struct toucher t[4];

	(void)state;
	peer_init(&p);
	p.poison_after_requests = -1;
	p.close_after_requests = 3;
	p.max_conns = 2;
	vmm_init(&v, false);
	peer_start(&p);
	router_start(&run, &v, &p, NULL);

	for (int i = 0; i < 4; i++)
		toucher_start(&t[i], v.mem + (size_t)i * 16 * PS, 16);
	for (int i = 0; i < 4; i++)
		assert_int_equal(toucher_join(&t[i], v.uffd, 10000), 0);
	for (int i = 0; i < 4; i++) {
		for (unsigned k = 0; k < 16; k++) {
			uint64_t page = (uint64_t)i * 16 + k;
			const uint8_t *want;
			int sig = expect_page(&p, page, &want);

			assert_int_equal(t[i].sig[k], sig);
			if (!sig)
				assert_memory_equal(t[i].copy + (size_t)k * PS, want, PS);
		}
		toucher_free(&t[i]);
	}
	router_stop(&run, &st);
	assert_int_equal(st.reconnects, 1);
	pthread_mutex_lock(&p.lock);
	assert_int_equal(p.conns, 2);
	assert_true(p.ndropped >= 1);
	for (size_t i = 0; i < p.ndropped; i++)
		assert_true(p.asked[1][p.dropped[i]] >= 1);
	pthread_mutex_unlock(&p.lock);
	fl_router_destroy(run.r);	/* closes the second connection: the peer returns */
	peer_finish(&p);
	vmm_fini(&v);
}

/*
 * After answering the second request the source sends, in one write, a
 * PoisonUpdate for page 9 (which its own state still calls DIRTY) and a
 * PageData naming page 1000 of a 64-page region.  The router answers with
 * an Error frame naming the problem, drops the connection and reconnects;
 * what it accepted before the bad frame stays applied: the pages placed
 * stay, and page 9 is poisoned without asking the new connection.
 */
static void test_malformed_frame(void **state)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	uint8_t buf[PS];

	(void)state;
	peer_init(&p);
	p.poison_after_requests = -1;
	p.bad_after_requests = 2;
	p.bad_poison_page = 9;
	p.max_conns = 2;
	vmm_init(&v, false);
	peer_start(&p);
	router_start(&run, &v, &p, NULL);

	check_pages_at(v.mem + 1 * PS, &p, 1, 2);	/* 2nd request: the bad frame follows */
	check_pages_at(v.mem + 4 * PS, &p, 4, 1);	/* served on the new connection */
	assert_int_equal(read_page(v.mem + 9 * PS, buf), 1);
	check_pages_at(v.mem + 1 * PS, &p, 1, 2);	/* still placed: no new request */
	router_stop(&run, &st);

	assert_int_equal(st.reconnects, 1);
	pthread_mutex_lock(&p.lock);
	assert_int_equal(p.conns, 2);
	if (!strstr(p.error_text, "page 1000"))
		print_error("router's Error frame: \"%s\"\n", p.error_text);
	assert_non_null(strstr(p.error_text, "page 1000"));
	assert_int_equal(p.error_code, ERANGE);
	assert_int_equal(p.asked[1][9], 0);
	assert_int_equal(p.asked[1][1] + p.asked[1][2], 0);
	assert_true(p.asked[1][4] >= 1);
	pthread_mutex_unlock(&p.lock);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
}

/*
 * The source answers the first connection with an Error (EBUSY: it still
 * holds the old connection), or not at all (half-open).  The router must
 * not end the migration (the guest would freeze): it backs off, connects
 * again and serves every fault.
 */
static void first_connection_refused(int how)
{
	struct peer p;
	struct vmm v;
	struct run run;
	struct fl_router_stats st;
	int64_t t0 = mono_ms();

	peer_init(&p);
	p.poison_after_requests = -1;
	p.first_conn = how;
	p.max_conns = 2;
	vmm_init(&v, false);
	peer_start(&p);
	router_start(&run, &v, &p, NULL);
	check_pages_at(v.mem, &p, 0, 8);
	router_stop(&run, &st);
	pthread_mutex_lock(&p.lock);
	assert_int_equal(p.conns, 2);
	pthread_mutex_unlock(&p.lock);
	assert_int_equal(st.connected, 1);
	if (how == FIRST_HALF_OPEN)	/* given up on after the Hello timeout (5 s) */
		assert_true(mono_ms() - t0 >= 4500);
	fl_router_destroy(run.r);
	peer_finish(&p);
	vmm_fini(&v);
}

static void test_source_busy_reconnects(void **state)
{
	(void)state;
	first_connection_refused(FIRST_ERROR_BUSY);
}

static void test_source_half_open_reconnects(void **state)
{
	(void)state;
	first_connection_refused(FIRST_HALF_OPEN);
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
	/* the one HOST:PORT parser: a port out of range is refused here too */
	cfg.source = "127.0.0.1:70000";
	assert_int_equal(fl_router_create(&cfg, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "65535"));
	cfg.source = "127.0.0.1:1";
	cfg.mode = FL_MODE_MINOR;
	assert_int_equal(fl_router_create(&cfg, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "memfd"));
	cfg.mode = FL_MODE_MISSING;
	reg.length = PS + 1;
	assert_int_equal(fl_router_create(&cfg, &r, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "page aligned"));
}

/* An argument picks tests by name pattern (cmocka's filter: * and ?). */
int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_missing_per_fault),
		cmocka_unit_test(test_missing_map_push_end),
		cmocka_unit_test(test_late_poison),
		cmocka_unit_test(test_late_poison_event_remove),
		cmocka_unit_test(test_minor),
		cmocka_unit_test(test_journal_reload),
		cmocka_unit_test(test_journal_files_refused),
		cmocka_unit_test(test_bad_config),
		cmocka_unit_test(test_minor_uncached),
		cmocka_unit_test(test_finish_while_faulting),
		cmocka_unit_test(test_remove_missing),
		cmocka_unit_test(test_remove_minor),
		cmocka_unit_test(test_unmap_event),
		cmocka_unit_test(test_unmap_no_event),
		cmocka_unit_test(test_remap),
		cmocka_unit_test(test_remap_waiter),
		cmocka_unit_test(test_eexist),
		cmocka_unit_test(test_eagain),
		cmocka_unit_test(test_fork),
		cmocka_unit_test(test_source_reconnect),
		cmocka_unit_test(test_malformed_frame),
		cmocka_unit_test(test_source_busy_reconnects),
		cmocka_unit_test(test_source_half_open_reconnects),
	};

	signal(SIGPIPE, SIG_IGN);
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
