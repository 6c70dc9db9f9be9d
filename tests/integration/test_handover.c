// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of the VMM -> router handover (src/migrate/handover.c) over a real
 * Unix socket in a temporary directory, with a real userfaultfd and memfd.
 * The "VMM" runs in a thread of this process, so the router side can check
 * what it received against the originals: the uffd it got places pages that
 * the VMM side then reads, the memfd is the same inode, zap requests really
 * drop pages.  Malformed handovers are crafted by hand (frame + SCM_RIGHTS)
 * and must be refused with the right errno, an Error frame back to the
 * sender, and no descriptor left open.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "handover.h"
#include "stranger.h"
#include "uffd_compat.h"
#include "test_uffd.h"

#define PS 4096UL
#define NPAGES 16

struct fixture {
	char dir[64];
	char path[128];
};

static int setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));

	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/fl-handover-XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->path, sizeof(fx->path), "%s/router.sock", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	unlink(fx->path);
	rmdir(fx->dir);
	free(fx);
	return 0;
}

static int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

/* A userfaultfd with the API handshake done. */
static int make_uffd(uint64_t features)
{
	int fd = test_uffd_open(O_CLOEXEC | O_NONBLOCK, features);

	assert_true(fd >= 0);
	return fd;
}

static void uffd_register(int uffd, void *a, size_t len, uint64_t mode)
{
	assert_int_equal(test_uffd_register(uffd, a, len, mode), 0);
}

static void *anon(size_t len)
{
	void *a = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	assert_true(a != MAP_FAILED);
	madvise(a, len, MADV_NOHUGEPAGE);
	return a;
}

static bool resident(void *a)
{
	unsigned char v = 0;

	assert_int_equal(mincore(a, PS, &v), 0);
	return v & 1;
}

/* ---- the VMM side, in a thread ----------------------------------------- */

struct vmm {
	const char *path;
	int uffd;
	enum fl_uffd_mode mode;
	struct fl_region regions[4];
	unsigned nregions;
	bool serve;		/* serve zaps until the router hangs up */
	int sock;		/* fl_handover() result */
	int serve_rc;
	char err[256];
	pthread_t th;
};

static void *vmm_thread(void *arg)
{
	struct vmm *v = arg;

	v->sock = fl_handover(v->path, v->uffd, v->mode, v->regions, v->nregions, v->err,
			      sizeof(v->err));
	if (v->sock < 0 || !v->serve)
		return NULL;
	for (;;) {
		struct pollfd p = { .fd = v->sock, .events = POLLIN };
		if (poll(&p, 1, 10000) <= 0) {
			v->serve_rc = -ETIMEDOUT;
			break;
		}
		v->serve_rc = fl_handover_serve(v->sock, v->regions, v->nregions);
		if (v->serve_rc < 0)
			break;
	}
	close(v->sock);
	return NULL;
}

/* Listen, start the VMM thread, accept its handover into h. */
static int router_accept(struct fixture *fx, struct vmm *v, struct fl_handover_recv *h,
			 char *err, size_t errlen)
{
	int ls = fl_handover_listen(fx->path, err, errlen);

	assert_true(ls >= 0);
	v->path = fx->path;
	assert_int_equal(pthread_create(&v->th, NULL, vmm_thread, v), 0);
	int r = fl_handover_accept(ls, h, 5000, err, errlen);
	close(ls);
	return r;
}

