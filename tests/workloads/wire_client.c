// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * wire-client: test peers for `faultline source` (tests/e2e/test_source.py).
 *
 *   wire-client mem [--pages N] [--hole-every K] [--anon-pages M]
 *       A process with guest-like memory: a shared memfd mapping of N pages
 *       filled with a known pattern (every K-th page left a hole), registered
 *       with a userfaultfd (MISSING) so poison can be injected from outside,
 *       plus M anonymous pages.  Prints one JSON line
 *       {"event":"mem","pid",...,"addr","memfd_fd",...}, then obeys stdin:
 *       "dirty P[,P..]" (new pattern), "zero P", "touch P" (-> ok | sigbus),
 *       "poison P" (UFFDIO_POISON by itself), "discard P" (MADV_REMOVE through
 *       the mapping, as a balloon does), "same P" (write each page's own
 *       contents back: a write that changes nothing), "unregister" (the
 *       whole memfd range off the userfaultfd), "quit".
 *       --wp-async: the userfaultfd also has UFFD_FEATURE_WP_ASYNC, so
 *       `faultline source` can track writes with write-protection through it.
 *       --hugetlb: the memfd is on 2 MiB hugetlbfs pages (so are P's pages).
 *       --handover PATH: also hand the memfd region over like a VMM
 *       (fl_handover(), MISSING mode) to `faultline source --vmm-socket
 *       PATH`, keeping the connection open; --handover-anon adds the
 *       anonymous pages as region 1 and --handover-no-memfd sends region 0
 *       without its memfd (both are refused).  The JSON line then says
 *       "handover":true or "handover_error":"why".
 *
 *   wire-client target --connect HOST:PORT [options]
 *       A protocol-level migration target: Hello, precopy, map, pushes,
 *       requests; rebuilds every region's image from what arrived and checks
 *       the conversation's promises (a CLEAN page had precopy data, a DIRTY
 *       one got data after the switchover, no data for a poisoned page).
 *       JSON lines on stdout; the last is {"event":"client_summary",...}.
 *       --map FILE: at the end, one line "REGION PAGE STATE" for every page
 *       the map did not call clean (dirty, zero, poisoned).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "faultline/faultline.h"
#include "statemap.h"
#include "uffd_compat.h"
#include "wire.h"

