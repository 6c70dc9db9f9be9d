// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * faultline source: the served process's mappings and reading its pages
 * without ever faulting (pagemap first; see source.c).
 */
#include "source_int.h"

/* ---- the process's mappings ------------------------------------------- */

/* All VMAs of pid (malloc'd array). */
int src_read_maps(pid_t pid, struct vma **out, unsigned *n)
{
	char path[64], line[512];
	struct vma *v = NULL;
	unsigned cnt = 0, cap = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	while (fgets(line, sizeof(line), f)) {
		struct vma m = { 0 };
		unsigned dmaj, dmin;
		int pos = 0;

		if (sscanf(line, "%" SCNx64 "-%" SCNx64 " %4s %" SCNx64 " %x:%x %lu %n", &m.start,
			   &m.end, m.perms, &m.off, &dmaj, &dmin, &m.inode, &pos) < 7)
			continue;
		snprintf(m.path, sizeof(m.path), "%s", line + pos);
		m.path[strcspn(m.path, "\n")] = 0;
		if (cnt == cap) {
			struct vma *nv = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof(*v));

			if (!nv) {
				free(v);
				fclose(f);
				return -ENOMEM;
			}
			v = nv;
		}
		v[cnt++] = m;
	}
	fclose(f);
	*out = v;
	*n = cnt;
	return 0;
}

static bool addr_mapped(struct src *s, uint64_t addr)
{
	struct vma *v;
	unsigned n;
	bool ok = false;

	if (src_read_maps(s->pid, &v, &n))
		return false;
	for (unsigned i = 0; i < n && !ok; i++)
		ok = addr >= v[i].start && addr < v[i].end;
	free(v);
	return ok;
}

/* Is fd's file shmem (memfd, tmpfs) or hugetlbfs? */
bool src_fd_is_shmem(int fd)
{
	struct statfs sf;

	return !fstatfs(fd, &sf) && (sf.f_type == TMPFS_MAGIC || sf.f_type == HUGETLBFS_MAGIC);
}

/* Split region r over the VMAs that cover it; every byte must be mapped. */
int src_build_segments(struct src *s, struct region *r, unsigned id, const struct vma *v,
			  unsigned n)
{
	uint64_t at = r->addr, end = r->addr + r->len;

	r->segs = calloc(n ? n : 1, sizeof(*r->segs));
	if (!r->segs)
		return -ENOMEM;
	for (unsigned i = 0; i < n && at < end; i++) {
		struct seg *g;
		char mf[96];

		if (v[i].end <= at)
			continue;
		if (v[i].start > at) {
			src_say(s, "--range %u (0x%" PRIx64 ":%" PRIu64 "): 0x%" PRIx64 " is not mapped in "
			    "process %d (see /proc/%d/maps)", id, r->addr, r->len, at, s->pid, s->pid);
			return -EFAULT;
		}
		g = &r->segs[r->nsegs++];
		g->start = at;
		g->end = v[i].end < end ? v[i].end : end;
		g->shared = v[i].perms[3] == 's';
		g->file = v[i].inode != 0;
		g->file_off = v[i].off + (at - v[i].start);
		g->fd = -1;
		snprintf(g->name, sizeof(g->name), "%.*s", (int)sizeof(g->name) - 1,
			 v[i].path[0] ? v[i].path : "[anon]");
		if (g->file) {
			/* map_files gives the file itself (the memfd), which reads
			 * holes as zeros instead of faulting into a userfaultfd */
			snprintf(mf, sizeof(mf), "/proc/%d/map_files/%" PRIx64 "-%" PRIx64, s->pid,
				 v[i].start, v[i].end);
			g->fd = open(mf, O_RDWR | O_CLOEXEC);
			g->writable_fd = g->fd >= 0;
			if (g->fd < 0)
				g->fd = open(mf, O_RDONLY | O_CLOEXEC);
			if (g->fd < 0)
				src_say(s, "warning: cannot open %s (%s): unmapped pages of %s are served as "
				    "zero", mf, strerror(errno), g->name);
			else
				g->shmem = src_fd_is_shmem(g->fd);
		}
		at = g->end;
	}
	if (at < end) {
		src_say(s, "--range %u (0x%" PRIx64 ":%" PRIu64 "): 0x%" PRIx64 " is not mapped in process "
		    "%d (see /proc/%d/maps)", id, r->addr, r->len, at, s->pid, s->pid);
		return -EFAULT;
	}
	return 0;
}

