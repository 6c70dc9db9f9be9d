#!/usr/bin/env python3
"""The README's two commands run as written: as root on a machine without
sudo (a fresh Debian container), and for a user with sudo.

scripts/as-root is what makes that so; the references are `id -u` of what
it runs and the README's own text (.ci/run must be its test command).
"""
import os
import re
import shutil
import stat
import subprocess
import tempfile

from tap import ROOT, Skip, main

AS_ROOT = os.path.join(ROOT, "scripts", "as-root")


def readme_commands():
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = text.split("## Fresh machine: two commands", 1)[1].split("\n## ", 1)[0]
    return [l.strip() for l in block.splitlines() if l.startswith("    ")]


def test_readme_commands_and_ci_agree():
    setup, test = readme_commands()
    assert setup.startswith("scripts/as-root scripts/install-deps.sh && make"), setup
    assert "sudo " not in setup and "sudo " not in test, (setup, test)
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    assert ci[-1] == test, f".ci/run runs {ci[-1]!r}, the README says {test!r}"


def test_as_root_as_root_runs_directly():
    if os.geteuid() != 0:
        raise Skip("needs root")
    # no sudo on PATH: as root it must not need one
    env = dict(os.environ, PATH="/usr/sbin:/usr/bin:/sbin:/bin")
    p = subprocess.run([AS_ROOT, "id", "-u"], capture_output=True, text=True, env=env)
    assert p.returncode == 0 and p.stdout.strip() == "0", (p.returncode, p.stdout, p.stderr)


def run_as_nobody(path_dirs):
    """scripts/as-root run by an unprivileged user (65534). A copy in a directory
    that user can enter: the checkout may sit under a private one (mktemp -d)."""
    env = {"PATH": ":".join(path_dirs), "HOME": "/"}
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        script = os.path.join(d, "as-root")
        shutil.copy(AS_ROOT, script)
        os.chmod(script, 0o755)
        return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                               script, "id", "-u"], capture_output=True, text=True, env=env)


def test_as_root_user_without_sudo_is_told():
    if os.geteuid() != 0:
        raise Skip("needs root (to become an unprivileged user)")
    if any(os.path.exists(os.path.join(d, "sudo")) for d in ("/usr/bin", "/bin")):
        raise Skip("sudo is installed here")
    p = run_as_nobody(["/usr/bin", "/bin"])
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    assert "needs root" in p.stderr and "install sudo" in p.stderr, p.stderr


def test_as_root_user_with_sudo_goes_through_it():
    """A user with sudo: the command goes through sudo (a recording sudo on
    PATH stands for it where the machine has none; it then runs the command)."""
    if os.geteuid() != 0:
        raise Skip("needs root (to become an unprivileged user)")
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        log = os.path.join(d, "log")
        fake = os.path.join(d, "sudo")
        with open(fake, "w") as f:
            f.write(f'#!/bin/sh\necho "$@" > {log}\nshift\nexec "$@"\n')
        os.chmod(fake, 0o755)
        open(log, "w").close()
        os.chmod(log, 0o666)
        p = run_as_nobody([d, "/usr/bin", "/bin"])
        with open(log) as f:
            called = f.read().strip()
    assert p.returncode == 0 and p.stdout.strip() == "65534", (p.stdout, p.stderr)
    assert called == "-- id -u", called


VMM_PROGRAM = r"""
#include <stdio.h>
#include <faultline/faultline.h>

int main(void)
{
	struct fl_region reg = { .base = (void *)0x10000000, .length = 4096, .memfd = -1 };
	struct fl_router_config cfg = { .source = "nohostport", .mode = FL_MODE_MISSING,
					.uffd = -1, .regions = &reg, .nregions = 1 };
	char err[256] = "";
	int ret = fl_router_check_source(&cfg, err, sizeof(err));

	printf("%d %s\n", ret, err);
	return 0;
}
"""


def public_functions():
    with open(os.path.join(ROOT, "include", "faultline", "faultline.h")) as f:
        return sorted(set(re.findall(r"^[a-z].*\b(fl_[a-z_]+)\(", f.read(), re.M)))


