// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* TLS on the migration connection (see tls.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#include "tls.h"

/* TLS 1.3 only; PSK with (EC)DHE first, for forward secrecy. */
#define PRIO_X509 "NORMAL:-VERS-ALL:+VERS-TLS1.3"
#define PRIO_PSK "NORMAL:-VERS-ALL:+VERS-TLS1.3:+ECDHE-PSK:+DHE-PSK:+PSK"
/* With AES instructions AES-GCM costs ~1 us a 4 KiB page here, software
 * ChaCha20-Poly1305 ~8 us, and GnuTLS picked ChaCha on this machine: the
 * fault path pays it twice per page.  Prefer AES-GCM where the CPU has AES. */
#define PRIO_AES_FIRST ":-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"

static bool cpu_has_aes(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	return __builtin_cpu_supports("aes");
#else
	return false;	/* leave GnuTLS's own order */
#endif
}

struct fl_tls {
	bool server;
	gnutls_certificate_credentials_t x509;
	gnutls_psk_server_credentials_t psk_server;
	gnutls_psk_client_credentials_t psk_client;
	char *peer_name;
};

static int file_ok(const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		int e = errno;

		snprintf(err, errlen, "TLS credentials: %s: %s", path, strerror(e));
		return -e;
	}
	return 0;
}

static int load_x509(struct fl_tls *t, const char *dir, char *err, size_t errlen)
{
	char ca[4096], cert[4096], key[4096];
	const char *role = t->server ? "server" : "client";
	int ret;

	snprintf(ca, sizeof(ca), "%s/ca-cert.pem", dir);
	snprintf(cert, sizeof(cert), "%s/%s-cert.pem", dir, role);
	snprintf(key, sizeof(key), "%s/%s-key.pem", dir, role);
	if ((ret = file_ok(ca, err, errlen)) || (ret = file_ok(cert, err, errlen)) ||
	    (ret = file_ok(key, err, errlen)))
		return ret;
	if (gnutls_certificate_allocate_credentials(&t->x509) < 0)
		return -ENOMEM;
	ret = gnutls_certificate_set_x509_trust_file(t->x509, ca, GNUTLS_X509_FMT_PEM);
	if (ret <= 0) {
		snprintf(err, errlen, "TLS credentials: %s: %s", ca,
			 ret ? gnutls_strerror(ret) : "no CA certificate in it");
		return -EINVAL;
	}
	ret = gnutls_certificate_set_x509_key_file(t->x509, cert, key, GNUTLS_X509_FMT_PEM);
	if (ret < 0) {
		snprintf(err, errlen, "TLS credentials: %s with %s: %s", cert, key, gnutls_strerror(ret));
		return -EINVAL;
	}
	return 0;
}

/* The client's key: the line of `user` (or the first line) of keys.psk. */
static int load_psk_client(struct fl_tls *t, const char *path, const char *user, char *err,
			   size_t errlen)
{
	FILE *f = fopen(path, "re");
	char line[1024];
	int ret = -ENOENT;

	if (!f) {
		ret = -errno;
		snprintf(err, errlen, "TLS PSK file %s: %s", path, strerror(-ret));
		return ret;
	}
	while (fgets(line, sizeof(line), f)) {
		char *colon = strchr(line, ':'), *end;
		gnutls_datum_t key;

		line[strcspn(line, "\r\n")] = 0;
		if (!colon || colon == line)
			continue;
		*colon = 0;
		if (user && strcmp(line, user))
			continue;
		key.data = (unsigned char *)colon + 1;
		key.size = (unsigned)strlen(colon + 1);
		for (end = colon + 1; *end && strchr("0123456789abcdefABCDEF", *end); end++)
			;
		if (*end || key.size < 32 || key.size % 2) {
			snprintf(err, errlen, "TLS PSK file %s: the key of \"%s\" is not hex of at least "
				 "16 bytes", path, line);
			ret = -EINVAL;
			break;
		}
		if (gnutls_psk_allocate_client_credentials(&t->psk_client) < 0) {
			ret = -ENOMEM;
			break;
		}
		ret = gnutls_psk_set_client_credentials(t->psk_client, line, &key, GNUTLS_PSK_KEY_HEX);
		if (ret < 0) {
			snprintf(err, errlen, "TLS PSK file %s: %s", path, gnutls_strerror(ret));
			ret = -EINVAL;
		}
		break;
	}
	fclose(f);
	if (ret == -ENOENT)
		snprintf(err, errlen, "TLS PSK file %s has no %s%s%s line of the form username:hexkey",
			 path, user ? "\"" : "", user ? user : "usable", user ? "\"" : "");
	return ret;
}