#define MAXREG FL_WIRE_MAX_REGIONS
#define MAX_LIST 1024

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
	va_list ap;

	fputs("wire-client: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static unsigned parse_list(const char *s, uint64_t *out, unsigned max)
{
	unsigned n = 0;

	while (*s && n < max) {
		char *end;
		uint64_t a = strtoull(s, &end, 10), b = a;

		if (end == s)
			die("bad page list '%s'", s);
		if (*end == '-')
			b = strtoull(end + 1, &end, 10);
		for (uint64_t v = a; v <= b && n < max; v++)
			out[n++] = v;
		s = *end == ',' ? end + 1 : end;
		if (*end && *end != ',')
			break;
	}
	return n;
}

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* ---- mem --------------------------------------------------------------- */

struct mem {
	size_t ps, pages, anon_pages;
	uint8_t *base, *anon;
	uint32_t *gen;
	uint8_t *populated, *scratch;	/* pages with contents: safe to touch */
	int memfd, uffd;
	sigjmp_buf jb;
};

static struct mem *g_mem;	/* for the SIGBUS handler only */

static void on_sigbus(int sig)
{
	(void)sig;
	siglongjmp(g_mem->jb, 1);
}

static void fill(uint8_t *page, size_t ps, uint64_t idx, uint32_t gen)
{
	for (size_t w = 0; w < ps / 8; w++) {
		uint64_t v = ((idx + 1) << 32) ^ ((uint64_t)gen << 20) ^ (w * 0x9e3779b97f4a7c15ull);

		memcpy(page + w * 8, &v, 8);
	}
}

static int mem_main(int argc, char **argv)
{
	struct mem m = { .ps = (size_t)sysconf(_SC_PAGESIZE), .pages = 256, .anon_pages = 16 };
	size_t hole_every = 8;
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_POISON };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	struct sigaction sa = { .sa_handler = on_sigbus };
	char line[8192], herr[512] = "";
	const char *handover = NULL;
	bool ho_anon = false, ho_no_memfd = false;
	volatile bool hugetlb = false;	/* read after the SIGBUS siglongjmp */
	int ho_sock = -1;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--pages") && i + 1 < argc)
			m.pages = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--handover") && i + 1 < argc)
			handover = argv[++i];
		else if (!strcmp(argv[i], "--hugetlb"))
			hugetlb = true, m.ps = 2u << 20;
		else if (!strcmp(argv[i], "--handover-anon"))
			ho_anon = true;
		else if (!strcmp(argv[i], "--handover-no-memfd"))
			ho_no_memfd = true;
		else if (!strcmp(argv[i], "--hole-every") && i + 1 < argc)
			hole_every = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--anon-pages") && i + 1 < argc)
			m.anon_pages = strtoul(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--wp-async"))
			api.features |= UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_MISSING_SHMEM |
					UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
		else
			die("mem: unknown option %s", argv[i]);
	}
	g_mem = &m;
	m.gen = calloc(m.pages, sizeof(*m.gen));
	m.populated = calloc(m.pages, 1);
	m.scratch = malloc(m.ps);
	if (hugetlb)
		api.features |= UFFD_FEATURE_MISSING_HUGETLBFS;
	m.memfd = memfd_create("guest", MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB : 0));
	if (m.memfd < 0 || ftruncate(m.memfd, (off_t)(m.pages * m.ps)))
		die("memfd: %s", strerror(errno));
	m.base = mmap(NULL, m.pages * m.ps, PROT_READ | PROT_WRITE, MAP_SHARED, m.memfd, 0);
	m.anon = mmap(NULL, m.anon_pages * m.ps, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m.base == MAP_FAILED || m.anon == MAP_FAILED)
		die("mmap: %s", strerror(errno));
	for (size_t i = 0; i < m.pages; i++)
		if (!hole_every || i % hole_every != hole_every - 1) {
			fill(m.base + i * m.ps, m.ps, i, 0);
			m.populated[i] = 1;
		}
	for (size_t i = 0; i < m.anon_pages; i++)
		fill(m.anon + i * m.ps, m.ps, 1000000 + i, 0);
	m.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (m.uffd < 0 || ioctl(m.uffd, UFFDIO_API, &api))
		die("userfaultfd: %s", strerror(errno));
	reg.range.start = (uintptr_t)m.base;
	reg.range.len = m.pages * m.ps;
	if (ioctl(m.uffd, UFFDIO_REGISTER, &reg))
		die("UFFDIO_REGISTER: %s", strerror(errno));
	reg.range.start = (uintptr_t)m.anon;
	reg.range.len = m.anon_pages * m.ps;
	if (ioctl(m.uffd, UFFDIO_REGISTER, &reg))
		die("UFFDIO_REGISTER anon: %s", strerror(errno));
	sigemptyset(&sa.sa_mask);
	sigaction(SIGBUS, &sa, NULL);
	if (handover) {
		struct fl_region rg[2] = {
			{ .base = m.base, .length = m.pages * m.ps,
			  .memfd = ho_no_memfd ? -1 : m.memfd },
			{ .base = m.anon, .length = m.anon_pages * m.ps, .memfd = -1 },
		};

		/* kept open for the whole run: the source owns the memory from here */
		ho_sock = fl_handover(handover, m.uffd, FL_MODE_MISSING, rg, ho_anon ? 2 : 1, herr,
				      sizeof(herr));
		for (char *q = herr; *q; q++)	/* keep the JSON line valid */
			if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
				*q = '\'';
	}
	printf("{\"event\":\"mem\",\"pid\":%d,\"addr\":\"0x%lx\",\"length\":%zu,\"pages\":%zu,"
	       "\"page_size\":%zu,\"memfd_fd\":%d,\"uffd_fd\":%d,\"anon_addr\":\"0x%lx\","
	       "\"anon_length\":%zu,\"hole_every\":%zu", getpid(), (unsigned long)m.base,
	       m.pages * m.ps, m.pages, m.ps, m.memfd, m.uffd, (unsigned long)m.anon,
	       m.anon_pages * m.ps, hole_every);
	if (handover && ho_sock >= 0)
		printf(",\"handover\":true");
	else if (handover)
		printf(",\"handover_error\":\"%s\"", herr);
	printf("}\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		char cmd[16] = "";
		uint64_t pages[MAX_LIST];
		unsigned n = 0;
		int pos = 0;

		if (sscanf(line, "%15s %n", cmd, &pos) < 1)
			continue;
		if (!strcmp(cmd, "quit"))
			break;
		line[strcspn(line, "\n")] = 0;
		if (line[pos])
			n = parse_list(line + pos, pages, MAX_LIST);
		for (unsigned i = 0; i < n; i++)
			if (pages[i] >= m.pages)
				die("page %" PRIu64 " out of range", pages[i]);
		if (!strcmp(cmd, "dirty")) {
			for (unsigned i = 0; i < n; i++) {
				uint64_t p = pages[i];

				if (m.populated[p]) {
					fill(m.base + p * m.ps, m.ps, p, ++m.gen[p]);
					continue;
				}
				/* a hole: touching it would fault into our own uffd, which
				 * nobody serves; fill the page cache through the file */
				fill(m.scratch, m.ps, p, ++m.gen[p]);
				if (hugetlb) {
					/* hugetlbfs has no write(): place it through our uffd */
					struct uffdio_copy c = {
						.dst = (uintptr_t)(m.base + p * m.ps),
						.src = (uintptr_t)m.scratch, .len = m.ps,
					};

					if (ioctl(m.uffd, UFFDIO_COPY, &c))
						die("UFFDIO_COPY: %s", strerror(errno));
				} else if (pwrite(m.memfd, m.scratch, m.ps, (off_t)(p * m.ps)) !=
					   (ssize_t)m.ps) {
					die("pwrite: %s", strerror(errno));
				}
				m.populated[p] = 1;
			}
			puts("ok");
		} else if (!strcmp(cmd, "zero")) {
			for (unsigned i = 0; i < n; i++)
				if (m.populated[pages[i]])
					memset(m.base + pages[i] * m.ps, 0, m.ps);
			puts("ok");
		} else if (!strcmp(cmd, "discard")) {
			for (unsigned i = 0; i < n; i++) {
				if (madvise(m.base + pages[i] * m.ps, m.ps, MADV_REMOVE))
					die("madvise(MADV_REMOVE): %s", strerror(errno));
				m.populated[pages[i]] = 0;
			}
			puts("ok");
		} else if (!strcmp(cmd, "unregister")) {
			struct uffdio_range ur = { (uintptr_t)m.base, m.pages * m.ps };

			if (ioctl(m.uffd, UFFDIO_UNREGISTER, &ur))
				printf("error %s\n", strerror(errno));
			else
				puts("ok");
		} else if (!strcmp(cmd, "same")) {
			for (unsigned i = 0; i < n; i++)
				if (m.populated[pages[i]]) {
					uint8_t *pg = m.base + pages[i] * m.ps;

					memcpy(m.scratch, pg, m.ps);
					memcpy(pg, m.scratch, m.ps);
				}
			puts("ok");
		} else if (!strcmp(cmd, "touch") && n && !m.populated[pages[0]]) {
			puts("error: a hole: touching it would block in our own userfaultfd");
		} else if (!strcmp(cmd, "touch") && n) {
			volatile uint8_t *p = m.base + pages[0] * m.ps;

			if (sigsetjmp(m.jb, 1))
				puts("sigbus");
			else {
				(void)p[0];
				puts("ok");
			}
		} else if (!strcmp(cmd, "poison") && n) {
			struct uffdio_poison up = { .range = { (uintptr_t)(m.base + pages[0] * m.ps), m.ps } };

			if (fallocate(m.memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				      (off_t)(pages[0] * m.ps), (off_t)m.ps) ||
			    ioctl(m.uffd, UFFDIO_POISON, &up))
				printf("error %s\n", strerror(errno));
			else
				puts("ok");
		} else {
			printf("error unknown command %s\n", cmd);
		}
		fflush(stdout);
	}
	if (ho_sock >= 0)
		close(ho_sock);
	return 0;
}

