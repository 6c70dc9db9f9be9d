#!/usr/bin/env python3
"""The migration channel's security, two hosts (netns + veth) apart.

- A migration over TLS 1.3 with x509 credentials (QEMU's tls-creds-x509
  layout) and with a pre-shared key (QEMU's keys.psk) completes, and every
  page verifies as in the integrity e2e; the source names the target's
  authenticated identity.
- Wrong CA, expired certificate, wrong key, a plaintext peer: refused with
  a clear error on both ends, and nothing is served.
- Plaintext off loopback is refused unless --insecure (which warns).
- Hostile peers during a live migration (a second target with a made-up
  resume, a plain second Hello, garbage, idle connections filling the
  slots): none of them gets a page or disturbs the migration, which
  completes with every page right.
"""
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tap  # noqa: E402
import tlscreds  # noqa: E402
from netns import NetnsPair  # noqa: E402
from migration import Migration, check_pages, PORT  # noqa: E402

WIRE_CLIENT = os.path.join(tap.BUILD, "wire-client")


def full_migration(tls):
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        m = Migration(net, tmp, "minor", tls=tls, mem_mib=32)
        vm = m.start_source_vm()
        m.start_source()
        s = vm["slices"][0]
        m.inject([s["first"] + s["hot"] + 20])
        m.start_target()
        con = m.src_out.wait_for(lambda o: o.get("event") == "target_connected", 60, "target")
        m.src_out.wait_for(lambda o: o.get("event") == "precopy_done", 60, "precopy done")
        m.switchover()
        res = m.result()
        assert res["router"]["finished"] is True, res["router"]
        check_pages(res)
        return con


def test_x509_migration():
    con = full_migration("x509")
    assert con["tls"] == "x509", con
    assert "CN=target-host" in con["identity"], con


def test_psk_migration():
    con = full_migration("psk")
    assert con["tls"] == "psk" and con["identity"] == "psk:faultline", con


def refused(src_tls, tgt_tls, expect_router, expect_source):
    """A source with src_tls, a router with tgt_tls (lists of args): the
    handshake fails, both say why, and the source serves nothing."""
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        m = Migration(net, tmp, "missing", mem_mib=8, write_percent=0)
        src_args, tgt_args = src_tls(tmp, net), tgt_tls(tmp, net)
        m.tls_args = src_args
        m.start_source_vm()
        m.start_source()
        m.tls_args = tgt_args
        m.start_target()
        note = m.tgt_out.wait_for(lambda o: o.get("event") == "router_note" and
                                  expect_router in o.get("text", ""), 30,
                                  f"router saying '{expect_router}'")
        drop = m.src_out.wait_for(lambda o: o.get("event") == "peer_refused" and
                                  expect_source in o.get("reason", ""), 30,
                                  f"source saying '{expect_source}'")
        assert not m.src_out.events("target_connected"), m.src_out.events("target_connected")
        prog = m.tgt_out.last("router_progress")
        assert prog is None or prog["pages_received"] == 0, prog
        return note, drop


def psk_args(path):
    return lambda tmp, net: ["--tls-psk", path]


def x509_args(name, **kw):
    def make(tmp, net):
        return ["--tls-dir", tlscreds.make_x509(os.path.join(tmp, name), net.src_ip, **kw)]
    return make


def test_wrong_ca_refused():
    with tempfile.TemporaryDirectory() as d:
        note, _ = refused(x509_args("a"), x509_args("b"), "certificate", "refused")
        assert "TLS" in note["text"], note


def test_expired_client_certificate_refused():
    def src(tmp, net):
        d = tlscreds.make_x509(os.path.join(tmp, "pki"), net.src_ip, expired_client=True)
        return ["--tls-dir", d]
    # TLS 1.3: the client's certificate is checked after the client
    # finished its part, so the router sees the source hang up on it
    refused(src, lambda tmp, net: ["--tls-dir", os.path.join(tmp, "pki")], "", "expired")


def test_wrong_psk_refused():
    def src(tmp, net):
        return ["--tls-psk", tlscreds.make_psk(os.path.join(tmp, "src.psk"))]

    def tgt(tmp, net):
        return ["--tls-psk", tlscreds.make_psk(os.path.join(tmp, "tgt.psk"))]
    refused(src, tgt, "TLS", "refused")


