#!/usr/bin/env python3
"""End-to-end tests of `faultline report`: recordings in, HTML out, opened in
headless Chromium.

What a report shows is checked against figures this test computes from the
recording itself (not from faultline): one lane per faulting thread (each
with its fault count), the fault total, the counts per resolution, per mode,
of races and poison by kind, lost records, the time blocked. The page must
render with no script or console error and draw something (a screenshot that
is not blank). A million-fault recording must be reported within a bounded
time into a bounded file, and draw within a bounded time; a recording built
to hit every size limit must stay bounded too; malformed input gets clear
warnings (or errors with --strict) and never a crash. A real QEMU postcopy
migration (TCG, tests/e2e/qemu_postcopy.py) is reported too: its vCPUs get
their lanes.

Chromium: the Debian package `chromium` (scripts/install-deps.sh).
FAULTLINE_KEEP_REPORTS=DIR keeps every report and screenshot in DIR.
"""
import html.parser
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import zlib

import report_synth
from tap import BUILD, FAULTLINE, Skip, main, require_root

WORKLOAD = os.path.join(BUILD, "uffd-workload")
KEEP = os.environ.get("FAULTLINE_KEEP_REPORTS")

# bounds asserted for a million faults (this machine: ~2.5 s, 1.6 MiB, ~0.3 s to draw)
MILLION_REPORT_S = 40
MILLION_HTML_BYTES = 4 << 20
MILLION_DRAW_MS = 10000
# any recording at all
MAX_HTML_BYTES = 8 << 20


def browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    raise Skip("no headless browser: install the Debian package chromium (scripts/install-deps.sh)")


def keep(path):
    if KEEP:
        os.makedirs(KEEP, exist_ok=True)
        shutil.copy(path, KEEP)


def chromium(url, *args, timeout=180):
    """Runs headless Chromium on url; returns (stdout, console lines, seconds)."""
    with tempfile.TemporaryDirectory(prefix="fl-chromium-") as profile:
        t0 = time.monotonic()
        p = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu",
                            "--no-first-run", "--disable-extensions", "--disable-sync",
                            f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
                            *args, url], capture_output=True, text=True, timeout=timeout)
        secs = time.monotonic() - t0
    # every console message of the page (the report's script logs nothing of its own)
    console = [l for l in p.stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l]
    return p, console, secs


class Dom(html.parser.HTMLParser):
    """The rendered page's parts the tests read: lanes, figures, error box, body state."""

    def __init__(self, text):
        super().__init__()
        self.lanes, self.stats, self.body, self.errors = [], {}, {}, ""
        self.in_errors = self.in_selftest = False
        self.selftest = ""
        self.warnings = False
        self.ids = set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "body":
            self.body = a
        if tag == "pre" and a.get("id") == "errors":
            self.in_errors = True
        if tag == "pre" and a.get("id") == "selftest":
            self.in_selftest = True
        if tag == "div" and "lane" in (a.get("class") or "").split():
            self.lanes.append(a)
        if "data-stat" in a:
            self.stats[a["data-stat"]] = int(a["data-value"])
        if a.get("id") == "warnings":
            self.warnings = True

    def handle_endtag(self, tag):
        if tag == "pre":
            self.in_errors = self.in_selftest = False

    def handle_data(self, data):
        if self.in_errors:
            self.errors += data
        if self.in_selftest:
            self.selftest += data


