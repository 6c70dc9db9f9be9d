// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: the control socket (status, poison, switchover) and
 * its client.
 */
#include "source_int.h"

/* ---- control socket ------------------------------------------------------ */

static void ctl_reply(struct ctl *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ctl_reply(struct ctl *k, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	/* small replies to a local client: one that doesn't read is dropped */
	if (send(k->fd, line, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n) {
		close(k->fd);
		k->fd = -1;
	}
}

static void ctl_status(struct src *s, struct ctl *k)
{
	struct conn *c = src_active_conn(s);
	char line[1024];

	snprintf(line, sizeof(line), "{\"event\":\"source_status\",\"pid\":%d,\"phase\":\"%s\","
		 "\"target\":%s%s%s,\"switched\":%s,\"vm_stopped\":%s,\"pages_total\":%" PRIu64
		 ",\"pages_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 ",\"requests_served\":%" PRIu64
		 ",\"poisoned\":%" PRIu64 ",\"clean\":%" PRIu64 ",\"dirty\":%" PRIu64 ",\"zero\":%"
		 PRIu64 ",\"connections\":%" PRIu64 "}", s->pid, src_phase_name(s, c), c ? "\"" : "",
		 c ? c->peer : "null", c ? "\"" : "", s->switched ? "true" : "false",
		 s->vm_stopped ? "true" : "false", s->pages_total, s->pages_sent, s->bytes_sent,
		 s->requests, s->poisoned, s->n_clean, s->n_dirty, s->n_zero, s->connections);
	ctl_reply(k, "%s", line);
}

static void ctl_line(struct src *s, struct ctl *k, char *line)
{
	char *save = NULL, *cmd = strtok_r(line, " \t", &save), *arg, *rest, err[300];
	uint64_t pages[FL_SOURCE_MAX_INJECT];
	unsigned n, region;
	char *end;

	if (!cmd)
		return;
	if (!strcmp(cmd, "status")) {
		ctl_status(s, k);
	} else if (!strcmp(cmd, "switchover")) {
		struct conn *c = src_active_conn(s);

		if (s->switched) {
			ctl_reply(k, "ok switchover already done");
		} else {
			s->switch_requested = true;
			if (!c)
				ctl_reply(k, "ok switchover pending: no target connected yet");
			else if (c->phase == CP_PRECOPY)
				ctl_reply(k, "ok switchover pending: precopy still running");
			else
				ctl_reply(k, "ok switchover");
		}
	} else if (!strcmp(cmd, "poison")) {
		arg = strtok_r(NULL, " \t", &save);
		rest = strtok_r(NULL, " \t", &save);
		if (arg && !rest && strchr(arg, ':')) {	/* "poison R:P,..." */
			rest = strchr(arg, ':');
			*rest++ = 0;
		}
		errno = 0;
		region = arg ? (unsigned)strtoul(arg, &end, 10) : 0;
		if (!arg || !rest || errno || *end || !isdigit((unsigned char)*arg)) {
			ctl_reply(k, "error: usage: poison REGION PAGE[,PAGE|FIRST-LAST...]");
			return;
		}
		if (region >= s->nreg) {
			ctl_reply(k, "error: no region %u (this source has %u)", region, s->nreg);
			return;
		}
		if (fl_source_parse_pages(rest, pages, FL_SOURCE_MAX_INJECT, &n, err, sizeof(err))) {
			ctl_reply(k, "error: %s", err);
			return;
		}
		for (unsigned i = 0; i < n && k->fd >= 0; i++) {
			int ret;

			err[0] = 0;
			if (pages[i] >= s->reg[region].npages) {
				ctl_reply(k, "error %u %" PRIu64 ": region %u has %" PRIu64 " pages",
					  region, pages[i], region, s->reg[region].npages);
				continue;
			}
			ret = src_inject_poison(s, region, pages[i], err, sizeof(err));
			if (ret)
				ctl_reply(k, "error %u %" PRIu64 ": %s", region, pages[i],
					  err[0] ? err : strerror(-ret));
			else
				ctl_reply(k, "ok %u %" PRIu64, region, pages[i]);
		}
	} else {
		ctl_reply(k, "error: unknown command '%.40s' (poison REGION PAGE[,PAGE...] | "
			  "switchover | status)", cmd);
	}
}

void src_ctl_read(struct src *s, struct ctl *k)
{
	ssize_t n = read(k->fd, k->buf + k->len, sizeof(k->buf) - 1 - k->len);
	char *nl;

	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		close(k->fd);
		k->fd = -1;
		return;
	}
	k->len += (size_t)n;
	k->buf[k->len] = 0;
	while (k->fd >= 0 && (nl = strchr(k->buf, '\n'))) {
		size_t used = (size_t)(nl - k->buf) + 1;

		*nl = 0;
		if (nl > k->buf && nl[-1] == '\r')
			nl[-1] = 0;
		ctl_line(s, k, k->buf);
		if (k->fd < 0)
			return;
		memmove(k->buf, k->buf + used, k->len - used + 1);
		k->len -= used;
	}
	if (k->len == sizeof(k->buf) - 1) {
		ctl_reply(k, "error: line too long");
		if (k->fd >= 0)
			close(k->fd);
		k->fd = -1;
	}
}

int src_ctl_listen(struct src *s, const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	mode_t old;
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		src_say(s, "--control %s: path too long for a Unix socket (at most %zu bytes)", path,
		    sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	if (!lstat(path, &st)) {
		int probe;

		if (!S_ISSOCK(st.st_mode)) {
			src_say(s, "--control %s exists and is not a socket: pick another path", path);
			return -EEXIST;
		}
		probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && !connect(probe, (struct sockaddr *)&sa, sizeof(sa))) {
			close(probe);
			src_say(s, "control socket %s is in use (another faultline source?): stop it or "
			    "pick another --control", path);
			return -EADDRINUSE;
		}
		if (probe >= 0)
			close(probe);
		unlink(path);	/* stale: nobody listens on it */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	old = umask(0177);	/* 0600: injecting poison is for its owner only */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 8)) {
		int err = errno;

		umask(old);
		close(fd);
		src_say(s, "cannot create control socket %s: %s", path, strerror(err));
		return -err;
	}
	umask(old);
	s->ctl_created = true;
	s->cfd = fd;
	return 0;
}

