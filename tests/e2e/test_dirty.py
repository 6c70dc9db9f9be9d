#!/usr/bin/env python3
"""Dirty tracking of `faultline source`: write-protection (wp) against hashing.

The reference is always the writer's own record, never the tool's output:

  - a guest (`migrate-vm --role source --cpu threads`) whose vCPUs rewrite
    their control and hot pages every loop, and a host thread that stamps
    chosen pages at set times (--write-at) and zeroes others (--zero-at),
    each announced with its CLOCK_MONOTONIC time, before and after the
    source's precopy;
  - `wire-client mem --wp-async`, whose pages the test writes, zeroes,
    discards and poisons itself, between precopy and switchover.

The page-state map the target receives (`wire-client target --map`) must
call DIRTY exactly the pages written after their precopy (and ZERO the ones
that went zero), with wp and with hashes alike.
"""
import json
import os
import subprocess
import tempfile
import time

from tap import BUILD, FAULTLINE, Skip, main
from test_source import (Lines, Mem, Source, Target, VmmSource, run_source_expect_error,
                         setup)

MIGRATE_VM = os.path.join(BUILD, "migrate-vm")


class Vm:
    """migrate-vm --role source on host threads; .pid and .ranges() like test_source's Mem."""

    def __init__(self, *args):
        self.p = subprocess.Popen([MIGRATE_VM, "--role", "source", "--cpu", "threads", "--json",
                                   *args], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True)
        self.out = Lines(self.p.stdout)
        self.info = self.out.next_event(lambda e: e["event"] == "vm", timeout=30)
        self.pid = self.info["pid"]

    def ranges(self, anon=False):
        return ["--range", f"{self.info['addr']}:{self.info['length']}"]

    def guest_pages(self):
        """What the vCPUs rewrite every loop: control pages and each slice's hot pages."""
        pages = set(self.info["control_pages"])
        for sl in self.info["slices"]:
            pages.update(range(sl["first"], sl["first"] + sl["hot"]))
        return pages

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.p.kill()  # may be stopped by the source: SIGKILL still ends it
        self.p.wait(timeout=10)
        return False


def event(lines, pred, timeout=30):
    """An event already seen or the next one that matches (next_event drops the rest)."""
    for e in lines.all:
        if isinstance(e, dict) and pred(e):
            return e
    return lines.next_event(pred, timeout)


def read_map(path):
    states = {}
    with open(path) as f:
        for line in f:
            r, p, st = line.split()
            states[(int(r), int(p))] = st
    return states


def pages_in(states, state, region=0):
    return {p for (r, p), st in states.items() if r == region and st == state}


EARLY = (1500, 3000, 40)   # ms, first page, count: written after the source armed, before precopy
LATE = (4500, 6000, 50)    # after precopy
ZERO = (4500, 7000, 8)     # non-zero -> zero after precopy
MOVED = (4500, 2000, 16)   # written after precopy with the early ones' neighbours untouched


def guest_run(method):
    """One migration of a migrate-vm guest with --dirty METHOD; returns what the
    guest did (its record) and what the target's map says."""
    sched = []
    for kind, (ms, first, count) in (("write", EARLY), ("write", LATE), ("zero", ZERO),
                                      ("write", MOVED)):
        sched += [f"--{kind}-at", f"{ms}:{first}:{count}"]
    with Vm("--vcpus", "2", "--mem-mib", "64", "--hot-fraction", "0.01", "--zero-percent", "0",
            *sched) as vm, Source(vm, "--switchover-on-command", "--dirty", method) as src, \
            tempfile.TemporaryDirectory() as d:
        assert src.ready["dirty_tracking"] == method, src.ready
        early = event(vm.out, lambda e: e["event"] == "written" and e["first"] == EARLY[1])
        t = Target(src, "--precopy", "--map", os.path.join(d, "map"))
        pre = src.out.next_event(lambda e: e["event"] == "precopy_done", timeout=30)
        assert early["ns"] < pre["ts_ns"], (early, pre)
        late = [event(vm.out, lambda e, f=f: e["event"] == "written" and e["first"] == f)
                for f in (LATE[1], MOVED[1])]
        zeroed = event(vm.out, lambda e: e["event"] == "zeroed")
        for e in late + [zeroed]:
            assert e["ns"] > pre["ts_ns"], ("precopy took too long for this schedule", e, pre)
        time.sleep(0.3)  # the vCPUs' loops rewrite every hot page after precopy, many times
        r = src.control("--switchover-now")
        assert r.returncode == 0, r
        rc, evs, summ = t.finish()
        assert rc == 0 and summ["missing"] == 0 and summ["clean_without_precopy"] == 0, summ
        sw = event(src.out, lambda e: e["event"] == "switchover")
        states = read_map(os.path.join(d, "map"))
        written_after = vm.guest_pages()
        for _, first, count in (LATE, MOVED):
            written_after.update(range(first, first + count))
        return {"written_after": written_after, "zeroed": set(range(ZERO[1], ZERO[1] + ZERO[2])),
                "early": set(range(EARLY[1], EARLY[1] + EARLY[2])), "states": states,
                "switchover": sw, "summary": summ, "src": src}


