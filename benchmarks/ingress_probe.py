"""The real Ingress with a probe, for `benchmarks/sessions.py`: a subclass that changes nothing it
serves and adds, on the replica's own event loop (the one its routes and WebSockets run on),

- a lag sampler: a task that sleeps `PERIOD_S` and records how late it woke (the event loop's lag:
  how long a ready callback, e.g. the next PCM message or a ping, waits for the loop), written once
  a second with the replica's open sessions to `<dir>/<pid>.jsonl` as
  {"t": unix time, "lags_ms": [...], "sessions": n};
- with `SESSIONS_PROFILE=1` in the replica's environment, a sampling profiler over every Python
  thread of the replica (`benchmarks/sampler.py`), dumped to `<dir>/<pid>.profile.json` each second.

The directory comes from the environment (`SESSIONS_PROBE_DIR`), which the benchmark sets before it
starts Ray."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from serve_app.ingress import Ingress

PERIOD_S = 0.02
ENV_DIR = "SESSIONS_PROBE_DIR"
ENV_PROFILE = "SESSIONS_PROFILE"


class ProbedIngress(Ingress.func_or_class):
    async def __init__(self, *args, **kwargs):
        await super().__init__(*args, **kwargs)
        self._probe_dir = Path(os.environ.get(ENV_DIR) or "/tmp/avatar-sessions-probe")
        self._probe_dir.mkdir(parents=True, exist_ok=True)
        self._sampler = None
        if os.environ.get(ENV_PROFILE) == "1":
            from benchmarks.sampler import Sampler

            self._sampler = Sampler()
            self._sampler.start()
        self._probe_task = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        out = self._probe_dir / f"{os.getpid()}.jsonl"
        lags: list[float] = []
        flushed = time.monotonic()
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(PERIOD_S)
            lags.append(max(0.0, (loop.time() - before - PERIOD_S) * 1000))
            if time.monotonic() - flushed >= 1.0:
                flushed = time.monotonic()
                line = {"t": time.time(), "lags_ms": [round(x, 2) for x in lags],
                        "sessions": self.service.gate.admission.snapshot()["sessions"]}
                lags = []
                await asyncio.to_thread(_append, out, json.dumps(line) + "\n")
                if self._sampler is not None:
                    await asyncio.to_thread(self._sampler.dump, self._probe_dir / f"{os.getpid()}.profile.json")


def _append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)
