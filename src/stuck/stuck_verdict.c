// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline stuck: deciding, from the collected facts alone (pure): which
 * userfaultfd a waiter waits on, and its verdict with the evidence and the
 * remedy.
 */
#include "stuck_int.h"

/* ---- attribution (pure) ----------------------------------------------------------- */

static bool holds(const struct fl_stuck_uffd *u, pid_t pid)
{
	for (int i = 0; i < u->nholders; i++)
		if (u->holders[i].pid == pid)
			return true;
	return false;
}

/*
 * Does some holder of u have threads asleep in handle_userfault (so u is
 * probably its own)?  Counted for every holder, -p or not.
 */
static bool claimed(const struct fl_stuck_uffd *u)
{
	for (int i = 0; i < u->nholders; i++)
		if (u->holders[i].blocked)
			return true;
	return false;
}

static int cmp_since(const void *a, const void *b, void *arg)
{
	const struct fl_stuck_thread *th = arg;
	const struct fl_stuck_thread *x = &th[*(const int *)a], *y = &th[*(const int *)b];

	return x->blocked_since_ns < y->blocked_since_ns ? -1 : x->blocked_since_ns > y->blocked_since_ns;
}

void fl_stuck_attribute(struct fl_stuck_scan *s)
{
	int *order = s->nthreads ? calloc((size_t)s->nthreads, sizeof(int)) : NULL;

	for (int i = 0; i < s->nuffds; i++)
		s->uffds[i].nwaiters = 0;
	for (int i = 0; i < s->nthreads; i++) {
		struct fl_stuck_thread *t = &s->threads[i];
		int n = 0;

		t->ncand = 0;
		t->rank = -1;
		/* the uffds with waiters that its own process holds */
		for (int u = 0; u < s->nuffds; u++)
			if (s->uffds[u].total > 0 && holds(&s->uffds[u], t->pid) &&
			    n++ < FL_STUCK_MAX_CAND)
				t->cand[t->ncand++] = u;
		if (n) {
			t->attrib = n == 1 ? FL_ATTR_HELD : FL_ATTR_AMBIGUOUS;
			continue;
		}
		/* none: a uffd with waiters that no blocked process holds (a handed-off uffd) */
		for (int u = 0; u < s->nuffds; u++)
			if (s->uffds[u].total > 0 && !claimed(&s->uffds[u]) &&
			    n++ < FL_STUCK_MAX_CAND)
				t->cand[t->ncand++] = u;
		t->attrib = !n ? FL_ATTR_NONE : n == 1 ? FL_ATTR_INFERRED : FL_ATTR_AMBIGUOUS;
	}
	/* rank each uffd's waiters, oldest first: the kernel hands faults out in that order */
	for (int u = 0; order && u < s->nuffds; u++) {
		int n = 0;
		bool timed = true;

		for (int i = 0; i < s->nthreads; i++) {
			const struct fl_stuck_thread *t = &s->threads[i];

			if ((t->attrib == FL_ATTR_HELD || t->attrib == FL_ATTR_INFERRED) &&
			    t->cand[0] == u) {
				order[n++] = i;
				timed &= t->waited_ns >= 0;
			}
		}
		s->uffds[u].nwaiters = n;
		if (!timed)
			continue;
		qsort_r(order, (size_t)n, sizeof(int), cmp_since, s->threads);
		for (int k = 0; k < n; k++)
			s->threads[order[k]].rank = k;
	}
	free(order);
}

/* ---- the verdict (pure) -------------------------------------------------------------- */

void fl_stuck_ev(struct fl_stuck_verdict *v, const char *fmt, ...)
{
	va_list ap;

	if (v->nev == FL_STUCK_MAX_EV)
		return;
	va_start(ap, fmt);
	vsnprintf(v->ev[v->nev++], FL_STUCK_EV_LEN, fmt, ap);
	va_end(ap);
}

