"""Audio files for the bad-input corpus, made from real speech (jfk.flac) with PyAV and soundfile."""

from __future__ import annotations

import io
from functools import cache

import av
import numpy as np
import soundfile as sf

from avatar_core.media import decode_audio, resample
from tests.conftest import JFK, ROOT


@cache
def jfk_16k() -> np.ndarray:
    return decode_audio(JFK.read_bytes(), 60.0)


def wav(pcm: np.ndarray, rate: int, subtype: str = "PCM_16", channels: int = 1) -> bytes:
    """Mono float PCM at 16 kHz -> WAV at `rate` with `channels` copies and the given sample format."""
    pcm = resample(pcm, 16_000, rate)
    data = np.repeat(pcm[:, None], channels, axis=1) if channels > 1 else pcm
    buf = io.BytesIO()
    sf.write(buf, data, rate, subtype=subtype, format="WAV")
    return buf.getvalue()


def jfk_wav(rate: int = 16_000, subtype: str = "PCM_16", channels: int = 1) -> bytes:
    return wav(jfk_16k(), rate, subtype, channels)


def silence_wav(seconds: float) -> bytes:
    return wav(np.zeros(int(16_000 * seconds), np.float32), 16_000)


def poisoned_wav(value: float) -> bytes:
    """Float WAV of real speech with a stretch of NaN or inf samples in the middle."""
    pcm = jfk_16k().copy()
    pcm[8_000:8_400] = value
    buf = io.BytesIO()
    sf.write(buf, pcm, 16_000, subtype="FLOAT", format="WAV")
    return buf.getvalue()


def encoded(fmt: str, codec: str, rate: int) -> bytes:
    """Real speech re-encoded by FFmpeg into `fmt` (what browsers and phones send)."""
    pcm = resample(jfk_16k(), 16_000, rate)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame_size = stream.codec_context.frame_size or 1024
        for i in range(0, pcm.size, frame_size):
            chunk = np.ascontiguousarray(pcm[i : i + frame_size]).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, i
            for packet in stream.encode(frame):
                out.mux(packet)
        out.mux(stream.encode(None))
    return buf.getvalue()


def video_only_mp4() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return buf.getvalue()


def png() -> bytes:
    return (ROOT / "assets" / "avatars" / "astronaut.png").read_bytes()


def jfk_flac() -> bytes:
    return JFK.read_bytes()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height over a few bytes of data: how a decompression bomb
    looks before anyone inflates it. Readers must refuse it from the header alone."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * (width + 1) * 4)  # four rows; the rest would inflate on demand
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def grey_png(size: int = 256) -> bytes:
    """A valid image with no face in it."""
    import cv2

    return cv2.imencode(".png", np.full((size, size, 3), 128, np.uint8))[1].tobytes()
