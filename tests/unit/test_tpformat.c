// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Unit tests of the __print_symbolic() table parser (src/common/tpformat.c): on
 * synthetic print-fmt strings, then on this kernel's kvm:kvm_exit and
 * kvm:kvm_userspace_exit format files (skipped, with the reason, where
 * tracefs or the tracepoint is missing or unreadable).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tpformat.h"
#include "tracefs.h"

static void expect_entry(const struct fl_symtab *t, int i, int64_t val, const char *name)
{
	assert_true(i < t->n);
	assert_int_equal(t->e[i].val, val);
	assert_string_equal(t->e[i].name, name);
}

/* ---- 1. synthetic formats -------------------------------------------------- */

static void test_adjacent_literals(void **state)
{
	const char *fmt = "\"reason %s (%d)\", REC->errno < 0 ? \"error\" : "
			  "__print_symbolic(REC->reason, { 0, \"KVM_EXIT_\" \"UNKNOWN\" }, "
			  "{ 2, \"KVM_EXIT_\" \"IO\" }, { 6, \"KVM_EXIT_\" \"MMIO\" }), REC->reason";
	struct fl_symtab t;

	(void)state;
	assert_int_equal(fl_parse_symbolic(fmt, 0, &t), 3);
	assert_int_equal(t.n, 3);
	expect_entry(&t, 0, 0, "KVM_EXIT_UNKNOWN");
	expect_entry(&t, 1, 2, "KVM_EXIT_IO");
	expect_entry(&t, 2, 6, "KVM_EXIT_MMIO");
	assert_string_equal(fl_sym_name(&t, 6), "KVM_EXIT_MMIO");
	assert_string_equal(fl_sym_name(&t, 2), "KVM_EXIT_IO");
	assert_null(fl_sym_name(&t, 3));
	fl_symtab_free(&t);
	assert_int_equal(t.n, 0);
	assert_null(t.e);
	fl_symtab_free(&t);	/* twice is harmless */

	/* three literals, spaces and no spaces between them */
	assert_int_equal(fl_parse_symbolic("__print_symbolic(x, { 1, \"A\"\"B\"   \"C\" })", 0, &t),
			 1);
	expect_entry(&t, 0, 1, "ABC");
	fl_symtab_free(&t);
}

static void test_value_sums(void **state)
{
	const char *fmt = "__print_symbolic(REC->exit_reason, { 0x000, \"read_cr0\" }, "
			  "{ 0x040 + 0, \"DE excp\" }, { 0x040 + 13, \"GP excp\" }, "
			  "{ 0x040+14,\"PF excp\" }, { 1 + 2 + 3, \"six\" }, { 0x400, \"npf\" }, "
			  "{ 0x80000001, \"vmgexit_mmio_read\" }, { 017, \"octal\" }, "
			  "{ -1, \"invalid_guest_state\" })";
	struct fl_symtab t;

	(void)state;
	assert_int_equal(fl_parse_symbolic(fmt, 0, &t), 9);
	expect_entry(&t, 0, 0, "read_cr0");
	expect_entry(&t, 1, 0x40, "DE excp");
	expect_entry(&t, 2, 0x40 + 13, "GP excp");
	expect_entry(&t, 3, 0x4e, "PF excp");
	expect_entry(&t, 4, 6, "six");
	expect_entry(&t, 5, 0x400, "npf");
	expect_entry(&t, 6, 0x80000001ll, "vmgexit_mmio_read");
	expect_entry(&t, 7, 15, "octal");
	expect_entry(&t, 8, -1, "invalid_guest_state");
	assert_string_equal(fl_sym_name(&t, 77), "GP excp");
	assert_string_equal(fl_sym_name(&t, -1), "invalid_guest_state");
	fl_symtab_free(&t);
}

/* Two tables (VMX : SVM in kvm_exit): which picks one. */
static void test_second_table(void **state)
{
	const char *fmt = "\"reason %s\", (REC->isa == 1) ? __print_symbolic(REC->exit_reason & "
			  "0xffff, { 0, \"EXCEPTION_NMI\" }, { 48, \"EPT_VIOLATION\" }) : "
			  "__print_symbolic(REC->exit_reason, { 0x400, \"npf\" }, "
			  "{ 0x401, \"avic_incomplete_ipi\" }, { 0x078, \"hlt\" }), "
			  "__print_flags(REC->exit_reason & ~0xffff, \" \", "
			  "{ 0x80000000, \"FAILED_VMENTRY\" })";
	struct fl_symtab t;

	(void)state;
	assert_int_equal(fl_parse_symbolic(fmt, 0, &t), 2);
	expect_entry(&t, 0, 0, "EXCEPTION_NMI");
	expect_entry(&t, 1, 48, "EPT_VIOLATION");
	assert_null(fl_sym_name(&t, 0x400));
	fl_symtab_free(&t);

	assert_int_equal(fl_parse_symbolic(fmt, 1, &t), 3);
	expect_entry(&t, 0, 0x400, "npf");
	expect_entry(&t, 1, 0x401, "avic_incomplete_ipi");
	expect_entry(&t, 2, 0x78, "hlt");
	assert_null(fl_sym_name(&t, 48));
	/* the __print_flags table after it is not a symbolic table */
	assert_null(fl_sym_name(&t, 0x80000000ll));
	fl_symtab_free(&t);

	assert_int_equal(fl_parse_symbolic(fmt, 2, &t), -ENOENT);
	assert_int_equal(t.n, 0);
	assert_null(t.e);
}

