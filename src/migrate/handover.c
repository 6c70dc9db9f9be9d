// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The VMM -> router handover (Firecracker's handshake, with protobuf
 * framing): both ends.  See src/migrate/handover.h and src/migrate/faultline.proto.
 *
 * Frames are read here with exact-length reads rather than through a
 * buffered fl_wire_reader: the first frame carries SCM_RIGHTS, which must be
 * collected by the recvmsg() that reads its bytes, and the socket is later
 * shared with zap traffic, so nothing may be read past the frame at hand.
 * Sends use MSG_NOSIGNAL: a VMM must not die of SIGPIPE because its router
 * went away (that is exactly the case where it has to stay up and wait).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "handover.h"

#ifndef F_GET_SEALS
#define F_GET_SEALS 1034
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

/* A connected peer sends its Hello (or its answer) at once; a silent one is broken. */
#define HELLO_TIMEOUT_MS 10000
/* Once the first byte of a frame is there, the rest follows in one send. */
#define FRAME_REST_MS 5000
#define MAX_HANDOVER_FDS (FL_WIRE_MAX_REGIONS + 1)
/* Room for a few more fds than allowed, so "too many" is seen as a count
 * rather than as a truncation the kernel already cleaned up. */
#define FD_BAG_CAP (MAX_HANDOVER_FDS + 8)
#define MAX_PAGE_SIZE (1ull << 30)
#define UFFD_LINK "anon_inode:[userfaultfd]"

__attribute__((format(printf, 3, 4)))
static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* -1: no deadline. */
static int64_t deadline_in(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : fl_now_ms() + timeout_ms;
}

static int ms_left(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - fl_now_ms();
	return left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

struct fd_bag {
	int fd[FD_BAG_CAP];
	unsigned n;
	unsigned dropped;	/* fds beyond FD_BAG_CAP, closed on arrival */
	bool truncated;		/* MSG_CTRUNC: the kernel dropped some */
};

static void fd_bag_close(struct fd_bag *b)
{
	for (unsigned i = 0; i < b->n; i++)
		if (b->fd[i] >= 0)
			close(b->fd[i]);
	b->n = 0;
}

/*
 * Read exactly len bytes.  Descriptors arriving with them go into bag; with
 * bag NULL they are closed and the read fails with -EPROTO (nobody sends
 * descriptors after the handover).  EOF: -ECONNRESET, *got says how far.
 */
static int recv_exact(int fd, void *buf, size_t len, int64_t deadline, struct fd_bag *bag,
		      size_t *got)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * FD_BAG_CAP)];
		struct cmsghdr align;
	} cbuf;
	bool stray_fds = false;

	*got = 0;
	while (*got < len) {
		int w = fl_wire_wait(fd, POLLIN, deadline);
		if (w)
			return w;

		struct iovec iov = { .iov_base = (char *)buf + *got, .iov_len = len - *got };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf) };
		ssize_t n = recvmsg(fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return errno == EPIPE ? -ECONNRESET : -errno;
		}
		for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
				continue;
			size_t nfd = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < nfd; i++) {
				int rfd;
				memcpy(&rfd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
				if (bag && bag->n < FD_BAG_CAP) {
					bag->fd[bag->n++] = rfd;
				} else {
					close(rfd);
					if (bag)
						bag->dropped++;
					else
						stray_fds = true;
				}
			}
		}
		if (mh.msg_flags & MSG_CTRUNC) {
			if (bag)
				bag->truncated = true;
			else
				stray_fds = true;
		}
		if (n == 0)
			return -ECONNRESET;
		*got += (size_t)n;
	}
	return stray_fds ? -EPROTO : 0;
}

/*
 * fl_wire_decode() minus one refusal: the router's answer to the VMM is a
 * Hello with role "router", which the migration protocol proper does not
 * know.  Every other frame gets the full fl_wire_validate().
 */
static int decode(const uint8_t *body, size_t n, fl_frame **out, char *err, size_t errlen)
{
	fl_frame *f = faultline__wire__frame__unpack(NULL, n, body);

	*out = NULL;
	if (!f) {
		seterr(err, errlen, "a %zu-byte frame is not a parsable protobuf Frame", n);
		return -EBADMSG;
	}
	if (!(f->body_case == FAULTLINE__WIRE__FRAME__BODY_HELLO && f->hello->role &&
	      !strcmp(f->hello->role, "router"))) {
		int r = fl_wire_validate(f, NULL, err, errlen);
		if (r < 0) {
			fl_wire_free(f);
			return r;
		}
	}
	*out = f;
	return 0;
}

