// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: dirty tracking — which pages changed since precopy read
 * them — and the choice of how (`--dirty auto|wp|soft-dirty|hash`).
 *
 * wp (the default where it works): userfaultfd write-protection in async
 * mode (UFFD_FEATURE_WP_ASYNC, Linux 6.7) read and reset with PAGEMAP_SCAN
 * on /proc/PID/pagemap.  It needs a userfaultfd of the VM's own address
 * space whose API features include WP_ASYNC: the VMM's, duplicated with
 * pidfd_getfd (--pid), or the one it handed over (--vmm-socket).  We
 * register MODE_WP over the guest ranges through it (UFFDIO_REGISTER acts
 * on the uffd's mm, whoever calls it), keeping the modes the VMM itself
 * registered there (a registration replaces them).  In async mode a write to
 * a protected page never waits for anybody: the kernel lifts the protection
 * itself, and the page reads PAGE_IS_WRITTEN until it is protected again.
 *
 * Precopy protects each window of pages (WP_WINDOW) just before it reads
 * the first page of it (PM_SCAN_WP_MATCHING on the written ones), so a
 * write after a page's precopy is always seen, and one before it is not
 * counted (precopy took those contents).  At switchover one PAGEMAP_SCAN per
 * region asks for the pages that are written or not present:
 *
 *   - written: read and classified (DIRTY, or ZERO, or poisoned);
 *   - not present and not written: only those precopy sent are read (a
 *     shmem page punched out through the mapping is not a write — its PTE
 *     keeps a write-protect marker — but it reads zero now);
 *   - everything else is as precopy saw it: CLEAN if sent, else ZERO.
 *
 * The answer is ranges and the kernel only walks page tables, so a round
 * costs a few ns per page of guest (protecting a never-touched shmem page
 * leaves a marker PTE, so every PTE is walked) plus the written pages, not a
 * read of every byte (hashing reads and hashes all of it, holes included).
 *
 * What it does not see, like soft-dirty: writes that don't go through the
 * VMM's page tables — write(2) or fallocate on a guest memfd, another
 * process's mapping of it (vhost-user).  So with --vmm-socket, where the
 * memfds are handed around, `auto` keeps hashes; --dirty wp there is the
 * operator's statement that nothing else writes them.
 *
 * When the tracking can't be trusted any more (the VMM unregistered or
 * remapped a range: PAGEMAP_SCAN then fails with EPERM), it says so once
 * and the switchover reads every page: all non-zero pages go as DIRTY.
 *
 * On the way out (at switchover already: the map is final) the protection
 * is removed: ranges we registered are unregistered; where the VMM had
 * registered the range itself, its pages are unprotected and MODE_WP stays
 * (unregistering would drop the VMM's own MISSING/MINOR registration for a
 * moment).  Async WP never blocks a write either way.
 */
#include "source_int.h"
#include "pagemap_scan.h"

#define WP_WINDOW 512		/* pages protected at once ahead of precopy (2 MiB of 4 KiB pages) */
#define WP_VEC 512		/* ranges per PAGEMAP_SCAN answer */
#define WP_MAX_RANGES 256	/* VMA pieces registered over all regions */
#define WP_MAX_UFFDS 16

/* One piece of a region inside one VMA, registered with the VMM's modes + WP. */
struct wp_range {
	uint64_t start, end;
	uint64_t vmm_modes;	/* UFFDIO_REGISTER_MODE_* the VMM had there (0: none) */
};

struct src_wp {
	int uffd;		/* a uffd of the VM's mm with WP_ASYNC */
	bool own_uffd;		/* our pidfd_getfd duplicate (closed at the end) */
	int vmm_fd;		/* its number in the VMM, -1: handed over */
	uint64_t features;
	unsigned nranges;
	struct wp_range ranges[WP_MAX_RANGES];
	uint64_t armed_to[FL_WIRE_MAX_REGIONS];	/* precopy: pages below this are protected */
	bool released;
	bool lost;		/* tracking can't be trusted: classify reads everything */
	char lost_why[256];
	struct page_region vec[WP_VEC];
};