static const char *fds_str(const struct fl_stuck_holder *h, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = 0;
	for (int i = 0; i < h->nfds && off < len; i++) {
		int n = snprintf(buf + off, len - off, "%s%d", i ? "," : "", h->fds[i]);

		if (n < 0)
			break;
		off += (size_t)n;
	}
	return buf;
}

const struct fl_stuck_task *fl_stuck_holder_task(const struct fl_stuck_uffd *u, pid_t tid)
{
	for (int i = 0; i < u->nholders; i++) {
		const struct fl_stuck_holder *h = &u->holders[i];

		for (int j = 0; j < h->ntasks && j < FL_STUCK_MAX_THREADS; j++)
			if (h->tasks[j].tid == tid)
				return &h->tasks[j];
	}
	return NULL;
}

int fl_stuck_possible_readers(const struct fl_stuck_uffd *u)
{
	int n = 0;

	for (int i = 0; i < u->nholders; i++)
		n += u->holders[i].nreaders + u->holders[i].maybe_readers;
	return n;
}

int fl_stuck_live_tasks(const struct fl_stuck_uffd *u)
{
	int n = 0;

	for (int i = 0; i < u->nholders; i++)
		n += u->holders[i].ntasks - u->holders[i].blocked;
	return n;
}

/* "1234 postcopy/fault S futex_wait_queue": one thread, for the evidence. */
static int task_str(char *buf, size_t len, const struct fl_stuck_task *k)
{
	const char *w = k->waiter ? "handle_userfault (a waiter)" :
			k->wchan[0] && strcmp(k->wchan, "0") ? k->wchan : "-";

	return snprintf(buf, len, "%d %s %c %s", k->tid, k->comm, k->state, w);
}

void fl_stuck_threads_evidence(struct fl_stuck_verdict *v, const struct fl_stuck_uffd *u)
{
	for (int i = 0; i < u->nholders && i < SHOWN_HOLDERS; i++) {
		const struct fl_stuck_holder *h = &u->holders[i];
		int shown = h->ntasks < FL_STUCK_MAX_THREADS ? h->ntasks : FL_STUCK_MAX_THREADS;
		int j = 0;

		/* as many sentences as the threads need, at most 4 per holder */
		for (int part = 0; part < 4 && j < shown; part++) {
			char line[FL_STUCK_EV_LEN];
			size_t off = (size_t)snprintf(line, sizeof(line), "pid %d (%s) threads%s "
						      "(tid name state wait-channel): ", h->pid,
						      h->comm, part ? ", continued" : "");

			for (bool first = true; j < shown; j++, first = false) {
				char one[96];
				int n = task_str(one, sizeof(one), &h->tasks[j]);

				if (off + (size_t)n + 8 >= sizeof(line) - 24)
					break;
				off += (size_t)snprintf(line + off, sizeof(line) - off, "%s%s",
							first ? "" : "; ", one);
			}
			if (j == shown && h->ntasks > shown)
				snprintf(line + off, sizeof(line) - off, "; and %d more",
					 h->ntasks - shown);
			fl_stuck_ev(v, "%s", line);
		}
	}
}