/*
 * One frame.  -ETIMEDOUT when none started arriving before the deadline
 * (deadline == now: only what is already there), -ECONNRESET when the peer
 * closed, other negative errno with err set.
 */
static int recv_frame(int fd, int64_t deadline, struct fd_bag *bag, fl_frame **out,
		      char *err, size_t errlen)
{
	uint8_t hdr[4];
	size_t got;
	int r;

	*out = NULL;
	r = fl_wire_wait(fd, POLLIN, deadline);
	if (r == -ETIMEDOUT) {
		seterr(err, errlen, "no frame arrived in time");
		return r;
	}
	if (r) {
		seterr(err, errlen, "poll on the handover socket: %s", strerror(-r));
		return r;
	}
	int64_t rest = deadline < 0 ? -1 : fl_now_ms() + FRAME_REST_MS;

	r = recv_exact(fd, hdr, sizeof(hdr), rest, bag, &got);
	if (r == -ECONNRESET && got == 0) {
		seterr(err, errlen, "the peer closed the connection");
		return r;
	}
	if (r < 0) {
		seterr(err, errlen, "reading a frame header: %s%s", strerror(-r),
		       r == -EPROTO ? " (unexpected file descriptors)" : "");
		return r == -ECONNRESET ? -EPROTO : r;
	}
	uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (n == 0 || n > FL_WIRE_MAX_FRAME) {
		seterr(err, errlen, "frame length %" PRIu32 " is outside 1..%u", n, FL_WIRE_MAX_FRAME);
		return -EMSGSIZE;
	}
	uint8_t *body = malloc(n);
	if (!body) {
		seterr(err, errlen, "out of memory for a %" PRIu32 "-byte frame", n);
		return -ENOMEM;
	}
	r = recv_exact(fd, body, n, rest, bag, &got);
	if (r < 0) {
		free(body);
		seterr(err, errlen, "frame cut short after %zu of %" PRIu32 " bytes: %s", got, n,
		       r == -ECONNRESET ? "the peer closed the connection" : strerror(-r));
		return r == -ECONNRESET ? -EPROTO : r;
	}
	r = decode(body, n, out, err, errlen);
	free(body);
	return r < 0 ? r : 1;
}

/* sendmsg() the whole buffer; fds ride on the first chunk. */
static int send_all(int fd, const uint8_t *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * MAX_HANDOVER_FDS)];
		struct cmsghdr align;
	} cbuf;
	size_t off = 0;

	if (nfds > MAX_HANDOVER_FDS)
		return -EINVAL;
	while (off < len) {
		struct iovec iov = { .iov_base = (void *)(buf + off), .iov_len = len - off };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
		if (nfds && off == 0) {
			memset(&cbuf, 0, sizeof(cbuf));
			mh.msg_control = cbuf.buf;
			mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
			struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
			memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
		}
		ssize_t n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				int w = fl_wire_wait(fd, POLLOUT, fl_now_ms() + FRAME_REST_MS);
				if (w)
					return w;
				continue;
			}
			return errno == EPIPE ? -ECONNRESET : -errno;
		}
		off += (size_t)n;
	}
	return 0;
}

static int send_frame(int fd, const fl_frame *f, const int *fds, unsigned nfds)
{
	size_t n = faultline__wire__frame__get_packed_size(f);
	if (n == 0 || n > FL_WIRE_MAX_FRAME)
		return -EMSGSIZE;
	uint8_t *buf = malloc(4 + n);
	if (!buf)
		return -ENOMEM;
	buf[0] = (uint8_t)(n >> 24);
	buf[1] = (uint8_t)(n >> 16);
	buf[2] = (uint8_t)(n >> 8);
	buf[3] = (uint8_t)n;
	faultline__wire__frame__pack(f, buf + 4);
	int r = send_all(fd, buf, 4 + n, fds, nfds);
	free(buf);
	return r;
}

/* Best effort: tell the peer why we hang up on it. */
static void send_error(int fd, int code, const char *text)
{
	Faultline__Wire__Error e = FAULTLINE__WIRE__ERROR__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	e.code = (uint32_t)(code < 0 ? -code : code);
	e.text = (char *)(text ? text : "");
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_ERROR;
	f.error = &e;
	(void)send_frame(fd, &f, NULL, 0);
}