int fl_tls_load(const struct fl_tls_opts *o, bool server, struct fl_tls **out, char *err,
		size_t errlen)
{
	struct fl_tls *t;
	int ret;

	*out = NULL;
	if (!o->dir && !o->psk_file)
		return 0;
	if (o->dir && o->psk_file) {
		snprintf(err, errlen, "give either --tls-dir (x509) or --tls-psk, not both");
		return -EINVAL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->server = server;
	if (o->peer_name && !(t->peer_name = strdup(o->peer_name))) {
		free(t);
		return -ENOMEM;
	}
	if (o->dir) {
		ret = load_x509(t, o->dir, err, errlen);
	} else if (server) {
		ret = file_ok(o->psk_file, err, errlen);
		if (!ret && gnutls_psk_allocate_server_credentials(&t->psk_server) < 0)
			ret = -ENOMEM;
		if (!ret && gnutls_psk_set_server_credentials_file(t->psk_server, o->psk_file) < 0) {
			snprintf(err, errlen, "TLS PSK file %s: not username:hexkey lines", o->psk_file);
			ret = -EINVAL;
		}
	} else {
		ret = load_psk_client(t, o->psk_file, o->psk_user, err, errlen);
	}
	if (ret) {
		fl_tls_free(t);
		return ret;
	}
	*out = t;
	return 0;
}

void fl_tls_free(struct fl_tls *t)
{
	if (!t)
		return;
	if (t->x509)
		gnutls_certificate_free_credentials(t->x509);
	if (t->psk_server)
		gnutls_psk_free_server_credentials(t->psk_server);
	if (t->psk_client)
		gnutls_psk_free_client_credentials(t->psk_client);
	free(t->peer_name);
	free(t);
}

const char *fl_tls_kind(const struct fl_tls *t)
{
	return !t ? "plaintext" : t->x509 ? "x509" : "psk";
}

static bool loopback(const struct sockaddr *a)
{
	if (a->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)a)->sin_addr.s_addr) >> 24) == 127;
	if (a->sa_family == AF_INET6) {
		const struct in6_addr *x = &((const struct sockaddr_in6 *)a)->sin6_addr;

		if (IN6_IS_ADDR_LOOPBACK(x))
			return true;
		return IN6_IS_ADDR_V4MAPPED(x) && x->s6_addr[12] == 127;
	}
	return a->sa_family == AF_UNIX;
}

int fl_tls_plain_check(const struct fl_tls *t, const struct fl_tls_opts *o,
		       const struct sockaddr *addr, const char *what, char *err, size_t errlen)
{
	if (t || loopback(addr))
		return 0;
	if (o->insecure) {
		snprintf(err, errlen, "warning: %s is not on loopback and --insecure sends guest memory "
			 "unencrypted and unauthenticated: anyone on the path can read or forge it", what);
		return 1;
	}
	snprintf(err, errlen, "%s is not on loopback: guest memory must not cross a network in the "
		 "clear; pass --tls-dir DIR (x509: ca-cert.pem and the %s cert/key, QEMU's layout) or "
		 "--tls-psk FILE (keys.psk: username:hexkey), or --insecure to accept the risk", what,
		 "server/client");
	return -EPERM;
}

static ssize_t chan_read(void *ctx, void *buf, size_t len)
{
	struct fl_chan *c = ctx;
	ssize_t n;

	if (!c->session) {
		do
			n = read(c->fd, buf, len);
		while (n < 0 && errno == EINTR);
		return n < 0 ? (errno == EWOULDBLOCK ? -EAGAIN : -errno) : n;
	}
	do
		n = gnutls_record_recv(c->session, buf, len);
	while (n == GNUTLS_E_INTERRUPTED);
	if (n >= 0)
		return n;
	if (n == GNUTLS_E_AGAIN)
		return -EAGAIN;
	/* a peer that closes without close_notify is still a closed peer */
	if (n == GNUTLS_E_PREMATURE_TERMINATION)
		return 0;
	return -ECONNRESET;
}

