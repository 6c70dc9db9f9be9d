#!/usr/bin/env python3
"""End-to-end tests of `faultline stuck` against real stuck states built by
build/stuck-scenarios: one-shot from /proc alone, and with the exporter
daemon's history (its Unix socket).

The reference is always the scenario's own READY line: its pid, the waiter's
thread id and address, the uffd fd, the handler process and thread, the
waiter's CLOCK_MONOTONIC right before its access, when the handler's read()
returned, when munmap returned and when the failing COPY ran, and the fdinfo
counters it checked itself.
"""
import atexit
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

from tap import BUILD, FAULTLINE, Skip, jsonl, main, require_kvm, require_root

SCENARIOS = os.path.join(BUILD, "stuck-scenarios")
KVM_GUEST = os.path.join(BUILD, "kvm-guest")
MS = 1_000_000


class Scenario:
    """Runs one scenario until its READY line; on exit releases it and checks it ended cleanly."""

    def __init__(self, name, *extra, delay_ms=0):
        self.name = name
        self.extra = list(extra)
        if delay_ms:
            self.extra += ["--start-delay-ms", str(delay_ms)]

    def __enter__(self):
        self.p = subprocess.Popen([SCENARIOS, "--scenario", self.name, "--hold-ms", "60000",
                                   *self.extra],
                                  stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        deadline = time.monotonic() + 20
        line = ""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.p.stderr], [], [], 0.5)
            if r:
                line = self.p.stderr.readline()
                if line.startswith("READY "):
                    break
                if not line and self.p.poll() is not None:
                    break
        if not line.startswith("READY "):
            self.p.kill()
            rest = self.p.stderr.read()
            raise AssertionError(f"scenario {self.name}: no READY line: {line}{rest}")
        self.ready = dict(kv.split("=", 1) for kv in line.split()[1:])
        self.pid = int(self.ready["pid"])
        self.tid = int(self.ready["waiter_tid"])
        self.addr = int(self.ready["addr"], 16)
        self.uffd_fd = int(self.ready["uffd_fd"])
        self.handler_pid = int(self.ready["handler_pid"])
        self.killed_handler_pid = int(self.ready["killed_handler_pid"])
        self.blocked_since_ns = int(self.ready["blocked_since_ns"])
        self.handler_tid = int(self.ready["handler_tid"])
        self.read_ns = int(self.ready["read_ns"])
        self.unmap_ns = int(self.ready["unmap_ns"])
        self.copy_enter_ns = int(self.ready["copy_enter_ns"])
        self.copy_exit_ns = int(self.ready["copy_exit_ns"])
        self.copy_errno = int(self.ready["copy_errno"])
        return self

    def __exit__(self, *exc):
        # SIGTERM makes it release every waiter (ZEROPAGE / WAKE) and exit 0
        self.p.send_signal(signal.SIGTERM)
        try:
            rest = self.p.communicate(timeout=15)[1]
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.communicate()
            raise AssertionError(f"scenario {self.name} hung on release")
        if exc[0] is None:
            assert self.p.returncode == 0, f"scenario {self.name} exited {self.p.returncode}: {rest}"
            assert "RELEASED" in rest, rest
        return False

    def wait_age(self, ns):
        """Sleeps until the waiter has been blocked for at least ns."""
        left = self.blocked_since_ns + ns - time.monotonic_ns()
        if left > 0:
            time.sleep(left / 1e9)


def stuck(*args, timeout=60):
    p = subprocess.run([FAULTLINE, "stuck", *args], capture_output=True, text=True,
                       timeout=timeout)
    return p


def stuck_json(*args, history=None):
    """One-shot (--no-history) unless history names the daemon's socket."""
    before = time.monotonic_ns()
    p = stuck("--json", *args, *(["--history-socket", history] if history else ["--no-history"]))
    after = time.monotonic_ns()
    assert p.returncode == 0, f"faultline stuck exited {p.returncode}: {p.stderr}"
    objs = jsonl(p.stdout)
    assert objs and objs[-1]["event"] == "summary", p.stdout
    assert all("event" in o for o in objs)
    return [o for o in objs if o["event"] == "stuck"], objs[-1], before, after


def one_for(sc, *args, history=None):
    """The single stuck object faultline reports for the scenario's process."""
    mine, summ, before, after = stuck_json("-p", str(sc.pid), *args, history=history)
    assert len(mine) == 1, f"expected one stuck thread of {sc.pid}: {mine}"
    o = mine[0]
    assert o["pid"] == sc.pid and o["tid"] == sc.tid, o
    assert o["thread"] == "stuck-waiter", o
    assert summ["stuck"] == 1 and summ["by_verdict"][o["verdict"]] == 1, summ
    check_common(o, sc, before, after, history=history is not None)
    return o, summ


