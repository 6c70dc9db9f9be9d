// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The test VMMs' shared VM plumbing and helpers (see kvm_vm.h). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "uffd_compat.h"
#include "kvm_vm.h"

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

void die(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", kvm_vm_prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

void set_err(char *buf, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, KVM_VM_ERR_LEN, fmt, ap);
	va_end(ap);
}

void bad_usage(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", kvm_vm_prog);
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\nTry '%s --help'.\n", kvm_vm_prog);
	exit(2);
}

unsigned long parse_ulong(const char *name, const char *s, unsigned long min,
			  unsigned long max)
{
	char *end;
	unsigned long v;

	errno = 0;
	if (!s || !*s || *s == '-')
		bad_usage("%s needs a non-negative integer", name);
	v = strtoul(s, &end, 0);
	if (errno || *end) {
		fprintf(stderr, "%s: %s: '%s' is not a number\n", kvm_vm_prog, name, s);
		exit(2);
	}
	if (v < min || v > max) {
		fprintf(stderr, "%s: %s %lu out of range %lu..%lu\n", kvm_vm_prog, name, v, min,
			max);
		exit(2);
	}
	return v;
}

int uffd_open(void)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int serr = errno;

	if (fd >= 0)
		return fd;
	/* Fall back to /dev/userfaultfd (works when the syscall is restricted). */
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		close(dev);
		if (fd >= 0)
			return fd;
	}
	die("userfaultfd(): %s%s", strerror(serr),
	    serr == EPERM ? " — needs root/CAP_SYS_PTRACE or vm.unprivileged_userfaultfd=1"
	    : serr == ENOSYS ? " — kernel built without CONFIG_USERFAULTFD" : "");
}

void kvm_vm_create(struct kvm_vm *vm, const void *code, size_t code_size, uint64_t code_gpa,
		   size_t slot_len)
{
	vm->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		int e = errno;
		die("/dev/kvm: %s%s", strerror(e),
		    e == ENOENT ? " — KVM not available (no kvm module / not exposed)"
		    : e == EACCES ? " — no permission (run as root or join group kvm)" : "");
	}
	int r = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (r != KVM_API_VERSION)
		die("/dev/kvm: KVM_GET_API_VERSION returned %d, expected %d", r, KVM_API_VERSION);
	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0UL);
	if (vm->vm_fd < 0)
		die("KVM_CREATE_VM: %s", strerror(errno));
	/* Needed on Intel without unrestricted guest; harmless elsewhere. */
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0 && errno != EINVAL)
		fprintf(stderr, "%s: warning: KVM_SET_TSS_ADDR: %s\n", kvm_vm_prog, strerror(errno));

	vm->code_mem = mmap(NULL, slot_len, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (vm->code_mem == MAP_FAILED)
		die("mmap code slot: %s", strerror(errno));
	memset(vm->code_mem, 0xf4, slot_len);
	memcpy(vm->code_mem + code_gpa, code, code_size);
	struct kvm_userspace_memory_region slot = {
		.slot = 0, .guest_phys_addr = 0, .memory_size = slot_len,
		.userspace_addr = (uint64_t)(uintptr_t)vm->code_mem,
	};
	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
		die("KVM_SET_USER_MEMORY_REGION (code slot): %s", strerror(errno));
}

void kvm_vm_add_slot(const struct kvm_vm *vm, unsigned slot, uint64_t gpa, void *mem,
		     size_t len, const char *what)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .guest_phys_addr = gpa, .memory_size = len,
		.userspace_addr = (uint64_t)(uintptr_t)mem,
	};

	if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0)
		die("KVM_SET_USER_MEMORY_REGION (%s, %zu bytes at GPA 0x%" PRIx64 "): %s", what, len,
		    gpa, strerror(errno));
}

uint8_t *kvm_vm_guest_mem(size_t len, int fd, const char *what)
{
	uint8_t *mem;

	if (fd < 0)
		mem = mmap(NULL, len, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	else
		mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (mem == MAP_FAILED)
		die("mmap %zu bytes of %s: %s", len, what, strerror(errno));
	if (madvise(mem, len, MADV_NOHUGEPAGE) < 0 && errno != EINVAL)
		fprintf(stderr, "%s: warning: MADV_NOHUGEPAGE: %s\n", kvm_vm_prog, strerror(errno));
	return mem;
}

int kvm_vm_add_vcpu(struct kvm_vm *vm, unsigned idx, struct kvm_run **run)
{
	if (!vm->run_size) {
		int sz = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
		if (sz < (int)sizeof(struct kvm_run))
			die("KVM_GET_VCPU_MMAP_SIZE: %s", sz < 0 ? strerror(errno) : "too small");
		vm->run_size = (size_t)sz;
	}
	int fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)idx);
	if (fd < 0)
		die("KVM_CREATE_VCPU %u: %s", idx, strerror(errno));
	*run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*run == MAP_FAILED)
		die("mmap kvm_run of vCPU %u: %s", idx, strerror(errno));
	return fd;
}

void kvm_vm_start_vcpu(pthread_t *thread, unsigned idx, void *(*fn)(void *), void *arg)
{
	char name[16];
	int r = pthread_create(thread, NULL, fn, arg);

	if (r)
		die("pthread_create (vCPU %u): %s", idx, strerror(r));
	snprintf(name, sizeof(name), "vcpu%u", idx);
	pthread_setname_np(*thread, name);
}