static bool is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

/* An errno value from the wire, as a negative errno that means something. */
static int wire_errno(uint32_t code)
{
	return code > 0 && code < 4096 ? -(int)code : -EPROTO;
}

/*
 * Page size of the VMM's regions: the system's, or the huge page size when
 * the memfds live on hugetlbfs (st_blksize there is the huge page size).
 */
static long regions_page_size(const struct fl_region *rg, unsigned n, char *err, size_t errlen)
{
	long sys = sysconf(_SC_PAGESIZE), ps = 0;

	for (unsigned i = 0; i < n; i++) {
		long p = sys;
		if (rg[i].memfd >= 0) {
			struct statfs sfs;
			struct stat st;
			if (fstatfs(rg[i].memfd, &sfs) < 0 || fstat(rg[i].memfd, &st) < 0) {
				int e = errno;
				seterr(err, errlen, "region %u: memfd %d: %s", i, rg[i].memfd, strerror(e));
				return -e;
			}
			if ((unsigned long)sfs.f_type == HUGETLBFS_MAGIC)
				p = (long)st.st_blksize;
		}
		if (ps && p != ps) {
			seterr(err, errlen, "regions mix page sizes (%ld and %ld bytes); hand over "
			       "each page size through its own router", ps, p);
			return -EINVAL;
		}
		ps = p;
	}
	return ps ? ps : sys;
}

/* Pairwise: at most FL_WIRE_MAX_REGIONS, so O(n^2) is nothing. */
static int check_overlap(const uint64_t *start, const uint64_t *len, unsigned n,
			 char *err, size_t errlen)
{
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = i + 1; j < n; j++)
			if (start[i] < start[j] + len[j] && start[j] < start[i] + len[i]) {
				seterr(err, errlen, "regions %u [0x%" PRIx64 ", +0x%" PRIx64 ") and %u "
				       "[0x%" PRIx64 ", +0x%" PRIx64 ") overlap", i, start[i], len[i],
				       j, start[j], len[j]);
				return -EINVAL;
			}
	return 0;
}

static int unix_addr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
	if (!path || !*path) {
		seterr(err, errlen, "no handover socket path given");
		return -EINVAL;
	}
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path)) {
		seterr(err, errlen, "socket path %s is longer than %zu bytes; use a shorter path",
		       path, sizeof(sa->sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}

/* ------------------------------------------------------------------------ */
/* VMM side                                                                  */

/*
 * The guest's memory goes only to a router run by root, by this VMM's own
 * user, or by the uid FAULTLINE_ROUTER_UID names: whoever else listens on
 * the path (a stale or planted socket in a shared directory) gets nothing.
 */
static int check_router_peer(int sock, const char *path, char *err, size_t errlen)
{
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	const char *want = getenv("FAULTLINE_ROUTER_UID");
	char *end;
	long uid = -1;

	if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &cl) < 0) {
		int e = errno;

		seterr(err, errlen, "who listens on %s? SO_PEERCRED: %s", path, strerror(e));
		return -e;
	}
	if (want && *want) {
		uid = strtol(want, &end, 10);
		if (*end || uid < 0) {
			seterr(err, errlen, "FAULTLINE_ROUTER_UID=\"%s\" is not a uid", want);
			return -EINVAL;
		}
	}
	if (cred.uid == 0 || (uid >= 0 ? cred.uid == (uid_t)uid : cred.uid == geteuid()))
		return 0;
	seterr(err, errlen, "the process listening on %s (pid %d) runs as uid %u, not root%s%ld: "
	       "guest memory not handed over (set FAULTLINE_ROUTER_UID to trust that uid)", path,
	       (int)cred.pid, (unsigned)cred.uid, uid >= 0 ? " or uid " : " or this VMM's uid ",
	       uid >= 0 ? uid : (long)geteuid());
	return -EPERM;
}