def check_common(o, sc, before, after, history=False):
    # a user page fault; the address is not in /proc: from the history, or never guessed
    assert o["fault_path"] == "user", o
    assert o["syscall"] is None and o["pc"].startswith("0x"), o
    if not history:
        assert o["addr"] is None and o["history"] is None, o
    assert o["found_by"] in ("wchan", "stack")
    # waited: from the scheduler's clock; a few ms of clock jitter, never before the access
    ref = sc.blocked_since_ns
    since = o["blocked_since_ns"]
    tol = 50 * MS + 0.05 * (after - ref)
    assert ref - 20 * MS <= since <= ref + tol, \
        f"blocked since {since}, the waiter's own clock says {ref} (diff {(since - ref) / 1e6:.1f} ms)"
    assert before - ref - tol <= o["waited_ns"] <= after - ref + 20 * MS, \
        f"waited {o['waited_ns']} ns, the waiter's own clock says {before - ref}..{after - ref}"
    assert o["evidence"] and all(isinstance(e, str) and e for e in o["evidence"])
    assert o["unstick"]


def holders_of(o):
    return {h["pid"]: h for h in o["uffd"]["holders"]}


def check_range(o, sc):
    assert o["ranges_total"] == 1, o["ranges"]
    r = o["ranges"][0]
    assert int(r["start"], 16) <= sc.addr < int(r["end"], 16) and r["mode"] == "missing", r
    assert r["page_size"] == os.sysconf("SC_PAGESIZE"), r


def test_not_read():
    require_root()
    with Scenario("not_read") as sc:
        sc.wait_age(300 * MS)
        o, _ = one_for(sc, "--min-age", "200ms")
        assert o["verdict"] == "not_read", o
        assert o["uffd_attribution"] == "held"
        u = o["uffd"]
        assert (u["pending"], u["total"]) == (1, 1), u
        h = holders_of(o)
        # the VMM-side process and the handler process that never reads
        assert set(h) == {sc.pid, sc.handler_pid}, h
        assert sc.uffd_fd in h[sc.pid]["fds"]
        assert h[sc.handler_pid]["comm"] == "stuck-handler"
        assert not any(x["reading"] for x in h.values()), h
        check_range(o, sc)
        ev = " | ".join(o["evidence"])
        assert "pending 1" in ev and "never read" in ev, ev
        assert f"pid {sc.handler_pid} (stuck-handler" in ev and "in pause" in ev, ev
        # a live handler process that does not read: stalled or gone needs the history
        assert f"{sc.handler_pid} stuck-handler S " in ev, ev
        assert "handler_stalled" in o["needs_history"], o


def test_not_read_handed_off_uffd():
    """The faulting process gave its only uffd to the handler (CRIU lazy-pages style)."""
    require_root()
    with Scenario("not_read", "--handoff") as sc:
        sc.wait_age(300 * MS)
        o, _ = one_for(sc, "--min-age", "200ms")
        assert o["verdict"] == "not_read", o
        # found by elimination: the only uffd with waiters that no blocked process holds
        assert o["uffd_attribution"] == "inferred", o
        assert set(holders_of(o)) == {sc.handler_pid}, o["uffd"]
        assert (o["uffd"]["pending"], o["uffd"]["total"]) == (1, 1)
        ev = " | ".join(o["evidence"])
        assert f"pid {sc.pid} holds no userfaultfd" in ev, ev
        check_range(o, sc)


def test_not_resolved():
    require_root()
    with Scenario("not_resolved") as sc:
        sc.wait_age(300 * MS)
        o, _ = one_for(sc, "--min-age", "200ms")
        assert o["verdict"] == "not_resolved", o
        u = o["uffd"]
        assert (u["pending"], u["total"]) == (0, 1), u
        h = holders_of(o)
        assert set(h) == {sc.pid}, h
        # the handler thread is back in poll on the uffd: alive, read it, never resolved it
        assert h[sc.pid]["reading"] and h[sc.pid]["readers"], h
        assert sc.tid not in h[sc.pid]["readers"]
        check_range(o, sc)
        ev = " | ".join(o["evidence"])
        assert "pending 0" in ev and "never resolved" in ev and "in poll" in ev, ev
        # a failed placement looks the same from /proc: said, not guessed
        assert "placement_failed" in o["needs_history"], o


