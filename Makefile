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
LDLIBS   := -lbpf -lelf -lz -pthread -lmicrohttpd -lm -lprotobuf-c
BPFFLAGS := -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(ARCH) -I. -Iinclude -Wall -Werror

# The agent: everything in src/ but main.c also goes into the test binaries.
LIB_SRCS := src/correlator.c src/probe.c src/kallsyms.c src/tracefs.c src/procscan.c \
            src/output.c src/hist.c src/vmstats.c src/tpformat.c src/session.c \
            src/session_args.c src/vmreport.c src/metrics.c
LIB_SRCS += src/stuck.c
CMD_SRCS := src/main.c src/cmd_trace.c src/cmd_features.c src/cmd_top.c src/cmd_exporter.c
CMD_SRCS += src/cmd_stuck.c
# The migration pair.  libfaultline.a (public API: include/faultline/) holds
# the wire protocol, the page-state map, the VMM handover and the router, so
# a VMM can embed the router without the tracer.
PROTO    := src/faultline.proto
PB_GEN   := $(OUT)/faultline.pb-c.c $(OUT)/faultline.pb-c.h
MIG_SRCS := src/wire.c src/statemap.c src/handover.c src/router.c src/journal.c
CMD_SRCS += src/cmd_source.c src/cmd_target.c
LIB_SRCS += src/source.c
LIB_OBJS := $(LIB_SRCS:src/%.c=$(OUT)/%.o)
CMD_OBJS := $(CMD_SRCS:src/%.c=$(OUT)/%.o)
MIG_OBJS := $(MIG_SRCS:src/%.c=$(OUT)/%.o) $(OUT)/faultline.pb-c.o
SKELS    := $(OUT)/faultline.skel.h $(OUT)/empty.skel.h

WORKLOADS := $(OUT)/uffd-workload $(OUT)/kvm-guest $(OUT)/syscall-loop
WORKLOADS += $(OUT)/stuck-scenarios
TESTS     := $(OUT)/test_correlator $(OUT)/test_vmstats $(OUT)/test_tpformat \
             $(OUT)/test_bpf_handlers $(OUT)/test_bpf_kvm $(OUT)/test_metrics
TESTS     += $(OUT)/test_stuck
BENCH     := $(OUT)/bench-floor

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

$(OUT)/kvm-guest: tests/workloads/kvm_guest.c include/uffd_compat.h | $(OUT)
	$(CC) $(CFLAGS) -pthread $< -o $@

$(OUT)/syscall-loop: tests/workloads/syscall_loop.c | $(OUT)
	$(CC) $(CFLAGS) $< -o $@

$(OUT)/stuck-scenarios: tests/workloads/stuck_scenarios.c include/uffd_compat.h | $(OUT)
	$(CC) $(CFLAGS) -pthread $< -o $@

$(OUT)/test_correlator: tests/unit/test_correlator.c $(OUT)/correlator.o
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka

$(OUT)/test_vmstats: tests/unit/test_vmstats.c $(OUT)/vmstats.o
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka

$(OUT)/test_tpformat: tests/unit/test_tpformat.c $(OUT)/tpformat.o
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka

$(OUT)/test_stuck: tests/unit/test_stuck.c $(OUT)/stuck.o $(OUT)/procscan.o
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka

$(OUT)/test_metrics: tests/unit/test_metrics.c $(OUT)/metrics.o
	$(CC) $(CFLAGS) $^ -o $@ -lcmocka -lm

$(OUT)/test_bpf_kvm: tests/bpf/test_bpf_kvm.c $(LIB_OBJS)
	$(CC) $(CFLAGS) -pthread $^ -o $@ $(LDLIBS) -lcmocka

$(OUT)/test_bpf_handlers: tests/bpf/test_bpf_handlers.c $(LIB_OBJS)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS) -lcmocka

$(OUT)/bench-floor: tests/bench/floor.c $(OUT)/empty.skel.h
	$(CC) $(CFLAGS) $< -o $@ $(LDLIBS)

test: all $(TESTS)
	scripts/run-tests.sh

bench: all $(BENCH)
	python3 tests/bench/bench.py

vmlinux:
	scripts/gen-vmlinux.sh

clean:
	rm -rf $(OUT)