static void test_missing_roundtrip(void **state)
{
	struct fixture *fx = *state;
	uint8_t *mem = anon(NPAGES * PS), *mem2 = anon(4 * PS);
	int uffd = make_uffd(UFFD_FEATURE_POISON | UFFD_FEATURE_THREAD_ID);
	struct fl_handover_recv h;
	char err[256] = "";
	int fds0 = count_fds();

	uffd_register(uffd, mem, NPAGES * PS, UFFDIO_REGISTER_MODE_MISSING);
	uffd_register(uffd, mem2, 4 * PS, UFFDIO_REGISTER_MODE_MISSING);
	struct vmm v = { .uffd = uffd, .mode = FL_MODE_MISSING, .serve = true, .nregions = 2,
			 .regions = { { .base = mem, .length = NPAGES * PS, .memfd = -1 },
				      { .base = mem2, .length = 4 * PS, .memfd = -1 } } };

	int r = router_accept(fx, &v, &h, err, sizeof(err));
	if (r)
		fprintf(stderr, "# %s\n", err);
	assert_int_equal(r, 0);
	assert_true(h.sock >= 0);
	assert_int_equal(h.mode, FL_MODE_MISSING);
	assert_int_equal(h.pid, getpid());
	assert_int_equal(h.page_size, PS);
	assert_int_equal(h.nregions, 2);
	assert_ptr_equal(h.regions[0].base, mem);
	assert_int_equal(h.regions[0].length, NPAGES * PS);
	assert_int_equal(h.regions[0].memfd, -1);
	assert_ptr_equal(h.regions[1].base, mem2);
	assert_int_equal(h.regions[1].length, 4 * PS);

	/* A new descriptor of the same userfaultfd, API done by the VMM. */
	assert_true(h.uffd >= 0 && h.uffd != uffd);
	char p[64], link[64] = "", info[512];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", h.uffd);
	ssize_t n = readlink(p, link, sizeof(link) - 1);
	assert_true(n > 0);
	link[n] = 0;
	assert_string_equal(link, "anon_inode:[userfaultfd]");
	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", h.uffd);
	FILE *f = fopen(p, "r");
	assert_non_null(f);
	n = (ssize_t)fread(info, 1, sizeof(info) - 1, f);
	fclose(f);
	info[n] = 0;
	char *api = strstr(info, "API:\t");
	assert_non_null(api);
	unsigned long long feat = strtoull(strchr(api + 5, ':') + 1, NULL, 16);
	assert_true(feat & UFFD_FEATURE_POISON);
	assert_true(feat & UFFD_FEATURE_THREAD_ID);

	/* It resolves faults in the VMM's memory: place pages, the VMM reads them. */
	struct uffdio_zeropage zp = { .range = { .start = (uint64_t)(uintptr_t)(mem + 3 * PS),
						 .len = PS } };
	assert_int_equal(ioctl(h.uffd, UFFDIO_ZEROPAGE, &zp), 0);
	assert_true(resident(mem + 3 * PS));
	assert_int_equal(mem[3 * PS + 100], 0);
	uint8_t *src = anon(PS);
	memset(src, 0xA5, PS);
	struct uffdio_copy cp = { .dst = (uint64_t)(uintptr_t)(mem + 4 * PS),
				  .src = (uint64_t)(uintptr_t)src, .len = PS };
	assert_int_equal(ioctl(h.uffd, UFFDIO_COPY, &cp), 0);
	assert_int_equal(mem[4 * PS + 7], 0xA5);

	/* Zap: the VMM drops page 4; it faults again and reads as zero once
	 * the router zero-fills it. */
	mem[4 * PS] = 0x5A;
	assert_int_equal(fl_handover_zap(&h, 0, 4, 1, 5000), 0);
	assert_false(resident(mem + 4 * PS));
	zp.range.start = (uint64_t)(uintptr_t)(mem + 4 * PS);
	assert_int_equal(ioctl(h.uffd, UFFDIO_ZEROPAGE, &zp), 0);
	assert_int_equal(mem[4 * PS], 0);
	assert_int_equal(mem[4 * PS + 7], 0);
	assert_true(resident(mem + 3 * PS)); /* neighbours untouched */

	/* Ranges: refused here, and by the VMM if a router gets them wrong. */
	assert_int_equal(fl_handover_zap(&h, 0, NPAGES, 1, 1000), -ERANGE);
	assert_int_equal(fl_handover_zap(&h, 2, 0, 1, 1000), -ERANGE);
	assert_int_equal(fl_handover_zap(&h, 1, 3, 2, 1000), -ERANGE);
	struct fl_handover_recv lie = h;
	lie.regions[1].length = 64 * PS;
	assert_int_equal(fl_handover_zap(&lie, 1, 10, 2, 5000), -ERANGE);
	/* ...and the connection still works after that. */
	assert_int_equal(fl_handover_zap(&h, 1, 0, 4, 5000), 0);

	/* Router gone: the VMM's serve loop sees it. */
	fl_handover_close(&h);
	assert_int_equal(h.sock, -1);
	pthread_join(v.th, NULL);
	assert_int_equal(v.serve_rc, -ECONNRESET);
	/* Both ends' sockets and the received uffd are gone again. */
	assert_int_equal(count_fds(), fds0);
	close(uffd);
	munmap(mem, NPAGES * PS);
	munmap(mem2, 4 * PS);
	munmap(src, PS);
}