def png_nonblank(path):
    """The screenshot decoded far enough to say it is not one flat colour: distinct row bytes."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(idat)
    return len(set(raw[::7])) > 40


def render(html_path, screenshot=None, height=3000,
           parts=("timeline", "heatmap", "breakdown", "totals")):
    """Opens the report: (Dom, seconds to dump it). Asserts it rendered without an error."""
    url = "file://" + os.path.abspath(html_path)
    # #selftest: each view hovers a spot of its own and keeps the tooltip (checked below)
    p, console, secs = chromium(url + "#selftest", "--window-size=1400,1000", "--dump-dom")
    assert p.returncode == 0, f"chromium exited {p.returncode}: {p.stderr[-2000:]}"
    dom = Dom(p.stdout)
    assert not console, f"console output from the page: {console[:10]}"
    assert not dom.errors.strip(), f"the page reports errors: {dom.errors[:2000]}"
    assert dom.body.get("data-rendered") == "ok", f"not rendered: {dom.body}"
    for part in parts:
        assert part in dom.ids, f"no #{part} in the page"
    dom.hovers = {h["view"]: h for h in json.loads(dom.selftest or "[]")}
    for view, h in dom.hovers.items():
        assert h["want"] in h["tip"], f"{view}: hovering shows {h['tip']!r}, not {h['want']!r}"
    if screenshot:
        p, console, _ = chromium(url, f"--window-size=1400,{height}", f"--screenshot={screenshot}")
        assert p.returncode == 0, f"chromium screenshot exited {p.returncode}: {p.stderr[-1000:]}"
        assert not console, f"console output from the page: {console[:10]}"
        size = os.path.getsize(screenshot)
        assert size > 30_000, f"screenshot of {size} bytes: nothing drawn?"
        assert png_nonblank(screenshot), "the screenshot is blank"
        keep(screenshot)
    keep(html_path)
    return dom, secs


def report(rec, out, *args, input_data=None):
    p = subprocess.run([FAULTLINE, "report", *args, "-o", out, rec], capture_output=True,
                       text=True, timeout=600, input=input_data)
    assert p.returncode >= 0, f"faultline report died of signal {-p.returncode}: {p.stderr}"
    return p


def data_island(path):
    with open(path) as f:
        text = f.read()
    m = re.search(r'<script id="fl-data" type="application/json">(.*?)</script>', text, re.S)
    assert m, "no data island"
    return json.loads(m.group(1))


def expected(objs):
    """What the report must show, counted from the recording's records."""
    faults = [o for o in objs if o.get("event") == "fault"]
    e = {"faults": len(faults), "blocked_ns": sum(f["latency_ns"] for f in faults),
         "waiting": sum(1 for f in faults if f.get("waiting")), "res": {}, "mode": {},
         "races": 0, "race": {}, "poison": 0, "poisonk": {}, "lost": 0, "lanes": {},
         "vcpus": {}}
    for f in faults:
        e["res"][f["resolved_by"]] = e["res"].get(f["resolved_by"], 0) + 1
        e["mode"][f["mode"]] = e["mode"].get(f["mode"], 0) + 1
        key = (f["pid"], f["tid"])
        e["lanes"][key] = e["lanes"].get(key, 0) + 1
        if f.get("vcpu") is not None:
            e["vcpus"][key] = f["vcpu"]
    for o in objs:
        if o.get("event") == "race":
            e["races"] += 1
            e["race"][o["kind"]] = e["race"].get(o["kind"], 0) + 1
        elif o.get("event") == "poison":
            e["poison"] += 1
            e["poisonk"][o["kind"]] = e["poisonk"].get(o["kind"], 0) + 1
        elif o.get("event") == "lost":
            e["lost"] += o["count"]
    return e


def check_shown(dom, e):
    """The page's lanes and figures equal what the recording holds."""
    lanes = {(int(l["data-pid"]), int(l["data-tid"])): l for l in dom.lanes}
    assert len(dom.lanes) == len(e["lanes"]), \
        f"{len(dom.lanes)} lanes drawn, {len(e['lanes'])} faulting threads in the recording"
    assert set(lanes) == set(e["lanes"]), f"lanes {sorted(lanes)} != threads {sorted(e['lanes'])}"
    for key, n in e["lanes"].items():
        assert int(lanes[key]["data-faults"]) == n, f"lane {key}: {lanes[key]} vs {n} faults"
        want_vcpu = str(e["vcpus"][key]) if key in e["vcpus"] else ""
        assert lanes[key]["data-vcpu"] == want_vcpu, f"lane {key}: vcpu {lanes[key]} vs {want_vcpu}"
    s = dom.stats
    want = {"faults": e["faults"], "blocked_ns": e["blocked_ns"], "waiting": e["waiting"],
            "threads": len(e["lanes"]), "lanes": len(e["lanes"]), "vcpu_lanes": len(e["vcpus"]),
            "races": e["races"], "poison": e["poison"], "lost": e["lost"]}
    want.update({f"res:{k}": v for k, v in e["res"].items()})
    want.update({f"mode:{k}": v for k, v in e["mode"].items()})
    want.update({f"race:{k}": v for k, v in e["race"].items()})
    want.update({f"poison:{k}": v for k, v in e["poisonk"].items()})
    for k, v in want.items():
        assert k in s, f"the page shows no {k} (shown: {sorted(s)})"
        assert s[k] == v, f"{k}: the page shows {s[k]}, the recording holds {v}"
    # and nothing the recording does not have
    for k, v in s.items():
        if k.split(":")[0] in ("res", "mode", "race", "poison") and ":" in k:
            assert k in want or v == 0, f"the page shows {k}={v}, the recording has none"


