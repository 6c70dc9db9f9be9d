// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: serve a running process's memory, dirty map and poison
 * to a migration target (the engine is src/migrate/source.c), or, as a client of
 * its control socket, inject poison / ask for the switchover / show status.
 */
#include <argp.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "commands.h"
#include "netaddr.h"
#include "source.h"

enum {
	OPT_PRECOPY_MS = 1000,
	OPT_ON_COMMAND,
	OPT_NO_STOP,
	OPT_KEEP,
	OPT_DIRTY,
	OPT_INJECT,
	OPT_STATUS,
	OPT_SWITCH_NOW,
	OPT_BANDWIDTH,
	OPT_SESSION,
	OPT_TLS_DIR,
	OPT_TLS_PSK,
	OPT_TLS_NAME,
	OPT_INSECURE,
	OPT_VMM_SOCKET,
};

struct source_cli {
	struct fl_source_config cfg;
	bool have_pid;
	const char *inject;	/* client mode */
	bool status, switch_now;
};

static const char source_doc[] =
	"Serve a running process's memory to a `faultline target`, replicating poison.\n"
	"\v"
	"The source side of poison-preserving postcopy. It serves the memory of a\n"
	"running process or VMM (--pid and one --range per guest memory region, or\n"
	"--vmm-socket PATH where a VMM hands over its userfaultfd and one memfd per\n"
	"region with fl_handover(), include/faultline/faultline.h) to one target\n"
	"at a time over TCP (loopback unless --listen says otherwise; a\n"
	"target that lost its connection reconnects and resumes). The conversation:\n"
	"precopy of every non-zero page if the target asks for it (MINOR mode), the\n"
	"switchover (the process is stopped with SIGSTOP and stays stopped: it has\n"
	"migrated; a run that ends before any target was told to switch over resumes\n"
	"it with SIGCONT), the state of every page (clean, dirty since precopy, zero,\n"
	"poisoned) streamed in the background, page requests answered first, and\n"
	"background pushes of every page the target lacks.\n"
	"\n"
	"Dirty pages (--dirty auto): userfaultfd write-protection in async mode\n"
	"through the VMM's own userfaultfd where it has UFFD_FEATURE_WP_ASYNC (the\n"
	"written pages are read with PAGEMAP_SCAN: a round costs what was written,\n"
	"not the VM's size), else the pagemap soft-dirty bit after clear_refs where\n"
	"the kernel has it (CONFIG_MEM_SOFT_DIRTY), else a 64-bit hash of each page\n"
	"as precopy sent it, compared at switchover. With --vmm-socket auto means\n"
	"hashes: the memfds may be written through other mappings. The start line\n"
	"(JSON: source_ready's dirty_tracking and dirty_tracking_why) says which one\n"
	"and why; the write-protection is removed at switchover or exit.\n"
	"\n"
	"Poison is learnt from: pages injected through the control socket (the page\n"
	"is made really poisoned in the process: punched out of its memfd, then\n"
	"UFFDIO_POISON through the process's own userfaultfd, so guest memory must\n"
	"be a shared memfd registered with a userfaultfd); kpageflags HWPOISON of\n"
	"the mapped frames, re-read every second where the kernel handles memory\n"
	"failures at all (this kernel has no ras:memory_failure_event tracepoint,\n"
	"so this poll is the memory-failure event stream); UFFDIO_POISON markers\n"
	"placed by anyone, checked every second too; and memfd pages whose read\n"
	"fails with EIO (shmem's report of a poisoned page). Each is pushed to the\n"
	"target at once (PoisonUpdate); data is never sent for a poisoned page. A\n"
	"page that merely can't be read is not poison: PROT_NONE pages are read\n"
	"through /proc/PID/mem, and a page unreadable even there (memfd_secret)\n"
	"ends the run with an error naming it. Device memory (VM_IO/VM_PFNMAP)\n"
	"can't be served and is refused at start.\n"
	"\n"
	"Control socket (--control PATH, mode 0600), one command a line:\n"
	"  poison REGION PAGE[,PAGE|FIRST-LAST...]  -> \"ok REGION PAGE\" a page\n"
	"  switchover                               -> \"ok switchover ...\"\n"
	"  status                                   -> one JSON line\n"
	"\n"
	"Progress goes to stderr once a second (pages sent, requests served, poison,\n"
	"time left) with a summary at the end; --json prints the same as JSON lines\n"
	"on stdout, each with \"event\": source_ready, target_connected,\n"
	"precopy_done, switchover, poison, source_progress, end_sent, target_end,\n"
	"target_disconnected, protocol_error, source_summary. If stdout's reader goes\n"
	"away the events stop (said once on stderr) and serving goes on. Exit status\n"
	"0 once the target reported every page placed. Needs root.\n"
	"\n"
	"EXAMPLES:\n"
	"  faultline source --pid 4242 --range 0x7f1200000000:1G\n"
	"  faultline source --pid 4242 --range 0x7f1200000000:512M --range 0x7f1300000000:512M \\\n"
	"      --listen 0.0.0.0:7411 --control /run/fl-src.sock --precopy-ms 2000\n"
	"  faultline source --pid 4242 --range 0x7f1200000000:1G --control /run/fl-src.sock \\\n"
	"      --switchover-on-command --json > source.jsonl\n"
	"  faultline source --vmm-socket /run/fl-vmm.sock --control /run/fl-src.sock\n"
	"      # VMM side: fl_handover(\"/run/fl-vmm.sock\", uffd, FL_MODE_MISSING, rg, n, ..)\n"
	"  faultline source --control /run/fl-src.sock --inject 0:17,40-43   # poison pages\n"
	"  faultline source --control /run/fl-src.sock --switchover-now\n"
	"  faultline source --control /run/fl-src.sock --status\n"
	"  faultline source --pid 4242 --range 0x7f1200000000:1G --listen 10.0.0.1:7411 \\\n"
	"      --tls-dir /etc/pki/qemu     # x509 with QEMU's files; or --tls-psk keys.psk\n"
	"  faultline source --pid 4242 --range 0x7f1200000000:1G --session 9f3c0e5a12b4d677\n"
	"      # a restarted source, same migration\n";

