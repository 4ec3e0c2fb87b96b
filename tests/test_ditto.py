"""The Ditto backend around its SDK. No GPU or weights here: the SDK is a STAND-IN with the real
StreamSDK's methods, arguments, worker threads and queue semantics (tests/ditto_stand_in), and
every test that uses it says so in its name. The window arithmetic is checked by hand."""

import asyncio
import importlib
import os
import threading

import numpy as np
import pytest

from backends.ditto import Ditto, DittoState
from backends.ditto.hops import HOP, HopWindows, frames_out, samples_for_frames, window_end, window_len
from backends.ditto.sink import FrameSink, SinkRouter, install
from tests.ditto_stand_in.config import sdk_threads, stand_in_config


# --- windows and lag: by hand -------------------------------------------------------------------

def test_hop_windows_are_the_sdk_windows_at_hand_computed_sample_indices():
    """(3, 5, 2): windows of 6480 samples every 3200, over the audio with 1920 zeros before it, so
    window k holds samples [3200k - 1920, 3200k + 4560)."""
    audio = np.arange(1, 20_001, dtype=np.float32)  # sample i holds i + 1, so 0 is a padding zero
    hops = HopWindows((3, 5, 2))
    assert window_len((3, 5, 2)) == 6480
    assert hops.push(audio[:4559]) == []  # window 0 needs samples 0..4559
    (w0,) = hops.push(audio[4559:4560])
    assert len(w0) == 6480 and not w0[:1920].any() and w0[1920] == 1 and w0[-1] == 4560
    assert hops.push(audio[4560:7759]) == []
    w1, w2 = hops.push(audio[7759:10_960])  # windows 1 and 2 end at samples 7760 and 10960
    assert (w1[0], w1[-1]) == (1281, 7760) and (w2[0], w2[-1]) == (4481, 10_960)
    assert [window_end(k) for k in range(3)] == [4560, 7760, 10_960]
    assert hops.fed == 10_960 and hops.windows == 3
    assert [w[0] for w in hops.push(audio[10_960:])] == [7681, 10_881]  # ends 14160, 17360


def test_frames_leave_one_clip_behind_the_audio_by_hand():
    # online config: overlap 70 of 80 -> valid_clip_len 10, features in windows of 5
    assert [frames_out(f, 10) for f in (5, 10, 15, 20, 25, 30, 40)] == [0, 0, 0, 10, 10, 20, 30]
    assert frames_out(10, 5) == 5 and frames_out(20, 8) == 8 and frames_out(10, 8) == 0
    # frames 0..9 need features 0..19: four windows, the last reaching sample 3*3200 + 4560
    assert samples_for_frames(10, 10) == 14_160
    assert samples_for_frames(11, 10) == 6 * 3200 + 1360
    assert samples_for_frames(5, 5) == 7760 and samples_for_frames(8, 8) == 14_160
    assert samples_for_frames(0, 10) == 0


@pytest.mark.parametrize("valid", [5, 8, 10])
def test_samples_for_frames_is_the_least_audio_that_emits_the_frames(valid):
    for n in range(1, 61):
        need = samples_for_frames(n, valid)
        hops = HopWindows()
        windows = len(hops.push(np.zeros(need, np.float32)))
        assert frames_out(5 * windows, valid) >= n
        assert frames_out(5 * (windows - 1), valid) < n


# --- the frame sink -------------------------------------------------------------------------------

def test_frame_sink_has_the_writer_interface_and_hands_frames_over_in_order(tmp_path):
    class Module:  # what `install` patches: the imported stream_pipeline_online
        __name__ = "stream_pipeline_online"
        VideoWriterByImageIO = object

    router = install(Module)
    assert Module.VideoWriterByImageIO is router and install(Module) is router

    async def main():
        sink = FrameSink(asyncio.get_running_loop())
        path = router.path("abc", sink)
        os.chdir(tmp_path)
        writer = Module.VideoWriterByImageIO(path + ".tmp.mp4", fps=25, crf=18)  # as setup() builds it
        assert writer is sink
        rgb = np.zeros((4, 6, 3), np.uint8)
        rgb[..., 0] = 200
        writer(rgb, fmt="rgb")
        writer(rgb[..., ::-1], fmt="bgr")  # the writer's default format: converted back to RGB
        writer.close()
        writer.close()
        got = [await sink.frames.get() for _ in range(3)]
        assert [g[0] for g in got[:2]] == [0, 1] and got[2] is None
        assert all((g[1] == rgb).all() for g in got[:2])
        with pytest.raises(KeyError):
            router("/tmp/out.mp4.tmp.mp4")  # nothing but a registered sink
        with pytest.raises(KeyError):
            router(path + ".tmp.mp4")  # each sink is handed out once

    asyncio.run(main())
    assert list(tmp_path.iterdir()) == []  # no file written