const char *src_dirty_name(const struct src *s)
{
	return s->dirty == FL_DIRTY_WP ? "wp" : s->dirty == FL_DIRTY_SOFT ? "soft-dirty" : "hash";
}

/* ---- the VMM's userfaultfd --------------------------------------------- */

/* Features of a userfaultfd from its fdinfo ("API:\t<api>:<features>:<ioctls>"). */
static int uffd_features(pid_t pid, int fd, uint64_t *features)
{
	char path[64], line[256];
	FILE *f;
	int ret = -ENODATA;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", pid, fd);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long api, feat;

		if (sscanf(line, "API: %llx:%llx:", &api, &feat) == 2) {
			*features = feat;
			ret = 0;
			break;
		}
	}
	fclose(f);
	return ret;
}


/* Does a VmFlags line of smaps name flag `f` (two letters)? */
static bool has_vmflag(const char *line, const char *f)
{
	for (const char *p = line + strlen("VmFlags:"); (p = strstr(p, f)); p += 2)
		if (p[-1] == ' ' && (p[2] == ' ' || p[2] == '\n' || !p[2]))
			return true;
	return false;
}

/*
 * The pieces of every region, one per VMA, with the userfaultfd modes the VMA
 * has now (smaps VmFlags um/ui/uw): registering WP must keep them.
 */
static int plan_ranges(struct src *s, struct src_wp *w, char *err, size_t errlen)
{
	char path[64], line[512];
	uint64_t start = 0, end = 0;
	bool in_vma = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", s->pid);
	f = fopen(path, "re");
	if (!f) {
		int e = errno;

		snprintf(err, errlen, "cannot read %s: %s", path, strerror(e));
		return -e;
	}
	w->nranges = 0;
	while (fgets(line, sizeof(line), f)) {
		uint64_t a, b, modes = 0;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " ", &a, &b) == 2 && strchr(line, ' ') &&
		    strchr(line, '-') < strchr(line, ' ')) {
			start = a;
			end = b;
			in_vma = true;
			continue;
		}
		if (!in_vma || strncmp(line, "VmFlags:", 8))
			continue;
		in_vma = false;
		if (has_vmflag(line, "um"))
			modes |= UFFDIO_REGISTER_MODE_MISSING;
		if (has_vmflag(line, "uw"))
			modes |= UFFDIO_REGISTER_MODE_WP;
		if (has_vmflag(line, "ui"))
			modes |= UFFDIO_REGISTER_MODE_MINOR;
		for (unsigned i = 0; i < s->nreg; i++) {
			const struct region *r = &s->reg[i];
			uint64_t lo = start > r->addr ? start : r->addr;
			uint64_t hi = end < r->addr + r->len ? end : r->addr + r->len;

			if (lo >= hi)
				continue;
			if (w->nranges == WP_MAX_RANGES) {
				fclose(f);
				snprintf(err, errlen, "guest memory spans more than %d mappings",
					 WP_MAX_RANGES);
				return -E2BIG;
			}
			w->ranges[w->nranges++] = (struct wp_range){ lo, hi, modes };
		}
	}
	fclose(f);
	return 0;
}

/* Take WP off every range registered so far (the first n of them). */
static void unregister_ranges(struct src_wp *w, unsigned n, unsigned *unreg, unsigned *unprot)
{
	for (unsigned i = 0; i < n; i++) {
		struct wp_range *g = &w->ranges[i];
		struct uffdio_range ur = { g->start, g->end - g->start };
		struct uffdio_writeprotect wp = { .range = ur, .mode = 0 };

		if (!g->vmm_modes) {
			/* ours alone: unregistering also clears every protection */
			if (!ioctl(w->uffd, UFFDIO_UNREGISTER, &ur) && unreg)
				(*unreg)++;
		} else if (!ioctl(w->uffd, UFFDIO_WRITEPROTECT, &wp) && unprot) {
			(*unprot)++;
		}
	}
}

