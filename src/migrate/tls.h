/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * TLS 1.3 for the migration connection (GnuTLS, as QEMU's migration uses),
 * with QEMU's credential layouts so one set of files serves both:
 *   x509: a directory with ca-cert.pem, server-cert.pem, server-key.pem,
 *         client-cert.pem, client-key.pem (tls-creds-x509); both ends verify
 *         the other against the CA, the source also requires a client
 *         certificate; an optional name the peer's certificate must carry;
 *   PSK:  a keys.psk file of "username:hexkey" lines (tls-creds-psk).
 * Plaintext is allowed on loopback only, or when the operator says
 * --insecure.  The frames inside the TLS stream are the plain protocol's.
 *
 * A channel (struct fl_chan) is a connected non-blocking socket with or
 * without a TLS session; wire.c reads and writes it through fl_chan_io().
 */
#ifndef FAULTLINE_TLS_H
#define FAULTLINE_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "wire.h"

struct fl_tls_opts {
	const char *dir;	/* x509 credentials directory (QEMU layout) */
	const char *psk_file;	/* keys.psk: username:hexkey lines */
	const char *psk_user;	/* target: which line's user (default: the first) */
	const char *peer_name;	/* x509: a name the peer's certificate must carry */
	bool insecure;		/* plaintext allowed off loopback */
};

struct fl_tls;

/*
 * Load the credentials for one end (`server`: the source).  *out is NULL
 * when no credentials were asked for (plaintext).  Errors name the file.
 */
int fl_tls_load(const struct fl_tls_opts *o, bool server, struct fl_tls **out,
		char *err, size_t errlen);
void fl_tls_free(struct fl_tls *t);
/* "x509", "psk" or "plaintext", for messages. */
const char *fl_tls_kind(const struct fl_tls *t);

/*
 * Plaintext policy: 0 when `t` is set (TLS), when `addr` is a loopback
 * address, or with o->insecure (a warning is written to err then, return
 * 1); else -EPERM and a sentence saying what to pass.  `what` names the
 * address's role ("--listen 10.0.0.1:7411").
 */
int fl_tls_plain_check(const struct fl_tls *t, const struct fl_tls_opts *o,
		       const struct sockaddr *addr, const char *what, char *err, size_t errlen);

struct fl_chan {
	int fd;
	void *session;		/* gnutls_session_t, NULL: plaintext */
	bool handshaking;
	bool send_again;	/* the last record send was interrupted: resume it */
	char peer_id[160];	/* authenticated identity: certificate DN or PSK user */
	struct fl_io io;
};

/*
 * Start a channel on connected, non-blocking `fd` (not owned: the caller
 * closes it).  With `t` NULL it is plaintext and ready at once.  A client
 * verifies the server's certificate against `server_name` (the host it
 * connected to) unless the options name another.
 */
int fl_chan_start(struct fl_chan *c, struct fl_tls *t, int fd, bool server,
		  const char *server_name, char *err, size_t errlen);
/* Drive the handshake: 0 done, -EAGAIN again when fl_chan_events() fires,
 * other negative errno (with the reason) when the peer is refused. */
int fl_chan_handshake(struct fl_chan *c, char *err, size_t errlen);
/* poll() events the channel waits for during its handshake. */
short fl_chan_events(const struct fl_chan *c);
/* Decrypted bytes are waiting inside the TLS layer: poll() won't say so. */
bool fl_chan_buffered(const struct fl_chan *c);
/* End the session (no close of the fd). */
void fl_chan_end(struct fl_chan *c);

#endif
