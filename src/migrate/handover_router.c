// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The router side of the handover: listening safely, checking the VMM and
 * everything it sends (take_hello: regions, modes, page sizes, fds), and
 * asking the VMM to zap pages.
 */
#include "handover_int.h"
#include "regions.h"

/* ------------------------------------------------------------------------ */
/* router side                                                               */

/* Is something accepting on the socket at path?  0: stale, removed. */
static int clear_stale_socket(const char *path, const struct sockaddr_un *sa,
			      char *err, size_t errlen)
{
	struct stat st;

	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0; /* gone meanwhile: just bind again */
		int e = errno;
		fl_errmsg(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	if (!S_ISSOCK(st.st_mode)) {
		fl_errmsg(err, errlen, "%s exists and is not a socket; remove it or choose another "
		       "socket path", path);
		return -EEXIST;
	}
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe < 0) {
		int e = errno;
		fl_errmsg(err, errlen, "socket(AF_UNIX): %s", strerror(e));
		return -e;
	}
	int r = connect(probe, (const struct sockaddr *)sa, sizeof(*sa));
	int e = errno;
	close(probe);
	/* EAGAIN: a listener whose backlog is full — still somebody's. */
	if (r == 0 || e == EAGAIN || e == EINPROGRESS) {
		fl_errmsg(err, errlen, "another router is already listening on %s; stop it or use "
		       "another socket path", path);
		return -EADDRINUSE;
	}
	if (e != ECONNREFUSED) {
		fl_errmsg(err, errlen, "%s is in use and could not be probed (%s); remove it if no "
		       "router owns it", path, strerror(e));
		return -e;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		e = errno;
		fl_errmsg(err, errlen, "removing the stale socket %s: %s", path, strerror(e));
		return -e;
	}
	return 0;
}

int fl_handover_listen(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	int r = fl_ho_unix_addr(path, &sa, err, errlen);

	if (r < 0)
		return r;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		fl_errmsg(err, errlen, "socket(AF_UNIX): %s", strerror(-r));
		return r;
	}
	for (int attempt = 0;; attempt++) {
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		r = -errno;
		if (r != -EADDRINUSE || attempt == 2) {
			fl_errmsg(err, errlen, "bind %s: %s", path, strerror(-r));
			goto fail;
		}
		r = clear_stale_socket(path, &sa, err, errlen);
		if (r < 0)
			goto fail;
	}
	/* Before listen(): nobody can connect yet, so there is no window with
	 * the umask's permissions. */
	if (chmod(path, 0600) < 0) {
		r = -errno;
		fl_errmsg(err, errlen, "chmod 0600 %s: %s", path, strerror(-r));
		unlink(path);
		goto fail;
	}
	if (listen(fd, 8) < 0) {
		r = -errno;
		fl_errmsg(err, errlen, "listen on %s: %s", path, strerror(-r));
		unlink(path);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return r;
}

static int fd_link(int fd, char *buf, size_t len)
{
	char p[64];

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(p, buf, len - 1);
	if (n < 0) {
		snprintf(buf, len, "?");
		return -errno;
	}
	buf[n] = 0;
	return 0;
}

