"""Tiny TAP harness shared by the end-to-end tests (stdlib only).

Each test is a function; it passes by returning, fails by raising
AssertionError (or anything else), and is skipped by raising Skip with the
reason. Output is TAP, which scripts/run-tests.sh counts.
"""
import json
import os
import subprocess
import sys
import traceback

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, "build")
# FAULTLINE_BIN runs the e2e tests against another build (an A/B of a fix).
FAULTLINE = os.environ.get("FAULTLINE_BIN", os.path.join(BUILD, "faultline"))


class Skip(Exception):
    pass


def run_tests(tests):
    print(f"1..{len(tests)}", flush=True)
    failed = 0
    for i, t in enumerate(tests, 1):
        name = t.__name__
        try:
            t()
            print(f"ok {i} - {name}", flush=True)
        except Skip as s:
            print(f"ok {i} - {name} # SKIP {s}", flush=True)
        except Exception:
            failed += 1
            print(f"not ok {i} - {name}", flush=True)
            for line in traceback.format_exc().splitlines():
                print(f"# {line}", flush=True)
    return 1 if failed else 0


def jsonl(text):
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def trace(cmd, *trace_args, timeout=120):
    """faultline trace --json [trace_args] -- cmd; returns (faultline objs, stderr, workload objs file)."""
    args = [FAULTLINE, "trace", "--json", *trace_args, "--", *cmd]
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    return p


def require_root():
    if os.geteuid() != 0:
        raise Skip("needs root (BPF)")


class HugePages:
    """At least n free huge pages of size_kib (2 MiB, or 1 GiB: 1048576) for
    the test's duration (the pool is put back as it was); Skip where the
    kernel cannot have them (1 GiB pages need that much contiguous memory)."""

    def __init__(self, n, size_kib=2048):
        self.n = n
        self.dir = f"/sys/kernel/mm/hugepages/hugepages-{size_kib}kB"
        self.what = "1 GiB" if size_kib == 1048576 else f"{size_kib // 1024} MiB"

    def __enter__(self):
        require_root()
        if not os.path.isdir(self.dir):
            raise Skip(f"this kernel has no {self.what} huge pages ({self.dir})")
        with open(f"{self.dir}/nr_hugepages") as f:
            self.old = int(f.read())
        with open(f"{self.dir}/nr_hugepages", "w") as f:
            f.write(str(self.old + self.n))
        with open(f"{self.dir}/free_hugepages") as f:
            free = int(f.read())
        if free < self.n:
            self.__exit__()
            raise Skip(f"only {free} free {self.what} huge pages could be had (wanted {self.n})")
        return self

    def __exit__(self, *exc):
        with open(f"{self.dir}/nr_hugepages", "w") as f:
            f.write(str(self.old))


def require_kvm():
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise Skip("/dev/kvm not available")


def main(tests):
    sys.exit(run_tests(tests))
