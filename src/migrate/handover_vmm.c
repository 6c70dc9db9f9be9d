// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The VMM side of the handover: fl_handover() sends the userfaultfd and a
 * memfd per region to a router it trusts, and fl_handover_serve() answers
 * the router's zap requests (madvise on the VMM's own mappings).
 */
#include "handover_int.h"
#include "regions.h"

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

		fl_errmsg(err, errlen, "who listens on %s? SO_PEERCRED: %s", path, strerror(e));
		return -e;
	}
	if (want && *want) {
		uid = strtol(want, &end, 10);
		if (*end || uid < 0) {
			fl_errmsg(err, errlen, "FAULTLINE_ROUTER_UID=\"%s\" is not a uid", want);
			return -EINVAL;
		}
	}
	if (cred.uid == 0 || (uid >= 0 ? cred.uid == (uid_t)uid : cred.uid == geteuid()))
		return 0;
	fl_errmsg(err, errlen, "the process listening on %s (pid %d) runs as uid %u, not root%s%ld: "
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

	r = fl_ho_unix_addr(socket_path, &sa, err, errlen);
	if (r < 0)
		return r;
	if (uffd < 0) {
		fl_errmsg(err, errlen, "no userfaultfd to hand over (fd %d)", uffd);
		return -EBADF;
	}
	if (mode != FL_MODE_MISSING && mode != FL_MODE_MINOR) {
		fl_errmsg(err, errlen, "unknown userfaultfd mode %d; use FL_MODE_MISSING or FL_MODE_MINOR",
		       (int)mode);
		return -EINVAL;
	}
	if (!regions || nregions == 0 || nregions > FL_WIRE_MAX_REGIONS) {
		fl_errmsg(err, errlen, "%u regions; a handover carries 1 to %d", nregions,
		       FL_WIRE_MAX_REGIONS);
		return -EINVAL;
	}
	long ps = fl_regions_page_size(regions, nregions, 0, err, errlen);
	if (ps < 0)
		return (int)ps;

	fds[nfds++] = uffd;
	for (unsigned i = 0; i < nregions; i++) {
		const struct fl_region *rg = &regions[i];
		uint64_t base = (uint64_t)(uintptr_t)rg->base;
		if (base % (uint64_t)ps || rg->length == 0 || rg->length % (uint64_t)ps ||
		    base + rg->length < base) {
			fl_errmsg(err, errlen, "region %u (%p, %" PRIu64 " bytes) is empty or not aligned "
			       "to the %ld-byte page size", i, rg->base, rg->length, ps);
			return -EINVAL;
		}
		if (mode == FL_MODE_MINOR && rg->memfd < 0) {
			fl_errmsg(err, errlen, "region %u has no memfd; MINOR mode places pages through "
			       "the page cache, so every region needs its memfd", i);
			return -EINVAL;
		}
		if (rg->memfd >= 0 && rg->offset % (uint64_t)ps) {
			fl_errmsg(err, errlen, "region %u: memfd offset 0x%" PRIx64 " is not page aligned",
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
	r = fl_ho_check_overlap(start, len, nregions, err, errlen);
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
		fl_errmsg(err, errlen, "socket(AF_UNIX): %s", strerror(-r));
		return r;
	}
	if (connect(sock, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		r = -errno;
		if (r == -ENOENT)
			fl_errmsg(err, errlen, "no router socket at %s; start `faultline target` "
			       "listening there first", socket_path);
		else if (r == -ECONNREFUSED)
			fl_errmsg(err, errlen, "nobody listens on %s (a router's stale socket?); "
			       "start `faultline target` listening there", socket_path);
		else
			fl_errmsg(err, errlen, "connect to the router at %s: %s", socket_path, strerror(-r));
		goto fail;
	}
	r = check_router_peer(sock, socket_path, err, errlen);
	if (r < 0)
		goto fail;
	r = fl_ho_send_frame(sock, &f, fds, nfds);
	if (r < 0) {
		fl_errmsg(err, errlen, "sending the handover to %s: %s", socket_path, strerror(-r));
		goto fail;
	}

	fl_frame *reply = NULL;
	char why[256] = "";
	r = fl_ho_recv_frame(sock, fl_ho_deadline_in(HELLO_TIMEOUT_MS), NULL, &reply, why, sizeof(why));
	if (r < 0) {
		if (r == -ETIMEDOUT)
			fl_errmsg(err, errlen, "the router at %s did not answer the handover within %d s; "
			       "is it stuck?", socket_path, HELLO_TIMEOUT_MS / 1000);
		else if (r == -ECONNRESET)
			fl_errmsg(err, errlen, "the router at %s hung up without answering the handover; "
			       "see its log", socket_path);
		else
			fl_errmsg(err, errlen, "bad answer from the router at %s: %s", socket_path, why);
		goto fail;
	}
	if (reply->body_case == FAULTLINE__WIRE__FRAME__BODY_ERROR) {
		r = fl_ho_wire_errno(reply->error->code);
		fl_errmsg(err, errlen, "the router at %s refused the handover: %s", socket_path,
		       reply->error->text && *reply->error->text ? reply->error->text : strerror(-r));
	} else if (reply->body_case != FAULTLINE__WIRE__FRAME__BODY_HELLO ||
		   strcmp(reply->hello->role, "router") != 0) {
		r = -EPROTO;
		fl_errmsg(err, errlen, "the peer at %s is not a faultline router (it answered frame "
		       "type %d); check the socket path", socket_path, (int)reply->body_case);
	} else if (reply->hello->version != FL_WIRE_VERSION) {
		r = -EPROTONOSUPPORT;
		fl_errmsg(err, errlen, "the router at %s speaks handover version %" PRIu32 ", this VMM "
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
	long ps = fl_regions_page_size(regions, nregions, 0, NULL, 0);

	if (ps < 0)
		return (int)ps;
	for (;;) {
		fl_frame *f = NULL;
		int r = fl_ho_recv_frame(sock, fl_now_ms(), NULL, &f, NULL, 0);
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
		r = fl_ho_send_frame(sock, &out, NULL, 0);
		if (r < 0)
			return r == -EPIPE ? -ECONNRESET : r;
	}
}
