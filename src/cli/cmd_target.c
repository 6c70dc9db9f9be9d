// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline target: the migration target's router as a program.  A VMM
 * hands over its guest memory and userfaultfd on a Unix socket
 * (fl_handover(), or the test VMM started with `-- CMD`), and every fault is
 * routed to the source (src/migrate/router.c).  Progress once a second; summary at
 * the end; --json for scripts.
 */
#include <argp.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "commands.h"
#include "faultline/faultline.h"
#include "handover.h"

#define DEFAULT_VMM_SOCKET "/run/faultline/target.sock"
#define DEFAULT_SOURCE "127.0.0.1:7411"

static volatile sig_atomic_t target_stop_signal;

struct target_ctx {
	const char *source;
	const char *vmm_socket;
	const char *journal;
	uint64_t journal_session;
	const char *tls_dir, *tls_psk, *tls_psk_user, *tls_name;
	bool insecure;
	bool json;
	int accept_timeout_ms;
	unsigned interval_ms;		/* progress every this many ms */
	char **launch;			/* argv of a VMM to start, or NULL */
	pid_t child;
	struct fl_handover_recv ho;
	struct fl_router *router;
	uint64_t start_ns;
};

static const char doc[] =
	"Route a migrating VM's userfaults to its source, replicating poison.\n\n"
	"A VMM hands over its guest memory and userfaultfd on a Unix socket (libfaultline's\n"
	"fl_handover(), include/faultline/faultline.h); the VMM keeps its own userfaultfd, so if\n"
	"this router dies the guest freezes instead of reading zeros, and a restarted router\n"
	"(same --journal) takes over.  Pages poisoned on the source are poisoned here with\n"
	"UFFDIO_POISON and journaled first: once poisoned, never un-poisoned.  A journal is\n"
	"applied only once its migration is confirmed (the source's Hello names the same\n"
	"session, or --journal-session does): a journal left from another migration poisons\n"
	"nothing and is refused.\n\n"
	"The source connection is TLS 1.3 (GnuTLS) with QEMU's credentials: --tls-dir DIR\n"
	"(ca-cert.pem, client-cert.pem, client-key.pem; the source's certificate must name the\n"
	"host in --source, or --tls-name) or --tls-psk FILE (keys.psk: username:hexkey).\n"
	"Without them the source must be on loopback, or --insecure says to accept the risk.\n\n"
	"With `-- CMD ARGS`, the router starts the VMM itself and passes the socket path in\n"
	"FAULTLINE_ROUTER_SOCKET.\n\n"
	"EXAMPLES:\n"
	"  faultline target --source 10.0.0.1:7411 --journal /var/lib/vm1.poison\n"
	"  faultline target --journal /var/lib/vm1.poison --journal-session 9f3c0e5a12b4d677\n"
	"  faultline target --source 10.0.0.1:7411 --tls-dir /etc/pki/qemu   # x509, QEMU's files\n"
	"  faultline target --source 10.0.0.1:7411 --tls-psk /etc/faultline/keys.psk\n"
	"  faultline target --vmm-socket /tmp/r.sock -- build/migrate-vm --role target --mode minor\n"
	"  faultline target --source 127.0.0.1:7411 --json > progress.jsonl";