int fl_source_control(const char *path, const char *line, unsigned nreplies, FILE *out,
		      char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char buf[4096];
	size_t len = 0;
	unsigned got = 0;
	int fd, ret = 0;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "control socket path %s is too long", path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		snprintf(err, errlen, "cannot connect to control socket %s: %s%s", path,
			 strerror(-ret), ret == -ENOENT || ret == -ECONNREFUSED ?
			 " (is `faultline source --control` running?)" : "");
		if (fd >= 0)
			close(fd);
		return ret;
	}
	snprintf(buf, sizeof(buf), "%s\n", line);
	if (send(fd, buf, strlen(buf), MSG_NOSIGNAL) != (ssize_t)strlen(buf)) {
		ret = -errno;
		snprintf(err, errlen, "writing to control socket %s: %s", path, strerror(-ret));
		close(fd);
		return ret;
	}
	while (got < nreplies) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		char *nl;
		ssize_t k;

		if (poll(&p, 1, 60000) <= 0) {
			snprintf(err, errlen, "no answer from %s within 60 s", path);
			ret = -ETIMEDOUT;
			break;
		}
		k = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (k <= 0) {
			snprintf(err, errlen, "control socket %s closed after %u of %u answers", path,
				 got, nreplies);
			ret = k < 0 ? -errno : -ECONNRESET;
			break;
		}
		len += (size_t)k;
		buf[len] = 0;
		while (got < nreplies && (nl = strchr(buf, '\n'))) {
			*nl = 0;
			fprintf(out, "%s\n", buf);
			got++;
			if (!strncmp(buf, "error", 5))
				ret = -EREMOTEIO;
			if (!strncmp(buf, "error:", 6))	/* a refused command: nothing follows */
				got = nreplies;
			len -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, len + 1);
		}
		if (len == sizeof(buf) - 1)
			len = 0;
	}
	close(fd);
	return ret;
}