def test_handler_wait_kinds_recognised():
    """A handler waiting on the uffd in ppoll, select, epoll or a blocking read is a reader."""
    require_root()
    names = {"ppoll": {"ppoll"}, "select": {"select", "pselect6"},
             "epoll": {"epoll_wait", "epoll_pwait", "epoll_pwait2"}, "read": {"read"}}
    for kind, calls in names.items():
        with Scenario("not_resolved", "--handler-wait", kind) as sc:
            sc.wait_age(150 * MS)
            o, _ = one_for(sc, "--min-age", "100ms")
            assert o["verdict"] == "not_resolved", (kind, o)
            h = holders_of(o)[sc.pid]
            assert h["reading"] and len(h["readers"]) == 1 and sc.tid not in h["readers"], (kind, h)
            how = [e for e in o["evidence"] if f"thread {h['readers'][0]} waits on it in " in e]
            assert how and how[0].rsplit(" ", 1)[-1] in calls, (kind, o["evidence"])


def test_munmap_failed_copy_is_range_unmapped():
    require_root()
    with Scenario("munmap_failed_copy") as sc:
        sc.wait_age(300 * MS)
        o, _ = one_for(sc, "--min-age", "200ms")
        assert o["verdict"] == "range_unmapped", o
        assert o["ranges"] == [] and o["ranges_total"] == 0, o
        u = o["uffd"]
        assert (u["pending"], u["total"]) == (0, 1), u
        ev = " | ".join(o["evidence"])
        assert "no userfaultfd-registered range left" in ev, ev
        assert "ENOENT" in ev and "UFFDIO_WAKE" in ev, ev
        # the scenario's uffd has no UNMAP/REMAP/REMOVE events: said so
        assert "EVENT_UNMAP" in ev, ev
        # the failed COPY itself is history: named as such
        assert "placement_failed" in o["needs_history"], o
        assert "UFFDIO_WAKE" in o["unstick"]


def test_handler_gone():
    """The handler process was killed; the waiter's process lives on (its main
    thread waits for a signal). One-shot cannot tell that main thread from a
    stalled handler: not_read, saying so, with both remedies."""
    require_root()
    with Scenario("handler_gone") as sc:
        assert sc.killed_handler_pid > 0
        assert not os.path.exists(f"/proc/{sc.killed_handler_pid}"), "handler not reaped"
        sc.wait_age(300 * MS)
        o, _ = one_for(sc, "--min-age", "200ms")
        assert o["verdict"] == "not_read", o
        u = o["uffd"]
        assert (u["pending"], u["total"]) == (1, 1), u
        h = holders_of(o)
        assert set(h) == {sc.pid}, h
        assert not h[sc.pid]["reading"] and h[sc.pid]["maybe_reading"] == 0, h
        check_range(o, sc)
        ev = " | ".join(o["evidence"])
        assert "look the same from /proc" in ev and "pending 1" in ev, ev
        # every thread of the holder, by /proc's own account
        for tid in os.listdir(f"/proc/{sc.pid}/task"):
            with open(f"/proc/{sc.pid}/task/{tid}/comm") as f:
                assert f"{tid} {f.read().strip()} " in ev, (tid, ev)
        assert "handler_gone" in o["needs_history"], o
        assert "new handler" in o["unstick"] and "second handler" in o["unstick"], o


def stalled_scenario_thread(sc):
    """The scenario's handler thread as /proc shows it: (name, state, wchan)."""
    base = f"/proc/{sc.pid}/task/{sc.handler_tid}"
    with open(f"{base}/comm") as f:
        name = f.read().strip()
    with open(f"{base}/stat") as f:
        state = f.read().rsplit(")", 1)[1].split()[0]
    with open(f"{base}/wchan") as f:
        wchan = f.read().strip()
    return name, state, wchan


def test_handler_stalled_one_shot():
    """A live handler thread (named like QEMU's postcopy fault thread) that
    stopped reading, before or after taking the message: not handler_gone;
    the evidence names it with its state and wait channel."""
    require_root()
    for name, verdict, counts in (("handler_stalled_unread", "not_read", (1, 1)),
                                  ("handler_stalled_read", "not_resolved", (0, 1))):
        with Scenario(name) as sc:
            sc.wait_age(300 * MS)
            o, _ = one_for(sc, "--min-age", "200ms")
            assert o["verdict"] == verdict, (name, o)
            assert (o["uffd"]["pending"], o["uffd"]["total"]) == counts, o["uffd"]
            tname, state, wchan = stalled_scenario_thread(sc)
            assert tname == "postcopy/fault" and state == "S", (tname, state)
            ev = " | ".join(o["evidence"])
            assert f"{sc.handler_tid} postcopy/fault S {wchan}" in ev, ev
            assert "look the same from /proc" in ev, ev
            assert "migrate-recover" in o["unstick"], o