static const struct argp_option options[] = {
	{ "source", 's', "HOST:PORT", 0, "faultline source to fetch pages from (default " DEFAULT_SOURCE ")", 0 },
	{ "vmm-socket", 'u', "PATH", 0, "Unix socket the VMM hands over on (default " DEFAULT_VMM_SOCKET ")", 0 },
	{ "journal", 'j', "FILE", 0, "poison journal: reloaded on restart (default: none, not restart-safe)", 0 },
	{ "journal-session", 'S', "HEX", 0, "the migration session the journal belongs to (the "
	  "source prints it): its poison is applied at once, before the source is reached", 0 },
	{ "tls-dir", 'T', "DIR", 0, "TLS with x509 credentials in DIR (QEMU's layout: ca-cert.pem, "
	  "client-cert.pem, client-key.pem)", 0 },
	{ "tls-psk", 'P', "FILE", 0, "TLS with a pre-shared key from FILE (QEMU's keys.psk: "
	  "username:hexkey lines)", 0 },
	{ "tls-psk-user", 1001, "NAME", 0, "the keys.psk line to use (default: the first)", 0 },
	{ "tls-name", 1002, "NAME", 0, "the name the source's certificate must carry (default: the "
	  "host in --source)", 0 },
	{ "insecure", 1003, NULL, 0, "allow a plaintext connection to a source off loopback "
	  "(guest memory readable and forgeable on the path)", 0 },
	{ "json", 'J', NULL, 0, "JSON lines on stdout instead of the progress line", 0 },
	{ "accept-timeout", 't', "SECONDS", 0, "give up if no VMM hands over within this time (default: wait)", 0 },
	{ "interval", 'i', "MS", 0, "progress every MS milliseconds (default 1000)", 0 },
	{ 0 }
};

