#!/usr/bin/env python3
"""End-to-end tests of `faultline source` against a real process.

The process is `wire-client mem`: a shared memfd mapping filled with a known
pattern (every 8th page a hole), registered with a userfaultfd so poison can
be injected from outside, plus anonymous pages.  The target is `wire-client
target`, a protocol-level peer that rebuilds each region's image from what
arrived and checks the conversation's promises.  The reference for contents
is always the process's memfd itself, read through /proc/PID/fd (a file read:
holes read as zeros without faulting into the userfaultfd).
"""
import errno
import json
import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import weakref

from tap import BUILD, FAULTLINE, Skip, main, require_root

CLIENT = os.path.join(BUILD, "wire-client")


def fnv1a(data):
    h = 0xcbf29ce484222325
    for b in data:
        h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


class Lines:
    """Reads a pipe line by line in a thread; next_event() waits for a JSON event."""

    def __init__(self, pipe):
        self.q = queue.Queue()
        self.all = []
        self.t = threading.Thread(target=self._run, args=(pipe,), daemon=True)
        self.t.start()

    def _run(self, pipe):
        for line in pipe:
            self.q.put(line)
        self.q.put(None)

    def next_event(self, pred, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; seen: {self.all[-8:]}")
            try:
                line = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(f"stream ended; seen: {self.all[-8:]}")
            line = line.strip()
            if not line.startswith("{"):
                self.all.append(line)
                continue
            ev = json.loads(line)
            self.all.append(ev)
            if pred(ev):
                return ev

    def rest(self, timeout=30):
        self.t.join(timeout)
        while True:
            try:
                line = self.q.get_nowait()
            except queue.Empty:
                break
            if line is None:
                break
            line = line.strip()
            self.all.append(json.loads(line) if line.startswith("{") else line)
        return [e for e in self.all if isinstance(e, dict)]


class Mem:
    def __init__(self, *args):
        self.p = subprocess.Popen([CLIENT, "mem", *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.p.stdout.readline())
        self.pid = self.info["pid"]
        self.addr = int(self.info["addr"], 16)
        self.ps = self.info["page_size"]
        self.pages = self.info["pages"]

    def cmd(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        return self.p.stdout.readline().strip()

    def memfd(self):
        with open(f"/proc/{self.pid}/fd/{self.info['memfd_fd']}", "rb") as f:
            return f.read()

    def page(self, i):
        return self.memfd()[i * self.ps:(i + 1) * self.ps]

    def state(self):
        with open(f"/proc/{self.pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]

    def ranges(self, anon=False):
        r = ["--range", f"{self.info['addr']}:{self.info['length']}"]
        if anon:
            r += ["--range", f"{self.info['anon_addr']}:{self.info['anon_length']}"]
        return r

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.p.kill()  # may be SIGSTOPped by the source: SIGKILL still ends it
        self.p.wait(timeout=10)
        return False


class Source:
    """faultline source --json on a free loopback port with a control socket."""

    def __init__(self, mem, *args, anon=False):
        self.dir = tempfile.mkdtemp(prefix="fl-src-")
        weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.ctl = os.path.join(self.dir, "ctl")
        self.p = subprocess.Popen([FAULTLINE, "source", "--pid", str(mem.pid), *mem.ranges(anon),
                                   "--listen", "127.0.0.1:0", "--control", self.ctl, "--json",
                                   *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.out = Lines(self.p.stdout)
        self.err = Lines(self.p.stderr)
        self.ready = self.out.next_event(lambda e: e["event"] == "source_ready", timeout=20)
        self.port = int(self.ready["listen"].rsplit(":", 1)[1])
        self.addr = f"127.0.0.1:{self.port}"

    def control(self, *args):
        return subprocess.run([FAULTLINE, "source", "--control", self.ctl, *args],
                              capture_output=True, text=True, timeout=30)

    def wait(self, timeout=60):
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError("faultline source did not finish")
        return self.out.rest()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        return False


class Target:
    def __init__(self, src, *args):
        self.dir = tempfile.mkdtemp(prefix="fl-tgt-")
        weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.p = subprocess.Popen([CLIENT, "target", "--connect", src.addr, "--image-dir",
                                   self.dir, *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.out = Lines(self.p.stdout)

    def resume(self):
        self.p.stdin.write("\n")
        self.p.stdin.flush()

    def wait_paused(self, at, timeout=30):
        return self.out.next_event(lambda e: e["event"] == "paused" and e["at"] == at, timeout)

    def finish(self, timeout=60):
        try:
            rc = self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise AssertionError(f"target client hung; seen {self.out.all[-8:]}")
        evs = self.out.rest()
        return rc, evs, next((e for e in evs if e["event"] == "client_summary"), None)

    def image(self, region=0):
        with open(os.path.join(self.dir, f"region-{region}.img"), "rb") as f:
            return f.read()



# A process whose guest memory the source can't read the ordinary way, written
# here because wire-client's memory is a plain memfd: "anon" is private
# anonymous memory registered with a userfaultfd (MISSING) with some pages
# mprotect(PROT_NONE) after they were filled; "secret" is memfd_secret(2)
# memory, which nobody but its owner can read. Every 8th page stays a hole.
ODD_MEM = r"""
import ctypes, fcntl, json, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                      ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
kind, n, none = sys.argv[1], int(sys.argv[2]), [int(x) for x in sys.argv[3].split(",") if x]
ps = os.sysconf("SC_PAGE_SIZE")
if kind == "secret":
    fd = libc.syscall(447, 0)  # memfd_secret, the same number everywhere
    if fd < 0:
        print(json.dumps({"error": "memfd_secret: " + os.strerror(ctypes.get_errno())}), flush=True)
        sys.exit(0)
    os.ftruncate(fd, n * ps)
    addr = libc.mmap(None, n * ps, 3, 1, fd, 0)  # PROT_READ|PROT_WRITE, MAP_SHARED
else:
    addr = libc.mmap(None, n * ps, 3, 0x22, -1, 0)  # MAP_PRIVATE|MAP_ANONYMOUS
assert addr != ctypes.c_void_p(-1).value, os.strerror(ctypes.get_errno())
for i in range(n):
    if i % 8 != 7:
        word = struct.pack("<Q", (i + 1) * 0x9E3779B97F4A7C15 % 2**64)
        ctypes.memmove(addr + i * ps, word * (ps // 8), ps)
if kind == "anon":
    nr = {"x86_64": 323, "aarch64": 282}[os.uname().machine]
    uffd = libc.syscall(nr, os.O_CLOEXEC | os.O_NONBLOCK)  # kept open: the registration's life
    fcntl.ioctl(uffd, 0xc018aa3f, bytearray(struct.pack("QQQ", 0xAA, 0, 0)))  # UFFDIO_API
    fcntl.ioctl(uffd, 0xc020aa00, bytearray(struct.pack("QQQQ", addr, n * ps, 1, 0)))  # REGISTER
    for p in none:
        assert libc.mprotect(addr + p * ps, ps, 0) == 0
vvar = [l.split()[0] for l in open("/proc/self/maps") if l.rstrip().endswith("[vvar]")]
print(json.dumps({"pid": os.getpid(), "addr": hex(addr), "length": n * ps, "page_size": ps,
                  "vvar": vvar[0] if vvar else None}), flush=True)
sys.stdin.read()
"""


class OddMem:
    def __init__(self, kind, pages, prot_none=()):
        self.p = subprocess.Popen(["python3", "-c", ODD_MEM, kind, str(pages),
                                   ",".join(map(str, prot_none))], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self.p.stdout.readline())
        if "error" in self.info:
            self.__exit__()
            raise Skip(self.info["error"])
        self.pid = self.info["pid"]
        self.addr = int(self.info["addr"], 16)
        self.ps = self.info["page_size"]
        self.pages = self.info["length"] // self.ps

    def expected(self, i):
        if i % 8 == 7:
            return bytes(self.ps)
        return ((i + 1) * 0x9E3779B97F4A7C15 % 2**64).to_bytes(8, "little") * (self.ps // 8)

    def image(self):
        return b"".join(self.expected(i) for i in range(self.pages))

    def ranges(self, anon=False):
        return ["--range", f"{self.info['addr']}:{self.info['length']}"]

    state = Mem.state

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.p.kill()
        self.p.wait(timeout=10)
        return False


def events(evs, name):
    return [e for e in evs if e.get("event") == name]


class VmmSource(Source):
    """faultline source --vmm-socket: waits for the handover, which `wire-client mem
    --handover` makes like a VMM (fl_handover() with its uffd and memfd)."""

    def __init__(self, *args, mem_args=(), refused=()):
        self.dir = tempfile.mkdtemp(prefix="fl-src-")
        weakref.finalize(self, shutil.rmtree, self.dir, True)
        self.ctl = os.path.join(self.dir, "ctl")
        self.vmm = os.path.join(self.dir, "vmm")
        self.p = subprocess.Popen([FAULTLINE, "source", "--vmm-socket", self.vmm,
                                   "--listen", "127.0.0.1:0", "--control", self.ctl, "--json",
                                   *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True)
        self.out = Lines(self.p.stdout)
        self.err = Lines(self.p.stderr)
        self.wait_ev = self.out.next_event(lambda e: e["event"] == "vmm_wait", timeout=20)
        self.refusals = []
        for bad in refused:  # each is turned away; the source keeps waiting
            with Mem("--handover", self.vmm, *bad) as m:
                self.refusals.append(m.info.get("handover_error"))
        self.mem = Mem("--handover", self.vmm, *mem_args)
        assert self.mem.info.get("handover") is True, self.mem.info
        self.ready = self.out.next_event(lambda e: e["event"] == "source_ready", timeout=20)
        self.port = int(self.ready["listen"].rsplit(":", 1)[1])
        self.addr = f"127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        super().__exit__(*exc)
        self.mem.__exit__(*exc)
        return False


def setup():
    require_root()
    if not os.path.exists(CLIENT):
        raise Skip("build/wire-client not built")


def test_help_has_examples():
    p = subprocess.run([FAULTLINE, "source", "--help"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    for s in ("EXAMPLES", "--inject", "--range", "--control", "memory_failure_event",
              "source_summary"):
        assert s in p.stdout, s


def run_source_expect_error(args, text):
    p = subprocess.run([FAULTLINE, "source", *args], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0, (args, p.stdout, p.stderr)
    assert text in p.stderr, (args, text, p.stderr)


def test_clear_errors():
    setup()
    with Mem("--pages", "64") as m:
        rng = f"{m.info['addr']}:{m.info['length']}"
        run_source_expect_error(["--pid", "999999999", "--range", rng],
                                "no process with PID 999999999")
        run_source_expect_error(["--pid", str(m.pid), "--range", f"{hex(m.addr + 1)}:4096"],
                                "not page aligned")
        run_source_expect_error(["--pid", str(m.pid), "--range", "0x1000:4096",
                                 "--listen", "127.0.0.1:0"], "is not mapped in process")
        run_source_expect_error(["--pid", str(m.pid)], "--range ADDR:LEN is required")
        run_source_expect_error(["--range", rng], "--pid PID is required")
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        run_source_expect_error(["--pid", str(m.pid), "--range", rng, "--listen",
                                 f"127.0.0.1:{port}"],
                                f"127.0.0.1:{port}: address already in use")
        s.close()
        with Source(m) as src:
            run_source_expect_error(["--pid", str(m.pid), "--range", rng, "--listen",
                                     "127.0.0.1:0", "--control", src.ctl], "is in use")
        run_source_expect_error(["--control", "/nonexistent/ctl", "--status"],
                                "cannot connect to control socket")


def test_precopy_dirty_map_and_image():
    """Precopy, then writes: exactly the written pages are DIRTY; the target's image
    rebuilt from precopy + map + pushes equals the process's memory at switchover."""
    setup()
    with Mem("--pages", "512") as m, \
            Source(m, "--switchover-on-command") as src:
        t = Target(src, "--precopy", "--pause-at", "precopy_done")
        pre = t.out.next_event(lambda e: e["event"] == "precopy_done")
        assert pre["pages"] == 512 - 64, pre  # every 8th page is a hole
        t.wait_paused("precopy_done")
        written = [3, 7, 100, 101, 102, 200, 511]  # 7 and 511 were holes
        assert m.cmd("dirty " + ",".join(map(str, written))) == "ok"
        assert m.cmd("zero 20") == "ok"  # non-zero -> zero: ZERO, not DIRTY
        r = src.control("--switchover-now")
        assert r.returncode == 0 and r.stdout.startswith("ok switchover"), r
        t.resume()
        rc, evs, summ = t.finish()
        assert rc == 0, evs[-5:]
        sw = events(evs, "switchover")[0]
        assert sw["dirty_pages"] == len(written), sw
        assert summ["dirty"] == len(written) and summ["missing"] == 0, summ
        assert summ["clean_without_precopy"] == 0, summ
        assert summ["zero"] == 64 - 2 + 1, summ  # holes, minus 2 written, plus page 20
        assert summ["clean"] == 512 - summ["dirty"] - summ["zero"], summ
        assert m.state() == "T", "the source process should be stopped after switchover"
        assert t.image() == m.memfd(), "target image differs from the source's memory"
        sevs = src.wait()
        s = events(sevs, "source_summary")[0]
        assert src.p.returncode == 0, src.err.all
        assert s["completed"] and s["dirty"] == len(written) and s["precopy_pages"] == 448, s
        assert s["dirty_tracking"] in ("hash", "soft-dirty"), s
        for k in ("pages_total", "pages_sent", "bytes_sent", "requests_served", "poisoned",
                  "dirty", "zero", "clean", "duration_s"):
            assert k in s, k


def test_requests_and_queries_before_switchover():
    """A target without precopy asks pages and states before the switchover:
    answers are the live contents, holes are ZERO and carry no data."""
    setup()
    with Mem("--pages", "128") as m, \
            Source(m, "--switchover-on-command") as src:
        t = Target(src, "--request", "0:1,2,3,7,64-67", "--query", "0:0-9",
                   "--pause-at", "switchover")
        ans = {}
        while len(ans) < 8:
            e = t.out.next_event(lambda e: e["event"] == "answer")
            ans[e["page"]] = e
        q = [e for e in t.out.all if isinstance(e, dict) and e["event"] == "state_answer"]
        q = q[0] if q else t.out.next_event(lambda e: e["event"] == "state_answer")
        states = dict((p, s) for p, s in q["states"])
        assert states[7] == "zero" and all(states[p] == "dirty" for p in range(7)), states
        assert ans[7]["state"] == "zero" and "fnv" not in ans[7], ans[7]
        for p in (1, 2, 3, 64, 65, 66, 67):
            assert ans[p]["state"] == "dirty", ans[p]
            assert int(ans[p]["fnv"], 16) == fnv1a(m.page(p)), f"page {p} contents differ"
        assert src.control("--switchover-now").returncode == 0
        t.wait_paused("switchover")
        t.resume()
        rc, evs, summ = t.finish()
        assert rc == 0 and summ["missing"] == 0, summ
        assert t.image() == m.memfd()
        s = events(src.wait(), "source_summary")[0]
        assert s["requests_served"] == 1 and s["pages_requested"] == 8, s
        assert s["state_queries"] == 1, s


def injected_then_late(src, t, pages):
    """The source reports pages (region 0) poisoned by injection and the paused
    target receives them in one update; after switchover and the map, a late
    injection of page 9 still reaches it. Returns the target's (events, summary)."""
    pe = [src.out.next_event(lambda e: e["event"] == "poison") for _ in range(len(pages))]
    assert {(e["page"], e["cause"]) for e in pe} == {(p, "injected") for p in pages}, pe
    t.resume()
    upd = t.out.next_event(lambda e: e["event"] == "poison_update")
    assert upd["region"] == 0 and set(upd["pages"]) == pages, upd
    assert src.control("--switchover-now").returncode == 0
    t.wait_paused("map_done")
    assert src.control("--inject", "0:9").stdout.startswith("ok 0 9")
    t.resume()
    rc, evs, summ = t.finish()
    assert rc == 0, evs[-5:]
    return evs, summ


def test_inject_poison():
    """--inject makes the page really poisoned in the process (SIGBUS on access,
    EIO from /proc/PID/mem), the target gets PoisonUpdate at once, never data."""
    setup()
    with Mem("--pages", "256") as m, \
            Source(m, "--switchover-on-command", "--no-stop", anon=True) as src:
        t = Target(src, "--pause-at", "hello", "--pause-at", "map_done")
        t.wait_paused("hello")
        r = src.control("--inject", "0:5,7")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:2] == ["ok 0 5", "ok 0 7"], r.stdout
        assert m.cmd("touch 5") == "sigbus"
        assert m.cmd("touch 4") == "ok"
        fd = os.open(f"/proc/{m.pid}/mem", os.O_RDONLY)
        try:
            os.pread(fd, m.ps, m.addr + 5 * m.ps)
            raise AssertionError("reading the poisoned page succeeded")
        except OSError as e:
            assert e.errno in (errno.EIO, errno.EFAULT), e
        finally:
            os.close(fd)
        # anonymous memory can't be zapped from outside: a clear refusal
        r = src.control("--inject", "1:0")
        assert r.returncode != 0 and "back guest memory with a memfd" in r.stdout, r
        evs, summ = injected_then_late(src, t, {5, 7})
        assert any(9 in e["pages"] for e in events(evs, "poison_update")), evs
        assert [0, 5] in summ["poisoned_pages"] and [0, 7] in summ["poisoned_pages"], summ
        assert [0, 9] in summ["poisoned_pages"], summ
        assert summ["data_for_poisoned"] == 0 and summ["missing"] == 0, summ
        s = events(src.wait(), "source_summary")[0]
        assert s["poisoned"] == 3 and not s["vm_stopped"], s


def test_poison_marker_seen_by_scan():
    """A UFFDIO_POISON placed by the process itself is found by the periodic scan
    (the memory-failure stream stand-in) and pushed to the target."""
    setup()
    with Mem("--pages", "64") as m, Source(m, "--switchover-on-command") as src:
        t = Target(src, "--pause-at", "switchover")
        t.out.next_event(lambda e: e["event"] == "hello")
        assert m.cmd("poison 12") == "ok"
        pe = src.out.next_event(lambda e: e["event"] == "poison", timeout=10)
        assert pe["page"] == 12 and pe["cause"] == "uffd_poison_marker", pe
        upd = t.out.next_event(lambda e: e["event"] == "poison_update", timeout=10)
        assert upd["pages"] == [12], upd
        assert src.control("--switchover-now").returncode == 0
        t.wait_paused("switchover")
        t.resume()
        rc, evs, summ = t.finish()
        assert rc == 0 and summ["poisoned_pages"] == [[0, 12]] and summ["missing"] == 0, summ


def test_reconnect_resume_loses_nothing():
    """The target drops the connection mid-stream and resumes: the source re-sends
    the state map and keeps serving; nothing the target misses is lost."""
    setup()
    with Mem("--pages", "4096") as m, Source(m) as src:
        t = Target(src, "--precopy", "--drop-after", "40")
        rc, evs, summ = t.finish(timeout=120)
        assert rc == 0, evs[-5:]
        assert summ["reconnects"] == 1 and summ["missing"] == 0, summ
        assert summ["clean_without_precopy"] == 0, summ
        assert t.image() == m.memfd()
        sevs = src.wait()
        assert len(events(sevs, "target_connected")) == 2, sevs
        assert events(sevs, "target_connected")[1]["resume"] is True
        assert events(sevs, "source_summary")[0]["completed"]


def test_protocol_errors_keep_serving():
    """Garbage and an intruding second target get an Error frame and are closed;
    the source keeps serving the real target to the end."""
    setup()
    with Mem("--pages", "64") as m, Source(m, "--switchover-on-command") as src:
        t = Target(src, "--pause-at", "hello")
        t.wait_paused("hello")
        g = subprocess.run([CLIENT, "target", "--connect", src.addr, "--garbage"],
                           capture_output=True, text=True, timeout=30)
        err = json.loads(g.stdout.strip().splitlines()[-1])
        assert g.returncode == 3 and err["code"] == errno.EMSGSIZE, g.stdout
        b = subprocess.run([CLIENT, "target", "--connect", src.addr],
                           capture_output=True, text=True, timeout=30)
        err = json.loads(b.stdout.strip().splitlines()[-1])
        assert err["code"] == errno.EBUSY and "already connected" in err["text"], b.stdout
        t.resume()
        assert src.control("--switchover-now").returncode == 0
        rc, evs, summ = t.finish()
        assert rc == 0 and summ["missing"] == 0, summ
        s = events(src.wait(), "source_summary")[0]
        assert s["protocol_errors"] == 2 and s["completed"], s


def test_status_and_progress():
    setup()
    with Mem("--pages", "64") as m, Source(m, "--precopy-ms", "1500") as src:
        r = src.control("--status")
        st = json.loads(r.stdout)
        assert st["event"] == "source_status" and st["phase"] == "waiting_for_target", st
        t = Target(src, "--precopy")
        rc, evs, summ = t.finish()
        assert rc == 0
        sevs = src.wait()
        prog = events(sevs, "source_progress")
        assert prog, "no progress line in 1.5 s"
        for k in ("pages_sent", "requests_served", "poisoned", "eta_s", "phase"):
            assert k in prog[0], k


def test_vmm_usage_errors():
    run_source_expect_error(["--vmm-socket", "/tmp/x.sock", "--pid", "1"],
                            "--vmm-socket and --pid/--range exclude each other")
    run_source_expect_error(["--vmm-socket", "/tmp/x.sock", "--range", "0x1000:4096"],
                            "--vmm-socket and --pid/--range exclude each other")
    run_source_expect_error(["--vmm-socket", "/tmp/x.sock", "--control", "/tmp/c", "--status"],
                            "talk to one already running")
    p = subprocess.run([FAULTLINE, "source", "--help"], capture_output=True, text=True)
    assert "--vmm-socket" in p.stdout and "fl_handover(" in p.stdout, p.stdout


def test_vmm_handover_contents_and_dirty():
    """Served from the memfd a VMM handed over: the target's image equals the memfd
    byte for byte, written pages are DIRTY (hashes), the VMM is stopped at switchover."""
    setup()
    with VmmSource("--switchover-on-command", mem_args=("--pages", "512")) as src:
        m = src.mem
        assert src.ready["pid"] == m.pid and src.ready["vmm_socket"] == src.vmm, src.ready
        assert src.ready["dirty_tracking"] == "hash", src.ready
        assert src.ready["regions"][0]["addr"] == m.info["addr"], src.ready
        assert src.ready["regions"][0]["length"] == m.info["length"], src.ready
        assert not os.path.exists(src.vmm), "the handover socket should be gone once taken"
        t = Target(src, "--precopy", "--request", "0:1,15", "--pause-at", "precopy_done")
        pre = t.out.next_event(lambda e: e["event"] == "precopy_done")
        assert pre["pages"] == 512 - 64, pre
        t.wait_paused("precopy_done")
        written = [3, 7, 200, 511]
        assert m.cmd("dirty " + ",".join(map(str, written))) == "ok"
        t.resume()
        # the answers may come before or after precopy_done
        seen = [e for e in t.out.all if isinstance(e, dict) and e["event"] == "answer"]
        while len(seen) < 2:
            seen.append(t.out.next_event(lambda e: e["event"] == "answer"))
        ans = dict((e["page"], e) for e in seen)
        assert int(ans[1]["fnv"], 16) == fnv1a(m.page(1)) and ans[15]["state"] == "zero", ans
        r = src.control("--switchover-now")
        assert r.returncode == 0, r
        rc, evs, summ = t.finish()
        assert rc == 0, evs[-5:]
        assert summ["dirty"] == len(written) and summ["missing"] == 0, summ
        assert summ["clean_without_precopy"] == 0, summ
        assert m.state() == "T", "the VMM should be stopped after switchover"
        assert t.image() == m.memfd(), "target image differs from the handed-over memfd"
        s = events(src.wait(), "source_summary")[0]
        assert src.p.returncode == 0 and s["completed"] and s["vm_stopped"], s


def test_vmm_handover_inject_poison():
    """Injection through the handed-over fds: punch the memfd + UFFDIO_POISON through
    the VMM's uffd; the VMM gets SIGBUS there and the target a PoisonUpdate."""
    setup()
    with VmmSource("--switchover-on-command", "--no-stop", mem_args=("--pages", "128")) as src:
        m = src.mem
        t = Target(src, "--pause-at", "hello", "--pause-at", "map_done")
        t.wait_paused("hello")
        r = src.control("--inject", "0:5,6")
        assert r.returncode == 0 and r.stdout.split("\n")[:2] == ["ok 0 5", "ok 0 6"], r
        assert m.cmd("touch 5") == "sigbus"
        assert m.cmd("touch 6") == "sigbus"
        assert m.cmd("touch 4") == "ok"
        assert m.page(5) == bytes(m.ps), "the poisoned page should be punched out of the memfd"
        evs, summ = injected_then_late(src, t, {5, 6})
        assert [0, 5] in summ["poisoned_pages"] and [0, 9] in summ["poisoned_pages"], summ
        assert summ["data_for_poisoned"] == 0 and summ["missing"] == 0, summ
        s = events(src.wait(), "source_summary")[0]
        assert s["poisoned"] == 3 and not s["vm_stopped"], s
        assert m.state() != "T"


def test_vmm_handover_without_memfd_refused():
    """A region without a memfd can't be served: the VMM's fl_handover() fails with
    the reason, the source says so and keeps waiting for a usable handover."""
    setup()
    with VmmSource("--no-stop", refused=[("--handover-no-memfd",), ("--handover-anon",)],
                   mem_args=("--pages", "16")) as src:
        assert len(src.refusals) == 2, src.refusals
        assert "region 0 comes without a memfd" in src.refusals[0], src.refusals
        assert "region 1 comes without a memfd" in src.refusals[1], src.refusals
        for r in src.refusals:
            assert "refused the handover" in r, r
        src.p.terminate()
        src.p.wait(timeout=10)
        src.err.rest()
        errs = "\n".join(line for line in src.err.all if isinstance(line, str))
        assert "refused a handover" in errs and "without a memfd" in errs, errs



def test_stdout_reader_gone_keeps_serving():
    """--json whose stdout reader goes away just before the switchover, so the first
    failed write comes right after the process is stopped, when only the source can
    serve it: no death by SIGPIPE; the source says so once on stderr, prints nothing
    more there and finishes the migration, leaving the migrated process stopped."""
    setup()
    with Mem("--pages", "256") as m, tempfile.TemporaryDirectory(prefix="fl-src-") as d:
        ctl = os.path.join(d, "ctl")
        p = subprocess.Popen([FAULTLINE, "source", "--pid", str(m.pid), *m.ranges(),
                              "--listen", "127.0.0.1:0", "--control", ctl, "--json",
                              "--switchover-on-command"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            err = Lines(p.stderr)
            ready = json.loads(p.stdout.readline())
            src = type("S", (), {"addr": ready["listen"]})()
            t = Target(src, "--precopy", "--pause-at", "switchover")
            while json.loads(p.stdout.readline())["event"] != "precopy_done":
                pass
            p.stdout.close()  # the reader goes away; the switchover event is the next line
            subprocess.run([FAULTLINE, "source", "--control", ctl, "--switchover-now"],
                           check=True, capture_output=True, timeout=30)
            t.wait_paused("switchover")
            assert m.state() == "T", "the process should be stopped at switchover"
            t.resume()
            rc, evs, summ = t.finish()
            assert rc == 0 and summ["missing"] == 0, (rc, summ, err.all[-5:])
            assert t.image() == m.memfd(), "target image differs from the source's memory"
            p.wait(timeout=30)
            err.rest()
            lines = [x for x in err.all if isinstance(x, str)]
            assert p.returncode == 0, (p.returncode, lines)
            said = [x for x in lines if "cannot write events to stdout" in x]
            assert len(said) == 1, lines
            assert m.state() == "T", "a migrated process must stay stopped"
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_interrupted_after_switchover_keeps_vm_stopped():
    """Once a target was sent the Switchover it may run the VM: a source stopped
    (SIGTERM) before the end leaves the process stopped, never resumes it."""
    setup()
    with Mem("--pages", "64") as m, Source(m, "--switchover-on-command") as src:
        t = Target(src, "--pause-at", "switchover")
        assert src.control("--switchover-now").returncode == 0
        t.wait_paused("switchover")
        src.p.terminate()
        s = events(src.wait(), "source_summary")[0]
        assert not s["completed"] and s["vm_stopped"] and not s["vm_resumed"], s
        assert m.state() == "T", "the process must stay stopped: the target may run it"
        t.resume()
        t.finish()


def test_prot_none_page_is_not_poison():
    """A filled page of a userfaultfd-registered range made PROT_NONE: process_vm_readv
    refuses it, but it is mapped memory, not poison; the target gets its contents."""
    setup()
    with OddMem("anon", 64, prot_none=(3, 10)) as h, \
            Source(h, "--switchover-on-command") as src:
        t = Target(src, "--precopy", "--request", "0:3", "--pause-at", "precopy_done")
        t.wait_paused("precopy_done")
        assert src.control("--switchover-now").returncode == 0
        t.resume()
        rc, evs, summ = t.finish()
        sevs = src.wait()
        assert not events(sevs, "poison"), events(sevs, "poison")
        assert rc == 0 and summ["poisoned_pages"] == [] and summ["missing"] == 0, summ
        ans = events(evs, "answer")
        assert ans and int(ans[0]["fnv"], 16) == fnv1a(h.expected(3)), ans
        assert t.image() == h.image(), "target image differs from the process's memory"
        s = events(sevs, "source_summary")[0]
        assert src.p.returncode == 0 and s["completed"] and s["poisoned"] == 0, s


def test_unreadable_page_is_an_error_not_poison():
    """memfd_secret memory can't be read from outside: the first such page read
    (at switchover: the target wanted no precopy) ends the run with an error that
    names it, never poison; the target is told why and, since no target was told
    to switch over, the stopped process is resumed."""
    setup()
    with OddMem("secret", 16) as h, Source(h) as src:
        t = Target(src)
        rc, evs, summ = t.finish()
        sevs = src.wait()
        src.err.rest()
        errs = "\n".join(x for x in src.err.all if isinstance(x, str))
        assert not events(sevs, "poison"), events(sevs, "poison")
        assert src.p.returncode != 0, errs
        assert f"page 0 of region 0 (0x{h.addr:x}" in errs and "cannot be read" in errs, errs
        assert "not declared poisoned" in errs, errs
        err = events(evs, "error")
        assert rc == 3 and err and "page 0 of region 0" in err[0]["text"], (rc, evs[-3:])
        assert summ is None or summ["poisoned_pages"] == [], summ
        s = events(sevs, "source_summary")[0]
        assert not s["completed"] and s["vm_stopped"] and s["vm_resumed"], s
        assert h.state() != "T", "the process should be running again"


def test_device_memory_refused():
    """[vvar] is VM_IO|VM_PFNMAP: pagemap shows it as a hole, so it would be served as
    zeros; such a --range is refused up front."""
    setup()
    with OddMem("anon", 8) as h:
        if not h.info["vvar"]:
            raise Skip("no [vvar] mapping")
        start, end = (int(x, 16) for x in h.info["vvar"].split("-"))
        run_source_expect_error(["--pid", str(h.pid), "--range", f"{hex(start)}:{end - start}",
                                 "--listen", "127.0.0.1:0"], "device memory")


if __name__ == "__main__":
    main([test_help_has_examples, test_clear_errors, test_precopy_dirty_map_and_image,
          test_requests_and_queries_before_switchover, test_inject_poison,
          test_poison_marker_seen_by_scan, test_reconnect_resume_loses_nothing,
          test_protocol_errors_keep_serving, test_status_and_progress,
          test_vmm_usage_errors, test_vmm_handover_contents_and_dirty,
          test_vmm_handover_inject_poison, test_vmm_handover_without_memfd_refused,
          test_stdout_reader_gone_keeps_serving,
          test_interrupted_after_switchover_keeps_vm_stopped, test_prot_none_page_is_not_poison,
          test_unreadable_page_is_an_error_not_poison, test_device_memory_refused])
