// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: what it says (human lines or JSON events) and how a
 * failed run is reported once.
 */
#include "source_int.h"

/* ---- logging ----------------------------------------------------------- */

/* Human mode: a message on stderr (clearing a progress line on a tty). */
void src_say(struct src *s, const char *fmt, ...)
{
	va_list ap;

	if (s->tty)
		fputs("\r\033[K", stderr);
	fputs("faultline source: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/*
 * JSON mode: may s->out still be written?  Once a write to it failed (its
 * reader went away: EPIPE, SIGPIPE being ignored) nothing more goes there,
 * but serving goes on: after the switchover the process is stopped and only
 * this source holds what the target still needs.
 */
bool src_out_open(const struct src *s)
{
	return !s->out_dead;
}

/* End of one JSON line: flush it, and on the first failure say so once. */
void src_out_end(struct src *s)
{
	int err = fflush(s->out) ? errno : ferror(s->out) ? EIO : 0;

	if (!err)
		return;
	s->out_dead = true;
	src_say(s, "cannot write events to %s (%s): no more are printed there; serving goes on",
	    s->out == stdout ? "stdout" : "the event stream", strerror(err));
}

/* Why the run fails, kept for the end (said once there, and sent to the target). */
int src_fail(struct src *s, int err, const char *fmt, ...)
{
	va_list ap;

	if (!s->why[0]) {
		va_start(ap, fmt);
		fl_verrmsg(s->why, sizeof(s->why), fmt, ap);
		va_end(ap);
	}
	return err;
}

/* JSON mode: one event line on s->out; `body` continues after "event". */
void src_event(struct src *s, const char *name, const char *fmt, ...)
{
	va_list ap;

	if (!src_out_open(s))
		return;
	fprintf(s->out, "{\"event\":\"%s\",\"ts_ns\":%" PRId64, name, src_now_ns());
	if (fmt && *fmt) {
		fputc(',', s->out);
		va_start(ap, fmt);
		vfprintf(s->out, fmt, ap);
		va_end(ap);
	}
	fputs("}\n", s->out);
	src_out_end(s);
}

void src_json_str_field(FILE *out, const char *key, const char *v)
{
	fprintf(out, ",\"%s\":", key);
	if (v)
		fl_json_str(out, v, 512);
	else
		fputs("null", out);
}
