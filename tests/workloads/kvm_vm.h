/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * What the test VMMs (kvm-guest, migrate-vm) share: a VM on /dev/kvm with
 * a code slot at GPA 0, its vCPUs entered in flat 32-bit protected mode,
 * the KVM_RUN exits neither VMM expects, and the small process helpers
 * around them.  Each VMM keeps its own guest code, memory, exit handling
 * and bookkeeping.
 *
 * The helpers die on set-up failures (a test VMM that cannot build its VM
 * has nothing to report); what a vCPU thread runs into goes into its
 * KVM_VM_ERR_LEN buffer instead, for the VMM to report.
 */
#ifndef FAULTLINE_KVM_VM_H
#define FAULTLINE_KVM_VM_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <linux/kvm.h>

/* KVM exits newer than Debian 12's 6.1 uapi header. */
#ifndef KVM_EXIT_LOONGARCH_IOCSR
#define KVM_EXIT_LOONGARCH_IOCSR 38
#endif
#ifndef KVM_EXIT_MEMORY_FAULT
#define KVM_EXIT_MEMORY_FAULT 39
#endif
#ifndef KVM_EXIT_TDX
#define KVM_EXIT_TDX 40
#endif
#ifndef KVM_CAP_MEMORY_FAULT_INFO
#define KVM_CAP_MEMORY_FAULT_INFO 232
#endif

#define KVM_VM_ERR_LEN 256	/* the buffers set_err() writes */

/* The VMM's name, which starts every message (each VMM defines it). */
extern const char kvm_vm_prog[];

/* CLOCK_MONOTONIC, the clock of every timestamp the VMMs report. */
uint64_t now_ns(void);
__attribute__((format(printf, 1, 2), noreturn))
void die(const char *fmt, ...);
__attribute__((format(printf, 2, 3)))
void set_err(char *buf, const char *fmt, ...);
/* A command-line error: the message, a pointer to --help, exit status 2. */
__attribute__((noreturn))
void bad_usage(const char *fmt, const char *arg);
/* An option's number in [min, max] (strtoul base 0), or bad usage. */
unsigned long parse_ulong(const char *name, const char *s, unsigned long min,
			  unsigned long max);
/* A non-blocking, close-on-exec userfaultfd (syscall, else /dev/userfaultfd). */
int uffd_open(void);

struct kvm_vm {
	int kvm_fd, vm_fd;
	uint8_t *code_mem;	/* slot 0, from GPA 0 */
	size_t run_size;	/* of a vCPU's kvm_run mapping; 0 until the first vCPU */
};

/*
 * Opens /dev/kvm and creates the VM with its code slot: slot_len bytes at
 * GPA 0, hlt everywhere but the code copied to code_gpa, so a stray jump
 * stops the guest.  Plain anonymous memory: no userfaultfd ever sees it.
 */
void kvm_vm_create(struct kvm_vm *vm, const void *code, size_t code_size, uint64_t code_gpa,
		   size_t slot_len);
/* Memslot `slot`: len bytes at mem as guest physical gpa.. (what: for the message). */
void kvm_vm_add_slot(const struct kvm_vm *vm, unsigned slot, uint64_t gpa, void *mem,
		     size_t len, const char *what);
/*
 * Guest memory, read-write: fd -1 anonymous (MAP_NORESERVE), else fd
 * MAP_SHARED from offset 0.  Never huge pages: one userfault per 4 KiB page
 * touched, which is what the VMMs and the tests count.  what: for the message.
 */
uint8_t *kvm_vm_guest_mem(size_t len, int fd, const char *what);
/* vCPU idx: its fd, and its kvm_run mapped in *run. */
int kvm_vm_add_vcpu(struct kvm_vm *vm, unsigned idx, struct kvm_run **run);
/* Its thread, named vcpuN (what a tracer's per-thread output shows). */
void kvm_vm_start_vcpu(pthread_t *thread, unsigned idx, void *(*fn)(void *), void *arg);

/*
 * Puts the vCPU in 32-bit protected mode with flat 4 GiB segments, paging
 * off, and loads regs (rflags: only its always-one bit).  0, or -1 with
 * err set.
 */
int kvm_vm_enter_flat32(int vcpu_fd, struct kvm_regs *regs, char *err);

/* A KVM_EXIT_IO that must be one 4-byte `out`: its value, or -1 with err set. */
int kvm_vm_io_out32(const struct kvm_run *run, uint32_t *val, char *err);
/* Why an exit the VMM does not handle ends the vCPU, into err. */
void kvm_vm_exit_err(const struct kvm_run *run, char *err);
/* "KVM_EXIT_IO", ...; NULL for a number this table does not know. */
const char *kvm_vm_exit_name(unsigned reason);

#endif
