#!/usr/bin/env python3
"""A real postcopy migration between two qemu-system-x86_64 on loopback, traced by faultline.

Importable (run_migration(), analyse()) and a CLI:

    sudo python3 tests/e2e/qemu_postcopy.py [--assets DIR] [--keep] [--json]

What it does (stdlib only):

1. boots a source QEMU (TCG, 2 vCPUs, 256 MiB) on the guest from
   scripts/qemu-guest-assets.sh (a Debian kernel + a busybox initramfs whose
   init keeps dirtying 32 MiB per vCPU) and waits for the guest's marker on
   the serial console;
2. starts the destination QEMU (-incoming tcp:127.0.0.1:PORT, trace event
   postcopy_ram_fault_thread_request into a file, same machine);
3. sets postcopy-ram and postcopy-blocktime on both sides (QMP on unix
   sockets, a tiny JSON client below);
4. starts `faultline trace --json -p DEST_PID` and waits for its "Tracing";
5. migrates and switches to postcopy right away (migrate-start-postcopy), so
   the destination fetches most of the guest's dirty pages on demand;
6. waits for both sides to report "completed", then ~1 s, then stops
   faultline with SIGINT; collects query-migrate (postcopy-blocktime,
   postcopy-vcpu-blocktime) and query-cpus-fast (vCPU thread ids) from the
   destination, quits both QEMUs and parses QEMU's trace file.

Every child gets PR_SET_PDEATHSIG(SIGKILL), and everything is stopped in a
finally block, so no QEMU outlives the harness -- not even when the harness
itself is killed.
"""
import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FAULTLINE = os.path.join(ROOT, "build", "faultline")
ASSETS_SCRIPT = os.path.join(ROOT, "scripts", "qemu-guest-assets.sh")
QEMU = "qemu-system-x86_64"
TRACE_EVENT = "postcopy_ram_fault_thread_request"
# QEMU's own blocktime accounting, replayed by qemu_blocktime_replay()
BLOCKTIME_EVENTS = ("mark_postcopy_blocktime_begin", "mark_postcopy_blocktime_end")
# with -msg timestamp=on the log backend prefixes "TID@SEC.USEC:" (gettimeofday)
LINE_RE = re.compile(r"^(?:(\d+)@(\d+)\.(\d+):)?([a-z0-9_]+) (.*)$")
# postcopy_ram_fault_thread_request "Request for HVA=0x.. rb=.. offset=0x.. pid=N"
REQ_RE = re.compile(r"Request for HVA=0x([0-9a-fA-F]+) rb=(\S+) offset=0x([0-9a-fA-F]+) "
                    r"pid=(\d+)")


class HarnessError(Exception):
    """The migration could not be set up or did not complete (not a faultline finding)."""


def prepare_assets(cache=None):
    """Run scripts/qemu-guest-assets.sh; return the asset dir. Raises HarnessError with its reason."""
    env = dict(os.environ)
    args = [ASSETS_SCRIPT] + ([cache] if cache else [])
    p = subprocess.run(args, capture_output=True, text=True, env=env, timeout=900)
    if p.returncode != 0:
        raise HarnessError("guest assets: " + (p.stderr.strip().splitlines() or ["failed"])[-1])
    d = p.stdout.strip().splitlines()[-1]
    for f in ("vmlinuz", "initramfs.cpio.gz", "cmdline", "marker"):
        if not os.path.exists(os.path.join(d, f)):
            raise HarnessError(f"guest assets: {d}/{f} missing after {ASSETS_SCRIPT}")
    return d


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pdeathsig():
    # runs in the child between fork and exec: die with the harness
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG


def spawn(args, **kw):
    return subprocess.Popen(args, preexec_fn=_pdeathsig, **kw)


