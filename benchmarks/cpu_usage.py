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


def snapshot() -> dict[str, float]:
    """CPU seconds (user + system) each group's live processes have used so far, and `machine`: the
    whole machine's busy seconds (every process, including those that came and went)."""
    out: dict[str, float] = {}
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
        name = group(int(entry), cmdline)
        out[name] = out.get(name, 0.0) + seconds
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in cpu[:8])
    out["machine"] = (user + nice + system + irq + softirq + steal) / TICK
    return out


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds per group between two snapshots (groups that appear in either)."""
    return {k: max(0.0, after.get(k, 0.0) - before.get(k, 0.0)) for k in sorted(set(before) | set(after))}
