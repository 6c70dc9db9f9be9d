/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The history socket: the exporter daemon serves its recent fault history
 * (history.h) on a local Unix stream socket, and `faultline stuck` asks it.
 * One connection, one question: the client writes one request line, the
 * server answers JSON lines and closes.  The socket file is mode 0600 (root
 * only: the history names processes and addresses).
 */
#ifndef FAULTLINE_HISTSOCK_H
#define FAULTLINE_HISTSOCK_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "history.h"

#define FL_HIST_SOCKET_DEFAULT "/run/faultline/history.sock"

struct fl_histsrv {
	char path[108];
	int lfd, stop_fd;
	dev_t dev;		/* the socket file we made: removed at stop only if still ours */
	ino_t ino;
	pthread_t th;
	bool running;
	/* the store, read under *mu (its writer holds *mu too) */
	const struct fl_hist *h;
	pthread_mutex_t *mu;
	uint64_t served, refused;
};

/*
 * Creates the socket at path (its parent directory too, one level) and
 * starts the thread that answers on it.  A socket file nobody listens on is
 * replaced; one somebody listens on is -EADDRINUSE.  Errors: -errno, with
 * what went wrong in err.
 */
int fl_histsrv_start(struct fl_histsrv *srv, const char *path, const struct fl_hist *h,
		     pthread_mutex_t *mu, char *err, size_t errlen);
/* Stops the thread, closes and removes the socket. */
void fl_histsrv_stop(struct fl_histsrv *srv);

/*
 * Asks the daemon at path for the history of pids.  0, or -errno with a
 * sentence in err: -ENOENT / -ECONNREFUSED nobody serves there, -EACCES not
 * allowed, -ETIMEDOUT no answer, -EPROTO a malformed or incomplete answer,
 * -EREMOTEIO the daemon answered with an error.
 */
int fl_hist_fetch(const char *path, const pid_t *pids, int npids, struct fl_hist_answer *a,
		  char *err, size_t errlen);

#endif
