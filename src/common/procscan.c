// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>
#include "procscan.h"

#define UFFD_LINK "anon_inode:[userfaultfd]"

bool fl_proc_numeric(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isdigit((unsigned char)*s))
			return false;
	return true;
}

int fl_proc_each_uffd_fd(pid_t pid, int (*fn)(void *arg, int dirfd, int fd), void *arg)
{
	char path[64], target[64];
	struct dirent *d;
	int n = 0, ret = 0;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	dir = opendir(path);
	if (!dir)
		return -errno;
	while (!ret && (d = readdir(dir))) {
		ssize_t len;

		if (!fl_proc_numeric(d->d_name))
			continue;
		len = readlinkat(dirfd(dir), d->d_name, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = 0;
		if (strcmp(target, UFFD_LINK))
			continue;
		ret = fn ? fn(arg, dirfd(dir), atoi(d->d_name)) : 0;
		n += ret == 0;
	}
	closedir(dir);
	return ret < 0 ? ret : n;
}

int fl_proc_count_uffds(pid_t pid)
{
	return fl_proc_each_uffd_fd(pid, NULL, NULL);
}

static int each_pid(bool (*match)(pid_t pid, const void *want), const void *want,
		    void (*fn)(void *arg, pid_t pid), void *arg)
{
	DIR *proc = opendir("/proc");
	struct dirent *d;
	int n = 0;

	if (!proc)
		return -errno;
	while ((d = readdir(proc))) {
		pid_t pid;

		if (!fl_proc_numeric(d->d_name))
			continue;
		pid = (pid_t)atoi(d->d_name);
		if (pid == getpid() || !match(pid, want))
			continue;
		fn(arg, pid);
		n++;
	}
	closedir(proc);
	return n;
}

static bool holds_uffd(pid_t pid, const void *want)
{
	(void)want;
	return fl_proc_count_uffds(pid) > 0;
}

int fl_proc_each_uffd_holder(void (*fn)(void *arg, pid_t pid), void *arg)
{
	return each_pid(holds_uffd, NULL, fn, arg);
}

static bool comm_is(pid_t pid, const void *want)
{
	char comm[32];

	return !fl_proc_comm(pid, comm, sizeof(comm)) && !strcmp(comm, want);
}

int fl_proc_each_comm(const char *comm, void (*fn)(void *arg, pid_t pid), void *arg)
{
	return each_pid(comm_is, comm, fn, arg);
}

bool fl_proc_exists(pid_t pid)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	return pid > 0 && access(path, F_OK) == 0;
}

pid_t fl_proc_tgid(pid_t tid)
{
	char path[64], line[256];
	pid_t tgid = -ENOENT;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", tid);
	f = fopen(path, "r");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

int fl_proc_comm(pid_t pid, char *buf, size_t len)
{
	char path[64];
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	f = fopen(path, "r");
	if (!f)
		return -errno;
	if (!fgets(buf, (int)len, f)) {
		fclose(f);
		return -EIO;
	}
	fclose(f);
	buf[strcspn(buf, "\n")] = 0;
	return 0;
}

bool fl_proc_in_userfault(pid_t tid)
{
	char path[64], wchan[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/wchan", tid);
	f = fopen(path, "r");
	if (!f)
		return false;
	if (!fgets(wchan, sizeof(wchan), f))
		wchan[0] = 0;
	fclose(f);
	return !strcmp(wchan, "handle_userfault");
}

uint64_t fl_proc_start_ns(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	struct timespec boot, mono;
	long hz = sysconf(_SC_CLK_TCK);
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	/* comm may hold spaces and parentheses: fields count from the last ')' */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d "
			 "%*d %*d %*d %llu", &start) != 1 || hz <= 0)
		return 0;
	/* starttime counts clock ticks on the boot-time clock, which also runs
	 * while suspended; the monotonic clock does not */
	clock_gettime(CLOCK_BOOTTIME, &boot);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	uint64_t boot_ns = (uint64_t)boot.tv_sec * 1000000000ull + (uint64_t)boot.tv_nsec;
	uint64_t mono_ns = (uint64_t)mono.tv_sec * 1000000000ull + (uint64_t)mono.tv_nsec;
	uint64_t start_ns = start * (1000000000ull / (uint64_t)hz);

	return start_ns + mono_ns > boot_ns ? start_ns + mono_ns - boot_ns : 0;
}

#define HUGETLBFS_MAGIC_ 0x958458f6

int fl_proc_page_size(pid_t pid, uint64_t addr, uint64_t *start, uint64_t *end, uint32_t *size)
{
	char path[64], line[512];
	FILE *f;
	int ret = -ENOENT;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f)
		return errno == ENOENT ? -ESRCH : -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long lo, hi;
		int name = 0;

		if (sscanf(line, "%llx-%llx %*s %*s %*s %*s %n", &lo, &hi, &name) < 2)
			continue;
		if (addr < lo || addr >= hi)
			continue;
		*start = lo;
		*end = hi;
		*size = (uint32_t)sysconf(_SC_PAGESIZE);
		/* a named mapping may be hugetlbfs (a file there, or MAP_HUGETLB's
		 * "/anon_hugepage (deleted)"): its filesystem says the page size */
		if (name && line[name] == '/') {
			struct statfs st;

			snprintf(path, sizeof(path), "/proc/%d/map_files/%llx-%llx", pid, lo, hi);
			if (!statfs(path, &st) && (unsigned long)st.f_type == HUGETLBFS_MAGIC_)
				*size = (uint32_t)st.f_bsize;
		}
		ret = 0;
		break;
	}
	fclose(f);
	return ret;
}
