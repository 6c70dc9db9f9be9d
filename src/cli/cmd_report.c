// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline report: a recording (`faultline trace --json` output) as one
 * self-contained HTML page — per-thread timeline, latency heatmap, the
 * notify/resolve/wake breakdown, a memory map, the per-VM summary. Reads in
 * one pass (a pipe will do) in bounded memory; the page is bounded too.
 */
#include <argp.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "aggregate.h"
#include "commands.h"
#include "html.h"
#include "recording.h"

struct report_opts {
	const char *input;	/* a file, or "-" */
	const char *output;	/* NULL: beside the input (stdout for stdin) */
	const char *title;
	uint32_t max_intervals;
	bool strict, quiet;
};

static const char report_doc[] =
	"Turn a recording (`faultline trace --json` output) into one self-contained HTML "
	"report.\v"
	"The page needs no network: its data, style and script are inline. It shows a "
	"timeline with one lane per vCPU and per other faulting thread (each wait drawn "
	"and coloured by what resolved it; hover for the address, latency and its "
	"notify/resolve/wake split), a latency heatmap over time, the notify / resolve / "
	"wake breakdown, a map of the faulting memory (when each page faulted, poison, "
	"races, stuck waiters) and the per-VM summary of `trace`.\n"
	"\n"
	"RECORDING is a file, or - (the default) for standard input. Lines that are not "
	"JSON (a traced command's own output) are ignored; a malformed line is skipped, "
	"counted and named with its line number in a warning (with --strict it is an "
	"error). Without -o the report goes beside the recording (faults.jsonl -> "
	"faults.html), or to standard output when reading standard input.\n"
	"\n"
	"Size stays bounded whatever the recording: the heatmap and memory map are "
	"aggregated, and only --max-intervals waits are kept whole (the slowest half "
	"and a uniform sample of the rest); the timeline draws every wait as per-lane, "
	"per-time-bin totals beneath them.\n"
	"\n"
	"EXAMPLES:\n"
	"  faultline trace --json -p $(pidof qemu-system-x86_64) > faults.jsonl\n"
	"  faultline report faults.jsonl               # writes faults.html\n"
	"  faultline report -o /tmp/switchover.html faults.jsonl\n"
	"  faultline trace --json -- ./build/uffd-workload | faultline report -o w.html\n"
	"  faultline report --strict --max-intervals 50000 faults.jsonl\n";

static const struct argp_option report_options[] = {
	{ "output", 'o', "FILE", 0, "Write the report to FILE (- for standard output)", 0 },
	{ "title", 't', "TEXT", 0, "The page's title (default: the recording's name)", 0 },
	{ "max-intervals", 'm', "N", 0,
	  "Keep at most N waits whole for the timeline (default 10000, 0 to 200000)", 0 },
	{ "strict", 's', NULL, 0, "A malformed line is an error (default: skipped, with a warning)",
	  0 },
	{ "quiet", 'q', NULL, 0, "No summary line and no warnings on standard error", 0 },
	{ 0 },
};

static error_t report_parse(int key, char *arg, struct argp_state *state)
{
	struct report_opts *o = state->input;
	char *end;
	unsigned long v;

	switch (key) {
	case 'o': o->output = arg; break;
	case 't': o->title = arg; break;
	case 's': o->strict = true; break;
	case 'q': o->quiet = true; break;
	case 'm':
		errno = 0;
		v = strtoul(arg, &end, 10);
		if (errno || end == arg || *end || arg[0] == '-' || v > RP_MAX_INTERVALS)
			argp_error(state, "invalid --max-intervals '%s' (0 to %u)", arg,
				   RP_MAX_INTERVALS);
		o->max_intervals = (uint32_t)v;
		break;
	case ARGP_KEY_ARG:
		if (o->input)
			argp_error(state, "one recording at a time ('%s' and '%s')", o->input, arg);
		o->input = arg;
		break;
	default:
		return ARGP_ERR_UNKNOWN;
	}
	return 0;
}

