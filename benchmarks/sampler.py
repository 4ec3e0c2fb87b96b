"""A small sampling profiler for a process we cannot attach py-spy to (a Serve replica): a thread
that looks at every Python thread's stack `interval_s` apart (`sys._current_frames`) and counts, for
each thread that is not waiting (its innermost frame is not a selector, lock or queue wait), the
functions on its stack (inclusive) and the innermost one (self). Plus each OS thread's CPU seconds
from /proc (the C++ threads of Ray's core worker included), named as the kernel names them.

Samples are of wall time while runnable, not of CPU: a thread waiting for the GIL counts as busy.
Good enough to rank where a listening session's time goes; `benchmarks/sessions.py --profile`
turns it on inside the Ingress replicas."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")
# innermost frames of a thread that waits rather than works
WAITING = {("selectors.py", "select"), ("threading.py", "wait"), ("queue.py", "get"), ("threading.py", "_wait_for_tstate_lock"),
           ("thread.py", "_worker"), ("base_events.py", "_run_once")}


def where(frame) -> str:
    code = frame.f_code
    return f"{Path(code.co_filename).name}:{code.co_name}"


def idle(frame) -> bool:
    code = frame.f_code
    return (Path(code.co_filename).name, code.co_name) in WAITING


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Per OS thread of this process: its name (the Python thread's where there is one, else the
    kernel's) and CPU seconds."""
    python = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
            name = Path(f"/proc/self/task/{tid}/comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(tid)] = (python.get(int(tid), name), (int(fields[11]) + int(fields[12])) / TICK)
    return out


class Sampler:
    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.inclusive: Counter[str] = Counter()
        self.leaf: Counter[str] = Counter()
        self.threads: Counter[str] = Counter()  # busy samples per Python thread name
        self.samples = 0
        self._lock = threading.Lock()
        self._started = time.time()
        self._cpu0 = thread_cpu()

    def start(self) -> None:
        threading.Thread(target=self._run, name="sampler", daemon=True).start()

    def _run(self) -> None:
        me = threading.get_ident()
        names = {}
        while True:
            time.sleep(self.interval_s)
            frames = sys._current_frames()
            if len(names) != len(frames):
                names = {t.ident: t.name for t in threading.enumerate()}
            with self._lock:
                self.samples += 1
                for ident, frame in frames.items():
                    if ident == me or idle(frame):
                        continue
                    self.threads[names.get(ident, str(ident))] += 1
                    self.leaf[where(frame)] += 1
                    seen = set()
                    while frame is not None:
                        w = where(frame)
                        if w not in seen:
                            seen.add(w)
                            self.inclusive[w] += 1
                        frame = frame.f_back

    def dump(self, path: Path) -> None:
        cpu = thread_cpu()
        with self._lock:
            data = {
                "since": self._started, "until": time.time(), "samples": self.samples, "interval_s": self.interval_s,
                "threads": dict(self.threads.most_common()),
                "inclusive": dict(self.inclusive.most_common(80)), "leaf": dict(self.leaf.most_common(80)),
                "thread_cpu_s": dict(sorted(((f"{tid} {name}", round(s - self._cpu0.get(tid, ("", 0.0))[1], 3))
                                             for tid, (name, s) in cpu.items()), key=lambda kv: -kv[1])),
            }
        Path(path).write_text(json.dumps(data, indent=1))
