"""A two-host postcopy migration driven step by step, for the integrity tests.

Two network namespaces (netns.NetnsPair) are the source and target hosts.
The source host runs a test VM (build/migrate-vm --role source) served by
`faultline source`; the target host runs `faultline target`, which launches
the target VM (build/migrate-vm --role target) and routes its faults.  The
test drives the phases (switchover on command, connection cuts, router
kills, source restarts) through the methods below, then `result()` gathers
the independent references every check compares against:

  - the stopped source VM's final memory, read byte for byte through
    /proc/PID/mem (a poisoned page cannot be read);
  - the target guest's own record of its writes (`--writes`: the last stamp
    each page got, at which offset);
  - the target VM's image of its memory after the migration and its list of
    pages that raised SIGBUS (`--image`, target_summary).

`check_pages()` applies the rule page by page: a page poisoned at the source
raises SIGBUS; a page the target guest wrote holds its last write (the rest
of the page as the source left it); every other page is byte-identical to
the source's final memory (a discarded one reads zero).

The VMs run without /dev/kvm (`--cpu threads`: guest threads touch guest
memory directly) unless the caller asks for KVM, so this runs everywhere.
"""
import json
import os
import signal
import subprocess
import threading
import time

import tap
import tlscreds

MIGRATE_VM = os.path.join(tap.BUILD, "migrate-vm")
PAGE = 4096
HUGE = 2 << 20
PORT = 7411


class Lines:
    """Collects JSON lines of a process's stdout on a thread."""

    def __init__(self, proc, name):
        self.proc, self.name, self.objs, self.raw = proc, name, [], []
        self.cv = threading.Condition()
        self.t = threading.Thread(target=self._pump, daemon=True)
        self.t.start()

    def _pump(self):
        for line in self.proc.stdout:
            with self.cv:
                self.raw.append(line)
                if line.startswith("{"):
                    try:
                        self.objs.append(json.loads(line))
                    except ValueError:
                        pass
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_for(self, pred, timeout, what):
        end = time.monotonic() + timeout
        with self.cv:
            while True:
                for o in self.objs:
                    if pred(o):
                        return o
                left = end - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self.t.is_alive()):
                    raise AssertionError(f"{self.name}: no {what} within {timeout}s; "
                                         f"exit={self.proc.poll()} output tail: {''.join(self.raw[-8:])}")
                self.cv.wait(min(left, 0.5))

    def events(self, name):
        with self.cv:
            return [o for o in self.objs if o.get("event") == name]

    def last(self, name):
        ev = self.events(name)
        return ev[-1] if ev else None


def stopped(pid):
    """Every thread of pid in state T/t."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("T", "t"):
            return False
    return True


def read_source_pages(pid, addr, npages):
    """The source VM's final memory; None for pages that cannot be read
    (poisoned: a UFFDIO_POISON marker reads as EIO)."""
    pages = []
    chunk = 256
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as f:
        for first in range(0, npages, chunk):
            n = min(chunk, npages - first)
            try:
                data = os.pread(f.fileno(), n * PAGE, addr + first * PAGE)
                if len(data) == n * PAGE:
                    pages.extend(data[i * PAGE:(i + 1) * PAGE] for i in range(n))
                    continue
            except OSError:
                pass
            for i in range(first, first + n):
                try:
                    d = os.pread(f.fileno(), PAGE, addr + i * PAGE)
                    pages.append(d if len(d) == PAGE else None)
                except OSError:
                    pages.append(None)
    return pages


def read_writes(path):
    """The target guest's record: {page: (offset, 8 bytes of its last write)}."""
    out = {}
    with open(path) as f:
        for line in f:
            page, off, val = line.split()
            out[int(page)] = (int(off), int(val, 16).to_bytes(8, "little"))
    return out