/* Check the VMM's Hello and its descriptors; fill `out` (which then owns the fds). */
static int take_hello(const fl_frame *f, struct fd_bag *bag, struct fl_handover_recv *out,
		      unsigned flags, char *err, size_t errlen)
{
	if (f->body_case != FAULTLINE__WIRE__FRAME__BODY_HELLO) {
		fl_errmsg(err, errlen, "the VMM's first frame must be a Hello, got frame type %d",
		       (int)f->body_case);
		return -EPROTO;
	}
	const Faultline__Wire__Hello *h = f->hello;
	if (h->version != FL_WIRE_VERSION) {
		fl_errmsg(err, errlen, "the VMM speaks handover version %" PRIu32 ", this router version "
		       "%d; run matching faultline versions", h->version, FL_WIRE_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (strcmp(h->role, "vmm") != 0) {
		fl_errmsg(err, errlen, "the peer introduced itself as \"%.32s\", not \"vmm\"; only VMMs "
		       "hand over on this socket", h->role);
		return -EPROTO;
	}
	enum fl_uffd_mode mode;
	if (!strcmp(h->mode, "missing")) {
		mode = FL_MODE_MISSING;
	} else if (!strcmp(h->mode, "minor")) {
		mode = FL_MODE_MINOR;
	} else {
		fl_errmsg(err, errlen, "unknown handover mode \"%.32s\"; expected missing or minor", h->mode);
		return -EINVAL;
	}
	long sys = sysconf(_SC_PAGESIZE);
	uint64_t ps = h->page_size;
	if (!fl_ho_is_pow2(ps) || ps < (uint64_t)sys || ps > MAX_PAGE_SIZE) {
		fl_errmsg(err, errlen, "page size %" PRIu64 " is not a power of two from %ld to %llu",
		       ps, sys, MAX_PAGE_SIZE);
		return -EINVAL;
	}
	if (h->n_regions == 0 || h->n_regions > FL_WIRE_MAX_REGIONS) {
		fl_errmsg(err, errlen, "%zu regions; a handover carries 1 to %d", h->n_regions,
		       FL_WIRE_MAX_REGIONS);
		return -EINVAL;
	}

	uint64_t start[FL_WIRE_MAX_REGIONS], len[FL_WIRE_MAX_REGIONS];
	unsigned want_fds = 1;
	for (size_t i = 0; i < h->n_regions; i++) {
		const Faultline__Wire__Region *rg = h->regions[i];
		if (rg->id != i) {
			fl_errmsg(err, errlen, "region %zu has id %" PRIu32 "; ids must be 0..n-1 in order",
			       i, rg->id);
			return -EINVAL;
		}
		if (rg->length == 0 || rg->length % ps || rg->addr % ps || rg->addr + rg->length < rg->addr) {
			fl_errmsg(err, errlen, "region %zu [0x%" PRIx64 ", +0x%" PRIx64 ") is empty, wraps, or "
			       "is not aligned to the %" PRIu64 "-byte page size", i, rg->addr,
			       rg->length, ps);
			return -EINVAL;
		}
		if (rg->has_memfd && (rg->memfd_offset % ps ||
				      rg->memfd_offset + rg->length < rg->memfd_offset)) {
			fl_errmsg(err, errlen, "region %zu: memfd offset 0x%" PRIx64 " is not page aligned "
			       "or the range wraps", i, rg->memfd_offset);
			return -EINVAL;
		}
		if (mode == FL_MODE_MINOR && !rg->has_memfd) {
			fl_errmsg(err, errlen, "region %zu comes without a memfd; MINOR mode needs one per "
			       "region (the router fills the page cache through it)", i);
			return -EINVAL;
		}
		if ((flags & FL_HANDOVER_NEED_MEMFD) && !rg->has_memfd) {
			fl_errmsg(err, errlen, "region %zu comes without a memfd; this peer reads guest "
			       "memory through the memfds, so every region needs one (back guest "
			       "memory with a shared memfd and pass it in fl_region.memfd)", i);
			return -EINVAL;
		}
		start[i] = rg->addr;
		len[i] = rg->length;
		want_fds += rg->has_memfd ? 1 : 0;
	}
	int r = fl_ho_check_overlap(start, len, (unsigned)h->n_regions, err, errlen);
	if (r < 0)
		return r;

	if (bag->truncated) {
		fl_errmsg(err, errlen, "the VMM's file descriptors were truncated in transit (MSG_CTRUNC): "
		       "it sent more than %d, or this process is out of descriptors (ulimit -n)",
		       FD_BAG_CAP);
		return -EPROTO;
	}
	if (bag->n + bag->dropped != want_fds) {
		fl_errmsg(err, errlen, "the VMM sent %u file descriptors, expected %u (its userfaultfd "
		       "and one memfd per region with has_memfd)", bag->n + bag->dropped, want_fds);
		return -EPROTO;
	}
	char link[PATH_MAX];
	fd_link(bag->fd[0], link, sizeof(link));
	if (strcmp(link, UFFD_LINK) != 0) {
		fl_errmsg(err, errlen, "the first descriptor is %.200s, not a userfaultfd; send the "
		       "userfaultfd first", link);
		return -EBADF;
	}
	unsigned next = 1;
	for (size_t i = 0; i < h->n_regions; i++) {
		const Faultline__Wire__Region *rg = h->regions[i];
		int mfd = -1;
		if (rg->has_memfd) {
			struct stat st;
			mfd = bag->fd[next++];
			/* F_GET_SEALS works exactly on shmem and hugetlbfs files: what
			 * MINOR mode can CONTINUE on (memfds, and /dev/shm files). */
			if (fcntl(mfd, F_GET_SEALS) < 0 || fstat(mfd, &st) < 0) {
				fd_link(mfd, link, sizeof(link));
				fl_errmsg(err, errlen, "the descriptor for region %zu is %.200s, not a memfd "
				       "(shmem or hugetlbfs)", i, link);
				return -EBADF;
			}
			uint64_t fps = (uint64_t)fl_file_page_size(mfd);
			if (fps != ps) {
				fl_errmsg(err, errlen, "region %zu: its memfd has %" PRIu64 "-byte pages, the "
				       "handover says %" PRIu64, i, fps, ps);
				return -EINVAL;
			}
			if ((uint64_t)st.st_size < rg->memfd_offset + rg->length) {
				fl_errmsg(err, errlen, "region %zu: its memfd is %lld bytes, shorter than "
				       "offset 0x%" PRIx64 " + length 0x%" PRIx64, i,
				       (long long)st.st_size, rg->memfd_offset, rg->length);
				return -EINVAL;
			}
		}
		out->regions[i] = (struct fl_region){
			.base = (void *)(uintptr_t)rg->addr, .length = rg->length,
			.memfd = mfd, .offset = rg->has_memfd ? rg->memfd_offset : 0,
		};
	}
	out->uffd = bag->fd[0];
	out->mode = mode;
	out->pid = (pid_t)h->pid;
	out->page_size = (uint32_t)ps;
	out->nregions = (unsigned)h->n_regions;
	bag->n = 0; /* out owns them now */
	return 0;
}

static void recv_reset(struct fl_handover_recv *h)
{
	h->sock = h->uffd = -1;
	h->nregions = 0;
	h->pid = 0;
	h->page_size = 0;
	for (unsigned i = 0; i < FL_WIRE_MAX_REGIONS; i++)
		h->regions[i] = (struct fl_region){ .memfd = -1 };
}

int fl_handover_accept(int lsock, struct fl_handover_recv *out, int timeout_ms,
		       char *err, size_t errlen)
{
	return fl_handover_accept_flags(lsock, out, 0, timeout_ms, err, errlen);
}

int fl_handover_accept_flags(int lsock, struct fl_handover_recv *out, unsigned flags,
			     int timeout_ms, char *err, size_t errlen)
{
	struct fd_bag bag = { .n = 0 };
	fl_frame *f = NULL;
	int sock = -1, r;

	recv_reset(out);
	r = fl_wire_wait(lsock, POLLIN, fl_ho_deadline_in(timeout_ms));
	if (r) {
		if (r == -ETIMEDOUT)
			fl_errmsg(err, errlen, "no VMM handed over its memory within %d ms", timeout_ms);
		else
			fl_errmsg(err, errlen, "waiting for a VMM: %s", strerror(-r));
		return r;
	}
	sock = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
	if (sock < 0) {
		r = -errno;
		fl_errmsg(err, errlen, "accepting the VMM's connection: %s", strerror(-r));
		return r;
	}
	{
		/* The socket is 0600: only our uid (or root) can reach it; say so
		 * plainly if anyone else got through (a loosened mode). */
		struct ucred pc;
		socklen_t pcl = sizeof(pc);

		if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &pc, &pcl) < 0 ||
		    (pc.uid != 0 && pc.uid != geteuid())) {
			fl_errmsg(err, errlen, "a process of uid %d (pid %d) offered a handover; only root or "
			       "uid %u may: refused", pcl == sizeof(pc) ? (int)pc.uid : -1,
			       pcl == sizeof(pc) ? (int)pc.pid : -1, (unsigned)geteuid());
			r = -EPERM;
			goto fail;
		}
	}

	char why[256] = "";
	r = fl_ho_recv_frame(sock, fl_ho_deadline_in(HELLO_TIMEOUT_MS), &bag, &f, why, sizeof(why));
	if (r < 0) {
		if (r == -ETIMEDOUT)
			fl_errmsg(err, errlen, "a VMM connected but sent no handover within %d s",
			       HELLO_TIMEOUT_MS / 1000);
		else if (r == -ECONNRESET)
			fl_errmsg(err, errlen, "a VMM connected and hung up before handing over");
		else
			fl_errmsg(err, errlen, "bad handover from the VMM: %s", why);
		goto fail;
	}
	r = take_hello(f, &bag, out, flags, err, errlen);
	if (r < 0)
		goto fail;

	struct ucred cred;
	socklen_t cl = sizeof(cred);
	/* Its pid as this router's namespace sees it (the Hello has the VMM's view). */
	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0 && cred.pid > 0)
		out->pid = cred.pid;

	Faultline__Wire__Hello hello = FAULTLINE__WIRE__HELLO__INIT;
	fl_frame rf = FAULTLINE__WIRE__FRAME__INIT;
	hello.version = FL_WIRE_VERSION;
	hello.role = (char *)"router";
	hello.page_size = out->page_size;
	rf.body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO;
	rf.hello = &hello;
	r = fl_ho_send_frame(sock, &rf, NULL, 0);
	if (r < 0) {
		fl_errmsg(err, errlen, "answering the VMM's handover: %s", strerror(-r));
		fl_handover_close(out);
		goto fail_nosend;
	}
	fl_wire_free(f);
	out->sock = sock;
	return 0;