def test_guest_writes_after_precopy():
    """The dirty set is exactly what the guest wrote after precopy — with wp (async
    write-protection through migrate-vm's own uffd, which has WP_ASYNC) and with
    hashes: pages written after the source armed but before their precopy are
    not dirty, pages zeroed after precopy are ZERO, nothing else is resent."""
    setup()
    if not os.path.exists(MIGRATE_VM):
        raise Skip("build/migrate-vm not built")
    got = {}
    for method in ("wp", "hash"):
        g = got[method] = guest_run(method)
        dirty = pages_in(g["states"], "dirty")
        missed = sorted(g["written_after"] - dirty)
        extra = sorted(dirty - g["written_after"])
        assert not missed and not extra, (method, "missed", missed[:20], "extra", extra[:20])
        assert g["zeroed"] <= pages_in(g["states"], "zero"), method
        assert not g["early"] & dirty, method
        assert g["switchover"]["dirty"] == len(g["written_after"]), (method, g["switchover"])
    assert pages_in(got["wp"]["states"], "dirty") == pages_in(got["hash"]["states"], "dirty")
    assert got["wp"]["states"] == got["hash"]["states"]


def test_auto_picks_wp_and_releases_it():
    """auto chooses wp where the VMM's uffd has WP_ASYNC, says why, registers WP over
    the guest range keeping the VMM's MISSING registration, and removes it at
    switchover (the VMA's flags are back to what the VMM set)."""
    setup()
    with Mem("--pages", "64", "--wp-async") as m:
        def vmflags():
            lines = open(f"/proc/{m.pid}/smaps").read().splitlines()
            for i, line in enumerate(lines):
                if line.startswith(f"{m.addr:x}-"):
                    return next(x for x in lines[i:] if x.startswith("VmFlags:")).split()[1:]
            raise AssertionError("guest mapping not found")

        before = vmflags()
        assert "um" in before and "uw" not in before, before
        with Source(m, "--switchover-on-command", "--no-stop") as src:
            assert src.ready["dirty_tracking"] == "wp", src.ready
            assert "write-protection" in src.ready["dirty_tracking_why"], src.ready
            assert {"um", "uw"} <= set(vmflags()), vmflags()
            t = Target(src, "--precopy")
            src.out.next_event(lambda e: e["event"] == "precopy_done")
            assert m.cmd("dirty 9") == "ok"
            assert src.control("--switchover-now").returncode == 0
            rel = src.out.next_event(lambda e: e["event"] == "dirty_tracking_released")
            assert rel["unprotected"] == rel["ranges"] and rel["failed"] == 0, rel
            rc, evs, summ = t.finish()
            assert rc == 0 and summ["dirty"] == 1, summ
            # the VMM registered this range itself: WP stays registered, nothing is protected
            assert "um" in vmflags(), vmflags()
            pm = os.open(f"/proc/{m.pid}/pagemap", os.O_RDONLY)
            try:
                ent = int.from_bytes(os.pread(pm, 8, (m.addr // m.ps + 1) * 8), "little")
            finally:
                os.close(pm)
            assert not ent & (1 << 57), "page 1 is still write-protected (pagemap bit 57)"
            assert m.cmd("dirty 1") == "ok"  # writes go on, never blocked
        with Mem("--pages", "64") as plain, Source(plain) as src:
            assert src.ready["dirty_tracking"] == "hash", src.ready
            why = src.ready["dirty_tracking_why"]
            assert "lacks UFFD_FEATURE_WP_ASYNC" in why and "no soft-dirty" in why, why


def test_wire_client_exact_set_with_discard_zero_poison():
    """Pages written, zeroed, discarded (MADV_REMOVE: no write, but reads zero now) and
    poisoned between precopy and switchover: DIRTY, ZERO, ZERO, POISONED; a page
    written and then written back to its precopy contents is DIRTY with wp (it was
    written) and CLEAN with hashes (it wasn't changed) — the one difference."""
    setup()
    res = {}
    for method in ("wp", "hash"):
        with Mem("--pages", "512", "--wp-async") as m, \
                Source(m, "--switchover-on-command", "--dirty", method) as src, \
                tempfile.TemporaryDirectory() as d:
            assert src.ready["dirty_tracking"] == method, src.ready
            t = Target(src, "--precopy", "--map", os.path.join(d, "map"))
            src.out.next_event(lambda e: e["event"] == "precopy_done")
            # through the mapping (holes are written through the file by wire-client:
            # write-protection does not see that, see the design notes)
            written = [3, 6, 100, 101, 102, 300, 510]
            assert m.cmd("dirty " + ",".join(map(str, written))) == "ok"
            assert m.cmd("zero 20") == "ok"
            assert m.cmd("discard 40") == "ok"
            assert m.cmd("same 60") == "ok"
            r = src.control("--inject", "0:80")
            assert r.returncode == 0 and r.stdout.startswith("ok 0 80"), r
            assert src.control("--switchover-now").returncode == 0
            rc, evs, summ = t.finish()
            assert rc == 0 and summ["missing"] == 0, summ
            st = read_map(os.path.join(d, "map"))
            res[method] = st
            assert st.get((0, 20)) == "zero" and st.get((0, 40)) == "zero", method
            assert st.get((0, 80)) == "poisoned", method
            exp = set(written) | ({60} if method == "wp" else set())
            assert pages_in(st, "dirty") == exp, (method, sorted(pages_in(st, "dirty")))
            assert t.image() == m.memfd(), method
    assert {k: v for k, v in res["wp"].items() if k != (0, 60)} == \
        {k: v for k, v in res["hash"].items() if k != (0, 60)}


def test_vmm_handover_wp():
    """--vmm-socket: auto keeps hashes (the memfds may be written through other
    mappings) and says so; --dirty wp uses the handed-over uffd's WP_ASYNC through
    the VMM's pagemap (pid from SO_PEERCRED): exactly the written pages are DIRTY."""
    setup()
    with VmmSource("--switchover-on-command", mem_args=("--pages", "64", "--wp-async")) as src:
        assert src.ready["dirty_tracking"] == "hash", src.ready
        assert "--dirty wp" in src.ready["dirty_tracking_why"], src.ready
    with VmmSource("--switchover-on-command", "--dirty", "wp",
                   mem_args=("--pages", "512", "--wp-async")) as src, \
            tempfile.TemporaryDirectory() as d:
        m = src.mem
        assert src.ready["dirty_tracking"] == "wp", src.ready
        assert "handed-over" in src.ready["dirty_tracking_why"], src.ready
        t = Target(src, "--precopy", "--map", os.path.join(d, "map"))
        src.out.next_event(lambda e: e["event"] == "precopy_done")
        written = [3, 200, 201, 510]
        assert m.cmd("dirty " + ",".join(map(str, written))) == "ok"
        assert m.cmd("zero 20") == "ok"
        assert src.control("--switchover-now").returncode == 0
        rc, evs, summ = t.finish()
        assert rc == 0 and summ["missing"] == 0, summ
        st = read_map(os.path.join(d, "map"))
        assert pages_in(st, "dirty") == set(written), sorted(pages_in(st, "dirty"))
        assert st.get((0, 20)) == "zero"
        assert t.image() == m.memfd(), "target image differs from the handed-over memfd"
    # a handed-over uffd without WP_ASYNC: the source says what is missing and exits
    with tempfile.TemporaryDirectory() as d:
        vmm = os.path.join(d, "vmm")
        p = subprocess.Popen([FAULTLINE, "source", "--vmm-socket", vmm, "--listen", "127.0.0.1:0",
                              "--dirty", "wp", "--no-stop"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 20
            while not os.path.exists(vmm):
                assert p.poll() is None and time.monotonic() < deadline, "no --vmm-socket"
                time.sleep(0.05)
            with Mem("--handover", vmm, "--pages", "16"):
                out, err = p.communicate(timeout=30)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        assert p.returncode != 0, (out, err)
        assert "--dirty wp: the handed-over userfaultfd lacks UFFD_FEATURE_WP_ASYNC" in err, err
        assert "or use --dirty hash" in err, err


def test_tracking_lost_reads_everything():
    """The VMM unregisters guest memory between precopy and switchover: the
    write-protection is gone (PAGEMAP_SCAN: EPERM). The source says so and the
    switchover reads every page: every non-zero page is DIRTY, none is missed."""
    setup()
    with Mem("--pages", "128", "--wp-async") as m, \
            Source(m, "--switchover-on-command", "--no-stop") as src, \
            tempfile.TemporaryDirectory() as d:
        assert src.ready["dirty_tracking"] == "wp", src.ready
        t = Target(src, "--precopy", "--map", os.path.join(d, "map"))
        src.out.next_event(lambda e: e["event"] == "precopy_done")
        assert m.cmd("dirty 3,4") == "ok"
        assert m.cmd("unregister") == "ok"
        assert m.cmd("dirty 5") == "ok"
        assert src.control("--switchover-now").returncode == 0
        lost = event(src.out, lambda e: e["event"] == "dirty_tracking_lost")
        assert "EPERM" in lost["reason"], lost
        rc, evs, summ = t.finish()
        assert rc == 0 and summ["missing"] == 0, summ
        st = read_map(os.path.join(d, "map"))
        holes = {p for p in range(128) if p % 8 == 7}
        assert pages_in(st, "dirty") == set(range(128)) - holes, sorted(pages_in(st, "dirty"))
        assert t.image() == m.memfd()


def test_dirty_wp_impossible_is_a_clear_error():
    """--dirty wp where the VMM's userfaultfd lacks WP_ASYNC (or there is none): the
    error names what is missing and what to do."""
    setup()
    with Mem("--pages", "16") as m:
        run_source_expect_error(["--pid", str(m.pid), *m.ranges(), "--listen", "127.0.0.1:0",
                                 "--dirty", "wp"],
                                "lacks UFFD_FEATURE_WP_ASYNC (features 0x")
        run_source_expect_error(["--pid", str(m.pid), *m.ranges(), "--listen", "127.0.0.1:0",
                                 "--dirty", "wp"], "create it with that feature (kernel >= 6.7), "
                                "or use --dirty hash")
    p = subprocess.Popen(["sleep", "30"])
    try:
        maps = open(f"/proc/{p.pid}/maps").read().splitlines()
        heapish = next(line.split()[0] for line in maps if "rw" in line.split()[1])
        a, b = (int(x, 16) for x in heapish.split("-"))
        run_source_expect_error(["--pid", str(p.pid), "--range", f"{hex(a)}:{b - a}",
                                 "--listen", "127.0.0.1:0", "--dirty", "wp"],
                                "holds no userfaultfd")
    finally:
        p.kill()
        p.wait()
    run_source_expect_error(["--pid", "1", "--range", "0x1000:4096", "--dirty", "bogus"],
                            "auto, wp, soft-dirty or hash")


if __name__ == "__main__":
    main([test_guest_writes_after_precopy, test_auto_picks_wp_and_releases_it,
          test_wire_client_exact_set_with_discard_zero_poison, test_vmm_handover_wp,
          test_tracking_lost_reads_everything,
          test_dirty_wp_impossible_is_a_clear_error])