static void test_missing_table(void **state)
{
	struct fl_symtab t = { .n = 99, .e = (struct fl_sym *)&t };

	(void)state;
	assert_int_equal(fl_parse_symbolic("\"reason %d\", REC->reason", 0, &t), -ENOENT);
	assert_int_equal(t.n, 0);
	assert_null(t.e);
	assert_int_equal(fl_parse_symbolic("", 0, &t), -ENOENT);
	assert_int_equal(fl_parse_symbolic("__print_flags(x, \"|\", { 1, \"A\" })", 0, &t),
			 -ENOENT);
	/* an empty table is no table */
	assert_int_equal(fl_parse_symbolic("__print_symbolic(REC->x)", 0, &t), -ENOENT);
	assert_null(t.e);
}

/* A table longer than the first allocation (32 entries) keeps every entry. */
static void test_long_table(void **state)
{
	char fmt[8192] = "__print_symbolic(REC->v";
	struct fl_symtab t;
	size_t n = strlen(fmt);

	(void)state;
	for (int i = 0; i < 100; i++)
		n += (size_t)snprintf(fmt + n, sizeof(fmt) - n, ", { %d, \"N_\" \"%d\" }", i * 3,
				      i);
	snprintf(fmt + n, sizeof(fmt) - n, ")");
	assert_int_equal(fl_parse_symbolic(fmt, 0, &t), 100);
	for (int i = 0; i < 100; i++) {
		char name[16];

		snprintf(name, sizeof(name), "N_%d", i);
		expect_entry(&t, i, i * 3, name);
	}
	assert_string_equal(fl_sym_name(&t, 297), "N_99");
	assert_null(fl_sym_name(&t, 298));
	fl_symtab_free(&t);
}

/* Names longer than fl_sym.name are cut, NUL-terminated. */
static void test_long_name(void **state)
{
	const char *fmt = "__print_symbolic(x, { 5, \"ABCDEFGHIJKLMNOPQRSTUVWXYZ\" "
			  "\"abcdefghijklmnopqrstuvwxyz0123456789\" }, { 6, \"next\" })";
	struct fl_symtab t;

	(void)state;
	assert_int_equal(sizeof(t.e->name), 48);
	assert_int_equal(fl_parse_symbolic(fmt, 0, &t), 2);
	expect_entry(&t, 0, 5, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu");
	expect_entry(&t, 1, 6, "next");
	fl_symtab_free(&t);
}

/* Malformed input: no crash, entries before the damage kept, never more. */
static void test_garbage(void **state)
{
	static const struct {
		const char *fmt;
		int ret;
	} cases[] = {
		{ "__print_symbolic(", -ENOENT },
		{ "__print_symbolic(REC->x, {", -ENOENT },
		{ "__print_symbolic(REC->x, { 1", -ENOENT },
		{ "__print_symbolic(REC->x, { 1,", -ENOENT },
		{ "__print_symbolic(REC->x, { 1, \"unterminated", -ENOENT },
		{ "__print_symbolic(REC->x, { 1, \"a\"", -ENOENT },
		{ "__print_symbolic(REC->x, { abc, \"a\" })", -ENOENT },
		{ "__print_symbolic(REC->x, { 1 \"a\" })", -ENOENT },
		{ "__print_symbolic(REC->x, { 1, a })", -ENOENT },
		{ "__print_symbolic(REC->x, { 1 +, \"a\" })", -ENOENT },
		{ "__print_symbolic(REC->x, { , \"a\" })", -ENOENT },
		{ "__print_symbolic(REC->x, {{{{", -ENOENT },
		{ "}}}}{{{{\"\"\"\",,,,", -ENOENT },
		/* good entries, then damage: the good ones stay */
		{ "__print_symbolic(REC->x, { 1, \"a\" }, { 2, \"b\" ", 1 },
		{ "__print_symbolic(REC->x, { 1, \"a\" }, { 2, \"b\" }, { 3, ", 2 },
		{ "__print_symbolic(REC->x, { 1, \"a\" }, junk, { 2, \"b\" })", 1 },
		{ "__print_symbolic(REC->x, { 1, \"a\" }) trailing { 9, \"z\" }", 1 },
		{ "__print_symbolic(REC->x, { 1, \"\" })", 1 },
	};
	struct fl_symtab t;
	char *big;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int ret = fl_parse_symbolic(cases[i].fmt, 0, &t);

		if (ret != cases[i].ret)
			fail_msg("case %zu \"%s\": %d, want %d", i, cases[i].fmt, ret, cases[i].ret);
		assert_int_equal(t.n, ret > 0 ? ret : 0);
		if (ret > 0) {
			expect_entry(&t, 0, 1, i + 1 == sizeof(cases) / sizeof(cases[0]) ? "" : "a");
			if (ret > 1)
				expect_entry(&t, 1, 2, "b");
		} else {
			assert_null(t.e);
		}
		fl_symtab_free(&t);
	}
	/* a long run of garbage inside a table */
	big = malloc(1 << 16);
	assert_non_null(big);
	strcpy(big, "__print_symbolic(x, { 1, \"");
	memset(big + strlen(big), 'x', (1 << 16) - 64);
	big[(1 << 16) - 1] = 0;
	assert_int_equal(fl_parse_symbolic(big, 0, &t), -ENOENT);
	free(big);
}

