// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source (source.h): one thread, one poll loop, one context.
 *
 * Reading another process's memory safely.  Guest memory on the source is
 * usually registered with a userfaultfd (so poison can be injected), and a
 * remote read (process_vm_readv, /proc/PID/mem) of a page that is not
 * populated faults into that userfaultfd and blocks forever: nobody serves
 * it.  So every read starts from /proc/PID/pagemap: pages that are mapped
 * are read with process_vm_readv (no fault), shared file pages (memfd,
 * shmem) through the file itself (/proc/PID/map_files: a hole reads as
 * zeros, no fault), unmapped anonymous pages are zero, and a UFFDIO_POISON
 * marker (a swap-type PTE marker) is poison without touching it.  A mapped
 * page that process_vm_readv refuses is poison only with positive evidence
 * (the marker, or kpageflags HWPOISON of its frame); else it is read through
 * /proc/PID/mem (FOLL_FORCE: PROT_NONE pages too), and a page that can't be
 * read at all ends the run with an error naming it: declaring it poisoned
 * would make the target SIGBUS on memory that is fine.  VM_IO/VM_PFNMAP
 * ranges are refused at start: pagemap shows them as holes, so they would be
 * served as zeros.
 *
 * Or the VMM hands its memory over (--vmm-socket, fl_handover()): a memfd
 * per region and a duplicate of its userfaultfd.  Each region then is one
 * shared-file segment on the received memfd, so the same read path applies
 * (pread: a hole reads as zero, nothing faults) and injection is the same
 * punch + UFFDIO_POISON, with the received fds instead of ones taken from
 * /proc.  The VMM's pagemap is used only where it provably maps those
 * memfds (markers, kpageflags, soft-dirty); without it a punched + poisoned
 * page just reads as a hole, so the injected set is what remembers it.
 *
 * Dirty tracking (source_dirty.c): userfaultfd write-protection in async
 * mode through the VMM's own userfaultfd, read with PAGEMAP_SCAN (each
 * precopy window protected just before it is read; the switchover reads only
 * the written pages), where that uffd has WP_ASYNC; else the pagemap
 * soft-dirty bit after `clear_refs 4` where the kernel has
 * CONFIG_MEM_SOFT_DIRTY (probed on ourselves at start), else a 64-bit keyed
 * hash of every page as sent in precopy, compared at switchover (exact:
 * "dirty" then means "differs from the target's copy").
 *
 * Flow control: requests are parsed only while the connection's writer has
 * less than RD_HIGH pending (the rest waits in the socket: TCP pushes back
 * on the target), and background frames (precopy, map, pushes) are only
 * generated below BG_LOW, so a request never queues behind more than about
 * BG_LOW of background data and a connection never buffers more than
 * RD_HIGH + one answer.
 */
#include "source_int.h"

volatile sig_atomic_t src_stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	src_stop_flag = 1;
}

/* ---- progress and summary ------------------------------------------------ */

static uint64_t pages_left(const struct src *s, const struct conn *c, bool *known)
{
	uint64_t left = 0;

	*known = true;
	if (!c) {
		*known = false;
		return 0;
	}
	switch (c->phase) {
	case CP_PRECOPY:
		for (unsigned i = c->cr; i < s->nreg; i++)
			left += s->reg[i].npages - (i == c->cr ? c->cp : 0);
		return left;
	case CP_MAP:
		return c->switch_sent ? c->push_left : src_view_dirty_count(s, c);
	case CP_PUSH:
		return c->push_left;
	case CP_DONE:
		return 0;
	default:
		*known = false;
		return 0;
	}
}

