"""STAND-IN for antgroup/ditto-talkinghead's `stream_pipeline_online` (tests only: no model, no GPU).

It has the real `StreamSDK`'s constructor, methods and arguments, its six worker threads joined by
`queue.Queue(maxsize=100)` with the same end marker (None) and stop event, `close()` joining them
and re-raising a worker's error, and its online audio-to-motion timing (features move on in blocks
of `valid_clip_len`, the first clip emits nothing, the end flushes). Written from reading the real
module's behaviour, not copied. Instead of the models it paints each frame so tests can read it
back after H.264: the source image's mean colour; a top band as bright as the frame's audio (the
RMS of its 640 samples); a bottom band with the frame's number on the stream in 12 binary blocks.

As in the real module, each worker looks up its queues and the stop event on the SDK instance
(`self.<stage>_queue`, `self.stop_event`) on every loop, not once: a worker that outlives its stream
(blocked in a call that ignores the stop event) works for whatever stream `setup` starts next on the
same instance. And, as the real cfg does, the cfg names model files that `StreamSDK` joins onto
`data_root` (it fails on a directory that does not hold them itself).

The cfg "pickle" holds: default_kwargs (overlap_v2 ...), seq_frames, model_files (bare names, joined
onto data_root), frame_s (seconds each frame takes in the decode worker), fail_at_frame (the warp
worker raises there, for streams of an avatar whose colour is fail_colour if that is set), fail_once
(only the first such stream in this process fails) and block_at_frame (the decode worker blocks there,
deaf to the stop event, until `UNBLOCK` is set: a call stuck on the GPU; streams fed audio only).
"""

import pickle
import queue
import threading
import time
from pathlib import Path

import cv2
import numpy as np

BITS = 12
_failed = threading.Event()  # fail_once: set when a stream has failed in this process
UNBLOCK = threading.Event()  # releases a decode worker blocked at block_at_frame


class VideoWriterByImageIO:
    """The real writer encodes to a file through imageio/ffmpeg; the backend must replace it."""

    def __init__(self, video_path, fps=25, **kwargs):
        raise AssertionError(f"the stand-in SDK was asked to write a file: {video_path}")