static void test_minor_memfd(void **state)
{
	struct fixture *fx = *state;
	int memfd = memfd_create("fl-test-guest", MFD_CLOEXEC);
	struct fl_handover_recv h;
	char err[256] = "";

	assert_true(memfd >= 0);
	assert_int_equal(ftruncate(memfd, (off_t)(NPAGES + 2) * PS), 0);
	/* Region starts 2 pages into the file: offsets must survive the trip. */
	uint8_t *mem = mmap(NULL, NPAGES * PS, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 2 * PS);
	assert_true(mem != MAP_FAILED);
	int uffd = make_uffd(UFFD_FEATURE_POISON | UFFD_FEATURE_THREAD_ID |
			     UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_MISSING_SHMEM);
	uffd_register(uffd, mem, NPAGES * PS,
		      UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR);
	struct vmm v = { .uffd = uffd, .mode = FL_MODE_MINOR, .serve = true, .nregions = 1,
			 .regions = { { .base = mem, .length = NPAGES * PS, .memfd = memfd,
					.offset = 2 * PS } } };

	int r = router_accept(fx, &v, &h, err, sizeof(err));
	if (r)
		fprintf(stderr, "# %s\n", err);
	assert_int_equal(r, 0);
	assert_int_equal(h.mode, FL_MODE_MINOR);
	assert_int_equal(h.regions[0].offset, 2 * PS);
	assert_true(h.regions[0].memfd >= 0 && h.regions[0].memfd != memfd);
	struct stat a, b;
	assert_int_equal(fstat(memfd, &a), 0);
	assert_int_equal(fstat(h.regions[0].memfd, &b), 0);
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(a.st_dev, b.st_dev);

	/* Precopy through the received memfd, then CONTINUE through the received uffd. */
	uint8_t page[PS];
	memset(page, 0x3C, sizeof(page));
	assert_int_equal(pwrite(h.regions[0].memfd, page, PS, (off_t)(h.regions[0].offset + 5 * PS)),
			 (ssize_t)PS);
	struct uffdio_continue cont = { .range = { .start = (uint64_t)(uintptr_t)(mem + 5 * PS),
						   .len = PS } };
	assert_int_equal(ioctl(h.uffd, UFFDIO_CONTINUE, &cont), 0);
	assert_int_equal(mem[5 * PS + 11], 0x3C);

	/* Zap on shmem drops the mapping, not the page cache. */
	assert_int_equal(fl_handover_zap(&h, 0, 5, 1, 5000), 0);
	assert_int_equal(ioctl(h.uffd, UFFDIO_CONTINUE, &cont), 0);
	assert_int_equal(mem[5 * PS + 11], 0x3C);

	fl_handover_close(&h);
	pthread_join(v.th, NULL);
	assert_int_equal(v.serve_rc, -ECONNRESET);
	munmap(mem, NPAGES * PS);
	close(uffd);
	close(memfd);
}

/* A VMM serving zaps over MISSING memory whose uffd raises REMOVE events,
 * handed over to this test as the router. */
static void zap_vmm_start(struct fixture *fx, struct vmm *v, uint8_t **mem, int *uffd,
			  struct fl_handover_recv *h)
{
	char err[256] = "";

	*mem = anon(NPAGES * PS);
	*uffd = make_uffd(UFFD_FEATURE_POISON | UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_EVENT_REMOVE);
	uffd_register(*uffd, *mem, NPAGES * PS, UFFDIO_REGISTER_MODE_MISSING);
	*v = (struct vmm){ .uffd = *uffd, .mode = FL_MODE_MISSING, .serve = true, .nregions = 1,
			   .regions = { { .base = *mem, .length = NPAGES * PS, .memfd = -1 } } };
	assert_int_equal(router_accept(fx, v, h, err, sizeof(err)), 0);
}

/*
 * With EVENT_REMOVE the VMM's madvise() waits until the REMOVE event has
 * been read from the uffd: the router must keep reading it while the zap is
 * under way (request, read the event, then collect the answer).
 */