struct seg *src_find_seg(struct region *r, uint64_t addr)
{
	for (unsigned i = 0; i < r->nsegs; i++)
		if (addr >= r->segs[i].start && addr < r->segs[i].end)
			return &r->segs[i];
	return &r->segs[r->nsegs - 1];
}

/* ---- reading pages ------------------------------------------------------ */

/*
 * A UFFDIO_POISON marker reads in pagemap as a swap entry of the PTE-marker
 * type (the highest swap type; real swap files are the low indexes) with
 * PTE_MARKER_POISONED (bit 1) as its offset.  Offsets this small can't be
 * migration entries: PFNs below 8 are never migrated.
 */
bool src_pme_marker(uint64_t e)
{
	return (e & PM_SWAP) && !(e & PM_PRESENT) && (e & 31) >= 16 &&
	       ((e & PM_PFN_MASK) >> 5) < 8;
}

bool src_pme_poison_marker(uint64_t e)
{
	return src_pme_marker(e) && (((e & PM_PFN_MASK) >> 5) & 2);
}

/* pagemap entries of the listed pages of r (runs of consecutive pages are one pread). */
int src_read_pme(struct src *s, struct region *r, const uint64_t *idx, unsigned n, uint64_t *pme)
{
	if (s->pagemap_fd < 0) {
		/* "not mapped": every read then goes to the region's memfd */
		memset(pme, 0, n * sizeof(*pme));
		return 0;
	}
	long base = sysconf(_SC_PAGESIZE);

	for (unsigned i = 0; i < n;) {
		unsigned k = 1;
		ssize_t got;

		/* an entry per base page: a huge page's is its first base page's */
		while (s->ps == (uint32_t)base && i + k < n && idx[i + k] == idx[i] + k)
			k++;
		got = pread(s->pagemap_fd, pme + i, k * 8ul,
			    (off_t)((r->addr + idx[i] * s->ps) / (uint64_t)base * 8));
		if (got < 0)
			return errno == ESRCH ? -ESRCH : -errno;
		if ((size_t)got < k * 8ul)	/* beyond the end: the process exited */
			return -ESRCH;
		i += k;
	}
	return 0;
}

static bool kpf_hwpoison(struct src *s, uint64_t pfn)
{
	uint64_t fl;

	if (s->kpf_fd < 0 || !pfn)
		return false;
	if (pread(s->kpf_fd, &fl, 8, (off_t)(pfn * 8)) != 8)
		return false;
	return (fl >> KPF_HWPOISON) & 1;
}

/*
 * Hardware poison of the frame behind a pagemap entry: a mapped frame, or the
 * one a non-swapfile swap entry names (memory_failure() replaces the PTE of a
 * poisoned page by a hwpoison entry that carries its pfn; so do migration
 * entries, whose frames are not HWPOISON).
 */
bool src_pme_hwpoison(struct src *s, uint64_t e)
{
	if (e & PM_PRESENT)
		return kpf_hwpoison(s, e & PM_PFN_MASK);
	if ((e & PM_SWAP) && (e & 31) >= 16 && !src_pme_marker(e))
		return kpf_hwpoison(s, (e & PM_PFN_MASK) >> 5);
	return false;
}

/* A read error that may be one page's own (read the pages one by one to see). */
static bool page_read_error(int err)
{
	return err == EFAULT || err == EIO || err == EHWPOISON;
}

