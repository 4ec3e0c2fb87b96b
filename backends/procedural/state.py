"""The continuity a replica needs between calls, owned and passed back by the caller."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class AnimState:
    """Picklable session state: the frame clock plus the mouth tracker's memory.

    frame: frames rendered so far in this session (drives blinks, gaze, head motion, breathing).
    open/width: the last frame's mouth shape, so smoothing carries across segment boundaries.
    peak_db: the speaker's running loudness peak (the mouth opens relative to it).
    tilt_db: the running mean spectral tilt of voiced speech (rounding vs spreading is relative).
    tail: the last few ms of the previous segment's audio, the analysis window's left context.
    """

    frame: int = 0
    open: float = 0.0
    width: float = 0.0
    peak_db: float = -16.0
    tilt_db: float = -12.0
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