class QMP:
    """Minimal QMP client: one JSON object per line over a unix socket."""

    def __init__(self, path, proc, timeout=30.0):
        self.path = path
        self.events = []
        end = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise HarnessError(f"QEMU exited ({proc.returncode}) before its QMP socket {path}")
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > end:
                    raise HarnessError(f"no QMP socket at {path} after {timeout} s")
                time.sleep(0.05)
        self.sock.settimeout(timeout)
        self.buf = b""
        greeting = self._recv()
        if "QMP" not in greeting:
            raise HarnessError(f"not a QMP greeting: {greeting}")
        # out-of-band commands (migrate-recover) run even while the main
        # thread is blocked: in a paused postcopy it can be asleep in a userfault
        self.oob = "oob" in greeting["QMP"].get("capabilities", [])
        if self.oob:
            self.cmd("qmp_capabilities", enable=["oob"])
        else:
            self.cmd("qmp_capabilities")
        self.next_id = 0

    def cmd_oob(self, name, **arguments):
        """An out-of-band command (QEMU answers from its monitor thread)."""
        if not self.oob:
            return self.cmd(name, **arguments)
        self.next_id += 1
        tag = f"oob-{self.next_id}"
        msg = {"exec-oob": name, "id": tag}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._recv()
            if "event" in r or r.get("id") != tag:
                if "event" in r:
                    self.events.append(r)
                continue
            if "error" in r:
                raise HarnessError(f"QMP {name}: {r['error'].get('desc', r['error'])}")
            return r.get("return")

    def _recv(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise HarnessError(f"QMP {self.path}: connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def cmd(self, name, **arguments):
        msg = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self._recv()
            if "event" in r:
                self.events.append(r)
                continue
            if "error" in r:
                raise HarnessError(f"QMP {name}: {r['error'].get('desc', r['error'])}")
            return r.get("return")

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def wait_for_file_text(path, text, proc, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise HarnessError(f"process {proc.args[0]} exited ({proc.returncode}) "
                               f"while waiting for {text!r} in {path}")
        try:
            with open(path, errors="replace") as f:
                if text in f.read():
                    return
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    raise HarnessError(f"{text!r} not in {path} after {timeout} s")


def stop(proc, qmp=None, sig=signal.SIGTERM, timeout=10):
    """Stop a child: QMP quit if possible, then sig, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    if qmp is not None:
        try:
            qmp.sock.settimeout(3)
            qmp.cmd("quit")
        except Exception:
            pass
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        proc.send_signal(sig)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def parse_trace(path, offset_ns=None):
    """QEMU's trace log: (requests, others).

    requests: the postcopy_ram_fault_thread_request events in file order, each
    {tid (the faulting thread, uffd_msg ptid), hva, ramblock, offset,
    reader_tid (the fault thread), realtime_ns, mono_ns}; others: every other
    event as {event, reader_tid, realtime_ns, mono_ns, text}. mono_ns is the
    log's gettimeofday stamp moved to CLOCK_MONOTONIC with offset_ns
    (realtime - monotonic), None without it.
    """
    reqs, others = [], []
    try:
        f = open(path, errors="replace")
    except FileNotFoundError:
        return reqs, others
    with f:
        for line in f:
            m = LINE_RE.match(line.rstrip("\n"))
            if not m:
                continue
            rt = int(m.group(2)) * 10**9 + int(m.group(3)) * 1000 if m.group(2) else None
            ev = {"reader_tid": int(m.group(1)) if m.group(1) else None, "realtime_ns": rt,
                  "mono_ns": rt - offset_ns if rt is not None and offset_ns is not None
                  else None}
            if m.group(4) == TRACE_EVENT:
                r = REQ_RE.search(m.group(5))
                if not r:
                    continue
                ev.update(hva=int(r.group(1), 16), ramblock=r.group(2),
                          offset=int(r.group(3), 16), tid=int(r.group(4)))
                reqs.append(ev)
            else:
                ev.update(event=m.group(4), text=m.group(5))
                others.append(ev)
    return reqs, others


def realtime_offset_ns():
    """CLOCK_REALTIME - CLOCK_MONOTONIC, from the tightest of a few bracketed samples."""
    best = None
    for _ in range(20):
        a = time.monotonic_ns()
        r = time.time_ns()
        b = time.monotonic_ns()
        if best is None or b - a < best[0]:
            best = (b - a, r - (a + b) // 2)
    return best[1]


def guest_kernel(assets):
    """The decompressed PVH vmlinux when the assets have one (boots faster under TCG)."""
    k = os.path.join(assets, "vmlinux")
    return k if os.path.exists(k) else os.path.join(assets, "vmlinuz")


def qemu_common(name, assets, smp, mem_mib, serial, qmp_path, trace_events=(),
                trace_file=None, hugetlb=False):
    with open(os.path.join(assets, "cmdline")) as f:
        cmdline = f.read().strip()
    # debug-threads=on: vCPU threads are named "CPU N/TCG" (as libvirt runs QEMU)
    args = [QEMU, "-name", f"{name},debug-threads=on",
            "-M", "pc", "-accel", "tcg", "-smp", str(smp), "-m", str(mem_mib),
            "-nodefaults", "-display", "none", "-vga", "none", "-no-reboot",
            "-kernel", guest_kernel(assets),
            "-initrd", os.path.join(assets, "initramfs.cpio.gz"),
            "-append", cmdline,
            "-serial", f"file:{serial}",
            "-qmp", f"unix:{qmp_path},server=on,wait=off",
            "-msg", "timestamp=on"]
    if hugetlb:
        # guest RAM on 2 MiB hugetlbfs pages (no mount needed for a memfd);
        # postcopy then moves and faults whole huge pages
        args += ["-object", f"memory-backend-memfd,id=ram0,size={mem_mib}M,hugetlb=on,"
                 "hugetlbsize=2M,share=on", "-machine", "memory-backend=ram0"]
    for ev in trace_events:
        args += ["-trace", ev]
    if trace_file:
        args += ["-D", trace_file]
    return args


def wait_status(sq, dq, want_src, want_dst, timeout):
    """Polls query-migrate on both sides until each is in its wanted status."""
    end = time.monotonic() + timeout
    while True:
        si, di = sq.cmd("query-migrate"), dq.cmd("query-migrate")
        if si.get("status") in want_src and di.get("status") in want_dst:
            return si, di
        if "failed" in (si.get("status"), di.get("status")):
            raise HarnessError(f"migration failed: source {si} destination {di}")
        if time.monotonic() > end:
            raise HarnessError(f"not {want_src}/{want_dst} after {timeout} s: source "
                               f"{si.get('status')}, destination {di.get('status')}")
        time.sleep(0.02)


def scrape(addr):
    """The exporter's /metrics text."""
    import urllib.request
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        return r.read().decode()


def run_migration(assets=None, workdir=None, faultline=FAULTLINE, smp=2, mem_mib=256,
                  postcopy_delay_s=0.0, postcopy_bandwidth=0, extra_trace_events=BLOCKTIME_EVENTS,
                  faultline_args=(), boot_timeout=120, migrate_timeout=300, log=None,
                  daemon=False, pause=None, hugetlb=False):
    """Run one traced postcopy migration; return a dict with everything collected.

    assets: dir from prepare_assets() (prepared here when None).
    postcopy_delay_s: seconds of precopy before migrate-start-postcopy.
    postcopy_bandwidth: max-postcopy-bandwidth in bytes/s (0: unlimited).
    daemon: faultline runs as a host daemon would, started before the
      destination QEMU exists: `trace` in default scope and `exporter`
      (history socket in the run dir); res["metrics"] is its last scrape.
    pause: a function(res, dst_pid) called while the postcopy is paused by
      migrate-pause on the source (QEMU's fault thread alive, waiting for
      recovery); then migrate-recover + resume, and the migration completes.
    hugetlb: both QEMUs' RAM on 2 MiB hugetlbfs pages (free huge pages needed).
    Raises HarnessError when the migration itself cannot be done.
    """
    log = log or (lambda msg: None)
    if shutil.which(QEMU) is None:
        raise HarnessError(f"{QEMU} not found: install the Debian package qemu-system-x86")
    if not os.access(faultline, os.X_OK):
        raise HarnessError(f"{faultline} not built (make)")
    if assets is None:
        assets = prepare_assets()
    with open(os.path.join(assets, "marker")) as f:
        marker = f.read().strip()
    own_dir = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="faultline-qemu-")
    os.makedirs(workdir, exist_ok=True)
    P = lambda name: os.path.join(workdir, name)  # noqa: E731
    for name in ("src.qmp", "dst.qmp", "dst.trace", "src.serial", "dst.serial",
                 "faultline.jsonl", "faultline.err"):
        try:
            os.unlink(P(name))
        except FileNotFoundError:
            pass
    res = {"workdir": workdir, "assets": assets, "page_size": (2 << 20) if hugetlb else 4096}
    files = []

    def out(name):  # a child's output file (closed here; the child keeps its copy)
        files.append(open(P(name), "w"))
        return files[-1]

    src = dst = fl = ex = None
    sq = dq = None
    t0 = time.monotonic()
    try:
        # -- source: boot the guest, wait until it is dirtying memory
        src_args = qemu_common("faultline-src", assets, smp, mem_mib, P("src.serial"), P("src.qmp"),
                               hugetlb=hugetlb)
        src = spawn(src_args, stdout=out("src.out"), stderr=subprocess.STDOUT)
        res["src_pid"] = src.pid
        sq = QMP(P("src.qmp"), src)
        wait_for_file_text(P("src.serial"), marker, src, boot_timeout)
        res["boot_s"] = time.monotonic() - t0
        log(f"source QEMU {src.pid}: guest up in {res['boot_s']:.1f} s")

        if daemon:
            # -- faultline as a host daemon: up before the destination exists
            fl = start_tracer(faultline, ["trace", "--json", *faultline_args], out, P)
            res["history_socket"] = P("history.sock")
            ex_addr = f"127.0.0.1:{free_port()}"
            ex = spawn([faultline, "exporter", "--listen", ex_addr, "--history-socket",
                        P("history.sock")], stdout=out("exporter.out"), stderr=out("exporter.err"))
            wait_for_file_text(P("exporter.err"), "Tracing", ex, 60)
            res["exporter_addr"] = ex_addr
            log(f"faultline trace {fl.pid} and exporter {ex.pid} up before the destination")

        # -- destination: waits for the incoming stream
        port = free_port()
        dst_args = qemu_common("faultline-dst", assets, smp, mem_mib, P("dst.serial"), P("dst.qmp"),
                               (TRACE_EVENT, *extra_trace_events), P("dst.trace"), hugetlb=hugetlb)
        dst_args += ["-incoming", f"tcp:127.0.0.1:{port}"]
        dst = spawn(dst_args, stdout=out("dst.out"), stderr=subprocess.STDOUT)
        res["dst_pid"] = dst.pid
        dq = QMP(P("dst.qmp"), dst)
        # "events": MIGRATION status events, so a short postcopy phase is not missed by polling
        caps = [{"capability": c, "state": True}
                for c in ("postcopy-ram", "postcopy-blocktime", "events")]
        for q in (sq, dq):
            q.cmd("migrate-set-capabilities", capabilities=caps)
        if postcopy_bandwidth:
            sq.cmd("migrate-set-parameters", **{"max-postcopy-bandwidth": postcopy_bandwidth})
        log(f"destination QEMU {dst.pid}: -incoming tcp:127.0.0.1:{port}")

        if not daemon:
            # -- faultline on the destination
            fl = start_tracer(faultline, ["trace", "--json", "-p", str(dst.pid),
                                          *faultline_args], out, P)
            log(f"faultline {fl.pid} tracing pid {dst.pid}")

        # -- migrate, switch to postcopy early
        res["migrate_ns"] = time.monotonic_ns()
        sq.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        if postcopy_delay_s:
            time.sleep(postcopy_delay_s)
        sq.cmd("migrate-start-postcopy")
        res["start_postcopy_ns"] = time.monotonic_ns()
        if pause:
            # a network failure in the middle of the postcopy, then its recovery
            wait_status(sq, dq, ("postcopy-active",), ("postcopy-active",), 60)
            time.sleep(0.5)
            sq.cmd("migrate-pause")
            # the source's side only: the destination's main thread (its QMP)
            # may now be asleep in a userfault itself until the recovery
            end = time.monotonic() + 30
            while sq.cmd("query-migrate").get("status") != "postcopy-paused":
                if time.monotonic() > end:
                    raise HarnessError("the source did not pause the postcopy in 30 s")
                time.sleep(0.02)
            res["paused_ns"] = time.monotonic_ns()
            log(f"postcopy paused (migrate-pause); destination QMP out-of-band: {dq.oob}")
            pause(res, dst.pid)
            port2 = free_port()
            dq.cmd_oob("migrate-recover", uri=f"tcp:127.0.0.1:{port2}")
            sq.cmd("migrate", uri=f"tcp:127.0.0.1:{port2}", resume=True)
            # the rest at full speed
            sq.cmd("migrate-set-parameters", **{"max-postcopy-bandwidth": 0})
            res["recovered_ns"] = time.monotonic_ns()
            log("postcopy recovered (migrate-recover, migrate resume=true)")
        end = time.monotonic() + migrate_timeout
        seen = set()
        src_status = dst_status = None
        while True:
            si = sq.cmd("query-migrate")
            di = dq.cmd("query-migrate")
            src_status, dst_status = si.get("status"), di.get("status")
            seen.add(src_status)
            if "failed" in (src_status, dst_status):
                raise HarnessError(f"migration failed: source {si} destination {di}")
            if src_status == "completed" and dst_status == "completed":
                break
            if time.monotonic() > end:
                raise HarnessError(f"migration not completed after {migrate_timeout} s: "
                                   f"source {src_status}, destination {dst_status}")
            time.sleep(0.02)
        res["completed_ns"] = time.monotonic_ns()
        seen |= {e["data"]["status"] for e in sq.events if e.get("event") == "MIGRATION"}
        res["source_statuses"] = sorted(s for s in seen if s)
        res["source_info"] = si
        res["dest_info"] = di
        if "postcopy-active" not in seen:
            raise HarnessError(f"the migration never went postcopy (statuses {sorted(seen)})")
        log(f"migration completed in {(res['completed_ns'] - res['migrate_ns']) / 1e9:.2f} s")

        # the guest keeps running on the destination: its heartbeat shows up there
        wait_for_file_text(P("dst.serial"), "heartbeat", dst, 30)
        time.sleep(1.0)
        if ex is not None:
            res["metrics"] = scrape(res["exporter_addr"])
        if pause:
            pause(res, dst.pid)  # once more, after the recovery
        fl.send_signal(signal.SIGINT)
        try:
            fl.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise HarnessError("faultline did not exit within 30 s of SIGINT")
        res["faultline_rc"] = fl.returncode
        res["stopped_ns"] = time.monotonic_ns()
        if ex is not None:
            stop(ex, sig=signal.SIGTERM)
            res["exporter_rc"] = ex.returncode

        res["cpus"] = dq.cmd("query-cpus-fast")
        res["vcpu_tids"] = {c["cpu-index"]: c["thread-id"] for c in res["cpus"]}
        res["thread_names"] = {}
        for tid in os.listdir(f"/proc/{dst.pid}/task"):
            try:
                with open(f"/proc/{dst.pid}/task/{tid}/comm") as f:
                    res["thread_names"][int(tid)] = f.read().strip()
            except OSError:
                pass
        res["dest_info"] = dq.cmd("query-migrate")
        stop(dst, dq)
        stop(src, sq)
        res["realtime_offset_ns"] = realtime_offset_ns()
        res["qemu_faults"], res["qemu_trace_other"] = parse_trace(
            P("dst.trace"), res["realtime_offset_ns"])
        with open(P("faultline.jsonl")) as f:
            res["faultline"] = [json.loads(l) for l in f if l.strip().startswith("{")]
        with open(P("faultline.err"), errors="replace") as f:
            res["faultline_stderr"] = f.read()
        res["run_s"] = time.monotonic() - t0
        return res
    finally:
        if fl is not None and fl.poll() is None:
            stop(fl, sig=signal.SIGINT)
        if ex is not None and ex.poll() is None:
            stop(ex, sig=signal.SIGTERM)
        for q, pr in ((dq, dst), (sq, src)):
            stop(pr, q)
            if q is not None:
                q.close()
        for f in files:
            f.close()
        if own_dir and not os.environ.get("FAULTLINE_KEEP_QEMU_RUN"):
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"run files kept in {workdir}")


def start_tracer(faultline, args, out, P):
    """faultline with output to faultline.jsonl/.err, up once its Tracing line is out."""
    fl = spawn([faultline, *args], stdout=out("faultline.jsonl"), stderr=out("faultline.err"))
    end = time.monotonic() + 60
    while True:
        with open(P("faultline.err"), errors="replace") as f:
            err = f.read()
        if any(l.startswith("Tracing") for l in err.splitlines()):
            return fl
        if fl.poll() is not None:
            raise HarnessError(f"faultline exited {fl.returncode} before tracing: {err[-2000:]}")
        if time.monotonic() > end:
            raise HarnessError(f"faultline printed no Tracing line in 60 s: {err[-2000:]}")
        time.sleep(0.05)


def page(a, size=4096):
    """The page of address a (hex string or int): of `size` bytes, the run's page size."""
    if isinstance(a, str):
        a = int(a, 16)
    return a & ~(size - 1)


BEGIN_RE = re.compile(r"addr: 0x([0-9a-fA-F]+), dd: \S+, time: (\d+), cpu: (-?\d+), "
                      r"already_received: (\d+)")
END_RE = re.compile(r"addr: 0x([0-9a-fA-F]+), dd: \S+, time: (\d+), affected_cpu: (\d+)")


def qemu_blocktime_replay(res):
    """Replay QEMU 7.2's per-vCPU blocktime accounting from its own trace.

    mark_postcopy_blocktime_begin (fault thread, after reading a fault) sets
    vcpu_addr[cpu] = addr and the start time; mark_postcopy_blocktime_end
    (after a page is placed) adds now - start to every vCPU whose vcpu_addr
    is that page. One slot per vCPU: a begin for the vCPU's *next* fault that
    comes before the end of its previous one (UFFDIO_COPY wakes the vCPU
    before QEMU marks the end) overwrites the slot, and the previous fault's
    time is never counted. Returns {cpu: {...}} or None without the events.
    """
    other = res.get("qemu_trace_other") or []
    if not any(e["event"] == "mark_postcopy_blocktime_begin" for e in other):
        return None
    slot, t0, out = {}, {}, {}
    for e in other:
        if e["event"] == "mark_postcopy_blocktime_begin":
            m = BEGIN_RE.search(e["text"])
            if not m:
                continue
            addr, cpu, recvd = int(m.group(1), 16), int(m.group(3)), int(m.group(4))
            o = out.setdefault(cpu, {"begins": 0, "already_received": 0, "counted": 0,
                                     "overwritten": 0, "replayed_ns": 0, "intervals": []})
            o["begins"] += 1
            if slot.get(cpu):
                o["overwritten"] += 1
            slot[cpu] = 0
            if recvd:
                o["already_received"] += 1
                continue
            slot[cpu], t0[cpu] = addr, e["mono_ns"]
        elif e["event"] == "mark_postcopy_blocktime_end":
            m = END_RE.search(e["text"])
            if not m:
                continue
            addr = int(m.group(1), 16)
            for cpu, a in slot.items():
                if a and a == addr:
                    o = out[cpu]
                    o["counted"] += 1
                    o["replayed_ns"] += e["mono_ns"] - t0[cpu]
                    o["intervals"].append((addr, t0[cpu], e["mono_ns"]))
                    slot[cpu] = 0
    return out


def analyse(res):
    """Cross-check faultline against QEMU. Returns a dict of figures (asserts nothing)."""
    ps = res.get("page_size", 4096)
    pg = lambda a: page(a, ps)  # noqa: E731  (hugetlbfs: QEMU logs the huge page)
    vcpu_tids = res["vcpu_tids"]
    tid_cpu = {t: c for c, t in vcpu_tids.items()}
    dst = res["dst_pid"]
    faults = [o for o in res["faultline"] if o.get("event") == "fault" and o.get("pid") == dst]
    qf = res["qemu_faults"]
    a = {"faultline_faults": len(faults), "qemu_requests": len(qf)}
    a["qemu_requests_per_vcpu"] = {c: sum(1 for q in qf if q["tid"] == t)
                                   for c, t in sorted(vcpu_tids.items())}
    a["qemu_requests_on_vcpus"] = sum(a["qemu_requests_per_vcpu"].values())
    a["qemu_requests_other_threads"] = sorted({q["tid"] for q in qf if q["tid"] not in tid_cpu})
    a["qemu_hva_page_aligned"] = all(q["hva"] & 0xfff == 0 for q in qf)
    fl_keys = {}
    for f in faults:
        fl_keys.setdefault((f["tid"], pg(f["addr"])), []).append(f)
    q_keys = {}
    for q in qf:
        q_keys.setdefault((q["tid"], pg(q["hva"])), []).append(q)

    # QEMU -> faultline: every (thread, page) QEMU's fault thread read
    a["qemu_missing_in_faultline"] = sorted(k for k in q_keys if k not in fl_keys)
    matched = [(q, fl_keys[(q["tid"], pg(q["hva"]))]) for q in qf
               if (q["tid"], pg(q["hva"])) in fl_keys]
    # ... and faultline saw that read: its notify (exit of the read() that
    # returned the uffd_msg) against QEMU's trace stamp, logged right after it
    a["matched_without_notify"] = []
    diffs = []
    for q, fs in matched:
        withn = [f for f in fs if f.get("notify_ns") is not None]
        if not withn:
            a["matched_without_notify"].append(fs[0])
            continue
        if q["mono_ns"] is not None:
            diffs.append(min((q["mono_ns"] - (f["start_ns"] + f["notify_ns"]) for f in withn),
                             key=abs))
    diffs.sort()
    a["read_stamp_diff_ns"] = diffs  # QEMU trace stamp - faultline's notify time

    # faultline -> QEMU: faultline's faults on vCPU threads in the migration window
    lo, hi = res["migrate_ns"], res["completed_ns"]
    win = [f for f in faults if f["tid"] in tid_cpu and lo <= f["start_ns"] <= hi]
    a["faultline_vcpu_faults"] = len(win)
    a["faultline_vcpu_faults_outside_window"] = [
        f for f in faults if f["tid"] in tid_cpu and not lo <= f["start_ns"] <= hi]
    a["faultline_non_vcpu_faults"] = [f for f in faults if f["tid"] not in tid_cpu]
    notread = [f for f in win if (f["tid"], pg(f["addr"])) not in q_keys]
    a["faultline_vcpu_not_in_qemu"] = notread
    # the explained ones: no read of their uffd_msg at all, ended by a placement
    # (the kernel withdraws a pending message when UFFDIO_COPY/ZEROPAGE wakes it)
    a["faultline_vcpu_not_in_qemu_unexplained"] = [
        f for f in notread
        if f.get("notify_ns") is not None or f["resolved_by"] not in ("copy", "zeropage")]
    # QEMU's own word on those: mark_postcopy_blocktime_end is logged after
    # every page placement; the page of each withdrawn fault was placed
    # during that fault (placement stamp - fault start, fault end)
    placed = {}
    for e in res.get("qemu_trace_other") or []:
        if e["event"] == "mark_postcopy_blocktime_end":
            m = END_RE.search(e["text"])
            if m:
                placed.setdefault(pg(int(m.group(1), 16)), []).append(e["mono_ns"])
    a["have_placement_trace"] = bool(placed)
    a["withdrawn_placements"] = [
        (f, min(placed.get(pg(f["addr"]), [None]),
                key=lambda t: abs(t - f["start_ns"]) if t is not None else 0))
        for f in notread]
    a["resolved_by"] = {}
    for f in win:
        a["resolved_by"][f["resolved_by"]] = a["resolved_by"].get(f["resolved_by"], 0) + 1
    a["vcpu_null"] = sum(1 for f in win if f.get("vcpu") is None)
    a["vcpu_mismatch"] = [f for f in win if f.get("vcpu") is not None
                          and f["vcpu"] != tid_cpu[f["tid"]]]

    # blocked time per vCPU
    qbt = res["dest_info"].get("postcopy-vcpu-blocktime") or []
    replay = qemu_blocktime_replay(res)
    vm = [o for o in res["faultline"] if o.get("event") == "vm_stats" and o.get("pid") == dst]
    vm_vcpus = {v.get("tid"): v for v in (vm[-1].get("vcpus") or [])} if vm else {}
    rows = []
    for cpu, tid in sorted(vcpu_tids.items()):
        mine = [f for f in faults if f["tid"] == tid]
        read = [f for f in mine if (f["tid"], pg(f["addr"])) in q_keys]
        row = {
            "cpu": cpu, "tid": tid,
            "faultline_ns": sum(f["latency_ns"] for f in mine),
            "faultline_faults": len(mine),
            "faultline_read_ns": sum(f["latency_ns"] for f in read),
            "faultline_read_faults": len(read),
            "faultline_vm_stats_ns": vm_vcpus.get(tid, {}).get("blocked_ns"),
            "qemu_requests": a["qemu_requests_per_vcpu"][cpu],
            "qemu_ms": qbt[cpu] if cpu < len(qbt) else None,
        }
        if replay is not None:
            r = replay.get(cpu, {})
            row["qemu_replay"] = {k: v for k, v in r.items() if k != "intervals"}
            # the very faults QEMU counted, by faultline
            ivs = r.get("intervals", [])
            same = [fl_keys.get((tid, pg(addr)), [None])[0] for addr, _, _ in ivs]
            row["faultline_same_faults_ns"] = sum(f["latency_ns"] for f in same if f)
            row["qemu_interval_longer"] = sum(
                1 for f, (_, b, e) in zip(same, ivs) if f and e - b > f["latency_ns"])
        rows.append(row)
    a["blocktime"] = rows
    a["qemu_total_blocktime_ms"] = res["dest_info"].get("postcopy-blocktime")
    a["faultline_all_vcpu_blocked_ns"] = vm[-1].get("all_vcpu_blocked_ns") if vm else None
    summ = [o for o in res["faultline"] if o.get("event") == "summary"]
    a["faultline_summary"] = summ[-1] if summ else None
    a["lost"] = [o for o in res["faultline"] if o.get("event") == "lost"]
    return a


def _pct(v, p):
    return v[min(len(v) - 1, int(len(v) * p))] if v else None


def withdrawn_span(a):
    """(min, max) of placement - start and of placement - end over the withdrawn faults, in us."""
    v = [(t - f["start_ns"], t - f["start_ns"] - f["latency_ns"])
         for f, t in a["withdrawn_placements"] if t is not None]
    if not v:
        return None
    return (min(x for x, _ in v) / 1e3, max(x for x, _ in v) / 1e3,
            min(y for _, y in v) / 1e3, max(y for _, y in v) / 1e3)


def report_lines(res, a):
    """Human-readable figures (the test prints them as TAP comments)."""
    mig_s = (res["completed_ns"] - res["migrate_ns"]) / 1e9
    ram = res["source_info"].get("ram", {})
    d = a["read_stamp_diff_ns"]
    L = [f"run {res['run_s']:.1f} s: guest boot {res['boot_s']:.1f} s, migration {mig_s:.2f} s "
         f"(postcopy from the start), source downtime {res['source_info'].get('downtime')} ms, "
         f"page requests received by the source {ram.get('postcopy-requests')}",
         "vCPU threads (query-cpus-fast): " + ", ".join(
             f"cpu{c}={t} ({res['thread_names'].get(t, '?')})"
             for c, t in sorted(res["vcpu_tids"].items())),
         f"QEMU fault thread read {a['qemu_requests']} faults "
         f"({a['qemu_requests_on_vcpus']} on vCPU threads: "
         + ", ".join(f"cpu{c} {n}" for c, n in a["qemu_requests_per_vcpu"].items())
         + f"; other threads {a['qemu_requests_other_threads']}; HVA page-aligned: "
         f"{a['qemu_hva_page_aligned']})",
         f"faultline: {a['faultline_faults']} faults, {a['faultline_vcpu_faults']} on vCPU "
         f"threads in the migration window (resolved_by {a['resolved_by']}; vcpu null on "
         f"{a['vcpu_null']}, wrong on {len(a['vcpu_mismatch'])}), "
         f"{len(a['faultline_non_vcpu_faults'])} on other threads, lost "
         f"{(a['faultline_summary'] or {}).get('lost')}",
         f"QEMU reads missing from faultline: {len(a['qemu_missing_in_faultline'])}; "
         f"matched but without faultline's notify: {len(a['matched_without_notify'])}; "
         f"QEMU's trace stamp - faultline's notify: median {(_pct(d, .5) or 0) / 1e3:.1f} us, "
         f"p99 {(_pct(d, .99) or 0) / 1e3:.1f} us, range [{(d[0] if d else 0) / 1e3:.1f}, "
         f"{(d[-1] if d else 0) / 1e3:.1f}] us",
         f"faultline vCPU faults QEMU never read: {len(a['faultline_vcpu_not_in_qemu'])} "
         f"(all unread -- no notify -- and ended by a placement, except "
         f"{len(a['faultline_vcpu_not_in_qemu_unexplained'])})"
         + (("; QEMU placed their page at fault start + [%.1f, %.1f] us, fault end + "
             "[%.1f, %.1f] us" % withdrawn_span(a)) if withdrawn_span(a) else ""),
         "per-vCPU blocked time:  faultline ms (faults) | QEMU postcopy-vcpu-blocktime ms "
         "(faults read) | faultline/QEMU"]
    for r in a["blocktime"]:
        ratio = (r["faultline_ns"] / 1e6 / r["qemu_ms"]) if r["qemu_ms"] else float("nan")
        L.append(f"  cpu{r['cpu']} (tid {r['tid']}): {r['faultline_ns'] / 1e6:9.1f} "
                 f"({r['faultline_faults']}) | {r['qemu_ms']!s:>6} ({r['qemu_requests']}) | "
                 f"{ratio:.2f}x; faultline on the faults QEMU read: "
                 f"{r['faultline_read_ns'] / 1e6:.1f} ms ({r['faultline_read_faults']})"
                 + (f"; vm_stats {r['faultline_vm_stats_ns'] / 1e6:.1f} ms"
                    if r["faultline_vm_stats_ns"] is not None else ""))
        rp = r.get("qemu_replay")
        if rp:
            L.append(f"    QEMU's own begin/end trace replayed: {rp['replayed_ns'] / 1e6:.1f} ms "
                     f"over {rp['counted']} of {rp['begins']} faults read (already received "
                     f"{rp['already_received']}, slot overwritten by the vCPU's next fault "
                     f"before the end was marked {rp['overwritten']}); faultline on those "
                     f"{rp['counted']}: {r['faultline_same_faults_ns'] / 1e6:.1f} ms "
                     f"(QEMU's interval longer on {r['qemu_interval_longer']})")
    L.append(f"  all vCPUs blocked at once: QEMU postcopy-blocktime "
             f"{a['qemu_total_blocktime_ms']} ms, faultline all_vcpu_blocked "
             + (f"{a['faultline_all_vcpu_blocked_ns'] / 1e6:.1f} ms"
                if a["faultline_all_vcpu_blocked_ns"] is not None else "n/a"))
    return L


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--assets", help="asset dir (default: prepare build/qemu-assets)")
    ap.add_argument("--workdir", help="keep the run's files here")
    ap.add_argument("--postcopy-delay", type=float, default=0.0, metavar="S")
    ap.add_argument("--postcopy-bandwidth", type=int, default=0, metavar="BYTES_PER_S")
    ap.add_argument("--trace", action="append", default=list(BLOCKTIME_EVENTS), metavar="EVENT",
                    help="extra QEMU trace event on the destination (repeatable; default: "
                    "QEMU's blocktime begin/end events)")
    ap.add_argument("--json", action="store_true", help="print the collected data as JSON")
    o = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("qemu_postcopy: needs root (faultline loads BPF)")
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, lambda *_: sys.exit(1))  # run the finally blocks
    try:
        res = run_migration(assets=o.assets and os.path.abspath(o.assets), workdir=o.workdir,
                            postcopy_delay_s=o.postcopy_delay,
                            postcopy_bandwidth=o.postcopy_bandwidth,
                            extra_trace_events=o.trace,
                            log=lambda m: print(f"qemu_postcopy: {m}", file=sys.stderr))
    except HarnessError as e:
        sys.exit(f"qemu_postcopy: {e}")
    a = analyse(res)
    if o.json:
        json.dump({"run": res, "analysis": a}, sys.stdout, default=str)
        print()
    else:
        print("\n".join(report_lines(res, a)))


if __name__ == "__main__":
    main()