int fl_handover(const char *socket_path, int uffd, enum fl_uffd_mode mode,
		const struct fl_region *regions, unsigned nregions,
		char *err, size_t errlen)
{
	Faultline__Wire__Region wr[FL_WIRE_MAX_REGIONS], *wrp[FL_WIRE_MAX_REGIONS];
	uint64_t start[FL_WIRE_MAX_REGIONS], len[FL_WIRE_MAX_REGIONS];
	int fds[MAX_HANDOVER_FDS];
	unsigned nfds = 0;
	struct sockaddr_un sa;
	int r;

	r = unix_addr(socket_path, &sa, err, errlen);
	if (r < 0)
		return r;
	if (uffd < 0) {
		seterr(err, errlen, "no userfaultfd to hand over (fd %d)", uffd);
		return -EBADF;
	}
	if (mode != FL_MODE_MISSING && mode != FL_MODE_MINOR) {
		seterr(err, errlen, "unknown userfaultfd mode %d; use FL_MODE_MISSING or FL_MODE_MINOR",
		       (int)mode);
		return -EINVAL;
	}
	if (!regions || nregions == 0 || nregions > FL_WIRE_MAX_REGIONS) {
		seterr(err, errlen, "%u regions; a handover carries 1 to %d", nregions,
		       FL_WIRE_MAX_REGIONS);
		return -EINVAL;
	}
	long ps = regions_page_size(regions, nregions, err, errlen);
	if (ps < 0)
		return (int)ps;

	fds[nfds++] = uffd;
	for (unsigned i = 0; i < nregions; i++) {
		const struct fl_region *rg = &regions[i];
		uint64_t base = (uint64_t)(uintptr_t)rg->base;
		if (base % (uint64_t)ps || rg->length == 0 || rg->length % (uint64_t)ps ||
		    base + rg->length < base) {
			seterr(err, errlen, "region %u (%p, %" PRIu64 " bytes) is empty or not aligned "
			       "to the %ld-byte page size", i, rg->base, rg->length, ps);
			return -EINVAL;
		}
		if (mode == FL_MODE_MINOR && rg->memfd < 0) {
			seterr(err, errlen, "region %u has no memfd; MINOR mode places pages through "
			       "the page cache, so every region needs its memfd", i);
			return -EINVAL;
		}
		if (rg->memfd >= 0 && rg->offset % (uint64_t)ps) {
			seterr(err, errlen, "region %u: memfd offset 0x%" PRIx64 " is not page aligned",
			       i, rg->offset);
			return -EINVAL;
		}
		faultline__wire__region__init(&wr[i]);
		wr[i].id = i;
		wr[i].length = rg->length;
		wr[i].addr = base;
		wr[i].memfd_offset = rg->memfd >= 0 ? rg->offset : 0;
		wr[i].has_memfd = rg->memfd >= 0;
		wrp[i] = &wr[i];
		start[i] = base;
		len[i] = rg->length;
		if (rg->memfd >= 0)
			fds[nfds++] = rg->memfd;
	}
	r = check_overlap(start, len, nregions, err, errlen);
	if (r < 0)
		return r;

	Faultline__Wire__Hello hello = FAULTLINE__WIRE__HELLO__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;
	hello.version = FL_WIRE_VERSION;
	hello.role = (char *)"vmm";
	hello.mode = (char *)(mode == FL_MODE_MINOR ? "minor" : "missing");
	hello.pid = (uint32_t)getpid();
	hello.page_size = (uint32_t)ps;
	hello.n_regions = nregions;
	hello.regions = wrp;
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_HELLO;
	f.hello = &hello;

	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0) {
		r = -errno;
		seterr(err, errlen, "socket(AF_UNIX): %s", strerror(-r));
		return r;
	}
	if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		if (r == -ENOENT)
			seterr(err, errlen, "no router socket at %s; start `faultline target` "
			       "listening there first", socket_path);
		else if (r == -ECONNREFUSED)
			seterr(err, errlen, "nobody listens on %s (a router's stale socket?); "
			       "start `faultline target` listening there", socket_path);
		else
			seterr(err, errlen, "connect to the router at %s: %s", socket_path, strerror(-r));
		goto fail;
	}
	r = check_router_peer(sock, socket_path, err, errlen);
	if (r < 0)
		goto fail;
	r = send_frame(sock, &f, fds, nfds);
	if (r < 0) {
		seterr(err, errlen, "sending the handover to %s: %s", socket_path, strerror(-r));
		goto fail;
	}

	fl_frame *reply = NULL;
	char why[256] = "";
	r = recv_frame(sock, deadline_in(HELLO_TIMEOUT_MS), NULL, &reply, why, sizeof(why));
	if (r < 0) {
		if (r == -ETIMEDOUT)
			seterr(err, errlen, "the router at %s did not answer the handover within %d s; "
			       "is it stuck?", socket_path, HELLO_TIMEOUT_MS / 1000);
		else if (r == -ECONNRESET)
			seterr(err, errlen, "the router at %s hung up without answering the handover; "
			       "see its log", socket_path);
		else
			seterr(err, errlen, "bad answer from the router at %s: %s", socket_path, why);
		goto fail;
	}
	if (reply->body_case == FAULTLINE__WIRE__FRAME__BODY_ERROR) {
		r = wire_errno(reply->error->code);
		seterr(err, errlen, "the router at %s refused the handover: %s", socket_path,
		       reply->error->text && *reply->error->text ? reply->error->text : strerror(-r));
	} else if (reply->body_case != FAULTLINE__WIRE__FRAME__BODY_HELLO ||
		   strcmp(reply->hello->role, "router") != 0) {
		r = -EPROTO;
		seterr(err, errlen, "the peer at %s is not a faultline router (it answered frame "
		       "type %d); check the socket path", socket_path, (int)reply->body_case);
	} else if (reply->hello->version != FL_WIRE_VERSION) {
		r = -EPROTONOSUPPORT;
		seterr(err, errlen, "the router at %s speaks handover version %" PRIu32 ", this VMM "
		       "version %d; run matching faultline versions", socket_path,
		       reply->hello->version, FL_WIRE_VERSION);
	}
	fl_wire_free(reply);
	if (r < 0)
		goto fail;
	return sock;