void src_progress(struct src *s)
{
	struct conn *c = src_active_conn(s);
	int64_t t = src_now_ns();
	double el = (double)(t - s->t0) / 1e9, dt = (double)(t - s->last_rate_ns) / 1e9;
	uint64_t moved = s->pages_sent - s->last_sent;
	bool known;
	uint64_t left = pages_left(s, c, &known);
	double eta = -1;
	char etas[32] = "";

	if (c && c->phase == CP_PRECOPY) {
		/* precopy skips zero pages: count pages looked at */
		uint64_t scanned = 0;

		for (unsigned i = 0; i < c->cr && i < s->nreg; i++)
			scanned += s->reg[i].npages;
		scanned += c->cp;
		moved = scanned >= s->last_scanned ? scanned - s->last_scanned : scanned;
		s->last_scanned = scanned;
	}
	if (dt > 0) {
		double r = (double)moved / dt;

		s->rate = s->rate > 0 ? 0.5 * s->rate + 0.5 * r : r;
	}
	s->last_sent = s->pages_sent;
	s->last_rate_ns = t;
	if (known && !left)
		eta = 0;
	else if (known && s->rate > 0)
		eta = (double)left / s->rate;
	if (s->cfg->json) {
		char e[32] = "null";

		if (eta >= 0)
			snprintf(e, sizeof(e), "%.2f", eta);
		src_event(s, "source_progress", "\"elapsed_s\":%.2f,\"phase\":\"%s\",\"pages_total\":%" PRIu64
		      ",\"pages_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64 ",\"requests_served\":%" PRIu64
		      ",\"poisoned\":%" PRIu64 ",\"dirty\":%" PRIu64 ",\"eta_s\":%s", el,
		      src_phase_name(s, c), s->pages_total, s->pages_sent, s->bytes_sent, s->requests,
		      s->poisoned, s->switched ? s->n_dirty : 0, e);
		return;
	}
	if (eta >= 0)
		snprintf(etas, sizeof(etas), ", ~%.1fs left", eta);
	fprintf(stderr, "%sfaultline source: %6.1fs %-12s sent %" PRIu64 " pages (%.1f MiB), %"
		PRIu64 " requests, %" PRIu64 " poisoned, %" PRIu64 " dirty%s%s", s->tty ? "\r\033[K" : "",
		el, src_phase_name(s, c), s->pages_sent, (double)s->bytes_sent / (1 << 20), s->requests,
		s->poisoned, s->switched ? s->n_dirty : 0, etas, s->tty ? "" : "\n");
	fflush(stderr);
}

static void summary(struct src *s)
{
	double dur = (double)(src_now_ns() - s->t0) / 1e9;

	if (s->cfg->json) {
		if (!src_out_open(s))
			return;
		fprintf(s->out, "{\"event\":\"source_summary\",\"ts_ns\":%" PRId64 ",\"completed\":%s,"
			"\"pages_total\":%" PRIu64 ",\"pages_sent\":%" PRIu64 ",\"bytes_sent\":%" PRIu64
			",\"data_bytes\":%" PRIu64 ",\"requests_served\":%" PRIu64 ",\"pages_requested\":%"
			PRIu64 ",\"state_queries\":%" PRIu64 ",\"precopy_pages\":%" PRIu64
			",\"poisoned\":%" PRIu64, src_now_ns(), s->completed ? "true" : "false",
			s->pages_total, s->pages_sent, s->bytes_sent, s->data_bytes, s->requests,
			s->pages_requested, s->queries, s->precopy_pages, s->poisoned);
		if (s->switched)
			fprintf(s->out, ",\"dirty\":%" PRIu64 ",\"zero\":%" PRIu64 ",\"clean\":%" PRIu64,
				s->n_dirty, s->n_zero, s->n_clean);
		else
			fputs(",\"dirty\":null,\"zero\":null,\"clean\":null", s->out);
		fprintf(s->out, ",\"switched\":%s,\"vm_stopped\":%s,\"vm_resumed\":%s,"
			"\"connections\":%" PRIu64 ",\"protocol_errors\":%" PRIu64
			",\"dirty_tracking\":\"%s\",\"duration_s\":%.3f}\n",
			s->switched ? "true" : "false", s->vm_stopped ? "true" : "false",
			s->vm_resumed ? "true" : "false", s->connections, s->protocol_errors,
			src_dirty_name(s), dur);
		src_out_end(s);
		return;
	}
	if (s->tty)
		fputs("\r\033[K", stderr);
	fprintf(stderr, "\nfaultline source: %s after %.1f s\n",
		s->completed ? "migration complete" : "stopped before the target finished", dur);
	fprintf(stderr, "  pages:    %" PRIu64 " total", s->pages_total);
	if (s->switched)
		fprintf(stderr, ", %" PRIu64 " clean, %" PRIu64 " dirty, %" PRIu64 " zero",
			s->n_clean, s->n_dirty, s->n_zero);
	fprintf(stderr, ", %" PRIu64 " poisoned\n", s->poisoned);
	fprintf(stderr, "  sent:     %" PRIu64 " pages (%" PRIu64 " in precopy), %.1f MiB on the "
		"wire\n", s->pages_sent, s->precopy_pages, (double)s->bytes_sent / (1 << 20));
	fprintf(stderr, "  served:   %" PRIu64 " page requests (%" PRIu64 " pages), %" PRIu64
		" state queries; %" PRIu64 " connection(s), %" PRIu64 " protocol error(s)\n",
		s->requests, s->pages_requested, s->queries, s->connections, s->protocol_errors);
	if (s->vm_resumed)
		fprintf(stderr, "  process %d resumed (SIGCONT): no target was told to take over\n",
			s->pid);
	else if (s->vm_stopped)
		fprintf(stderr, "  process %d stays stopped (SIGSTOP)%s\n", s->pid,
			s->completed ? ": it has migrated" :
			s->vm_was_stopped ? ": it was stopped before the switchover" :
			"; a target was told to switch over and may run it: `kill -CONT` it "
			"only if none did");
}

