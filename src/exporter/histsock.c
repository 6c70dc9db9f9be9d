// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The history socket's server (a thread of the exporter) and client (used
 * by `faultline stuck`).  See histsock.h for the exchange, history.h for
 * the lines.
 *
 * The server answers one client at a time: an answer is a copy of a
 * bounded store, rendered in memory, so a question takes milliseconds, and
 * each connection gets IO_TIMEOUT_S to ask and to read, so a client that
 * stalls cannot hold the daemon's history hostage for longer than that.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include "clock.h"
#include "histsock.h"

#define IO_TIMEOUT_S 3
#define MAX_REQUEST 4096
#define MAX_ANSWER_LINE 4096

static void set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = IO_TIMEOUT_S };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int make_addr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (!*path || strlen(path) >= sizeof(sa->sun_path)) {
		snprintf(err, errlen, "history socket path '%s' is %s (at most %zu bytes)", path,
			 *path ? "too long" : "empty", sizeof(sa->sun_path) - 1);
		return -ENAMETOOLONG;
	}
	memcpy(sa->sun_path, path, strlen(path));
	return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- server ------------------------------------------------------------------- */

/* Reads the request line (up to '\n' or EOF). 0, or -errno / -EMSGSIZE. */
static int read_request(int fd, char *buf, size_t len)
{
	size_t off = 0;

	for (;;) {
		ssize_t n = recv(fd, buf + off, len - 1 - off, 0);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		off += (size_t)n;
		buf[off] = 0;
		if (!n || memchr(buf, '\n', off))
			return off ? 0 : -ENODATA;
		if (off == len - 1)
			return -EMSGSIZE;
	}
}

static void serve_one(struct fl_histsrv *srv, int fd)
{
	struct fl_hist_answer a;
	pid_t pids[FL_HIST_MAX_PIDS];
	char req[MAX_REQUEST], why[160];
	char *buf = NULL;
	size_t len = 0;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	FILE *out = open_memstream(&buf, &len);
	int npids = 0, ret;

	if (!out)
		return;
	set_timeouts(fd);
	/* the file mode already keeps others out; this also covers a chmod'ed socket */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) ||
	    (cred.uid != 0 && cred.uid != geteuid())) {
		srv->refused++;
		fl_hist_error_write(out, "the fault history is for root only");
		goto send;
	}
	ret = read_request(fd, req, sizeof(req));
	if (ret) {
		srv->refused++;
		if (ret == -EMSGSIZE)
			fl_hist_error_write(out, "request longer than 4096 bytes");
		else if (ret == -ENODATA)
			fl_hist_error_write(out, "empty request: send one line like {\"pids\":[1234]}");
		else
			goto done;	/* timed out or gone: nobody to answer */
		goto send;
	}
	if (fl_hist_request_parse(req, pids, FL_HIST_MAX_PIDS, &npids, why, sizeof(why))) {
		srv->refused++;
		fl_hist_error_write(out, why);
		goto send;
	}
	pthread_mutex_lock(srv->mu);
	ret = fl_hist_query(srv->h, pids, npids, fl_now_ns(), (uint32_t)getpid(), &a);
	pthread_mutex_unlock(srv->mu);
	if (ret) {
		fl_hist_error_write(out, "out of memory copying the history");
		goto send;
	}
	/* rendered outside the lock: the session thread never waits on a slow client */
	fl_hist_answer_write(out, &a);
	fl_hist_answer_free(&a);
	srv->served++;
send:
	if (!fclose(out)) {
		out = NULL;
		write_all(fd, buf, len);
	}
done:
	if (out)
		fclose(out);
	free(buf);
}

static void *serve(void *arg)
{
	struct fl_histsrv *srv = arg;

	for (;;) {
		struct pollfd p[2] = { { srv->lfd, POLLIN, 0 }, { srv->stop_fd, POLLIN, 0 } };
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (p[1].revents)
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;	/* the client went away between poll and accept */
		serve_one(srv, fd);
		close(fd);
	}
	return NULL;
}

/* Is somebody listening at sa?  Its pid in *pid when it says. */
static bool listening(const struct sockaddr_un *sa, pid_t *pid)
{
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	bool yes;

	*pid = 0;
	if (fd < 0)
		return false;
	set_timeouts(fd);
	yes = !connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) || errno == EAGAIN;
	if (yes && !getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen))
		*pid = cred.pid;
	close(fd);
	return yes;
}

/*
 * The parent directory of path, made (0755, one level) when missing.  An
 * existing one must be a real directory that only root or we can change
 * (or a sticky one like /tmp, where nobody can replace our file): whoever
 * else can write there could swap the socket for theirs after we bound it.
 */