def test_kvm_vcpu_stuck_in_gup():
    """A vCPU blocked in KVM_RUN on a fault its VMM's handler holds: found, path kvm."""
    require_root()
    require_kvm()
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl") as out:
        vm = subprocess.Popen([KVM_GUEST, "--vcpus", "1", "--pages", "1", "--mem-mb", "1",
                               "--delay-us", "2500000", "--out", out.name],
                              stderr=subprocess.PIPE, text=True)
        line = vm.stderr.readline()
        assert line.startswith("READY"), line
        ready = dict(kv.split("=", 1) for kv in line.split()[1:])
        pid, vcpu = int(ready["pid"]), int(ready["vcpu_tids"])
        time.sleep(1.2)
        try:
            mine, summ, before, after = stuck_json("-p", str(pid), "--min-age", "500ms")
        finally:
            vm.communicate(timeout=30)
        # (kvm-guest's own exit status is not checked: its end-of-run page check can
        # race the handler's bookkeeping after a long --delay-us; its fault record is
        # the reference here)
        ref = [r for r in jsonl(out.read()) if r["event"] == "kvm_fault"]
    assert [o["tid"] for o in mine] == [vcpu], mine
    o = mine[0]
    # the VMM's handler read the fault and sits in ppoll on the uffd while it "fetches"
    assert o["verdict"] == "not_resolved", o
    assert o["fault_path"] == "kvm" and o["syscall"] == "ioctl", o
    assert holders_of(o)[pid]["reading"], o
    assert len(ref) == 1 and ref[0]["tid"] == vcpu and ref[0]["resolved_by"] == "copy", ref
    since, want = o["blocked_since_ns"], ref[0]["fault_ns"]
    assert want - 20 * MS <= since <= want + 50 * MS + 0.05 * (after - want), \
        f"blocked since {since}, the VMM saw the fault at {want}"


def test_healthy_reports_nothing():
    require_root()
    with Scenario("healthy") as sc:
        for _ in range(3):
            mine, summ, _, _ = stuck_json("-p", str(sc.pid))
            assert mine == [], mine
            assert summ["stuck"] == 0 and summ["threads_scanned"] >= 3, summ
            time.sleep(0.4)
        # the whole system, default --min-age: the healthy process is not in it
        mine, summ, _, _ = stuck_json()
        assert sc.pid not in {o["pid"] for o in mine}, mine
        assert summ["uffds"] >= 1
        # human form says so in words
        p = stuck("-p", str(sc.pid))
        assert p.returncode == 0 and "No thread stuck in a userfault" in p.stdout, p.stdout
        # and it was really faulting all along (the scenario counts its own faults)
        assert sc.p.poll() is None


def test_min_age_filters():
    require_root()
    with Scenario("not_read") as sc:
        sc.wait_age(400 * MS)
        mine, summ, _, _ = stuck_json("-p", str(sc.pid), "--min-age", "1m")
        assert mine == [], mine
        assert summ["blocked"] == 1 and summ["below_min_age"] == 1, summ
        assert summ["min_age_ns"] == 60_000 * MS
        mine, summ, _, _ = stuck_json("-p", str(sc.pid), "--min-age", "0.1s")
        assert [o["tid"] for o in mine] == [sc.tid] and summ["below_min_age"] == 0, mine
        # the waiter's own thread id works for -p too
        mine, _, _, _ = stuck_json("-p", str(sc.tid), "--min-age", "100ms")
        assert [o["tid"] for o in mine] == [sc.tid], mine
        # human table: one row for the waiter with its verdict, evidence lines under it
        p = stuck("-p", str(sc.pid), "--min-age", "100ms")
        assert p.returncode == 0, p.stderr
        rows = [l for l in p.stdout.splitlines() if l.split()[:2] == [str(sc.pid), str(sc.tid)]]
        assert len(rows) == 1 and "not_read" in rows[0], p.stdout
        assert "never read it" in p.stdout and "1 thread(s) stuck" in p.stdout, p.stdout


def unused_pid():
    with open("/proc/sys/kernel/pid_max") as f:
        top = int(f.read())
    for pid in range(top - 1, 1, -1):
        if not os.path.exists(f"/proc/{pid}"):
            return pid
    raise Skip("no unused pid")