/*
 * One page through the file: R_DATA (short reads past EOF are zero-filled).
 * shmem and hugetlbfs fail a read with EIO exactly where an access in the
 * process would SIGBUS (a HWPoison page, or swap that can't be read back), so
 * that is poison; any other failure is an error naming the page.
 */
static int read_file_page(struct src *s, struct region *r, struct seg *g, uint64_t addr,
			  uint8_t *dst, uint8_t *res)
{
	uint64_t off = g->file_off + (addr - g->start);
	ssize_t k = pread(g->fd, dst, s->ps, (off_t)off);

	if (k < 0) {
		int err = errno;

		if ((err == EIO && g->shmem) || err == EHWPOISON) {
			*res = err == EIO ? R_SHMEM_EIO : R_HWPOISON;
			return 0;
		}
		return src_fail(s, -err, "page %" PRIu64 " of region %ld (0x%" PRIx64 ") cannot be read "
			    "from %s at offset 0x%" PRIx64 ": %s", (addr - r->addr) / s->ps,
			    (long)(r - s->reg), addr, g->name, off, strerror(err));
	}
	if (k == 0) {
		*res = R_ZERO;
		return 0;
	}
	if ((size_t)k < s->ps)
		memset(dst + k, 0, s->ps - (size_t)k);
	*res = R_DATA;
	return 0;
}

/*
 * Page p of r, which pagemap had mapped, and process_vm_readv refused (err).
 * Poison needs positive evidence: a UFFDIO_POISON marker or an HWPOISON frame
 * in pagemap + kpageflags, read again now.  Else the page is memory the
 * process can reach (or could, after an mprotect): PROT_NONE is the common
 * case, and /proc/PID/mem reads it the way a debugger does (FOLL_FORCE); the
 * page is mapped, so that read does not fault into a userfaultfd.  A page
 * that can't be read that way either is an error that names it, not poison:
 * the target would SIGBUS on memory that is fine here, and the guest would
 * take a machine check for it.
 */
static int read_refused(struct src *s, struct region *r, uint64_t p, int err, uint8_t *dst,
			uint8_t *res)
{
	uint64_t addr = r->addr + p * s->ps, e;
	struct seg *g = src_find_seg(r, addr);
	int ret = src_read_pme(s, r, &p, 1, &e);

	if (ret)
		return ret;
	if (src_pme_poison_marker(e)) {
		*res = R_POISON;
		return 0;
	}
	if (err == EHWPOISON || src_pme_hwpoison(s, e)) {
		*res = R_HWPOISON;
		return 0;
	}
	if ((e & (PM_PRESENT | PM_SWAP)) && !src_pme_marker(e)) {
		ssize_t k = s->mem_fd >= 0 ? pread(s->mem_fd, dst, s->ps, (off_t)addr) : -1;
		int merr = s->mem_fd < 0 ? s->mem_err : k < 0 ? errno : EIO;

		if (k == (ssize_t)s->ps) {
			*res = R_DATA;
			return 0;
		}
		if (addr_mapped(s, addr))
			return src_fail(s, -EIO, "page %" PRIu64 " of region %ld (0x%" PRIx64 ", %s) cannot "
				    "be read: process_vm_readv: %s; /proc/%d/mem: %s; it is mapped and "
				    "shows no sign of poison (no UFFDIO_POISON marker%s), so it is not "
				    "declared poisoned", p, (long)(r - s->reg), addr, g->name,
				    strerror(err), s->pid, strerror(merr),
				    s->kpf_fd >= 0 ? ", no HWPOISON frame" : "");
	} else if (addr_mapped(s, addr)) {
		/* unmapped since pagemap was read (MADV_DONTNEED, say): a hole now */
		if (g->fd >= 0)
			return read_file_page(s, r, g, addr, dst, res);
		*res = R_ZERO;
		return 0;
	}
	if (!r->gone_warned)
		src_say(s, "warning: 0x%" PRIx64 " (region %ld) is no longer mapped in process %d: such "
		    "pages are served as zero", addr, (long)(r - s->reg), s->pid);
	r->gone_warned = true;
	*res = R_ZERO;
	return 0;
}