static int make_parent(const char *path, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	char *slash;
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = 0;
	else
		*slash = 0;
	if (lstat(dir, &st) && errno == ENOENT) {
		if (!mkdir(dir, 0755) || errno == EEXIST)
			return 0;
		int e = errno;

		snprintf(err, errlen, "cannot create the history socket's directory %s: %s", dir,
			 strerror(e));
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "cannot create the history socket %s: %s is %s", path, dir,
			 S_ISLNK(st.st_mode) ? "a symlink (a real directory is needed)" :
					       "not a directory");
		return S_ISLNK(st.st_mode) ? -ELOOP : -ENOTDIR;
	}
	if ((st.st_uid != 0 && st.st_uid != geteuid()) ||
	    ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))) {
		snprintf(err, errlen, "refusing to serve the history socket in %s: it is owned by "
			 "uid %u with mode %04o, so others could replace the socket; use a "
			 "directory only root or uid %u can write (the default is "
			 FL_HIST_SOCKET_DEFAULT ")", dir, (unsigned)st.st_uid,
			 (unsigned)(st.st_mode & 07777), (unsigned)geteuid());
		return -EPERM;
	}
	return 0;
}

static int bind_socket(struct fl_histsrv *srv, const struct sockaddr_un *sa, char *err,
		       size_t errlen)
{
	mode_t old;
	int r, e;

	/* born 0600: no moment where others could connect */
	old = umask(0177);
	r = bind(srv->lfd, (const struct sockaddr *)sa, sizeof(*sa));
	e = errno;
	umask(old);
	if (!r)
		return 0;
	if (e != EADDRINUSE)
		snprintf(err, errlen, "cannot create the history socket %s: %s", srv->path,
			 strerror(e));
	return -e;
}

int fl_histsrv_start(struct fl_histsrv *srv, const char *path, const struct fl_hist *h,
		     pthread_mutex_t *mu, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	struct stat st;
	pid_t other;
	int ret;

	memset(srv, 0, sizeof(*srv));
	srv->lfd = srv->stop_fd = -1;
	srv->h = h;
	srv->mu = mu;
	if ((ret = make_addr(path, &sa, err, errlen)))
		return ret;
	snprintf(srv->path, sizeof(srv->path), "%s", path);
	if ((ret = make_parent(path, err, errlen)))
		return ret;
	srv->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	srv->stop_fd = eventfd(0, EFD_CLOEXEC);
	if (srv->lfd < 0 || srv->stop_fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot create the history socket: %s", strerror(-ret));
		goto fail;
	}
	ret = bind_socket(srv, &sa, err, errlen);
	if (ret == -EADDRINUSE) {
		if (listening(&sa, &other)) {
			if (other > 0)
				snprintf(err, errlen, "history socket %s is in use by pid %d (another "
					 "faultline exporter?): stop it, or pick another path with "
					 "--history-socket PATH", path, other);
			else
				snprintf(err, errlen, "history socket %s is in use: stop whoever "
					 "serves it, or pick another path with --history-socket "
					 "PATH", path);
			goto fail;
		}
		/* a stale socket from an exporter that did not exit cleanly: nobody listens */
		if (lstat(path, &st) || !S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "cannot create the history socket: %s exists and is not "
				 "a socket: remove it, or pick another path with --history-socket "
				 "PATH", path);
			ret = -EEXIST;
			goto fail;
		}
		if (unlink(path) && errno != ENOENT) {
			ret = -errno;
			snprintf(err, errlen, "cannot replace the stale history socket %s: %s", path,
				 strerror(-ret));
			goto fail;
		}
		ret = bind_socket(srv, &sa, err, errlen);
		if (ret == -EADDRINUSE)
			snprintf(err, errlen, "history socket %s was taken by another process while "
				 "replacing its stale file", path);
	}
	if (ret)
		goto fail;
	/* what the umask gave, made explicit; and remembered, to remove only our own file */
	if (chmod(path, 0600) || stat(path, &st)) {
		ret = -errno;
		snprintf(err, errlen, "cannot set the history socket %s to mode 0600: %s", path,
			 strerror(-ret));
		unlink(path);
		goto fail;
	}
	srv->dev = st.st_dev;
	srv->ino = st.st_ino;
	if (listen(srv->lfd, 16)) {
		ret = -errno;
		snprintf(err, errlen, "cannot listen on the history socket %s: %s", path,
			 strerror(-ret));
		unlink(path);
		goto fail;
	}
	ret = -pthread_create(&srv->th, NULL, serve, srv);
	if (ret) {
		snprintf(err, errlen, "cannot start the history socket's thread: %s", strerror(-ret));
		unlink(path);
		goto fail;
	}
	srv->running = true;
	return 0;
fail:
	if (srv->lfd >= 0)
		close(srv->lfd);
	if (srv->stop_fd >= 0)
		close(srv->stop_fd);
	srv->lfd = srv->stop_fd = -1;
	return ret;
}

