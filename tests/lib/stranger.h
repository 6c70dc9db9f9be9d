/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A stranger listening on a Unix socket path: a child that drops to uid and
 * gid 65534 (nobody), binds `path` (its directory must let it), and for
 * every connection writes `say` (NULL: nothing), reads until EOF and writes
 * the byte count (a long) to `report_fd` (-1: nowhere).  Returns the
 * child's pid once it listens; kill it with SIGKILL.  For tests of peers
 * that must refuse to talk to anyone but root or their own uid.
 */
#ifndef FAULTLINE_TEST_STRANGER_H
#define FAULTLINE_TEST_STRANGER_H

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static pid_t stranger_listen(const char *path, const char *say, int report_fd)
{
	int ready[2];
	char c;
	pid_t child;

	if (pipe(ready))
		return -1;
	child = fork();
	if (child == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int ls;

		if (setgid(65534) || setuid(65534))
			_exit(2);
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", path);
		ls = socket(AF_UNIX, SOCK_STREAM, 0);
		if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) || listen(ls, 4) ||
		    chmod(path, 0666) || write(ready[1], "r", 1) != 1)
			_exit(3);
		for (;;) {
			int cs = accept(ls, NULL, NULL);
			char buf[4096];
			long n = 0, k;

			if (cs >= 0 && say && write(cs, say, strlen(say)) < 0)
				_exit(4);
			shutdown(cs, SHUT_WR);
			while (cs >= 0 && (k = read(cs, buf, sizeof(buf))) > 0)
				n += k;
			if (report_fd >= 0 && write(report_fd, &n, sizeof(n)) != sizeof(n))
				_exit(5);
			close(cs);
		}
	}
	close(ready[1]);
	if (child < 0 || read(ready[0], &c, 1) != 1)
		child = -1;
	close(ready[0]);
	return child;
}

#endif
