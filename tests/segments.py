"""Decode a media segment with PyAV, the way a test would judge what a browser receives."""

import io
from dataclasses import dataclass

import av
import numpy as np


@dataclass
class DecodedSegment:
    frames: list[np.ndarray]  # RGB
    fps: float
    audio: np.ndarray  # mono float32
    audio_rate: int

    @property
    def video_s(self) -> float:
        return len(self.frames) / self.fps

    @property
    def audio_s(self) -> float:
        return self.audio.size / self.audio_rate

    def same_length_within_a_frame(self) -> bool:
        """Audio and video lengths differ by at most one video frame, compared in whole samples."""
        per_frame = self.audio_rate / self.fps
        return abs(self.audio.size - len(self.frames) * per_frame) <= per_frame


def decode_segment(data: bytes) -> DecodedSegment:
    with av.open(io.BytesIO(data)) as c:
        fps = float(c.streams.video[0].average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(io.BytesIO(data)) as c:
        rate = c.streams.audio[0].rate
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    return DecodedSegment(frames, fps, audio, rate)