static void test_zap_with_event_remove(void **state)
{
	struct fixture *fx = *state;
	uint8_t *mem;
	int uffd;
	struct fl_handover_recv h;
	struct vmm v;

	zap_vmm_start(fx, &v, &mem, &uffd, &h);

	struct uffdio_zeropage zp = { .range = { .start = (uint64_t)(uintptr_t)(mem + 6 * PS),
						 .len = 2 * PS } };
	assert_int_equal(ioctl(h.uffd, UFFDIO_ZEROPAGE, &zp), 0);
	assert_true(resident(mem + 6 * PS));

	assert_int_equal(fl_handover_zap_request(&h, 0, 6, 2), 0);
	struct pollfd p = { .fd = h.uffd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 5000), 1);
	struct uffd_msg msg;
	assert_int_equal(read(h.uffd, &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	assert_int_equal(msg.event, UFFD_EVENT_REMOVE);
	assert_int_equal(msg.arg.remove.start, (uint64_t)(uintptr_t)(mem + 6 * PS));
	assert_int_equal(msg.arg.remove.end, (uint64_t)(uintptr_t)(mem + 8 * PS));

	struct fl_handover_zap_result res;
	assert_int_equal(fl_handover_zap_reply(&h, 5000, &res), 1);
	assert_int_equal(res.region, 0);
	assert_int_equal(res.first_page, 6);
	assert_int_equal(res.npages, 2);
	assert_int_equal(res.err, 0);
	assert_false(resident(mem + 6 * PS));
	assert_false(resident(mem + 7 * PS));
	/* Nothing more pending. */
	assert_int_equal(fl_handover_zap_reply(&h, 0, &res), 0);

	/* The synchronous zap, with nobody reading the uffd, stalls until its
	 * timeout: the VMM's madvise() waits for its REMOVE event to be read. */
	assert_int_equal(ioctl(h.uffd, UFFDIO_ZEROPAGE, &zp), 0);
	assert_int_equal(fl_handover_zap(&h, 0, 6, 1, 300), -ETIMEDOUT);
	assert_true(resident(mem + 6 * PS));
	assert_int_equal(poll(&p, 1, 5000), 1);
	assert_int_equal(read(h.uffd, &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	assert_int_equal(msg.event, UFFD_EVENT_REMOVE);
	/* The late answer to that one is skipped; this one is answered after
	 * its own REMOVE event is read. */
	assert_int_equal(fl_handover_zap_request(&h, 0, 7, 1), 0);
	assert_int_equal(poll(&p, 1, 5000), 1);
	assert_int_equal(read(h.uffd, &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	assert_int_equal(msg.event, UFFD_EVENT_REMOVE);
	assert_int_equal(fl_handover_zap_reply(&h, 5000, &res), 1);
	assert_int_equal(res.first_page, 6); /* the stale one first */
	assert_int_equal(fl_handover_zap_reply(&h, 5000, &res), 1);
	assert_int_equal(res.first_page, 7);
	assert_int_equal(res.err, 0);
	assert_false(resident(mem + 6 * PS));

	fl_handover_close(&h);
	pthread_join(v.th, NULL);
	munmap(mem, NPAGES * PS);
	close(uffd);
}

/* ---- hand-crafted (bad) handovers ---------------------------------------- */

struct raw {
	const char *path;
	uint32_t version;
	const char *mode;
	uint32_t page_size;
	unsigned nregions;
	uint64_t addr[80], len[80], memfd_off[80];
	bool has_memfd[80];
	int fds[100];
	unsigned nfds;
	/* what came back */
	int reply_case;
	uint32_t error_code;
	char error_text[256];
	pthread_t th;
};

static void *raw_thread(void *arg)
{
	struct raw *w = arg;
	Faultline__Wire__Region rg[80], *rgp[80];
	Faultline__Wire__Hello hello = FAULTLINE__WIRE__HELLO__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	for (unsigned i = 0; i < w->nregions; i++) {
		faultline__wire__region__init(&rg[i]);
		rg[i].id = i;
		rg[i].addr = w->addr[i];
		rg[i].length = w->len[i];
		rg[i].memfd_offset = w->memfd_off[i];
		rg[i].has_memfd = w->has_memfd[i];
		rgp[i] = &rg[i];
	}
	hello.version = w->version;
	hello.role = (char *)"vmm";
	hello.mode = (char *)w->mode;
	hello.pid = (uint32_t)getpid();
	hello.page_size = w->page_size;
	hello.n_regions = w->nregions;
	hello.regions = rgp;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO;
	f.hello = &hello;

	size_t n = faultline__wire__frame__get_packed_size(&f);
	uint8_t *buf = malloc(4 + n);
	buf[0] = (uint8_t)(n >> 24);
	buf[1] = (uint8_t)(n >> 16);
	buf[2] = (uint8_t)(n >> 8);
	buf[3] = (uint8_t)n;
	faultline__wire__frame__pack(&f, buf + 4);

	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	strcpy(sa.sun_path, w->path);
	if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		w->reply_case = -errno;
		goto out;
	}
	char cbuf[CMSG_SPACE(sizeof(int) * 100)];
	struct iovec iov = { .iov_base = buf, .iov_len = 4 + n };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (w->nfds) {
		memset(cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * w->nfds);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * w->nfds);
		memcpy(CMSG_DATA(cm), w->fds, sizeof(int) * w->nfds);
	}
	if (sendmsg(s, &mh, MSG_NOSIGNAL) != (ssize_t)(4 + n)) {
		w->reply_case = -errno;
		goto out;
	}
	uint8_t hdr[4];
	if (recv(s, hdr, 4, MSG_WAITALL) != 4) {
		w->reply_case = -EPIPE;
		goto out;
	}
	uint32_t rn = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	uint8_t *rb = malloc(rn);
	if (recv(s, rb, rn, MSG_WAITALL) == (ssize_t)rn) {
		fl_frame *rf = faultline__wire__frame__unpack(NULL, rn, rb);
		if (rf) {
			w->reply_case = rf->body_case;
			if (rf->body_case == FAULTLINE__WIRE__FRAME__BODY_ERROR) {
				w->error_code = rf->error->code;
				snprintf(w->error_text, sizeof(w->error_text), "%s", rf->error->text);
			}
			faultline__wire__frame__free_unpacked(rf, NULL);
		}
	}
	free(rb);
out:
	free(buf);
	close(s);
	return NULL;
}

/* A well-formed MISSING handover of mem; tests then break one thing. */
static void raw_init(struct raw *w, const char *path, int uffd, void *mem)
{
	memset(w, 0, sizeof(*w));
	w->path = path;
	w->version = FL_WIRE_VERSION;
	w->mode = "missing";
	w->page_size = PS;
	w->nregions = 1;
	w->addr[0] = (uint64_t)(uintptr_t)mem;
	w->len[0] = NPAGES * PS;
	w->fds[0] = uffd;
	w->nfds = 1;
}

/* Run one crafted handover against a fresh listener: accept's result. */
static int raw_exchange(struct fixture *fx, struct raw *w, char *err, size_t errlen)
{
	struct fl_handover_recv h;
	int ls = fl_handover_listen(fx->path, err, errlen);

	assert_true(ls >= 0);
	assert_int_equal(pthread_create(&w->th, NULL, raw_thread, w), 0);
	int r = fl_handover_accept(ls, &h, 5000, err, errlen);
	pthread_join(w->th, NULL);
	close(ls);
	if (r == 0) {
		fl_handover_close(&h);
	} else {
		fprintf(stderr, "# refused (%d): %s\n", r, err);
		assert_int_equal(h.sock, -1);
		assert_int_equal(h.uffd, -1);
		/* The sender was told why. */
		assert_int_equal(w->reply_case, FAULTLINE__WIRE__FRAME__BODY_ERROR);
		assert_int_equal((int)w->error_code, -r);
		assert_string_equal(w->error_text, err);
	}
	return r;
}

static void test_rejections(void **state)
{
	struct fixture *fx = *state;
	uint8_t *mem = anon(NPAGES * PS);
	int uffd = make_uffd(UFFD_FEATURE_THREAD_ID);
	int memfd = memfd_create("fl-test-rej", MFD_CLOEXEC);
	int pfd[2];
	struct raw w;
	char err[256];
	int fds0;

	assert_true(memfd >= 0);
	assert_int_equal(ftruncate(memfd, NPAGES * PS), 0);
	assert_int_equal(pipe2(pfd, O_CLOEXEC), 0);
	uffd_register(uffd, mem, NPAGES * PS, UFFDIO_REGISTER_MODE_MISSING);
	fds0 = count_fds();

	/* baseline: the crafted handover itself is acceptable */
	raw_init(&w, fx->path, uffd, mem);
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), 0);
	assert_int_equal(w.reply_case, FAULTLINE__WIRE__FRAME__BODY_HELLO);

	raw_init(&w, fx->path, uffd, mem);
	w.version = FL_WIRE_VERSION + 1;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EPROTONOSUPPORT);

	raw_init(&w, fx->path, uffd, mem);
	w.nfds = 0;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "sent 0 file descriptors, expected 1"));

	raw_init(&w, fx->path, uffd, mem);
	w.fds[1] = memfd;
	w.fds[2] = memfd;
	w.nfds = 3;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "sent 3 file descriptors, expected 1"));

	/* More than the router's buffer: MSG_CTRUNC. */
	raw_init(&w, fx->path, uffd, mem);
	for (unsigned i = 1; i < 90; i++)
		w.fds[i] = memfd;
	w.nfds = 90;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EPROTO);
	assert_non_null(strstr(err, "MSG_CTRUNC"));

	raw_init(&w, fx->path, uffd, mem);
	w.fds[0] = pfd[0];
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EBADF);
	assert_non_null(strstr(err, "not a userfaultfd"));

	raw_init(&w, fx->path, uffd, mem);
	w.fds[0] = memfd;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EBADF);

	/* overlapping regions */
	raw_init(&w, fx->path, uffd, mem);
	w.nregions = 2;
	w.addr[1] = w.addr[0] + 8 * PS;
	w.len[1] = 16 * PS;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "overlap"));

	/* unaligned region */
	raw_init(&w, fx->path, uffd, mem);
	w.addr[0] += 512;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EINVAL);

	/* page size not a power of two */
	raw_init(&w, fx->path, uffd, mem);
	w.page_size = 3 * PS;
	w.len[0] = 3 * PS;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EINVAL);

	/* too many regions */
	raw_init(&w, fx->path, uffd, mem);
	w.nregions = FL_WIRE_MAX_REGIONS + 1;
	for (unsigned i = 0; i < w.nregions; i++) {
		w.addr[i] = 0x100000000ull + i * 2 * PS;
		w.len[i] = PS;
	}
	assert_true(raw_exchange(fx, &w, err, sizeof(err)) < 0);

	/* MINOR without memfd */
	raw_init(&w, fx->path, uffd, mem);
	w.mode = "minor";
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "without a memfd"));

	/* unknown mode */
	raw_init(&w, fx->path, uffd, mem);
	w.mode = "wp";
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EINVAL);

	/* the "memfd" is a pipe */
	raw_init(&w, fx->path, uffd, mem);
	w.has_memfd[0] = true;
	w.fds[1] = pfd[1];
	w.nfds = 2;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EBADF);
	assert_non_null(strstr(err, "not a memfd"));

	/* a memfd shorter than the region */
	raw_init(&w, fx->path, uffd, mem);
	w.mode = "minor";
	w.has_memfd[0] = true;
	w.memfd_off[0] = 4 * PS;
	w.fds[1] = memfd;
	w.nfds = 2;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "shorter"));

	/* ...and a good MINOR one with it */
	raw_init(&w, fx->path, uffd, mem);
	w.mode = "minor";
	w.has_memfd[0] = true;
	w.fds[1] = memfd;
	w.nfds = 2;
	assert_int_equal(raw_exchange(fx, &w, err, sizeof(err)), 0);

	/* Every received descriptor was closed again. */
	assert_int_equal(count_fds(), fds0);
	close(pfd[0]);
	close(pfd[1]);
	close(memfd);
	close(uffd);
	munmap(mem, NPAGES * PS);
}

