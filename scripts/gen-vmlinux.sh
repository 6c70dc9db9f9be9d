#!/usr/bin/env bash
# Regenerate vmlinux.h from the running kernel's BTF. The committed copy is
# what CO-RE compiles against; relocation makes it work on other kernels.
set -euo pipefail
btf=${1:-/sys/kernel/btf/vmlinux}
out=${2:-$(dirname "$0")/../vmlinux.h}
if [[ ! -r $btf ]]; then
	echo "gen-vmlinux: $btf not readable: this kernel has no BTF (CONFIG_DEBUG_INFO_BTF)" >&2
	exit 1
fi
bpftool btf dump file "$btf" format c >"$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out from $btf"
