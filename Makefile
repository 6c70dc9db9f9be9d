# faultline — build, test and benchmark.
#   make            build/faultline, build/libfaultline.a and the test workloads
#   make test       every test (unit, BPF handler, end to end); needs root
#   make bench      side-by-side performance figures
#   make vmlinux    regenerate vmlinux.h from this kernel's BTF
#   make build/libfaultline.a   the embeddable router alone (no clang, no bpftool)
#   make install    PREFIX (/usr/local) and DESTDIR: the binary, man pages, libfaultline
#                   (static and shared) with its header and faultline.pc, the systemd
#                   unit, the example Prometheus configuration; make uninstall
#
# Layout (docs/layout.md): src/<subsystem>/ holds one subsystem each; bpf/
# the BPF programs and their ABI header; include/faultline/ the public API.
# Objects go to build/obj/<subsystem>/, with their header dependencies
# (-MMD -MP), so a change rebuilds exactly what uses it.

OUT      := build
OBJ      := $(OUT)/obj
CC       ?= gcc
CLANG    ?= clang
BPFTOOL  ?= bpftool
ARCH     := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

# CFLAGS / LDFLAGS are the user's (optimisation, debug, sanitizers); the
# project's own flags live apart and survive `make CFLAGS=...`.
CFLAGS   ?= -O2 -g
SUBDIRS  := common trace stuck exporter migrate report cli
FL_CPPFLAGS := -D_GNU_SOURCE -Iinclude -Ibpf $(addprefix -Isrc/,$(SUBDIRS)) -I$(OUT)
# tests' shared helpers (tests/lib), on top for what is built from tests/
TEST_CPPFLAGS := -Itests/lib
FL_CFLAGS   := -std=gnu11 -Wall -Wextra -Werror
COMPILE   = $(CC) $(FL_CPPFLAGS) $(FL_CFLAGS) $(CFLAGS)
LDLIBS   := -lbpf -lelf -lz -pthread -lmicrohttpd -lm -lprotobuf-c -lgnutls
# What a program linking libfaultline.a needs besides it.
MIG_LIBS := -lprotobuf-c -lz -lgnutls
BPFFLAGS := -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) -I. -Ibpf -Wall -Werror

obj = $(patsubst src/%.c,$(OBJ)/%.o,$(1))

# --- sources, by subsystem -------------------------------------------------
COMMON   := $(wildcard src/common/*.c)
TRACE    := $(wildcard src/trace/*.c)
STUCK    := $(wildcard src/stuck/*.c)
EXPORTER := $(wildcard src/exporter/*.c)
CLI      := $(wildcard src/cli/*.c)
# faultline report: a recording into one HTML page (its script and style built in)
REPORT   := $(wildcard src/report/*.c)
# libfaultline.a (public API: include/faultline/) holds the wire protocol,
# the page-state map, the VMM handover, HOST:PORT parsing and the router, so
# a VMM can embed the router without the tracer.
PROTO    := src/migrate/faultline.proto
PB_GEN   := $(OUT)/faultline.pb-c.c $(OUT)/faultline.pb-c.h
LIBFL    := $(wildcard src/migrate/router*.c src/migrate/handover*.c) \
            $(addprefix src/migrate/,wire.c statemap.c journal.c tls.c netaddr.c regions.c)
SOURCE   := $(wildcard src/migrate/source*.c)

LIBFL_OBJS := $(call obj,$(LIBFL)) $(OBJ)/faultline.pb-c.o
# Everything of the agent but the command-line front end (the BPF tests link it).
AGENT_OBJS := $(call obj,$(COMMON) $(TRACE) $(STUCK) $(EXPORTER) $(SOURCE) $(REPORT))
WIRE_OBJS  := $(call obj,src/migrate/wire.c src/migrate/statemap.c) $(OBJ)/faultline.pb-c.o

WORKLOADS := $(addprefix $(OUT)/,uffd-workload kvm-guest syscall-loop stuck-scenarios \
                                  migrate-vm wire-client)

.PHONY: all test bench clean vmlinux install uninstall
.SECONDARY:
.DELETE_ON_ERROR:
all: $(OUT)/faultline $(OUT)/libfaultline.a $(WORKLOADS)

# --- compiling -------------------------------------------------------------
$(OBJ)/%.o: src/%.c | $(PB_GEN)
	@mkdir -p $(@D)
	$(COMPILE) -MMD -MP -c $< -o $@

$(OBJ)/faultline.pb-c.o: $(OUT)/faultline.pb-c.c $(OUT)/faultline.pb-c.h
	@mkdir -p $(@D)
	$(COMPILE) -c $< -o $@

$(PB_GEN) &: $(PROTO)
	@mkdir -p $(OUT)
	protoc-c --proto_path=src/migrate --c_out=$(OUT) $(PROTO)

# BPF: only the loader includes a skeleton, so only it waits for clang/bpftool.
$(OUT)/%.bpf.o: bpf/%.bpf.c $(wildcard bpf/*.bpf.h) bpf/faultline_events.h vmlinux.h
	@mkdir -p $(OUT)
	$(CLANG) $(BPFFLAGS) -c $< -o $@

$(OUT)/%.skel.h: $(OUT)/%.bpf.o
	$(BPFTOOL) gen skeleton $< name $*_bpf > $@

$(OBJ)/trace/probe.o: $(OUT)/faultline.skel.h

# The report's stylesheet and script, kept as plain files to edit, become C
# strings for html.c (each line quoted, backslashes and quotes escaped).
REPORT_ASSETS := src/report/report.css src/report/report.js
embed = printf 'static const char %s[] =\n' $(1); \
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $(2); printf ';\n'
$(OUT)/report_assets.h: $(REPORT_ASSETS)
	@mkdir -p $(OUT)
	{ echo '/* generated from $(REPORT_ASSETS) by the Makefile: do not edit */'; \
	  $(call embed,rp_css,src/report/report.css); $(call embed,rp_js,src/report/report.js); } > $@
$(OBJ)/report/html.o: $(OUT)/report_assets.h

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)

