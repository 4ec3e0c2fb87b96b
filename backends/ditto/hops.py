"""Ditto's online audio windows and its output lag, as plain arithmetic (no SDK, no GPU).

`StreamSDK.run_chunk` takes one window of `sum(chunksize) * 640 + 80` samples (6480 for (3, 5, 2))
every `chunksize[1] * 640` samples (3200: a 200 ms hop), over the stream's audio with
`chunksize[0] * 640` zeros (1920) before its first sample; each window gives the HuBERT features
of `chunksize[1]` frames (5), those of window k being frames 5k..5k+4.

Its audio-to-motion worker then moves the features on to the diffusion model only in blocks of at
least `valid_clip_len` (the SDK's `seq_frames - overlap_v2`; 10 with the online config's overlap of
70), and its first clip only sets the reference motion, so frames leave one clip behind the audio.
`frames_out` is that rule; `samples_for_frames` inverts it: how much audio (real or silence) the
stream must have been fed before the frames a caller needs have all left the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

HOP = 640  # samples of 16 kHz audio per 25 fps video frame


def window_len(chunksize: Sequence[int] = (3, 5, 2)) -> int:
    return sum(chunksize) * HOP + 80


def stride(chunksize: Sequence[int] = (3, 5, 2)) -> int:
    return chunksize[1] * HOP


def lead(chunksize: Sequence[int] = (3, 5, 2)) -> int:
    return chunksize[0] * HOP


class HopWindows:
    """One stream's audio, pushed in pieces of any length, cut into `run_chunk` windows."""

    def __init__(self, chunksize: Sequence[int] = (3, 5, 2)):
        self.chunksize = tuple(chunksize)
        self.win, self.step = window_len(chunksize), stride(chunksize)
        self.buf = np.zeros(lead(chunksize), np.float32)  # the zeros before the first sample
        self.fed = 0  # samples pushed (the stream's clock, without the leading zeros)
        self.windows = 0  # windows handed out so far

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        """The windows that `pcm` completes, in order (each a fresh array)."""
        self.buf = np.concatenate([self.buf, np.asarray(pcm, np.float32)])
        self.fed += len(pcm)
        out = []
        while len(self.buf) >= self.win:
            out.append(self.buf[: self.win].copy())
            self.buf = self.buf[self.step :]
            self.windows += 1
        return out


def window_end(k: int, chunksize: Sequence[int] = (3, 5, 2)) -> int:
    """The stream sample (exclusive) that window k reaches: it covers [k*stride - lead, that)."""
    return k * stride(chunksize) + window_len(chunksize) - lead(chunksize)


def frames_out(features: int, valid_clip_len: int, step: int = 5) -> int:
    """Frames the SDK has emitted once `features` features have been queued (online mode).

    The worker moves queued features on once at least `valid_clip_len` have gathered (whole
    windows of `step`), runs a clip whenever `valid_clip_len` new ones have moved, and the first
    clip emits nothing."""
    block = -(-valid_clip_len // step) * step
    moved = features // block * block
    return valid_clip_len * max(0, moved // valid_clip_len - 1)


def samples_for_frames(n_frames: int, valid_clip_len: int, chunksize: Sequence[int] = (3, 5, 2)) -> int:
    """Stream samples to feed before frames [0, n_frames) have all been emitted."""
    if n_frames <= 0:
        return 0
    step = chunksize[1]
    block = -(-valid_clip_len // step) * step
    moved = valid_clip_len * (-(-n_frames // valid_clip_len) + 1)  # clips needed, plus the first
    features = -(-moved // block) * block
    windows = -(-features // step)
    return window_end(windows - 1, chunksize)
