#!/usr/bin/env bash
# Prepares the guest for the real-QEMU postcopy test (tests/e2e/test_qemu_postcopy.py):
#   CACHE/vmlinuz        a Debian kernel image, taken from the package that
#                        linux-image-amd64 depends on (apt-get download +
#                        dpkg-deb; nothing is installed into the host's /boot)
#   CACHE/vmlinux        the same kernel decompressed (an ELF with a PVH entry),
#                        which QEMU boots without the slow TCG decompression
#   CACHE/initramfs.cpio.gz
#                        busybox (busybox-static) + guest-dirty
#                        (tests/workloads/guest_dirty.c, gcc -static); /init
#                        mounts proc, sys and dev and runs guest-dirty, which
#                        keeps dirtying memory on every vCPU and prints
#                        FAULTLINE_GUEST_READY on the serial console
#   CACHE/cmdline        the kernel command line to boot them with
#
# Idempotent: a part already built from the same inputs is kept. CACHE is
# build/qemu-assets, or $FAULTLINE_QEMU_ASSETS, or the first argument.
# Prints CACHE on stdout when done; errors say which package is missing.
#
# Usage: scripts/qemu-guest-assets.sh [CACHE_DIR]
#   env: GUEST_DIRTY_MIB  MiB each guest CPU keeps dirtying (default 32)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache=${1:-${FAULTLINE_QEMU_ASSETS:-$root/build/qemu-assets}}
mib=${GUEST_DIRTY_MIB:-32}
marker=FAULTLINE_GUEST_READY
src=$root/tests/workloads/guest_dirty.c

die() { echo "qemu-guest-assets: $*" >&2; exit 1; }
log() { echo "qemu-guest-assets: $*" >&2; }
need() { # need CMD PACKAGE
	command -v "$1" >/dev/null 2>&1 ||
		die "'$1' not found: install the Debian package $2 (sudo scripts/install-deps.sh, or apt-get install $2)"
}

[[ $mib =~ ^[1-9][0-9]*$ ]] || die "GUEST_DIRTY_MIB must be a positive integer, not '$mib'"
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)
tmp=$(mktemp -d "$cache/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# --- kernel ---------------------------------------------------------------
if [[ ! -s $cache/vmlinuz ]]; then
	need apt-get apt
	need apt-cache apt
	need dpkg-deb dpkg
	# linux-image-amd64 is a metapackage; its dependency is the real image
	pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	[[ -n $pkg ]] || die "apt-cache knows no linux-image-amd64 dependency: run 'apt-get update' (Debian's archive must be reachable)"
	log "downloading $pkg (apt-get download; not installed)"
	# as root, apt drops to _apt for the download: let it write into $tmp
	chmod 0777 "$tmp"
	(cd "$tmp" && apt-get download -q "$pkg" >&2) ||
		die "apt-get download $pkg failed (run 'apt-get update'? is the archive reachable?)"
	debs=("$tmp/$pkg"_*.deb)
	deb=${debs[0]}
	[[ -f $deb ]] || die "apt-get download $pkg produced no .deb"
	# only ./boot of the package (the modules are not needed: everything the
	# guest uses -- 8250 serial, initramfs, tmpfs -- is built in)
	mkdir "$tmp/x"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/x" --wildcards './boot/vmlinuz-*' ||
		die "dpkg-deb could not extract /boot/vmlinuz-* from $deb"
	imgs=("$tmp"/x/boot/vmlinuz-*)
	img=${imgs[0]}
	[[ -s $img ]] || die "$deb holds no /boot/vmlinuz-*"
	cp "$img" "$cache/vmlinuz.new"
	echo "${img##*/} from $pkg ($(dpkg-deb -f "$deb" Version))" >"$cache/vmlinuz.source"
	mv "$cache/vmlinuz.new" "$cache/vmlinuz"
	log "kernel: $(cat "$cache/vmlinuz.source")"
fi

# --- vmlinux: the same kernel, decompressed, for a PVH boot ------------------
# QEMU boots an uncompressed ELF kernel with a PVH entry note directly (no
# bzImage self-decompression, which takes ~7 s under TCG here). Optional: the
# harness falls back to vmlinuz when this is absent.
if [[ ! -s $cache/vmlinux || $cache/vmlinux -ot $cache/vmlinuz ]]; then
	rm -f "$cache/vmlinux"
	if python3 - "$cache/vmlinuz" "$tmp/vmlinux" <<'PY' >&2; then
import lzma, re, subprocess, sys, zlib
img = open(sys.argv[1], "rb").read()
# as the kernel's scripts/extract-vmlinux: try every compressed stream in the image
def tries():
    for magic, fn in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
                      (b"\x28\xb5\x2f\xfd", lambda b: subprocess.run(
                          ["zstd", "-dc"], input=b, capture_output=True).stdout),
                      (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(31).decompress(b))):
        i = img.find(magic)
        while i >= 0:
            yield fn, img[i:]
            i = img.find(magic, i + 1)