static const struct argp_option source_options[] = {
	{ NULL, 0, NULL, 0, "Serving:", 1 },
	{ "pid", 'p', "PID", 0, "The process whose memory is served (a VMM, a guest)", 1 },
	{ "range", 'r', "ADDR:LEN", 0,
	  "One guest memory region in that process: ADDR hex (0x...) or decimal, LEN in bytes "
	  "or with K, M, G; page aligned, mapped (repeatable; region ids in this order)", 1 },
	{ "vmm-socket", OPT_VMM_SOCKET, "PATH", 0,
	  "Instead of --pid/--range: wait on this Unix socket for one VMM's fl_handover() and "
	  "serve its regions (in its order) from the memfds it passes; every region needs one; "
	  "the VMM is stopped at switchover and keeps the connection open", 1 },
	{ "listen", 'L', "ADDR:PORT", 0,
	  "Where the target connects (default " FL_SOURCE_DEFAULT_LISTEN "; [::1]:PORT for IPv6, "
	  "port 0 picks a free one)", 1 },
	{ "control", 'C', "PATH", 0, "Control socket for poison injection, switchover, status", 1 },
	{ "precopy-ms", OPT_PRECOPY_MS, "MS", 0,
	  "Switch over MS ms after the target's Hello (default: as soon as precopy is done, or "
	  "at once for a target that wants no precopy)", 1 },
	{ "switchover-on-command", OPT_ON_COMMAND, NULL, 0,
	  "Switch over only when the control socket says \"switchover\"", 1 },
	{ "no-stop", OPT_NO_STOP, NULL, 0,
	  "Don't SIGSTOP the process at switchover (its later writes are then missed)", 1 },
	{ "keep-serving", OPT_KEEP, NULL, 0,
	  "After the target finished, keep serving (reconnects, injection) until SIGINT", 1 },
	{ "dirty", OPT_DIRTY, "auto|wp|soft-dirty|hash", 0,
	  "Dirty tracking (default auto: wp where the VMM's userfaultfd has WP_ASYNC, else "
	  "soft-dirty where it works, else hashes)", 1 },
	{ "session", OPT_SESSION, "HEX", 0,
	  "The migration's session id (default: a random one, printed at start). A source "
	  "restarted mid-migration needs the one its predecessor printed: the target's journal "
	  "and router accept no other", 1 },
	{ "max-bandwidth", OPT_BANDWIDTH, "MIB/S", 0,
	  "Cap precopy and background pushes at MIB/S MiB/s (answers to page requests are "
	  "never held back; default: no cap)", 1 },
	{ "json", 'j', NULL, 0, "JSON lines on stdout instead of progress text", 1 },
	{ "tls-dir", OPT_TLS_DIR, "DIR", 0, "TLS 1.3 with x509 credentials in DIR (QEMU's "
	  "tls-creds-x509 layout: ca-cert.pem, server-cert.pem, server-key.pem); the target must "
	  "present a certificate of the same CA", 1 },
	{ "tls-psk", OPT_TLS_PSK, "FILE", 0, "TLS 1.3 with pre-shared keys from FILE (QEMU's "
	  "keys.psk: username:hexkey lines)", 1 },
	{ "tls-name", OPT_TLS_NAME, "NAME", 0, "x509: the name the target's certificate must carry",
	  1 },
	{ "insecure", OPT_INSECURE, NULL, 0, "allow plaintext on a --listen address off loopback "
	  "(anyone on the path can read guest memory or pose as the target)", 1 },
	{ NULL, 0, NULL, 0, "Client of a running source's control socket (with --control):", 2 },
	{ "inject", OPT_INJECT, "REGION:PAGE[,PAGE...]", 0,
	  "Poison these pages in the served process (page ranges FIRST-LAST allowed)", 2 },
	{ "switchover-now", OPT_SWITCH_NOW, NULL, 0, "Ask for the switchover", 2 },
	{ "status", OPT_STATUS, NULL, 0, "Print the source's status (one JSON line)", 2 },
	{ 0 },
};

