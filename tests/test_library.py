"""Avatars and voices registered through the API: validation, content-hash ids, use in a turn."""

import io

import cv2
import httpx
import numpy as np
import soundfile as sf

from tests.conftest import JFK, MEDIA, ROOT
from tests.segments import decode_segment, image_rgb, shows
from tests.test_turn import post_turn


def png(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", rgb)[1].tobytes()


def test_avatar_upload_validates_and_registers(serve_app):
    url = f"{serve_app}/api/v1/avatars"
    listed = httpx.get(url, timeout=30).json()["avatars"]
    assert listed[0]["id"] == "default" and listed[0]["preview_url"].endswith("/default/image")

    r = httpx.post(url, files={"image": ("x.png", b"this is not an image")}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "undecodable_image"
    r = httpx.post(url, files={"image": ("bomb.png", _bomb_png())}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"
    r = httpx.post(url, files={"image": ("grey.png", png(np.full((256, 256, 3), 128, np.uint8)))}, timeout=60)
    assert r.status_code == 422 and r.json()["error"]["code"] == "no_face"

    face = (ROOT / "assets" / "avatars" / "grace_hopper.jpg").read_bytes()
    r = httpx.post(url, files={"image": ("../../etc/Grace Hopper.jpg", face)}, timeout=60)
    assert r.status_code == 201, r.text
    made = r.json()
    assert len(made["id"]) == 16 and made["name"] == "Grace Hopper"
    again = httpx.post(url, files={"image": ("other.jpg", face)}, timeout=60).json()
    assert again["id"] == made["id"]  # the same content, the same id
    image = httpx.get(f"{serve_app}{made['preview_url']}", timeout=30)
    assert image.status_code == 200 and cv2.imdecode(np.frombuffer(image.content, np.uint8), 1) is not None
    assert made["id"] in [a["id"] for a in httpx.get(url, timeout=30).json()["avatars"]]
    assert httpx.get(f"{url}/..%2F..%2Fetc%2Fpasswd/image", timeout=30).status_code == 404

    # a turn with the new avatar renders that face
    events, _ = post_turn(serve_app, JFK.read_bytes(), extra={"avatar_id": made["id"]})
    assert events[-1]["type"] == "done", events[-1]
    seg = next(e for e in events if e["type"] == "segment")
    frame = decode_segment(httpx.get(f"{serve_app}{seg['url']}", timeout=30).content).frames[0]
    default = image_rgb(httpx.get(f"{serve_app}/api/v1/avatars/default/image", timeout=30).content)
    assert frame.shape[:2] == image_rgb(image.content).shape[:2]
    assert shows(frame, {"grace": image_rgb(image.content), "default": default}) == "grace"


def _bomb_png() -> bytes:
    """A valid PNG header for a 30000 x 30000 image with almost no data: decoding would need 2.7 GB."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30_000, 30_000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def test_voice_upload_validates_and_stores(serve_app):
    url = f"{serve_app}/api/v1/voices"
    assert httpx.get(url, timeout=30).json()["voices"][0]["id"] == "default"
    r = httpx.post(url, files={"audio": ("v.wav", b"not audio")}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "undecodable_audio"
    short = io.BytesIO()
    sf.write(short, np.zeros(8000, np.float32), 16_000, format="WAV")
    r = httpx.post(url, files={"audio": ("short.wav", short.getvalue())}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["code"] == "voice_too_short"

    r = httpx.post(url, files={"audio": ("jfk.flac", JFK.read_bytes())}, timeout=30)
    assert r.status_code == 201, r.text
    voice = r.json()
    assert "voice-cloning" in voice["note"] and 10.5 < voice["duration_s"] < 11.5
    clip = httpx.get(f"{serve_app}{voice['preview_url']}", timeout=30)
    audio, rate = sf.read(io.BytesIO(clip.content))
    assert rate == 24_000 and abs(len(audio) / rate - voice["duration_s"]) < 0.05
    assert voice["id"] in [v["id"] for v in httpx.get(url, timeout=30).json()["voices"]]

    events, _ = post_turn(serve_app, JFK.read_bytes(), extra={"voice_id": voice["id"], "language": "en"})
    assert events[-1]["type"] == "done"
    for extra, code, status in (
        ({"voice_id": "ffffffffffffffff"}, "unknown_voice", 404),
        ({"avatar_id": "nope"}, "unknown_avatar", 404),
        ({"language": "fr"}, "unsupported_language", 422),
    ):
        r = httpx.post(f"{serve_app}/api/v1/turn", files={"audio": ("a.flac", JFK.read_bytes())}, data=extra, timeout=30)
        assert r.status_code == status and r.json()["error"]["code"] == code
