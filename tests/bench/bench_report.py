#!/usr/bin/env python3
"""make bench: `faultline report` on a million faults — time, memory and output size.

The recording is tests/e2e/report_synth.py's (a VM's vCPUs and threads faulting
on 4 GiB of guest memory), written once to a temporary file; the report is run
BENCH_ROUNDS times (default 3) and the median time is printed with the peak
resident memory and the HTML's size. Figures only: nothing here fails a build.
"""
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
import report_synth  # noqa: E402

FL = os.path.join(ROOT, "build", "faultline")
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
FAULTS = int(os.environ.get("BENCH_REPORT_FAULTS", "1000000"))


def main():
    with tempfile.TemporaryDirectory(prefix="fl-bench-report-") as tmp:
        rec, out = os.path.join(tmp, "rec.jsonl"), os.path.join(tmp, "rec.html")
        t0 = time.monotonic()
        report_synth.write(rec, FAULTS)
        gen = time.monotonic() - t0
        mib_in = os.path.getsize(rec) / 2**20
        times = []
        for _ in range(ROUNDS):
            t0 = time.monotonic()
            p = subprocess.run([FL, "report", "-q", "-o", out, rec], capture_output=True,
                               text=True)
            times.append(time.monotonic() - t0)
            if p.returncode:
                sys.exit(f"bench: faultline report failed: {p.stderr[-500:]}")
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        med = statistics.median(times)
        print(f"report: {FAULTS:,} faults ({mib_in:.0f} MiB of JSON lines, written in {gen:.1f} s)"
              f" -> {os.path.getsize(out) / 2**20:.2f} MiB of HTML in {med:.2f} s median of "
              f"{ROUNDS} ({FAULTS / med / 1e6:.2f} M faults/s, {mib_in / med:.0f} MiB/s), "
              f"peak RSS {rss:.0f} MiB")


if __name__ == "__main__":
    main()