def test_bad_input():
    pid = unused_pid()
    p = stuck("-p", str(pid))
    assert p.returncode != 0 and p.stdout == "", p
    assert f"no process with PID {pid}" in p.stderr, p.stderr
    for bad in ("abc", "0", "-5", "12x", ""):
        p = stuck("-p", bad)
        assert p.returncode != 0 and "invalid PID" in p.stderr, (bad, p.stderr)
    for bad in ("", "5", "5x", "-1s", "+1s", "1.5.2s", "ms", "1e3ms", " 1s", "1s ", "0x10s",
                "1.s", ".5s", "inf", "nan", "1 s", "2sec", "1S"):
        p = stuck("-p", str(os.getpid()), "--min-age", bad)
        assert p.returncode != 0, (bad, p.stdout)
        assert "--min-age" in p.stderr and "500ms" in p.stderr, (bad, p.stderr)
        assert "Traceback" not in p.stderr and p.stdout == ""
    p = stuck("--min-age", "99999999999h")
    assert p.returncode != 0 and "too long" in p.stderr, p.stderr
    p = stuck("1234")
    assert p.returncode != 0 and "unexpected argument" in p.stderr, p.stderr
    # every accepted form, on a process that is not stuck (ourselves)
    for good in ("0", "500ms", "2s", "1.5m", "250us", "10ns", "1h"):
        p = stuck("-p", str(os.getpid()), "--min-age", good, "--json")
        assert p.returncode == 0, (good, p.stderr)
        assert jsonl(p.stdout)[-1]["event"] == "summary"
    if os.geteuid() == 0:
        # a process we may not inspect is an error, not "nothing stuck"
        # setpriv, not a setuid preexec: the checkout may sit in a 0700 directory
        p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            FAULTLINE, "stuck", "-p", "1"], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode != 0 and "run as root" in p.stderr and p.stdout == "", p
    p = stuck("--help")
    assert p.returncode == 0 and "EXAMPLES" in p.stdout and "--min-age" in p.stdout


# ---- with the daemon's history ---------------------------------------------------

