/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Framing of the migration wire protocol (src/migrate/faultline.proto): 4-byte
 * big-endian length + one protobuf-c `Frame`.  Decoding validates every
 * field against hard limits and the session's region table, so the router
 * and the source only ever see well-formed frames; a bad frame yields a
 * negative errno plus a sentence saying what was wrong.
 */
#ifndef FAULTLINE_WIRE_H
#define FAULTLINE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "faultline.pb-c.h"

#define FL_WIRE_VERSION 1
/* Hard limits: a frame larger than this is refused before it is buffered. */
#define FL_WIRE_MAX_FRAME (4u << 20)
/* Pages larger than this travel in chunks of this size (PageData.chunk_offset). */
#define FL_WIRE_PAGE_CHUNK (2u << 20)
/* Pages named in one StateQuery/StateAnswer/PageRequest/PageData/PoisonUpdate. */
#define FL_WIRE_MAX_PAGES 1024
/* Pages covered by one StateMapChunk (4 Mi pages = 1 MiB of 2-bit states). */
#define FL_WIRE_MAX_CHUNK_PAGES (4ull << 20)
#define FL_WIRE_MAX_REGIONS 64

typedef Faultline__Wire__Frame fl_frame;

/* Session facts that bound field values (region ids, page indices). */
struct fl_wire_limits {
	uint32_t page_size;            /* 0 until the source's Hello is seen */
	uint32_t nregions;
	uint64_t region_pages[FL_WIRE_MAX_REGIONS];
};

/*
 * A byte stream to read frames from and write them to: a plain fd, or a
 * TLS channel (tls.h).  Both return bytes moved, 0 at EOF (read), or a
 * negative errno (-EAGAIN: nothing now).
 */
struct fl_io {
	void *ctx;
	ssize_t (*read)(void *ctx, void *buf, size_t len);
	ssize_t (*write)(void *ctx, const void *buf, size_t len);
};

/* Buffered, non-blocking-friendly reader of one connection. */
struct fl_wire_reader {
	uint8_t *buf;
	size_t len;     /* bytes buffered */
	size_t cap;
	size_t off;     /* start of the first unconsumed frame */
};

struct fl_wire_writer {
	uint8_t *buf;
	size_t len;
	size_t off;     /* first byte not yet written to the fd */
	size_t cap;
};

int fl_wire_reader_init(struct fl_wire_reader *r);
void fl_wire_reader_free(struct fl_wire_reader *r);
/* One read() of whatever the fd has: bytes read, 0 on EOF, -EAGAIN when a
 * non-blocking fd has nothing (not a failure), -ENOBUFS when the buffer is
 * full of complete frames (drain with fl_wire_next first), else -errno. */
ssize_t fl_wire_reader_fill(struct fl_wire_reader *r, int fd);
/* The same from any stream. */
ssize_t fl_wire_reader_fill_io(struct fl_wire_reader *r, const struct fl_io *io);
/*
 * Next complete frame: 1 and *out (free with fl_wire_free), 0 when more
 * bytes are needed, negative errno (-EPROTO, -EMSGSIZE, -ERANGE, ...) on a
 * malformed frame, with `err` describing it.  `lim` may be NULL (no
 * session facts yet: region/page checks are skipped).
 */
int fl_wire_next(struct fl_wire_reader *r, const struct fl_wire_limits *lim,
		 fl_frame **out, char *err, size_t errlen);
/* Decode + validate one frame body (no length prefix). */
int fl_wire_decode(const uint8_t *body, size_t len, const struct fl_wire_limits *lim,
		   fl_frame **out, char *err, size_t errlen);
int fl_wire_validate(const fl_frame *f, const struct fl_wire_limits *lim,
		     char *err, size_t errlen);
void fl_wire_free(fl_frame *f);

int fl_wire_writer_init(struct fl_wire_writer *w);
void fl_wire_writer_free(struct fl_wire_writer *w);
/* Append one frame (length prefix + body) to the buffer. */
int fl_wire_put(struct fl_wire_writer *w, const fl_frame *f);
/* write() buffered bytes; returns bytes still pending (0: all written) or
 * negative errno.  EAGAIN leaves them pending. */
ssize_t fl_wire_flush(struct fl_wire_writer *w, int fd);
ssize_t fl_wire_flush_io(struct fl_wire_writer *w, const struct fl_io *io);
static inline size_t fl_wire_pending(const struct fl_wire_writer *w) { return w->len - w->off; }

/* Blocking helpers for simple peers (handover, tests): send one frame /
 * receive one frame, waiting at most timeout_ms (-1: forever).  Both return
 * 0 on success (recv: *out, free with fl_wire_free) or negative errno; recv
 * reads exactly one frame's bytes and fails with -ETIMEDOUT, -EPIPE (peer
 * closed between frames) or -ECONNRESET (peer closed inside a frame). */
/*
 * Wait for `events` on fd until deadline (CLOCK_MONOTONIC ms, -1: none):
 * 0 ready (errors and hang-ups surface from the read or write that
 * follows), -ETIMEDOUT, or -errno.  The one wait of the blocking paths.
 */
int fl_wire_wait(int fd, short events, int64_t deadline);
int fl_wire_send(int fd, const fl_frame *f);
int fl_wire_recv(int fd, const struct fl_wire_limits *lim, int timeout_ms,
		 fl_frame **out, char *err, size_t errlen);

/* Fill `lim` from a source Hello (validated). */
int fl_wire_limits_from_hello(struct fl_wire_limits *lim, const Faultline__Wire__Hello *h,
			      char *err, size_t errlen);

/* 2-bit state packing shared by StateAnswer/PageData `states`. */
static inline unsigned fl_wire_state_at(const uint8_t *states, size_t i)
{
	return (states[i >> 2] >> ((i & 3) * 2)) & 3;
}
static inline void fl_wire_state_set(uint8_t *states, size_t i, unsigned s)
{
	states[i >> 2] = (uint8_t)((states[i >> 2] & ~(3u << ((i & 3) * 2))) | ((s & 3) << ((i & 3) * 2)));
}
static inline size_t fl_wire_states_bytes(size_t npages) { return (npages + 3) / 4; }

#endif