for fn, blob in tries():
    try:
        out = fn(blob)
    except Exception:
        continue
    # an x86-64 ELF with the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY, 18)
    # (an ELF note: namesz 4, descsz, type 18, then the name "Xen")
    if out[:4] == b"\x7fELF" and re.search(
            rb"\x04\0\0\0.\0\0\0\x12\0\0\0Xen\0", out, re.S):
        open(sys.argv[2], "wb").write(out)
        sys.exit(0)
print("qemu-guest-assets: no PVH-bootable vmlinux in vmlinuz (booting the bzImage: slower)")
sys.exit(1)
PY
		mv "$tmp/vmlinux" "$cache/vmlinux"
		log "vmlinux: decompressed for PVH boot"
	fi
fi

# --- initramfs --------------------------------------------------------------
# rebuilt when its inputs change: this script, guest_dirty.c, busybox, MiB
busybox=
for b in /bin/busybox /usr/bin/busybox; do
	# a static binary: ldd says "not a dynamic executable" and fails
	if [[ -x $b ]] && ! ldd "$b" >/dev/null 2>&1; then busybox=$b; break; fi
done
[[ -n $busybox ]] || die "no static busybox: install the Debian package busybox-static"
need cpio cpio
need gzip gzip
need gcc gcc
[[ -r $src ]] || die "missing $src"

stamp=$( { cat "$0" "$src"; sha256sum "$busybox"; echo "mib=$mib"; } | sha256sum | cut -c1-16)
if [[ -s $cache/initramfs.cpio.gz && $(cat "$cache/initramfs.stamp" 2>/dev/null) == "$stamp" ]]; then
	log "up to date in $cache"
	echo "$cache"
	exit 0
fi

r=$tmp/root
mkdir -p "$r"/{bin,sbin,proc,sys,dev,tmp,root}
cp "$busybox" "$r/bin/busybox"
for a in sh mount echo cat sleep poweroff; do ln -s busybox "$r/bin/$a"; done
if ! gcc -static -O2 -Wall -o "$r/bin/guest-dirty" "$src" 2>"$tmp/gcc.log"; then
	cat "$tmp/gcc.log" >&2
	die "gcc -static failed on $src (static libc: install the Debian package libc6-dev)"
fi
cat >"$r/init" <<EOF
#!/bin/sh
# faultline postcopy test guest (scripts/qemu-guest-assets.sh)
mount -t devtmpfs dev /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
echo "faultline-guest: init up, \$(cat /proc/meminfo | grep MemTotal)"
exec /bin/guest-dirty --mib $mib --marker $marker
EOF
chmod 0755 "$r/init"
(cd "$r" && find . -print0 | LC_ALL=C sort -z |
	cpio --null -o -H newc --owner 0:0 --quiet) | gzip -9 >"$tmp/initramfs.cpio.gz" ||
	die "cpio failed"
mv "$tmp/initramfs.cpio.gz" "$cache/initramfs.cpio.gz"
echo "console=ttyS0 panic=-1 quiet mitigations=off rdinit=/init" >"$cache/cmdline"
echo "$marker" >"$cache/marker"
echo "$stamp" >"$cache/initramfs.stamp"
log "initramfs: busybox + guest-dirty ($mib MiB per CPU) in $cache"
echo "$cache"
