#!/usr/bin/env python3
"""Migration pair integrity, adversarially: no guest byte lost or reverted,
no healthy page poisoned, whatever happens to the network, the router
process or the operator's files.

Each test runs a real two-host migration (network namespaces, real
userfaultfds, `faultline source` / `faultline target`, the migrate-vm test
VMM with guest threads touching guest memory directly, so no /dev/kvm is
needed) in which the target guest writes every page it faults on in its
write set right after the fault and keeps writing it.  Then, page by page
(tests/e2e/migration.py: check_pages), against the stopped source's memory
and the target guest's own record of its writes:
  - poisoned at the source  -> SIGBUS on the target;
  - written by the target guest after the switchover -> its last write;
  - otherwise byte-identical to the source's final memory (zero pages and
    discarded pages read zero).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tap  # noqa: E402
from netns import NetnsPair  # noqa: E402
from migration import Migration, check_pages, classify_pages, PORT  # noqa: E402


def layout(m):
    """Each vCPU's slice, as migrate-vm lays them out (its `vm` line)."""
    pages = m.mem_mib * 256
    slice_ = (pages - m.vcpus) // m.vcpus
    hot = max(1, int(slice_ * m.hot))
    return [dict(first=m.vcpus + i * slice_, pages=slice_, hot=hot) for i in range(m.vcpus)]


def cold_pages(vm, k, n, skip=100):
    """n cold pages of vCPU k's slice (past its hot part)."""
    s = vm["slices"][k]
    first = s["first"] + s["hot"] + skip
    return list(range(first, first + n))


def wait_connected(m, timeout=30):
    return m.src_out.wait_for(lambda o: o.get("event") == "target_connected", timeout,
                              "target connected")


def reconnected(m, n=1, timeout=60):
    m.wait_router(lambda o: o.get("reconnects", 0) >= n and o.get("connected"), timeout,
                  f"router reconnected {n} time(s)")


def run_cut(mode, phase, dirty=None):
    """A migration whose source connection is cut (ss -K) at `phase`; the source
    tracks writes with `dirty` (default auto: write-protection through migrate-vm's
    uffd, which has WP_ASYNC)."""
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        m = Migration(net, tmp, mode, src_args=["--dirty", dirty] if dirty else ())
        vm = m.start_source_vm()
        m.start_source()
        assert m.ready["dirty_tracking"] == (dirty or "wp"), m.ready
        m.inject(cold_pages(vm, 0, 2))
        m.start_target()
        wait_connected(m)
        if phase == "precopy":
            assert mode == "minor"
            time.sleep(1.0)
            m.cut()
            reconnected(m)
        elif mode == "minor":
            m.src_out.wait_for(lambda o: o.get("event") == "precopy_done", 60, "precopy done")
        m.switchover()
        if phase == "switchover":
            m.cut()
            reconnected(m)
        # The guest has faulted and written pages by now.
        m.wait_router(lambda o: o.get("pages_received", 0) > 1500, 60, "pages flowing")
        m.inject(cold_pages(vm, 1, 1, skip=900))
        if phase == "push":
            m.cut()
            reconnected(m)
        if phase == "finish":
            m.src_out.wait_for(lambda o: o.get("event") == "end_sent", 120, "source End")
            m.cut()
        res = m.result()
        assert res["router"]["finished"] is True, res["router"]
        assert res["router_rc"] == 0, res["router"]
        if phase != "finish":
            assert res["router"]["reconnects"] >= 1, res["router"]
        assert len(res["writes"]) > 500, f"the target guest wrote only {len(res['writes'])} pages"
        check_pages(res)
        return res


def test_cut_during_precopy_minor():
    run_cut("minor", "precopy")


def test_cut_during_precopy_minor_hash():
    """The same with hashes: the last-resort method stays covered."""
    run_cut("minor", "precopy", dirty="hash")


def test_cut_at_switchover_minor():
    run_cut("minor", "switchover")


def test_cut_during_push_minor():
    """The case that reverted 2,241-2,470 of ~4,096 guest writes: the
    resumed source pushes every page again; the router must leave the
    pages the guest has alone."""
    res = run_cut("minor", "push")
    assert res["router"]["kept_guest"] > 0, \
        f"the resumed source re-pushed no page the guest had: the test proves nothing: {res['router']}"


def test_cut_at_finish_minor():
    run_cut("minor", "finish")


def test_cut_during_push_missing():
    run_cut("missing", "push")