static error_t parse_opt(int key, char *arg, struct argp_state *state)
{
	struct target_ctx *c = state->input;
	char *end;

	switch (key) {
	case 's':
		c->source = arg;
		break;
	case 'u':
		c->vmm_socket = arg;
		break;
	case 'j':
		c->journal = arg;
		break;
	case 'S':
		errno = 0;
		c->journal_session = strtoull(arg, &end, 16);
		if (errno || end == arg || *end || !c->journal_session)
			argp_error(state, "--journal-session wants the source's session id in hex "
				   "(16 digits, not 0), not \"%s\"", arg);
		break;
	case 'T':
		c->tls_dir = arg;
		break;
	case 'P':
		c->tls_psk = arg;
		break;
	case 1001:
		c->tls_psk_user = arg;
		break;
	case 1002:
		c->tls_name = arg;
		break;
	case 1003:
		c->insecure = true;
		break;
	case 'J':
		c->json = true;
		break;
	case 't': {
		double s = strtod(arg, &end);

		if (end == arg || *end || s <= 0 || s > 86400)
			argp_error(state, "--accept-timeout wants seconds (0 < s <= 86400), not \"%s\"", arg);
		c->accept_timeout_ms = (int)(s * 1000);
		break;
	}
	case 'i': {
		long ms = strtol(arg, &end, 10);

		if (end == arg || *end || ms < 10 || ms > 3600000)
			argp_error(state, "--interval wants milliseconds (10..3600000), not \"%s\"", arg);
		c->interval_ms = (unsigned)ms;
		break;
	}
	case ARGP_KEY_ARG:
		c->launch = &state->argv[state->next - 1];
		state->next = state->argc;
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

static void on_signal(int sig)
{
	target_stop_signal = sig;
}

/* The VMM zaps its own anonymous memory; the router keeps reading UFFD
 * events while it waits (the VMM's madvise raises UFFD_EVENT_REMOVE). */
static int zap_via_vmm(void *ctx, void *addr, uint64_t len)
{
	struct target_ctx *c = ctx;

	for (unsigned i = 0; i < c->ho.nregions; i++) {
		const struct fl_region *g = &c->ho.regions[i];
		uintptr_t a = (uintptr_t)addr, b = (uintptr_t)g->base;

		if (a >= b && a - b < g->length)
			return fl_handover_zap_request(&c->ho, i, (a - b) / c->ho.page_size,
						       len / c->ho.page_size);
	}
	return -ENOENT;
}

static int zap_finish(void *ctx)
{
	struct target_ctx *c = ctx;
	struct fl_handover_zap_result res;
	int ret = fl_handover_zap_reply(&c->ho, 0, &res);

	if (ret <= 0)
		return ret;
	return res.err ? res.err : 1;
}

static void print_stats(struct target_ctx *c, const char *event, bool final)
{
	struct fl_router_stats st;
	double secs = (double)(fl_now_ns() - c->start_ns) / 1e9;

	fl_router_get_stats(c->router, &st);
	if (c->json) {
		printf("{\"event\":\"%s\",\"elapsed_s\":%.3f,\"total_pages\":%" PRIu64
		       ",\"faults\":%" PRIu64 ",\"fault_messages\":%" PRIu64 ",\"remote_requests\":%" PRIu64 ",\"state_queries\":%" PRIu64
		       ",\"copies\":%" PRIu64 ",\"zeropages\":%" PRIu64 ",\"continues\":%" PRIu64
		       ",\"poisons\":%" PRIu64 ",\"poisons_late\":%" PRIu64 ",\"wakes\":%" PRIu64
		       ",\"pages_received\":%" PRIu64 ",\"bytes_received\":%" PRIu64
		       ",\"map_pages_known\":%" PRIu64 ",\"eagain\":%" PRIu64 ",\"enoent\":%" PRIu64
		       ",\"eexist\":%" PRIu64 ",\"events\":%" PRIu64 ",\"reconnects\":%" PRIu64
		       ",\"journal_loaded\":%" PRIu64 ",\"refused_data\":%" PRIu64 ",\"kept_guest\":%" PRIu64
		       ",\"stale_dropped\":%" PRIu64 ",\"resyncs\":%" PRIu64 ",\"pending\":%" PRIu64
		       ",\"connected\":%s,\"source_end\":%s,\"finished\":%s,\"avg_fault_ns\":%" PRIu64 "}\n",
		       event, secs, st.total_pages, st.faults, st.fault_messages, st.remote_requests, st.state_queries,
		       st.copies, st.zeropages, st.continues, st.poisons, st.poisons_late, st.wakes,
		       st.pages_received, st.bytes_received, st.map_pages_known, st.eagain, st.enoent,
		       st.eexist, st.events, st.reconnects, st.journal_loaded, st.refused_data,
		       st.kept_guest, st.stale_dropped, st.resyncs, st.pending, st.connected ? "true" : "false", st.source_end ? "true" : "false",
		       st.finished ? "true" : "false", st.latency_n ? st.latency_sum_ns / st.latency_n : 0);
		fflush(stdout);
		return;
	}
	double mib = (double)st.bytes_received / (1 << 20);
	double rate = secs > 0 ? mib / secs : 0;

	fprintf(stderr, "%starget %6.1fs | faults %" PRIu64 " (remote %" PRIu64 ") | received %" PRIu64
		" pages %.1f MiB (%.1f MiB/s) | poison %" PRIu64 " (late %" PRIu64 ") | map %3.0f%% | waiting %"
		PRIu64 "%s%s", final ? "" : "\r", secs, st.faults, st.remote_requests, st.pages_received,
		mib, rate, st.poisons, st.poisons_late,
		st.total_pages ? 100.0 * (double)st.map_pages_known / (double)st.total_pages : 0.0,
		st.pending, st.connected ? "" : " | source: connecting",
		final ? "\n" : "   ");
	if (final) {
		fprintf(stderr, "summary: %" PRIu64 " pages in %u region(s): %" PRIu64 " copied, %" PRIu64
			" continued, %" PRIu64 " zero-filled, %" PRIu64 " poisoned (%" PRIu64
			" late, %" PRIu64 " from the journal); %" PRIu64 " faults, avg %.1f us; %"
			PRIu64 " reconnects; EAGAIN %" PRIu64 " ENOENT %" PRIu64 " EEXIST %" PRIu64
			"; %" PRIu64 " UFFD events\n",
			st.total_pages, c->ho.nregions, st.copies, st.continues, st.zeropages, st.poisons,
			st.poisons_late, st.journal_loaded, st.faults,
			st.latency_n ? (double)st.latency_sum_ns / (double)st.latency_n / 1e3 : 0.0,
			st.reconnects, st.eagain, st.enoent, st.eexist, st.events);
	}
}

static void print_note(struct target_ctx *c, const char *text)
{
	if (!c->json) {
		fprintf(stderr, "\nfaultline target: %s\n", text);
		return;
	}
	fputs("{\"event\":\"router_note\",\"text\":\"", stdout);
	for (const char *p = text; *p; p++) {
		if (*p == '"' || *p == '\\')
			putchar('\\');
		if ((unsigned char)*p >= 0x20)
			putchar(*p);
	}
	fputs("\"}\n", stdout);
	fflush(stdout);
}

static int launch_vmm(struct target_ctx *c)
{
	c->child = fork();
	if (c->child < 0)
		return -errno;
	if (c->child == 0) {
		setenv("FAULTLINE_ROUTER_SOCKET", c->vmm_socket, 1);
		execvp(c->launch[0], c->launch);
		fprintf(stderr, "faultline target: cannot run %s: %s\n", c->launch[0], strerror(errno));
		_exit(127);
	}
	return 0;
}

/* The VMM closing its end of the handover socket means it is gone. */
static bool vmm_gone(const struct target_ctx *c)
{
	struct pollfd p = { .fd = c->ho.sock, .events = POLLRDHUP };

	return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

/* Wait for the handover in short slices, so a signal or a launched VMM
 * that died first ends the wait with a clear message. */
static int accept_vmm(struct target_ctx *c, int lsock, char *err, size_t errlen)
{
	uint64_t deadline = c->accept_timeout_ms ? fl_now_ns() + (uint64_t)c->accept_timeout_ms * 1000000ull : 0;

	for (;;) {
		int status, ret = fl_handover_accept(lsock, &c->ho, 250, err, errlen);

		if (ret != -ETIMEDOUT && ret != -EINTR)
			return ret;
		if (target_stop_signal) {
			snprintf(err, errlen, "interrupted while waiting for a VMM handover on %s", c->vmm_socket);
			return -EINTR;
		}
		if (c->child > 0 && waitpid(c->child, &status, WNOHANG) == c->child) {
			snprintf(err, errlen, "the VMM (%s, pid %d) exited with status %d before handing over",
				 c->launch[0], c->child, WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
			c->child = 0;
			return -ECHILD;
		}
		if (deadline && fl_now_ns() >= deadline) {
			snprintf(err, errlen, "no VMM handed over on %s within %.1f s", c->vmm_socket,
				 c->accept_timeout_ms / 1e3);
			return -ETIMEDOUT;
		}
	}
}

static int run(struct target_ctx *c)
{
	char err[256] = "";
	struct fl_router_config cfg = {
		.source = c->source,
		.journal = c->journal,
		.journal_session = c->journal_session,
		.tls_dir = c->tls_dir,
		.tls_psk = c->tls_psk,
		.tls_psk_user = c->tls_psk_user,
		.tls_name = c->tls_name,
		.insecure = c->insecure,
		.zap = zap_via_vmm,
		.zap_finish = zap_finish,
		.zap_ctx = c,
	};
	uint64_t last = 0;
	char last_note[256] = "";
	int lsock, ret;

	/* Refuse a bad source address or credentials before a VMM hands its
	 * guest over (the guest would freeze with nobody to serve it). */
	ret = fl_router_check_source(&cfg, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "faultline target: %s\n", err);
		return ret;
	}
	lsock = fl_handover_listen(c->vmm_socket, err, sizeof(err));
	if (lsock < 0) {
		fprintf(stderr, "faultline target: %s\n", err);
		return lsock;
	}
	if (c->launch) {
		ret = launch_vmm(c);
		if (ret) {
			fprintf(stderr, "faultline target: cannot start the VMM: %s\n", strerror(-ret));
			goto out_listen;
		}
	}
	if (!c->json)
		fprintf(stderr, "Waiting for a VMM handover on %s\n", c->vmm_socket);
	ret = accept_vmm(c, lsock, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "faultline target: %s\n", err);
		goto out_listen;
	}
	cfg.zap_wait_fd = c->ho.sock;
	cfg.mode = c->ho.mode;
	cfg.uffd = c->ho.uffd;
	cfg.regions = c->ho.regions;
	cfg.nregions = c->ho.nregions;
	cfg.vmm_pid = c->ho.pid;
	ret = fl_router_create(&cfg, &c->router, err, sizeof(err));
	if (ret) {
		fprintf(stderr, "faultline target: %s\n", err);
		goto out_ho;
	}
	if (*err)
		fprintf(stderr, "faultline target: %s\n", err);	/* --insecure's warning */
	c->start_ns = fl_now_ns();
	if (c->json)
		printf("{\"event\":\"router_start\",\"vmm_pid\":%d,\"mode\":\"%s\",\"regions\":%u,\"source\":\"%s\"}\n",
		       c->ho.pid, c->ho.mode == FL_MODE_MINOR ? "minor" : "missing", c->ho.nregions, c->source);
	else
		fprintf(stderr, "Routing VMM pid %d (%s mode, %u region(s)) to source %s\n", c->ho.pid,
			c->ho.mode == FL_MODE_MINOR ? "minor" : "missing", c->ho.nregions, c->source);
	fflush(stdout);
	for (;;) {
		ret = fl_router_step(c->router, c->interval_ms < 200 ? (int)c->interval_ms : 200);
		if (ret)
			break;
		/* Why it reconnects (refused TLS, lost connection, ...): said once
		 * each time it changes, not only at the end. */
		if (strcmp(last_note, fl_router_error(c->router))) {
			snprintf(last_note, sizeof(last_note), "%s", fl_router_error(c->router));
			if (*last_note)
				print_note(c, last_note);
		}
		if (target_stop_signal) {
			ret = -EINTR;
			break;
		}
		if (vmm_gone(c)) {
			ret = -ESRCH;
			break;
		}
		if (fl_now_ns() - last >= (uint64_t)c->interval_ms * 1000000ull) {
			last = fl_now_ns();
			print_stats(c, "router_progress", false);
		}
	}
	print_stats(c, "router_summary", true);
	if (ret == 1) {
		ret = 0;
	} else if (ret == -EINTR) {
		fprintf(stderr, "faultline target: interrupted; the guest stays frozen on missing pages "
			"until a router takes over again\n");
	} else if (ret == -ESRCH) {
		fprintf(stderr, "faultline target: the VMM (pid %d) closed the handover socket; stopping\n",
			c->ho.pid);
	} else {
		fprintf(stderr, "faultline target: %s\n", fl_router_error(c->router));
	}
	fl_router_destroy(c->router);
out_ho:
	fl_handover_close(&c->ho);
out_listen:
	close(lsock);
	unlink(c->vmm_socket);
	if (c->child > 0) {
		int status;

		/* The launched VMM finishes its own run; wait for its verdict. */
		if (waitpid(c->child, &status, 0) == c->child && ret == 0 &&
		    !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
			fprintf(stderr, "faultline target: the VMM exited with status %d\n",
				WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
			ret = -ECHILD;
		}
	}
	return ret;
}

int fl_cmd_target(int argc, char **argv)
{
	struct target_ctx c = {
		.source = DEFAULT_SOURCE,
		.vmm_socket = DEFAULT_VMM_SOCKET,
		.interval_ms = 1000,
		.ho = { .sock = -1, .uffd = -1 },
	};
	const struct argp argp = { options, parse_opt, "[-- VMM-COMMAND [ARGS...]]", doc, NULL, NULL, NULL };
	struct sigaction sa = { .sa_handler = on_signal };

	if (argp_parse(&argp, argc, argv, ARGP_IN_ORDER, NULL, &c))
		return -EINVAL;
	if (geteuid() != 0) {
		fprintf(stderr, "faultline target: needs root (userfaultfd of another process, "
			"/run/faultline); run it with sudo\n");
		return -EPERM;
	}
	if (!strncmp(c.vmm_socket, "/run/faultline/", 15))
		mkdir("/run/faultline", 0700);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	return run(&c);
}