fail:
	close(sock);
	return r;
}

struct zap_call {
	void *addr;
	size_t len;
	int done;	/* socket end the result (an errno) is sent on */
};

static void *zap_call_thread(void *arg)
{
	struct zap_call *z = arg;
	int e = madvise(z->addr, z->len, MADV_DONTNEED) < 0 ? errno : 0;

	/* the serving side may have given up on us: no SIGPIPE for that */
	if (send(z->done, &e, sizeof(e), MSG_NOSIGNAL) < 0) {
		/* nobody waits for the result any more */
	}
	close(z->done);
	free(z);
	return NULL;
}

/*
 * MADV_DONTNEED on uffd-registered memory raises UFFD_EVENT_REMOVE and
 * waits until a router has read it.  If the router dies meanwhile the
 * madvise waits for the next router, and that one can only come once the
 * VMM hands over again: so the zap runs on its own thread, and a router
 * hanging up ends the wait here (ECONNRESET) while the zap finishes later.
 * Returns the zap's errno (0 done) or ECONNRESET.
 */
static int zap_watching(int sock, void *addr, size_t len)
{
	struct zap_call *z = malloc(sizeof(*z));
	pthread_attr_t attr;
	pthread_t th;
	int sv[2], e = 0;

	if (!z || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		free(z);
		return madvise(addr, len, MADV_DONTNEED) < 0 ? errno : 0;
	}
	*z = (struct zap_call){ .addr = addr, .len = len, .done = sv[1] };
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&th, &attr, zap_call_thread, z)) {
		pthread_attr_destroy(&attr);
		close(sv[0]);
		close(sv[1]);
		free(z);
		return madvise(addr, len, MADV_DONTNEED) < 0 ? errno : 0;
	}
	pthread_attr_destroy(&attr);
	for (;;) {
		struct pollfd p[2] = { { .fd = sv[0], .events = POLLIN },
				       { .fd = sock, .events = POLLRDHUP } };

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			e = errno;
			break;
		}
		if (p[0].revents) {
			if (recv(sv[0], &e, sizeof(e), 0) != sizeof(e))
				e = EIO;
			break;
		}
		if (p[1].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
			e = ECONNRESET;
			break;
		}
	}
	close(sv[0]);
	return e;
}