def test_router_killed_and_restarted_minor():
    """kill -9 of the router mid-postcopy; a new router on the same journal
    takes over the frozen guest (which writes on): the pages the first
    router placed, and the guest wrote, must stay as the guest left them."""
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        # The guest runs on through the kill and the restart (its --run-ms),
        # writing pages the first router placed.
        m = Migration(net, tmp, "minor", target_run_ms=9000)
        vm = m.start_source_vm()
        m.start_source()
        before = cold_pages(vm, 0, 2)
        m.inject(before)
        m.start_target(reconnect=True)
        m.src_out.wait_for(lambda o: o.get("event") == "precopy_done", 60, "precopy done")
        m.switchover()
        m.wait_router(lambda o: o.get("continues", 0) > 3000, 60, "guest pages placed")
        m.kill_router()
        time.sleep(0.5)
        m.restart_router()
        res = m.result()
        assert res["router"]["finished"] is True, res["router"]
        assert res["tv"]["handovers"] == 2, res["tv"]
        assert res["router"]["journal_loaded"] >= len(before), res["router"]
        check_pages(res)
        assert res["router"]["kept_guest"] > 0, \
            f"the new router met no page its predecessor placed: the test proves nothing: {res['router']}"


def test_source_killed_and_restarted():
    """kill -9 of `faultline source` after the switchover; a new one (same
    --session) serves the stopped VM; the router reconnects and finishes."""
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        m = Migration(net, tmp, "minor", on_command=False)
        vm = m.start_source_vm()
        m.start_source()
        m.inject(cold_pages(vm, 0, 2))
        m.start_target()
        m.switchover()
        m.wait_router(lambda o: o.get("pages_received", 0) > 1500, 60, "pages flowing")
        m.kill_source()
        m.start_source()
        reconnected(m)
        res = m.result()
        assert res["router"]["finished"] is True, res["router"]
        check_pages(res)


def test_stale_journal_reused():
    """The journal of a finished migration reused for the next migration of
    a VM of the same shape: refused before anything is poisoned; the
    migration then completes with a fresh journal and only its own poison."""
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        stale = os.path.join(tmp, "stale.journal")
        os.mkdir(os.path.join(tmp, "a"))
        a = Migration(net, os.path.join(tmp, "a"), "missing", mem_mib=16, write_percent=0, journal=stale, max_bandwidth=0,
                      on_command=False)
        vm = a.start_source_vm()
        a.start_source()
        a_poison = cold_pages(vm, 0, 3, skip=10)
        a.inject(a_poison)
        a.start_target()
        ra = a.result()
        assert ra["router"]["finished"] is True and ra["router"]["poisons"] >= 3, ra["router"]
        a.src.kill()
        a.src_vm.kill()
        a.src.wait()
        a.src_vm.wait()

        os.mkdir(os.path.join(tmp, "b"))
        b = Migration(net, os.path.join(tmp, "b"), "missing", mem_mib=16, write_percent=20,
                      journal=stale, max_bandwidth=0)
        vm = b.start_source_vm()
        b.start_source()
        b_poison = cold_pages(vm, 1, 2, skip=10)
        b.inject(b_poison)
        b.start_target(reconnect=True)
        first = b.tgt_out
        summary = first.wait_for(lambda o: o.get("event") == "router_summary", 60, "router summary")
        first_proc = b.tgt
        assert not summary.get("finished"), f"router used a stale journal: {summary}"
        assert summary["poisons"] == 0, f"stale journal poisoned {summary['poisons']} pages: {summary}"
        # (it waits for the VMM it launched, which waits for the next router)
        # A fresh journal: the migration completes with B's poison only.
        b.journal = os.path.join(tmp, "b", "fresh.journal")
        b.restart_router()
        b.switchover()
        rb = b.result()
        assert rb["router"]["finished"] is True, rb["router"]
        bad = classify_pages(rb)
        assert not bad["poisoned_healthy"], \
            f"stale journal poisoned healthy pages {bad['poisoned_healthy']} (A's were {a_poison})"
        check_pages(rb)
        assert sorted(rb["tv"]["sigbus_pages"]) == sorted(b_poison), rb["tv"]["sigbus_pages"]
        assert first_proc.wait(timeout=60) != 0, "the router that refused the journal exited 0"