def record_workload(tmp):
    """faultline trace --json of uffd-workload: 4 threads, every resolution, a munmap race."""
    rec = os.path.join(tmp, "workload.jsonl")
    with open(rec, "w") as out:
        p = subprocess.run([FAULTLINE, "trace", "--json", "--", WORKLOAD, "--threads", "4",
                            "--pages", "12", "--resolve", "mix", "--delay-us", "200",
                            "--race", "munmap", "--race-hold-ms", "300", "--quiet",
                            "--out", os.path.join(tmp, "wl.jsonl")],
                           stdout=out, stderr=subprocess.PIPE, text=True, timeout=120)
    assert p.returncode == 0, f"faultline trace exited {p.returncode}: {p.stderr[-2000:]}"
    with open(rec) as f:
        objs = [json.loads(l) for l in f if l.startswith("{")]
    return rec, objs


def test_report_of_a_traced_workload():
    """A real recording: lanes, totals, the parts of the page, the memory map's marks."""
    require_root()
    browser()
    with tempfile.TemporaryDirectory(prefix="fl-report-") as tmp:
        rec, objs = record_workload(tmp)
        e = expected(objs)
        summ = [o for o in objs if o.get("event") == "summary"]
        assert summ and summ[-1]["faults"] == e["faults"], "the recording's own summary disagrees"
        assert e["faults"] >= 48 and len(e["lanes"]) >= 5, e
        assert e["races"] >= 3 and e["poison"] >= 1, e
        out = os.path.join(tmp, "workload.html")
        p = report(rec, out)
        assert p.returncode == 0, p.stderr
        assert "wrote " + out in p.stderr and "warning" not in p.stderr, p.stderr
        size = os.path.getsize(out)
        dom, secs = render(out, os.path.join(tmp, "workload.png"))
        check_shown(dom, e)
        # hovering the longest wait shows its address, latency and split, as recorded
        slow = max((o for o in objs if o.get("event") == "fault"), key=lambda f: f["latency_ns"])
        tip = dom.hovers["timeline"]["tip"]
        assert set(dom.hovers) == {"timeline", "heatmap", "memmap"}, dom.hovers
        assert f"addr      {slow['addr']}" in tip and f"tid {slow['tid']}" in tip, tip
        assert f"resolved by {slow['resolved_by']}" in tip, tip
        for part in ("latency", "notify", "resolve", "wake", "run"):
            assert re.search(rf"^ *{part} +[0-9.]+ (ns|µs|ms|s)\b", tip, re.M), (part, tip)
        shown = re.search(r"^latency +([0-9.]+) ms", tip, re.M)
        assert shown and abs(float(shown.group(1)) - slow["latency_ns"] / 1e6) < 0.006, \
            (slow["latency_ns"], tip)
        print(f"# {e['faults']} faults, {len(e['lanes'])} lanes, {e['races']} races: "
              f"{size} bytes, drawn in {dom.body.get('data-render-ms')} ms ({secs:.1f} s Chromium)")
        d = data_island(out)
        assert d["iv"]["n"] == e["faults"] and not d["iv"]["sampled"], "every wait drawn whole"
        assert d["input"]["foreign"] == 0 and d["input"]["malformed"] == 0, d["input"]
        # the memory map marks the poisoned pages, the raced range and the stranded waiter
        flags = 0
        for r in d["mem"]["regions"]:
            for f in r["f"]:
                flags |= f
        assert flags == 1 | 2 | 4, f"memory-map flags {flags}: poison 1, race 2, stuck 4"
        poisoned = {int(o["addr"], 16) >> 12 for o in objs
                    if o.get("event") == "poison" and o["kind"] == "installed"}
        marked = set()
        for r in d["mem"]["regions"]:
            for c, f in zip(r["c"], r["f"]):
                if f & 1:
                    marked.add((int(r["start"], 16) + c * r["cell"]) >> 12)
        assert all(r["cell"] == 4096 for r in d["mem"]["regions"]), d["mem"]["regions"]
        assert marked == poisoned, (sorted(marked), sorted(poisoned))
        # the same from standard input into standard output
        with open(rec) as f:
            p2 = subprocess.run([FAULTLINE, "report", "-q"], stdin=f, capture_output=True,
                                timeout=120)
        assert p2.returncode == 0 and not p2.stderr, p2.stderr
        piped = os.path.join(tmp, "piped.html")
        with open(piped, "wb") as f:
            f.write(p2.stdout)
        d2 = data_island(piped)
        assert d2["source"] == "(standard input)" and d2["totals"] == d["totals"]
        assert d2["iv"] == d["iv"] and d2["cells"] == d["cells"]


