"""Where the cores went: CPU seconds per process group, read from /proc before and after a stretch of
work. The capacity planner models the stages' costs as measured one call at a time; this says how
much CPU the graph really spent per turn, and on what (the stages, the ingress, Serve's proxy, Ray
itself, the benchmark's own clients), so the difference can be put into the model.

Linux only (/proc); a process that exits in between takes its time with it, so measure while the
cluster is up."""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
RAY_PROCESSES = ("raylet", "gcs_server", "ray/dashboard", "ray/_private", "ray/autoscaler", "ray::")


def group(pid: int, cmdline: str) -> str:
    """A process's group: a Serve deployment by name, Ray's proxy, Ray itself, this process, other."""
    if pid == os.getpid():
        return "client"
    if cmdline.startswith("ray::ServeReplica:"):
        # ray::ServeReplica:<app>:<deployment>, and ".<method>" while Ray runs a call on it
        return cmdline.split()[0].rsplit(":", 1)[1].split(".")[0]
    if cmdline.startswith("ray::ProxyActor"):
        return "proxy"
    if any(p in cmdline for p in RAY_PROCESSES):
        return "ray"
    return "other"


def snapshot() -> dict:
    """Every live process's group and CPU seconds (user + system) so far, by pid, and `machine`:
    the whole machine's busy seconds (every process, including those that came and went)."""
    procs: dict[int, tuple[str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14 and 15 of stat)
        procs[int(entry)] = (group(int(entry), cmdline), seconds)
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in cpu[:8])
    return {"procs": procs, "machine": (user + nice + system + irq + softirq + steal) / TICK}


def spent(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds per group between two snapshots: what each process alive at the second used
    since the first (all of it if it started since). A process that ended in between (a replica of
    an application just deleted) takes its time with it instead of making its group's negative."""
    out: dict[str, float] = {}
    for pid, (name, seconds) in after["procs"].items():
        was = before["procs"].get(pid)
        out[name] = out.get(name, 0.0) + seconds - (was[1] if was and was[0] == name else 0.0)
    out["machine"] = after["machine"] - before["machine"]
    return dict(sorted(out.items()))