/* ---- the loop -------------------------------------------------------------- */

static void accept_target(struct src *s)
{
	struct sockaddr_storage sa;
	socklen_t len = sizeof(sa);
	char host[INET6_ADDRSTRLEN] = "?";
	int fd = accept4(s->lfd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	int one = 1, slot = -1;
	unsigned port = 0;

	if (fd < 0)
		return;
	if (sa.ss_family == AF_INET6) {
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
	} else if (sa.ss_family == AF_INET) {
		inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, host, sizeof(host));
		port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
	}
	/* Idle newcomers must not lock the target out: one address may hold
	 * only a few slots before its Hello, and with every slot taken the
	 * newcomer that has waited longest gives way (the target, past its
	 * Hello, never does). */
	int same_host = 0, oldest = -1;

	for (int i = 0; i < MAX_CONNS; i++) {
		struct conn *k = &s->conns[i];

		if (k->fd < 0) {
			if (slot < 0)
				slot = i;
			continue;
		}
		if (k->phase != CP_HELLO)
			continue;
		if (!strcmp(k->host, host))
			same_host++;
		if (oldest < 0 || k->since_ns < s->conns[oldest].since_ns)
			oldest = i;
	}
	if (same_host >= MAX_PENDING_PER_HOST) {
		close(fd);
		return;
	}
	if (slot < 0 && oldest >= 0) {
		src_drop_conn(s, &s->conns[oldest], "a newer peer needed its slot (no Hello yet)");
		slot = oldest;
	}
	if (slot < 0) {
		close(fd);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct conn *c = &s->conns[slot];
	char err[256] = "";

	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->phase = CP_HELLO;
	c->since_ns = src_now_ns();
	snprintf(c->host, sizeof(c->host), "%s", host);
	snprintf(c->peer, sizeof(c->peer), sa.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, port);
	if (fl_wire_reader_init(&c->rd) || fl_wire_writer_init(&c->wr) ||
	    fl_chan_start(&c->ch, s->tls, fd, true, NULL, err, sizeof(err))) {
		if (*err)
			src_say(s, "%s: %s", c->peer, err);
		src_conn_close(s, c);
	}
}

static void accept_ctl(struct src *s)
{
	int fd = accept4(s->cfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	for (int i = 0; i < MAX_CTLS; i++)
		if (s->ctls[i].fd < 0) {
			s->ctls[i].fd = fd;
			s->ctls[i].len = 0;
			return;
		}
	close(fd);
}

static int conn_io(struct src *s, struct conn *c, short rev)
{
	int ret;

	if (c->ch.handshaking) {
		char err[256] = "", why[300];

		ret = fl_chan_handshake(&c->ch, err, sizeof(err));
		if (ret == -EAGAIN)
			return 0;
		if (ret) {
			/* no page, no frame: a peer without the credentials gets nothing */
			snprintf(why, sizeof(why), "refused: %s", err);
			s->protocol_errors++;
			if (s->cfg->json && src_out_open(s)) {
				fprintf(s->out, "{\"event\":\"peer_refused\",\"ts_ns\":%" PRId64
					",\"peer\":\"%s\"", src_now_ns(), c->peer);
				src_json_str_field(s->out, "reason", why);
				fputs("}\n", s->out);
				src_out_end(s);
			} else if (!s->cfg->json) {
				src_say(s, "%s %s", c->peer, why);
			}
			src_drop_conn(s, c, why);
			return 0;
		}
		rev |= POLLIN;	/* its Hello may have come with the handshake */
	}
	while (rev & (POLLIN | POLLHUP | POLLERR)) {
		ssize_t k = fl_wire_reader_fill_io(&c->rd, &c->ch.io);

		if (k == 0) {
			/* frames that came with the FIN (its End, say) still count */
			ret = src_process_frames(s, c);
			if (ret || c->fd < 0)
				return ret;
			if (s->target_done && c->phase != CP_HELLO)
				return 0;	/* finished: the loop ends or drops it */
			src_drop_conn(s, c, "connection closed by the target");
			return 0;
		}
		if (k < 0 && k != -EAGAIN && k != -ENOBUFS) {
			char why[128];

			snprintf(why, sizeof(why), "read: %s", strerror((int)-k));
			src_drop_conn(s, c, why);
			return 0;
		}
		/* records TLS decrypted already: poll() would not say so */
		if (k == -ENOBUFS || !fl_chan_buffered(&c->ch))
			break;
		ret = src_process_frames(s, c);
		if (ret || c->fd < 0)
			return ret;
	}
	ret = src_process_frames(s, c);
	if (ret || c->fd < 0)
		return ret;
	if (c->phase != CP_HELLO && c->nowed)
		ret = src_put_poison_updates(s, c);
	return ret;
}

static int conn_flush(struct src *s, struct conn *c)
{
	size_t before = fl_wire_pending(&c->wr);
	ssize_t left = c->ch.handshaking ? (ssize_t)fl_wire_pending(&c->wr) :
		       fl_wire_flush_io(&c->wr, &c->ch.io);

	if (left < 0) {
		char why[128];

		snprintf(why, sizeof(why), "write: %s", strerror((int)-left));
		src_drop_conn(s, c, why);
		return 0;
	}
	s->bytes_sent += before - (size_t)left;
	return 0;
}

int src_serve(struct src *s)
{
	s->next_tick = src_now_ns() + NS;
	s->next_progress = src_now_ns() + (s->cfg->progress_ms ? s->cfg->progress_ms : 1000) * 1000000ll;
	s->last_rate_ns = src_now_ns();
	while (!src_stop_flag) {
		struct pollfd pfd[2 + MAX_CONNS + MAX_CTLS];
		int kind[2 + MAX_CONNS + MAX_CTLS], np = 0, timeout;
		bool timeout_now = false;	/* a TLS layer holds decrypted records */
		struct conn *c = src_active_conn(s);
		int64_t t = src_now_ns(), wake = s->next_tick < s->next_progress ? s->next_tick :
					 s->next_progress;
		int ret;

		if (s->target_done && (!c || !fl_wire_pending(&c->wr)) && !s->cfg->keep_serving)
			return 0;
		if (s->target_done && s->cfg->keep_serving && c && !fl_wire_pending(&c->wr)) {
			src_drop_conn(s, c, "migration finished");
			s->target_done = false;
			c = NULL;
		}
		if (src_switchover_due(s, c)) {
			ret = src_do_switchover(s, c);
			if (ret)
				return ret;
		}
		if (c && c->fd >= 0) {
			ret = src_produce(s, c);
			if (ret)
				return ret;
		}
		pfd[np] = (struct pollfd){ .fd = s->lfd, .events = POLLIN };
		kind[np++] = -1;
		if (s->cfd >= 0) {
			pfd[np] = (struct pollfd){ .fd = s->cfd, .events = POLLIN };
			kind[np++] = -2;
		}
		for (int i = 0; i < MAX_CONNS; i++) {
			struct conn *k = &s->conns[i];

			if (k->fd < 0)
				continue;
			if (k->phase == CP_HELLO && t - k->since_ns > HELLO_TIMEOUT_NS) {
				src_protocol_error(s, k, ETIMEDOUT, "no Hello within 5 s of connecting");
				continue;
			}
			if (fl_wire_pending(&k->wr))
				conn_flush(s, k);
			if (k->fd < 0)
				continue;
			pfd[np] = (struct pollfd){ .fd = k->fd, .events = 0 };
			if (k->ch.handshaking)
				pfd[np].events = fl_chan_events(&k->ch);
			else if (fl_wire_pending(&k->wr) < RD_HIGH)
				pfd[np].events |= POLLIN;
			if (!k->ch.handshaking && fl_wire_pending(&k->wr))
				pfd[np].events |= POLLOUT;
			if (!k->ch.handshaking && fl_chan_buffered(&k->ch) &&
			    fl_wire_pending(&k->wr) < RD_HIGH)
				timeout_now = true;
			kind[np++] = i;
		}
		for (int i = 0; i < MAX_CTLS; i++)
			if (s->ctls[i].fd >= 0) {
				pfd[np] = (struct pollfd){ .fd = s->ctls[i].fd, .events = POLLIN };
				kind[np++] = 100 + i;
			}
		c = src_active_conn(s);
		timeout = wake > t ? (int)((wake - t) / 1000000) + 1 : 0;
		if (c && fl_wire_pending(&c->wr) < BG_LOW && src_has_background(c)) {
			int64_t bw = (c->phase == CP_PRECOPY || c->phase == CP_PUSH) && !c->nowed ?
				     src_bw_wait_ns(s) : 0;

			if (!bw)
				timeout = 0;
			else if (bw / 1000000 + 1 < timeout)
				timeout = (int)(bw / 1000000) + 1;
		}
		if (c && !s->switched && c->phase == CP_WAIT && !s->cfg->switchover_on_command &&
		    s->switch_at > t && (s->switch_at - t) / 1000000 < timeout)
			timeout = (int)((s->switch_at - t) / 1000000) + 1;
		if (c && !s->switched && c->phase == CP_WAIT && (s->switch_requested ||
		    (!s->cfg->switchover_on_command && s->switch_at <= t)))
			timeout = 0;
		if (timeout_now)
			timeout = 0;
		if (poll(pfd, (nfds_t)np, timeout) < 0 && errno != EINTR)
			return -errno;
		for (int i = 0; i < np; i++) {
			if (kind[i] >= 0 && kind[i] < 100 && s->conns[kind[i]].fd >= 0 &&
			    fl_chan_buffered(&s->conns[kind[i]].ch))
				pfd[i].revents |= POLLIN;
			if (!pfd[i].revents)
				continue;
			if (kind[i] == -1) {
				accept_target(s);
			} else if (kind[i] == -2) {
				accept_ctl(s);
			} else if (kind[i] >= 100) {
				if (s->ctls[kind[i] - 100].fd >= 0)
					src_ctl_read(s, &s->ctls[kind[i] - 100]);
			} else if (s->conns[kind[i]].fd >= 0) {
				ret = conn_io(s, &s->conns[kind[i]], pfd[i].revents);
				if (ret)
					return ret;
			}
		}
		/* frames held back by a full writer, once it drained */
		for (int i = 0; i < MAX_CONNS; i++)
			if (s->conns[i].fd >= 0 && s->conns[i].rd.len > s->conns[i].rd.off) {
				ret = src_process_frames(s, &s->conns[i]);
				if (ret)
					return ret;
			}
		t = src_now_ns();
		if (t >= s->next_tick) {
			s->next_tick = t + NS;
			ret = src_scan_poison(s);
			if (ret)
				return ret;
		}
		if (t >= s->next_progress) {
			s->next_progress = t + (s->cfg->progress_ms ? s->cfg->progress_ms : 1000) * 1000000ll;
			src_progress(s);
		}
	}
	return -EINTR;
}

/*
 * The process we SIGSTOPped, on our way out.  Once a Switchover was queued to
 * a target it stays stopped whatever ended the run: that target may already
 * run the VM, and two running copies of one guest corrupt its disks and
 * confuse its network peers; a stopped VM can still be resumed by whoever
 * knows the target never ran it, a split brain can't be undone.  If no
 * target was ever told (the run failed or was interrupted between the
 * SIGSTOP and the Switchover: a page that can't be read at switchover, say),
 * nobody else can run it, and a migration that did not happen must not leave
 * the VM paused for good: it is resumed.  A process that was already stopped
 * before our SIGSTOP is left as it was.
 */
void src_release_vm(struct src *s)
{
	if (!s->vm_stopped || s->switch_announced || s->vm_was_stopped)
		return;
	if (kill(s->pid, SIGCONT)) {
		if (errno != ESRCH)
			src_say(s, "cannot resume process %d (SIGCONT): %s; it stays stopped", s->pid,
			    strerror(errno));
		return;
	}
	s->vm_resumed = true;
}

/* A failed run tells its targets why (best effort: cleanup flushes what the
 * sockets take), so the migration ends with the reason instead of a hang-up. */
static void tell_targets(struct src *s, int err)
{
	Faultline__Wire__Error e = FAULTLINE__WIRE__ERROR__INIT;

	e.code = (uint32_t)-err;
	e.text = s->why;
	for (int i = 0; i < MAX_CONNS; i++)
		if (s->conns[i].fd >= 0 && s->conns[i].phase != CP_HELLO)
			src_put(&s->conns[i], FAULTLINE__WIRE__FRAME__BODY_ERROR, &e);
}

void src_cleanup(struct src *s)
{
	for (int i = 0; i < MAX_CONNS; i++)
		if (s->conns[i].fd >= 0) {
			if (!s->conns[i].ch.handshaking)
				fl_wire_flush_io(&s->conns[i].wr, &s->conns[i].ch.io);
			src_conn_close(s, &s->conns[i]);
		}
	fl_tls_free(s->tls);	/* after the sessions that use it */
	s->tls = NULL;
	for (int i = 0; i < MAX_CTLS; i++)
		if (s->ctls[i].fd >= 0)
			close(s->ctls[i].fd);
	if (s->lfd >= 0)
		close(s->lfd);
	if (s->cfd >= 0)
		close(s->cfd);
	if (s->ctl_created)
		unlink(s->cfg->control);
	if (s->vmm_lfd >= 0) {
		close(s->vmm_lfd);
		unlink(s->cfg->vmm_socket);
	}
	src_dirty_free(s);	/* before the handed-over uffd it may use is closed */
	fl_handover_close(&s->ho);
	for (unsigned i = 0; i < FL_WIRE_MAX_REGIONS; i++) {
		struct region *r = &s->reg[i];

		for (unsigned j = 0; j < r->nsegs; j++)
			if (r->segs[j].fd >= 0)
				close(r->segs[j].fd);
		free(r->segs);
		free(r->poison);
		free(r->psent);
		free(r->hash);
		fl_statemap_free(&r->map);
	}
	if (s->pagemap_fd >= 0)
		close(s->pagemap_fd);
	if (s->mem_fd >= 0)
		close(s->mem_fd);
	if (s->kpf_fd >= 0)
		close(s->kpf_fd);
	if (s->pidfd >= 0)
		close(s->pidfd);
	free(s->buf);
}

static void src_init(struct src *s, const struct fl_source_config *cfg)
{
	s->cfg = cfg;
	s->out = cfg->out ? cfg->out : stdout;
	s->pid = cfg->pid;
	s->pagemap_fd = s->kpf_fd = s->pidfd = s->lfd = s->cfd = s->vmm_lfd = s->mem_fd = -1;
	s->ho.sock = s->ho.uffd = -1;
	s->tty = !cfg->json && isatty(STDERR_FILENO);
	s->t0 = src_now_ns();
	for (int i = 0; i < MAX_CONNS; i++)
		s->conns[i].fd = -1;
	for (int i = 0; i < MAX_CTLS; i++)
		s->ctls[i].fd = -1;
}

int fl_source_run(const struct fl_source_config *cfg)
{
	struct sigaction sa = { .sa_handler = on_signal }, ign = { .sa_handler = SIG_IGN };
	struct sigaction old_int, old_term, old_pipe;
	struct src *s = calloc(1, sizeof(*s));
	int ret;

	if (!s)
		return -ENOMEM;
	src_init(s, cfg);
	src_stop_flag = 0;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);
	/* a reader of --json's stdout (or of stderr) that goes away must not end
	 * the run: after the switchover the process is stopped and only we serve
	 * its memory; writes fail with EPIPE instead (out_end) */
	sigemptyset(&ign.sa_mask);
	sigaction(SIGPIPE, &ign, &old_pipe);
	ret = src_setup(s);
	if (!ret) {
		src_print_ready(s);
		ret = src_serve(s);
		if (ret == -EINTR && !s->cfg->json) {
			src_say(s, "interrupted");
		} else if (ret && ret != -EINTR) {
			src_fail(s, ret, "%s", ret == -ESRCH ? "the process exited" : strerror(-ret));
			src_say(s, "stopped: %s", s->why);
			tell_targets(s, ret);
		}
		src_release_vm(s);
		src_dirty_release(s);
		summary(s);
		if (ret == -EINTR && s->completed)	/* --keep-serving ended by the user */
			ret = 0;
		if (!ret && !s->completed)
			ret = -ECONNABORTED;
	}
	src_cleanup(s);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	sigaction(SIGPIPE, &old_pipe, NULL);
	free(s);
	return ret;
}

/* ---- test hook (source_test.h) ------------------------------------------------ */

/* Count what the source sent to a test peer: frames, and pages with contents. */
static void test_drain(int fd, struct fl_wire_reader *rd, const struct fl_wire_limits *lim,
		       struct fl_source_test_peer *p)
{
	for (;;) {
		ssize_t k = fl_wire_reader_fill(rd, fd);
		fl_frame *f;
		char err[256];

		while (fl_wire_next(rd, lim, &f, err, sizeof(err)) > 0) {
			p->frames++;
			if (f->body_case == FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA)
				p->pages += f->page_data->data.len / lim->page_size;
			fl_wire_free(f);
		}
		if (k <= 0 && k != -ENOBUFS)
			return;
	}
}

static struct conn *test_connect(struct src *s, int fd, unsigned i)
{
	for (int j = 0; j < MAX_CONNS; j++) {
		struct conn *c = &s->conns[j];
		char err[256] = "";

		if (c->fd >= 0)
			continue;
		memset(c, 0, sizeof(*c));
		c->fd = fd;
		c->phase = CP_HELLO;
		c->since_ns = src_now_ns();
		snprintf(c->host, sizeof(c->host), "peer%u", i);
		snprintf(c->peer, sizeof(c->peer), "peer%u", i);
		if (fl_wire_reader_init(&c->rd) || fl_wire_writer_init(&c->wr) ||
		    fl_chan_start(&c->ch, NULL, fd, true, NULL, err, sizeof(err))) {
			src_conn_close(s, c);
			return NULL;
		}
		return c;
	}
	close(fd);
	return NULL;
}

/* One source set up once (regions, pagemap, buffers: the expensive part)
 * and the state right after it, which every session starts from. */
struct fl_source_test {
	struct src s, pristine;
};

int fl_source_test_open(const struct fl_source_config *cfg, struct fl_source_test **out)
{
	struct fl_source_test *t;
	int ret;

	if (cfg->vmm_socket || !cfg->no_stop)
		return -EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	src_init(&t->s, cfg);
	t->s.no_sockets = true;
	ret = src_setup(&t->s);
	if (ret) {
		src_cleanup(&t->s);
		free(t);
		return ret;
	}
	t->pristine = t->s;
	*out = t;
	return 0;
}

void fl_source_test_close(struct fl_source_test *t)
{
	if (!t)
		return;
	src_cleanup(&t->s);
	free(t);
}

/* Back to the state right after setup: the per-page bits cleared in
 * place, every other field (flags, pins, counters, cursors) copied back. */
static void test_reset(struct fl_source_test *t)
{
	struct src *s = &t->s;

	for (int i = 0; i < MAX_CONNS; i++)
		if (s->conns[i].fd >= 0)
			src_conn_close(s, &s->conns[i]);
	for (unsigned i = 0; i < s->nreg; i++) {
		struct region *r = &s->reg[i];

		memset(r->poison, 0, (r->npages + 7) / 8);
		memset(r->psent, 0, (r->npages + 7) / 8);
		if (r->hash)
			memset(r->hash, 0, r->npages * 8);
		fl_statemap_free(&r->map);
	}
	*s = t->pristine;
}

int fl_source_test_session(struct fl_source_test *t, struct fl_source_test_peer *p, unsigned n,
			   unsigned switch_after)
{
	struct src *s = &t->s;
	int ret = 0, peer[MAX_CONNS];
	struct fl_wire_reader prd[MAX_CONNS];
	struct fl_wire_limits lim;

	if (n > MAX_CONNS)
		return -EINVAL;
	test_reset(t);
	lim = s->lim;
	/* what the target reads: the source's frames, any region, any page */
	for (unsigned i = 0; i < s->nreg; i++)
		lim.region_pages[i] = s->reg[i].npages;
	for (unsigned i = 0; i < n; i++) {
		peer[i] = -1;
		fl_wire_reader_init(&prd[i]);
	}
	for (unsigned i = 0; !ret && i < n; i++) {
		struct conn *c, *tgt = src_active_conn(s);
		int sv[2];
		size_t off = 0;

		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0) {
			ret = -errno;
			break;
		}
		peer[i] = sv[1];
		p[i].target_before = tgt != NULL;
		c = test_connect(s, sv[0], i);
		/* feed it, answer, drain, until the source neither reads nor says more */
		for (unsigned round = 0; !ret && c && c->fd >= 0 && round < 1000; round++) {
			ssize_t k = off < p[i].len ? write(sv[1], p[i].in + off, p[i].len - off) : 0;
			uint64_t before = 0, after = 0;
			size_t rd_before = c->rd.off + c->rd.len;

			for (unsigned j = 0; j <= i; j++)
				before += p[j].frames;

			if (k > 0)
				off += (size_t)k;
			ret = conn_io(s, c, POLLIN);
			for (int j = 0; !ret && j < MAX_CONNS; j++) {
				struct conn *a = &s->conns[j];

				if (a->fd >= 0 && a == src_active_conn(s))
					ret = src_produce(s, a);
				if (!ret && a->fd >= 0 && fl_wire_pending(&a->wr))
					ret = conn_flush(s, a);
			}
			for (unsigned j = 0; j <= i; j++)
				if (peer[j] >= 0)
					test_drain(peer[j], &prd[j], &lim, &p[j]);
			for (unsigned j = 0; j <= i; j++)
				after += p[j].frames;
			/* all sent and nothing moved (a frame cut short stays unread) */
			if (off == p[i].len && k <= 0 && after == before &&
			    (c->fd < 0 || (!fl_wire_pending(&c->wr) &&
					   c->rd.off + c->rd.len == rd_before)))
				break;
		}
		p[i].target_before_stays = tgt && tgt->fd >= 0 && tgt == src_active_conn(s) && tgt != c;
		p[i].target_after = c && c->fd >= 0 && c == src_active_conn(s);
		if (!ret && i == switch_after && src_active_conn(s) && src_active_conn(s)->phase == CP_WAIT)
			ret = src_do_switchover(s, src_active_conn(s));
	}
	for (unsigned i = 0; i < n; i++) {
		if (peer[i] >= 0)
			close(peer[i]);
		fl_wire_reader_free(&prd[i]);
	}
	test_reset(t);
	return ret;
}