def test_report_of_a_million_faults():
    """Bounded time and size for a million faults, and the page still draws quickly."""
    browser()
    with tempfile.TemporaryDirectory(prefix="fl-report-") as tmp:
        rec = os.path.join(tmp, "million.jsonl")
        t0 = time.monotonic()
        e = report_synth.write(rec, 1_000_000)
        gen = time.monotonic() - t0
        out = os.path.join(tmp, "million.html")
        t0 = time.monotonic()
        p = report(rec, out)
        took = time.monotonic() - t0
        assert p.returncode == 0, p.stderr
        size = os.path.getsize(out)
        in_size = os.path.getsize(rec)
        os.unlink(rec)
        dom, secs = render(out, os.path.join(tmp, "million.png"))
        draw_ms = int(dom.body["data-render-ms"])
        print(f"# 1,000,000 faults ({in_size / 2**20:.0f} MiB written in {gen:.1f} s): report "
              f"{took:.2f} s, {size / 2**20:.2f} MiB; drawn in {draw_ms} ms "
              f"({secs:.1f} s Chromium)")
        assert took < MILLION_REPORT_S, f"report took {took:.1f} s"
        assert size < MILLION_HTML_BYTES, f"report of {size} bytes"
        assert draw_ms < MILLION_DRAW_MS, f"page took {draw_ms} ms to draw"
        s = dom.stats
        assert s["faults"] == e["faults"] and s["blocked_ns"] == e["blocked_ns"], s
        for k, v in e["by_res"].items():
            assert s[f"res:{k}"] == v, (k, s.get(f"res:{k}"), v)
        assert s["races"] == e["races"] and s["poison"] == e["poison"] and s["lost"] == e["lost"]
        assert len(dom.lanes) == e["lanes"] and s["vcpu_lanes"] == len(e["vcpu_tids"])
        for l in dom.lanes:
            assert int(l["data-faults"]) == e["by_tid"][int(l["data-tid"])], l
            if int(l["data-tid"]) in e["vcpu_tids"]:
                assert int(l["data-vcpu"]) == e["vcpu_tids"][int(l["data-tid"])], l
        d = data_island(out)
        assert d["iv"]["sampled"] and d["iv"]["n"] <= 10000 and d["iv"]["slowest"] == 5000
        # the slowest wait of all is among those drawn whole
        assert max(d["iv"]["lat"]) == e["max_ns"] == max(l["max_ns"] for l in d["lanes"])
        assert sum(d["heat"]["cells"][2::3]) == e["faults"]
        assert sum(sum(c["n"]) for c in d["cells"]) == e["faults"]