/* ---- 2. this kernel's formats --------------------------------------------------- */

/* The print fmt line of category/event, or NULL with why set. */
static char *read_print_fmt(const char *cat, const char *ev, char *why, size_t whylen)
{
	static const char *const roots[] = { "/sys/kernel/tracing", "/sys/kernel/debug/tracing" };
	char path[256], *line = NULL;
	size_t cap = 0;

	for (unsigned r = 0; r < 2; r++) {
		FILE *f;

		snprintf(path, sizeof(path), "%s/events/%s/%s/format", roots[r], cat, ev);
		f = fopen(path, "r");
		if (!f) {
			if (!r)	/* the first root's error is the one that matters */
				snprintf(why, whylen, "cannot read %s: %s%s", path, strerror(errno),
					 geteuid() ? " (tracefs is readable by root only)" : "");
			continue;
		}
		while (getline(&line, &cap, f) > 0)
			if (!strncmp(line, "print fmt:", 10)) {
				fclose(f);
				return line;
			}
		fclose(f);
		snprintf(why, whylen, "%s has no print fmt line", path);
	}
	free(line);
	return NULL;
}

static void skip_because(const char *why)
{
	printf("# SKIP: %s\n", why);
	skip();
}

/* Entries in [from, to) of s, counted independently of the parser: each ends in `" }`. */
static int count_entries(const char *from, const char *to)
{
	int n = 0;

	for (const char *p = from; (p = strstr(p, "\" }")) && (!to || p < to); p += 3)
		n++;
	return n;
}

static void test_kernel_kvm_exit(void **state)
{
	char why[512] = "";
	char *fmt = read_print_fmt("kvm", "kvm_exit", why, sizeof(why));
	const char *t1, *t2, *flags;
	struct fl_symtab vmx, svm, none;

	(void)state;
	if (!fmt)
		skip_because(why);
	t1 = strstr(fmt, "__print_symbolic(");
	t2 = t1 ? strstr(t1 + 1, "__print_symbolic(") : NULL;
	flags = t2 ? strstr(t2, "__print_flags(") : NULL;
	if (!t2)
		fail_msg("kvm_exit's print fmt has fewer than two symbolic tables: %s", fmt);

	assert_int_equal(fl_tp_symbols("kvm", "kvm_exit", 0, &vmx), count_entries(t1, t2));
	assert_true(vmx.n > 40);
	assert_string_equal(fl_sym_name(&vmx, 48), "EPT_VIOLATION");
	assert_string_equal(fl_sym_name(&vmx, 0), "EXCEPTION_NMI");
	assert_string_equal(fl_sym_name(&vmx, 12), "HLT");
	assert_string_equal(fl_sym_name(&vmx, 30), "IO_INSTRUCTION");
	assert_string_equal(fl_sym_name(&vmx, 49), "EPT_MISCONFIG");
	assert_null(fl_sym_name(&vmx, 0x400));

	assert_int_equal(fl_tp_symbols("kvm", "kvm_exit", 1, &svm), count_entries(t2, flags));
	assert_true(svm.n > 40);
	assert_string_equal(fl_sym_name(&svm, 0x400), "npf");
	assert_string_equal(fl_sym_name(&svm, 0x040 + 14), "PF excp");
	assert_string_equal(fl_sym_name(&svm, 0x078), "hlt");
	assert_string_equal(fl_sym_name(&svm, 0x07b), "io");
	assert_string_equal(fl_sym_name(&svm, -1), "invalid_guest_state");
	/* the same number means another exit on the other ISA */
	assert_string_equal(fl_sym_name(&svm, 48), "write_dr0");
	assert_null(fl_sym_name(&svm, 0x80000000ll));	/* FAILED_VMENTRY is a flag */

	assert_int_equal(fl_tp_symbols("kvm", "kvm_exit", 2, &none), -ENOENT);
	assert_null(none.e);
	fl_symtab_free(&vmx);
	fl_symtab_free(&svm);
	free(fmt);
}