class Migration:
    def __init__(self, net, tmp, mode, *, cpu="threads", vcpus=2, mem_mib=64, hot=0.25,
                 write_percent=30, max_bandwidth=16, journal=True, vm_args=(), src_args=(),
                 router_args=(), target_run_ms=2500, on_command=True, session=None, tls="psk",
                 hugetlb=False):
        self.net, self.tmp, self.mode, self.cpu = net, tmp, mode, cpu
        # --hugetlb: both VMs on 2 MiB hugetlbfs pages; the guest and the
        # checks still work in 4 KiB pages, the migration pair in 2 MiB ones
        # (inject() takes the source's page indices: huge pages then).
        # hugetlb: True (2 MiB pages) or "1g"
        self.hugetlb = hugetlb
        self.mig_page = (1 << 30) if hugetlb == "1g" else HUGE if hugetlb else PAGE
        self.huge_args = ["--hugetlb-1g"] if hugetlb == "1g" else ["--hugetlb"] if hugetlb else []
        self.vcpus, self.mem_mib, self.hot = vcpus, mem_mib, hot
        self.write_percent, self.max_bandwidth = write_percent, max_bandwidth
        self.vm_args, self.src_args, self.router_args = list(vm_args), list(src_args), list(router_args)
        self.target_run_ms, self.on_command, self.session = target_run_ms, on_command, session
        self.ctrl = os.path.join(tmp, "src.ctl")
        self.vsock = os.path.join(tmp, "router.sock")
        self.journal = os.path.join(tmp, "poison.journal") if journal is True else journal
        self.image = os.path.join(tmp, "target.img")
        self.writes = os.path.join(tmp, "writes.txt")
        self.injected = []
        # The hosts are not on loopback: the connection is TLS (PSK by
        # default, QEMU's keys.psk format), x509 (QEMU's directory layout),
        # or plaintext with --insecure.
        self.tls = tls
        if tls == "psk":
            psk = tlscreds.make_psk(os.path.join(tmp, "keys.psk"))
            self.tls_args = ["--tls-psk", psk]
        elif tls == "x509":
            d = tlscreds.make_x509(os.path.join(tmp, "pki"), net.src_ip)
            self.tls_args = ["--tls-dir", d]
        else:
            self.tls_args = ["--insecure"]
        self.routers = []           # every faultline target started, in order
        self.src = self.src_out = None

    # ---- source host ----------------------------------------------------

    def start_source_vm(self, extra=()):
        p = self.net.popen("src", [MIGRATE_VM, "--role", "source", "--json", "--cpu", self.cpu,
                                   "--vcpus", str(self.vcpus), "--mem-mib", str(self.mem_mib),
                                   "--hot-fraction", str(self.hot),
                                   *self.huge_args, *extra],
                           stdout=subprocess.PIPE, text=True)
        self.src_vm, self.src_vm_out = p, Lines(p, "source VM")
        self.vm = self.src_vm_out.wait_for(lambda o: o.get("event") == "vm", 30, "vm line")
        self.addr, self.length = int(self.vm["addr"], 16), self.vm["length"]
        self.npages = self.length // PAGE
        return self.vm

    def start_source(self):
        if os.path.exists(self.ctrl):
            os.unlink(self.ctrl)
        cmd = [tap.FAULTLINE, "source", "--pid", str(self.vm["pid"]),
               "--range", f"{self.vm['addr']}:{self.length}",
               "--listen", f"{self.net.src_ip}:{PORT}", "--control", self.ctrl, "--json"]
        if self.max_bandwidth:
            cmd += ["--max-bandwidth", str(self.max_bandwidth)]
        if self.on_command:
            cmd.append("--switchover-on-command")
        cmd += self.tls_args
        if self.session:
            cmd += ["--session", self.session]
        p = self.net.popen("src", cmd + self.src_args, stdout=subprocess.PIPE, text=True)
        self.src, self.src_out = p, Lines(p, "faultline source")
        ready = self.src_out.wait_for(lambda o: o.get("event") in ("ready", "listening") or
                                      "session" in o, 20, "source ready line")
        self.session = self.session or ready.get("session")
        self.ready = ready
        deadline = time.monotonic() + 20
        while not os.path.exists(self.ctrl):
            assert p.poll() is None, f"faultline source exited {p.returncode}"
            assert time.monotonic() < deadline, "faultline source never opened its control socket"
            time.sleep(0.05)
        return p

    def control(self, *args):
        p = self.net.run("src", [tap.FAULTLINE, "source", "--control", self.ctrl, *args],
                         capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"source control {args}: rc={p.returncode} {p.stdout} {p.stderr}"
        return p.stdout

    def inject(self, pages):
        self.control("--inject", "0:" + ",".join(str(x) for x in pages))
        self.injected += list(pages)

    def switchover(self):
        if self.on_command:
            self.control("--switchover-now")
        self.src_out.wait_for(lambda o: o.get("event") == "switchover", 60, "switchover")
        deadline = time.monotonic() + 10
        while not stopped(self.vm["pid"]):
            assert time.monotonic() < deadline, "source VM never stopped after the switchover"
            time.sleep(0.02)

    def kill_source(self):
        self.src.send_signal(signal.SIGKILL)
        self.src.wait(timeout=10)

    # ---- target host ----------------------------------------------------

    def router_cmd(self, extra=()):
        cmd = [tap.FAULTLINE, "target", "--source", f"{self.net.src_ip}:{PORT}",
               "--vmm-socket", self.vsock, "--json", "--interval", "100", *self.tls_args]
        if self.journal:
            cmd += ["--journal", self.journal]
        return cmd + self.router_args + list(extra)

    def start_target(self, reconnect=False, extra_router=()):
        vm_cmd = [MIGRATE_VM, "--role", "target", "--router", self.vsock, "--mode", self.mode,
                  "--cpu", self.cpu, "--vcpus", str(self.vcpus), "--mem-mib", str(self.mem_mib),
                  "--run-ms", str(self.target_run_ms), "--json", "--image", self.image,
                  "--until-router-done", "--writes", self.writes,
                  "--write-percent", str(self.write_percent),
                  *self.huge_args, *self.vm_args]
        if reconnect:
            vm_cmd.append("--reconnect")
        p = self.net.popen("tgt", self.router_cmd(extra_router) + ["--", *vm_cmd],
                           stdout=subprocess.PIPE, text=True)
        self.tgt = p
        self.tgt_out = self.vm_out = Lines(p, "faultline target")
        self.routers.append((p, self.tgt_out))
        return p

    def restart_router(self, extra=()):
        """A new router on the same socket and journal; the orphaned VMM
        (--reconnect) hands over again."""
        p = self.net.popen("tgt", self.router_cmd(extra), stdout=subprocess.PIPE, text=True)
        self.tgt, self.tgt_out = p, Lines(p, f"faultline target #{len(self.routers) + 1}")
        self.routers.append((p, self.tgt_out))
        return p

    def kill_router(self):
        self.tgt.send_signal(signal.SIGKILL)
        self.tgt.wait(timeout=10)
        self.vm_out.wait_for(lambda o: o.get("event") == "router_lost", 10, "router_lost")

    def wait_router(self, pred, timeout, what):
        return self.tgt_out.wait_for(lambda o: o.get("event") == "router_progress" and pred(o),
                                     timeout, what)

    def cut(self):
        """Kill the TCP connection under both ends (ss -K)."""
        p = self.net.run("src", ["ss", "-K", "dst", self.net.tgt_ip], capture_output=True, text=True)
        assert p.returncode == 0, f"ss -K: {p.stderr}"

    # ---- the end ----------------------------------------------------------

    def result(self, timeout=240):
        summary = self.tgt_out.wait_for(lambda o: o.get("event") == "router_summary", timeout,
                                        "router summary")
        rc = self.tgt.wait(timeout=120)
        tv = self.vm_out.wait_for(lambda o: o.get("event") == "target_summary", 120,
                                  "target VM summary")
        assert stopped(self.vm["pid"]), "source VM not stopped: its memory is not final"
        src_pages = read_source_pages(self.vm["pid"], self.addr, self.npages)
        return dict(router=summary, router_rc=rc, tv=tv, source_pages=src_pages,
                    image=open(self.image, "rb").read() if os.path.exists(self.image) else None,
                    writes=read_writes(self.writes) if os.path.exists(self.writes) else {},
                    vm=self.vm, injected=sorted(self.injected),
                    tgt_vm=self.vm_out.wait_for(lambda o: o.get("event") == "vm", 1, "vm"))


def classify_pages(res, discarded=()):
    """Per page, what went wrong against the references.  Returns a dict of
    lists: reverted (a guest write replaced by other bytes), stale (differs
    from the source's final memory), lost (reads zero where the source had
    data), poisoned_healthy (SIGBUS though the source can read it),
    unpoisoned (the source's poison did not reach the target)."""
    img, vm = res["image"], res["vm"]
    assert img is not None, "target VM wrote no image"
    control = set(vm["control_pages"])
    sigbus = set(res["tv"]["sigbus_pages"])
    discarded = set(discarded)
    zero = bytes(PAGE)
    bad = {k: [] for k in ("reverted", "stale", "lost", "poisoned_healthy", "unpoisoned")}
    for i, want in enumerate(res["source_pages"]):
        if i in control:
            continue
        if want is None:
            if i not in sigbus:
                bad["unpoisoned"].append(i)
            continue
        if i in sigbus:
            bad["poisoned_healthy"].append(i)
            continue
        got = img[i * PAGE:(i + 1) * PAGE]
        if i in discarded:
            want = zero
        w = res["writes"].get(i)
        if w:
            off, val = w
            if got[off:off + 8] != val:
                bad["reverted"].append(i)
                continue
            want = want[:off] + val + want[off + 8:]
        if got != want:
            bad["lost" if got == zero else "stale"].append(i)
    return bad


def check_pages(res, discarded=()):
    r, tv = res["router"], res["tv"]
    print(f"# router: faults {r['faults']} received {r['pages_received']} reconnects {r['reconnects']} "
          f"eagain {r['eagain']} events {r['events']} kept_guest {r.get('kept_guest')} "
          f"stale_dropped {r.get('stale_dropped')} poisons {r['poisons']}; guest wrote "
          f"{tv.get('written_pages')} pages", flush=True)
    bad = classify_pages(res, discarded)
    # The guest's own record of writes found replaced while it ran (a revert
    # its later writes would hide in the final image).
    seen = res["tv"].get("reverted_pages", [])
    bad["reverted"] = sorted(set(bad["reverted"]) | set(seen))
    if res["tv"].get("writes_reverted", 0) and not seen:
        bad["reverted"].append(-1)
    msg = ", ".join(f"{len(v)} {k} (e.g. {v[:8]})" for k, v in bad.items() if v)
    assert not msg, f"pages wrong after the migration: {msg}; router: {res['router']}"
    return bad
