"""Synthetic recordings for `faultline report` (tests/e2e/test_report.py, make bench).

write(path, faults) writes a `faultline trace --json`-shaped recording of a
VM whose vCPUs and a few other threads fault on guest memory for a while
(log-normal latencies split into notify/resolve/wake/run, resolutions mostly
copy), with a few races, poison events and a lost record, and its closing
summary; it returns what a report must show, counted here independently of
faultline. Fast enough for a million faults (a few seconds, ~300 MB).
"""
import json
import random

PID = 4242
VCPUS = 8
OTHERS = [(4300, "qemu-system-x86"), (4301, "live_migration"), (4302, "IO mon_iothread"),
          (4303, "worker")]
RAM = 0x7f0000000000        # guest RAM: 4 GiB
RAM_PAGES = (4 << 30) >> 12
VGA = 0x7f8000000000        # a second region, far from the first
RES = [("copy", 80), ("zeropage", 10), ("continue", 5), ("wake", 3), ("poison", 1),
       ("unresolved", 1)]

FAULT = ('{"event":"fault","pid":%d,"tid":%d,"comm":"%s","addr":"0x%x","uffd":12,"mode":"%s",'
         '"start_ns":%d,"latency_ns":%d,"notify_ns":%d,"resolve_ns":%d,"wake_ns":%d,"run_ns":%d,'
         '"resolved_by":"%s","vcpu":%s,"blocked":true,"user_fault":false,"retries":0,'
         '"handler_pid":%d,"page_size":4096,"waiting":false}\n')


def write(path, faults, seed=1):
    rnd = random.Random(seed)
    threads = [(5000 + v, f"CPU {v}/KVM", str(v)) for v in range(VCPUS)] + \
        [(tid, comm, "null") for tid, comm in OTHERS]
    weights = [w for _, w in RES]
    names = [n for n, _ in RES]
    clock = {t[0]: 1_000_000_000_000 + rnd.randrange(1_000_000) for t in threads}
    exp = {"faults": 0, "by_res": {}, "by_tid": {}, "blocked_ns": 0, "races": 0, "poison": 0,
           "lost": 0, "vcpu_tids": {t[0]: int(t[2]) for t in threads if t[2] != "null"},
           "max_ns": 0}
    chunk = []
    with open(path, "w") as out:
        out.write("READY pid=%d (a traced command's own line)\n" % PID)
        res_seq = rnd.choices(names, weights, k=faults)
        for i in range(faults):
            tid, comm, vcpu = threads[i % len(threads)] if i % 7 else threads[rnd.randrange(len(threads))]
            res = res_seq[i]
            lat = int(rnd.lognormvariate(11.5, 0.8))          # ~100 us median
            if i % 100_000 == 99_999:
                lat *= 2000                                   # a few very slow ones
            notify = lat // 5
            wake = lat // 20
            run = lat // 50
            resolve = lat - notify - wake - run
            start = clock[tid]
            clock[tid] = start + lat + rnd.randrange(5_000, 200_000)
            addr = (VGA + rnd.randrange(4096) * 4096) if i % 97 == 0 else \
                RAM + rnd.randrange(RAM_PAGES) * 4096
            chunk.append(FAULT % (PID, tid, comm, addr, "minor" if res == "continue" else "missing",
                                  start, lat, notify, resolve, wake, run, res, vcpu, PID))
            exp["faults"] += 1
            exp["by_res"][res] = exp["by_res"].get(res, 0) + 1
            exp["by_tid"][tid] = exp["by_tid"].get(tid, 0) + 1
            exp["blocked_ns"] += lat
            exp["max_ns"] = max(exp["max_ns"], lat)
            if i % 250_000 == 1000:
                chunk.append(json.dumps({
                    "event": "race", "kind": "mapchange_with_waiters", "ts_ns": start + 10, "pid": PID,
                    "what": "munmap", "start": hex(addr & ~0xffff), "len": 65536, "actor_tid": 4300,
                    "actor_comm": "qemu-system-x86", "waiters": 1, "waiter_tid": tid,
                    "waiter_addr": hex(addr), "errno": None, "waited_ns": 0, "page_size": None},
                    separators=(",", ":")) + "\n")
                exp["races"] += 1
            if res == "poison" and exp["poison"] < 2000:
                chunk.append(json.dumps({
                    "event": "poison", "kind": "installed", "ts_ns": start + lat // 2, "pid": PID,
                    "tid": 4301, "comm": "live_migration", "vcpu": None, "addr": hex(addr),
                    "len": 4096, "errno": None}, separators=(",", ":")) + "\n")
                exp["poison"] += 1
            if i == faults // 2:
                chunk.append('{"event":"lost","ts_ns":%d,"where":"ringbuf","count":3}\n' % start)
                exp["lost"] += 3
            if len(chunk) >= 20_000:
                out.write("".join(chunk))
                chunk = []
        out.write("".join(chunk))
        by_res = {n: exp["by_res"].get(n, 0) for n in
                  ("unresolved", "copy", "zeropage", "continue", "poison", "move", "wake",
                   "writeprotect")}
        out.write(json.dumps({"event": "summary", "duration_ns": max(clock.values()) - 10**12,
                              "faults": faults, "races": exp["races"], "lost": exp["lost"],
                              "blocks": faults, "stack_walks": 0, "not_userfault": 0,
                              "resolved_by": by_res}, separators=(",", ":")) + "\n")
    exp["lanes"] = len(threads)
    return exp