# --- the backend around the stand-in SDK -----------------------------------------------------------

def speech_with_a_gap(frames: int = 40) -> np.ndarray:
    """A tone in frames 5..14 and 25..frames-1, silence elsewhere."""
    audio = np.zeros(frames * HOP, np.float32)
    tone = 0.5 * np.sin(np.arange(frames * HOP) * 0.3).astype(np.float32)
    for a, b in ((5, 15), (25, frames)):
        audio[a * HOP : b * HOP] = tone[a * HOP : b * HOP]
    return audio


def loud(frames: np.ndarray) -> list[bool]:
    sp = importlib.import_module("stream_pipeline_online")
    return [sp.read_frame(f)[1] > 0.5 for f in frames]


def numbers(frames: np.ndarray) -> list[int]:
    sp = importlib.import_module("stream_pipeline_online")
    return [sp.read_frame(f)[0] for f in frames]


async def collect(gen) -> tuple[np.ndarray, object]:
    batches, state = [], None
    async for frames, state in gen:
        batches.append(frames)
    return np.concatenate(batches), state


def red(size=(64, 96)) -> np.ndarray:
    img = np.zeros((*size, 3), np.uint8)
    img[:] = (220, 40, 40)
    return img


def test_stand_in_sdk_frames_match_their_audio_and_the_stream_runs_on_across_calls():
    backend = Ditto(stand_in_config(pool_size=2))
    sp = importlib.import_module("stream_pipeline_online")

    async def main():
        avatar = await backend.prepare_avatar(red())
        audio = speech_with_a_gap(40)
        frames, state = await collect(backend.render(avatar, audio, backend.new_state()))
        assert frames.shape == (40, 64, 96, 3)
        rms = np.sqrt((audio.reshape(40, HOP) ** 2).mean(1))
        assert loud(frames) == list(rms > 0.1)  # each frame made from its own 40 ms of audio
        assert numbers(frames) == list(range(40)) and state.frame == 40
        # the same stream runs on: listening frames follow without a gap, speech after a skip
        idle, state2 = await collect(backend.idle(avatar, 10, state))
        assert numbers(idle) == list(range(40, 50)) and not any(loud(idle))
        more, state3 = await collect(backend.render(avatar, audio[: 7 * HOP], state2))
        assert len(more) == 7 and numbers(more) == list(range(numbers(more)[0], numbers(more)[0] + 7))
        assert numbers(more)[0] > 50  # the silence that pushed the listening frames out is skipped
        assert state.stream == state2.stream == state3.stream and state3.frame == 57
        assert sum(s.sdk.setups for s in backend.pool.slots) == 2  # registration + the one stream
        # an older state is not continued: a new stream starts at frame 0
        again, state4 = await collect(backend.render(avatar, audio[: 5 * HOP], state))
        assert state4.stream != state.stream and numbers(again) == list(range(5))
        assert list(backend.avatar_dir.glob("*.png"))  # the registered face's image, on disk while open
        await backend.aclose()
        assert not backend.avatar_dir.exists()  # and removed on close

    calls = sp.AvatarRegistrar.calls
    asyncio.run(main())
    assert sp.AvatarRegistrar.calls == calls + 1  # the face was registered once for three streams
    assert sdk_threads() == []


def test_stand_in_sdk_registration_runs_once_per_avatar_across_slots():
    backend = Ditto(stand_in_config(pool_size=2))
    sp = importlib.import_module("stream_pipeline_online")

    async def main():
        a = await backend.prepare_avatar(red())
        blue = red()
        blue[:] = (30, 40, 220)
        b = await backend.prepare_avatar(blue)
        states = {}
        for avatar in (a, b, a, b, a):  # new streams each time (no state): slots are reused
            frames, states[avatar.key] = await collect(backend.render(avatar, np.zeros(3 * HOP, np.float32), None))
            colour = sp.read_frame(frames[0])[2]
            assert np.abs(colour - (220, 40, 40) if avatar is a else colour - (30, 40, 220)).max() < 2
        await backend.aclose()

    before = sp.AvatarRegistrar.calls
    asyncio.run(main())
    assert sp.AvatarRegistrar.calls == before + 2