/* ---- target -------------------------------------------------------------- */

struct req {
	unsigned region;
	unsigned n;
	uint64_t pages[MAX_LIST];
};

struct client {
	const char *host, *port, *image_dir, *role, *map_file;
	bool precopy, no_end, garbage;
	bool resume_first;		/* --resume: the first Hello already says resume */
	uint64_t session, forged_session;	/* the source's; --session: claimed instead */
	int fd;
	struct fl_wire_limits lim;
	uint32_t ps;
	unsigned nreg;
	uint64_t npages[MAXREG];
	uint8_t *img[MAXREG], *have[MAXREG], *fresh[MAXREG], *poisoned[MAXREG];
	struct fl_statemap map[MAXREG];
	uint64_t map_pages[MAXREG];
	bool switched, hello, src_end, end_sent;
	uint64_t frames[16], seq, pushes, answers, data_for_poisoned, precopy_pages, reconnects;
	long drop_after;
	uint64_t nframes;
	const char *pauses[8];
	int npauses;
	struct req before[8], after[8], queries[8];
	int nbefore, nafter, nqueries;
	unsigned timeout_ms;
};

static bool bget(const uint8_t *b, uint64_t i) { return (b[i >> 3] >> (i & 7)) & 1; }
static void bset(uint8_t *b, uint64_t i) { b[i >> 3] |= (uint8_t)(1u << (i & 7)); }

