// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: learning poison (markers, HWPOISON, unreadable shmem)
 * and injecting it (punch + UFFDIO_POISON) on the control socket's word.
 */
#include "source_int.h"

/* ---- poison ------------------------------------------------------------- */

struct conn *src_active_conn(struct src *s)
{
	for (int i = 0; i < MAX_CONNS; i++)
		if (s->conns[i].fd >= 0 && s->conns[i].phase != CP_HELLO)
			return &s->conns[i];
	return NULL;
}

void src_note_poison(struct src *s, unsigned ri, uint64_t p, const char *cause)
{
	struct region *r = &s->reg[ri];
	struct conn *c = src_active_conn(s);

	if (src_bit_get(r->poison, p))
		return;
	src_bit_set(r->poison, p);
	s->poisoned++;
	if (s->switched) {
		unsigned old = fl_statemap_get(&r->map, p);

		if (old == ST_CLEAN)
			s->n_clean--;
		else if (old == ST_DIRTY)
			s->n_dirty--;
		else if (old == ST_ZERO)
			s->n_zero--;
		if (old != ST_POISONED)
			s->n_poisoned_map++;
		fl_statemap_set(&r->map, p, ST_POISONED);
	}
	if (c) {
		src_bit_set(c->owed[ri], p);
		c->nowed++;
	}
	if (s->cfg->json)
		src_event(s, "poison", "\"region\":%u,\"page\":%" PRIu64 ",\"addr\":\"0x%" PRIx64
		      "\",\"cause\":\"%s\"", ri, p, r->addr + p * s->ps, cause);
	else
		src_say(s, "page %" PRIu64 " of region %u (0x%" PRIx64 ") is poisoned (%s)", p, ri,
		    r->addr + p * s->ps, cause);
}

/* The pages of the last read_data that came back poisoned become known poison. */
void src_note_read_poison(struct src *s, unsigned ri, const uint64_t *idx, unsigned n,
			     const uint8_t *res)
{
	for (unsigned i = 0; i < n; i++)
		if (res[i] >= R_POISON)
			src_note_poison(s, ri, idx[i], poison_cause[res[i]]);
}

/*
 * Periodic look for poison that appeared on its own: hardware poison of a
 * mapped frame, or of the one a hwpoison entry in its PTE names (kpageflags
 * HWPOISON; this is the memory-failure "event stream" on kernels without the
 * ras:memory_failure_event tracepoint) and UFFDIO_POISON markers placed by
 * someone else.
 */
int src_scan_poison(struct src *s)
{
	uint64_t budget = SCAN_BUDGET;

	if (s->pagemap_fd < 0)
		return 0;
	while (budget) {
		struct region *r = &s->reg[s->scan_r];
		unsigned n = (unsigned)(r->npages - s->scan_p < SCAN_PAGES ? r->npages - s->scan_p :
					SCAN_PAGES);
		int ret;

		for (unsigned i = 0; i < n; i++)
			s->idx[i] = s->scan_p + i;
		ret = src_read_pme(s, r, s->idx, n, s->pme);
		if (ret)
			return ret;
		for (unsigned i = 0; i < n; i++) {
			uint64_t e = s->pme[i], pfn = e & PM_PFN_MASK, fl[64];
			unsigned k = 1;

			if (src_pme_poison_marker(e) && !src_bit_get(r->poison, s->idx[i]))
				src_note_poison(s, s->scan_r, s->idx[i], "uffd_poison_marker");
			else if (!(e & PM_PRESENT) && src_pme_hwpoison(s, e) && !src_bit_get(r->poison, s->idx[i]))
				src_note_poison(s, s->scan_r, s->idx[i], "hwpoison");
			if (!(e & PM_PRESENT) || !pfn || s->kpf_fd < 0)
				continue;
			/* frames that follow each other are one read */
			while (i + k < n && k < 64 && (s->pme[i + k] & PM_PRESENT) &&
			       (s->pme[i + k] & PM_PFN_MASK) == pfn + k)
				k++;
			if (pread(s->kpf_fd, fl, k * 8ul, (off_t)(pfn * 8)) == (ssize_t)(k * 8ul))
				for (unsigned j = 0; j < k; j++)
					if (((fl[j] >> KPF_HWPOISON) & 1) && !src_bit_get(r->poison, s->idx[i + j]))
						src_note_poison(s, s->scan_r, s->idx[i + j], "hwpoison");
			i += k - 1;
		}
		budget = budget > n ? budget - n : 0;
		s->scan_p += n;
		if (s->scan_p >= r->npages) {
			s->scan_p = 0;
			if (++s->scan_r == s->nreg) {
				s->scan_r = 0;
				break;
			}
		}
	}
	return 0;
}

/* A process's userfaultfds: their fd numbers in it (at most max), or -errno. */
int src_list_uffds(pid_t pid, int *fds, int max)
{
	char path[64], lp[384], link[64];
	struct dirent *d;
	int n = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	dir = opendir(path);
	if (!dir)
		return -errno;
	while ((d = readdir(dir)) && n < max) {
		ssize_t k;

		if (!isdigit((unsigned char)d->d_name[0]))
			continue;
		snprintf(lp, sizeof(lp), "%s/%s", path, d->d_name);
		k = readlink(lp, link, sizeof(link) - 1);
		if (k < 0)
			continue;
		link[k] = 0;
		if (!strcmp(link, "anon_inode:[userfaultfd]"))
			fds[n++] = atoi(d->d_name);
	}
	closedir(dir);
	return n;
}

