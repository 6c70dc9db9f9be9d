#!/usr/bin/env python3
"""The migration pair on hugetlbfs-backed guests (2 MiB pages), MISSING and
MINOR, with the integrity tests' rule checked page by page.

Both VMs' memory is a memfd on 2 MiB hugetlbfs pages (migrate-vm
--hugetlb; MISSING mode is a shared mapping of it, as QEMU's
memory-backend-file is).  faultline source serves it in huge pages, the
router places each with one COPY / CONTINUE of 2 MiB, and poison covers the
whole huge page (what the kernel does with a poisoned hugetlb page).  The
guest still works in 4 KiB pages and writes after the switchover, and the
checks (tests/e2e/migration.py: check_pages) compare every 4 KiB page:
  - unreadable at the stopped source (poisoned) -> SIGBUS on the target;
  - written by the target guest -> its last write;
  - otherwise byte-identical to the source's final memory (discarded pages
    read zero).
No /dev/kvm needed (--cpu threads).
"""
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tap  # noqa: E402
from netns import NetnsPair  # noqa: E402
from migration import HUGE, PAGE, Migration, check_pages  # noqa: E402
from test_integrity import reconnected, wait_connected  # noqa: E402

PER_HUGE = HUGE // PAGE
MEM_MIB = 64
# both VMs' memory, the router's own map of the target's (same pages), slack
POOL = 2 * MEM_MIB * (1 << 20) // HUGE + 8