def test_stand_in_sdk_refuses_an_image_without_a_face():
    from avatar_core.types import AvatarError

    backend = Ditto(stand_in_config(pool_size=1))
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    with pytest.raises(AvatarError, match="could not register a face"):
        asyncio.run(backend.prepare_avatar(noise))
    assert backend.pool.slots[0].stream is None and not backend.pool.slots[0].reserved
    assert sdk_threads() == []


def test_stand_in_sdk_pool_makes_a_new_stream_wait_while_every_slot_renders():
    """One slot: the second conversation's frames start only after the first's call ended (its
    idle stream is then closed to free the slot)."""
    backend = Ditto(stand_in_config(pool_size=1, frame_s=0.01))
    events = []

    async def talk(name, avatar):
        async for frames, _ in backend.render(avatar, np.zeros(20 * HOP, np.float32), None):
            events.append((name, len(frames)))
        events.append((name, "end"))

    async def main():
        avatar = await backend.prepare_avatar(red())
        first = asyncio.create_task(talk("a", avatar))
        while not events:
            await asyncio.sleep(0.005)
        await asyncio.gather(first, talk("b", avatar))
        await backend.aclose()

    asyncio.run(main())
    names = [e[0] for e in events]
    assert names.index("b") > names.index("a") and ("a", "end") in events
    assert events.index(("a", "end")) < names.index("b"), events
    assert sum(n for who, n in events if who == "b" and n != "end") == 20
    assert sdk_threads() == []


def test_stand_in_sdk_barge_in_closes_the_stream_mid_sentence_without_leaking_a_thread():
    backend = Ditto(stand_in_config(pool_size=2, frame_s=0.02))

    async def main():
        avatar = await backend.prepare_avatar(red())
        got = asyncio.Event()

        async def speak():
            async for _ in backend.render(avatar, speech_with_a_gap(200), None):
                got.set()

        task = asyncio.create_task(speak())
        await got.wait()
        assert len(sdk_threads()) == 6  # the stream's six workers run
        task.cancel()  # barge-in: the request is cancelled mid-sentence
        with pytest.raises(asyncio.CancelledError):
            await task
        assert sdk_threads() == []  # joined before the cancelled call returned
        assert backend.pool.streams == {} and all(s.stream is None for s in backend.pool.slots)
        frames, _ = await collect(backend.render(avatar, np.zeros(5 * HOP, np.float32), None))
        assert len(frames) == 5  # the slot works again
        await backend.aclose()

    asyncio.run(main())
    assert sdk_threads() == []


def test_stand_in_sdk_worker_error_fails_the_call_and_the_next_stream_works():
    backend = Ditto(stand_in_config(pool_size=1, fail_at_frame=12))

    async def main():
        avatar = await backend.prepare_avatar(red())
        with pytest.raises(RuntimeError, match="stand-in warp failure at frame 12"):
            await collect(backend.render(avatar, speech_with_a_gap(30), None))
        assert sdk_threads() == [] and backend.pool.streams == {}
        frames, _ = await collect(backend.render(avatar, np.zeros(5 * HOP, np.float32), None))
        assert len(frames) == 5  # frames 0..4 come before the failing frame 12
        await backend.aclose()

    asyncio.run(main())


def test_missing_repo_or_checkpoints_fail_with_a_clear_message(tmp_path):
    cfg = Ditto.Config(repo_dir=tmp_path / "nowhere", checkpoint_dir=tmp_path, cfg_pkl=tmp_path / "x.pkl")
    with pytest.raises(RuntimeError, match=r'see docs/gpu\.md, "Ditto \(animator\)"\); missing: repo_dir .*nowhere; cfg_pkl'):
        Ditto(cfg)


def test_config_names_the_backend_and_sets_the_replicas_concurrency():
    from avatar_core import registry
    from serve_app.builder import stage_app
    from deployments.animator import Animator

    cfg = registry.parse("animator", {"backend": "ditto", "pool_size": 3, "repo_dir": "/x"})
    assert isinstance(cfg, Ditto.Config) and cfg.cfg_pkl.name == "v0.4_hubert_cfg_trt_online.pkl"
    app = stage_app(Animator, "animator", cfg, "")
    assert app._bound_deployment._deployment_config.max_ongoing_requests == 3
    with pytest.raises(ValueError, match="pool_size"):
        registry.parse("animator", {"backend": "ditto", "pool_size": 0})