/* Every userfaultfd of the process, taken with pidfd_getfd (caller closes). */
static int take_uffds(struct src *s, int *fds, int max, char *err, size_t errlen)
{
	int nums[16], n;

	if (s->pidfd < 0) {
		snprintf(err, errlen, "%s", s->pidfd_err);
		return -ENOSYS;
	}
	n = src_list_uffds(s->pid, nums, max < 16 ? max : 16);
	if (n < 0) {
		snprintf(err, errlen, "cannot list /proc/%d/fd: %s", s->pid, strerror(-n));
		return n;
	}
	for (int i = 0; i < n; i++) {
		fds[i] = (int)syscall(SYS_pidfd_getfd, s->pidfd, nums[i], 0);
		if (fds[i] < 0) {
			int e = errno;

			snprintf(err, errlen, "pidfd_getfd of fd %d of process %d: %s", nums[i], s->pid,
				 strerror(e));
			while (i--)
				close(fds[i]);
			return -e;
		}
	}
	if (!n) {
		snprintf(err, errlen, "process %d holds no userfaultfd: UFFDIO_POISON needs the one "
			 "its guest memory is registered with", s->pid);
		return -ENOENT;
	}
	return n;
}

int src_punch(struct src *s, struct seg *g, uint64_t addr)
{
	return fallocate(g->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			 (off_t)(g->file_off + (addr - g->start)), s->ps) ? -errno : 0;
}

/*
 * Make page p of region ri really poisoned in the process: UFFDIO_POISON
 * through its own userfaultfd (a marker that SIGBUSes every later access),
 * after punching the page out of the backing file so the marker can be
 * placed (POISON needs an empty PTE) and the old contents are gone.  The
 * uffd that covers the page is found by trying: POISON on a range it
 * doesn't cover fails with ENOENT/EINVAL and changes nothing, so no page is
 * punched before we know a marker can follow.
 */
int src_inject_poison(struct src *s, unsigned ri, uint64_t p, char *err, size_t errlen)
{
	struct region *r = &s->reg[ri];
	uint64_t addr = r->addr + p * s->ps;
	struct seg *g = src_find_seg(r, addr);
	int fds[16], n, ret = -ENOENT, hit = -1;
	bool own_fds = s->ho.uffd < 0;

	if (src_bit_get(r->poison, p))
		return 0;
	if (!g->file) {
		snprintf(err, errlen, "cannot zap anonymous memory in another process on this kernel "
			 "(process_madvise refuses MADV_DONTNEED); back guest memory with a memfd");
		return -EOPNOTSUPP;
	}
	if (!g->shared) {
		snprintf(err, errlen, "0x%" PRIx64 " is a private mapping of %s: punching the file "
			 "would not reach the process's own copy; back guest memory with a shared "
			 "memfd", addr, g->name);
		return -EOPNOTSUPP;
	}
	if (g->fd < 0 || !g->writable_fd) {
		if (!own_fds)
			snprintf(err, errlen, "the VMM handed over the memfd of region %u (%s) "
				 "read-only: it can't be punched; pass a descriptor opened O_RDWR", ri,
				 g->name);
		else
			snprintf(err, errlen, "cannot open the file behind 0x%" PRIx64 " (%s) for "
				 "writing through /proc/%d/map_files", addr, g->name, s->pid);
		return -EACCES;
	}
	if (own_fds) {
		n = take_uffds(s, fds, 16, err, errlen);
		if (n < 0)
			return n;
	} else {
		fds[0] = s->ho.uffd;
		n = 1;
	}
	for (int i = 0; i < n && hit < 0; i++) {
		for (int tries = 0; tries < 8; tries++) {
			struct uffdio_poison up = { .range = { addr, s->ps } };

			if (!ioctl(fds[i], UFFDIO_POISON, &up)) {
				hit = i;
				ret = 0;
				break;
			}
			ret = -errno;
			if (ret == -EEXIST) {
				/* mapped: zap it everywhere, then place the marker */
				hit = i;
				ret = src_punch(s, g, addr);
				if (ret) {
					snprintf(err, errlen, "fallocate(PUNCH_HOLE) of %s at offset "
						 "0x%" PRIx64 ": %s", g->name,
						 g->file_off + (addr - g->start), strerror(-ret));
					break;
				}
				src_dirty_before_poison(s, addr);	/* a WP marker is a PTE too */
				ret = -EEXIST;
				hit = -1;
				continue;
			}
			if (ret == -EAGAIN)	/* the mapping is changing: try again */
				continue;
			break;
		}
		if (hit < 0 && ret != -ENOENT && ret != -EINVAL && ret != -EAGAIN && ret != -EEXIST)
			break;
	}
	if (hit >= 0) {
		/* the marker is in place; drop the contents from the page cache too */
		ret = src_punch(s, g, addr);
		if (ret)
			snprintf(err, errlen, "marker placed but fallocate(PUNCH_HOLE) failed: %s",
				 strerror(-ret));
		ret = 0;
	} else if ((ret == -ENOENT || ret == -EINVAL) && !own_fds) {
		snprintf(err, errlen, "the userfaultfd the VMM handed over does not cover 0x%" PRIx64
			 " (region %u) or lacks UFFD_FEATURE_POISON: register guest memory with it so "
			 "it can be poisoned", addr, ri);
	} else if (ret == -ENOENT || ret == -EINVAL) {
		snprintf(err, errlen, "none of the %d userfaultfd(s) of process %d covers 0x%" PRIx64
			 ": register guest memory with a userfaultfd so it can be poisoned", n, s->pid,
			 addr);
	} else if (!err[0]) {
		snprintf(err, errlen, "UFFDIO_POISON at 0x%" PRIx64 ": %s", addr, strerror(-ret));
	}
	for (int i = 0; own_fds && i < n; i++)
		close(fds[i]);
	if (!ret)
		src_note_poison(s, ri, p, "injected");
	return ret;
}