/* One PAGEMAP_SCAN; the number of ranges in its vec, or negative errno. */
static int pm_scan(struct src *s, struct pm_scan_arg *a)
{
	int n;

	a->size = sizeof(*a);
	n = ioctl(s->pagemap_fd, PAGEMAP_SCAN, a);
	return n < 0 ? -errno : n;
}

/* Protect the written pages of [start, end) (everything, the first time). */
static int arm(struct src *s, struct src_wp *w, uint64_t start, uint64_t end)
{
	while (start < end) {
		struct pm_scan_arg a = {
			.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
			.start = start, .end = end,
			.category_mask = PAGE_IS_WRITTEN,
			.return_mask = PAGE_IS_WRITTEN,
			.vec = (uintptr_t)w->vec, .vec_len = WP_VEC,
		};
		int n = pm_scan(s, &a);

		if (n < 0)
			return n;
		if (a.walk_end <= start)
			return -EIO;
		start = a.walk_end;
	}
	return 0;
}

static const char *arm_error(int err)
{
	switch (err) {
	case -EPERM:
		return "a guest mapping has no async write-protection (PAGEMAP_SCAN: EPERM; the "
		       "VMM unregistered or remapped it?)";
	case -ENOTTY:
		return "this kernel has no PAGEMAP_SCAN (Linux >= 6.7)";
	default:
		return strerror(-err);
	}
}

/*
 * Register MODE_WP (plus the VMM's own modes) over every region through uffd
 * and protect it all.  0, or negative errno with why in err (nothing left
 * registered then).
 */
static int try_uffd(struct src *s, struct src_wp *w, char *err, size_t errlen)
{
	unsigned done = 0;
	int ret = plan_ranges(s, w, err, errlen);

	if (ret)
		return ret;
	for (; done < w->nranges; done++) {
		struct wp_range *g = &w->ranges[done];
		struct uffdio_register reg = {
			.range = { g->start, g->end - g->start },
			.mode = g->vmm_modes | UFFDIO_REGISTER_MODE_WP,
		};

		if (ioctl(w->uffd, UFFDIO_REGISTER, &reg)) {
			ret = -errno;
			snprintf(err, errlen, "UFFDIO_REGISTER(WP) of 0x%" PRIx64 "-0x%" PRIx64 ": %s",
				 g->start, g->end, ret == -EBUSY ? "another userfaultfd of the VMM "
				 "covers it" : strerror(-ret));
			break;
		}
	}
	for (unsigned i = 0; !ret && i < s->nreg; i++) {
		ret = arm(s, w, s->reg[i].addr, s->reg[i].addr + s->reg[i].len);
		if (ret)
			snprintf(err, errlen, "write-protecting region %u: %s", i, arm_error(ret));
	}
	if (ret)
		unregister_ranges(w, done, NULL, NULL);
	return ret;
}

