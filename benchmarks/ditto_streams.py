"""Ditto on a GPU: streams per GPU, and what registering an avatar once saves. Not run here (no GPU
was lent to this task); `--stand-in` runs the same code on the test stand-in SDK, to check the
script, and its numbers mean nothing.

For each number of concurrent streams N (one SDK instance each, one replica), every stream speaks
jfk.flac (11 s) in 1 s pieces through the Ditto backend, as the Animator replica calls it, and the
table gives: the first frame's latency (from the first piece), frames per second per stream and in
all, the real-time factor of the slowest stream, and the GPU memory in use. Streams per GPU is the
largest N whose slowest stream stays below RTF 1 with room (say 0.8). Then `setup` is timed with
the avatar's registration cached (what a new stream pays) and without it (what it paid before):
the difference is the saving per stream and per turn.

    python -m benchmarks.ditto_streams --repo /opt/ditto-talkinghead \\
        --data-root /opt/ditto-talkinghead/checkpoints/ditto_trt_sm89 \\
        --cfg /opt/ditto-talkinghead/checkpoints/ditto_cfg/v0.4_hubert_cfg_trt_online.pkl --streams 1 2 3 4
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from avatar_core.media import decode_audio
from backends.ditto import Ditto
from backends.ditto.streams import Stream

ROOT = Path(__file__).resolve().parents[1]

AUDIO = ROOT / "assets" / "media" / "jfk.flac"
AVATAR = ROOT / "assets" / "avatars" / "astronaut.png"


def gpu_memory_mib() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout.split()
        return out[0] if out else "-"
    except (OSError, subprocess.TimeoutExpired):
        return "-"


async def speak(backend: Ditto, avatar, audio: np.ndarray) -> tuple[float, float, int]:
    """(seconds to the first frame, seconds in all, frames) for one conversation."""
    state, frames, first = None, 0, None
    started = time.perf_counter()
    for i in range(0, len(audio), 16_000):
        async for batch, state in backend.render(avatar, audio[i : i + 16_000], state):
            first = first or time.perf_counter() - started
            frames += len(batch)
    return first, time.perf_counter() - started, frames


async def capacity(cfg, n: int, audio: np.ndarray, image: np.ndarray) -> str:
    backend = Ditto(cfg.model_copy(update={"pool_size": n}))
    avatar = await backend.prepare_avatar(image)
    await speak(backend, avatar, audio[:16_000])  # warm-up
    results = await asyncio.gather(*(speak(backend, avatar, audio) for _ in range(n)))
    memory = gpu_memory_mib()
    await backend.aclose()
    seconds = len(audio) / 16_000
    first = max(r[0] for r in results)
    worst = max(r[1] for r in results) / seconds
    per_stream = min(r[2] / r[1] for r in results)
    return f"| {n} | {first:.3f} | {per_stream:.1f} | {sum(r[2] / r[1] for r in results):.1f} | {worst:.2f} | {memory} |"


async def setup_saving(cfg, image: np.ndarray, repeats: int) -> str:
    backend = Ditto(cfg.model_copy(update={"pool_size": 1}))
    avatar = await backend.prepare_avatar(image)
    slot = backend.pool.try_acquire()
    cached, fresh = [], []
    wrapped = slot.sdk.avatar_registrar
    for i in range(repeats):
        for times, registrar in ((cached, wrapped), (fresh, wrapped.inner)):
            slot.sdk.avatar_registrar = registrar
            stream = Stream(f"bench-{i}-{len(times)}", slot, avatar, backend.router, backend.cfg)
            started = time.perf_counter()
            stream.open()  # StreamSDK.setup + setup_Nd, as a new stream pays
            times.append(time.perf_counter() - started)
            stream.shutdown(graceful=True)
    slot.sdk.avatar_registrar = wrapped
    c, f = np.median(cached), np.median(fresh)
    return f"| {c:.3f} | {f:.3f} | {f - c:.3f} | {f / c:.1f}x |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--cfg", type=Path)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--sampling-timesteps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--stand-in", action="store_true", help="the test stand-in SDK (checks the script only)")
    args = parser.parse_args()
    if args.stand_in:
        from tests.ditto_stand_in.config import stand_in_config

        cfg = stand_in_config(frame_s=0.002)
    else:
        cfg = Ditto.Config(repo_dir=args.repo, checkpoint_dir=args.data_root, cfg_pkl=args.cfg,
                           sampling_timesteps=args.sampling_timesteps)
    audio = decode_audio(AUDIO.read_bytes(), 60)
    image = cv2.cvtColor(cv2.imread(str(AVATAR)), cv2.COLOR_BGR2RGB)
    if args.stand_in:
        image[:] = image.reshape(-1, 3).mean(0).astype(np.uint8)  # the stand-in's "face": a flat image
    print("| streams | first frame s | fps per stream (slowest) | fps in all | RTF (slowest) | GPU MiB |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in args.streams:
        print(asyncio.run(capacity(cfg, n, audio, image)), flush=True)
    print("\n| setup, registration cached s | setup, registered again s | saved per stream s | ratio |")
    print("| ---: | ---: | ---: | ---: |")
    print(asyncio.run(setup_saving(cfg, image, args.repeats)))


if __name__ == "__main__":
    main()