def test_make_install_and_uninstall():
    """make install into a DESTDIR: a VMM builds against the installed header
    and pkg-config file and links the static and the shared library; the
    binary, its man pages (one per subcommand), the demo workload, the
    systemd unit and the Prometheus example are in place; make uninstall
    takes every file away again."""
    with tempfile.TemporaryDirectory() as d:
        dest = os.path.join(d, "root")
        p = subprocess.run(["make", "install", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        usr = os.path.join(dest, "usr")
        fl = os.path.join(usr, "bin", "faultline")
        v = subprocess.run([fl, "--version"], capture_output=True, text=True)
        assert v.returncode == 0 and re.match(r"faultline \d+\.\d+\.\d+$", v.stdout.strip()), v
        version = v.stdout.split()[1]
        # a man page for the command and one for each subcommand, rendered by man
        cmds = [l.split("\t") for l in subprocess.run([fl, "--commands"], capture_output=True,
                                                        text=True).stdout.splitlines()]
        assert len(cmds) >= 8, cmds
        for name, what in [("faultline", None)] + [(f"faultline-{c}", w) for c, w in cmds]:
            page = os.path.join(usr, "share", "man", "man1", name + ".1")
            m = subprocess.run(["man", "-l", page], capture_output=True, text=True,
                               env=dict(os.environ, MANWIDTH="200"))
            assert m.returncode == 0 and "NAME" in m.stdout and "SYNOPSIS" in m.stdout, (page, m)
            if what:
                assert what.split(" (")[0] in " ".join(m.stdout.split()), (page, what)
        # the demo finds its workload where install put it
        h = subprocess.run([fl, "demo", "--help"], capture_output=True, text=True)
        assert h.returncode == 0 and "Usage: faultline demo" in h.stdout
        assert os.access(os.path.join(usr, "lib", "faultline", "uffd-workload"), os.X_OK)
        if os.geteuid() == 0:
            r = subprocess.run([fl, "demo"], capture_output=True, text=True, timeout=120)
            assert r.returncode == 0 and "usecs" in r.stdout, r.stderr[-1000:]
        # the unit runs the installed binary; the example scrape configuration is there
        with open(os.path.join(usr, "lib", "systemd", "system", "faultline-exporter.service")) as f:
            unit = f.read()
        assert "ExecStart=/usr/bin/faultline exporter" in unit, unit
        assert os.path.exists(os.path.join(usr, "share", "doc", "faultline",
                                           "prometheus-faultline.yml"))
        # a VMM builds against what was installed: pkg-config, shared and static
        env = dict(os.environ, PKG_CONFIG_SYSROOT_DIR=dest,
                   PKG_CONFIG_PATH=os.path.join(usr, "lib", "pkgconfig"))
        pc = subprocess.run(["pkg-config", "--modversion", "faultline"],
                            capture_output=True, text=True, env=env)
        assert pc.returncode == 0 and pc.stdout.strip() == version, pc
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "faultline"],
                               capture_output=True, text=True, env=env).stdout.split()
        assert f"-I{usr}/include" in flags and "-lfaultline" in flags, flags
        src = os.path.join(d, "vmm.c")
        with open(src, "w") as f:
            f.write(VMM_PROGRAM)
        shared = os.path.join(d, "vmm-shared")
        c = subprocess.run(["cc", src, *flags, "-o", shared], capture_output=True, text=True)
        assert c.returncode == 0, c.stderr
        r = subprocess.run([shared], capture_output=True, text=True,
                           env=dict(os.environ, LD_LIBRARY_PATH=os.path.join(usr, "lib")))
        assert r.returncode == 0 and "is not HOST:PORT" in r.stdout, (r.stdout, r.stderr)
        needed = subprocess.run(["readelf", "-d", shared], capture_output=True, text=True).stdout
        assert "libfaultline.so.0" in needed, needed
        static_libs = subprocess.run(["pkg-config", "--static", "--libs-only-l", "faultline"],
                                     capture_output=True, text=True, env=env).stdout.split()
        assert {"-lprotobuf-c", "-lz", "-lgnutls"} <= set(static_libs), static_libs
        static = os.path.join(d, "vmm-static")
        # libfaultline.a itself, its direct dependencies shared (Debian ships no static GnuTLS)
        c = subprocess.run(["cc", src, f"-I{usr}/include", os.path.join(usr, "lib", "libfaultline.a"),
                            "-lprotobuf-c", "-lz", "-lgnutls", "-o", static],
                           capture_output=True, text=True)
        assert c.returncode == 0, c.stderr
        r = subprocess.run([static], capture_output=True, text=True)
        assert "is not HOST:PORT" in r.stdout, r
        # the shared library exports the public API and nothing else
        syms = subprocess.run(["nm", "-D", "--defined-only", os.path.join(usr, "lib",
                                                                           "libfaultline.so.0")],
                              capture_output=True, text=True).stdout
        exported = sorted({l.split()[-1].split("@")[0] for l in syms.splitlines()
                           if l.split()[1:2] == ["T"]})
        assert exported == public_functions(), (exported, public_functions())
        p = subprocess.run(["make", "uninstall", f"DESTDIR={dest}", "PREFIX=/usr"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        left = [os.path.join(r, f) for r, _, fs in os.walk(dest) for f in fs]
        assert not left, left


if __name__ == "__main__":
    main([test_readme_commands_and_ci_agree, test_as_root_as_root_runs_directly,
          test_as_root_user_without_sudo_is_told, test_as_root_user_with_sudo_goes_through_it,
          test_make_install_and_uninstall])