/* fl_handover() checks its arguments and reports the router's refusal. */
static void test_vmm_side_errors(void **state)
{
	struct fixture *fx = *state;
	uint8_t *mem = anon(NPAGES * PS);
	int uffd = make_uffd(UFFD_FEATURE_THREAD_ID);
	char err[256];

	uffd_register(uffd, mem, NPAGES * PS, UFFDIO_REGISTER_MODE_MISSING);
	struct fl_region rg = { .base = mem, .length = NPAGES * PS, .memfd = -1 };

	/* nobody there */
	assert_int_equal(fl_handover(fx->path, uffd, FL_MODE_MISSING, &rg, 1, err, sizeof(err)),
			 -ENOENT);
	assert_non_null(strstr(err, "no router socket"));
	/* a dead router's socket */
	int ls = fl_handover_listen(fx->path, err, sizeof(err));
	assert_true(ls >= 0);
	close(ls);
	assert_int_equal(fl_handover(fx->path, uffd, FL_MODE_MISSING, &rg, 1, err, sizeof(err)),
			 -ECONNREFUSED);
	/* bad arguments never reach the socket */
	assert_int_equal(fl_handover(fx->path, uffd, FL_MODE_MINOR, &rg, 1, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "no memfd"));
	struct fl_region two[2] = { rg, rg };
	assert_int_equal(fl_handover(fx->path, uffd, FL_MODE_MISSING, two, 2, err, sizeof(err)),
			 -EINVAL);
	assert_non_null(strstr(err, "overlap"));
	struct fl_region odd = { .base = mem + 1, .length = PS, .memfd = -1 };
	assert_int_equal(fl_handover(fx->path, uffd, FL_MODE_MISSING, &odd, 1, err, sizeof(err)),
			 -EINVAL);
	assert_int_equal(fl_handover(fx->path, uffd, FL_MODE_MISSING, &rg, 0, err, sizeof(err)),
			 -EINVAL);

	/* The router refuses (memfd too short): the VMM gets its sentence. */
	int memfd = memfd_create("fl-test-short", MFD_CLOEXEC);
	assert_int_equal(ftruncate(memfd, PS), 0);
	struct fl_handover_recv h;
	char rerr[256];
	struct vmm v = { .uffd = uffd, .mode = FL_MODE_MINOR, .nregions = 1,
			 .regions = { { .base = mem, .length = NPAGES * PS, .memfd = memfd } } };
	assert_int_equal(router_accept(fx, &v, &h, rerr, sizeof(rerr)), -EINVAL);
	pthread_join(v.th, NULL);
	assert_int_equal(v.sock, -EINVAL);
	assert_non_null(strstr(v.err, "refused the handover"));
	assert_non_null(strstr(v.err, rerr));

	close(memfd);
	close(uffd);
	munmap(mem, NPAGES * PS);
}