static ssize_t chan_write(void *ctx, const void *buf, size_t len)
{
	struct fl_chan *c = ctx;
	ssize_t n;

	if (!c->session) {
		do
			n = send(c->fd, buf, len, MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
		return n < 0 ? (errno == EWOULDBLOCK ? -EAGAIN : -errno) : n;
	}
	/* GnuTLS wants an interrupted record finished before anything new:
	 * the writer still holds its bytes at the same place, so NULL/0
	 * resumes it and the count applies to the same buffer. */
	do
		n = c->send_again ? gnutls_record_send(c->session, NULL, 0) :
				    gnutls_record_send(c->session, buf, len);
	while (n == GNUTLS_E_INTERRUPTED);
	c->send_again = n == GNUTLS_E_AGAIN;
	if (n >= 0)
		return n;
	if (n == GNUTLS_E_AGAIN)
		return -EAGAIN;
	return -EPIPE;
}

int fl_chan_start(struct fl_chan *c, struct fl_tls *t, int fd, bool server,
		  const char *server_name, char *err, size_t errlen)
{
	gnutls_session_t s;
	const char *name;
	int ret;

	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->io = (struct fl_io){ c, chan_read, chan_write };
	if (!t)
		return 0;
	if (gnutls_init(&s, (server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK) < 0)
		return -ENOMEM;
	ret = gnutls_priority_set_direct(s, t->x509 ? (cpu_has_aes() ? PRIO_X509 PRIO_AES_FIRST : PRIO_X509) :
					 (cpu_has_aes() ? PRIO_PSK PRIO_AES_FIRST : PRIO_PSK), NULL);
	if (!ret && t->x509)
		ret = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, t->x509);
	else if (!ret)
		ret = gnutls_credentials_set(s, GNUTLS_CRD_PSK,
					     server ? (void *)t->psk_server : (void *)t->psk_client);
	if (ret < 0) {
		snprintf(err, errlen, "TLS session setup: %s", gnutls_strerror(ret));
		gnutls_deinit(s);
		return -EINVAL;
	}
	if (t->x509) {
		/* Both ends verify: the source asks for the target's certificate. */
		if (server)
			gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
		name = t->peer_name ? t->peer_name : server ? NULL : server_name;
		if (!server && name)
			gnutls_server_name_set(s, GNUTLS_NAME_DNS, name, strlen(name));
		gnutls_session_set_verify_cert(s, name, 0);
	}
	gnutls_transport_set_int(s, fd);
	c->session = s;
	c->handshaking = true;
	return 0;
}

/* Who authenticated: the certificate's DN, or the PSK user. */
static void note_peer(struct fl_chan *c)
{
	const gnutls_datum_t *certs;
	unsigned n = 0;
	const char *user;

	if (gnutls_auth_get_type(c->session) == GNUTLS_CRD_PSK) {
		user = gnutls_psk_server_get_username(c->session);
		snprintf(c->peer_id, sizeof(c->peer_id), "psk:%s", user ? user : "");
		return;
	}
	certs = gnutls_certificate_get_peers(c->session, &n);
	if (n) {
		gnutls_x509_crt_t crt;
		size_t len = sizeof(c->peer_id) - 5;

		if (gnutls_x509_crt_init(&crt) == 0) {
			memcpy(c->peer_id, "x509:", 5);
			if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) != 0 ||
			    gnutls_x509_crt_get_dn(crt, c->peer_id + 5, &len) != 0)
				snprintf(c->peer_id, sizeof(c->peer_id), "x509:?");
			gnutls_x509_crt_deinit(crt);
		}
	}
}

int fl_chan_handshake(struct fl_chan *c, char *err, size_t errlen)
{
	int ret;

	if (!c->handshaking)
		return 0;
	do
		ret = gnutls_handshake(c->session);
	while (ret == GNUTLS_E_INTERRUPTED);
	if (ret == GNUTLS_E_AGAIN)
		return -EAGAIN;
	if (ret < 0) {
		unsigned status = gnutls_session_get_verify_cert_status(c->session);
		gnutls_datum_t why = { 0 };

		if (ret == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR &&
		    gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &why, 0) == 0) {
			snprintf(err, errlen, "TLS handshake refused: the peer's certificate: %s", why.data);
			gnutls_free(why.data);
		} else {
			snprintf(err, errlen, "TLS handshake failed: %s", gnutls_strerror(ret));
		}
		return -EACCES;
	}
	c->handshaking = false;
	note_peer(c);
	return 0;
}

short fl_chan_events(const struct fl_chan *c)
{
	if (!c->session || !c->handshaking)
		return POLLIN;
	return gnutls_record_get_direction(c->session) ? POLLOUT : POLLIN;
}

bool fl_chan_buffered(const struct fl_chan *c)
{
	return c->session && !c->handshaking && gnutls_record_check_pending(c->session) > 0;
}

void fl_chan_end(struct fl_chan *c)
{
	if (c->session) {
		if (!c->handshaking)
			gnutls_bye(c->session, GNUTLS_SHUT_WR);	/* best effort, non-blocking */
		gnutls_deinit(c->session);
	}
	c->session = NULL;
	c->handshaking = false;
	c->send_again = false;
}
