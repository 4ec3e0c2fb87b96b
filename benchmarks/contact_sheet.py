"""Regenerate docs/contact-sheet.png (astronaut) and docs/contact-sheet-2.png (Grace Hopper).

Each sheet is a grid of head crops sampled over the spoken sentence of jfk.flac, labelled with the
time and a bar for the audio loudness of that frame, so mouth shapes can be judged against sound.

    python -m benchmarks.contact_sheet
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from avatar_core.media import decode_audio
from backends.procedural import AnimState, ProceduralAnimator

ROOT = Path(__file__).resolve().parents[1]

AUDIO = ROOT / "assets" / "media" / "jfk.flac"
SHEETS = [
    (ROOT / "assets" / "avatars" / "astronaut.png", ROOT / "docs" / "contact-sheet.png"),
    (ROOT / "assets" / "avatars" / "grace_hopper.jpg", ROOT / "docs" / "contact-sheet-2.png"),
]
COLS, ROWS, TILE = 8, 5, 170


def sheet(image_path: Path, audio: np.ndarray, first: int, step: int) -> np.ndarray:
    """COLS x ROWS tiles of frames first, first+step, ... (head crop, TILE px wide)."""
    anim = ProceduralAnimator(fps=25, seed=0)
    avatar = anim.prepare_avatar(cv2.cvtColor(cv2.imread(str(image_path)), cv2.COLOR_BGR2RGB))
    frames, _ = anim.render(avatar, audio, AnimState())
    lm = avatar.landmarks
    fw = lm[16, 0] - lm[0, 0]
    cx, cy = lm[:, 0].mean(), lm[:, 1].mean() - 0.1 * fw
    half = int(0.8 * fw)
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half * 1.1))
    x1, y1 = min(avatar.size[1], x0 + 2 * half), min(avatar.size[0], y0 + int(2.2 * half))
    rms = np.sqrt(np.mean(np.pad(audio, (0, len(frames) * 640 - len(audio))).reshape(-1, 640) ** 2, axis=1))
    tiles = []
    for k in range(COLS * ROWS):
        i = min(first + k * step, len(frames) - 1)
        crop = frames[i, y0:y1, x0:x1]
        size = (TILE, int(TILE * crop.shape[0] / crop.shape[1]))
        tile = cv2.resize(crop, size, interpolation=cv2.INTER_AREA if crop.shape[1] > TILE else cv2.INTER_CUBIC)
        bar = np.full((22, TILE, 3), 255, np.uint8)
        cv2.rectangle(bar, (0, 14), (int(TILE * min(1.0, rms[i] / rms.max())), 21), (70, 130, 200), -1)
        cv2.putText(bar, f"#{i} {i / 25:.2f}s", (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(np.vstack([tile, bar]))
    framed = [np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles]
    return np.vstack([np.hstack(framed[r * COLS : (r + 1) * COLS]) for r in range(ROWS)])


def main() -> None:
    audio = decode_audio(AUDIO.read_bytes(), 60)
    # "ask not what your country can do for you, ask what you can do for ...": frames 80-236.
    for image_path, out in SHEETS:
        out.parent.mkdir(parents=True, exist_ok=True)
        img = sheet(image_path, audio, first=80, step=4)
        cv2.imwrite(str(out), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"wrote {out.relative_to(ROOT)} ({img.shape[1]}x{img.shape[0]})")


if __name__ == "__main__":
    main()
