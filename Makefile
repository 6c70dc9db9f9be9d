# faultline — build, test and benchmark.
#   make            build/faultline and the test workloads
#   make test       every test (unit, BPF handler, end to end); needs root
#   make bench      side-by-side performance figures
#   make vmlinux    regenerate vmlinux.h from this kernel's BTF

OUT      := build
CC       ?= gcc
CLANG    ?= clang
BPFTOOL  ?= bpftool
ARCH     := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Isrc -I$(OUT)
LDLIBS   := -lbpf -lelf -lz -pthread -lmicrohttpd -lm -lprotobuf-c -lgnutls
# What a program linking libfaultline.a needs besides it.
MIG_LIBS := -lprotobuf-c -lz -lgnutls
BPFFLAGS := -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) -I. -Iinclude -Wall -Werror

# The agent: everything in src/ but main.c also goes into the test binaries.
LIB_SRCS := src/correlator.c src/probe.c src/kallsyms.c src/tracefs.c src/procscan.c \
            src/output.c src/hist.c src/vmstats.c src/tpformat.c src/session.c \
            src/session_args.c src/vmreport.c src/metrics.c
LIB_SRCS += src/stuck.c
LIB_SRCS += src/history.c src/histsock.c src/stuck_hist.c
CMD_SRCS := src/main.c src/cmd_trace.c src/cmd_features.c src/cmd_top.c src/cmd_exporter.c
CMD_SRCS += src/cmd_stuck.c
# The migration pair.  libfaultline.a (public API: include/faultline/) holds
# the wire protocol, the page-state map, the VMM handover and the router, so
# a VMM can embed the router without the tracer.
PROTO    := src/faultline.proto
PB_GEN   := $(OUT)/faultline.pb-c.c $(OUT)/faultline.pb-c.h
MIG_SRCS := src/wire.c src/statemap.c src/handover.c src/router.c src/journal.c src/tls.c
CMD_SRCS += src/cmd_source.c src/cmd_target.c
LIB_SRCS += src/source.c src/netaddr.c
LIB_OBJS := $(LIB_SRCS:src/%.c=$(OUT)/%.o)
CMD_OBJS := $(CMD_SRCS:src/%.c=$(OUT)/%.o)
MIG_OBJS := $(MIG_SRCS:src/%.c=$(OUT)/%.o) $(OUT)/faultline.pb-c.o
SKELS    := $(OUT)/faultline.skel.h $(OUT)/empty.skel.h

WORKLOADS := $(OUT)/uffd-workload $(OUT)/kvm-guest $(OUT)/syscall-loop
WORKLOADS += $(OUT)/stuck-scenarios
WORKLOADS += $(OUT)/migrate-vm
WORKLOADS += $(OUT)/wire-client
TESTS     := $(OUT)/test_correlator $(OUT)/test_vmstats $(OUT)/test_tpformat \
             $(OUT)/test_bpf_handlers $(OUT)/test_bpf_kvm $(OUT)/test_metrics
TESTS     += $(OUT)/test_stuck
TESTS     += $(OUT)/test_history
TESTS     += $(OUT)/test_handover
TESTS     += $(OUT)/test_router
TESTS     += $(OUT)/test_wire $(OUT)/test_statemap
TESTS     += $(OUT)/test_source
# libFuzzer target of the wire decoder and its seed corpus (clang, ASan+UBSan)
FUZZ      := $(OUT)/fuzz-frame $(OUT)/fuzz-router $(OUT)/fuzz-journal $(OUT)/fuzz-history \
             $(OUT)/fuzz-handover $(OUT)/fuzz-control $(OUT)/fuzz-source $(OUT)/fuzz-corpus.stamp
TESTS     += $(FUZZ)
BENCH     := $(OUT)/bench-floor
BENCH     += $(OUT)/bench-statemap $(FUZZ)
BENCH     += $(OUT)/bench-router $(OUT)/remote-touch $(OUT)/bench-tls-floor

.PHONY: all test bench clean vmlinux
.SECONDARY:
all: $(OUT)/faultline $(OUT)/libfaultline.a $(WORKLOADS)

$(OUT):
	mkdir -p $@

$(OUT)/%.bpf.o: bpf/%.bpf.c include/faultline_events.h vmlinux.h | $(OUT)
	$(CLANG) $(BPFFLAGS) -c $< -o $@

$(OUT)/%.skel.h: $(OUT)/%.bpf.o
	$(BPFTOOL) gen skeleton $< name $*_bpf > $@

$(PB_GEN) &: $(PROTO) | $(OUT)
	protoc-c --proto_path=src --c_out=$(OUT) $(PROTO)

$(OUT)/faultline.pb-c.o: $(OUT)/faultline.pb-c.c $(OUT)/faultline.pb-c.h
	$(CC) $(CFLAGS) -c $< -o $@