# --- linking ---------------------------------------------------------------
$(OUT)/libfaultline.a: $(LIBFL_OBJS)
	rm -f $@ && ar rcs $@ $^

$(OUT)/faultline: $(call obj,$(CLI)) $(AGENT_OBJS) $(OUT)/libfaultline.a
	$(COMPILE) $^ -o $@ $(LDFLAGS) $(LDLIBS)

# --- test workloads --------------------------------------------------------
# The test VMMs share their VM plumbing (tests/workloads/kvm_vm.c).
KVM_VM := tests/workloads/kvm_vm.c

$(OUT)/uffd-workload: tests/workloads/uffd_workload.c
$(OUT)/syscall-loop: tests/workloads/syscall_loop.c
$(OUT)/stuck-scenarios: tests/workloads/stuck_scenarios.c
$(OUT)/kvm-guest: tests/workloads/kvm_guest.c $(KVM_VM)
$(OUT)/uffd-workload $(OUT)/syscall-loop $(OUT)/stuck-scenarios $(OUT)/kvm-guest:
	@mkdir -p $(OUT)
	$(COMPILE) -MMD -MP -MF $@.d -pthread $(filter %.c,$^) -o $@ $(LDFLAGS)

$(OUT)/wire-client: tests/workloads/wire_client.c
$(OUT)/migrate-vm: tests/workloads/migrate_vm.c $(KVM_VM)
$(OUT)/wire-client $(OUT)/migrate-vm: $(OUT)/libfaultline.a
	$(COMPILE) -MMD -MP -MF $@.d -pthread $(filter %.c,$^) -o $@ $(OUT)/libfaultline.a \
		$(LDFLAGS) $(MIG_LIBS)