/*
 * A socket at the router's path that a stranger listens on (a planted or
 * stale path in a shared directory): the VMM hands nothing over, unless
 * FAULTLINE_ROUTER_UID says that uid is the router's.
 */
static void test_untrusted_listener(void **state)
{
	struct fixture *fx = *state;
	uint8_t *mem = anon(NPAGES * PS);
	int uffd = make_uffd(UFFD_FEATURE_THREAD_ID), got[2];
	char err[256];
	struct fl_region rg = { .base = mem, .length = NPAGES * PS, .memfd = -1 };
	pid_t child;
	long first_bytes = -1;

	uffd_register(uffd, mem, NPAGES * PS, UFFDIO_REGISTER_MODE_MISSING);
	assert_int_equal(chmod(fx->dir, 0777), 0);
	assert_int_equal(pipe(got), 0);
	child = stranger_listen(fx->path, NULL, got[1]);
	assert_true(child > 0);
	unsetenv("FAULTLINE_ROUTER_UID");
	assert_int_equal(fl_handover(fx->path, uffd, FL_MODE_MISSING, &rg, 1, err, sizeof(err)),
			 -EPERM);
	assert_non_null(strstr(err, "uid 65534"));
	assert_int_equal(read(got[0], &first_bytes, sizeof(first_bytes)), sizeof(first_bytes));
	assert_int_equal(first_bytes, 0);	/* not a byte of the handover */

	setenv("FAULTLINE_ROUTER_UID", "65534", 1);
	assert_int_not_equal(fl_handover(fx->path, uffd, FL_MODE_MISSING, &rg, 1, err, sizeof(err)),
			     -EPERM);
	unsetenv("FAULTLINE_ROUTER_UID");
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	close(got[0]);
	close(got[1]);
	close(uffd);
	munmap(mem, NPAGES * PS);
}

