// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* ADDR:PORT arguments of the listening commands (see netaddr.h). */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "netaddr.h"

int fl_netaddr_split(const char *arg, unsigned example_port, char *host, size_t hlen,
		     char *port, size_t plen, char *err, size_t errlen)
{
	const char *colon, *h = arg;
	size_t n;
	char *end;
	long p;

	if (*arg == '[') {
		const char *rb = strchr(arg, ']');

		if (!rb || rb[1] != ':') {
			snprintf(err, errlen, "expected [IPV6]:PORT, e.g. [::1]:%u", example_port);
			return -EINVAL;
		}
		h = arg + 1;
		n = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(arg, ':');
		if (!colon) {
			snprintf(err, errlen, "expected ADDR:PORT, e.g. 127.0.0.1:%u", example_port);
			return -EINVAL;
		}
		n = (size_t)(colon - arg);
		if (memchr(arg, ':', n)) {
			snprintf(err, errlen, "an IPv6 address goes in brackets: [::1]:%u",
				 example_port);
			return -EINVAL;
		}
	}
	if (!n || n >= hlen) {
		/* an empty address would mean "every address" to some tools: never here */
		snprintf(err, errlen, "%s; every address is 0.0.0.0:PORT or [::]:PORT",
			 n ? "address too long" : "no address before the port");
		return -EINVAL;
	}
	memcpy(host, h, n);
	host[n] = 0;
	errno = 0;
	p = strtol(colon + 1, &end, 10);
	/* a digit first: strtol alone would take a sign or leading blanks */
	if (!colon[1] || *end || errno || p < 0 || p > 65535 || !isdigit((unsigned char)colon[1])) {
		snprintf(err, errlen, "port '%s' is not a number from 0 to 65535", colon + 1);
		return -EINVAL;
	}
	snprintf(port, plen, "%ld", p);
	return 0;
}

/* The bound address as ADDR:PORT, with the port the kernel picked for :0. */
static void bound_name(int fd, char *where, size_t wlen)
{
	struct sockaddr_storage sa;
	socklen_t salen = sizeof(sa);
	char addr[INET6_ADDRSTRLEN];

	if (getsockname(fd, (struct sockaddr *)&sa, &salen))
		return;
	if (sa.ss_family == AF_INET6) {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&sa;

		inet_ntop(AF_INET6, &a6->sin6_addr, addr, sizeof(addr));
		snprintf(where, wlen, "[%s]:%u", addr, ntohs(a6->sin6_port));
	} else if (sa.ss_family == AF_INET) {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&sa;

		inet_ntop(AF_INET, &a4->sin_addr, addr, sizeof(addr));
		snprintf(where, wlen, "%s:%u", addr, ntohs(a4->sin_port));
	}
}

int fl_netaddr_listen(const char *spec, unsigned example_port, int backlog, int sock_flags,
		      char *where, size_t wlen, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	char host[256], port[8], why[160];
	int fd, ret, one = 1;

	ret = fl_netaddr_split(spec, example_port, host, sizeof(host), port, sizeof(port), why,
			       sizeof(why));
	if (ret) {
		snprintf(err, errlen, "invalid --listen '%s': %s", spec, why);
		return ret;
	}
	ret = getaddrinfo(host, port, &hints, &ai);
	if (ret) {
		snprintf(err, errlen, "invalid --listen '%s': cannot resolve '%s': %s", spec, host,
			 gai_strerror(ret));
		return -EINVAL;
	}
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | sock_flags, ai->ai_protocol);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "cannot create a socket for %s: %s", spec, strerror(-ret));
		freeaddrinfo(ai);
		return ret;
	}
	/* a restarted server must not wait out the last run's TIME_WAIT connections */
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) || listen(fd, backlog)) {
		ret = -errno;
		if (ret == -EADDRINUSE)
			snprintf(err, errlen, "cannot listen on %s: address already in use (another "
				 "process has that port): stop it, or pick another port with "
				 "--listen ADDR:PORT", spec);
		else if (ret == -EADDRNOTAVAIL)
			snprintf(err, errlen, "cannot listen on %s: no such address on this host: "
				 "pick one of its addresses with --listen ADDR:PORT", spec);
		else
			snprintf(err, errlen, "cannot listen on %s: %s", spec, strerror(-ret));
		close(fd);
		freeaddrinfo(ai);
		return ret;
	}
	freeaddrinfo(ai);
	snprintf(where, wlen, "%s", spec);
	bound_name(fd, where, wlen);
	return fd;
}
