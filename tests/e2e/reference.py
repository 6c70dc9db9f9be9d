"""How tightly a workload's own record of a fault bounds faultline's latency.

faultline's window (page fault .. the thread on a CPU again) lies inside the
faulting thread's clock reading (start_ns .. end_ns), so faultline is never
longer. It is shorter by the thread's own work around the fault, plus any
time the thread lost without a context switch: hypervisor steal, which this
kernel accounts per CPU in 10 ms ticks only, so no interface shows it at the
microsecond scale of a fault (measured: 0.2 % of faults short by 60-650 us,
with neither preemption nor run-queue wait in the thread's schedstat).

So each fault gets two lower bounds:
- tight: the thread's window less a tolerance, valid unless time was stolen;
- sure: from the handler's own clock, when its read() of the message
  returned (the fault began before) to when it began the resolving ioctl (the
  thread ran again after) -- the thread was asleep at least that long, steal
  or not.
Every fault must meet the sure bound; only a few (STOLEN_ALLOWANCE) may miss
the tight one, and each is reported.
"""


def tolerance(window_ns):
    return max(0.10 * window_ns, 50_000)


def stolen_allowance(n):
    """How many of n faults may fall short of the tight bound."""
    return max(2, n // 50)


def window(r):
    return r["end_ns"] - r["start_ns"]


def sure_lower(r):
    """The handler-clock bound (0 when the workload did not record it)."""
    if r.get("handler_read_ns") and r.get("handler_resolve_ns"):
        return max(0, r["handler_resolve_ns"] - r["handler_read_ns"])
    return 0


def tight_lower(r):
    """None when the thread's clock also counted a preemption (no tight bound)."""
    if r.get("preempted"):
        return None
    w = window(r)
    return w - tolerance(w)


def describe(r, got_ns):
    w = window(r)
    return (f"{r['addr']} tid {r['tid']}: faultline {got_ns / 1e3:.1f} us, thread {w / 1e3:.1f} us, "
            f"handler read..resolve {sure_lower(r) / 1e3:.1f} us, thread cpu "
            f"{r.get('cpu_ns', 0) / 1e3:.1f} us, run-queue wait {r.get('run_delay_ns', 0) / 1e3:.1f} us")