int kvm_vm_enter_flat32(int vcpu_fd, struct kvm_regs *regs, char *err)
{
	struct kvm_sregs sregs;

	if (ioctl(vcpu_fd, KVM_GET_SREGS, &sregs) < 0) {
		set_err(err, "KVM_GET_SREGS: %s", strerror(errno));
		return -1;
	}
	struct kvm_segment code_seg = {
		.base = 0, .limit = 0xffffffff, .selector = 0x08, .type = 11,
		.present = 1, .dpl = 0, .db = 1, .s = 1, .l = 0, .g = 1,
	};
	struct kvm_segment data_seg = code_seg;
	data_seg.selector = 0x10;
	data_seg.type = 3;
	sregs.cs = code_seg;
	sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data_seg;
	sregs.cr0 |= 1;              /* PE, paging stays off */
	sregs.cr0 &= ~(1UL << 31);
	sregs.efer = 0;
	if (ioctl(vcpu_fd, KVM_SET_SREGS, &sregs) < 0) {
		set_err(err, "KVM_SET_SREGS: %s", strerror(errno));
		return -1;
	}
	regs->rflags = 0x2;
	if (ioctl(vcpu_fd, KVM_SET_REGS, regs) < 0) {
		set_err(err, "KVM_SET_REGS: %s", strerror(errno));
		return -1;
	}
	return 0;
}

int kvm_vm_io_out32(const struct kvm_run *run, uint32_t *val, char *err)
{
	if (run->io.direction != KVM_EXIT_IO_OUT || run->io.size != 4 || run->io.count != 1) {
		set_err(err, "unexpected I/O: %s port 0x%x size %u count %u",
			run->io.direction == KVM_EXIT_IO_OUT ? "out" : "in",
			run->io.port, run->io.size, run->io.count);
		return -1;
	}
	memcpy(val, (const uint8_t *)run + run->io.data_offset, 4);
	return 0;
}

void kvm_vm_exit_err(const struct kvm_run *run, char *err)
{
	const char *n;

	switch (run->exit_reason) {
	case KVM_EXIT_FAIL_ENTRY:
		set_err(err, "KVM_EXIT_FAIL_ENTRY: hardware_entry_failure_reason 0x%llx",
			(unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		break;
	case KVM_EXIT_INTERNAL_ERROR:
		set_err(err, "KVM_EXIT_INTERNAL_ERROR: suberror %u", run->internal.suberror);
		break;
	case KVM_EXIT_SHUTDOWN:
		set_err(err, "KVM_EXIT_SHUTDOWN (guest triple fault)");
		break;
	default:
		n = kvm_vm_exit_name(run->exit_reason);
		if (n)
			set_err(err, "unexpected exit %s", n);
		else
			set_err(err, "unexpected exit reason %u", run->exit_reason);
	}
}

const char *kvm_vm_exit_name(unsigned reason)
{
	static const char *const names[] = {
		[KVM_EXIT_UNKNOWN] = "KVM_EXIT_UNKNOWN",
		[KVM_EXIT_EXCEPTION] = "KVM_EXIT_EXCEPTION",
		[KVM_EXIT_IO] = "KVM_EXIT_IO",
		[KVM_EXIT_HYPERCALL] = "KVM_EXIT_HYPERCALL",
		[KVM_EXIT_DEBUG] = "KVM_EXIT_DEBUG",
		[KVM_EXIT_HLT] = "KVM_EXIT_HLT",
		[KVM_EXIT_MMIO] = "KVM_EXIT_MMIO",
		[KVM_EXIT_IRQ_WINDOW_OPEN] = "KVM_EXIT_IRQ_WINDOW_OPEN",
		[KVM_EXIT_SHUTDOWN] = "KVM_EXIT_SHUTDOWN",
		[KVM_EXIT_FAIL_ENTRY] = "KVM_EXIT_FAIL_ENTRY",
		[KVM_EXIT_INTR] = "KVM_EXIT_INTR",
		[KVM_EXIT_SET_TPR] = "KVM_EXIT_SET_TPR",
		[KVM_EXIT_TPR_ACCESS] = "KVM_EXIT_TPR_ACCESS",
		[KVM_EXIT_NMI] = "KVM_EXIT_NMI",
		[KVM_EXIT_INTERNAL_ERROR] = "KVM_EXIT_INTERNAL_ERROR",
		[KVM_EXIT_SYSTEM_EVENT] = "KVM_EXIT_SYSTEM_EVENT",
		[KVM_EXIT_IOAPIC_EOI] = "KVM_EXIT_IOAPIC_EOI",
		[KVM_EXIT_HYPERV] = "KVM_EXIT_HYPERV",
		[KVM_EXIT_X86_RDMSR] = "KVM_EXIT_X86_RDMSR",
		[KVM_EXIT_X86_WRMSR] = "KVM_EXIT_X86_WRMSR",
		[KVM_EXIT_DIRTY_RING_FULL] = "KVM_EXIT_DIRTY_RING_FULL",
		[KVM_EXIT_AP_RESET_HOLD] = "KVM_EXIT_AP_RESET_HOLD",
		[KVM_EXIT_X86_BUS_LOCK] = "KVM_EXIT_X86_BUS_LOCK",
		[KVM_EXIT_XEN] = "KVM_EXIT_XEN",
		[KVM_EXIT_NOTIFY] = "KVM_EXIT_NOTIFY",
		[KVM_EXIT_MEMORY_FAULT] = "KVM_EXIT_MEMORY_FAULT",
		[KVM_EXIT_TDX] = "KVM_EXIT_TDX",
	};

	if (reason < sizeof(names) / sizeof(names[0]) && names[reason])
		return names[reason];
	return NULL;
}
