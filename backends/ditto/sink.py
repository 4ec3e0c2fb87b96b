"""Frames out of Ditto without files: a writer with the interface of Ditto's own video writer.

`StreamSDK.setup(source_path, output_path)` builds its writer as
`VideoWriterByImageIO(output_path + ".tmp.mp4")` (a module-level name in `stream_pipeline_online`)
and its writer thread calls `writer(frame_rgb, fmt="rgb")` for each frame, then `writer.close()`.
`install` puts a `SinkRouter` in that name's place: it never opens a file or starts ffmpeg; the
"path" it receives is only the key of the `FrameSink` that the stream registered, which hands each
frame, numbered, to the event loop of the replica that waits for it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np

SCHEME = "ditto-sink:"


class FrameSink:
    """Receives one stream's frames on the SDK's writer thread; `frames` (an asyncio.Queue on
    `loop`) gets (index, frame) for each, and None once the writer is closed."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.frames: asyncio.Queue = asyncio.Queue()
        self.count = 0  # frames received (the index of the next one)
        self.closed = False

    # The interface of core/atomic_components/writer.py:VideoWriterByImageIO
    def __call__(self, img: np.ndarray, fmt: str = "bgr") -> None:
        frame = np.ascontiguousarray(img[..., ::-1] if fmt == "bgr" else img)
        index, self.count = self.count, self.count + 1
        self.loop.call_soon_threadsafe(self.frames.put_nowait, (index, frame))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if not self.loop.is_closed():  # a replica shutting down may have stopped its loop
                self.loop.call_soon_threadsafe(self.frames.put_nowait, None)


class SinkRouter:
    """Stands where `VideoWriterByImageIO` stood: `SinkRouter()(path, fps=25, **kw)` returns the
    sink registered under the key in `path` (KeyError for any other path: nothing writes files)."""

    def __init__(self) -> None:
        self._sinks: dict[str, FrameSink] = {}
        self._lock = threading.Lock()

    def path(self, key: str, sink: FrameSink) -> str:
        """Register `sink`; the output_path to give `StreamSDK.setup`."""
        with self._lock:
            self._sinks[key] = sink
        return SCHEME + key

    def discard(self, key: str) -> None:
        with self._lock:
            self._sinks.pop(key, None)

    def __call__(self, video_path: str, fps: int = 25, **kwargs: Any) -> FrameSink:
        key = video_path.removeprefix(SCHEME).removesuffix(".tmp.mp4")
        with self._lock:
            sink = self._sinks.pop(key, None)
        if not video_path.startswith(SCHEME) or sink is None:
            raise KeyError(f"no frame sink registered for {video_path!r}")
        return sink


def install(module: Any) -> SinkRouter:
    """Route `module`'s video writer (the imported `stream_pipeline_online`) to frame sinks."""
    router = getattr(module, "VideoWriterByImageIO", None)
    if not isinstance(router, SinkRouter):
        if router is None:
            raise RuntimeError(f"{module.__name__} has no VideoWriterByImageIO to replace; "
                               "is ditto.repo_dir an antgroup/ditto-talkinghead checkout?")
        router = SinkRouter()
        module.VideoWriterByImageIO = router
    return router