fail:
	if (r != -ECONNRESET && r != -ETIMEDOUT)
		fl_ho_send_error(sock, r, err);
fail_nosend:
	fl_ho_fd_bag_close(&bag);
	if (f)
		fl_wire_free(f);
	close(sock);
	recv_reset(out);
	return r;
}

int fl_handover_zap_request(const struct fl_handover_recv *h, unsigned region,
			    uint64_t first_page, uint64_t npages)
{
	if (h->sock < 0)
		return -ENOTCONN;
	if (region >= h->nregions || !h->page_size)
		return -ERANGE;
	uint64_t npg = h->regions[region].length / h->page_size;
	if (npages == 0 || first_page >= npg || npages > npg - first_page)
		return -ERANGE;

	Faultline__Wire__Zap z = FAULTLINE__WIRE__ZAP__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;
	z.region = region;
	z.first_page = first_page;
	z.npages = npages;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_ZAP;
	f.zap = &z;
	return fl_ho_send_frame(h->sock, &f, NULL, 0);
}

int fl_handover_zap_reply(const struct fl_handover_recv *h, int timeout_ms,
			  struct fl_handover_zap_result *res)
{
	fl_frame *f = NULL;
	int r;

	if (h->sock < 0)
		return -ENOTCONN;
	r = fl_ho_recv_frame(h->sock, timeout_ms < 0 ? -1 : fl_now_ms() + timeout_ms, NULL, &f, NULL, 0);
	if (r == -ETIMEDOUT)
		return 0;
	if (r < 0)
		return r;
	if (f->body_case != FAULTLINE__WIRE__FRAME__BODY_ZAP || !f->zap->done) {
		fl_wire_free(f);
		return -EPROTO;
	}
	res->region = f->zap->region;
	res->first_page = f->zap->first_page;
	res->npages = f->zap->npages;
	res->err = f->zap->err == 0 ? 0 : f->zap->err > 0 && f->zap->err < 4096 ? -f->zap->err : -EIO;
	fl_wire_free(f);
	return 1;
}

int fl_handover_zap(const struct fl_handover_recv *h, unsigned region, uint64_t first_page,
		    uint64_t npages, int timeout_ms)
{
	int64_t deadline = fl_ho_deadline_in(timeout_ms);
	int r = fl_handover_zap_request(h, region, first_page, npages);

	if (r < 0)
		return r;
	for (;;) {
		struct fl_handover_zap_result res;
		r = fl_handover_zap_reply(h, fl_ho_ms_left(deadline), &res);
		if (r < 0)
			return r;
		if (r == 0)
			return -ETIMEDOUT;
		/* An answer to an earlier request that timed out: not ours. */
		if (res.region == region && res.first_page == first_page && res.npages == npages)
			return res.err;
	}
}

void fl_handover_close(struct fl_handover_recv *h)
{
	if (h->sock >= 0)
		close(h->sock);
	if (h->uffd >= 0)
		close(h->uffd);
	for (unsigned i = 0; i < h->nregions && i < FL_WIRE_MAX_REGIONS; i++)
		if (h->regions[i].memfd >= 0)
			close(h->regions[i].memfd);
	recv_reset(h);
}
