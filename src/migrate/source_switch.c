// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: the switchover: stopping the process and classifying
 * every page (clean, dirty, zero, poisoned) once.
 */
#include "source_int.h"

/* ---- switchover ---------------------------------------------------------- */

/* The state letter of a /proc/.../stat file (R, S, D, T, ...), 0 if unreadable. */
static char task_state(const char *path)
{
	char buf[512], *rp;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t k;

	if (fd < 0)
		return 0;
	k = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (k <= 0)
		return 0;
	buf[k] = 0;
	rp = strrchr(buf, ')');
	return rp && rp[1] == ' ' ? rp[2] : 0;
}

/* SIGSTOP, then wait until every thread is stopped (a thread asleep in an
 * uninterruptible wait can't write either, but is waited for too). */
static int stop_vm(struct src *s)
{
	int64_t deadline = src_now_ns() + STOP_WAIT_NS;
	char path[64], running[128] = "";

	snprintf(path, sizeof(path), "/proc/%d/stat", s->pid);
	s->vm_was_stopped = task_state(path) == 'T';
	if (kill(s->pid, SIGSTOP)) {
		int err = errno;

		return src_fail(s, -err, "cannot stop process %d at switchover: %s", s->pid,
			    err == ESRCH ? "it has exited" : strerror(err));
	}
	s->vm_stopped = true;
	snprintf(path, sizeof(path), "/proc/%d/task", s->pid);
	for (;;) {
		DIR *d = opendir(path);
		struct dirent *e;
		bool all = true;

		if (!d)
			return -ESRCH;
		while ((e = readdir(d))) {
			char sp[384], st;

			if (!isdigit((unsigned char)e->d_name[0]))
				continue;
			snprintf(sp, sizeof(sp), "%s/%s/stat", path, e->d_name);
			st = task_state(sp);
			if (st && st != 'T' && st != 't' && st != 'Z' && st != 'X') {
				all = false;
				snprintf(running, sizeof(running), "thread %.20s (state %c)", e->d_name,
					 st);
			}
		}
		closedir(d);
		if (all)
			return 0;
		if (src_now_ns() > deadline) {
			src_say(s, "warning: %s of process %d is not stopped 2 s after SIGSTOP: a write it "
			    "makes from now on may be missed", running, s->pid);
			return 0;
		}
		usleep(2000);
	}
}

