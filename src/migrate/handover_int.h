/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * The handover's insides, shared by its parts (not an API): the framing with
 * fds both sides use (handover.c), the VMM side (handover_vmm.c) and the
 * router side (handover_router.c).
 */
#ifndef FAULTLINE_HANDOVER_INT_H
#define FAULTLINE_HANDOVER_INT_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "errmsg.h"
#include "clock.h"
#include "handover.h"

#ifndef F_GET_SEALS
#define F_GET_SEALS 1034
#endif

/* A connected peer sends its Hello (or its answer) at once; a silent one is broken. */
#define HELLO_TIMEOUT_MS 10000
/* Once the first byte of a frame is there, the rest follows in one send. */
#define FRAME_REST_MS 5000
#define MAX_HANDOVER_FDS (FL_WIRE_MAX_REGIONS + 1)
/* Room for a few more fds than allowed, so "too many" is seen as a count
 * rather than as a truncation the kernel already cleaned up. */
#define FD_BAG_CAP (MAX_HANDOVER_FDS + 8)
#define MAX_PAGE_SIZE (1ull << 30)
#define UFFD_LINK "anon_inode:[userfaultfd]"


/* fds received with a frame (SCM_RIGHTS), kept until taken or closed. */
struct fd_bag {
	int fd[FD_BAG_CAP];
	unsigned n;
	unsigned dropped;	/* fds beyond FD_BAG_CAP, closed on arrival */
	bool truncated;		/* MSG_CTRUNC: the kernel dropped some */
};

/* ---- shared between the parts (each defined in one of them) ---- */


int64_t fl_ho_deadline_in(int timeout_ms);

int fl_ho_ms_left(int64_t deadline);

void fl_ho_fd_bag_close(struct fd_bag *b);

int fl_ho_recv_frame(int fd, int64_t deadline, struct fd_bag *bag, fl_frame **out,
		      char *err, size_t errlen);

int fl_ho_send_frame(int fd, const fl_frame *f, const int *fds, unsigned nfds);

void fl_ho_send_error(int fd, int code, const char *text);

bool fl_ho_is_pow2(uint64_t x);

int fl_ho_wire_errno(uint32_t code);



int fl_ho_check_overlap(const uint64_t *start, const uint64_t *len, unsigned n,
			 char *err, size_t errlen);

int fl_ho_unix_addr(const char *path, struct sockaddr_un *sa, char *err, size_t errlen);

#endif