/* faults.jsonl -> faults.html (beside it); the name is malloc'd. */
static char *default_output(const char *input)
{
	size_t n = strlen(input);
	const char *slash = strrchr(input, '/');
	const char *dot = strrchr(slash ? slash + 1 : input, '.');
	char *out;

	if (dot && dot != (slash ? slash + 1 : input) &&
	    (!strcmp(dot, ".jsonl") || !strcmp(dot, ".json") || !strcmp(dot, ".ndjson")))
		n = (size_t)(dot - input);
	out = malloc(n + sizeof(".html"));
	if (out) {
		memcpy(out, input, n);
		memcpy(out + n, ".html", sizeof(".html"));
	}
	return out;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void warn_input(const struct rp_reader *rd, const char *name, const struct rp_agg *a)
{
	if (rd->malformed) {
		fprintf(stderr, "faultline report: warning: %s: %" PRIu64 " malformed line(s) skipped "
			"(the report counts them):\n", name, rd->malformed);
		for (uint64_t i = 0; i < rd->malformed && i < RP_SKIP_EXAMPLES; i++)
			fprintf(stderr, "  line %" PRIu64 ": %s\n", rd->skips[i].line, rd->skips[i].why);
		if (rd->malformed > RP_SKIP_EXAMPLES)
			fprintf(stderr, "  ... and %" PRIu64 " more\n", rd->malformed - RP_SKIP_EXAMPLES);
	}
	if (!a->faults)
		fprintf(stderr, "faultline report: warning: %s: no fault records (is it `faultline "
			"trace --json` output?)\n", name);
	if (a->have_summary && a->summary.faults != a->faults)
		fprintf(stderr, "faultline report: warning: %s: %" PRIu64 " fault records, but the "
			"trace's summary counted %" PRIu64 " (a cut or concatenated recording?)\n",
			name, a->faults, a->summary.faults);
}

/* Reads the recording into a; 0 or -errno, said once. */
static int read_recording(const struct report_opts *o, FILE *in, const char *name,
			  struct rp_reader *rd, struct rp_agg *a)
{
	struct rp_record rec;
	int rc;

	memset(&rec, 0, sizeof(rec));
	rc = rp_reader_init(rd, in, o->strict);
	while (!rc && (rc = rp_reader_next(rd, &rec)) > 0)
		rc = rp_agg_add(a, &rec);
	rp_record_free(&rec);
	if (rc == -ENOMEM)
		fprintf(stderr, "faultline report: %s: out of memory\n", name);
	else if (rc < 0)
		fprintf(stderr, "faultline report: %s: %s\n", name, rd->err);
	return rc < 0 ? rc : 0;
}

/* The report into path (through a temporary file renamed at the end), or stdout for "-". */
static int write_report(const char *path, struct rp_agg *a, const struct rp_meta *m, long *size)
{
	char *tmp = NULL;
	FILE *out = stdout;
	int fd = -1, rc, werr = 0;
	struct stat st;

	if (strcmp(path, "-") && lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		/* a device, a pipe, a symlink: written through, never replaced by a rename */
		out = fopen(path, "w");
		if (!out) {
			rc = -errno;
			fprintf(stderr, "faultline report: cannot write %s: %s\n", path, strerror(-rc));
			return rc;
		}
	} else if (strcmp(path, "-")) {
		/* a failed run leaves no half-written report where the last good one was */
		if (asprintf(&tmp, "%s.XXXXXX", path) < 0)
			return -ENOMEM;
		fd = mkstemp(tmp);
		if (fd < 0 || !(out = fdopen(fd, "w"))) {
			rc = -errno;
			fprintf(stderr, "faultline report: cannot write %s: %s\n", path, strerror(-rc));
			if (fd >= 0) {
				close(fd);
				unlink(tmp);
			}
			free(tmp);
			return rc;
		}
		fchmod(fd, 0644);	/* a report is for sharing, unlike mkstemp's 0600 */
	}
	setvbuf(out, NULL, _IOFBF, 1 << 20);
	rc = rp_html_write(out, a, m);
	*size = ftell(out);
	if (fflush(out) || ferror(out))
		werr = errno ? errno : EIO;
	if (out != stdout && fclose(out) && !werr)
		werr = errno ? errno : EIO;
	if (rc)
		fprintf(stderr, "faultline report: %s: out of memory\n", path);
	else if (werr)
		fprintf(stderr, "faultline report: cannot write %s: %s\n", path, strerror(werr));
	if (tmp) {
		if (!rc && !werr && rename(tmp, path)) {
			werr = errno;
			fprintf(stderr, "faultline report: cannot rename %s to %s: %s\n", tmp, path,
				strerror(werr));
		}
		if (rc || werr)
			unlink(tmp);
		free(tmp);
	}
	return rc ? rc : -werr;
}

static int report_main(struct report_opts *o, struct rp_agg *a)
{
	const char *name = o->input && strcmp(o->input, "-") ? o->input : "-";
	const char *shown = strcmp(name, "-") ? name : "(standard input)";
	struct rp_opts ao = { .max_intervals = o->max_intervals };
	struct rp_reader rd;
	struct rp_meta m;
	char *output = NULL, title[512];
	FILE *in = stdin;
	double t0 = now_s();
	long size = 0;
	int rc;

	if (strcmp(name, "-") && !(in = fopen(name, "r"))) {
		rc = -errno;
		fprintf(stderr, "faultline report: cannot open %s: %s\n", name, strerror(errno));
		return rc;
	}
	if (o->output)
		output = strdup(o->output);
	else if (strcmp(name, "-"))
		output = default_output(name);
	else if (isatty(STDOUT_FILENO)) {
		fprintf(stderr, "faultline report: reading standard input: say where the report goes "
			"(-o FILE.html, or redirect standard output)\n");
		return -EINVAL;
	} else
		output = strdup("-");
	rc = output ? rp_agg_init(a, &ao) : -ENOMEM;
	if (rc) {
		fprintf(stderr, "faultline report: out of memory\n");
		free(output);
		if (in != stdin)
			fclose(in);
		return rc;
	}
	rc = read_recording(o, in, shown, &rd, a);
	if (in != stdin)
		fclose(in);
	if (!rc) {
		if (!o->quiet)
			warn_input(&rd, shown, a);
		snprintf(title, sizeof(title), "faultline report: %s", shown);
		m = (struct rp_meta){ .title = o->title ? o->title : title, .source = shown,
				      .rd = &rd };
		rc = write_report(output, a, &m, &size);
	}
	if (!rc && !o->quiet)
		fprintf(stderr, "faultline report: wrote %s: %" PRIu64 " fault(s), %u lane(s), %" PRIu64
			" race(s), %" PRIu64 " poison event(s); %.1f KiB in %.2f s\n",
			strcmp(output, "-") ? output : "(standard output)", a->faults, a->nlanes,
			a->races.total, a->poison.total, size / 1024.0, now_s() - t0);
	rp_reader_free(&rd);
	rp_agg_free(a);
	free(output);
	return rc;
}

int fl_cmd_report(int argc, char **argv)
{
	const struct argp argp = { report_options, report_parse, "[RECORDING.jsonl|-]", report_doc,
				   NULL, NULL, NULL };
	struct report_opts o = { .max_intervals = RP_DEFAULT_INTERVALS };
	struct rp_agg *a;
	int rc = argp_parse(&argp, argc, argv, 0, NULL, &o);

	if (rc)
		return -rc;
	a = calloc(1, sizeof(*a));	/* half a megabyte of fixed tables: not for the stack */
	if (!a) {
		fprintf(stderr, "faultline report: out of memory\n");
		return -ENOMEM;
	}
	rc = report_main(&o, a);
	free(a);
	return rc;
}