# Long enough for the daemon's /proc scan (every 250 ms) to track a new
# scenario before its first fault.
DELAY_MS = 1000
_daemon = None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    """`faultline exporter` serving history on a private socket, up once it prints Tracing.

    Traced by name (-c stuck-scenarios): the scenarios' records are then all the
    ring buffer carries, whatever else this machine runs.  An idle process of that
    name holding a userfaultfd keeps the syscall probes attached between scenarios
    (with nothing tracked the daemon detaches them, and re-attaching takes time).
    """

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fl-stuck-")
        self.sock = os.path.join(self.dir, "history.sock")
        self.anchor = subprocess.Popen(
            ["python3", "-c",
             "import ctypes, sys, time\n"
             "libc = ctypes.CDLL(None, use_errno=True)\n"
             "libc.prctl(15, b'stuck-scenarios', 0, 0, 0)\n"
             "fd = libc.syscall(323, 0o2000000)\n"
             "print(fd, flush=True)\n"
             "time.sleep(900)\n"], stdout=subprocess.PIPE, text=True)
        assert int(self.anchor.stdout.readline()) >= 0, "userfaultfd() for the anchor failed"
        self.addr = f"127.0.0.1:{free_port()}"
        self.p = subprocess.Popen([FAULTLINE, "exporter", "--listen", self.addr,
                                   "--history-socket", self.sock, "-c", "stuck-scenarios"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines = []
        up = threading.Event()

        def read():
            for line in self.p.stderr:
                self.lines.append(line)
                if line.startswith("Tracing"):
                    up.set()
            up.set()
        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not up.wait(30) or self.p.poll() is not None:
            self.stop(check=False)
            raise AssertionError(f"exporter did not start: {''.join(self.lines)}")
        assert f"Serving fault history on {self.sock}\n" in self.lines, self.lines
        # the anchor tracked and the syscall probes attached (scan every 250 ms)
        time.sleep(1.5)

    def stop(self, check=True):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=20)
        finally:
            self.anchor.kill()
            self.anchor.wait()
        self.reader.join(timeout=5)
        if check:
            assert rc == 0, f"exporter exited {rc}: {''.join(self.lines)[-2000:]}"
            # its socket goes with it
            assert not os.path.exists(self.sock), os.listdir(self.dir)
        if not os.path.exists(self.sock):
            os.rmdir(self.dir)


def _stop_leftover_daemon():
    """A run cut short (an error outside the tests) leaves no exporter behind."""
    if _daemon is not None:
        for p in (_daemon.p, _daemon.anchor):
            if p.poll() is None:
                p.kill()
                p.wait()


def daemon():
    global _daemon
    require_root()
    if _daemon is None:
        _daemon = Daemon()
        atexit.register(_stop_leftover_daemon)
    if _daemon.p.poll() is not None:
        raise AssertionError(f"the exporter died: {''.join(_daemon.lines)[-2000:]}")
    return _daemon


def with_history(sc, d, verdict):
    """The scenario's waiter with the daemon's history; checks what every verdict shares."""
    sc.wait_age(300 * MS)
    o, summ = one_for(sc, "--min-age", "200ms", history=d.sock)
    assert summ["history"] == "daemon" and summ["one_shot"] is False, summ
    assert summ["history_socket"] == d.sock and summ["history_error"] is None, summ
    assert summ["needs_history"] is None and summ["history_since_ns"] > 0, summ
    assert o["verdict"] == verdict, (verdict, o)
    h = o["history"]
    assert h and h["matched"], o
    assert h["state"] == "blocked" and h["user_pf"], h
    # the address the waiter faulted on, and when (the scenario's own clock)
    assert o["addr"] == hex(sc.addr), (o["addr"], hex(sc.addr))
    assert sc.blocked_since_ns <= h["fault_ns"] <= h["block_ns"] <= sc.blocked_since_ns + 50 * MS, \
        (h, sc.blocked_since_ns)
    assert o["needs_history"] is None, o
    ev = " | ".join(o["evidence"])
    assert f"faulted on {hex(sc.addr)}" in ev, ev
    return o, h, ev


def check_read(h, sc):
    """The daemon saw the handler thread's read(), before the scenario saw it return."""
    assert sc.read_ns > 0
    assert h["read_ns"] is not None, h
    assert sc.blocked_since_ns <= h["read_ns"] <= sc.read_ns, (h["read_ns"], sc.read_ns)
    assert h["read_tid"] == sc.handler_tid and h["read_pid"] == sc.pid, h
    assert h["read_fd"] == sc.uffd_fd, h


def check_munmap(h, sc):
    maps = [m for m in h["mapping_changes"] if m["op"] == "munmap"]
    assert len(maps) == 1, h["mapping_changes"]
    m = maps[0]
    # the scenario munmaps its 4-page region from its main thread, page 1 is the waiter's
    assert int(m["addr"], 16) == sc.addr - 4096 and m["len"] == 4 * 4096, m
    assert m["pid"] == sc.pid and m["tid"] == sc.pid, m
    assert sc.read_ns <= m["ns"] <= sc.unmap_ns, (m, sc.read_ns, sc.unmap_ns)


def test_history_not_read():
    d = daemon()
    with Scenario("not_read", delay_ms=DELAY_MS) as sc:
        o, h, ev = with_history(sc, d, "not_read")
        assert h["read_ns"] is None and h["read_tid"] is None, h
        assert h["ioctls"] == [] and not h["placement_failed"], h
        assert "saw no read of its message" in ev and "never read it" in ev, ev
        assert (o["uffd"]["pending"], o["uffd"]["total"]) == (1, 1), o["uffd"]


def test_history_not_resolved():
    d = daemon()
    with Scenario("not_resolved", delay_ms=DELAY_MS) as sc:
        o, h, ev = with_history(sc, d, "not_resolved")
        check_read(h, sc)
        assert h["ioctls"] == [] and h["failed_ioctl"] is None, h
        assert f"by thread {sc.handler_tid} of pid {sc.pid}" in ev, ev
        assert f"no userfaultfd ioctl touched page {hex(sc.addr)}" in ev, ev
        assert "still in a registered range" in ev, ev


def test_history_placement_failed():
    """munmap under a reading handler, then its COPY fails with ENOENT and no WAKE follows."""
    d = daemon()
    with Scenario("munmap_failed_copy", delay_ms=DELAY_MS) as sc:
        assert sc.copy_errno == 2  # ENOENT, as the scenario checked
        o, h, ev = with_history(sc, d, "placement_failed")
        check_read(h, sc)
        check_munmap(h, sc)
        assert h["placement_failed"], h
        f = h["failed_ioctl"]
        assert f["op"] == "COPY" and f["errno"] == "ENOENT" and f["ret"] == -2, f
        assert int(f["start"], 16) == sc.addr and f["len"] == 4096, f
        assert f["pid"] == sc.pid and f["tid"] == sc.handler_tid, f
        assert sc.copy_enter_ns <= f["enter_ns"] <= f["ns"] <= sc.copy_exit_ns, \
            (f, sc.copy_enter_ns, sc.copy_exit_ns)
        assert [i["op"] for i in h["ioctls"]] == ["COPY"], h["ioctls"]
        assert "failed with ENOENT" in ev and "no UFFDIO_WAKE" in ev, ev
        assert "munmap of" in ev, ev
        # the /proc facts are still there
        assert o["ranges"] == [] and "no userfaultfd-registered range left" in ev, ev
        assert "UFFDIO_WAKE" in o["unstick"], o
        # the human form says where the history came from, and the address
        p = stuck("-p", str(sc.pid), "--min-age", "200ms", "--history-socket", d.sock)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith(f"history: daemon at {d.sock}\n"), p.stdout
        assert f"at {hex(sc.addr)} (daemon history)" in p.stdout, p.stdout
        assert re.search(rf"^{sc.pid}\s+{sc.tid}\s+stuck-waiter\s+\S+\s+placement_failed",
                         p.stdout, re.M), p.stdout
        # the daemon's own gauge knows it too (its stuck analysis runs every 5 s)
        deadline, seen = time.monotonic() + 12, None
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://{d.addr}/metrics", timeout=10) as r:
                m = re.search(r'^faultline_stuck_waiters\{verdict="placement_failed"\} (\S+)$',
                              r.read().decode(), re.M)
            seen = float(m.group(1)) if m else None
            if seen and seen >= 1:
                break
            time.sleep(0.5)
        assert seen and seen >= 1, f"faultline_stuck_waiters{{verdict=placement_failed}} = {seen}"


def test_history_range_unmapped():
    """munmap under a reading handler that then tries nothing: the range is simply gone."""
    d = daemon()
    with Scenario("range_unmapped", delay_ms=DELAY_MS) as sc:
        o, h, ev = with_history(sc, d, "range_unmapped")
        check_read(h, sc)
        check_munmap(h, sc)
        assert h["ioctls"] == [] and not h["placement_failed"], h
        assert "it took the waiter's page away" in ev, ev
        assert f"no userfaultfd ioctl touched page {hex(sc.addr)}" in ev, ev
        assert o["ranges"] == [], o
    # one-shot it is range_unmapped too, asking for the history it lacks
    with Scenario("range_unmapped") as sc:
        sc.wait_age(300 * MS)
        o, _ = one_for(sc, "--min-age", "200ms")
        assert o["verdict"] == "range_unmapped" and "placement_failed" in o["needs_history"], o


def test_history_handler_gone():
    d = daemon()
    with Scenario("handler_gone", delay_ms=DELAY_MS) as sc:
        o, h, ev = with_history(sc, d, "handler_gone")
        # the killed handler served page 0; the waiter's own message was never read
        assert h["read_ns"] is None and h["ioctls"] == [], h
        last = h["last_uffd_ioctl"]
        assert last and last["op"] == "ZEROPAGE" and last["pid"] == sc.killed_handler_pid, h
        assert int(last["start"], 16) == sc.addr - 4096 and last["errno"] is None, last
        assert f"by pid {sc.killed_handler_pid}" in ev and "no longer holds the uffd" in ev, ev
        # the thread that read the uffd last is the killed process's, and it is gone
        assert f"of pid {sc.killed_handler_pid}, the last to read this userfaultfd" in ev, ev
        assert "is gone" in ev and "no handler is left" in ev, ev
        assert "look the same from /proc" not in ev, ev


def test_history_handler_stalled():
    """With the daemon's history the stalled handler is named: it read the uffd
    last and still lives. handler_stalled, never handler_gone."""
    d = daemon()
    for name in ("handler_stalled_unread", "handler_stalled_read"):
        with Scenario(name, delay_ms=DELAY_MS) as sc:
            o, h, ev = with_history(sc, d, "handler_stalled")
            tname, state, wchan = stalled_scenario_thread(sc)
            assert (f"thread {sc.handler_tid} (postcopy/fault) of pid {sc.pid} read this "
                    "userfaultfd last") in ev, ev
            assert f"still lives (state {state}, waiting in {wchan})" in ev, ev
            if name == "handler_stalled_read":
                check_read(h, sc)
            assert "second handler" in o["unstick"] and "new handler" not in o["unstick"], o
            assert "look the same from /proc" not in ev, ev


def test_history_healthy_reports_nothing():
    d = daemon()
    with Scenario("healthy", delay_ms=DELAY_MS) as sc:
        for _ in range(3):
            mine, summ, _, _ = stuck_json("-p", str(sc.pid), history=d.sock)
            assert mine == [] and summ["stuck"] == 0, mine
            assert summ["history"] == "daemon" and summ["history_error"] is None, summ
            time.sleep(0.3)
        # faults in flight are answered too, and none has waited long
        mine, summ, _, _ = stuck_json("-p", str(sc.pid), "--min-age", "100ms", history=d.sock)
        assert mine == [], mine
        assert sc.p.poll() is None


def test_daemon_not_running_is_clear():
    require_root()
    with tempfile.TemporaryDirectory() as tmp:
        missing = os.path.join(tmp, "none.sock")
        # asked for explicitly: an error naming the socket and what to start, no report
        for args in (["--history-socket", missing], ["--history-socket", missing, "--json"],
                     ["--require-history", "--history-socket", missing]):
            p = stuck("-p", str(os.getpid()), *args)
            assert p.returncode != 0 and p.stdout == "", (args, p)
            assert f"daemon not running at {missing}" in p.stderr, p.stderr
            assert "start `faultline exporter`" in p.stderr, p.stderr
        # a stale socket file nobody listens on
        stale = os.path.join(tmp, "stale.sock")
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(stale)
        p = stuck("-p", str(os.getpid()), "--history-socket", stale)
        assert p.returncode != 0 and "stale socket" in p.stderr and stale in p.stderr, p.stderr
        # not asked for: one-shot, and the output says so (the default socket may be
        # served by an exporter on this machine: then the history is used)
        default = "/run/faultline/history.sock"
        p = stuck("-p", str(os.getpid()), "--json")
        assert p.returncode == 0, p.stderr
        summ = jsonl(p.stdout)[-1]
        assert summ["history_socket"] == default
        if summ["history"] == "none":
            assert summ["one_shot"] is True and "faultline exporter" in summ["history_error"]
            p = stuck("-p", str(os.getpid()))
            assert p.returncode == 0 and p.stdout.startswith("history: none (daemon not running"), \
                p.stdout
            p = stuck("-p", str(os.getpid()), "--require-history")
            assert p.returncode != 0 and default in p.stderr, p.stderr
        # contradictory options
        p = stuck("--no-history", "--require-history")
        assert p.returncode != 0 and "--no-history" in p.stderr, p.stderr
        # the history socket is root-only
        if _daemon is not None:
            p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                FAULTLINE, "stuck", "--history-socket", _daemon.sock],
                               capture_output=True, text=True, timeout=60)
            assert p.returncode != 0 and "run with sudo" in p.stderr, p.stderr