def test_stand_in_sdk_threads_stop_when_the_replica_closes_the_backend_with_a_stream_open():
    backend = Ditto(stand_in_config(pool_size=2))

    async def main():
        avatar = await backend.prepare_avatar(red())
        await collect(backend.render(avatar, np.zeros(5 * HOP, np.float32), None))
        assert len(sdk_threads()) == 6  # the stream stays open for the conversation's next call
        await asyncio.to_thread(backend.close)  # what the Animator's __del__ calls when Serve stops it

    asyncio.run(main())
    assert sdk_threads() == []


# --- run-time safety: survivors, bounded closes, explicit settings ----------------------------------

def blocked_decode_threads(backend) -> list:
    """The stand-in's decode workers (stage 3) still alive, over every slot."""
    return [t for slot in backend.pool.slots for t in getattr(slot.sdk, "thread_list", [])
            if t.name == "stand-in-3" and t.is_alive()]


def test_stand_in_sdk_survivor_threads_retire_their_slot_and_never_join_the_next_stream():
    """A barge-in while a worker is stuck in a call deaf to the stop event: its threads outlive the
    close, so the slot is retired. Had it been handed out again, the survivor (which reads the SDK's
    queues and stop event afresh on every loop, as Ditto's do) would work for the next stream."""
    backend = Ditto(stand_in_config(pool_size=2, block_at_frame=3, close_timeout_s=1.5, frame_timeout_s=60))
    sp = importlib.import_module("stream_pipeline_online")
    sp.UNBLOCK.clear()

    async def main():
        avatar = await backend.prepare_avatar(red())
        got = asyncio.Event()

        async def speak():
            async for _ in backend.render(avatar, speech_with_a_gap(40), None):
                got.set()

        task = asyncio.create_task(speak())
        await got.wait()  # frames 0..2 arrived; the decode worker is stuck on frame 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stuck = backend.pool.slots[0]
        assert stuck.retired and stuck.stream is None and len(blocked_decode_threads(backend)) == 1
        with pytest.raises(RuntimeError, match="retired"):
            await backend.probe()  # unhealthy: Serve replaces the replica
        setups = stuck.sdk.setups
        next_stream = asyncio.create_task(collect(backend.render(avatar, speech_with_a_gap(20), None)))
        await asyncio.sleep(0.2)
        sp.UNBLOCK.set()  # the survivor wakes up while the next stream renders
        frames, _ = await next_stream
        assert numbers(frames) == list(range(20))  # only its own frames, in order
        assert stuck.sdk.setups == setups and backend.pool.slots[1].stream is not None
        await backend.aclose()

    try:
        asyncio.run(main())
    finally:
        sp.UNBLOCK.set()
    for t in [t for slot in backend.pool.slots for t in slot.sdk.thread_list]:
        t.join(timeout=5)  # released, the survivors see their own stream's stop event and end
    assert sdk_threads() == []


def test_stand_in_sdk_a_graceful_close_gives_up_on_a_stuck_worker_within_close_timeout_s():
    """Ditto's close() joins its threads without a limit: a graceful close (idle expiry, a slot taken
    for another conversation) returns while the stuck worker still runs, and retires the slot."""
    backend = Ditto(stand_in_config(pool_size=1, block_at_frame=3, close_timeout_s=1.5))
    sp = importlib.import_module("stream_pipeline_online")
    sp.UNBLOCK.clear()

    async def main():
        avatar = await backend.prepare_avatar(red())
        frames, state = await collect(backend.render(avatar, np.zeros(3 * HOP, np.float32), None))
        assert numbers(frames) == [0, 1, 2]  # the stream stays open; its decode worker is stuck on frame 3
        stream = backend.pool.streams[state.stream]
        error = await backend.pool.close(stream, graceful=True)
        assert type(error).__name__ == "StuckThreads" and blocked_decode_threads(backend)  # returned, still stuck
        assert backend.pool.slots[0].retired
        with pytest.raises(RuntimeError, match="every Ditto slot of this replica is retired"):
            await collect(backend.render(avatar, np.zeros(3 * HOP, np.float32), None))

    try:
        asyncio.run(main())
    finally:
        sp.UNBLOCK.set()
    for t in [t for slot in backend.pool.slots for t in slot.sdk.thread_list]:
        t.join(timeout=5)  # released, the survivors see their own stream's stop event and end
    assert sdk_threads() == []


