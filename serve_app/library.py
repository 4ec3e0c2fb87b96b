"""Avatars and voices that clients upload, stored by content hash so clients never name a path.

Layout under `StorageConfig.dir`: `avatars/<id>.png` (the validated image, re-encoded, scaled to at
most `max_image_side`), `voices/<id>.wav` (the clip as 24 kHz mono 16-bit PCM), and `<id>.json`
beside each with its display name. The ids are the first 16 hex digits of the SHA-256 of the upload,
so the same file uploaded twice is one entry, and ids match `ID_PATTERN`, which every lookup checks.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import wave
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from avatar_core.media import MediaError, decode_audio
from avatar_core.config import StorageConfig

ID_PATTERN = re.compile(r"^(default|[0-9a-f]{16})$")
VOICE_RATE = 24_000
KINDS = ("avatars", "voices")


def content_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def display_name(filename: str | None, fallback: str) -> str:
    """A label for lists, never used as a path."""
    stem = Path(filename or "").stem
    return re.sub(r"[^\w .()-]", "", stem)[:60].strip() or fallback


def decode_image(data: bytes, cfg: StorageConfig) -> np.ndarray:
    """Validated RGB pixels of an uploaded image, or MediaError.

    Pillow reads only the header, so a decompression bomb is rejected by its dimensions before
    OpenCV allocates anything; OpenCV then decodes the pixels."""
    if not data:
        raise MediaError("empty_image", "the image upload is empty")
    try:
        with Image.open(io.BytesIO(data)) as header:
            width, height = header.size
    except Image.DecompressionBombError:
        raise MediaError("image_too_large", f"the image has more than {cfg.max_image_pixels} pixels") from None
    except Exception:
        raise MediaError("undecodable_image", "the file is not an image (PNG, JPEG or WebP)") from None
    if width * height > cfg.max_image_pixels:
        raise MediaError(
            "image_too_large", f"the image is {width}x{height}; the limit is {cfg.max_image_pixels} pixels"
        )
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise MediaError("undecodable_image", "the image could not be decoded")
    scale = cfg.max_image_side / max(bgr.shape[:2])
    if scale < 1:
        bgr = cv2.resize(bgr, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_png(rgb: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise MediaError("undecodable_image", "the image could not be re-encoded")
    return png.tobytes()


def decode_voice(data: bytes, cfg: StorageConfig) -> np.ndarray:
    """The reference clip as 24 kHz mono float32, between min_voice_s and max_voice_s long."""
    try:
        pcm = decode_audio(data, cfg.max_voice_s, rate=VOICE_RATE)
    except MediaError as exc:
        if exc.code == "audio_too_long":
            raise MediaError("voice_too_long", f"a voice clip may be at most {cfg.max_voice_s:g} s") from None
        raise
    if len(pcm) < cfg.min_voice_s * VOICE_RATE:
        raise MediaError("voice_too_short", f"a voice clip must be at least {cfg.min_voice_s:g} s of speech")
    return pcm


def encode_wav(pcm: np.ndarray, rate: int = VOICE_RATE) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(pcm, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


class Library:
    """The stored uploads of one kind ('avatars' or 'voices'); files only, so any replica reads them."""

    def __init__(self, root: Path, kind: str, suffix: str):
        assert kind in KINDS
        self.dir = Path(root) / kind
        self.kind, self.suffix = kind, suffix

    def path(self, item_id: str) -> Path | None:
        """The stored file of an id, or None; ids that could name anything else are refused."""
        if not ID_PATTERN.match(item_id) or item_id == "default":
            return None
        path = self.dir / f"{item_id}{self.suffix}"
        return path if path.is_file() else None

    def save(self, item_id: str, data: bytes, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{item_id}{self.suffix}.tmp"
        tmp.write_bytes(data)
        tmp.replace(self.dir / f"{item_id}{self.suffix}")  # atomic: readers never see half a file
        (self.dir / f"{item_id}.json").write_text(json.dumps(meta))

    def items(self) -> list[dict]:
        if not self.dir.is_dir():
            return []
        found = []
        for meta_path in sorted(self.dir.glob("*.json"), key=lambda p: p.stat().st_mtime):
            item_id = meta_path.stem
            if self.path(item_id):
                found.append({"id": item_id, **json.loads(meta_path.read_text())})
        return found