def test_exporter_history_socket_errors():
    d = daemon()
    # in use by the running daemon: refused, naming it; that daemon is untouched
    p = subprocess.run([FAULTLINE, "exporter", "--listen", "127.0.0.1:0", "--history-socket",
                        d.sock], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and f"history socket {d.sock} is in use by pid {d.p.pid}" in p.stderr, \
        p.stderr
    assert "Tracing" not in p.stderr
    assert os.path.exists(d.sock) and d.p.poll() is None
    mine, summ, _, _ = stuck_json("-p", str(os.getpid()), history=d.sock)
    assert summ["history"] == "daemon", summ
    with tempfile.TemporaryDirectory() as tmp:
        f = os.path.join(tmp, "file")
        open(f, "w").close()
        p = subprocess.run([FAULTLINE, "exporter", "--listen", "127.0.0.1:0", "--history-socket",
                            f], capture_output=True, text=True, timeout=30)
        assert p.returncode != 0 and "is not a socket" in p.stderr, p.stderr
        assert os.path.isfile(f)
        p = subprocess.run([FAULTLINE, "exporter", "--listen", "127.0.0.1:0", "--history-socket",
                            os.path.join(tmp, "a", "b", "h.sock")], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode != 0 and "directory" in p.stderr, p.stderr
    p = subprocess.run([FAULTLINE, "exporter", "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "--history-socket" in p.stdout and "history" in p.stdout


def test_stop_daemon():
    """Last: the daemon stops cleanly and removes its socket."""
    global _daemon
    if _daemon is None:
        raise Skip("no daemon was started")
    d, _daemon = _daemon, None
    d.stop()


if __name__ == "__main__":
    main([
        test_not_read,
        test_not_read_handed_off_uffd,
        test_not_resolved,
        test_handler_wait_kinds_recognised,
        test_munmap_failed_copy_is_range_unmapped,
        test_handler_gone, test_handler_stalled_one_shot,
        test_kvm_vcpu_stuck_in_gup,
        test_healthy_reports_nothing,
        test_min_age_filters,
        test_bad_input,
        test_history_not_read,
        test_history_not_resolved,
        test_history_placement_failed,
        test_history_range_unmapped,
        test_history_handler_gone, test_history_handler_stalled,
        test_history_healthy_reports_nothing,
        test_daemon_not_running_is_clear,
        test_exporter_history_socket_errors,
        test_stop_daemon,
    ])