def test_report_size_is_bounded():
    """A recording made to hit every limit at once (threads, processes, regions, events,
    vCPUs, exits): the page stays under MAX_HTML_BYTES and still draws."""
    browser()
    with tempfile.TemporaryDirectory(prefix="fl-report-") as tmp:
        rec = os.path.join(tmp, "wide.jsonl")
        lines = []
        t = 10**12
        for i in range(200_000):
            tid = 5000 + i % 2000                    # 2000 threads: more than the lanes
            pid = 1000 + tid % 120                   # 120 processes: more than the map's regions
            addr = (0x10000000000 * (i % 7)) + ((i * 7919) % 500_000) * 4096 * 41
            t += 997 * (i % 13)
            lines.append('{"event":"fault","pid":%d,"tid":%d,"comm":"t%d <&>","addr":"0x%x",'
                         '"mode":"missing","start_ns":%d,"latency_ns":%d,"notify_ns":1,'
                         '"resolve_ns":2,"wake_ns":3,"run_ns":4,"resolved_by":"copy",'
                         '"vcpu":%s,"page_size":4096,"waiting":false}'
                         % (pid, tid, tid, addr, t, 1000 + i * 37 % 10**7,
                            i % 256 if i % 3 == 0 else "null"))
            if i % 50 == 0:
                lines.append('{"event":"race","kind":"placement_failed","ts_ns":%d,"pid":%d,'
                             '"what":"COPY","start":"0x%x","len":%d,"actor_tid":1,'
                             '"actor_comm":"h","waiters":1,"waiter_tid":%d,"waiter_addr":"0x%x",'
                             '"errno":"ENOENT","waited_ns":5}' % (t, pid, addr, 1 << 30, tid, addr))
                lines.append('{"event":"poison","kind":"installed","ts_ns":%d,"pid":%d,"tid":1,'
                             '"comm":"h","vcpu":null,"addr":"0x%x","len":4096,"errno":null}'
                             % (t, pid, addr))
                lines.append('{"event":"signal","ts_ns":%d,"signo":7,"pid":%d,"tid":%d,'
                             '"comm":"x","vcpu":null,"addr":"0x%x","si_code":2}'
                             % (t, pid, tid, addr))
                lines.append('{"event":"lost","ts_ns":%d,"where":"ringbuf %d","count":1}'
                             % (t, i % 40))
                lines.append('{"event":"tracked_late","ts_ns":%d,"pid":%d,"comm":"late",'
                             '"since_ns":1,"reason":"found_by_scan"}' % (t, pid))
                lines.append('{"event":"kvm_memory_fault","ts_ns":%d,"pid":%d,"tid":%d,'
                             '"vcpu":1,"gpa":"0x1000","size":4096,"flags":[]}' % (t, pid, tid))
        exits = ",".join('"EXIT_REASON_%d":%d' % (k, k * 1000003) for k in range(48))
        vcpus = ",".join('{"vcpu":%d,"tid":%d,"faults":1,"blocked_ns":1,"avg_latency_ns":1,'
                         '"latency_dist_us":[%s],"exits":{%s}}'
                         % (v, 90000 + v, ",".join(["123456"] * 24), exits) for v in range(256))
        for pid in range(64):
            lines.append('{"event":"vm_stats","ts_ns":1,"pid":%d,"comm":"qemu","vcpus":[%s],'
                         '"non_vcpu":{"faults":1,"blocked_ns":1,"latency_dist_us":[1]},'
                         '"all_vcpu_blocked_ns":1,"all_vcpu_lower_bound":true,'
                         '"total_blocked_ns":2}' % (1000 + pid, vcpus))
        with open(rec, "w") as f:
            f.write("\n".join(lines) + "\n")
        out = os.path.join(tmp, "wide.html")
        p = report(rec, out, "--max-intervals", "10000")
        assert p.returncode == 0, p.stderr
        size = os.path.getsize(out)
        d = data_island(out)
        parts = {k: len(json.dumps(v)) for k, v in d.items()}
        print(f"# a recording at every limit: {size / 2**20:.2f} MiB "
              f"(largest parts: {sorted(parts.items(), key=lambda x: -x[1])[:6]})")
        assert size < MAX_HTML_BYTES, f"{size} bytes"
        assert len(d["lanes"]) == 321 and d["lanes"][-1]["threads"] == 2000 - 320
        assert len(d["mem"]["regions"]) <= 48 and d["mem"]["dropped_pids"] > 0
        assert all(len(v) <= 500 for v in d["events"].values())
        assert sum(len(v["vcpus"]) for v in d["vms"]) == 512
        dom, _ = render(out)
        assert len(dom.lanes) == 321 and dom.stats["faults"] == 200_000
        assert dom.stats["threads"] == 2000


