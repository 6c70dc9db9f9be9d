#!/usr/bin/env bash
# Installs the Debian packages faultline builds and tests with. Idempotent:
# does nothing (not even apt-get update) when everything is present.
set -euo pipefail

pkgs=(
	make gcc clang llvm          # userspace and BPF compilers (clang -target bpf)
	libbpf-dev bpftool           # libbpf, skeleton generation
	libelf-dev zlib1g-dev pkg-config
	libcmocka-dev                # unit tests
	python3                      # end-to-end test harness
	util-linux                   # setpriv (non-root error test)
	libmicrohttpd-dev            # faultline exporter's HTTP server
	prometheus                   # promtool and a real server for the exporter's e2e test
	qemu-system-x86              # real postcopy migration e2e test (TCG guests)
	busybox-static cpio          # that guest's initramfs
	libc6-dev                    # gcc -static for the guest's memory-dirtying workload
	protobuf-c-compiler libprotobuf-c-dev  # migration wire protocol
	libgnutls28-dev openssl      # TLS on the migration connection; test certificates
	libclang-rt-14-dev           # libFuzzer for the frame decoder's fuzz target
	iproute2                     # network namespaces + veth for the two-host tests
	help2man                     # make install: man pages from the --help texts
	chromium                     # faultline report's e2e test opens the reports headless
)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
	echo "install-deps: all ${#pkgs[@]} packages present"
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "install-deps: missing ${missing[*]}; run as root (sudo $0)" >&2
	exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
