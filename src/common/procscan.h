/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/* What /proc says about processes: who holds a userfaultfd, names, liveness. */
#ifndef FAULTLINE_PROCSCAN_H
#define FAULTLINE_PROCSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Calls fn for every process with an fd on anon_inode:[userfaultfd]. Returns how many. */
int fl_proc_each_uffd_holder(void (*fn)(void *arg, pid_t pid), void *arg);
/* Calls fn for every process whose comm equals comm. Returns how many. */
int fl_proc_each_comm(const char *comm, void (*fn)(void *arg, pid_t pid), void *arg);
bool fl_proc_exists(pid_t pid);
/* A /proc directory entry that names a process or thread: all digits. */
bool fl_proc_numeric(const char *s);
/* Thread-group id of a tid, or -errno. */
pid_t fl_proc_tgid(pid_t tid);
int fl_proc_comm(pid_t pid, char *buf, size_t len);
/* Is thread tid asleep in handle_userfault (its /proc wchan)? */
bool fl_proc_in_userfault(pid_t tid);
/*
 * The page size of pid's mapping that holds addr: its huge page size for
 * hugetlbfs (a hugetlbfs file or MAP_HUGETLB), else the base page size; the
 * mapping's [start, end) for caching.  Reads /proc/PID/maps (no page-table
 * walk, unlike smaps) and statfs of the mapping's map_files entry.
 * 0 or -errno (-ENOENT: no mapping there, -ESRCH: no such process).
 */
int fl_proc_page_size(pid_t pid, uint64_t addr, uint64_t *start, uint64_t *end, uint32_t *size);
/* When pid started, in CLOCK_MONOTONIC ns (0 if unknown). */
uint64_t fl_proc_start_ns(pid_t pid);
/*
 * Calls fn for every fd of pid on a userfaultfd (dirfd: its /proc/PID/fd,
 * to stat the magic link).  fn returns 0 to go on, 1 to skip the fd (not
 * counted), or -errno to stop.  Returns how many it took, or -errno.
 */
int fl_proc_each_uffd_fd(pid_t pid, int (*fn)(void *arg, int dirfd, int fd), void *arg);
/* How many userfaultfds pid holds (0 if none, -errno if unreadable). */
int fl_proc_count_uffds(pid_t pid);

#endif
