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


def image_rgb(data: bytes) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def differences(frame: np.ndarray, images: dict[str, np.ndarray]) -> dict[str, float]:
    """Mean absolute pixel difference between a decoded frame and each image (scaled to the frame),
    to tell which avatar a frame shows."""
    import cv2

    h, w = frame.shape[:2]
    return {
        name: float(np.abs(cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).astype(np.int16) - frame).mean())
        for name, img in images.items()
    }


def shows(frame: np.ndarray, images: dict[str, np.ndarray]) -> str:
    """The image a frame shows: much closer to it than to any other."""
    diffs = differences(frame, images)
    best, *others = sorted(diffs, key=diffs.get)
    assert all(diffs[best] * 2 < diffs[o] for o in others), diffs
    return best
