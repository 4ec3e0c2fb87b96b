"""What the notebooks share: reaching the app (started in the kernel, or a running one on a Ray
cluster), showing its media inline, and drawing turn timelines. Kept here so each notebook reads as
the experiment, not the plumbing."""

from __future__ import annotations

import http.client
import io
import json
import os
import secrets
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from serve_app.local import use_local_ray  # noqa: E402 -- after the repository is on the path

use_local_ray()

JFK = REPO / "assets" / "media" / "jfk.flac"  # the one place that names the speech clip
AVATARS = REPO / "assets" / "avatars"
STAGES = ("ASR", "LLM", "TTS", "Animator")


def notebook_config(storage_dir: str | None = None):
    """The app as the notebooks start it: the defaults, but greedy decoding (the pipelined and the
    sequential turn then write the same reply), and a fresh upload dir."""
    from avatar_core.config import AppConfig

    return AppConfig.model_validate({
        "llm": {"temperature": 0.0},
        "storage": {"dir": storage_dir or _scratch_dir()},
    })


_SCRATCH: list[tempfile.TemporaryDirectory] = []


def _scratch_dir() -> str:
    """A fresh upload dir, removed when the kernel exits."""
    _SCRATCH.append(tempfile.TemporaryDirectory(prefix="avatar-notebook-"))
    return _SCRATCH[-1].name


@dataclass
class App:
    """A running app: its deployment handles and the Serve proxy's URL (HTTP and /ws)."""

    name: str
    base_url: str
    started_here: bool
    handles: dict = field(default_factory=dict)

    def __getitem__(self, deployment: str):
        return self.handles[deployment]

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http", "ws", 1) + "/ws"

    def close(self) -> None:
        """Stop what this kernel started; only disconnect from an app it attached to."""
        import ray
        from ray import serve

        if self.started_here:
            serve.shutdown()
        ray.shutdown()


def _handles(app_name: str) -> dict:
    from ray import serve

    return {name: serve.get_deployment_handle(name, app_name=app_name) for name in (*STAGES, "Ingress")}


def _free_port(preferred: int = 8000) -> int:
    for port in (preferred, *range(28_000, 29_000)):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no free port")


def start_local(config=None, app_name: str = "avatar", port: int | None = None, deadline_s: float = 300) -> App:
    """A fresh Ray instance in this kernel (2 CPUs) with the whole graph: about 30 s on 2 cores,
    most of it the stages loading and warming their models."""
    import ray
    from ray import serve

    from serve_app.builder import build_app

    # Ray's workers import the deployments by module path: give them the repository.
    path = os.environ.get("PYTHONPATH", "")
    if str(REPO) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), path) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    port = port or _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(config or notebook_config()), name=app_name, route_prefix="/", blocking=False)
    app = App(app_name, f"http://127.0.0.1:{port}", True, _handles(app_name))
    wait_healthy(app.base_url, deadline_s)
    return app


def attach(address: str, app_name: str, base_url: str, deadline_s: float = 60) -> App:
    """An app already running on a Ray cluster: `address` as for `ray.init` ("auto" on a node of
    the cluster, or the head's GCS address "host:6379"); `base_url` is the Serve proxy."""
    import ray

    ray.init(address=address, log_to_driver=False)
    app = App(app_name, base_url.rstrip("/"), False, _handles(app_name))
    wait_healthy(app.base_url, deadline_s)
    return app


def wait_healthy(base_url: str, deadline_s: float) -> dict:
    end, last = time.monotonic() + deadline_s, None
    while time.monotonic() < end:
        try:
            r = http_get(f"{base_url}/healthz", timeout=5)
            if r.status_code == 200:
                return r.json()
            last = r.text
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out, cut short
            last = repr(exc)
        time.sleep(1)
    raise TimeoutError(f"{base_url} did not become healthy in {deadline_s} s; last answer: {last}")


# ---- HTTP, with the standard library (the notebooks need no HTTP client package) ---------------


@dataclass
class Answer:
    """An HTTP answer, whatever its status."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


def http_get(url: str, timeout: float = 30) -> Answer:
    return _answer(urllib.request.Request(url), timeout)


def http_post_file(url: str, name: str, filename: str, data: bytes, timeout: float = 60) -> Answer:
    """POST one file as the form field `name` (multipart/form-data), as a browser's upload does."""
    boundary = secrets.token_hex(16)
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n")
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
    return _answer(urllib.request.Request(url, data=body, headers=headers, method="POST"), timeout)


def _answer(request: urllib.request.Request, timeout: float) -> Answer:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return Answer(r.status, r.read())
    except urllib.error.HTTPError as exc:  # 4xx and 5xx are answers too
        with exc:
            return Answer(exc.code, exc.read())


# ---- media -----------------------------------------------------------------------------------


@dataclass
class Clip:
    frames: np.ndarray  # (N, H, W, 3) RGB
    fps: float
    audio: np.ndarray  # mono float32
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps


def decode(fragments: list[bytes]) -> Clip:
    """Fragments (each a self-contained fMP4) decoded with PyAV and joined back to back."""
    import av

    frames, audio, fps, rate = [], [], 25.0, 24_000
    for data in fragments:
        with av.open(io.BytesIO(data)) as c:
            fps = float(c.streams.video[0].average_rate)
            frames += [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        with av.open(io.BytesIO(data)) as c:
            rate = c.streams.audio[0].rate
            audio += [f.to_ndarray().reshape(-1) for f in c.decode(audio=0)]
    return Clip(np.stack(frames), fps, np.concatenate(audio), rate)


def video(clip: Clip, width: int = 320):
    """An inline player: the joined fragments muxed again into one MP4 (a browser plays a single
    fragment as a file, but not fragments concatenated)."""
    from IPython.display import Video

    from avatar_core.media import mux_segment

    seg = mux_segment(clip.frames, clip.audio, clip.rate, round(clip.fps), clip.rate)
    return Video(seg.data, embed=True, mimetype="video/mp4", width=width)


def audio(pcm: np.ndarray, rate: int):
    from IPython.display import Audio

    return Audio(np.asarray(pcm, np.float32), rate=rate)


def loudness(clip: Clip) -> np.ndarray:
    """RMS of the audio under each video frame."""
    hop = clip.rate / clip.fps
    return np.array([
        np.sqrt(np.mean(clip.audio[int(i * hop) : int((i + 1) * hop)] ** 2) + 1e-12) for i in range(len(clip.frames))
    ])


def face_crop(frame: np.ndarray) -> tuple[slice, slice]:
    """The head's box in a frame (found with the procedural animator's 68 landmarks), so strips
    show the mouth rather than the whole portrait."""
    from backends.procedural.landmarks import detect_landmarks

    lm = detect_landmarks(frame)
    width = lm[16, 0] - lm[0, 0]
    cx, cy, half = lm[:, 0].mean(), lm[:, 1].mean() - 0.1 * width, 0.8 * width
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - 1.1 * half))
    return slice(y0, min(frame.shape[0], y0 + int(2.2 * half))), slice(x0, min(frame.shape[1], x0 + int(2 * half)))


def mouth_opening(clip: Clip) -> np.ndarray:
    """Per frame, the dark (open mouth) pixels in the box of the mouth and the room an opening jaw
    takes, placed from the first frame's landmarks: the measure tests/test_procedural_animator.py
    holds against the audio envelope."""
    import cv2

    from backends.procedural.landmarks import detect_landmarks

    lm = detect_landmarks(clip.frames[0])
    width = lm[54, 0] - lm[48, 0]
    rows = slice(int(lm[50:53, 1].min()), int(lm[57, 1] + 0.4 * width))
    cols = slice(int(lm[48, 0]), int(lm[54, 0]) + 1)
    grey = [cv2.cvtColor(np.ascontiguousarray(f[rows, cols]), cv2.COLOR_RGB2GRAY) for f in clip.frames]
    return np.array([(g < 70).sum() for g in grey], float)


def strip(ax_row, clip: Clip, picks, crop: tuple[slice, slice] | None = None, label: str = "") -> None:
    """Frames on a row of axes (`picks`: how many, evenly over the clip, or which), each titled
    with its time and its loudness relative to the clip's loudest frame."""
    if isinstance(picks, int):
        picks = np.linspace(0, len(clip.frames) - 1, picks).round().astype(int)
    level = loudness(clip)
    for k, (ax, i) in enumerate(zip(ax_row, picks)):
        frame = clip.frames[i] if crop is None else clip.frames[i][crop]
        ax.imshow(frame)
        ax.set_title(f"{i / clip.fps:.2f} s, loud {level[i] / max(level.max(), 1e-3):.0%}", fontsize=7)
        ax.set_xticks([]), ax.set_yticks([])
        if k == 0 and label:
            ax.set_ylabel(label, fontsize=8)


# ---- timelines -------------------------------------------------------------------------------

ROWS = ("asr", "llm", "tts", "animator", "playback")


def playback(segments: list[dict]) -> list[dict]:
    """When each fragment plays on a client that starts at the first arrival and plays each
    fragment once it has arrived and the one before has ended (a gap is an underrun)."""
    spans, end = [], None
    for seg in segments:
        start = seg["at"] if end is None else max(end, seg["at"])
        end = start + seg["duration_s"]
        spans.append({"stage": "playback", "start": start, "end": end, "sentence": seg["sentence"],
                      "fragment": seg["index"]})
    return spans


def draw_timeline(ax, spans: list[dict], title: str) -> None:
    """One bar per stage per sentence (LLM: writing it; TTS: speaking it) and per fragment
    (animator: rendering it; playback: playing it), coloured by sentence."""
    import matplotlib.pyplot as plt

    colours = plt.get_cmap("tab10")
    for span in spans:
        row = ROWS.index(span["stage"])
        sentence = span.get("sentence")
        colour = "0.55" if sentence is None else colours(sentence % 10)
        ax.barh(row, span["end"] - span["start"], left=span["start"], height=0.6, color=colour,
                edgecolor="black", linewidth=0.6)
        if "fragment" in span:
            ax.text((span["start"] + span["end"]) / 2, row, str(span["fragment"]), ha="center",
                    va="center", fontsize=6, color="white")
    firsts = [s["start"] for s in spans if s["stage"] == "playback"]
    if firsts:
        ax.axvline(min(firsts), color="red", linestyle="--", linewidth=1)
        ax.text(min(firsts), -0.7, f" first face {min(firsts):.2f} s", color="red", fontsize=8)
    ax.set_yticks(range(len(ROWS)), ROWS)
    ax.set_ylim(len(ROWS) - 0.4, -1.0)
    ax.set_xlabel("seconds from the decoded audio")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