/* One sentence per holder (the first SHOWN_HOLDERS): who, and whether it reads the uffd. */
static void holder_evidence(struct fl_stuck_verdict *v, const struct fl_stuck_uffd *u, pid_t self)
{
	for (int i = 0; i < u->nholders && i < SHOWN_HOLDERS; i++) {
		const struct fl_stuck_holder *h = &u->holders[i];
		char fds[64], reading[96] = "";

		fds_str(h, fds, sizeof(fds));
		if (h->nreaders)
			snprintf(reading, sizeof(reading), "thread %d waits on it in %s%s",
				 h->readers[0], h->reader_how ? h->reader_how : "?",
				 h->nreaders > 1 ? " (and others)" : "");
		else if (h->maybe_readers)
			snprintf(reading, sizeof(reading),
				 "%d thread(s) wait in poll/select/epoll on a set that could not be read",
				 h->maybe_readers);
		else
			snprintf(reading, sizeof(reading), "no thread of it reads or polls it%s%s%s",
				 h->doing[0] ? " (main thread " : "", h->doing,
				 h->doing[0] ? ")" : "");
		fl_stuck_ev(v, "uffd ino %" PRIu64 " is held by pid %d (%s%s, state %c) as "
			    "fd %s: %s", u->ino, h->pid, h->comm,
			    h->pid == self ? ", the waiter's process" : "", h->state, fds, reading);
		if (h->pid != self && (h->state == 'T' || h->state == 't'))
			fl_stuck_ev(v, "pid %d is stopped (state %c): it cannot read or resolve "
				    "anything until it is continued (SIGCONT, or the tracer "
				    "lets go)", h->pid, h->state);
	}
	if (u->nholders > SHOWN_HOLDERS)
		fl_stuck_ev(v, "uffd ino %" PRIu64 " has %d more holder(s)", u->ino,
			    u->nholders - SHOWN_HOLDERS);
}

/*
 * The verdict for a waiter whose process still has registered ranges (or
 * unknown ones): decided by the uffd's counters and who holds and reads it.
 */
static void decide_by_handler(const struct fl_stuck_scan *s, struct fl_stuck_thread *t);

void fl_stuck_decide(const struct fl_stuck_scan *s, struct fl_stuck_thread *t)
{
	struct fl_stuck_verdict *v = &t->v;
	const struct fl_stuck_proc *p = &s->procs[t->proc];
	const struct fl_stuck_uffd *u1 = t->ncand ? &s->uffds[t->cand[0]] : NULL;
	long pending = 0;

	memset(v, 0, sizeof(*v));
	for (int c = 0; c < t->ncand; c++)
		pending += s->uffds[t->cand[c]].pending;

	/* 1. no registered range left: the waiter's range went away under it */
	if (!p->err && !p->nranges) {
		v->verdict = FL_V_RANGE_UNMAPPED;
		fl_stuck_ev(v, "pid %d (%s) has no userfaultfd-registered range left (no um/uw/ui "
			    "in /proc/%d/smaps VmFlags), yet the thread sleeps in "
			    "handle_userfault: the range it faulted on was unmapped, remapped or "
			    "resized under it", p->pid, p->comm, p->pid);
		if (u1 && t->ncand == 1) {
			fl_stuck_ev(v, "uffd ino %" PRIu64 ": fdinfo pending %ld, total %ld",
				    u1->ino, u1->pending, u1->total);
			if (!(u1->features & (UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
					      UFFD_FEATURE_EVENT_REMOVE)))
				fl_stuck_ev(v, "the uffd has none of UFFD_FEATURE_EVENT_UNMAP/"
					    "REMAP/REMOVE (features 0x%" PRIx64 "): its handler "
					    "was not told of the change", u1->features);
		}
		fl_stuck_ev(v, "%s; only UFFDIO_WAKE on the old range releases the thread (its "
			    "retried access then takes SIGSEGV, or runs on in whatever is mapped "
			    "there now)",
			    pending ? "the fault message is still queued, but a COPY/CONTINUE "
				      "into the gone range would fail with ENOENT and wake nobody"
				    : "the fault was read (pending 0); a COPY/CONTINUE into the "
				      "gone range fails with ENOENT and wakes nobody");
		v->needs_history = "whether a COPY/CONTINUE failed there with no WAKE after it "
				   "(placement_failed), and which call changed the mapping, needs "
				   "the daemon's history";
		v->unstick = "UFFDIO_WAKE on the old range from a process holding the uffd; the "
			     "handler should also handle UNMAP/REMAP events (or WAKE after every "
			     "ENOENT from COPY/CONTINUE)";
		return;
	}
	decide_by_handler(s, t);
	/* last: what one-shot cannot tell about the range */
	if (!p->err)
		fl_stuck_ev(v, "pid %d still has %d registered range(s), so whether the waiter's "
			    "own range went away needs its fault address (not in /proc; the daemon "
			    "has it)", p->pid, p->nranges);
	else
		fl_stuck_ev(v, "the registered ranges of pid %d are unknown (smaps: %s)", p->pid,
			    strerror(-p->err));
}