/* Final state of every page (see the header comment for the dirty rule). */
static int classify(struct src *s)
{
	bool sd = s->softdirty && s->sd_cleared && s->precopy_valid;
	bool hashed = s->dirty == FL_DIRTY_HASH && s->precopy_valid;
	bool wp = s->dirty == FL_DIRTY_WP && s->precopy_valid;

	s->n_clean = s->n_dirty = s->n_zero = s->n_poisoned_map = 0;
	for (unsigned ri = 0; ri < s->nreg; ri++) {
		struct region *r = &s->reg[ri];
		int ret = fl_statemap_init(&r->map, r->npages, ST_ZERO);

		if (ret)
			return ret;
		/* wp: the written pages only (1: it can't say, read them all) */
		ret = wp ? src_dirty_classify(s, ri) : 1;
		if (ret < 0)
			return ret;
		for (uint64_t at = 0, all = (uint64_t)ret; all && at < r->npages; at += s->scan_pages) {
			unsigned n = (unsigned)(r->npages - at < s->scan_pages ? r->npages - at :
						s->scan_pages);
			uint64_t ridx[SCAN_PAGES], rpme[SCAN_PAGES];
			unsigned nr = 0;

			for (unsigned i = 0; i < n; i++)
				s->idx[i] = at + i;
			ret = src_read_pme(s, r, s->idx, n, s->pme);
			if (ret)
				return ret;
			for (unsigned i = 0; i < n; i++) {
				uint64_t p = at + i, e = s->pme[i];

				if (src_bit_get(r->poison, p))
					continue;
				if (src_pme_hwpoison(s, e)) {
					src_note_poison(s, ri, p, "hwpoison");
					continue;
				}
				if (sd && (e & (PM_PRESENT | PM_SWAP)) && !src_pme_marker(e) &&
				    !(e & PM_SOFT_DIRTY)) {
					/* mapped, not written since the clear: as precopy saw it */
					fl_statemap_set(&r->map, p, src_bit_get(r->psent, p) ? ST_CLEAN : ST_ZERO);
					continue;
				}
				ridx[nr] = p;
				rpme[nr++] = e;
			}
			ret = src_read_data(s, r, ridx, nr, rpme, s->buf, s->res);
			if (ret)
				return ret;
			src_note_read_poison(s, ri, ridx, nr, s->res);
			for (unsigned j = 0; j < nr; j++) {
				uint64_t p = ridx[j];
				const uint8_t *page = s->buf + (size_t)j * s->ps;
				unsigned st;

				if (s->res[j] >= R_POISON || src_bit_get(r->poison, p))
					continue;
				if (s->res[j] == R_ZERO || src_all_zero(page, s->ps))
					st = ST_ZERO;
				else if (hashed && src_bit_get(r->psent, p) &&
					 r->hash[p] == fl_source_page_hash(page, s->ps, s->hash_seed))
					st = ST_CLEAN;
				else
					st = ST_DIRTY;
				fl_statemap_set(&r->map, p, st);
			}
		}
		/* poison known before (or found above) wins over everything */
		for (uint64_t p = 0; p < r->npages; p++)
			if (src_bit_get(r->poison, p))
				fl_statemap_set(&r->map, p, ST_POISONED);
		s->n_clean += fl_statemap_count(&r->map, ST_CLEAN);
		s->n_dirty += fl_statemap_count(&r->map, ST_DIRTY);
		s->n_zero += fl_statemap_count(&r->map, ST_ZERO);
		s->n_poisoned_map += fl_statemap_count(&r->map, ST_POISONED);
	}
	return 0;
}

int src_do_switchover(struct src *s, struct conn *c)
{
	int64_t t = src_now_ns();
	int ret;

	if (!s->cfg->no_stop) {
		ret = stop_vm(s);
		if (ret)
			return ret;
	}
	ret = classify(s);
	if (ret)
		return src_fail(s, ret, "cannot read process %d's memory at switchover: %s", s->pid,
			    strerror(-ret));
	src_dirty_release(s);	/* the map is final: the VMM's memory needs no protection */
	s->switched = true;	/* from here note_poison keeps the map and counts right */
	s->switch_ms = (src_now_ns() - t) / 1000000;
	c->phase = CP_MAP;
	if (s->cfg->json)
		src_event(s, "switchover", "\"vm_stopped\":%s,\"clean\":%" PRIu64 ",\"dirty\":%" PRIu64
		      ",\"zero\":%" PRIu64 ",\"poisoned\":%" PRIu64 ",\"dirty_for_target\":%" PRIu64
		      ",\"classify_ms\":%" PRId64, s->vm_stopped ? "true" : "false", s->n_clean,
		      s->n_dirty, s->n_zero, s->n_poisoned_map, src_view_dirty_count(s, c), s->switch_ms);
	else
		src_say(s, "switchover: process %d %s; %" PRIu64 " clean, %" PRIu64 " dirty, %" PRIu64
		    " zero, %" PRIu64 " poisoned pages (%" PRId64 " ms)", s->pid,
		    s->vm_stopped ? "stopped" : "left running (--no-stop)", s->n_clean, s->n_dirty,
		    s->n_zero, s->n_poisoned_map, s->switch_ms);
	return 0;
}

bool src_switchover_due(struct src *s, struct conn *c)
{
	if (s->switched || !c || c->phase != CP_WAIT)
		return false;
	if (s->switch_requested)
		return true;
	return !s->cfg->switchover_on_command && src_now_ns() >= s->switch_at;
}