static void pause_at(struct client *c, const char *at)
{
	char line[256];

	for (int i = 0; i < c->npauses; i++)
		if (!strcmp(c->pauses[i], at)) {
			printf("{\"event\":\"paused\",\"at\":\"%s\"}\n", at);
			fflush(stdout);
			if (!fgets(line, sizeof(line), stdin))
				die("stdin closed while paused at %s", at);
		}
}

static void send_frame(struct client *c, Faultline__Wire__Frame__BodyCase kind, void *body)
{
	fl_frame f = FAULTLINE__WIRE__FRAME__INIT;
	int ret;

	f.body_case = kind;
	f.hello = body;
	ret = fl_wire_send(c->fd, &f);
	if (ret)
		die("send: %s", strerror(-ret));
}

static void send_requests(struct client *c, struct req *rq, int n, bool query)
{
	for (int i = 0; i < n; i++) {
		if (query) {
			Faultline__Wire__StateQuery q = FAULTLINE__WIRE__STATE_QUERY__INIT;

			q.seq = ++c->seq;
			q.region = rq[i].region;
			q.n_pages = rq[i].n;
			q.pages = rq[i].pages;
			send_frame(c, FAULTLINE__WIRE__FRAME__BODY_STATE_QUERY, &q);
		} else {
			Faultline__Wire__PageRequest q = FAULTLINE__WIRE__PAGE_REQUEST__INIT;

			q.seq = ++c->seq;
			q.region = rq[i].region;
			q.n_pages = rq[i].n;
			q.pages = rq[i].pages;
			send_frame(c, FAULTLINE__WIRE__FRAME__BODY_PAGE_REQUEST, &q);
		}
	}
}