-include $(wildcard $(OUT)/*.d)

# --- tests -----------------------------------------------------------------
# By what they need: unit (pure, no root), integration (root or a real
# userfaultfd), bpf (root, BPF_PROG_TEST_RUN); e2e, fuzz and bench below.
# Each test is listed once, with what it links; scripts/run-tests.sh runs them.
UNIT_TESTS  := correlator vmstats tpformat stuck metrics wire statemap source report
INTEG_TESTS := router handover history
BPF_TESTS   := bpf_handlers bpf_kvm
test_correlator_LINK := $(call obj,src/trace/correlator.c)
test_vmstats_LINK    := $(call obj,src/trace/vmstats.c)
test_tpformat_LINK   := $(call obj,src/common/tpformat.c src/common/tracefs.c)
STUCK_CORE := $(call obj,src/stuck/stuck.c src/stuck/stuck_parse.c src/stuck/stuck_verdict.c)
test_stuck_LINK      := $(STUCK_CORE) $(call obj,src/common/procscan.c)
test_history_LINK    := $(STUCK_CORE) $(call obj,$(wildcard src/exporter/history*.c) src/exporter/histsock.c \
                                   src/stuck/stuck_hist.c \
                                   src/common/procscan.c src/trace/output.c \
                                   src/common/jsonstr.c src/trace/correlator.c)
test_metrics_LINK    := $(call obj,src/exporter/metrics.c) -lm
test_report_LINK     := $(call obj,$(REPORT) src/trace/vmstats.c src/trace/correlator.c) -lm
test_wire_LINK       := $(WIRE_OBJS) $(MIG_LIBS)
test_statemap_LINK   := $(WIRE_OBJS) $(MIG_LIBS)
test_source_LINK     := $(call obj,$(SOURCE) src/common/jsonstr.c) $(OUT)/libfaultline.a \
                        $(MIG_LIBS)
test_handover_LINK   := $(OUT)/libfaultline.a $(MIG_LIBS)
test_router_LINK     := $(OUT)/libfaultline.a $(MIG_LIBS)
test_bpf_handlers_LINK := $(AGENT_OBJS) $(OUT)/libfaultline.a $(LDLIBS)
test_bpf_kvm_LINK    := $(AGENT_OBJS) $(OUT)/libfaultline.a $(LDLIBS)

TESTS := $(addprefix $(OUT)/test_,$(UNIT_TESTS) $(INTEG_TESTS) $(BPF_TESTS))
# The files among a test's link line (its -l and -pthread are no prerequisites).
link_files = $(filter-out -%,$(test_$(1)_LINK))

.SECONDEXPANSION:
$(addprefix $(OUT)/test_,$(UNIT_TESTS)): $(OUT)/test_%: tests/unit/test_%.c \
		$$(call link_files,$$*) | $(PB_GEN)
	$(COMPILE) $(TEST_CPPFLAGS) -MMD -MP -MF $@.d -pthread $< -o $@ $(test_$*_LINK) $(LDFLAGS) \
		-lcmocka
$(addprefix $(OUT)/test_,$(INTEG_TESTS)): $(OUT)/test_%: tests/integration/test_%.c \
		$$(call link_files,$$*) | $(PB_GEN)
	$(COMPILE) $(TEST_CPPFLAGS) -MMD -MP -MF $@.d -pthread $< -o $@ $(test_$*_LINK) $(LDFLAGS) \
		-lcmocka
$(addprefix $(OUT)/test_,$(BPF_TESTS)): $(OUT)/test_%: tests/bpf/test_%.c \
		$$(call link_files,$$*)
	$(COMPILE) $(TEST_CPPFLAGS) -MMD -MP -MF $@.d -pthread $< -o $@ $(test_$*_LINK) $(LDFLAGS) \
		-lcmocka

# --- fuzzing (clang, ASan + UBSan) -------------------------------------------
# Sanitizers need every line of the code under test instrumented: the
# sources are compiled here by clang, not taken from the gcc objects.
FUZZ_TARGETS := frame router journal history handover control source report
fuzz_frame_SRCS    := src/migrate/wire.c src/migrate/statemap.c $(OUT)/faultline.pb-c.c
fuzz_router_SRCS   := $(wildcard src/migrate/router*.c) src/migrate/wire.c src/migrate/statemap.c \
                      src/migrate/journal.c src/migrate/tls.c src/migrate/netaddr.c \
                      src/migrate/regions.c $(OUT)/faultline.pb-c.c
fuzz_journal_SRCS  := src/migrate/journal.c
fuzz_history_SRCS  := $(wildcard src/exporter/history*.c) src/trace/output.c src/trace/correlator.c \
                      src/common/jsonstr.c
fuzz_handover_SRCS := $(wildcard src/migrate/handover*.c) src/migrate/wire.c \
                      src/migrate/statemap.c src/migrate/regions.c \
                      $(OUT)/faultline.pb-c.c
fuzz_control_SRCS  := $(SOURCE) $(LIBFL) src/common/jsonstr.c $(OUT)/faultline.pb-c.c
fuzz_source_SRCS   := $(fuzz_control_SRCS)
fuzz_report_SRCS   := $(REPORT) src/trace/vmstats.c src/trace/correlator.c
FUZZ := $(addprefix $(OUT)/fuzz-,$(FUZZ_TARGETS)) $(OUT)/fuzz-corpus.stamp

$(addprefix $(OUT)/fuzz-,$(FUZZ_TARGETS)): $(OUT)/fuzz-%: tests/fuzz/fuzz_%.c $$(fuzz_%_SRCS) \
		| $(PB_GEN)
	$(CLANG) -g -O1 $(FL_CPPFLAGS) $(TEST_CPPFLAGS) $(FL_CFLAGS) -MMD -MP -MF $@.d \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		$< $(fuzz_$*_SRCS) -o $@ -pthread $(MIG_LIBS)

$(OUT)/fuzz-report: $(OUT)/report_assets.h

$(OUT)/fuzz-make-corpus: tests/fuzz/make_corpus.c $(WIRE_OBJS)
	$(COMPILE) -MMD -MP -MF $@.d $^ -o $@ $(MIG_LIBS)

$(OUT)/fuzz-corpus.stamp: $(OUT)/fuzz-make-corpus
	rm -rf $(OUT)/fuzz-corpus && $(OUT)/fuzz-make-corpus $(OUT)/fuzz-corpus && touch $@

TESTS += $(FUZZ)

# --- benchmarks --------------------------------------------------------------
BENCH := $(addprefix $(OUT)/,bench-floor bench-statemap bench-router remote-touch \
                             bench-tls-floor bench-dirty) $(FUZZ)

$(OUT)/bench-statemap: tests/bench/bench_statemap.c $(WIRE_OBJS) $(call obj,src/migrate/tls.c)
	$(COMPILE) -pthread $^ -o $@ $(MIG_LIBS)

$(OUT)/bench-router: tests/bench/bench_router.c $(OUT)/libfaultline.a
	$(COMPILE) $(TEST_CPPFLAGS) -pthread $^ -o $@ $(MIG_LIBS)

$(OUT)/remote-touch: tests/bench/remote_touch.c $(OUT)/libfaultline.a
	$(COMPILE) $(TEST_CPPFLAGS) $^ -o $@ $(MIG_LIBS)

$(OUT)/bench-dirty: tests/bench/bench_dirty.c $(call obj,src/migrate/source_parse.c)
	$(COMPILE) $^ -o $@

$(OUT)/bench-tls-floor: tests/bench/tls_floor.c
	@mkdir -p $(OUT)
	$(COMPILE) $< -o $@ -lgnutls

$(OUT)/bench-floor: tests/bench/floor.c $(OUT)/empty.skel.h $(OUT)/floor_parts.skel.h
	$(COMPILE) $< -o $@ $(LDLIBS)

# --- installing ----------------------------------------------------------------
VERSION  := $(shell sed -n 's/^\#define FL_VERSION "\(.*\)"/\1/p' src/common/version.h)
SOMAJOR  := 0
PREFIX   ?= /usr/local
BINDIR   := $(PREFIX)/bin
LIBDIR   := $(PREFIX)/lib
PKGDIR   := $(LIBDIR)/faultline
INCDIR   := $(PREFIX)/include
MANDIR   := $(PREFIX)/share/man/man1
UNITDIR  := $(PREFIX)/lib/systemd/system
DOCDIR   := $(PREFIX)/share/doc/faultline
SONAME   := libfaultline.so.$(SOMAJOR)

# The shared library's objects: the same sources, position-independent.
$(OBJ)/pic/%.o: src/%.c | $(PB_GEN)
	@mkdir -p $(@D)
	$(COMPILE) -fPIC -MMD -MP -c $< -o $@
$(OBJ)/pic/faultline.pb-c.o: $(OUT)/faultline.pb-c.c $(OUT)/faultline.pb-c.h
	@mkdir -p $(@D)
	$(COMPILE) -fPIC -c $< -o $@

$(OUT)/libfaultline.so.$(VERSION): $(patsubst src/%.c,$(OBJ)/pic/%.o,$(LIBFL)) \
		$(OBJ)/pic/faultline.pb-c.o scripts/libfaultline.map
	$(COMPILE) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=scripts/libfaultline.map \
		$(filter %.o,$^) -o $@ $(LDFLAGS) $(MIG_LIBS)

# One man page for the command and one per subcommand, made from their --help
# (the subcommands and their summaries come from `faultline --commands`).
$(OUT)/man.stamp: $(OUT)/faultline
	rm -rf $(OUT)/man && mkdir -p $(OUT)/man
	help2man -N --version-string=$(VERSION) -o $(OUT)/man/faultline.1 \
		-n "observe userfaultfd-based postcopy migration from outside the VMM" $(OUT)/faultline
	$(OUT)/faultline --commands | while IFS='	' read -r cmd what; do \
		help2man -N --version-string=$(VERSION) -n "$$what" \
			-o $(OUT)/man/faultline-$$cmd.1 "$(OUT)/faultline $$cmd" || exit 1; \
	done
	touch $@

install: $(OUT)/faultline $(OUT)/uffd-workload $(OUT)/libfaultline.a \
	 $(OUT)/libfaultline.so.$(VERSION) $(OUT)/man.stamp
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(PKGDIR) $(DESTDIR)$(LIBDIR)/pkgconfig \
		$(DESTDIR)$(INCDIR)/faultline $(DESTDIR)$(MANDIR) $(DESTDIR)$(UNITDIR) $(DESTDIR)$(DOCDIR)
	install -m 755 $(OUT)/faultline $(DESTDIR)$(BINDIR)/faultline
	install -m 755 $(OUT)/uffd-workload $(DESTDIR)$(PKGDIR)/uffd-workload
	install -m 644 $(OUT)/libfaultline.a $(DESTDIR)$(LIBDIR)/libfaultline.a
	install -m 755 $(OUT)/libfaultline.so.$(VERSION) $(DESTDIR)$(LIBDIR)/
	ln -sf libfaultline.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libfaultline.so
	install -m 644 include/faultline/faultline.h $(DESTDIR)$(INCDIR)/faultline/faultline.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@INCDIR@|$(INCDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' scripts/faultline.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/faultline.pc
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/faultline.pc
	install -m 644 $(OUT)/man/*.1 $(DESTDIR)$(MANDIR)/
	sed 's|/usr/local/bin/faultline|$(BINDIR)/faultline|g' scripts/faultline-exporter.service \
		> $(DESTDIR)$(UNITDIR)/faultline-exporter.service
	chmod 644 $(DESTDIR)$(UNITDIR)/faultline-exporter.service
	install -m 644 scripts/prometheus-faultline.yml $(DESTDIR)$(DOCDIR)/prometheus-faultline.yml

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/faultline $(DESTDIR)$(PKGDIR)/uffd-workload \
	      $(DESTDIR)$(LIBDIR)/libfaultline.a $(DESTDIR)$(LIBDIR)/libfaultline.so* \
	      $(DESTDIR)$(INCDIR)/faultline/faultline.h $(DESTDIR)$(LIBDIR)/pkgconfig/faultline.pc \
	      $(DESTDIR)$(MANDIR)/faultline.1 $(DESTDIR)$(MANDIR)/faultline-*.1 \
	      $(DESTDIR)$(UNITDIR)/faultline-exporter.service \
	      $(DESTDIR)$(DOCDIR)/prometheus-faultline.yml
	-rmdir $(DESTDIR)$(PKGDIR) $(DESTDIR)$(INCDIR)/faultline $(DESTDIR)$(DOCDIR) 2>/dev/null

# --- entry points ------------------------------------------------------------
test: all $(TESTS)
	scripts/run-tests.sh

bench: all $(BENCH)
	python3 tests/bench/bench.py
	$(OUT)/bench-statemap
	printf 'bench:%s\n' $$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n') > $(OUT)/bench.psk && \
		$(OUT)/bench-statemap --tls-psk $(OUT)/bench.psk
	$(OUT)/bench-router
	$(OUT)/bench-router --threads 4
	$(OUT)/bench-router --spin-us 1
	$(OUT)/bench-router --hugetlb
	$(OUT)/bench-dirty
	python3 tests/bench/bench_migration.py
	python3 tests/bench/bench_report.py
	tests/fuzz/run_fuzz.sh 120 frame journal history handover control report
	tests/fuzz/run_fuzz.sh 450 router
	tests/fuzz/run_fuzz.sh 300 source

vmlinux:
	scripts/gen-vmlinux.sh

clean:
	rm -rf $(OUT)
