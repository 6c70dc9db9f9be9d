/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * A userfaultfd for a test, the one way every test makes it: the syscall,
 * or /dev/userfaultfd where the syscall is refused or unknown (valgrind, a
 * container that filters it), then the API handshake with the features
 * asked.  Header-only: unit, integration, BPF and fuzz tests and the
 * benchmarks include it.
 */
#ifndef FAULTLINE_TEST_UFFD_H
#define FAULTLINE_TEST_UFFD_H

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uffd_compat.h"

/* A new userfaultfd (flags: O_CLOEXEC, O_NONBLOCK) with features
 * negotiated: its fd, or -errno. */
static inline int test_uffd_open(int flags, uint64_t features)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	int fd = (int)syscall(SYS_userfaultfd, flags);

	if (fd < 0) {
		int e = errno, dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

		if (dev < 0)
			return -e;
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
		close(dev);
		if (fd < 0)
			return -e;
	}
	if (ioctl(fd, UFFDIO_API, &api)) {
		int e = errno;

		close(fd);
		return -e;
	}
	return fd;
}

/* Register [addr, addr + len) in mode (UFFDIO_REGISTER_MODE_*): 0 or -errno. */
static inline int test_uffd_register(int uffd, const void *addr, uint64_t len, uint64_t mode)
{
	struct uffdio_register r = { .range = { (uint64_t)(uintptr_t)addr, len }, .mode = mode };

	return ioctl(uffd, UFFDIO_REGISTER, &r) ? -errno : 0;
}

#endif
