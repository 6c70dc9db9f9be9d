/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * ADDR:PORT, the one parser: where a command listens (`faultline source
 * --listen`, `faultline exporter --listen`) and where the router connects
 * (`faultline target --source`, libfaultline's router): one syntax, one set
 * of messages.
 */
#ifndef FAULTLINE_NETADDR_H
#define FAULTLINE_NETADDR_H

#include <stddef.h>

/*
 * "HOST:PORT" or "[V6]:PORT" split for getaddrinfo (AI_NUMERICSERV): the
 * port must be a decimal number from 0 to 65535.  example_port is the
 * command's default port, quoted in the examples of err.  0, or -EINVAL
 * with a sentence in err.
 */
int fl_netaddr_split(const char *arg, unsigned example_port, char *host, size_t hlen,
		     char *port, size_t plen, char *err, size_t errlen);

/*
 * A TCP socket listening on arg (as above), SOCK_CLOEXEC plus sock_flags,
 * SO_REUSEADDR. Returns the fd, writing the bound ADDR:PORT (the kernel's
 * port for :0) into where; or -errno with a sentence in err that names the
 * address and what to do (in use, no such address, unresolvable).
 */
int fl_netaddr_listen(const char *arg, unsigned example_port, int backlog, int sock_flags,
		      char *where, size_t wlen, char *err, size_t errlen);

#endif
