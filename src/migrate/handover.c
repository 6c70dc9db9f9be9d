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
#include "handover_int.h"
/* -1: no deadline. */
int64_t fl_ho_deadline_in(int timeout_ms)
{
	return timeout_ms < 0 ? -1 : fl_now_ms() + timeout_ms;
}

int fl_ho_ms_left(int64_t deadline)
{
	if (deadline < 0)
		return -1;
	int64_t left = deadline - fl_now_ms();
	return left < 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
}

void fl_ho_fd_bag_close(struct fd_bag *b)
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
		fl_errmsg(err, errlen, "a %zu-byte frame is not a parsable protobuf Frame", n);
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
int fl_ho_recv_frame(int fd, int64_t deadline, struct fd_bag *bag, fl_frame **out,
		      char *err, size_t errlen)
{
	uint8_t hdr[4];
	size_t got;
	int r;

	*out = NULL;
	r = fl_wire_wait(fd, POLLIN, deadline);
	if (r == -ETIMEDOUT) {
		fl_errmsg(err, errlen, "no frame arrived in time");
		return r;
	}
	if (r) {
		fl_errmsg(err, errlen, "poll on the handover socket: %s", strerror(-r));
		return r;
	}
	int64_t rest = deadline < 0 ? -1 : fl_now_ms() + FRAME_REST_MS;

	r = recv_exact(fd, hdr, sizeof(hdr), rest, bag, &got);
	if (r == -ECONNRESET && got == 0) {
		fl_errmsg(err, errlen, "the peer closed the connection");
		return r;
	}
	if (r < 0) {
		fl_errmsg(err, errlen, "reading a frame header: %s%s", strerror(-r),
		       r == -EPROTO ? " (unexpected file descriptors)" : "");
		return r == -ECONNRESET ? -EPROTO : r;
	}
	uint32_t n = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
	if (n == 0 || n > FL_WIRE_MAX_FRAME) {
		fl_errmsg(err, errlen, "frame length %" PRIu32 " is outside 1..%u", n, FL_WIRE_MAX_FRAME);
		return -EMSGSIZE;
	}
	uint8_t *body = malloc(n);
	if (!body) {
		fl_errmsg(err, errlen, "out of memory for a %" PRIu32 "-byte frame", n);
		return -ENOMEM;
	}
	r = recv_exact(fd, body, n, rest, bag, &got);
	if (r < 0) {
		free(body);
		fl_errmsg(err, errlen, "frame cut short after %zu of %" PRIu32 " bytes: %s", got, n,
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

int fl_ho_send_frame(int fd, const fl_frame *f, const int *fds, unsigned nfds)
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
void fl_ho_send_error(int fd, int code, const char *text)
{
	Faultline__Wire__Error e = FAULTLINE__WIRE__ERROR__INIT;
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;

	e.code = (uint32_t)(code < 0 ? -code : code);
	e.text = (char *)(text ? text : "");
	f.body_case = FAULTLINE__WIRE__FRAME__BODY_ERROR;
	f.error = &e;
	(void)fl_ho_send_frame(fd, &f, NULL, 0);
}

bool fl_ho_is_pow2(uint64_t x)
{
	return x && !(x & (x - 1));
}

/* An errno value from the wire, as a negative errno that means something. */
int fl_ho_wire_errno(uint32_t code)
{
	return code > 0 && code < 4096 ? -(int)code : -EPROTO;
}

/* Pairwise: at most FL_WIRE_MAX_REGIONS, so O(n^2) is nothing. */
int fl_ho_check_overlap(const uint64_t *start, const uint64_t *len, unsigned n,
			 char *err, size_t errlen)
{
	for (unsigned i = 0; i < n; i++)
		for (unsigned j = i + 1; j < n; j++)
			if (start[i] < start[j] + len[j] && start[j] < start[i] + len[i]) {
				fl_errmsg(err, errlen, "regions %u [0x%" PRIx64 ", +0x%" PRIx64 ") and %u "
				       "[0x%" PRIx64 ", +0x%" PRIx64 ") overlap", i, start[i], len[i],
				       j, start[j], len[j]);
				return -EINVAL;
			}
	return 0;
}

int fl_ho_unix_addr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
	if (!path || !*path) {
		fl_errmsg(err, errlen, "no handover socket path given");
		return -EINVAL;
	}
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path)) {
		fl_errmsg(err, errlen, "socket path %s is longer than %zu bytes; use a shorter path",
		       path, sizeof(sa->sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return 0;
}