def test_report_malformed_input():
    """Cut, garbled and absurd lines: warnings with line numbers, a report all the same;
    --strict stops at the first; nothing crashes."""
    browser()
    good = ('{"event":"fault","pid":1,"tid":2,"comm":"w","addr":"0x1000","mode":"missing",'
            '"start_ns":%d,"latency_ns":500,"notify_ns":1,"resolve_ns":2,"wake_ns":3,'
            '"run_ns":4,"resolved_by":"copy","vcpu":null,"page_size":4096,"waiting":false}')
    bad = [
        ('{"event":"fault","pid":1,"tid":2,"start_ns":5', "not closed"),           # cut short
        ('{{{{', "expected a member name"),                                          # garbage
        ('{"event":"fault","pid":1,"tid":2,"start_ns":123456789012345678901234567890,'
         '"latency_ns":1}', "start_ns out of range"),                               # huge number
        ('{"event":"fault","pid":1,"tid":2,"start_ns":1,"latency_ns":1e400}',
         "latency_ns is not a non-negative integer"),
        ('{"event":"fault","pid":1,"tid":2,"start_ns":18446744073709551615,"latency_ns":9}',
         "past 2^64-1"),
        ('{"event":"fault","pid":-1,"tid":2,"start_ns":1,"latency_ns":1}',
         "pid is not a non-negative integer"),
        ('{"event":"fault","pid":1,"tid":2,"comm":"\\x","start_ns":1,"latency_ns":1}',
         "invalid escape"),
        ('{"event":"race","kind":"x","ts_ns":1,"a":' + '[' * 40 + ']' * 40 + '}',
         "nested deeper"),
        ('{"event":"fault","pid":1}', "tid missing"),
        ('{"a":"' + "x" * (3 << 20) + '"}', "longer than"),
    ]
    with tempfile.TemporaryDirectory(prefix="fl-report-") as tmp:
        rec = os.path.join(tmp, "bad.jsonl")
        body = [good % 1000, "plain text from the traced command"]
        for text, _ in bad:
            body.append(text)
        body.append(good % 2000)
        with open(rec, "wb") as f:
            f.write("\n".join(body).encode() + b"\n{\xff\xfe\x00binary\x01\n")
            f.write(b'{"event":"fault","pid":1,"tid":2,"sta')  # the last line, cut short
        n_bad = len(bad) + 2  # the binary junk line and the cut last line
        out = os.path.join(tmp, "bad.html")
        p = report(rec, out)
        assert p.returncode == 0, p.stderr
        assert f"{n_bad} malformed line(s) skipped" in p.stderr, p.stderr
        for i, (_, why) in enumerate(bad):
            line = 3 + i
            assert re.search(rf"line {line}: .*{re.escape(why)}", p.stderr), \
                f"no warning for line {line} ({why}): {p.stderr}"
        assert f"and {n_bad - 10} more" in p.stderr, p.stderr
        d = data_island(out)
        assert d["input"]["malformed"] == n_bad and d["input"]["foreign"] == 1, d["input"]
        assert d["input"]["lines"] == len(body) + 2, d["input"]
        assert d["totals"]["faults"] == 2
        dom, _ = render(out)
        assert dom.warnings and dom.stats["faults"] == 2
        # --strict: the first malformed line is the error; no report is left behind
        strict_out = os.path.join(tmp, "strict.html")
        p = report(rec, strict_out, "--strict")
        assert p.returncode == 1, (p.returncode, p.stderr)
        assert re.search(r"line 3: object not closed", p.stderr), p.stderr
        assert not os.path.exists(strict_out) and not any(
            n.startswith("strict.html") for n in os.listdir(tmp)), os.listdir(tmp)
        # only the cut last line
        with open(rec, "w") as f:
            f.write((good % 1) + "\n" + '{"event":"fault","pid":1,"tid":2,"sta')
        p = report(rec, out)
        assert p.returncode == 0 and re.search(r"line 2: .*without a newline: cut short",
                                               p.stderr), p.stderr
        # nothing at all, a missing file, an unwritable place, a bad option
        open(rec, "w").close()
        p = report(rec, out)
        assert p.returncode == 0 and "no fault records" in p.stderr, p.stderr
        dom, _ = render(out, parts=("totals", "breakdown"))
        assert dom.stats["faults"] == 0 and not dom.lanes
        p = report(os.path.join(tmp, "missing.jsonl"), out)
        assert p.returncode == 1 and "cannot open" in p.stderr and \
            "No such file or directory" in p.stderr, p.stderr
        p = report(rec, os.path.join(tmp, "no", "such", "dir.html"))
        assert p.returncode == 1 and "cannot write" in p.stderr, p.stderr
        p = report(rec, out, "--max-intervals", "-3")
        assert p.returncode != 0 and "invalid --max-intervals" in p.stderr, p.stderr