/*
 * The router's side: a path planted as a symlink (to a file of someone
 * else's, or to another listener's socket) is never followed into, and a
 * VMM of a uid other than root's or the router's is refused even if the
 * socket's mode let it in.
 */
/*
 * The router dies while the VMM's zap waits in madvise() for its REMOVE
 * event to be read.  The VMM must see the hang-up at once (to hand over to
 * the next router, which reads that event), not sit in madvise() for ever.
 */
static void test_router_dies_mid_zap(void **state)
{
	struct fixture *fx = *state;
	uint8_t *mem;
	int uffd;
	struct fl_handover_recv h;
	struct vmm v;
	struct uffd_msg msg;

	zap_vmm_start(fx, &v, &mem, &uffd, &h);

	struct uffdio_zeropage zp = { .range = { .start = (uint64_t)(uintptr_t)(mem + 3 * PS),
						 .len = PS } };
	assert_int_equal(ioctl(h.uffd, UFFDIO_ZEROPAGE, &zp), 0);
	assert_int_equal(fl_handover_zap_request(&h, 0, 3, 1), 0);
	struct pollfd p = { .fd = h.uffd, .events = POLLIN };
	assert_int_equal(poll(&p, 1, 5000), 1);	/* the REMOVE is raised, nobody reads it */
	close(h.sock);				/* the router is gone */
	h.sock = -1;
	pthread_join(v.th, NULL);		/* returns: it does not wait in madvise() */
	assert_int_equal(v.serve_rc, -ECONNRESET);
	/* the next router reads the event; the zap completes then */
	assert_int_equal(read(h.uffd, &msg, sizeof(msg)), (ssize_t)sizeof(msg));
	assert_int_equal(msg.event, UFFD_EVENT_REMOVE);
	for (int i = 0; i < 500 && resident(mem + 3 * PS); i++)
		usleep(1000);
	assert_false(resident(mem + 3 * PS));
	fl_handover_close(&h);
	munmap(mem, NPAGES * PS);
	close(uffd);
}