int fl_handover_serve(int sock, const struct fl_region *regions, unsigned nregions)
{
	long ps = regions_page_size(regions, nregions, NULL, 0);

	if (ps < 0)
		return (int)ps;
	for (;;) {
		fl_frame *f = NULL;
		int r = recv_frame(sock, fl_now_ms(), NULL, &f, NULL, 0);
		if (r == -ETIMEDOUT)
			return 0;
		if (r < 0)
			return r;
		if (f->body_case == FAULTLINE__WIRE__FRAME__BODY_ERROR) {
			/* The router says goodbye; it closes next. */
			fl_wire_free(f);
			return -ECONNRESET;
		}
		if (f->body_case != FAULTLINE__WIRE__FRAME__BODY_ZAP || f->zap->done) {
			fl_wire_free(f);
			return -EPROTO;
		}

		Faultline__Wire__Zap ans = FAULTLINE__WIRE__ZAP__INIT;
		ans.region = f->zap->region;
		ans.first_page = f->zap->first_page;
		ans.npages = f->zap->npages;
		fl_wire_free(f);
		int e = 0;
		uint64_t npg = ans.region < nregions ? regions[ans.region].length / (uint64_t)ps : 0;
		if (ans.region >= nregions || ans.npages == 0 || ans.first_page >= npg ||
		    ans.npages > npg - ans.first_page) {
			e = ERANGE;
		} else {
			uint8_t *a = (uint8_t *)regions[ans.region].base + ans.first_page * (uint64_t)ps;

			e = zap_watching(sock, a, ans.npages * (uint64_t)ps);
			if (e == ECONNRESET)
				return -ECONNRESET;
		}

		fl_frame out = FAULTLINE__WIRE__FRAME__INIT;
		ans.done = 1;
		ans.err = e;
		out.body_case = FAULTLINE__WIRE__FRAME__BODY_ZAP;
		out.zap = &ans;
		r = send_frame(sock, &out, NULL, 0);
		if (r < 0)
			return r == -EPIPE ? -ECONNRESET : r;
	}
}

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
		seterr(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	if (!S_ISSOCK(st.st_mode)) {
		seterr(err, errlen, "%s exists and is not a socket; remove it or choose another "
		       "socket path", path);
		return -EEXIST;
	}
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (probe < 0) {
		int e = errno;
		seterr(err, errlen, "socket(AF_UNIX): %s", strerror(e));
		return -e;
	}
	int r = connect(probe, (const struct sockaddr *)sa, sizeof(*sa));
	int e = errno;
	close(probe);
	/* EAGAIN: a listener whose backlog is full — still somebody's. */
	if (r == 0 || e == EAGAIN || e == EINPROGRESS) {
		seterr(err, errlen, "another router is already listening on %s; stop it or use "
		       "another socket path", path);
		return -EADDRINUSE;
	}
	if (e != ECONNREFUSED) {
		seterr(err, errlen, "%s is in use and could not be probed (%s); remove it if no "
		       "router owns it", path, strerror(e));
		return -e;
	}
	if (unlink(path) < 0 && errno != ENOENT) {
		e = errno;
		seterr(err, errlen, "removing the stale socket %s: %s", path, strerror(e));
		return -e;
	}
	return 0;
}

