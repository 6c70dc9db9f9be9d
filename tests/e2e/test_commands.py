#!/usr/bin/env python3
"""The README's two commands run as written: as root on a machine without
sudo (a fresh Debian container), and for a user with sudo.

scripts/as-root is what makes that so; the references are `id -u` of what
it runs and the README's own text (.ci/run must be its test command).
"""
import os
import re
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
    env = {"PATH": ":".join(path_dirs), "HOME": "/"}
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           AS_ROOT, "id", "-u"], capture_output=True, text=True, env=env)


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


if __name__ == "__main__":
    main([test_readme_commands_and_ci_agree, test_as_root_as_root_runs_directly,
          test_as_root_user_without_sudo_is_told, test_as_root_user_with_sudo_goes_through_it])