static error_t source_parse(int key, char *arg, struct argp_state *state)
{
	struct source_cli *c = state->input;
	char err[200];
	char *end;
	long long v;

	switch (key) {
	case 'p':
		errno = 0;
		v = strtoll(arg, &end, 10);
		if (errno || end == arg || *end || v < 1 || v > INT_MAX)
			argp_error(state, "invalid --pid '%s' (a positive number)", arg);
		c->cfg.pid = (pid_t)v;
		c->have_pid = true;
		break;
	case 'r':
		if (c->cfg.nranges == FL_WIRE_MAX_REGIONS)
			argp_error(state, "at most %d --range options", FL_WIRE_MAX_REGIONS);
		if (fl_source_parse_range(arg, &c->cfg.ranges[c->cfg.nranges], err, sizeof(err)))
			argp_error(state, "invalid --range '%s': %s", arg, err);
		c->cfg.nranges++;
		break;
	case 'L': {
		char host[256], port[8];

		if (fl_netaddr_split(arg, 7411, host, sizeof(host), port, sizeof(port), err,
					     sizeof(err)))
			argp_error(state, "invalid --listen '%s': %s", arg, err);
		c->cfg.listen = arg;
		break;
	}
	case OPT_VMM_SOCKET:
		if (!*arg)
			argp_error(state, "--vmm-socket needs a path");
		c->cfg.vmm_socket = arg;
		break;
	case 'C':
		if (!*arg)
			argp_error(state, "--control needs a path");
		c->cfg.control = arg;
		break;
	case OPT_PRECOPY_MS:
		errno = 0;
		v = strtoll(arg, &end, 10);
		if (errno || end == arg || *end || v < 0 || v > 86400000)
			argp_error(state, "invalid --precopy-ms '%s' (milliseconds, 0..86400000)", arg);
		c->cfg.precopy_ms = v;
		break;
	case OPT_ON_COMMAND:
		c->cfg.switchover_on_command = true;
		break;
	case OPT_NO_STOP:
		c->cfg.no_stop = true;
		break;
	case OPT_KEEP:
		c->cfg.keep_serving = true;
		break;
	case OPT_TLS_DIR:
		c->cfg.tls.dir = arg;
		break;
	case OPT_TLS_PSK:
		c->cfg.tls.psk_file = arg;
		break;
	case OPT_TLS_NAME:
		c->cfg.tls.peer_name = arg;
		break;
	case OPT_INSECURE:
		c->cfg.tls.insecure = true;
		break;
	case OPT_SESSION:
		errno = 0;
		c->cfg.session = strtoull(arg, &end, 16);
		if (errno || end == arg || *end || !c->cfg.session)
			argp_error(state, "invalid --session '%s' (hex, not 0; the id a source printed)", arg);
		break;
	case OPT_BANDWIDTH: {
		double mib = strtod(arg, &end);

		if (end == arg || *end || !(mib > 0) || mib > 1e6)
			argp_error(state, "invalid --max-bandwidth '%s' (MiB/s, > 0)", arg);
		c->cfg.max_bandwidth = (uint64_t)(mib * 1048576.0);
		break;
	}
	case OPT_DIRTY:
		if (!strcmp(arg, "auto"))
			c->cfg.dirty = FL_DIRTY_AUTO;
		else if (!strcmp(arg, "soft-dirty"))
			c->cfg.dirty = FL_DIRTY_SOFT;
		else if (!strcmp(arg, "hash"))
			c->cfg.dirty = FL_DIRTY_HASH;
		else if (!strcmp(arg, "wp"))
			c->cfg.dirty = FL_DIRTY_WP;
		else
			argp_error(state, "invalid --dirty '%s': auto, wp, soft-dirty or hash", arg);
		break;
	case 'j':
		c->cfg.json = true;
		break;
	case OPT_INJECT:
		c->inject = arg;
		break;
	case OPT_STATUS:
		c->status = true;
		break;
	case OPT_SWITCH_NOW:
		c->switch_now = true;
		break;
	case ARGP_KEY_ARG:
		argp_error(state, "unexpected argument '%s'", arg);
		break;
	case ARGP_KEY_END: {
		int client = !!c->inject + c->status + c->switch_now;

		if (client > 1)
			argp_error(state, "--inject, --status and --switchover-now go one at a time");
		if (client) {
			if (!c->cfg.control)
				argp_error(state, "--inject/--status/--switchover-now talk to a running "
					   "source: say where with --control PATH");
			if (c->have_pid || c->cfg.nranges || c->cfg.vmm_socket)
				argp_error(state, "--pid/--range/--vmm-socket start a source; --inject/"
					   "--status/--switchover-now talk to one already running");
			break;
		}
		if (c->cfg.vmm_socket && (c->have_pid || c->cfg.nranges))
			argp_error(state, "--vmm-socket and --pid/--range exclude each other: the VMM's "
				   "handover names its pid and regions");
		if (!c->cfg.vmm_socket && !c->have_pid)
			argp_error(state, "--pid PID is required (the process whose memory is served), "
				   "or --vmm-socket PATH for a VMM that hands it over");
		if (!c->cfg.vmm_socket && !c->cfg.nranges)
			argp_error(state, "at least one --range ADDR:LEN is required (guest memory "
				   "in process %d; see /proc/%d/maps)", c->cfg.pid, c->cfg.pid);
		if (c->cfg.switchover_on_command && !c->cfg.control)
			argp_error(state, "--switchover-on-command needs --control PATH to receive the "
				   "command");
		if (c->cfg.switchover_on_command && c->cfg.precopy_ms >= 0)
			argp_error(state, "--precopy-ms and --switchover-on-command exclude each other");
		break;
	}
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

/* --inject REGION:PAGE[,PAGE...] as a control-socket line; replies expected. */
static int inject_line(const char *spec, char *line, size_t len, unsigned *nreplies)
{
	const char *colon = strchr(spec, ':');
	uint64_t pages[FL_SOURCE_MAX_INJECT];
	char err[200], *end;
	unsigned long region;

	errno = 0;
	region = colon ? strtoul(spec, &end, 10) : 0;
	if (!colon || errno || end != colon || colon == spec || region > UINT32_MAX) {
		fprintf(stderr, "faultline source: invalid --inject '%s': expected REGION:PAGE[,PAGE"
			"...], e.g. 0:17,40-43\n", spec);
		return -EINVAL;
	}
	if (fl_source_parse_pages(colon + 1, pages, FL_SOURCE_MAX_INJECT, nreplies, err,
				  sizeof(err))) {
		fprintf(stderr, "faultline source: invalid --inject '%s': %s\n", spec, err);
		return -EINVAL;
	}
	if ((size_t)snprintf(line, len, "poison %lu %s", region, colon + 1) >= len) {
		fprintf(stderr, "faultline source: --inject '%s' is too long for one line\n", spec);
		return -E2BIG;
	}
	return 0;
}

static int run_client(struct source_cli *c)
{
	char line[4096], err[300] = "";
	unsigned n = 1;
	int ret;

	if (c->inject) {
		ret = inject_line(c->inject, line, sizeof(line), &n);
		if (ret)
			return ret;
	} else {
		snprintf(line, sizeof(line), "%s", c->status ? "status" : "switchover");
	}
	ret = fl_source_control(c->cfg.control, line, n, stdout, err, sizeof(err));
	fflush(stdout);
	if (ret == -EREMOTEIO)
		fprintf(stderr, "faultline source: the source refused (see above)\n");
	else if (ret)
		fprintf(stderr, "faultline source: %s\n", err);
	return ret;
}

int fl_cmd_source(int argc, char **argv)
{
	const struct argp argp = { source_options, source_parse, NULL, source_doc, NULL, NULL, NULL };
	struct source_cli *c = calloc(1, sizeof(*c));
	int ret;

	if (!c)
		return -ENOMEM;
	c->cfg.precopy_ms = -1;
	ret = -argp_parse(&argp, argc, argv, 0, NULL, c);
	if (!ret)
		ret = c->inject || c->status || c->switch_now ? run_client(c) : fl_source_run(&c->cfg);
	free(c);
	return ret;
}
