"""Audio (16 kHz mono) -> per-frame mouth openness and width, with attack/release smoothing.

Openness follows the loudness of each 40 ms frame relative to the speaker's running peak (so TTS
voices and quiet microphones both use the full range; silence closes the mouth). Width follows the
spectral tilt of voiced frames: energy 1-4 kHz vs 250-1000 Hz is high for spread vowels (ee, eh)
and low for rounded ones (oo, oh). The mouth leads the sound by `LEAD` frames, as real speakers
shape the mouth before the sound comes out.
"""

from __future__ import annotations

import numpy as np

SR = 16_000
HOP = 640  # samples per video frame at 25 fps
WIN = 1024  # analysis window, centred on the frame
LEAD = 1  # frames the mouth moves ahead of the sound
RANGE_DB = 24.0  # loudness span from closed to fully open, below the running peak
GATE_DB = -60.0  # absolute silence
ATTACK, RELEASE = 0.7, 0.4  # per-frame smoothing for opening / closing
PEAK_DECAY_DB = 0.02  # per frame (0.5 dB/s): the peak forgets a loud moment slowly
PEAK_MIN_DB = -40.0


def analyse(audio: np.ndarray, tail: np.ndarray, hop: int = HOP) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame loudness (dBFS), spectral tilt (dB) and the new tail, for ceil(len/hop) frames."""
    n = -(-len(audio) // hop)
    win = max(WIN, hop)
    ctx = (win - hop) // 2
    left = np.zeros(ctx, np.float32)
    if ctx and len(tail):
        keep = tail[-ctx:]
        left[ctx - len(keep) :] = keep
    right = np.zeros((n - 1) * hop + win - ctx - len(audio), np.float32)
    x = np.concatenate([left, audio.astype(np.float32), right])
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n]
    rms = np.sqrt(np.mean(frames[:, ctx : ctx + hop] ** 2, axis=1))  # the frame's own 40 ms
    db = 20 * np.log10(rms + 1e-9)
    spec = np.abs(np.fft.rfft(frames * np.hanning(win).astype(np.float32), axis=1)) ** 2
    f = np.fft.rfftfreq(win, 1 / SR)
    low, high = (f >= 250) & (f < 1000), (f >= 1000) & (f < 4000)
    tilt = 10 * np.log10((spec[:, high].sum(1) + 1e-12) / (spec[:, low].sum(1) + 1e-12))
    new_tail = np.concatenate([tail, audio.astype(np.float32)])[-ctx:] if ctx else tail[:0]
    return db, tilt, new_tail


def track(
    audio: np.ndarray,
    state_open: float,
    state_width: float,
    peak_db: float,
    tilt_db: float,
    tail: np.ndarray,
    hop: int = HOP,
) -> tuple[np.ndarray, np.ndarray, float, float, float, float, np.ndarray]:
    """Mouth (open, width) per frame plus the tracker memory to carry into the next call.

    Returns (open (n,), width (n,), last_open, last_width, peak_db, tilt_db, tail).
    """
    db, tilt, new_tail = analyse(audio, tail, hop)
    n = len(db)
    # Lead: frame k looks at frame k+LEAD; the last frames of a segment reuse the last analysis.
    ahead = np.minimum(np.arange(n) + LEAD, n - 1)
    db_t, tilt_t = db[ahead], tilt[ahead]
    opens, widths = np.empty(n), np.empty(n)
    o, w = state_open, state_width
    for k in range(n):
        d = db_t[k]
        peak_db = max(d, peak_db - PEAK_DECAY_DB, PEAK_MIN_DB)
        x = 0.0 if d < GATE_DB else float(np.clip((d - (peak_db - RANGE_DB)) / RANGE_DB, 0.0, 1.0))
        target = x * x  # expands the top of the range: vowels open, consonants nearly close
        if target > 0.15:  # voiced enough to trust the tilt: track the speaker's mean tilt too
            tilt_db += 0.03 * (tilt_t[k] - tilt_db)
        wt = float(np.tanh((tilt_t[k] - tilt_db) / 6.0)) * min(1.0, target * 3.0)
        o += (ATTACK if target > o else RELEASE) * (target - o)
        w += 0.5 * (wt - w)
        opens[k], widths[k] = o, w
    return opens, widths, o, w, peak_db, tilt_db, new_tail


def rest(n: int, state_open: float, state_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Mouth relaxing to closed over a few frames, for idle segments."""
    k = np.arange(1, n + 1)
    return state_open * (1 - RELEASE) ** k, state_width * 0.5**k
