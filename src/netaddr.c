// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* ADDR:PORT arguments of the listening commands (see netaddr.h). */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
		snprintf(err, errlen, "%s; to listen on every address say so: 0.0.0.0:PORT or [::]:PORT",
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