def cold_huge(vm, k, n, skip=2):
    """n huge pages wholly inside the cold part of vCPU k's slice."""
    s = vm["slices"][k]
    first = -(-(s["first"] + s["hot"]) // PER_HUGE) + skip
    last = (s["first"] + s["pages"]) // PER_HUGE      # exclusive
    assert first + n <= last, f"slice {k} has no {n} cold huge pages past {skip}: {s}"
    return list(range(first, first + n))


def hot_huge(vm, k):
    """A huge page inside vCPU k's hot part: placed on the target early."""
    s = vm["slices"][k]
    hp = -(-s["first"] // PER_HUGE)
    assert (hp + 1) * PER_HUGE <= s["first"] + s["hot"], f"slice {k}'s hot part is under 2 MiB: {s}"
    return hp


def source_ready(m):
    return next(o for o in m.src_out.objs if "session" in o)


def run(mode, cut=True):
    """Poison before the target starts and during postcopy (one huge page
    the target has already mapped: late poison), the connection cut during
    the pushes, the guest writing throughout."""
    tap.require_root()
    with tap.HugePages(POOL), tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        # the source guest dirties 3/4 of each slice, the target guest reads
        # half: the dirty quarter it does not read comes by the (throttled)
        # push, so the migration outlasts the guest's own faults by a second
        m = Migration(net, tmp, mode, mem_mib=MEM_MIB, hugetlb=True, max_bandwidth=8, hot=0.75,
                      vm_args=["--touch-fraction", "0.5"])
        vm = m.start_source_vm()
        assert vm["backing_page_size"] == HUGE, vm
        m.start_source()
        ready = source_ready(m)
        assert ready.get("page_size") == HUGE, f"the source serves {ready.get('page_size')}-byte pages"
        m.inject(cold_huge(vm, 0, 2, skip=0))
        m.start_target()
        wait_connected(m)
        if mode == "minor":
            m.src_out.wait_for(lambda o: o.get("event") == "precopy_done", 60, "precopy done")
        m.switchover()
        # each vCPU has faulted (and written) the huge pages of its hot part by now
        m.wait_router(lambda o: o.get("copies", 0) + o.get("continues", 0) >= 6, 60,
                      "huge pages placed")
        late = hot_huge(vm, 1)
        m.inject([late] + cold_huge(vm, 1, 1, skip=1))
        if cut:
            m.cut()
            reconnected(m)
        res = m.result()
        r = res["router"]
        assert r["finished"] is True, r
        assert res["router_rc"] == 0, r
        if cut:
            assert r["reconnects"] >= 1, r
        assert len(res["writes"]) > 500, f"the target guest wrote only {len(res['writes'])} pages"
        # poison took whole huge pages: every 4 KiB page of each is unreadable at the source
        for hp in m.injected:
            assert all(res["source_pages"][hp * PER_HUGE + i] is None for i in range(PER_HUGE)), \
                f"huge page {hp} was injected but the source can still read parts of it"
        assert r["poisons_late"] >= 1, f"no poison met a page already placed: {r}"
        # one placement per huge page: no placement can be smaller
        placed = r["copies"] + r["continues"] + r["zeropages"]
        assert placed <= res["vm"]["length"] // HUGE, f"{placed} placements for 32 huge pages: {r}"
        check_pages(res)
        return res


def test_hugetlb_minor():
    run("minor")


def test_hugetlb_missing():
    run("missing")


def test_hugetlb_discard_missing():
    """A balloon gives back whole huge pages during postcopy (MADV_REMOVE on
    the shared hugetlbfs mapping -> UFFD_EVENT_REMOVE): they read zero."""
    discard_during("missing")


def test_hugetlb_discard_minor():
    discard_during("minor")


def discard_during(mode):
    tap.require_root()
    with tap.HugePages(POOL), tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        m = Migration(net, tmp, mode, mem_mib=MEM_MIB, hugetlb=True)
        vm = m.start_source_vm()
        hps = cold_huge(vm, 1, 3, skip=1)
        # early: 32 huge pages move in well under a second, and a discard
        # after the router has finished is no REMOVE event for it
        spans = [(hp * PER_HUGE, PER_HUGE, 20 + k * 40) for k, hp in enumerate(hps)]
        m.vm_args = [a for f, n, t in spans for a in ("--discard", f"{f}:{n}@{t}")]
        m.start_source()
        m.start_target()
        wait_connected(m)
        if mode == "minor":
            m.src_out.wait_for(lambda o: o.get("event") == "precopy_done", 60, "precopy done")
        m.switchover()
        res = m.result()
        assert res["router"]["finished"] is True, res["router"]
        assert res["tv"]["discarded"] == [[f, n] for f, n, _ in spans], res["tv"]["discarded"]
        assert res["router"]["events"] >= len(spans), res["router"]
        check_pages(res, discarded=[p for f, n, _ in spans for p in range(f, f + n)])


def test_hugetlb_router_killed_and_restarted_minor():
    """kill -9 of the router mid-postcopy; a new one on the same journal
    takes over: pages the first placed and the guest wrote stay the
    guest's, poison from before the kill stays poison."""
    tap.require_root()
    with tap.HugePages(POOL), tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        # as in run(): a dirty quarter only the push brings, so the kill
        # falls while the first router is still at work
        m = Migration(net, tmp, "minor", mem_mib=MEM_MIB, hugetlb=True, target_run_ms=12000,
                      hot=0.75, vm_args=["--touch-fraction", "0.5"])
        vm = m.start_source_vm()
        m.start_source()
        before = cold_huge(vm, 0, 2, skip=0)
        m.inject(before)
        m.start_target(reconnect=True)
        m.src_out.wait_for(lambda o: o.get("event") == "precopy_done", 60, "precopy done")
        m.switchover()
        m.wait_router(lambda o: o.get("continues", 0) >= 6, 60, "guest huge pages placed")
        m.kill_router()
        time.sleep(0.5)
        m.restart_router()
        res = m.result()
        assert res["router"]["finished"] is True, res["router"]
        assert res["tv"]["handovers"] == 2, res["tv"]
        assert res["router"]["journal_loaded"] >= len(before), res["router"]
        check_pages(res)


def gib_page(mode):
    """1 GiB pages: a guest of one page on each side, moved in 2 MiB chunks
    (PageData.chunk_offset) and placed with one COPY/CONTINUE of 1 GiB."""
    tap.require_root()
    with tap.HugePages(2, size_kib=1 << 20), tempfile.TemporaryDirectory() as tmp, \
            NetnsPair() as net:
        m = Migration(net, tmp, mode, mem_mib=1024, hugetlb="1g", max_bandwidth=0,
                      target_run_ms=4000)
        vm = m.start_source_vm()
        assert vm["backing_page_size"] == 1 << 30, vm
        m.start_source()
        ready = source_ready(m)
        assert ready.get("page_size") == 1 << 30, ready
        m.start_target()
        wait_connected(m)
        if mode == "minor":
            m.src_out.wait_for(lambda o: o.get("event") == "precopy_done", 120, "precopy done")
        m.switchover()
        res = m.result(timeout=300)
        r = res["router"]
        assert r["finished"] is True, r
        assert r["copies"] + r["continues"] == 1, f"one placement of the one 1 GiB page: {r}"
        assert r["bytes_received"] >= 1 << 30, r
        assert len(res["writes"]) > 100, f"the target guest wrote only {len(res['writes'])} pages"
        check_pages(res)


def test_hugetlb_1g_minor():
    gib_page("minor")


def test_hugetlb_1g_missing():
    gib_page("missing")


def test_hugetlb_vmm_handover_source():
    """faultline source --vmm-socket on a hugetlbfs memfd a VMM handed over
    (wire-client mem --hugetlb --handover): served in 2 MiB pages; the
    target's image equals the memfd byte for byte, the pages written after
    precopy (and only those) are DIRTY."""
    import test_source as ts
    ts.setup()
    with tap.HugePages(24), ts.VmmSource("--switchover-on-command",
                                         mem_args=("--hugetlb", "--pages", "16")) as src:
        m = src.mem
        assert m.ps == HUGE and src.ready["page_size"] == HUGE, src.ready
        t = ts.Target(src, "--precopy", "--pause-at", "precopy_done")
        pre = t.out.next_event(lambda e: e["event"] == "precopy_done")
        assert pre["pages"] == 16 - 2, pre  # every 8th page is a hole
        t.wait_paused("precopy_done")
        written = [3, 7, 9]  # 7 was a hole
        assert m.cmd("dirty " + ",".join(map(str, written))) == "ok"
        t.resume()
        r = src.control("--switchover-now")
        assert r.returncode == 0, r
        rc, evs, summ = t.finish()
        assert rc == 0, evs[-5:]
        assert summ["dirty"] == len(written) and summ["missing"] == 0, summ
        assert t.image() == m.memfd(), "target image differs from the handed-over hugetlbfs memfd"


if __name__ == "__main__":
    tap.main([test_hugetlb_minor, test_hugetlb_missing, test_hugetlb_discard_missing,
              test_hugetlb_discard_minor, test_hugetlb_router_killed_and_restarted_minor,
              test_hugetlb_1g_minor, test_hugetlb_1g_missing, test_hugetlb_vmm_handover_source])