static void decide_by_handler(const struct fl_stuck_scan *s, struct fl_stuck_thread *t)
{
	struct fl_stuck_verdict *v = &t->v;
	const struct fl_stuck_proc *p = &s->procs[t->proc];
	const struct fl_stuck_uffd *u1 = t->ncand ? &s->uffds[t->cand[0]] : NULL;
	long pending = 0, total = 0;
	int others = 0, readers = 0, maybe = 0, live = 0;
	bool unread;

	for (int c = 0; c < t->ncand; c++) {
		const struct fl_stuck_uffd *u = &s->uffds[t->cand[c]];

		pending += u->pending;
		total += u->total;
		live += fl_stuck_live_tasks(u);
		for (int h = 0; h < u->nholders; h++) {
			others += u->holders[h].pid != t->pid;
			readers += u->holders[h].nreaders;
			maybe += u->holders[h].maybe_readers;
		}
	}

	/* 2. no uffd with waiters anywhere: referenced only from inside the kernel */
	if (t->attrib == FL_ATTR_NONE) {
		v->verdict = FL_V_HANDLER_GONE;
		fl_stuck_ev(v, "no process holds a userfaultfd with waiters that this thread could "
			    "be waiting on (pid %d holds %d uffd fd(s), none with waiters): the "
			    "uffd lives on only inside the kernel (e.g. an SCM_RIGHTS message "
			    "never received), so nobody can read it", t->pid, p->nuffd_fds);
		if (s->unreadable)
			fl_stuck_ev(v, "%d process(es) could not be inspected (not root?): a "
				    "holder may be among them", s->unreadable);
		if (s->key_unique == 0)
			fl_stuck_ev(v, "this kernel gives every userfaultfd the same inode: uffds "
				    "cannot be told apart across processes");
		v->unstick = "nothing outside the kernel can resolve it; killing the process "
			     "(or delivering the pending SCM_RIGHTS message) ends the wait";
		return;
	}
	if (t->attrib == FL_ATTR_INFERRED)
		fl_stuck_ev(v, "pid %d holds no userfaultfd; uffd ino %" PRIu64 " is the only one "
			    "with waiters that no blocked process holds, so it is taken as this "
			    "thread's", t->pid, u1->ino);
	if (t->attrib == FL_ATTR_AMBIGUOUS) {
		char inos[96] = "";
		size_t off = 0;

		for (int c = 0; c < t->ncand && off < sizeof(inos); c++)
			off += (size_t)snprintf(inos + off, sizeof(inos) - off, "%s%" PRIu64,
						c ? ", " : "", s->uffds[t->cand[c]].ino);
		fl_stuck_ev(v, "%d userfaultfds with waiters could be this thread's (ino %s): "
			    "their counters are summed", t->ncand, inos);
	}

	/* 3. read or not: fdinfo pending, and for a mix, the kernel's oldest-first order */
	if (!pending) {
		unread = false;
	} else if (pending >= total) {
		unread = true;
	} else if (t->attrib != FL_ATTR_AMBIGUOUS && t->rank >= 0 && u1->nwaiters == total) {
		unread = t->rank >= total - pending;
		fl_stuck_ev(v, "%ld of its %ld waiters are unread; the kernel hands faults out "
			    "oldest first and this thread is number %d by time waited, so it is "
			    "taken as %s", pending, total, t->rank + 1, unread ? "unread" : "read");
	} else {
		unread = true;
		fl_stuck_ev(v, "%ld of %ld waiters are unread and which ones cannot be told (%d "
			    "waiter(s) found): taken as unread", pending, total,
			    u1 ? u1->nwaiters : 0);
	}

	/* 4. who could read it: gone only if nobody but waiters is left */
	if (!others && !readers && !maybe && !live) {
		v->verdict = FL_V_HANDLER_GONE;
		fl_stuck_ev(v, "uffd ino %" PRIu64 " is held only by the waiter's own process %d, "
			    "whose every thread is itself asleep in a userfault: no handler is "
			    "left", u1->ino, t->pid);
		if (unread)
			fl_stuck_ev(v, "the fault message is still queued (fdinfo pending %ld, "
				    "total %ld): nobody has read it", pending, total);
		else {
			fl_stuck_ev(v, "the fault was read (fdinfo pending 0, total %ld) by a "
				    "thread that is gone: nothing reads the uffd any more", total);
			v->needs_history = "whether the handler died after reading the fault, or a "
					   "placement failed (placement_failed), needs the daemon's "
					   "history";
		}
		v->unstick = "start a new handler and hand it the uffd (SCM_RIGHTS from the "
			     "holding process), or resolve/WAKE the range from the holder itself";
		fl_stuck_threads_evidence(v, u1);
		return;
	}
	if (!readers && !maybe) {
		/* Somebody lives, nobody reads: a stalled handler (QEMU's fault
		 * thread while a postcopy is paused) and a gone one look alike. */
		v->verdict = unread ? FL_V_NOT_READ : FL_V_NOT_RESOLVED;
		fl_stuck_ev(v, "fdinfo pending %ld, total %ld: %s", pending, total, unread ?
			    "the fault message is still queued: the handler never read it" :
			    "the handler read the fault and never resolved it");
		fl_stuck_ev(v, "no thread of any holder reads or polls uffd ino %" PRIu64 " now, "
			    "yet %d live thread(s) of its holder(s) remain (listed below): a "
			    "handler thread that stalled (blocked elsewhere, e.g. a paused "
			    "postcopy waiting for recovery) and one that is gone look the same "
			    "from /proc", u1->ino, live);
		v->needs_history = "which thread last read this uffd, and whether it still lives "
				   "(handler_stalled) or not (handler_gone), needs the daemon's "
				   "history";
		v->unstick = "if a live handler thread stalled: find what it waits for and let it "
			     "go on (a paused postcopy: migrate-recover on the destination, then "
			     "resume the migration on the source) and start no second handler; if "
			     "the handler is gone: hand the uffd to a new handler (SCM_RIGHTS from "
			     "the holder), or resolve/WAKE the range from the holder itself";
	} else if (unread) {
		v->verdict = FL_V_NOT_READ;
		fl_stuck_ev(v, "fdinfo pending %ld, total %ld: the fault message is still queued: "
			    "the handler never read it", pending, total);
		v->unstick = "the handler must read the uffd: is it polling this fd for POLLIN, "
			     "is it wedged or stopped elsewhere?";
	} else {
		v->verdict = FL_V_NOT_RESOLVED;
		fl_stuck_ev(v, "fdinfo pending 0, total %ld: the handler read the fault and never "
			    "resolved it (no COPY/ZEROPAGE/CONTINUE/WAKE has reached this thread)",
			    total);
		v->needs_history = "a COPY/CONTINUE that failed (ENOENT, EEXIST, EAGAIN) with no "
				   "WAKE after it looks the same from /proc: placement_failed needs "
				   "the daemon's history";
		v->unstick = "the handler must place the page (COPY/ZEROPAGE/CONTINUE) or "
			     "UFFDIO_WAKE the thread; check where its page request went";
	}
	for (int c = 0; c < t->ncand; c++)
		holder_evidence(v, &s->uffds[t->cand[c]], t->pid);
	for (int c = 0; c < t->ncand; c++)
		fl_stuck_threads_evidence(v, &s->uffds[t->cand[c]]);
	if (unread && readers)
		fl_stuck_ev(v, "a thread waits on the uffd yet the message stays unread: it may be "
			    "busy elsewhere between polls, or polling for the wrong events");
}