/* Set up wp tracking; 0, or negative errno with what is missing in err. */
static int wp_setup(struct src *s, char *err, size_t errlen)
{
	struct src_wp *w;
	int fds[WP_MAX_UFFDS], n, ret = -ENOENT;
	char last[256] = "";
	uint64_t feat = 0;

	if (s->pagemap_fd < 0) {
		snprintf(err, errlen, "the VMM's pagemap, which PAGEMAP_SCAN reads, is not usable "
			 "here (see above)");
		return -ENOENT;
	}
	if (s->cfg->vmm_socket) {
		fds[0] = s->ho.uffd;
		n = 1;
	} else {
		n = src_list_uffds(s->pid, fds, WP_MAX_UFFDS);
		if (n < 0) {
			snprintf(err, errlen, "cannot list /proc/%d/fd: %s", s->pid, strerror(-n));
			return n;
		}
		if (!n) {
			snprintf(err, errlen, "process %d holds no userfaultfd: write-protection needs one "
				 "of its own with UFFD_FEATURE_WP_ASYNC (kernel >= 6.7)", s->pid);
			return -ENOENT;
		}
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		int r = s->cfg->vmm_socket ? uffd_features(getpid(), fds[i], &feat) :
			uffd_features(s->pid, fds[i], &feat);

		if (r) {
			snprintf(last, sizeof(last), "cannot read the features of userfaultfd %d: %s",
				 fds[i], strerror(-r));
			continue;
		}
		if (!(feat & UFFD_FEATURE_WP_ASYNC)) {
			char which[48] = "the handed-over userfaultfd";

			if (!s->cfg->vmm_socket)
				snprintf(which, sizeof(which), "the VMM's userfaultfd (fd %d)", fds[i]);
			snprintf(last, sizeof(last), "%s lacks UFFD_FEATURE_WP_ASYNC (features 0x%" PRIx64
				 "): create it with that feature (kernel >= 6.7)", which, feat);
			ret = -EOPNOTSUPP;
			continue;
		}
		if (s->cfg->vmm_socket) {
			w->uffd = fds[i];
			w->vmm_fd = -1;
		} else {
			if (s->pidfd < 0) {
				snprintf(last, sizeof(last), "%s", s->pidfd_err);
				ret = -ENOSYS;
				break;
			}
			w->uffd = (int)syscall(SYS_pidfd_getfd, s->pidfd, fds[i], 0);
			if (w->uffd < 0) {
				ret = -errno;
				snprintf(last, sizeof(last), "pidfd_getfd of fd %d of process %d: %s",
					 fds[i], s->pid, strerror(-ret));
				continue;
			}
			w->own_uffd = true;
			w->vmm_fd = fds[i];
		}
		w->features = feat;
		ret = try_uffd(s, w, last, sizeof(last));
		if (!ret)
			break;
		if (w->own_uffd)
			close(w->uffd);
		w->own_uffd = false;
		w->uffd = -1;
	}
	if (ret) {
		snprintf(err, errlen, "%s", last);
		free(w);
		return ret;
	}
	s->wp = w;
	return 0;
}

/* ---- soft-dirty --------------------------------------------------------- */