static void test_router_side_trust(void **state)
{
	struct fixture *fx = *state;
	char victim[160], other[160], err[256];
	struct fl_handover_recv h;
	int fd, ls;
	pid_t child;

	snprintf(victim, sizeof(victim), "%s/victim", fx->dir);
	snprintf(other, sizeof(other), "%s/other.sock", fx->dir);
	fd = open(victim, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(symlink(victim, fx->path), 0);
	assert_int_equal(fl_handover_listen(fx->path, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "not a socket"));
	{
		struct stat st;

		assert_int_equal(stat(victim, &st), 0);	/* the file it pointed at is untouched */
		assert_true(S_ISREG(st.st_mode));
	}
	unlink(fx->path);

	/* a live listener behind the symlink: the symlink itself is refused */
	ls = fl_handover_listen(other, err, sizeof(err));
	assert_true(ls >= 0);
	assert_int_equal(symlink(other, fx->path), 0);
	assert_int_equal(fl_handover_listen(fx->path, err, sizeof(err)), -EEXIST);
	close(ls);
	unlink(other);
	unlink(fx->path);

	/* a VMM of uid 65534 through a loosened socket mode */
	assert_int_equal(chmod(fx->dir, 0777), 0);
	ls = fl_handover_listen(fx->path, err, sizeof(err));
	assert_true(ls >= 0);
	assert_int_equal(chmod(fx->path, 0666), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int c;

		if (setgid(65534) || setuid(65534))
			_exit(2);
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", fx->path);
		c = socket(AF_UNIX, SOCK_STREAM, 0);
		if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)))
			_exit(3);
		pause();
		_exit(0);
	}
	assert_int_equal(fl_handover_accept(ls, &h, 5000, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "uid 65534"));
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	close(ls);
	unlink(victim);
}

static void test_listen(void **state)
{
	struct fixture *fx = *state;
	char err[256];
	struct stat st;

	int a = fl_handover_listen(fx->path, err, sizeof(err));
	assert_true(a >= 0);
	assert_int_equal(stat(fx->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);

	/* A live router keeps its socket. */
	assert_int_equal(fl_handover_listen(fx->path, err, sizeof(err)), -EADDRINUSE);
	assert_non_null(strstr(err, "another router is already listening"));
	assert_int_equal(stat(fx->path, &st), 0);

	/* A dead one's socket is replaced. */
	close(a);
	int b = fl_handover_listen(fx->path, err, sizeof(err));
	assert_true(b >= 0);
	close(b);

	/* Not a socket: left alone. */
	unlink(fx->path);
	int f = open(fx->path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(f >= 0);
	close(f);
	assert_int_equal(fl_handover_listen(fx->path, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, "not a socket"));
	unlink(fx->path);

	char longp[200];
	memset(longp, 'x', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = 0;
	assert_int_equal(fl_handover_listen(longp, err, sizeof(err)), -ENAMETOOLONG);

	/* accept times out cleanly */
	int c = fl_handover_listen(fx->path, err, sizeof(err));
	struct fl_handover_recv h;
	assert_int_equal(fl_handover_accept(c, &h, 50, err, sizeof(err)), -ETIMEDOUT);
	assert_int_equal(h.sock, -1);
	close(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_missing_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_minor_memfd, setup, teardown),
		cmocka_unit_test_setup_teardown(test_zap_with_event_remove, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejections, setup, teardown),
		cmocka_unit_test_setup_teardown(test_vmm_side_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_listen, setup, teardown),
		cmocka_unit_test_setup_teardown(test_untrusted_listener, setup, teardown),
		cmocka_unit_test_setup_teardown(test_router_side_trust, setup, teardown),
		cmocka_unit_test_setup_teardown(test_router_dies_mid_zap, setup, teardown),
	};

	int probe = test_uffd_open(O_CLOEXEC, 0);
	if (probe < 0) {
		printf("SKIP: no userfaultfd here (%s): needs CONFIG_USERFAULTFD and root, "
		       "vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd\n", strerror(-probe));
		return 77;
	}
	close(probe);
	return cmocka_run_group_tests_name("handover", tests, NULL, NULL);
}