def test_plaintext_peer_refused():
    def src(tmp, net):
        return ["--tls-psk", tlscreds.make_psk(os.path.join(tmp, "src.psk"))]
    refused(src, lambda tmp, net: ["--insecure"], "", "refused")


def test_plaintext_off_loopback_refused():
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        p = net.run("src", [tap.FAULTLINE, "source", "--vmm-socket", os.path.join(tmp, "v"),
                            "--listen", f"{net.src_ip}:{PORT}"], timeout=30)
        assert p.returncode != 0, p
        assert "not on loopback" in p.stderr and "--tls-psk" in p.stderr, p.stderr
        sock = os.path.join(tmp, "s")
        p = net.run("tgt", [tap.FAULTLINE, "target", "--source", f"{net.src_ip}:{PORT}",
                            "--vmm-socket", sock, "--", os.path.join(tap.BUILD, "migrate-vm"),
                            "--role", "target", "--cpu", "threads", "--mem-mib", "4", "--vcpus", "1",
                            "--router", sock, "--run-ms", "100"], timeout=60)
        assert p.returncode != 0, p
        assert "not on loopback" in p.stderr and "--tls-dir" in p.stderr, p.stderr
        # --insecure: allowed, with a warning (then it waits for its VMM)
        p = net.popen("src", [tap.FAULTLINE, "source", "--vmm-socket", os.path.join(tmp, "v2"),
                              "--listen", f"{net.src_ip}:{PORT}", "--insecure"],
                      stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        assert p.poll() is None, f"--insecure source exited {p.returncode}"
        p.kill()
        err = p.stderr.read()
        assert "warning" in err and "unencrypted" in err, err


def hostile(net, args, timeout=20):
    p = net.run("tgt", [WIRE_CLIENT, "target", "--connect", f"{net.src_ip}:{PORT}",
                        "--timeout-ms", "5000", *args], timeout=timeout)
    out = tap.jsonl(p.stdout)
    pages = [o for o in out if o.get("event") in ("answer", "hello", "poison_update")]
    assert not pages, f"hostile peer {args} got {pages[:3]}"
    return p, out


def test_hostile_peers_during_migration():
    """Plaintext (--insecure) so that a hand-written client can speak the
    protocol at all: the rules that keep the migration safe are the
    source's, and hold without TLS too."""
    tap.require_root()
    with tempfile.TemporaryDirectory() as tmp, NetnsPair() as net:
        m = Migration(net, tmp, "minor", tls="insecure")
        vm = m.start_source_vm()
        m.start_source()
        m.start_target()
        m.src_out.wait_for(lambda o: o.get("event") == "target_connected", 60, "target")
        # during precopy, with the real target connected
        _, out = hostile(net, ["--resume", "--session", "1234abcd"])
        assert any(o.get("event") == "error" and "session" in o.get("text", "") for o in out), out
        _, out = hostile(net, [])
        assert any(o.get("event") == "error" for o in out), out
        _, out = hostile(net, ["--resume"])       # resume claiming session 0
        assert any(o.get("event") == "error" for o in out), out
        hostile(net, ["--garbage"])
        m.src_out.wait_for(lambda o: o.get("event") == "precopy_done", 60, "precopy done")
        m.switchover()
        # idle connections that never say Hello, more than the source's
        # slots, opened as the real target's connection is cut: it must get
        # back in past them (at worst once they time out, 5 s)
        m.cut()
        idle = [net.popen("tgt", ["python3", "-c",
                                  "import socket,time,sys; s=socket.create_connection"
                                  f"(('{net.src_ip}',{PORT})); time.sleep(30)"])
                for _ in range(6)]
        m.wait_router(lambda o: o.get("reconnects", 0) >= 1 and o.get("connected"), 60,
                      "router back in despite idle peers")
        res = m.result()
        for p in idle:
            p.kill()
        assert res["router"]["finished"] is True, res["router"]
        check_pages(res)
        errs = m.src_out.events("protocol_error")
        assert len(errs) >= 3, errs


if __name__ == "__main__":
    tap.main([test_psk_migration, test_x509_migration, test_wrong_ca_refused,
              test_expired_client_certificate_refused, test_wrong_psk_refused,
              test_plaintext_peer_refused, test_plaintext_off_loopback_refused,
              test_hostile_peers_during_migration])