/* Does pagemap soft-dirty work here?  Try it on a page of our own. */
static bool probe_soft_dirty(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	volatile uint8_t *p = mmap(NULL, (size_t)ps, PROT_READ | PROT_WRITE,
				   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint64_t e1 = 0, e2 = 0;
	int pm, cr;
	bool ok = false;

	if (p == MAP_FAILED)
		return false;
	p[0] = 1;
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	cr = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	if (pm >= 0 && cr >= 0 && write(cr, "4", 1) == 1 &&
	    pread(pm, &e1, 8, (off_t)((uintptr_t)p / (uintptr_t)ps * 8)) == 8) {
		p[0] = 2;
		if (pread(pm, &e2, 8, (off_t)((uintptr_t)p / (uintptr_t)ps * 8)) == 8)
			ok = !(e1 & PM_SOFT_DIRTY) && (e2 & PM_SOFT_DIRTY);
	}
	if (pm >= 0)
		close(pm);
	if (cr >= 0)
		close(cr);
	munmap((void *)p, (size_t)ps);
	return ok;
}

/* ---- choosing ------------------------------------------------------------ */

/*
 * --dirty: wp where the VMM's userfaultfd allows it, else soft-dirty where
 * the kernel has it, else hashes; with --vmm-socket auto means hashes (see
 * the header).  s->dirty and s->dirty_why say which and why.
 */
int src_dirty_choose(struct src *s)
{
	const struct fl_source_config *cfg = s->cfg;
	char wp_err[300] = "";
	int ret;

	if (cfg->dirty == FL_DIRTY_WP || (cfg->dirty == FL_DIRTY_AUTO && !cfg->vmm_socket)) {
		ret = wp_setup(s, wp_err, sizeof(wp_err));
		if (!ret) {
			s->dirty = FL_DIRTY_WP;
			if (s->wp->own_uffd)
				snprintf(s->dirty_why, sizeof(s->dirty_why), "userfaultfd write-protection "
					 "(async) through process %d's userfaultfd (its fd %d), read with "
					 "PAGEMAP_SCAN", s->pid, s->wp->vmm_fd);
			else
				snprintf(s->dirty_why, sizeof(s->dirty_why), "userfaultfd write-protection "
					 "(async) through the handed-over userfaultfd, read with PAGEMAP_SCAN "
					 "(writes through other mappings of the memfds are not seen)");
			return 0;
		}
		if (ret == -ENOMEM)
			return ret;
		if (cfg->dirty == FL_DIRTY_WP) {
			src_say(s, "--dirty wp: %s, or use --dirty hash", wp_err);
			return ret;
		}
	}
	if (cfg->vmm_socket) {
		if (cfg->dirty == FL_DIRTY_SOFT && s->pagemap_fd < 0) {
			src_say(s, "--dirty soft-dirty needs the VMM's pagemap, which is not usable here "
			    "(see above); use --dirty hash");
			return -EINVAL;
		}
		s->softdirty = cfg->dirty == FL_DIRTY_SOFT;
	} else {
		s->softdirty = cfg->dirty == FL_DIRTY_SOFT ||
			       (cfg->dirty == FL_DIRTY_AUTO && probe_soft_dirty());
	}
	if (cfg->dirty == FL_DIRTY_SOFT && !probe_soft_dirty())
		src_say(s, "warning: --dirty soft-dirty, but this kernel's soft-dirty bits did not work on "
		    "a test page (CONFIG_MEM_SOFT_DIRTY off?): writes may be missed");
	s->dirty = s->softdirty ? FL_DIRTY_SOFT : FL_DIRTY_HASH;
	if (cfg->dirty == FL_DIRTY_SOFT)
		snprintf(s->dirty_why, sizeof(s->dirty_why), "soft-dirty bits (--dirty soft-dirty)");
	else if (cfg->dirty == FL_DIRTY_HASH)
		snprintf(s->dirty_why, sizeof(s->dirty_why), "page hashes (--dirty hash)");
	else if (cfg->vmm_socket)
		snprintf(s->dirty_why, sizeof(s->dirty_why), "page hashes of the memfds' contents: "
			 "writes through other mappings of them (vhost-user, write(2)) count too, "
			 "which write-protection and soft-dirty bits in the VMM don't see "
			 "(--dirty wp to use the handed-over userfaultfd anyway)");
	else if (s->softdirty)
		snprintf(s->dirty_why, sizeof(s->dirty_why), "soft-dirty bits (no write-protection: "
			 "%s)", wp_err);
	else
		snprintf(s->dirty_why, sizeof(s->dirty_why), "page hashes (no write-protection: %s; "
			 "no soft-dirty bits on this kernel)", wp_err);
	if (!s->softdirty)
		for (unsigned i = 0; i < s->nreg; i++) {
			s->reg[i].hash = calloc(s->reg[i].npages ? s->reg[i].npages : 1, 8);
			if (!s->reg[i].hash)
				return -ENOMEM;
		}
	return 0;
}

/* ---- precopy --------------------------------------------------------------- */

static void wp_lost(struct src *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void wp_lost(struct src *s, const char *fmt, ...)
{
	va_list ap;

	if (s->wp->lost)
		return;
	s->wp->lost = true;
	va_start(ap, fmt);
	vsnprintf(s->wp->lost_why, sizeof(s->wp->lost_why), fmt, ap);
	va_end(ap);
	if (s->cfg->json && src_out_open(s)) {
		fprintf(s->out, "{\"event\":\"dirty_tracking_lost\",\"ts_ns\":%" PRId64, src_now_ns());
		src_json_str_field(s->out, "reason", s->wp->lost_why);
		fputs("}\n", s->out);
		src_out_end(s);
	} else if (!s->cfg->json)
		src_say(s, "dirty tracking lost: %s; at switchover every page is read and all "
		    "non-zero ones are sent as dirty", s->wp->lost_why);
}

/*
 * Before precopy reads pages [first, first + n) of region ri: protect them
 * (and the rest of their window) so that a write from now on shows.  A pass
 * of precopy starts at page 0 of a region, so page 0 always protects anew.
 */
int src_dirty_before_read(struct src *s, unsigned ri, uint64_t first, unsigned n)
{
	struct src_wp *w = s->wp;
	const struct region *r = &s->reg[ri];
	uint64_t end;
	int ret;

	if (s->dirty != FL_DIRTY_WP || !w || w->released || w->lost)
		return 0;
	if (first && first + n <= w->armed_to[ri])
		return 0;
	end = (first / WP_WINDOW + 1) * WP_WINDOW;
	if (end < first + n)
		end = first + n;
	if (end > r->npages)
		end = r->npages;
	ret = arm(s, w, r->addr + first * s->ps, r->addr + end * s->ps);
	if (ret == -EINVAL && first) {
		/* a huge page the window cuts (hugetlbfs can't be protected in
		 * part): protect the rest of the region at once */
		end = r->npages;
		ret = arm(s, w, r->addr + first * s->ps, r->addr + end * s->ps);
	}
	if (ret == -ESRCH)
		return ret;
	if (ret) {
		wp_lost(s, "write-protecting region %u at page %" PRIu64 ": %s", ri, first,
			arm_error(ret));
		return 0;
	}
	w->armed_to[ri] = end;
	return 0;
}

/* ---- switchover ------------------------------------------------------------ */

/* Read the listed pages of region ri and set their states: ZERO, DIRTY or poisoned. */
static int settle(struct src *s, unsigned ri, const uint64_t *idx, unsigned n)
{
	struct region *r = &s->reg[ri];
	int ret;

	if (!n)
		return 0;
	ret = src_read_pme(s, r, idx, n, s->pme);
	if (ret)
		return ret;
	for (unsigned i = 0; i < n; i++)
		if (!src_bit_get(r->poison, idx[i]) && src_pme_hwpoison(s, s->pme[i]))
			src_note_poison(s, ri, idx[i], "hwpoison");
	ret = src_read_data(s, r, idx, n, s->pme, s->buf, s->res);
	if (ret)
		return ret;
	src_note_read_poison(s, ri, idx, n, s->res);
	for (unsigned j = 0; j < n; j++) {
		const uint8_t *page = s->buf + (size_t)j * s->ps;

		if (s->res[j] >= R_POISON || src_bit_get(r->poison, idx[j]))
			continue;
		fl_statemap_set(&r->map, idx[j], s->res[j] == R_ZERO || src_all_zero(page, s->ps) ?
				ST_ZERO : ST_DIRTY);
	}
	return 0;
}

/* Is every byte of every region still mapped?  A range the VMM unmapped is
 * not in PAGEMAP_SCAN's answer at all, so it must be read the old way. */
static bool regions_mapped(struct src *s, unsigned ri)
{
	const struct region *r = &s->reg[ri];
	uint64_t at = r->addr, end = r->addr + r->len;
	struct vma *v;
	unsigned n;

	if (src_read_maps(s->pid, &v, &n))
		return false;
	for (unsigned j = 0; j < n && at < end; j++)
		if (v[j].start <= at && v[j].end > at)
			at = v[j].end;
	free(v);
	return at >= end;
}

/*
 * Region ri's final states from the written pages (r->map already all ZERO).
 * 1: write tracking can't answer for this region, classify it by reading
 * every page; 0 done; negative errno.
 */
int src_dirty_classify(struct src *s, unsigned ri)
{
	struct src_wp *w = s->wp;
	struct region *r = &s->reg[ri];
	uint64_t at = r->addr, end = r->addr + r->len, ridx[SCAN_PAGES];
	unsigned nr = 0;
	int ret;

	if (s->dirty != FL_DIRTY_WP || !w || w->released || w->lost || !regions_mapped(s, ri))
		return 1;
	/* what precopy sent stays CLEAN unless the scan below says otherwise */
	for (uint64_t b = 0; b < (r->npages + 7) / 8; b++)
		for (uint8_t m = r->psent[b]; m; m &= (uint8_t)(m - 1))
			fl_statemap_set(&r->map, b * 8 + (uint64_t)__builtin_ctz(m), ST_CLEAN);
	while (at < end) {
		/* written, or not present: (categories ^ PRESENT) & (WRITTEN|PRESENT) */
		struct pm_scan_arg a = {
			/* EPERM where a VMA lost async WP: its pages can't be trusted */
			.flags = PM_SCAN_CHECK_WPASYNC,
			.start = at, .end = end,
			.category_inverted = PAGE_IS_PRESENT,
			.category_anyof_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT,
			.return_mask = PAGE_IS_WRITTEN | PAGE_IS_PRESENT,
			.vec = (uintptr_t)w->vec, .vec_len = WP_VEC,
		};
		int n = pm_scan(s, &a);

		if (n < 0) {
			wp_lost(s, "PAGEMAP_SCAN of region %u at switchover: %s", ri, arm_error(n));
			return 1;
		}
		for (int i = 0; i < n; i++) {
			uint64_t p = (w->vec[i].start - r->addr) / s->ps;
			uint64_t q = (w->vec[i].end - r->addr) / s->ps;
			bool written = w->vec[i].categories & PAGE_IS_WRITTEN;

			while (p < q) {
				if (!written && !(p & 7) && !r->psent[p / 8] && p + 8 <= q) {
					p += 8;	/* nothing precopy sent here: stays ZERO */
					continue;
				}
				if (!src_bit_get(r->poison, p) && (written || src_bit_get(r->psent, p)))
					ridx[nr++] = p;
				p++;
				if (nr == s->scan_pages) {	/* what s->buf holds */
					ret = settle(s, ri, ridx, nr);
					if (ret)
						return ret;
					nr = 0;
				}
			}
		}
		if (a.walk_end <= at)
			return -EIO;
		at = a.walk_end;
	}
	return settle(s, ri, ridx, nr);
}

/* ---- the end ------------------------------------------------------------------ */

/*
 * Take our write-protection off the VMM's memory (once the map is final, or
 * on the way out) and say so.  Idempotent.
 */
void src_dirty_release(struct src *s)
{
	struct src_wp *w = s->wp;
	unsigned unreg = 0, unprot = 0, total;

	if (!w || w->released)
		return;
	w->released = true;
	unregister_ranges(w, w->nranges, &unreg, &unprot);
	total = w->nranges;
	if (s->cfg->json)
		src_event(s, "dirty_tracking_released", "\"pid\":%d,\"ranges\":%u,\"unregistered\":%u,"
			  "\"unprotected\":%u,\"failed\":%u", s->pid, total, unreg, unprot,
			  total - unreg - unprot);
	else if (unreg + unprot == total)
		src_say(s, "write-protection removed from process %d's guest memory (%u range(s) "
		    "unregistered%s)", s->pid, unreg, unprot ? "; WP stays registered but "
		    "unprotected where the VMM had registered the range itself" : "");
	else
		src_say(s, "write-protection removed from %u of %u range(s) of process %d (the rest "
		    "is gone with its mappings, or the process exited); async WP never blocks a "
		    "write", unreg + unprot, total, s->pid);
}

void src_dirty_free(struct src *s)
{
	struct src_wp *w = s->wp;

	if (!w)
		return;
	if (!w->released) {
		/* quietly: an error path that never got as far as saying anything */
		w->released = true;
		unregister_ranges(w, w->nranges, NULL, NULL);
	}
	if (w->own_uffd)
		close(w->uffd);
	free(w);
	s->wp = NULL;
}

/*
 * src_inject_poison: UFFDIO_POISON refuses any PTE, even a write-protect
 * marker (what a punched-out protected shmem page keeps): unprotect that
 * page first.  Poison wins over dirtiness anyway.
 */
void src_dirty_before_poison(struct src *s, uint64_t addr)
{
	struct uffdio_writeprotect wp = { .range = { addr, s->ps }, .mode = 0 };

	if (s->dirty == FL_DIRTY_WP && s->wp && !s->wp->released)
		ioctl(s->wp->uffd, UFFDIO_WRITEPROTECT, &wp);
}