static void do_connect(struct client *c, bool resume)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *ai;
	Faultline__Wire__Hello h = FAULTLINE__WIRE__HELLO__INIT;
	int one = 1, ret;

	ret = getaddrinfo(c->host, c->port, &hints, &ai);
	if (ret)
		die("resolve %s: %s", c->host, gai_strerror(ret));
	c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen))
		die("connect %s:%s: %s", c->host, c->port, strerror(errno));
	freeaddrinfo(ai);
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (c->garbage) {
		static const uint8_t bad[8] = { 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4 };

		if (write(c->fd, bad, sizeof(bad)) != sizeof(bad))
			die("write: %s", strerror(errno));
		return;
	}
	h.version = FL_WIRE_VERSION;
	h.role = (char *)(c->role ? c->role : "target");
	h.want_precopy = c->precopy && !resume;
	h.resume = resume || c->resume_first;
	h.session = c->forged_session ? c->forged_session : c->session;
	send_frame(c, FAULTLINE__WIRE__FRAME__BODY_HELLO, &h);
}

static const char *state_name(unsigned s)
{
	static const char *const n[] = { "clean", "dirty", "poisoned", "zero" };

	return n[s & 3];
}

static void on_source_hello(struct client *c, const Faultline__Wire__Hello *h)
{
	char err[256];

	if (c->hello) {	/* after a reconnect: same layout */
		if (h->n_regions != c->nreg || h->page_size != c->ps)
			die("resumed source has a different layout");
		return;
	}
	if (fl_wire_limits_from_hello(&c->lim, h, err, sizeof(err)))
		die("source hello: %s", err);
	c->ps = h->page_size;
	c->nreg = (unsigned)h->n_regions;
	c->session = h->session;
	for (unsigned i = 0; i < c->nreg; i++) {
		uint64_t n = h->regions[i]->length / c->ps;
		unsigned id = h->regions[i]->id;

		c->npages[id] = n;
		c->img[id] = calloc(n, c->ps);
		c->have[id] = calloc(n / 8 + 1, 1);
		c->fresh[id] = calloc(n / 8 + 1, 1);
		c->poisoned[id] = calloc(n / 8 + 1, 1);
		if (!c->img[id] || fl_statemap_init(&c->map[id], n, 3))
			die("out of memory");
	}
	c->hello = true;
	printf("{\"event\":\"hello\",\"page_size\":%u,\"regions\":%u,\"session\":\"%016" PRIx64
	       "\"}\n", c->ps, c->nreg, h->session);
}

static void on_page_data(struct client *c, const Faultline__Wire__PageData *d)
{
	size_t off = 0;

	for (size_t i = 0; i < d->n_pages; i++) {
		uint64_t p = d->pages[i];
		unsigned st = fl_wire_state_at(d->states.data, i);
		uint8_t *dst = c->img[d->region] + p * c->ps;
		bool data = st == 0 || st == 1;

		if (data) {
			if (bget(c->poisoned[d->region], p))
				c->data_for_poisoned++;
			memcpy(dst, d->data.data + off, c->ps);
			if (d->seq)
				printf("{\"event\":\"answer\",\"seq\":%" PRIu64 ",\"region\":%u,\"page\":%"
				       PRIu64 ",\"state\":\"%s\",\"fnv\":\"%016" PRIx64 "\"}\n", d->seq,
				       d->region, p, state_name(st), fnv1a(dst, c->ps));
			off += c->ps;
		} else {
			if (st == 2)
				bset(c->poisoned[d->region], p);
			memset(dst, 0, c->ps);
			if (d->seq)
				printf("{\"event\":\"answer\",\"seq\":%" PRIu64 ",\"region\":%u,\"page\":%"
				       PRIu64 ",\"state\":\"%s\"}\n", d->seq, d->region, p,
				       state_name(st));
		}
		if (d->precopy) {
			bset(c->have[d->region], p);
			c->precopy_pages++;
		} else if (c->switched && st != 2) {
			bset(c->fresh[d->region], p);
		}
	}
	if (d->background)
		c->pushes++;
	if (d->seq)
		c->answers++;
}