$(OUT)/%.o: src/%.c $(wildcard src/*.h include/*.h include/faultline/*.h) $(SKELS) $(PB_GEN) | $(OUT)
	$(CC) $(CFLAGS) -c $< -o $@

$(OUT)/libfaultline.a: $(MIG_OBJS)
	rm -f $@ && ar rcs $@ $^

$(OUT)/faultline: $(CMD_OBJS) $(LIB_OBJS) $(OUT)/libfaultline.a
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS)

$(OUT)/uffd-workload: tests/workloads/uffd_workload.c include/uffd_compat.h | $(OUT)
	$(CC) $(CFLAGS) -pthread $< -o $@

# The test VMMs share their VM plumbing (tests/workloads/kvm_vm.c).
KVM_VM := tests/workloads/kvm_vm.c tests/workloads/kvm_vm.h

$(OUT)/kvm-guest: tests/workloads/kvm_guest.c $(KVM_VM) include/uffd_compat.h | $(OUT)
	$(CC) $(CFLAGS) -pthread $(filter %.c,$^) -o $@

$(OUT)/syscall-loop: tests/workloads/syscall_loop.c | $(OUT)
	$(CC) $(CFLAGS) $< -o $@

$(OUT)/stuck-scenarios: tests/workloads/stuck_scenarios.c include/uffd_compat.h | $(OUT)
	$(CC) $(CFLAGS) -pthread $< -o $@

$(OUT)/wire-client: tests/workloads/wire_client.c include/uffd_compat.h $(OUT)/libfaultline.a | $(OUT)
	$(CC) $(CFLAGS) $< -o $@ $(OUT)/libfaultline.a $(MIG_LIBS)

$(OUT)/migrate-vm: tests/workloads/migrate_vm.c $(KVM_VM) include/uffd_compat.h \
		  $(OUT)/libfaultline.a | $(OUT)
	$(CC) $(CFLAGS) -pthread $(filter %.c,$^) -o $@ $(OUT)/libfaultline.a $(MIG_LIBS)

$(OUT)/test_handover: tests/unit/test_handover.c $(OUT)/libfaultline.a include/uffd_compat.h
	$(CC) $(CFLAGS) -pthread $< -o $@ $(OUT)/libfaultline.a $(MIG_LIBS) -lcmocka

$(OUT)/test_correlator: tests/unit/test_correlator.c $(OUT)/correlator.o
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka

$(OUT)/test_vmstats: tests/unit/test_vmstats.c $(OUT)/vmstats.o
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka

$(OUT)/test_tpformat: tests/unit/test_tpformat.c $(OUT)/tpformat.o $(OUT)/tracefs.o
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka

$(OUT)/test_stuck: tests/unit/test_stuck.c $(OUT)/stuck.o $(OUT)/procscan.o
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka

$(OUT)/test_history: tests/unit/test_history.c $(OUT)/history.o $(OUT)/histsock.o \
		     $(OUT)/stuck_hist.o $(OUT)/stuck.o $(OUT)/procscan.o $(OUT)/output.o \
		     $(OUT)/correlator.o
	$(CC) $(CFLAGS) -pthread $^ -o $@ -lcmocka

$(OUT)/test_router: tests/unit/test_router.c $(OUT)/libfaultline.a
	$(CC) $(CFLAGS) -pthread $^ -o $@ $(MIG_LIBS) -lcmocka

$(OUT)/test_metrics: tests/unit/test_metrics.c $(OUT)/metrics.o
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka -lm

WIRE_OBJS := $(OUT)/wire.o $(OUT)/statemap.o $(OUT)/faultline.pb-c.o

$(OUT)/test_wire: tests/unit/test_wire.c $(WIRE_OBJS)
	$(CC) $(CFLAGS) -pthread $^ -o $@ $(MIG_LIBS) -lcmocka

$(OUT)/test_statemap: tests/unit/test_statemap.c $(WIRE_OBJS)
	$(CC) $(CFLAGS) $^ -o $@ $(MIG_LIBS) -lcmocka

$(OUT)/test_source: tests/unit/test_source.c $(OUT)/source.o $(OUT)/netaddr.o $(OUT)/output.o \
		   $(OUT)/correlator.o $(OUT)/libfaultline.a
	$(CC) $(CFLAGS) $^ -o $@ $(MIG_LIBS) -lcmocka

# Sanitizers need every line of the code under test instrumented: the
# sources are compiled here by clang, not taken from the gcc objects.
$(OUT)/fuzz-frame: tests/fuzz/fuzz_frame.c tests/fuzz/fuzz_common.h src/wire.c src/statemap.c \
		src/wire.h src/statemap.h $(PB_GEN)
	$(CLANG) -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Isrc -I$(OUT) \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		tests/fuzz/fuzz_frame.c src/wire.c src/statemap.c $(OUT)/faultline.pb-c.c \
		-o $@ $(MIG_LIBS)

# The router's session with a hostile source, on a real userfaultfd.
FUZZ_ROUTER_SRCS := src/router.c src/wire.c src/statemap.c src/journal.c src/tls.c
$(OUT)/fuzz-router: tests/fuzz/fuzz_router.c tests/fuzz/fuzz_common.h $(FUZZ_ROUTER_SRCS) \
		src/router_test.h include/faultline/faultline.h $(PB_GEN)
	$(CLANG) -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Isrc -I$(OUT) \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		tests/fuzz/fuzz_router.c $(FUZZ_ROUTER_SRCS) $(OUT)/faultline.pb-c.c \
		-o $@ -pthread $(MIG_LIBS)

$(OUT)/fuzz-journal: tests/fuzz/fuzz_journal.c tests/fuzz/fuzz_common.h src/journal.c src/journal.h
	$(CLANG) -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Isrc -I$(OUT) \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		tests/fuzz/fuzz_journal.c src/journal.c -o $@

# The history socket's request and answer lines (src/history.c).
$(OUT)/fuzz-history: tests/fuzz/fuzz_history.c tests/fuzz/fuzz_common.h src/history.c src/output.c \
		src/correlator.c src/history.h $(PB_GEN)
	$(CLANG) -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Isrc -I$(OUT) \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		tests/fuzz/fuzz_history.c src/history.c src/output.c src/correlator.c -o $@

# The router's side of the VMM handover (src/handover.c).
$(OUT)/fuzz-handover: tests/fuzz/fuzz_handover.c tests/fuzz/fuzz_common.h src/handover.c \
		src/handover.h src/wire.c src/statemap.c $(PB_GEN)
	$(CLANG) -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Isrc -I$(OUT) \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		tests/fuzz/fuzz_handover.c src/handover.c src/wire.c src/statemap.c \
		$(OUT)/faultline.pb-c.c -o $@ -lprotobuf-c -lz

# The source's text parsers: control-socket page lists, --range, HOST:PORT.
FUZZ_SOURCE_SRCS := src/source.c src/netaddr.c src/output.c src/correlator.c src/wire.c \
		    src/statemap.c src/handover.c src/tls.c
$(OUT)/fuzz-control: tests/fuzz/fuzz_control.c tests/fuzz/fuzz_common.h $(FUZZ_SOURCE_SRCS) \
		src/source.h $(PB_GEN)
	$(CLANG) -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Isrc -I$(OUT) \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		tests/fuzz/fuzz_control.c $(FUZZ_SOURCE_SRCS) $(OUT)/faultline.pb-c.c -o $@ \
		-pthread $(MIG_LIBS)

# The source's session with its peers (Hello rules, requests by region id),
# on this process's own memory.
$(OUT)/fuzz-source: tests/fuzz/fuzz_source.c tests/fuzz/fuzz_common.h $(FUZZ_SOURCE_SRCS) \
		src/source.h src/source_test.h $(PB_GEN)
	$(CLANG) -g -O1 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Isrc -I$(OUT) \
		-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		tests/fuzz/fuzz_source.c $(FUZZ_SOURCE_SRCS) $(OUT)/faultline.pb-c.c -o $@ \
		-pthread $(MIG_LIBS)

$(OUT)/fuzz-make-corpus: tests/fuzz/make_corpus.c tests/fuzz/fuzz_common.h $(WIRE_OBJS)
	$(CC) $(CFLAGS) $(filter-out %.h,$^) -o $@ $(MIG_LIBS)

$(OUT)/fuzz-corpus.stamp: $(OUT)/fuzz-make-corpus
	rm -rf $(OUT)/fuzz-corpus && $(OUT)/fuzz-make-corpus $(OUT)/fuzz-corpus && touch $@

$(OUT)/bench-statemap: tests/bench/bench_statemap.c $(WIRE_OBJS) $(OUT)/tls.o
	$(CC) $(CFLAGS) -pthread $^ -o $@ $(MIG_LIBS)

$(OUT)/test_bpf_kvm: tests/bpf/test_bpf_kvm.c tests/bpf/bpf_harness.h $(LIB_OBJS) $(OUT)/libfaultline.a
	$(CC) $(CFLAGS) -pthread $(filter-out %.h,$^) -o $@ $(LDLIBS) -lcmocka

$(OUT)/test_bpf_handlers: tests/bpf/test_bpf_handlers.c tests/bpf/bpf_harness.h $(LIB_OBJS) $(OUT)/libfaultline.a
	$(CC) $(CFLAGS) $(filter-out %.h,$^) -o $@ $(LDLIBS) -lcmocka

$(OUT)/bench-router: tests/bench/bench_router.c $(OUT)/libfaultline.a
	$(CC) $(CFLAGS) -pthread $^ -o $@ $(MIG_LIBS)

$(OUT)/remote-touch: tests/bench/remote_touch.c $(OUT)/libfaultline.a
	$(CC) $(CFLAGS) $^ -o $@ $(MIG_LIBS)

$(OUT)/bench-tls-floor: tests/bench/tls_floor.c | $(OUT)
	$(CC) $(CFLAGS) $< -o $@ -lgnutls

$(OUT)/bench-floor: tests/bench/floor.c $(OUT)/empty.skel.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

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
	python3 tests/bench/bench_migration.py
	tests/fuzz/run_fuzz.sh 120 frame journal history handover control
	tests/fuzz/run_fuzz.sh 450 router
	tests/fuzz/run_fuzz.sh 300 source

vmlinux:
	scripts/gen-vmlinux.sh

clean:
	rm -rf $(OUT)
