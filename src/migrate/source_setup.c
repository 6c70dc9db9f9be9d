// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: setting a run up: credentials, the listening socket,
 * the regions (from --pid/--range or a VMM's handover), dirty tracking.
 */
#include "source_int.h"
#include "regions.h"

/* ---- set-up ---------------------------------------------------------- */

static int tcp_listen(struct src *s)
{
	const char *spec = s->cfg->listen ? s->cfg->listen : FL_SOURCE_DEFAULT_LISTEN;
	char err[320];
	/* 7411: the port of FL_SOURCE_DEFAULT_LISTEN, for the examples */
	int fd = fl_netaddr_listen(spec, 7411, 8, SOCK_NONBLOCK, s->where, sizeof(s->where), err,
				   sizeof(err));

	if (fd < 0) {
		src_say(s, "%s", err);
		return fd;
	}
	s->lfd = fd;
	{
		struct sockaddr_storage a;
		socklen_t alen = sizeof(a);
		char what[300];

		snprintf(what, sizeof(what), "--listen %s", spec);
		if (getsockname(fd, (struct sockaddr *)&a, &alen) < 0)
			return -errno;
		int ret = fl_tls_plain_check(s->tls, &s->cfg->tls, (struct sockaddr *)&a, what, err,
					     sizeof(err));
		if (ret)
			src_say(s, "%s", err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Does a VmFlags line of smaps name flag `f` (two letters)? */
static bool vmflag(const char *line, const char *f)
{
	for (const char *p = line + strlen("VmFlags:"); (p = strstr(p, f)); p += 2)
		if (p[-1] == ' ' && (p[2] == ' ' || p[2] == '\n' || !p[2]))
			return true;
	return false;
}

/*
 * VM_IO / VM_PFNMAP mappings (device memory, [vvar]) inside a range: pagemap
 * walks skip VM_PFNMAP (its pages read as holes, so they would be served as
 * zeros), reading VM_IO may have side effects on a device (core dumps skip
 * it for that), and process_vm_readv refuses both.  Refused here, where it
 * can be said why.  smaps is the only place those flags show; reading it
 * walks the page tables once, at start, not during the switchover.
 */
static int refuse_device_memory(struct src *s)
{
	char path[64], line[512], name[256] = "";
	uint64_t start = 0, end = 0;
	int ret = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", s->pid);
	f = fopen(path, "re");
	if (!f) {
		ret = -errno;
		src_say(s, "cannot read %s: %s", path, strerror(-ret));
		return ret;
	}
	while (!ret && fgets(line, sizeof(line), f)) {
		uint64_t a, b, off;
		char perms[5];
		unsigned dmaj, dmin;
		unsigned long ino;
		int pos = 0;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %" SCNx64 " %x:%x %lu %n", &a, &b, perms,
			   &off, &dmaj, &dmin, &ino, &pos) >= 7) {
			start = a;
			end = b;
			snprintf(name, sizeof(name), "%s", line + pos);
			name[strcspn(name, "\n")] = 0;
			continue;
		}
		if (strncmp(line, "VmFlags:", 8) || (!vmflag(line, "io") && !vmflag(line, "pf")))
			continue;
		line[strcspn(line, "\n")] = 0;
		for (unsigned i = 0; i < s->nreg; i++) {
			struct region *r = &s->reg[i];

			if (start >= r->addr + r->len || end <= r->addr)
				continue;
			src_say(s, "--range %u (0x%" PRIx64 ":%" PRIu64 "): 0x%" PRIx64 "-0x%" PRIx64 " (%s) "
			    "is device memory (VM_IO/VM_PFNMAP: \"%s\" in %s): pagemap hides its pages "
			    "and process_vm_readv can't read it, so it can't be served; pass only guest "
			    "RAM", i, r->addr, r->len, start, end, name[0] ? name : "[anon]", line, path);
			ret = -EINVAL;
			break;
		}
	}
	fclose(f);
	return ret;
}

/* Regions from --pid + --range: every byte must be mapped in the process. */
static int regions_from_pid(struct src *s)
{
	const struct fl_source_config *cfg = s->cfg;
	char path[64];
	struct vma *v = NULL;
	unsigned nv = 0;
	int ret;

	if (geteuid()) {
		src_say(s, "needs root: it reads page frames from /proc/%d/pagemap and /proc/kpageflags, "
		    "opens /proc/%d/map_files and takes the process's userfaultfd with pidfd_getfd",
		    cfg->pid, cfg->pid);
		return -EPERM;
	}
	ret = src_read_maps(cfg->pid, &v, &nv);
	if (ret == -ESRCH || (!ret && kill(cfg->pid, 0) && errno == ESRCH)) {
		free(v);
		src_say(s, "no process with PID %d (--pid %d): check it with `ps -p %d`", cfg->pid,
		    cfg->pid, cfg->pid);
		return -ESRCH;
	}
	if (ret) {
		src_say(s, "cannot read /proc/%d/maps: %s", cfg->pid, strerror(-ret));
		return ret;
	}
	s->nreg = cfg->nranges;
	for (unsigned i = 0; i < s->nreg; i++) {
		/* hugetlbfs guests: every range served in its mapping's huge pages */
		long ps = fl_mapping_page_size(cfg->pid, cfg->ranges[i].addr);

		if (ps <= 0)
			ps = (long)sysconf(_SC_PAGESIZE);
		if (i && (uint32_t)ps != s->ps) {
			src_say(s, "--range %u is mapped with %ld-byte pages, --range 0 with %u-byte ones: "
			    "serve each page size with its own source", i, ps, s->ps);
			free(v);
			return -EINVAL;
		}
		s->ps = (uint32_t)ps;
	}
	for (unsigned i = 0; i < s->nreg; i++) {
		struct region *r = &s->reg[i];

		r->addr = cfg->ranges[i].addr;
		r->len = cfg->ranges[i].len;
		if (r->addr % s->ps || r->len % s->ps) {
			src_say(s, "--range %u (0x%" PRIx64 ":%" PRIu64 ") is not page aligned: address and "
			    "length must be multiples of %u", i, r->addr, r->len, s->ps);
			free(v);
			return -EINVAL;
		}
		for (unsigned j = 0; j < i; j++)
			if (r->addr < s->reg[j].addr + s->reg[j].len &&
			    s->reg[j].addr < r->addr + r->len) {
				src_say(s, "--range %u overlaps --range %u", i, j);
				free(v);
				return -EINVAL;
			}
		ret = src_build_segments(s, r, i, v, nv);
		if (ret) {
			free(v);
			return ret;
		}
	}
	free(v);
	ret = refuse_device_memory(s);
	if (ret)
		return ret;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", s->pid);
	s->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (s->pagemap_fd < 0) {
		ret = -errno;
		src_say(s, "cannot open %s: %s", path, strerror(-ret));
		return ret;
	}
	snprintf(path, sizeof(path), "/proc/%d/mem", s->pid);
	s->mem_fd = open(path, O_RDONLY | O_CLOEXEC);
	s->mem_err = s->mem_fd < 0 ? errno : 0;
	s->pidfd = (int)syscall(SYS_pidfd_open, s->pid, 0);
	if (s->pidfd < 0)
		snprintf(s->pidfd_err, sizeof(s->pidfd_err), "pidfd_open(%d): %s: poison cannot be "
			 "injected", s->pid, strerror(errno));
	return 0;
}

/* Wait for one acceptable handover on --vmm-socket (SIGINT/SIGTERM end the wait). */
static int accept_vmm(struct src *s)
{
	const char *path = s->cfg->vmm_socket;
	char err[512];
	int ret = fl_handover_listen(path, err, sizeof(err));

	if (ret < 0) {
		src_say(s, "--vmm-socket %s: %s", path, err);
		return ret;
	}
	s->vmm_lfd = ret;
	if (s->cfg->json && src_out_open(s)) {
		fprintf(s->out, "{\"event\":\"vmm_wait\",\"ts_ns\":%" PRId64 ",\"listen\":\"%s\"",
			src_now_ns(), s->where);
		src_json_str_field(s->out, "vmm_socket", path);
		fputs("}\n", s->out);
		src_out_end(s);
	} else if (!s->cfg->json) {
		src_say(s, "waiting for a VMM to hand over its memory on %s (targets connect to %s)", path,
		    s->where);
	}
	for (;;) {
		struct pollfd p = { .fd = s->vmm_lfd, .events = POLLIN };

		if (src_stop_flag)
			return -EINTR;
		if (poll(&p, 1, 500) < 0 && errno != EINTR) {
			ret = -errno;
			src_say(s, "waiting for a VMM on %s: %s", path, strerror(-ret));
			return ret;
		}
		if (!(p.revents & POLLIN))
			continue;
		ret = fl_handover_accept_flags(s->vmm_lfd, &s->ho, FL_HANDOVER_NEED_MEMFD, 0, err,
					       sizeof(err));
		if (!ret)
			break;
		if (ret == -EMFILE || ret == -ENFILE || ret == -ENOMEM) {
			src_say(s, "cannot take a handover on %s: %s", path, err);
			return ret;
		}
		/* a refused VMM got the same sentence and may try again; a hang-up
		 * without a handover is another listener's liveness probe */
		if (ret != -ECONNRESET)
			src_say(s, "refused a handover on %s: %s", path, err);
	}
	/* one VMM per run: a second one gets a clear "no router socket" */
	close(s->vmm_lfd);
	s->vmm_lfd = -1;
	unlink(path);
	return 0;
}

/*
 * Does the VMM map every region from its memfd, at the offsets handed over?
 * Only then do its pagemap entries describe the pages served (a pid from
 * another namespace, or a region list that isn't what it maps, would read
 * somebody else's page table).
 */
static bool vmm_maps_memfds(struct src *s, char *why, size_t len)
{
	struct vma *v;
	unsigned n;
	bool ok = true;

	if (s->pid <= 0) {
		snprintf(why, len, "the VMM's pid is unknown");
		return false;
	}
	if (src_read_maps(s->pid, &v, &n)) {
		snprintf(why, len, "cannot read /proc/%d/maps", s->pid);
		return false;
	}
	for (unsigned i = 0; i < s->nreg && ok; i++) {
		struct region *r = &s->reg[i];
		struct seg *g = &r->segs[0];
		uint64_t at = r->addr, end = r->addr + r->len;
		struct stat st;

		if (fstat(g->fd, &st)) {
			ok = false;
			break;
		}
		for (unsigned j = 0; j < n && at < end; j++) {
			if (v[j].end <= at)
				continue;
			if (v[j].start > at || v[j].perms[3] != 's' || v[j].inode != st.st_ino ||
			    v[j].off + (at - v[j].start) != g->file_off + (at - r->addr))
				break;
			at = v[j].end;
		}
		if (at < end) {
			snprintf(why, len, "process %d does not map region %u's memfd at 0x%" PRIx64,
				 s->pid, i, at);
			ok = false;
		}
	}
	free(v);
	return ok;
}

/* Regions from the handover: region i is the VMM's region i, read through its memfd. */
static int regions_from_handover(struct src *s)
{
	char why[160] = "", path[64];
	int ret = accept_vmm(s);

	if (ret)
		return ret;
	s->pid = s->ho.pid;
	s->ps = s->ho.page_size;
	if (s->pid <= 0 && !s->cfg->no_stop) {
		src_say(s, "the VMM that handed over on %s has no pid this source can see, so it can't "
		    "be stopped at switchover; use --no-stop to serve it anyway", s->cfg->vmm_socket);
		return -ESRCH;
	}
	s->nreg = s->ho.nregions;
	for (unsigned i = 0; i < s->nreg; i++) {
		struct region *r = &s->reg[i];
		struct fl_region *h = &s->ho.regions[i];
		struct seg *g;
		int fl;
		ssize_t k;

		r->addr = (uint64_t)(uintptr_t)h->base;
		r->len = h->length;
		r->segs = calloc(1, sizeof(*r->segs));
		if (!r->segs)
			return -ENOMEM;
		g = &r->segs[0];
		r->nsegs = 1;
		g->start = r->addr;
		g->end = r->addr + r->len;
		g->file_off = h->offset;
		g->fd = h->memfd;
		h->memfd = -1;	/* the segment owns it now */
		g->shared = g->file = true;
		g->shmem = src_fd_is_shmem(g->fd);
		fl = fcntl(g->fd, F_GETFL);
		g->writable_fd = fl >= 0 && (fl & O_ACCMODE) == O_RDWR;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", g->fd);
		k = readlink(path, g->name, sizeof(g->name) - 1);
		snprintf(g->name + (k > 0 ? k : 0), sizeof(g->name) - (size_t)(k > 0 ? k : 0), "%s",
			 k > 0 ? "" : "memfd");
	}
	if (vmm_maps_memfds(s, why, sizeof(why))) {
		snprintf(path, sizeof(path), "/proc/%d/pagemap", s->pid);
		s->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (s->pagemap_fd < 0)
			snprintf(why, sizeof(why), "cannot open %s: %s", path, strerror(errno));
	}
	if (s->pagemap_fd < 0)
		src_say(s, "note: %s: UFFDIO_POISON markers placed by others and hardware poison of "
		    "mapped frames are not watched (injected poison and unreadable pages still are)",
		    why);
	return 0;
}

/* What both inputs share, once regions and their segments are known. */
static int finish_regions(struct src *s)
{
	s->scan_pages = SCAN_BYTES / s->ps < SCAN_PAGES ? SCAN_BYTES / s->ps : SCAN_PAGES;
	if (!s->scan_pages)
		s->scan_pages = 1;
	s->batch_pages = fl_source_frame_pages(s->ps, BATCH_PAGES < s->scan_pages ? BATCH_PAGES :
							       s->scan_pages);
	s->answer_pages = fl_source_frame_pages(s->ps, ANSWER_PAGES < s->scan_pages ? ANSWER_PAGES :
								s->scan_pages);
	if (!s->batch_pages) {
		src_say(s, "pages of %u bytes don't fit in one wire frame (at most %u bytes with its "
		    "header): this page size can't be served", s->ps, FL_WIRE_MAX_FRAME);
		return -EMSGSIZE;
	}
	s->lim.page_size = s->ps;
	s->lim.nregions = s->nreg;
	for (unsigned i = 0; i < s->nreg; i++) {
		struct region *r = &s->reg[i];

		r->npages = r->len / s->ps;
		s->lim.region_pages[i] = r->npages;
		s->pages_total += r->npages;
		r->poison = src_bits_alloc(r->npages);
		r->psent = src_bits_alloc(r->npages);
		if (!r->poison || !r->psent)
			return -ENOMEM;
	}
	return 0;
}

int src_setup(struct src *s)
{
	const struct fl_source_config *cfg = s->cfg;
	int ret;

	{
		char err[512] = "";

		/* first: bad credentials show before anything else is set up */
		ret = fl_tls_load(&cfg->tls, true, &s->tls, err, sizeof(err));
		if (ret) {
			src_say(s, "%s", err);
			return ret;
		}
	}
	s->ps = (uint32_t)sysconf(_SC_PAGESIZE);	/* until the regions say otherwise */
	if (cfg->vmm_socket) {
		/* a busy port or control socket shows before anyone waits on the VMM */
		ret = tcp_listen(s);
		if (!ret && cfg->control)
			ret = src_ctl_listen(s, cfg->control);
		if (!ret)
			ret = regions_from_handover(s);
	} else {
		ret = regions_from_pid(s);
	}
	if (!ret)
		ret = finish_regions(s);
	if (ret)
		return ret;
	/* the memory_failure_* sysctls exist exactly when the kernel can mark
	 * pages hardware-poisoned: without them there is nothing to watch */
	s->memory_failure = !access("/proc/sys/vm/memory_failure_recovery", F_OK);
	if (s->memory_failure)
		s->kpf_fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	ret = src_dirty_choose(s);
	if (ret)
		return ret;
	if (getrandom(&s->session, sizeof(s->session), 0) != sizeof(s->session) ||
	    getrandom(&s->hash_seed, sizeof(s->hash_seed), 0) != sizeof(s->hash_seed))
		s->session = (uint64_t)src_now_ns() ^ ((uint64_t)getpid() << 32);
	if (cfg->session)
		s->session = cfg->session;
	s->buf = aligned_alloc(4096, (size_t)s->scan_pages * s->ps);
	if (!s->buf)
		return -ENOMEM;
	if (!cfg->vmm_socket && !s->no_sockets) {
		ret = tcp_listen(s);
		if (!ret && cfg->control)
			ret = src_ctl_listen(s, cfg->control);
	}
	return ret;
}
void src_print_ready(struct src *s)
{
	if (s->cfg->json) {
		if (!src_out_open(s))
			return;
		fprintf(s->out, "{\"event\":\"source_ready\",\"ts_ns\":%" PRId64 ",\"pid\":%d,"
			"\"listen\":\"%s\"", src_now_ns(), s->pid, s->where);
		src_json_str_field(s->out, "control", s->cfg->control);
		src_json_str_field(s->out, "vmm_socket", s->cfg->vmm_socket);
		fprintf(s->out, ",\"pagemap\":%s", s->pagemap_fd >= 0 ? "true" : "false");
		fprintf(s->out, ",\"page_size\":%u,\"pages_total\":%" PRIu64 ",\"session\":\"%016"
			PRIx64 "\",\"dirty_tracking\":\"%s\",\"kpageflags\":%s,\"memory_failure\":%s",
			s->ps, s->pages_total, s->session, src_dirty_name(s),
			s->kpf_fd >= 0 ? "true" : "false", s->memory_failure ? "true" : "false");
		src_json_str_field(s->out, "dirty_tracking_why", s->dirty_why);
		fputs(",\"regions\":[", s->out);
		for (unsigned i = 0; i < s->nreg; i++) {
			const struct region *r = &s->reg[i];

			fprintf(s->out, "%s{\"id\":%u,\"addr\":\"0x%" PRIx64 "\",\"length\":%" PRIu64
				",\"pages\":%" PRIu64 ",\"shared_file\":%s,\"backing\":", i ? "," : "",
				i, r->addr, r->len, r->npages,
				r->segs[0].shared && r->segs[0].file ? "true" : "false");
			fl_json_str(s->out, r->segs[0].name, sizeof(r->segs[0].name));
			fputc('}', s->out);
		}
		fputs("]}\n", s->out);
		src_out_end(s);
		return;
	}
	src_say(s, "serving %s %d: %u region(s), %" PRIu64 " pages (%.1f MiB) on %s%s%s",
	    s->cfg->vmm_socket ? "the memfds handed over by VMM process" : "process", s->pid,
	    s->nreg, s->pages_total, s->pages_total * (double)s->ps / (1 << 20), s->where,
	    s->cfg->control ? "; control socket " : "", s->cfg->control ? s->cfg->control : "");
	src_say(s, "dirty tracking: %s", s->dirty_why);
	src_say(s, "hardware poison: %s",
	    s->cfg->vmm_socket && s->pagemap_fd < 0 ? "seen only when a memfd read fails" :
	    s->kpf_fd >= 0 ? "kpageflags HWPOISON checked every second" :
	    !s->memory_failure ? "none possible (kernel without CONFIG_MEMORY_FAILURE); "
	    "UFFDIO_POISON markers checked every second" :
	    "/proc/kpageflags unreadable: can't be told from other read failures, which end "
	    "the run");
}