static void test_kernel_kvm_userspace_exit(void **state)
{
	char why[512] = "";
	char *fmt = read_print_fmt("kvm", "kvm_userspace_exit", why, sizeof(why));
	struct fl_symtab t;
	int n = 0;

	(void)state;
	if (!fmt)
		skip_because(why);
	for (const char *p = fmt; (p = strstr(p, "\"KVM_EXIT_\"")); p++)
		n++;
	assert_int_equal(fl_tp_symbols("kvm", "kvm_userspace_exit", 0, &t), n);
	assert_true(n >= 27);
	assert_string_equal(fl_sym_name(&t, 6), "KVM_EXIT_MMIO");
	assert_string_equal(fl_sym_name(&t, 2), "KVM_EXIT_IO");
	assert_string_equal(fl_sym_name(&t, 0), "KVM_EXIT_UNKNOWN");
	assert_string_equal(fl_sym_name(&t, 17), "KVM_EXIT_INTERNAL_ERROR");
	for (int i = 0; i < t.n; i++) {
		assert_int_equal(t.e[i].val, i);	/* the kernel lists them 0, 1, 2 ... */
		assert_memory_equal(t.e[i].name, "KVM_EXIT_", 9);
	}
	fl_symtab_free(&t);
	free(fmt);
}

static void test_kernel_missing(void **state)
{
	struct fl_symtab t;

	(void)state;
	assert_int_equal(fl_tp_symbols("kvm", "no_such_tracepoint_fl", 0, &t), -ENOENT);
	assert_int_equal(t.n, 0);
	assert_null(t.e);
	assert_int_equal(fl_tp_symbols("no_such_category_fl", "kvm_exit", 0, &t), -ENOENT);
	assert_null(t.e);
}

/* A real format without any symbolic table (signal:signal_deliver). */
static void test_kernel_no_table(void **state)
{
	char why[512] = "";
	char *fmt = read_print_fmt("signal", "signal_deliver", why, sizeof(why));
	struct fl_symtab t;

	(void)state;
	if (!fmt)
		skip_because(why);
	if (strstr(fmt, "__print_symbolic("))
		fail_msg("signal_deliver's format now has a symbolic table: %s", fmt);
	free(fmt);
	assert_int_equal(fl_tp_symbols("signal", "signal_deliver", 0, &t), -ENOENT);
	assert_null(t.e);
}

/* A tracepoint looked up in the first group that has it: the one the
 * kernel's tracefs shows (checked by path), never a group it lacks. */
static void test_tracepoint_group(void **state)
{
	const char *const groups[] = { "no_such_group_fl", "sched", NULL };
	const char *const none[] = { "no_such_group_fl", NULL };
	const char *mf;
	char path[128];

	(void)state;
	if (fl_tracefs_ensure() || !fl_tracepoint_exists("sched", "sched_switch"))
		skip_because("no tracefs with sched:sched_switch here");
	assert_string_equal(fl_tracepoint_group(groups, "sched_switch"), "sched");
	assert_null(fl_tracepoint_group(none, "sched_switch"));
	mf = fl_tracepoint_group(FL_MEMORY_FAILURE_GROUPS, "memory_failure_event");
	for (const char *const *g = FL_MEMORY_FAILURE_GROUPS; *g; g++) {
		snprintf(path, sizeof(path), "/sys/kernel/tracing/events/%s/memory_failure_event", *g);
		if (!access(path, F_OK)) {
			assert_non_null(mf);
			assert_string_equal(mf, *g);
			break;
		}
		assert_true(!mf || strcmp(mf, *g));
	}
	assert_string_equal(FL_MEMORY_FAILURE_GROUP, mf ? mf : "ras");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_adjacent_literals),
		cmocka_unit_test(test_value_sums),
		cmocka_unit_test(test_second_table),
		cmocka_unit_test(test_missing_table),
		cmocka_unit_test(test_long_table),
		cmocka_unit_test(test_long_name),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_kernel_kvm_exit),
		cmocka_unit_test(test_kernel_kvm_userspace_exit),
		cmocka_unit_test(test_kernel_missing),
		cmocka_unit_test(test_kernel_no_table),
		cmocka_unit_test(test_tracepoint_group),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