/*
 * Contents of the listed pages of r: page idx[i] lands in buf + i*ps with
 * res[i] R_DATA; R_ZERO (known zero, buf untouched) or poisoned (>= R_POISON,
 * by what evidence).  pme[] must be fresh from read_pme.  Negative errno for
 * failures that are not a page's own (the process is gone, a descriptor
 * broke) and for a page that can't be read (s->why names it).
 */
int src_read_data(struct src *s, struct region *r, const uint64_t *idx, unsigned n,
		     const uint64_t *pme, uint8_t *buf, uint8_t *res)
{
	struct iovec lv[SCAN_PAGES], rv[SCAN_PAGES];
	unsigned vslot[SCAN_PAGES], nv = 0;
	int ret;

	for (unsigned i = 0; i < n; i++) {
		uint64_t addr = r->addr + idx[i] * s->ps;
		struct seg *g = src_find_seg(r, addr);
		uint64_t e = pme[i];

		if (src_pme_poison_marker(e)) {
			res[i] = R_POISON;
		} else if (g->shared && g->fd >= 0) {
			/* the page cache is the truth for a shared mapping */
			unsigned k = 1;
			ssize_t got;

			while (i + k < n && idx[i + k] == idx[i] + k && !src_pme_poison_marker(pme[i + k]) &&
			       addr + (uint64_t)k * s->ps < g->end)
				k++;
			got = pread(g->fd, buf + (size_t)i * s->ps, (size_t)k * s->ps,
				    (off_t)(g->file_off + (addr - g->start)));
			if (got == (ssize_t)((size_t)k * s->ps)) {
				memset(res + i, R_DATA, k);
			} else {
				for (unsigned j = 0; j < k; j++) {
					ret = read_file_page(s, r, g, addr + (uint64_t)j * s->ps,
							     buf + (size_t)(i + j) * s->ps, &res[i + j]);
					if (ret)
						return ret;
				}
			}
			i += k - 1;
		} else if ((e & (PM_PRESENT | PM_SWAP)) && !src_pme_marker(e)) {
			/* mapped (or swapped): the process's own copy, no userfault */
			lv[nv].iov_base = buf + (size_t)i * s->ps;
			lv[nv].iov_len = s->ps;
			rv[nv].iov_base = (void *)(uintptr_t)addr;
			rv[nv].iov_len = s->ps;
			vslot[nv++] = i;
		} else if (g->fd >= 0) {
			/* private file mapping never written: the file's contents */
			ret = read_file_page(s, r, g, addr, buf + (size_t)i * s->ps, &res[i]);
			if (ret)
				return ret;
		} else {
			res[i] = R_ZERO;
		}
	}
	for (unsigned at = 0; at < nv;) {
		ssize_t k = process_vm_readv(s->pid, lv + at, nv - at, rv + at, nv - at, 0);
		unsigned done, bad;

		if (k < 0 && errno == ESRCH)
			return -ESRCH;
		if (k < 0 && !page_read_error(errno) && errno != ENOMEM)
			return -errno;
		done = k > 0 ? (unsigned)((size_t)k / s->ps) : 0;
		for (unsigned j = 0; j < done; j++)
			res[vslot[at + j]] = R_DATA;
		at += done;
		if (at >= nv)
			break;
		/* page `at` failed: alone, to tell a bad page from a bad batch */
		bad = vslot[at];
		k = process_vm_readv(s->pid, &lv[at], 1, &rv[at], 1, 0);
		if (k == (ssize_t)s->ps) {
			res[bad] = R_DATA;
		} else if (k < 0 && errno == ESRCH) {
			return -ESRCH;
		} else {
			ret = read_refused(s, r, idx[bad], k < 0 ? errno : EFAULT, lv[at].iov_base,
					   &res[bad]);
			if (ret)
				return ret;
		}
		at++;
	}
	return 0;
}
