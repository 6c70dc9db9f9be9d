"""Two network namespaces joined by a veth pair, for migration tests.

    with NetnsPair() as net:            # raises tap.Skip if it cannot be built
        src = net.popen("src", [FAULTLINE, "source", "--listen", f"{net.src_ip}:7700"])
        net.run("tgt", ["ping", "-c1", net.src_ip])

"src" and "tgt" namespaces are named fl-src-SUFFIX and fl-tgt-SUFFIX, the
suffix unique per process and pair, so parallel test runs never share one.
The veth ends are created directly inside their namespaces (veth-src,
veth-tgt), so nothing is added to the host's namespace and interface names
cannot clash there.  Addresses: src 10.77.0.1/24, tgt 10.77.0.2/24; lo is
up in both.  Teardown (on leaving the `with`, also after an exception)
stops the processes started through popen() and deletes both namespaces,
which deletes the veth pair with them.

stdlib only; needs root and iproute2's `ip`.
"""
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tap import Skip  # noqa: E402

SRC_IP = "10.77.0.1"
TGT_IP = "10.77.0.2"
PREFIX = 24
_pairs = itertools.count()


def _ip(*args, check=True, timeout=20):
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {(p.stderr or p.stdout).strip()}")
    return p


class NetnsPair:
    def __init__(self, suffix=None):
        if suffix is None:
            suffix = f"{os.getpid()}-{next(_pairs)}"
        self.suffix = suffix
        self.names = {"src": f"fl-src-{suffix}", "tgt": f"fl-tgt-{suffix}"}
        self.ips = {"src": SRC_IP, "tgt": TGT_IP}
        self.src, self.tgt = self.names["src"], self.names["tgt"]
        self.src_ip, self.tgt_ip = SRC_IP, TGT_IP
        self._created = []
        self._procs = []

    # ---- setup / teardown -------------------------------------------------

    def __enter__(self):
        self.setup()
        return self

    def __exit__(self, *exc):
        self.teardown()
        return False

    def setup(self):
        if shutil.which("ip") is None:
            raise Skip("iproute2's `ip` is not installed (needed for network namespaces)")
        if os.geteuid() != 0:
            raise Skip("network namespaces need root")
        try:
            for side in ("src", "tgt"):
                _ip("netns", "add", self.names[side])
                self._created.append(self.names[side])
            _ip("link", "add", "veth-src", "netns", self.src, "type", "veth",
                "peer", "name", "veth-tgt", "netns", self.tgt)
            for side in ("src", "tgt"):
                ns = self.names[side]
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("-n", ns, "addr", "add", f"{self.ips[side]}/{PREFIX}", "dev", f"veth-{side}")
                _ip("-n", ns, "link", "set", f"veth-{side}", "up")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            self.teardown()
            raise Skip(f"cannot build the network namespaces: {e}")
        try:
            self.check_connectivity()
        except Exception:
            self.teardown()
            raise

    def teardown(self):
        # Everything still running in the namespaces goes too: a process
        # started through popen may have children of its own (faultline
        # target launches the VMM), and an orphan left holding a
        # userfaultfd would change what later tests see.
        for ns in self._created:
            pids = _ip("netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        self._procs = []
        for ns in reversed(self._created):
            _ip("netns", "del", ns, check=False)
        self._created = []

    # ---- running things inside ------------------------------------------------

    def name(self, ns):
        """'src' / 'tgt' or a full namespace name."""
        return self.names.get(ns, ns)

    def cmd(self, ns, argv):
        return ["ip", "netns", "exec", self.name(ns), *argv]

    def run(self, ns, argv, **kw):
        """subprocess.run inside the namespace (capture_output/text default on)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.cmd(ns, argv), **kw)

    def popen(self, ns, argv, **kw):
        """subprocess.Popen inside the namespace; killed at teardown if still running."""
        p = subprocess.Popen(self.cmd(ns, argv), **kw)
        self._procs.append(p)
        return p

    def ip_of(self, ns):
        return self.ips[ns]

    # ---- connectivity -------------------------------------------------------

    def check_connectivity(self, timeout=10.0):
        """Both directions, by ping if installed, else a TCP connect."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            ok1, m1 = self._reach("src", "tgt")
            ok2, m2 = self._reach("tgt", "src")
            if ok1 and ok2:
                return
            last = m1 if not ok1 else m2
            time.sleep(0.2)  # the veth's carrier can take a moment
        raise AssertionError(f"no connectivity between {self.src} and {self.tgt}: {last}")

    def _reach(self, a, b):
        if shutil.which("ping"):
            p = self.run(a, ["ping", "-c", "1", "-W", "1", self.ips[b]], timeout=10)
            return p.returncode == 0, (p.stdout + p.stderr).strip()
        return self._tcp_reach(a, b)

    def _tcp_reach(self, a, b):
        server = (
            "import socket,sys\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('{self.ips[b]}', 0)); s.listen(1); s.settimeout(5)\n"
            "print(s.getsockname()[1], flush=True)\n"
            "c,_=s.accept(); c.sendall(b'ok'); c.close()\n"
        )
        srv = subprocess.Popen(self.cmd(b, [sys.executable, "-c", server]),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            port = srv.stdout.readline().strip()
            if not port:
                return False, "listener failed: " + srv.stderr.read().strip()
            client = (
                "import socket\n"
                f"c=socket.create_connection(('{self.ips[b]}', {port}), timeout=3)\n"
                "print(c.recv(2).decode())\n"
            )
            p = self.run(a, [sys.executable, "-c", client], timeout=10)
            return p.stdout.strip() == "ok", (p.stdout + p.stderr).strip()
        finally:
            if srv.poll() is None:
                srv.send_signal(signal.SIGKILL)
            srv.wait()


def netns_pair(suffix=None):
    """Same as NetnsPair(suffix), for `with netns_pair() as net:`."""
    return NetnsPair(suffix)


if __name__ == "__main__":
    # Self-check: build a pair, talk across it, tear it down (also on error).
    import tap

    def test_pair_connects_and_is_removed():
        with NetnsPair() as net:
            names = (net.src, net.tgt)
            listed = _ip("netns", "list").stdout
            assert all(n in listed for n in names), listed
            out = net.run("src", ["ip", "-4", "-o", "addr", "show", "veth-src"]).stdout
            assert f"{SRC_IP}/{PREFIX}" in out, out
            out = net.run("tgt", ["ip", "-o", "link", "show", "lo"]).stdout
            assert "UP" in out, out
            host = _ip("-o", "link").stdout
            assert "veth-src" not in host and "veth-tgt" not in host, host
        listed = _ip("netns", "list").stdout
        assert not any(n in listed for n in names), listed

    def test_teardown_on_exception():
        names = None
        try:
            with NetnsPair() as net:
                names = (net.src, net.tgt)
                p = net.popen("src", ["sleep", "60"])
                raise KeyError("boom")
        except KeyError:
            pass
        assert p.poll() is not None
        listed = _ip("netns", "list").stdout
        assert not any(n in listed for n in names), listed

    def test_two_pairs_side_by_side():
        with NetnsPair() as a, NetnsPair() as b:
            assert a.src != b.src
            a.check_connectivity()
            b.check_connectivity()

    tap.main([test_pair_connects_and_is_removed, test_teardown_on_exception,
              test_two_pairs_side_by_side])
