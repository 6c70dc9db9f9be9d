#!/usr/bin/env python3
"""Remote fault latency and bulk push throughput, target -> source over a
veth pair, 4 KiB pages, plaintext (--insecure) vs TLS 1.3 (PSK) side by side.

Two network namespaces joined by a veth pair are the hosts.  The source
serves a 256 MiB test VM (build/migrate-vm) with `faultline source`, its
background push throttled to 1 MiB/s so that nearly every touch is a remote
fault; on the target `faultline target` routes the faults of remote-touch,
which touches 2000 random pages one at a time and times each touch with
CLOCK_MONOTONIC (network, source and router included).  Rounds are repeated
and medians reported.

The source VM's vCPUs are host threads (migrate-vm --cpu threads) whether or
not /dev/kvm exists: the figure is the target's, the source guest only
dirties a few pages in the background, so KVM would change nothing but where
the bench can run.

Bulk push: a 256 MiB source VM pushed to a target VM that barely touches
its memory (migrate-vm --touch-fraction 0.01), no bandwidth cap; the
router's bytes received over its elapsed time.

Rounds alternate plaintext and TLS so both see the same machine noise.

    python3 tests/bench/bench_migration.py [--rounds N]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import tap  # noqa: E402
import tlscreds  # noqa: E402
from netns import NetnsPair  # noqa: E402

MIGRATE_VM = os.path.join(tap.BUILD, "migrate-vm")
TOUCH = os.path.join(tap.BUILD, "remote-touch")
# Same figures with or without /dev/kvm (see the docstring).
VM_CPU = "threads"


def one_round(net, tmp, touches, tls, hugetlb=False):
    huge = ["--hugetlb"] if hugetlb else []
    vm = net.popen("src", [MIGRATE_VM, "--role", "source", "--cpu", VM_CPU, "--json",
                           "--vcpus", "1", "--mem-mib", "256", "--pace-us", "100000", *huge],
                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = json.loads(vm.stdout.readline())
    ctrl = os.path.join(tmp, "ctl")
    src = net.popen("src", [tap.FAULTLINE, "source", "--pid", str(info["pid"]),
                            "--range", f"{info['addr']}:{info['length']}",
                            "--listen", f"{net.src_ip}:7411", "--control", ctrl,
                            "--max-bandwidth", "1", "--json", *tls],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not os.path.exists(ctrl):
        time.sleep(0.05)
    sock = os.path.join(tmp, "router.sock")
    tgt = net.popen("tgt", [tap.FAULTLINE, "target", "--source", f"{net.src_ip}:7411",
                            "--vmm-socket", sock, "--json", *tls, "--", TOUCH, "--router", sock,
                            "--mem-mib", str(info["length"] >> 20), "--touches", str(touches),
                            *huge],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    result = None
    for line in tgt.stdout:
        if '"remote_touch"' in line:
            result = json.loads(line)
            break
    for p in (tgt, src, vm):
        p.kill()
        p.wait()
    os.unlink(ctrl) if os.path.exists(ctrl) else None
    return result


def bulk_round(net, tmp, tls):
    """MiB/s of the source's background push, no cap."""
    vm = net.popen("src", [MIGRATE_VM, "--role", "source", "--cpu", VM_CPU, "--json",
                           "--vcpus", "1", "--mem-mib", "256", "--pace-us", "100000",
                           "--zero-percent", "0"],
                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    info = json.loads(vm.stdout.readline())
    src = net.popen("src", [tap.FAULTLINE, "source", "--pid", str(info["pid"]),
                            "--range", f"{info['addr']}:{info['length']}",
                            "--listen", f"{net.src_ip}:7411", "--json", *tls],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sock = os.path.join(tmp, "bulk.sock")
    tgt = net.popen("tgt", [tap.FAULTLINE, "target", "--source", f"{net.src_ip}:7411",
                            "--vmm-socket", sock, "--json", *tls, "--", MIGRATE_VM, "--role",
                            "target", "--cpu", VM_CPU, "--vcpus", "1", "--mem-mib", "256",
                            "--router", sock, "--touch-fraction", "0.01", "--run-ms", "100",
                            "--until-router-done"],
                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    result = None
    for line in tgt.stdout:
        if '"router_summary"' in line:
            o = json.loads(line)
            if o.get("finished") and o["elapsed_s"] > 0:
                result = o["bytes_received"] / (1 << 20) / o["elapsed_s"]
            break
    for p in (tgt, src, vm):
        p.kill()
        p.wait()
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 5)))
    ap.add_argument("--touches", type=int, default=2000)
    a = ap.parse_args()
    if not os.access(TOUCH, os.X_OK):
        sys.exit(f"bench_migration: {TOUCH} is missing: build it with `make bench` (or make {TOUCH})")
    if os.geteuid() != 0:
        sys.exit("bench_migration: needs root (network namespaces, userfaultfd of another process)")
    modes = ("plaintext", "tls-psk")
    p50 = {k: [] for k in modes}
    p99 = {k: [] for k in modes}
    bulk = {k: [] for k in modes}
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        args = {"plaintext": ["--insecure"],
                "tls-psk": ["--tls-psk", tlscreds.make_psk(os.path.join(tmp, "keys.psk"))]}
        for _ in range(a.rounds):
            for k in modes:
                r = one_round(net, tmp, a.touches, args[k])
                if not r:
                    sys.exit(f"bench_migration: a {k} round produced no result")
                p50[k].append(r["p50_ns"])
                p99[k].append(r["p99_ns"])
        # the same over 2 MiB hugetlbfs pages (both ends), plaintext
        h50, h99, htouch = [], [], min(a.touches, 100)
        with tap.HugePages(2 * 128 + 8):
            for _ in range(a.rounds):
                r = one_round(net, tmp, htouch, args["plaintext"], hugetlb=True)
                if not r:
                    sys.exit("bench_migration: a hugetlb round produced no result")
                h50.append(r["p50_ns"])
                h99.append(r["p99_ns"])
        for _ in range(max(3, a.rounds // 2)):
            for k in modes:
                r = bulk_round(net, tmp, args[k])
                if not r:
                    sys.exit(f"bench_migration: a {k} bulk round produced no result")
                bulk[k].append(r)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(f"remote fault latency, target -> source over veth, 4 KiB pages "
          f"({a.touches} random first touches x {a.rounds} rounds, medians of rounds)")
    print(f"  source VM: migrate-vm --cpu {VM_CPU} (/dev/kvm "
          f"{'present' if os.access('/dev/kvm', os.R_OK | os.W_OK) else 'absent'}, not used)")
    for k in modes:
        print(f"  {k:9s} p50 {med(p50[k]) / 1e3:8.1f} us  (rounds: "
              f"{', '.join(f'{x / 1e3:.1f}' for x in p50[k])})")
        print(f"  {k:9s} p99 {med(p99[k]) / 1e3:8.1f} us  (rounds: "
              f"{', '.join(f'{x / 1e3:.1f}' for x in p99[k])})")
    print(f"  2 MiB hugetlbfs pages, plaintext ({htouch} touches x {a.rounds} rounds): p50 "
          f"{med(h50) / 1e3:.1f} us, p99 {med(h99) / 1e3:.1f} us; per 4 KiB page moved: p50 "
          f"{med(h50) / 512 / 1e3:.2f} us vs {med(p50['plaintext']) / 1e3:.1f} us one 4 KiB page")
    r50 = med(p50["tls-psk"]) / med(p50["plaintext"])
    r99 = med(p99["tls-psk"]) / med(p99["plaintext"])
    print(f"  TLS/plaintext p50 {r50:.3f} (target <= 1.10: {'met' if r50 <= 1.10 else 'MISSED'}), "
          f"p99 {r99:.3f} (target <= 1.15: {'met' if r99 <= 1.15 else 'MISSED'})")
    print("bulk push, 256 MiB, no cap (MiB/s, medians):")
    for k in modes:
        print(f"  {k:9s} {med(bulk[k]):8.1f}  (rounds: {', '.join(f'{x:.1f}' for x in bulk[k])})")
    rb = med(bulk["tls-psk"]) / med(bulk["plaintext"])
    print(f"  TLS/plaintext {rb:.3f} (target >= 0.80: {'met' if rb >= 0.8 else 'MISSED'})")
    # The floor: every pushed byte is sealed by the source and opened by the
    # router, on top of what the plaintext push costs (measured above).
    floor_bin = os.path.join(tap.BUILD, "bench-tls-floor")
    if os.access(floor_bin, os.X_OK):
        f = json.loads(subprocess.run([floor_bin], capture_output=True, text=True,
                                      timeout=60).stdout)
        plain_s = 1 / med(bulk["plaintext"])
        best = plain_s / (plain_s + 1 / f["seal_mib_s"] + 1 / f["open_mib_s"])
        print(f"  crypto floor ({f['cipher']}, one core): seal {f['seal_mib_s']:.0f} MiB/s, open "
              f"{f['open_mib_s']:.0f} MiB/s -> best TLS/plaintext here if nothing else cost "
              f"anything: {best:.3f}")


if __name__ == "__main__":
    main()
