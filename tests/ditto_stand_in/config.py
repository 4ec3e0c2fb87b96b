"""The Ditto backend's config pointed at the stand-in SDK beside this file (tests only)."""

import pickle
import tempfile
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent


def solid_png(path: Path, rgb: tuple[int, int, int], size: tuple[int, int] = (96, 128)) -> Path:
    img = np.zeros((*size, 3), np.uint8)
    img[:] = rgb
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    return path


MODEL_FILES = ("hubert_fp32.engine", "lmdm_v0.4_hubert_fp32.engine", "warp_network_fp16.engine")


def stand_in_config(overlap_v2: int = 70, frame_s: float = 0.0, fail_at_frame: int | None = None,
                    fail_once: bool = False, fail_colour: tuple | None = None,
                    block_at_frame: int | None = None, **fields):
    """Ditto.Config with repo_dir at the stand-in, a checkpoint dir (holding the engine files its cfg
    names, as upstream's ditto_trt_* directories do) and cfg pickle of its own, and a red default
    avatar (the stand-in paints each frame in its avatar's colour)."""
    from backends.ditto import Ditto

    from tests.conftest import SCRATCH

    tmp = Path(tempfile.mkdtemp(prefix="ditto-stand-in-", dir=SCRATCH))
    engines = tmp / "checkpoints" / "ditto_trt_stand_in"
    engines.mkdir(parents=True)
    for name in MODEL_FILES:
        (engines / name).write_bytes(b"stand-in")
    with open(tmp / "cfg.pkl", "wb") as f:
        pickle.dump({"default_kwargs": {"overlap_v2": 10, "sampling_timesteps": 50},  # upstream's setup defaults
                     "model_files": MODEL_FILES,
                     "seq_frames": 80, "frame_s": frame_s, "fail_at_frame": fail_at_frame,
                     "fail_once": fail_once, "fail_colour": fail_colour, "block_at_frame": block_at_frame}, f)
    fields.setdefault("overlap_v2", overlap_v2)
    fields.setdefault("scratch_dir", tmp)  # a replica killed with the cluster leaves its avatars here
    return Ditto.Config(repo_dir=REPO, checkpoint_dir=engines, cfg_pkl=tmp / "cfg.pkl",
                        avatar_image=solid_png(tmp / "red.png", (220, 40, 40)), **fields)


def sdk_threads() -> list[str]:
    """The stand-in SDK's worker threads alive in this process."""
    import threading

    return [t.name for t in threading.enumerate() if t.name.startswith("stand-in-")]