static void summary(struct client *c)
{
	uint64_t cnt[4] = { 0 }, missing = 0, clean_without = 0, shown = 0;

	printf("{\"event\":\"client_summary\",\"missing_pages\":[");
	for (unsigned r = 0; r < c->nreg; r++)
		for (uint64_t p = 0; p < c->npages[r]; p++) {
			unsigned st = bget(c->poisoned[r], p) ? 2 : fl_statemap_get(&c->map[r], p);
			bool bad = false;

			cnt[st]++;
			if (st == 0 && !bget(c->have[r], p) && !bget(c->fresh[r], p)) {
				clean_without++;
				bad = true;
			}
			if (st == 1 && !bget(c->fresh[r], p)) {
				missing++;
				bad = true;
			}
			if (st >= 2)
				memset(c->img[r] + p * c->ps, 0, c->ps);
			if (bad && shown++ < 20)
				printf("%s[%u,%" PRIu64 "]", shown > 1 ? "," : "", r, p);
		}
	printf("],\"poisoned_pages\":[");
	shown = 0;
	for (unsigned r = 0; r < c->nreg; r++)
		for (uint64_t p = 0; p < c->npages[r]; p++)
			if (bget(c->poisoned[r], p) && shown++ < 200)
				printf("%s[%u,%" PRIu64 "]", shown > 1 ? "," : "", r, p);
	printf("],\"clean\":%" PRIu64 ",\"dirty\":%" PRIu64 ",\"poisoned\":%" PRIu64 ",\"zero\":%"
	       PRIu64 ",\"missing\":%" PRIu64 ",\"clean_without_precopy\":%" PRIu64
	       ",\"data_for_poisoned\":%" PRIu64 ",\"precopy_pages\":%" PRIu64 ",\"pushes\":%" PRIu64
	       ",\"answers\":%" PRIu64 ",\"reconnects\":%" PRIu64 ",\"frames\":%" PRIu64
	       ",\"switched\":%s,\"source_end\":%s}\n", cnt[0], cnt[1], cnt[2], cnt[3], missing,
	       clean_without, c->data_for_poisoned, c->precopy_pages, c->pushes, c->answers,
	       c->reconnects, c->nframes, c->switched ? "true" : "false",
	       c->src_end ? "true" : "false");
	if (c->map_file) {
		static const char *const name[] = { "clean", "dirty", "poisoned", "zero" };
		FILE *f = fopen(c->map_file, "w");

		if (!f)
			die("--map %s: %s", c->map_file, strerror(errno));
		for (unsigned r = 0; r < c->nreg; r++)
			for (uint64_t p = 0; p < c->npages[r]; p++) {
				unsigned st = bget(c->poisoned[r], p) ? 2 : fl_statemap_get(&c->map[r], p);

				if (st)
					fprintf(f, "%u %" PRIu64 " %s\n", r, p, name[st]);
			}
		if (fclose(f))
			die("--map %s: %s", c->map_file, strerror(errno));
	}
	if (c->image_dir)
		for (unsigned r = 0; r < c->nreg; r++) {
			char path[512];
			FILE *f;

			snprintf(path, sizeof(path), "%s/region-%u.img", c->image_dir, r);
			f = fopen(path, "w");
			if (!f || fwrite(c->img[r], c->ps, c->npages[r], f) != c->npages[r])
				die("write %s: %s", path, strerror(errno));
			fclose(f);
		}
}

static bool all_maps_done(struct client *c)
{
	for (unsigned r = 0; r < c->nreg; r++)
		if (c->map_pages[r] < c->npages[r])
			return false;
	return c->nreg > 0;
}