class AvatarRegistrar:
    calls = 0  # registrations computed in this process (the backend should compute one per avatar)

    def __call__(self, source_path, max_dim=1920, n_frames=-1, **crop_kwargs):
        type(self).calls += 1
        bgr = cv2.imread(str(source_path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise ValueError(f"Unsupported source type: {source_path}")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        h, w = rgb.shape[:2]
        if rgb.reshape(-1, 3).std(0).max() > 60:  # the stand-in's "no face": a noisy image
            raise TypeError("'NoneType' object is not subscriptable")
        rgb = np.ascontiguousarray(rgb[: h - h % 2, : w - w % 2])
        colour = rgb.reshape(-1, 3).mean(0).round().astype(np.uint8)
        return {"x_s_info_lst": [{"colour": colour}], "f_s_lst": [None], "M_c2o_lst": [None],
                "eye_open_lst": [], "eye_ball_lst": [], "sc": None, "is_image_flag": True,
                "img_rgb_lst": [rgb]}


class _Audio2Motion:
    def __init__(self, seq_frames):
        self.seq_frames = seq_frames

    def setup(self, overlap_v2):
        self.overlap_v2 = overlap_v2
        self.valid_clip_len = self.seq_frames - overlap_v2


class _Wav2Feat:
    feat_dim = 1
    support_streaming = True

    def __call__(self, audio, sr=16000, norm_mean_std=None, chunksize=(3, 5, 2)):
        """One window's features: the RMS of each of its middle chunksize[1] frames."""
        assert len(audio) == sum(chunksize) * 640 + 80, len(audio)
        mid = np.asarray(audio[chunksize[0] * 640 : (chunksize[0] + chunksize[1]) * 640], np.float32)
        return np.sqrt((mid.reshape(chunksize[1], 640) ** 2).mean(1)).reshape(-1, 1)

    def wav2feat(self, audio, sr=16000, norm_mean_std=None, chunksize=(3, 5, 2)):
        return np.zeros((int(np.ceil(len(audio) / 640)), 1), np.float32)


class StreamSDK:
    def __init__(self, cfg_pkl, data_root, **kwargs):
        with open(cfg_pkl, "rb") as f:
            cfg = pickle.load(f)
        for name in cfg.get("model_files", []):  # the real cfg's model paths are bare names
            path = Path(data_root) / name
            if not path.is_file():
                raise FileNotFoundError(f"[Errno 2] No such file or directory: '{path}'")
        self.default_kwargs = dict(cfg.get("default_kwargs", {}))
        self.frame_s = cfg.get("frame_s", 0.0)
        self.fail_at_frame = cfg.get("fail_at_frame")
        self.fail_once = cfg.get("fail_once", False)
        self.fail_colour = cfg.get("fail_colour")
        self.block_at_frame = cfg.get("block_at_frame")
        self.setup_kwargs: dict = {}
        self.avatar_registrar = AvatarRegistrar()
        self.audio2motion = _Audio2Motion(cfg.get("seq_frames", 80))
        self.wav2feat = _Wav2Feat()
        self.setups = 0

    def setup_Nd(self, N_d, fade_in=-1, fade_out=-1, ctrl_info=None):
        self.N_d, self.fade_in, self.fade_out = N_d, fade_in, fade_out
        self.ctrl_info = ctrl_info if ctrl_info is not None else self.ctrl_info

    def setup(self, source_path, output_path, **kwargs):
        kwargs = {**self.default_kwargs, **kwargs}
        self.setups += 1
        self.setup_kwargs = kwargs
        self.fed = False  # run_chunk called on this stream (block_at_frame spares avatar registrations)
        self.online_mode = kwargs.get("online_mode", False)
        assert self.online_mode, "the stand-in only models online mode"
        self.ctrl_info = kwargs.get("ctrl_info", {})
        crop = {k: kwargs.get(k, d) for k, d in
                (("crop_scale", 2.3), ("crop_vx_ratio", 0), ("crop_vy_ratio", -0.125), ("crop_flag_do_rot", True))}
        self.source_info = self.avatar_registrar(source_path, max_dim=kwargs.get("max_size", 1920),
                                                 n_frames=kwargs.get("N_d", -1), **crop)
        self.audio2motion.setup(kwargs.get("overlap_v2", 10))
        self.output_path = output_path
        self.tmp_output_path = output_path + ".tmp.mp4"
        self.writer = VideoWriterByImageIO(self.tmp_output_path)

        self.worker_exception = None
        self.stop_event = threading.Event()
        self.audio2motion_queue = queue.Queue(maxsize=100)
        self.motion_stitch_queue = queue.Queue(maxsize=100)
        self.warp_f3d_queue = queue.Queue(maxsize=100)
        self.decode_f3d_queue = queue.Queue(maxsize=100)
        self.putback_queue = queue.Queue(maxsize=100)
        self.writer_queue = queue.Queue(maxsize=100)
        stages = [  # queues by name: a worker reads the instance's current ones on every loop
            (self._audio2motion, "audio2motion_queue", "motion_stitch_queue"),
            (lambda x: x, "motion_stitch_queue", "warp_f3d_queue"),
            (self._warp, "warp_f3d_queue", "decode_f3d_queue"),
            (self._decode, "decode_f3d_queue", "putback_queue"),
            (self._putback, "putback_queue", "writer_queue"),
            (None, "writer_queue", None),
        ]
        self.thread_list = [threading.Thread(target=self._worker, args=s, name=f"stand-in-{i}") for i, s in enumerate(stages)]
        self._a2m = {"buffer": 0, "moved": 0, "feats": [], "emitted": 0}
        for t in self.thread_list:
            t.start()

    # --- workers ---------------------------------------------------------------------------------
    def _worker(self, work, inbox_name, outbox_name):
        try:
            while not self.stop_event.is_set():
                inbox = getattr(self, inbox_name)
                outbox = getattr(self, outbox_name) if outbox_name else None
                try:
                    item = inbox.get(timeout=1)
                except queue.Empty:
                    continue
                if work == self._audio2motion:
                    self._audio2motion(item, outbox)
                    if item is None:
                        break
                    continue
                if item is None:
                    if outbox is not None:
                        outbox.put(None)
                    break
                if outbox is None:
                    self.writer(item, fmt="rgb")
                else:
                    item = work(item)
                    getattr(self, outbox_name).put(item)  # the instance's queue after the work
        except Exception as exc:
            self.worker_exception = exc
            self.stop_event.set()

    def _audio2motion(self, item, outbox):
        """Online timing: features move on in blocks of at least valid_clip_len; a clip runs for
        every valid_clip_len moved; the first emits nothing; the end emits the rest and one clip
        more (the real SDK pads its last clip)."""
        s, valid = self._a2m, self.audio2motion.valid_clip_len
        if item is None:
            s["moved"] += s["buffer"]
            target = len(s["feats"]) + valid
        else:
            s["feats"].extend(float(v) for v in item[:, 0])
            s["buffer"] += len(item)
            if s["buffer"] >= valid:
                s["moved"] += s["buffer"]
                s["buffer"] = 0
            target = valid * max(0, s["moved"] // valid - 1)
        while s["emitted"] < target:
            feats = s["feats"]
            energy = feats[min(s["emitted"], len(feats) - 1)] if feats else 0.0
            while not self.stop_event.is_set():
                try:
                    outbox.put([s["emitted"], energy], timeout=1)
                    break
                except queue.Full:
                    continue
            s["emitted"] += 1
        if item is None:
            outbox.put(None)

    def _warp(self, item):
        if self.fail_at_frame is not None and item[0] >= self.fail_at_frame:
            colour = tuple(int(c) for c in self.source_info["x_s_info_lst"][0]["colour"])
            if self.fail_once and _failed.is_set() or self.fail_colour not in (None, colour):
                return item
            _failed.set()
            raise RuntimeError(f"stand-in warp failure at frame {item[0]}")
        return item

    def _decode(self, item):
        if self.block_at_frame is not None and item[0] == self.block_at_frame and self.fed and not UNBLOCK.is_set():
            UNBLOCK.wait()  # a call that does not look at the stop event
        if self.frame_s:
            time.sleep(self.frame_s)
        return item

    def _putback(self, item):
        index, energy = item
        img = self.source_info["img_rgb_lst"][0]
        h, w = img.shape[:2]
        frame = np.empty_like(img)
        frame[:] = self.source_info["x_s_info_lst"][0]["colour"]
        frame[: h // 4] = min(255, int(energy * 4 * 255))
        band = frame[h - h // 4 :]
        for bit in range(BITS):
            band[:, bit * w // BITS : (bit + 1) * w // BITS] = 255 if index >> (BITS - 1 - bit) & 1 else 0
        return frame

    # --- the caller's side -------------------------------------------------------------------------
    def run_chunk(self, audio_chunk, chunksize=(3, 5, 2)):
        self.fed = True
        feat = self.wav2feat(audio_chunk, chunksize=chunksize)
        while not self.stop_event.is_set():
            try:
                self.audio2motion_queue.put(feat, timeout=1)
                break
            except queue.Full:
                continue

    def close(self):
        self.audio2motion_queue.put(None)
        for thread in self.thread_list:
            thread.join()
        self.writer.close()
        if self.worker_exception is not None:
            raise self.worker_exception


def read_frame(frame: np.ndarray) -> tuple[int, float, np.ndarray]:
    """(stream frame number, audio brightness 0..1, colour) painted by the stand-in, after decoding."""
    h, w = frame.shape[:2]
    band = frame[h - h // 4 + 2 : h - 2].astype(np.float32).mean(axis=(0, 2))
    index = 0
    for bit in range(BITS):
        cell = band[bit * w // BITS + 2 : (bit + 1) * w // BITS - 2]
        index = index * 2 + int(cell.mean() > 127)
    top = float(frame[2 : h // 4 - 2].mean()) / 255
    colour = frame[h // 4 + 2 : h - h // 4 - 2].reshape(-1, 3).mean(0)
    return index, top, colour