void fl_histsrv_stop(struct fl_histsrv *srv)
{
	uint64_t one = 1;
	struct stat st;

	if (!srv->running)
		return;
	if (write(srv->stop_fd, &one, sizeof(one)) == sizeof(one))
		pthread_join(srv->th, NULL);
	else
		pthread_cancel(srv->th), pthread_join(srv->th, NULL);
	srv->running = false;
	/* only our own file: a later exporter may have replaced it meanwhile */
	if (!lstat(srv->path, &st) && st.st_dev == srv->dev && st.st_ino == srv->ino)
		unlink(srv->path);
	close(srv->lfd);
	close(srv->stop_fd);
	srv->lfd = srv->stop_fd = -1;
}

/* ---- client ------------------------------------------------------------------------ */

static const char *START_HINT = "start `faultline exporter`";

int fl_hist_fetch(const char *path, const pid_t *pids, int npids, struct fl_hist_answer *a,
		  char *err, size_t errlen)
{
	struct sockaddr_un sa;
	char *req = NULL, *line = NULL;
	size_t reqlen = 0, cap = 0;
	FILE *rq, *in = NULL;
	int fd, ret, lines = 0;
	ssize_t n;

	memset(a, 0, sizeof(*a));
	if ((ret = make_addr(path, &sa, err, errlen)))
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot create a socket: %s", strerror(-ret));
		return ret;
	}
	set_timeouts(fd);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		if (ret == -ENOENT || ret == -ECONNREFUSED || ret == -ENOTDIR)
			snprintf(err, errlen, "daemon not running at %s (%s): %s", path,
				 ret == -ECONNREFUSED ? "a stale socket nobody listens on"
						      : "no such socket", START_HINT);
		else if (ret == -EACCES || ret == -EPERM)
			snprintf(err, errlen, "not allowed to connect to the daemon at %s (the "
				 "history socket is root-only): run with sudo", path);
		else if (ret == -EAGAIN || ret == -ETIMEDOUT)
			snprintf(err, errlen, "the daemon at %s did not accept the connection "
				 "within %d s (busy or hung)", path, IO_TIMEOUT_S);
		else
			snprintf(err, errlen, "cannot connect to the daemon at %s: %s", path,
				 strerror(-ret));
		if (ret == -EAGAIN)
			ret = -ETIMEDOUT;
		close(fd);
		return ret;
	}
	{
		/* The answer decides verdicts an operator acts on: only the
		 * exporter daemon (root, or this user's own) may give it. */
		struct ucred cred;
		socklen_t clen = sizeof(cred);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) ||
		    (cred.uid != 0 && cred.uid != geteuid())) {
			snprintf(err, errlen, "the process serving %s (pid %d) runs as uid %d, not root "
				 "or uid %u: its history is not trusted", path,
				 clen == sizeof(cred) ? (int)cred.pid : -1,
				 clen == sizeof(cred) ? (int)cred.uid : -1, (unsigned)geteuid());
			close(fd);
			return -EPERM;
		}
	}
	rq = open_memstream(&req, &reqlen);
	if (!rq) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	fl_hist_request_write(rq, pids, npids);
	if (fclose(rq) || (ret = write_all(fd, req, reqlen))) {
		ret = ret ? ret : -ENOMEM;
		snprintf(err, errlen, "sending the request to the daemon at %s failed: %s", path,
			 strerror(-ret));
		goto out;
	}
	shutdown(fd, SHUT_WR);
	in = fdopen(fd, "r");
	if (!in) {
		ret = -errno;
		snprintf(err, errlen, "reading from the daemon at %s: %s", path, strerror(-ret));
		goto out;
	}
	fd = -1;	/* the stream owns it now */
	errno = 0;
	while ((n = getline(&line, &cap, in)) > 0) {
		if (n > MAX_ANSWER_LINE || (ret = fl_hist_answer_parse_line(a, line))) {
			snprintf(err, errlen, "the daemon at %s sent a malformed answer (line %d: "
				 "%.60s)", path, lines + 1, line);
			ret = ret == -ENOMEM ? -ENOMEM : -EPROTO;
			goto out;
		}
		lines++;
		if (a->error[0]) {
			snprintf(err, errlen, "the daemon at %s refused: %s", path, a->error);
			ret = -EREMOTEIO;
			goto out;
		}
		if (a->complete)
			break;
	}
	if (!a->complete) {
		int e = errno;

		if (e == EAGAIN || e == EWOULDBLOCK)
			snprintf(err, errlen, "the daemon at %s did not answer within %d s", path,
				 IO_TIMEOUT_S);
		else
			snprintf(err, errlen, "the daemon at %s ended its answer early (%d line(s))",
				 path, lines);
		ret = e == EAGAIN || e == EWOULDBLOCK ? -ETIMEDOUT : -EPROTO;
		goto out;
	}
	ret = 0;
out:
	if (ret)
		fl_hist_answer_free(a);
	if (in)
		fclose(in);
	if (fd >= 0)
		close(fd);
	free(line);
	free(req);
	return ret;
}