static int target_main(int argc, char **argv)
{
	struct client *c = calloc(1, sizeof(*c));
	bool maps_reported = false;

	c->drop_after = -1;
	c->timeout_ms = 30000;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		struct req *rq = NULL;

		if (!strcmp(a, "--connect") && v) {
			char *colon = strrchr(argv[++i], ':');

			if (!colon)
				die("--connect HOST:PORT");
			*colon = 0;
			c->host = argv[i];
			c->port = colon + 1;
		} else if (!strcmp(a, "--precopy")) {
			c->precopy = true;
		} else if (!strcmp(a, "--no-end")) {
			c->no_end = true;
		} else if (!strcmp(a, "--garbage")) {
			c->garbage = true;
		} else if (!strcmp(a, "--resume")) {
			c->resume_first = true;
		} else if (!strcmp(a, "--session") && v) {
			c->forged_session = strtoull(argv[++i], NULL, 16);
		} else if (!strcmp(a, "--role") && v) {
			c->role = argv[++i];
		} else if (!strcmp(a, "--image-dir") && v) {
			c->image_dir = argv[++i];
		} else if (!strcmp(a, "--map") && v) {
			c->map_file = argv[++i];
		} else if (!strcmp(a, "--drop-after") && v) {
			c->drop_after = atol(argv[++i]);
		} else if (!strcmp(a, "--timeout-ms") && v) {
			c->timeout_ms = (unsigned)atol(argv[++i]);
		} else if (!strcmp(a, "--pause-at") && v && c->npauses < 8) {
			c->pauses[c->npauses++] = argv[++i];
		} else if (!strcmp(a, "--request") && v && c->nbefore < 8) {
			rq = &c->before[c->nbefore++];
		} else if (!strcmp(a, "--request-after-switchover") && v && c->nafter < 8) {
			rq = &c->after[c->nafter++];
		} else if (!strcmp(a, "--query") && v && c->nqueries < 8) {
			rq = &c->queries[c->nqueries++];
		} else {
			die("target: unknown option %s", a);
		}
		if (rq) {
			char *colon = strchr(argv[++i], ':');

			if (!colon)
				die("%s REGION:PAGE[,PAGE...]", a);
			rq->region = (unsigned)atoi(argv[i]);
			rq->n = parse_list(colon + 1, rq->pages, MAX_LIST);
		}
	}
	if (!c->host)
		die("target: --connect HOST:PORT is required");
	do_connect(c, false);
	for (;;) {
		char err[300] = "";
		fl_frame *f;
		int ret = fl_wire_recv(c->fd, c->hello ? &c->lim : NULL,
				       c->end_sent ? 3000 : (int)c->timeout_ms, &f, err, sizeof(err));

		if (c->end_sent && ret < 0) {
			summary(c);
			return 0;
		}
		if (ret == -ECONNRESET || ret == -EPIPE || (ret < 0 && !err[0] && ret != -ETIMEDOUT)) {
			printf("{\"event\":\"closed\",\"errno\":%d}\n", -ret);
			summary(c);
			return 2;
		}
		if (ret < 0)
			die("recv: %s (%s)", err[0] ? err : "-", strerror(-ret));
		c->nframes++;
		if ((unsigned)f->body_case < 16)
			c->frames[f->body_case]++;
		switch (f->body_case) {
		case FAULTLINE__WIRE__FRAME__BODY_HELLO:
			on_source_hello(c, f->hello);
			pause_at(c, "hello");
			send_requests(c, c->queries, c->nqueries, true);
			send_requests(c, c->before, c->nbefore, false);
			c->nqueries = c->nbefore = 0;
			break;
		case FAULTLINE__WIRE__FRAME__BODY_PAGE_DATA:
			on_page_data(c, f->page_data);
			break;
		case FAULTLINE__WIRE__FRAME__BODY_STATE_ANSWER: {
			const Faultline__Wire__StateAnswer *a = f->state_answer;

			printf("{\"event\":\"state_answer\",\"seq\":%" PRIu64 ",\"region\":%u,\"states\":[",
			       a->seq, a->region);
			for (size_t i = 0; i < a->n_pages; i++)
				printf("%s[%" PRIu64 ",\"%s\"]", i ? "," : "", a->pages[i],
				       state_name(fl_wire_state_at(a->states.data, i)));
			printf("]}\n");
			break;
		}
		case FAULTLINE__WIRE__FRAME__BODY_PRECOPY_DONE:
			printf("{\"event\":\"precopy_done\",\"pages\":%" PRIu64 "}\n",
			       f->precopy_done->pages);
			fflush(stdout);
			pause_at(c, "precopy_done");
			break;
		case FAULTLINE__WIRE__FRAME__BODY_SWITCHOVER:
			c->switched = true;
			memset(c->map_pages, 0, sizeof(c->map_pages));
			maps_reported = false;
			printf("{\"event\":\"switchover\",\"dirty_pages\":%" PRIu64 "}\n",
			       f->switchover->dirty_pages);
			fflush(stdout);
			pause_at(c, "switchover");
			send_requests(c, c->after, c->nafter, false);
			c->nafter = 0;
			break;
		case FAULTLINE__WIRE__FRAME__BODY_STATE_MAP: {
			const Faultline__Wire__StateMapChunk *m = f->state_map;

			ret = fl_statemap_decode(&c->map[m->region], m->first_page, m->npages,
						 m->zdata.data, m->zdata.len);
			if (ret)
				die("map chunk %u/%" PRIu64 ": %s", m->region, m->first_page,
				    strerror(-ret));
			c->map_pages[m->region] += m->npages;
			if (!maps_reported && all_maps_done(c)) {
				maps_reported = true;
				printf("{\"event\":\"map_done\"}\n");
				fflush(stdout);
				pause_at(c, "map_done");
			}
			break;
		}
		case FAULTLINE__WIRE__FRAME__BODY_POISON:
			printf("{\"event\":\"poison_update\",\"region\":%u,\"pages\":[", f->poison->region);
			for (size_t i = 0; i < f->poison->n_pages; i++) {
				bset(c->poisoned[f->poison->region], f->poison->pages[i]);
				printf("%s%" PRIu64, i ? "," : "", f->poison->pages[i]);
			}
			printf("]}\n");
			break;
		case FAULTLINE__WIRE__FRAME__BODY_END:
			c->src_end = true;
			printf("{\"event\":\"end\",\"pages_sent\":%" PRIu64 ",\"pages_poisoned\":%" PRIu64
			       "}\n", f->end->pages_sent, f->end->pages_poisoned);
			fflush(stdout);
			pause_at(c, "end");
			if (!c->no_end) {
				Faultline__Wire__End e = FAULTLINE__WIRE__END__INIT;

				/* then read on until the source closes: poison found after
				 * its End still arrives and must be seen */
				send_frame(c, FAULTLINE__WIRE__FRAME__BODY_END, &e);
				c->end_sent = true;
			}
			break;
		case FAULTLINE__WIRE__FRAME__BODY_ERROR:
			printf("{\"event\":\"error\",\"code\":%u,\"text\":\"", f->error->code);
			for (const char *p = f->error->text; *p; p++)
				if (*p != '"' && *p != '\\' && (unsigned char)*p >= 0x20)
					putchar(*p);
			printf("\"}\n");
			fflush(stdout);
			fl_wire_free(f);
			return 3;
		default:
			die("unexpected frame type %d", f->body_case);
		}
		fl_wire_free(f);
		fflush(stdout);
		if (c->drop_after >= 0 && c->nframes >= (uint64_t)c->drop_after) {
			/* a lost connection: everything in flight is gone */
			c->drop_after = -1;
			close(c->fd);
			c->reconnects++;
			printf("{\"event\":\"dropped\",\"after_frames\":%" PRIu64 "}\n", c->nframes);
			fflush(stdout);
			do_connect(c, true);
		}
	}
}

int main(int argc, char **argv)
{
	if (argc >= 2 && !strcmp(argv[1], "mem"))
		return mem_main(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "target"))
		return target_main(argc - 2, argv + 2);
	fprintf(stderr, "usage: wire-client mem [--pages N] [--hole-every K] [--anon-pages M]\n"
			"       wire-client target --connect HOST:PORT [--precopy] [--request R:P,..]\n"
			"              [--request-after-switchover R:P,..] [--query R:P,..]\n"
			"              [--pause-at hello|precopy_done|switchover|map_done|end]\n"
			"              [--drop-after FRAMES] [--image-dir DIR] [--no-end] [--garbage]\n"
			"              [--role NAME] [--timeout-ms MS] [--resume] [--session HEX]\n");
	return 2;
}