class DupProxy:
    """A TCP proxy on the target host between router and source that sends
    every PageData frame a second time, `delay` s later (a late duplicate:
    by then the guest has the page and may have written it)."""

    def __init__(self, net, listen_port, delay=0.3):
        self.net, self.port, self.delay = net, listen_port, delay
        code = PROXY_CODE.format(listen=net.tgt_ip, port=listen_port, src=net.src_ip,
                                 src_port=PORT, delay=delay)
        self.proc = net.popen("tgt", [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("listening"), f"proxy: {line}"

    def stats(self):
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return out


PROXY_CODE = r'''
import select, socket, struct, sys, time, threading
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("{listen}", {port})); ls.listen(4)
print("listening", flush=True)
dups = [0]
import signal
signal.signal(signal.SIGTERM, lambda *a: (print("duplicated", dups[0], flush=True), sys.exit(0)))
def serve(c):
    s = socket.create_connection(("{src}", {src_port}))
    buf = b""; later = []
    c.setblocking(False); s.setblocking(False)
    out_c = b""; out_s = b""
    while True:
        now = time.monotonic()
        while later and later[0][0] <= now:
            out_c += later.pop(0)[1]; dups[0] += 1
        r, w, _ = select.select([c, s], ([c] if out_c else []) + ([s] if out_s else []), [], 0.02)
        try:
            if c in r:
                d = c.recv(1 << 16)
                if not d: break
                out_s += d
            if s in r:
                d = s.recv(1 << 16)
                if not d: break
                buf += d
                while len(buf) >= 4:
                    n = struct.unpack(">I", buf[:4])[0]
                    if len(buf) < 4 + n: break
                    fr, buf = buf[:4 + n], buf[4 + n:]
                    out_c += fr
                    if n and fr[4] == 0x2a:   # Frame.page_data (field 5, bytes)
                        later.append((time.monotonic() + {delay}, fr))
            if c in w and out_c:
                k = c.send(out_c); out_c = out_c[k:]
            if s in w and out_s:
                k = s.send(out_s); out_s = out_s[k:]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            break
    c.close(); s.close()
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'''


def test_duplicate_page_data_minor():
    """Every PageData arrives twice, the copy 0.3 s late (a background push
    crossing a fault's answer, a retransmitted batch): the late copy must
    not replace what the guest wrote meanwhile."""
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        # plaintext (--insecure): the proxy must see the frames to copy them
        m = Migration(net, tmp, "minor", tls="insecure")
        proxy = DupProxy(net, PORT + 1)
        m.router_args = []
        vm = m.start_source_vm()
        m.start_source()
        m.inject(cold_pages(vm, 0, 2))
        m.start_target(extra_router=["--source", f"{net.tgt_ip}:{PORT + 1}"])
        m.src_out.wait_for(lambda o: o.get("event") == "precopy_done", 60, "precopy done")
        m.switchover()
        res = m.result()
        out = proxy.stats()
        assert res["router"]["finished"] is True, res["router"]
        assert "duplicated" in out and int(out.split()[-1]) > 100, f"proxy: {out}"
        check_pages(res)


def test_pages_zeroed_after_precopy_minor():
    """Pages the source guest zeroes after their precopy (before the
    switchover) must read zero on the target, touched by its guest or not
    (the stale precopied copy stays in the page cache otherwise)."""
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        m = Migration(net, tmp, "minor", mem_mib=32)
        s0 = layout(m)[0]
        zero_first = s0["first"] + s0["hot"] + 50
        # 4 s after the source VM starts: precopy (2 s for 32 MiB at 16
        # MiB/s) has sent these low pages long before.
        m.start_source_vm(extra=["--zero-at", f"4000:{zero_first}:128"])
        m.start_source()
        m.start_target()
        m.src_out.wait_for(lambda o: o.get("event") == "precopy_done", 60, "precopy done")
        z = m.src_vm_out.wait_for(lambda o: o.get("event") == "zeroed", 30, "source zeroed pages")
        m.switchover()
        res = m.result()
        assert res["router"]["finished"] is True, res["router"]
        zeroed = range(z["first"], z["first"] + z["count"])
        assert all(res["source_pages"][i] == bytes(4096) for i in zeroed), "source pages not zero"
        check_pages(res)
        assert res["router"]["stale_dropped"] >= 1 or res["router"]["continues"] > 0, res["router"]


def test_discard_during_postcopy_missing():
    """A balloon discards guest pages during postcopy (MADV_DONTNEED ->
    UFFD_EVENT_REMOVE) while the source pushes: background pushes that meet
    EAGAIN must be asked again, and no thread may stay in the event wait."""
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        m = Migration(net, tmp, "missing")
        vm = m.start_source_vm()
        s2 = vm["slices"][1]
        first = s2["first"] + 10
        # a balloon giving pages back in bursts while the source pushes
        spans = [(first + k * 512, 256, 150 + k * 60) for k in range(12)]
        # The guest reads only the first half of its slice: the rest (and
        # what a dropped push would lose) reaches it only by the push.
        m.vm_args = ["--touch-fraction", "0.5"] + \
            [a for f, n, t in spans for a in ("--discard", f"{f}:{n}@{t}")]
        m.start_source()
        m.start_target()
        wait_connected(m)
        m.switchover()
        res = m.result()
        assert res["router"]["finished"] is True, res["router"]
        assert res["tv"]["discarded"] == [[f, n] for f, n, _ in spans], res["tv"]["discarded"]
        discarded = [p for f, n, _ in spans for p in range(f, f + n)]
        check_pages(res, discarded=discarded)


if __name__ == "__main__":
    if shutil.which("ss") is None:
        print("# ss (iproute2) missing", flush=True)
    tap.main([test_cut_during_push_minor, test_cut_during_precopy_minor,
              test_cut_during_precopy_minor_hash, test_cut_at_switchover_minor,
              test_cut_at_finish_minor, test_cut_during_push_missing,
              test_router_killed_and_restarted_minor, test_stale_journal_reused,
              test_duplicate_page_data_minor, test_pages_zeroed_after_precopy_minor,
              test_discard_during_postcopy_missing, test_source_killed_and_restarted])