int fl_handover_listen(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	int r = unix_addr(path, &sa, err, errlen);

	if (r < 0)
		return r;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		r = -errno;
		seterr(err, errlen, "socket(AF_UNIX): %s", strerror(-r));
		return r;
	}
	for (int attempt = 0;; attempt++) {
		if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		r = -errno;
		if (r != -EADDRINUSE || attempt == 2) {
			seterr(err, errlen, "bind %s: %s", path, strerror(-r));
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
		seterr(err, errlen, "chmod 0600 %s: %s", path, strerror(-r));
		unlink(path);
		goto fail;
	}
	if (listen(fd, 8) < 0) {
		r = -errno;
		seterr(err, errlen, "listen on %s: %s", path, strerror(-r));
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
		seterr(err, errlen, "the VMM's first frame must be a Hello, got frame type %d",
		       (int)f->body_case);
		return -EPROTO;
	}
	const Faultline__Wire__Hello *h = f->hello;
	if (h->version != FL_WIRE_VERSION) {
		seterr(err, errlen, "the VMM speaks handover version %" PRIu32 ", this router version "
		       "%d; run matching faultline versions", h->version, FL_WIRE_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (strcmp(h->role, "vmm") != 0) {
		seterr(err, errlen, "the peer introduced itself as \"%.32s\", not \"vmm\"; only VMMs "
		       "hand over on this socket", h->role);
		return -EPROTO;
	}
	enum fl_uffd_mode mode;
	if (!strcmp(h->mode, "missing")) {
		mode = FL_MODE_MISSING;
	} else if (!strcmp(h->mode, "minor")) {
		mode = FL_MODE_MINOR;
	} else {
		seterr(err, errlen, "unknown handover mode \"%.32s\"; expected missing or minor", h->mode);
		return -EINVAL;
	}
	long sys = sysconf(_SC_PAGESIZE);
	uint64_t ps = h->page_size;
	if (!is_pow2(ps) || ps < (uint64_t)sys || ps > MAX_PAGE_SIZE) {
		seterr(err, errlen, "page size %" PRIu64 " is not a power of two from %ld to %llu",
		       ps, sys, MAX_PAGE_SIZE);
		return -EINVAL;
	}
	if ((flags & FL_HANDOVER_BASE_PAGES) && ps != (uint64_t)sys) {
		seterr(err, errlen, "page size %" PRIu64 ": this peer serves %ld-byte pages only "
		       "(hugetlbfs-backed guest memory is not supported here)", ps, sys);
		return -EOPNOTSUPP;
	}
	if (h->n_regions == 0 || h->n_regions > FL_WIRE_MAX_REGIONS) {
		seterr(err, errlen, "%zu regions; a handover carries 1 to %d", h->n_regions,
		       FL_WIRE_MAX_REGIONS);
		return -EINVAL;
	}

	uint64_t start[FL_WIRE_MAX_REGIONS], len[FL_WIRE_MAX_REGIONS];
	unsigned want_fds = 1;
	for (size_t i = 0; i < h->n_regions; i++) {
		const Faultline__Wire__Region *rg = h->regions[i];
		if (rg->id != i) {
			seterr(err, errlen, "region %zu has id %" PRIu32 "; ids must be 0..n-1 in order",
			       i, rg->id);
			return -EINVAL;
		}
		if (rg->length == 0 || rg->length % ps || rg->addr % ps || rg->addr + rg->length < rg->addr) {
			seterr(err, errlen, "region %zu [0x%" PRIx64 ", +0x%" PRIx64 ") is empty, wraps, or "
			       "is not aligned to the %" PRIu64 "-byte page size", i, rg->addr,
			       rg->length, ps);
			return -EINVAL;
		}
		if (rg->has_memfd && (rg->memfd_offset % ps ||
				      rg->memfd_offset + rg->length < rg->memfd_offset)) {
			seterr(err, errlen, "region %zu: memfd offset 0x%" PRIx64 " is not page aligned "
			       "or the range wraps", i, rg->memfd_offset);
			return -EINVAL;
		}
		if (mode == FL_MODE_MINOR && !rg->has_memfd) {
			seterr(err, errlen, "region %zu comes without a memfd; MINOR mode needs one per "
			       "region (the router fills the page cache through it)", i);
			return -EINVAL;
		}
		if ((flags & FL_HANDOVER_NEED_MEMFD) && !rg->has_memfd) {
			seterr(err, errlen, "region %zu comes without a memfd; this peer reads guest "
			       "memory through the memfds, so every region needs one (back guest "
			       "memory with a shared memfd and pass it in fl_region.memfd)", i);
			return -EINVAL;
		}
		start[i] = rg->addr;
		len[i] = rg->length;
		want_fds += rg->has_memfd ? 1 : 0;
	}
	int r = check_overlap(start, len, (unsigned)h->n_regions, err, errlen);
	if (r < 0)
		return r;

	if (bag->truncated) {
		seterr(err, errlen, "the VMM's file descriptors were truncated in transit (MSG_CTRUNC): "
		       "it sent more than %d, or this process is out of descriptors (ulimit -n)",
		       FD_BAG_CAP);
		return -EPROTO;
	}
	if (bag->n + bag->dropped != want_fds) {
		seterr(err, errlen, "the VMM sent %u file descriptors, expected %u (its userfaultfd "
		       "and one memfd per region with has_memfd)", bag->n + bag->dropped, want_fds);
		return -EPROTO;
	}
	char link[PATH_MAX];
	fd_link(bag->fd[0], link, sizeof(link));
	if (strcmp(link, UFFD_LINK) != 0) {
		seterr(err, errlen, "the first descriptor is %.200s, not a userfaultfd; send the "
		       "userfaultfd first", link);
		return -EBADF;
	}
	unsigned next = 1;
	for (size_t i = 0; i < h->n_regions; i++) {
		const Faultline__Wire__Region *rg = h->regions[i];
		int mfd = -1;
		if (rg->has_memfd) {
			struct statfs sfs;
			struct stat st;
			mfd = bag->fd[next++];
			/* F_GET_SEALS works exactly on shmem and hugetlbfs files: what
			 * MINOR mode can CONTINUE on (memfds, and /dev/shm files). */
			if (fcntl(mfd, F_GET_SEALS) < 0 || fstat(mfd, &st) < 0 ||
			    fstatfs(mfd, &sfs) < 0) {
				fd_link(mfd, link, sizeof(link));
				seterr(err, errlen, "the descriptor for region %zu is %.200s, not a memfd "
				       "(shmem or hugetlbfs)", i, link);
				return -EBADF;
			}
			uint64_t fps = (unsigned long)sfs.f_type == HUGETLBFS_MAGIC ?
				       (uint64_t)st.st_blksize : (uint64_t)sys;
			if (fps != ps) {
				seterr(err, errlen, "region %zu: its memfd has %" PRIu64 "-byte pages, the "
				       "handover says %" PRIu64, i, fps, ps);
				return -EINVAL;
			}
			if ((uint64_t)st.st_size < rg->memfd_offset + rg->length) {
				seterr(err, errlen, "region %zu: its memfd is %lld bytes, shorter than "
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
	r = fl_wire_wait(lsock, POLLIN, deadline_in(timeout_ms));
	if (r) {
		if (r == -ETIMEDOUT)
			seterr(err, errlen, "no VMM handed over its memory within %d ms", timeout_ms);
		else
			seterr(err, errlen, "waiting for a VMM: %s", strerror(-r));
		return r;
	}
	sock = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
	if (sock < 0) {
		r = -errno;
		seterr(err, errlen, "accepting the VMM's connection: %s", strerror(-r));
		return r;
	}
	{
		/* The socket is 0600: only our uid (or root) can reach it; say so
		 * plainly if anyone else got through (a loosened mode). */
		struct ucred pc;
		socklen_t pcl = sizeof(pc);

		if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &pc, &pcl) < 0 ||
		    (pc.uid != 0 && pc.uid != geteuid())) {
			seterr(err, errlen, "a process of uid %d (pid %d) offered a handover; only root or "
			       "uid %u may: refused", pcl == sizeof(pc) ? (int)pc.uid : -1,
			       pcl == sizeof(pc) ? (int)pc.pid : -1, (unsigned)geteuid());
			r = -EPERM;
			goto fail;
		}
	}

	char why[256] = "";
	r = recv_frame(sock, deadline_in(HELLO_TIMEOUT_MS), &bag, &f, why, sizeof(why));
	if (r < 0) {
		if (r == -ETIMEDOUT)
			seterr(err, errlen, "a VMM connected but sent no handover within %d s",
			       HELLO_TIMEOUT_MS / 1000);
		else if (r == -ECONNRESET)
			seterr(err, errlen, "a VMM connected and hung up before handing over");
		else
			seterr(err, errlen, "bad handover from the VMM: %s", why);
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
	r = send_frame(sock, &rf, NULL, 0);
	if (r < 0) {
		seterr(err, errlen, "answering the VMM's handover: %s", strerror(-r));
		fl_handover_close(out);
		goto fail_nosend;
	}
	fl_wire_free(f);
	out->sock = sock;
	return 0;

fail:
	if (r != -ECONNRESET && r != -ETIMEDOUT)
		send_error(sock, r, err);
fail_nosend:
	fd_bag_close(&bag);
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
	return send_frame(h->sock, &f, NULL, 0);
}

int fl_handover_zap_reply(const struct fl_handover_recv *h, int timeout_ms,
			  struct fl_handover_zap_result *res)
{
	fl_frame *f = NULL;
	int r;

	if (h->sock < 0)
		return -ENOTCONN;
	r = recv_frame(h->sock, timeout_ms < 0 ? -1 : fl_now_ms() + timeout_ms, NULL, &f, NULL, 0);
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
	int64_t deadline = deadline_in(timeout_ms);
	int r = fl_handover_zap_request(h, region, first_page, npages);

	if (r < 0)
		return r;
	for (;;) {
		struct fl_handover_zap_result res;
		r = fl_handover_zap_reply(h, ms_left(deadline), &res);
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