def test_overlap_and_steps_are_set_explicitly_and_logged_at_start(caplog):
    """The stand-in's cfg defaults are upstream's setup defaults (overlap 10, 50 steps): the backend
    passes its own (70: frames every 0.4 s) and says which it runs with."""
    caplog.set_level("INFO", logger="ray.serve")
    cfg = stand_in_config(pool_size=1)
    assert (Ditto.Config.model_fields["pool_size"].default, cfg.overlap_v2, cfg.sampling_timesteps) == (1, 70, 50)
    backend = Ditto(cfg)

    async def main():
        avatar = await backend.prepare_avatar(red())
        await collect(backend.render(avatar, np.zeros(5 * HOP, np.float32), None))
        kwargs = backend.pool.slots[0].sdk.setup_kwargs
        assert (kwargs["overlap_v2"], kwargs["sampling_timesteps"]) == (70, 50)
        assert backend.pool.slots[0].sdk.audio2motion.valid_clip_len == 10
        await backend.aclose()

    asyncio.run(main())
    text = caplog.text
    assert "overlap_v2=70, sampling_timesteps=50" in text and "valid_clip_len=10 (0.40 s)" in text


def test_checkpoint_dir_must_be_the_directory_of_the_model_files(tmp_path):
    """Ditto joins the cfg's bare model names onto data_root: a checkpoints root above the engines
    fails at once, naming the directory to use (the stand-in SDK fails the same way, as Ditto would)."""
    cfg = stand_in_config()
    root = cfg.checkpoint_dir.parent
    with pytest.raises(RuntimeError, match=f"holds no model file.*e.g. {root / 'ditto_trt_stand_in'}"):
        Ditto(cfg.model_copy(update={"checkpoint_dir": root}))
    (root / "stray.engine").write_bytes(b"")  # a model file, but not the cfg's: the SDK itself refuses
    with pytest.raises(FileNotFoundError, match="hubert_fp32.engine"):
        Ditto(cfg.model_copy(update={"checkpoint_dir": root}))


def test_pytorch_checkpoints_are_loaded_without_weights_only(monkeypatch):
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    Ditto(stand_in_config())  # TensorRT engines: torch.load is not involved
    assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD" not in os.environ
    cfg = stand_in_config()
    (cfg.checkpoint_dir / "lmdm_v0.4_hubert.pth").write_bytes(b"")
    Ditto(cfg)
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"


def test_stand_in_sink_a_cancel_that_meets_a_frame_still_stops_the_wait():
    """A barge-in cancels a render while its frames arrive. The wait for the next frame must end
    with the cancel whichever loop step the frame lands on (Python 3.11's asyncio.wait_for returned
    the frame and dropped the cancel: the render then waited a minute for frames that never came).
    The stream's sink and slot are stand-ins: only its wait is under test."""
    from types import SimpleNamespace

    from backends.ditto.streams import Stream

    async def cancelled_after(steps: int) -> str | None:
        """Cancel the wait `steps` loop steps after a frame lands: what the wait ended with (None
        if it had returned the frame before the cancel was sent)."""
        stream = Stream.__new__(Stream)
        stream.sink = SimpleNamespace(frames=asyncio.Queue())
        stream.slot = SimpleNamespace(sdk=SimpleNamespace(stop_event=threading.Event()))
        stream.cfg = SimpleNamespace(frame_timeout_s=60)
        task = asyncio.create_task(stream._next(asyncio.get_running_loop().create_future()))
        await asyncio.sleep(0.01)  # waiting for a frame
        stream.sink.frames.put_nowait((0, "frame"))
        for _ in range(steps):
            await asyncio.sleep(0)
        if task.done():
            return None
        task.cancel()
        try:
            return f"returned {await task}"
        except asyncio.CancelledError:
            return "cancelled"

    async def each() -> list[str | None]:
        return [await asyncio.wait_for(cancelled_after(k), 30) for k in range(8)]

    ended = asyncio.run(each())
    sent = [e for e in ended if e is not None]
    assert sent and all(e == "cancelled" for e in sent), ended