def test_report_output_places():
    """-o into a device or through a symlink writes there (the atomic rename is for regular
    files only: it must never replace /dev/null); a full disk is an error, said once."""
    import stat
    with tempfile.TemporaryDirectory(prefix="fl-report-") as tmp:
        rec = os.path.join(tmp, "r.jsonl")
        report_synth.write(rec, 100)
        p = report(rec, "/dev/null")
        assert p.returncode == 0, p.stderr
        assert stat.S_ISCHR(os.stat("/dev/null").st_mode), "/dev/null was replaced"
        if os.path.exists("/dev/full"):
            p = report(rec, "/dev/full")
            assert p.returncode == 1 and "No space left on device" in p.stderr, p.stderr
            assert p.stderr.count("cannot write") == 1, p.stderr
            assert stat.S_ISCHR(os.stat("/dev/full").st_mode), "/dev/full was replaced"
        link, real = os.path.join(tmp, "link.html"), os.path.join(tmp, "real.html")
        os.symlink("real.html", link)
        p = report(rec, link)
        assert p.returncode == 0 and os.path.islink(link), p.stderr
        assert data_island(real)["totals"]["faults"] == 100
        # beside the recording by default; no temporary file left behind
        p = subprocess.run([FAULTLINE, "report", "-q", rec], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0 and os.path.exists(os.path.join(tmp, "r.html")), p.stderr
        assert sorted(os.listdir(tmp)) == ["link.html", "r.html", "r.jsonl", "real.html"]


def test_report_of_a_qemu_postcopy_migration():
    """A real postcopy migration (two TCG QEMUs on loopback), recorded by `faultline trace
    --json -p DEST`: its vCPU threads get vCPU lanes, its figures show as recorded."""
    require_root()
    browser()
    import qemu_postcopy as qp
    if shutil.which(qp.QEMU) is None:
        raise Skip(f"{qp.QEMU} not installed (Debian package qemu-system-x86)")
    try:
        assets = qp.prepare_assets(os.environ.get("FAULTLINE_QEMU_ASSETS"))
    except qp.HarnessError as err:
        raise Skip(str(err))
    with tempfile.TemporaryDirectory(prefix="fl-report-qemu-") as tmp:
        try:
            res = qp.run_migration(assets=assets, workdir=tmp,
                                   log=lambda m: print(f"# {m}", flush=True))
        except qp.HarnessError as err:
            raise AssertionError(f"the migration failed: {err}")
        assert res["faultline_rc"] == 0, res["faultline_stderr"][-1500:]
        rec = os.path.join(tmp, "faultline.jsonl")
        with open(rec) as f:
            objs = [json.loads(l) for l in f if l.startswith("{")]
        e = expected(objs)
        vcpu_tids = set(res["vcpu_tids"].values())
        assert {tid for (_, tid) in e["vcpus"]} <= vcpu_tids, (e["vcpus"], vcpu_tids)
        assert e["vcpus"], "no vCPU faults recorded"
        out = os.path.join(tmp, "qemu.html")
        p = report(rec, out)
        assert p.returncode == 0, p.stderr
        dom, _ = render(out, os.path.join(tmp, "qemu.png"))
        check_shown(dom, e)
        vlanes = [l for l in dom.lanes if l["data-vcpu"] != ""]
        assert {int(l["data-tid"]) for l in vlanes} == {t for (_, t) in e["vcpus"]}
        for l in vlanes:
            assert int(l["data-vcpu"]) == next(c for c, t in res["vcpu_tids"].items()
                                               if t == int(l["data-tid"])), l
        # the per-VM summary is the recording's own vm_stats
        d = data_island(out)
        vm = next(v for v in d["vms"] if v["pid"] == res["dst_pid"])
        rec_vm = [o for o in objs if o.get("event") == "vm_stats" and o["pid"] == vm["pid"]][-1]
        assert not vm["computed"]
        assert vm["all_vcpu_blocked_ns"] == rec_vm["all_vcpu_blocked_ns"]
        assert [c["faults"] for c in vm["vcpus"]] == [c["faults"] for c in rec_vm["vcpus"]]
        print(f"# QEMU postcopy: {e['faults']} faults, {len(vlanes)} vCPU lanes of "
              f"{len(dom.lanes)}, all-vCPU blocktime {vm['all_vcpu_blocked_ns']} ns")


if __name__ == "__main__":
    main([test_report_of_a_traced_workload, test_report_of_a_million_faults,
          test_report_size_is_bounded, test_report_malformed_input, test_report_output_places,
          test_report_of_a_qemu_postcopy_migration])
