"""The notebooks run top to bottom, headless, as a user would run them, and are committed clean.

01 starts its own Ray and app in the kernel (the path a user takes on a laptop); 02 and 03 attach to
the test session's app through `ray.init(address=...)` (the path for a running cluster), which also
keeps the suite from deploying the graph three more times. A failing cell fails the test with the
cell's traceback.
"""

import ast
import asyncio
import importlib.metadata as metadata
import json
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT_S = 300


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


# ---- what the documented install brings (docs/notebooks.md: pip install -e ".[notebooks]") ------


def imported_packages(source: str) -> set[str]:
    """The top-level names of every absolute import in `source`, in functions too (the helpers
    import lazily); relative imports are the module's own."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def third_party(names: set[str]) -> set[str]:
    """Neither the standard library nor this repository (its packages, the notebooks' helpers)."""
    ours = lambda n: any((ROOT / n).glob("*.py")) or (NOTEBOOKS / f"{n}.py").is_file()  # noqa: E731
    return {n for n in names if n not in sys.stdlib_module_names and not ours(n)}


def notebook_imports() -> dict[str, set[str]]:
    """Third-party packages imported by notebooks/avatar_nb.py and each notebook's code cells."""
    sources = {"avatar_nb.py": (NOTEBOOKS / "avatar_nb.py").read_text()}
    for path in notebook_paths():
        cells = json.loads(path.read_text())["cells"]
        sources[path.name] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return {name: third_party(imported_packages(source)) for name, source in sources.items()}


def installed_with(extra: str) -> set[str]:
    """The distributions `pip install -e ".[extra]"` brings: the project's dependencies and the
    extra's, as pyproject.toml declares them, and theirs transitively, from the installed packages'
    metadata (markers evaluated here, each requirement's own extras followed). A declared package
    that is not installed here counts, but adds nothing beyond itself."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"][extra])]
    walked: dict[str, set[str]] = {canonicalize_name(project["name"]): set()}  # distribution -> extras followed
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in walked and req.extras <= walked[name]:
            continue
        extras = walked.setdefault(name, set())
        extras |= req.extras
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        for dep in map(Requirement, requires):
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in ("", *extras)):
                todo.append(dep)
    return set(walked)


def test_imported_packages_are_found_in_functions_and_without_the_first_party_ones():
    source = """
import os, numpy.linalg
from avatar_core.config import AppConfig
from . import sibling

def later():
    import matplotlib.pyplot as plt
    from IPython.display import Video
"""
    assert imported_packages(source) == {"os", "numpy", "avatar_core", "matplotlib", "IPython"}
    assert third_party(imported_packages(source) | {"avatar_nb", "serve_app"}) == {"numpy", "matplotlib", "IPython"}


def test_the_notebooks_import_only_what_the_notebooks_extra_installs():
    """After the documented install every import of the notebooks and their helpers resolves: each
    third-party package they import is installed by a distribution that the project's
    dependencies or its `notebooks` extra bring (httpx, say, is only in `test`)."""
    brought = installed_with("notebooks")
    providers = metadata.packages_distributions()  # import name -> the installed distributions with it
    imports = notebook_imports()
    assert imports["avatar_nb.py"] and all(imports.values())  # the scan sees their imports
    missing = {
        f"{where}: {package} (installed by {', '.join(providers.get(package, [])) or 'nothing here'})"
        for where, packages in imports.items()
        for package in packages
        if not {canonicalize_name(d) for d in providers.get(package, [])} & brought
    }
    assert not missing, (
        "imported, but neither the project's dependencies nor the `notebooks` extra in pyproject.toml "
        "install it (add it there, or use the standard library):\n" + "\n".join(sorted(missing))
    )


def test_the_three_notebooks_exist():
    assert [p.name for p in notebook_paths()] == [
        "01_stages.ipynb", "02_turn_timeline.ipynb", "03_avatars_and_voices.ipynb"
    ]


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: p.stem)
def test_committed_notebooks_carry_no_outputs(path):
    """Outputs (images, embedded video) would bloat the repository and go stale: strip them."""
    nb = json.loads(path.read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: cell {i} has outputs"
        assert "attachments" not in cell, f"{path.name}: cell {i} has attachments"


def execute(path: Path, env: dict, monkeypatch) -> "object":
    import nbformat
    from nbclient import NotebookClient

    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def outputs(nb, kind: str) -> list:
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            found += [out["data"][kind]] if kind in out.get("data", {}) else []
            if kind == "text" and out.get("name") == "stdout":
                found.append(out["text"])
    return found


@pytest.mark.timeout(900)
def test_01_stages_starts_its_own_app_and_calls_each_stage(monkeypatch):
    nb = execute(NOTEBOOKS / "01_stages.ipynb", {"AVATAR_NB_MODE": "local"}, monkeypatch)
    text = "".join(outputs(nb, "text"))
    assert "local: application 'avatar'" in text and "country" in text.lower()
    assert len(outputs(nb, "image/png")) == 2  # the two strips of frames
    assert any("<audio" in h for h in outputs(nb, "text/html"))
    assert any("<video" in h for h in outputs(nb, "text/html"))


@pytest.fixture
def attached(serve_app):
    import ray

    return {"AVATAR_NB_MODE": "attach", "AVATAR_NB_RAY_ADDRESS": ray.get_runtime_context().gcs_address,
            "AVATAR_NB_URL": serve_app, "AVATAR_NB_APP": "avatar"}


@pytest.mark.timeout(900)
def test_02_turn_timeline_attached_to_a_running_app(attached, monkeypatch):
    nb = execute(NOTEBOOKS / "02_turn_timeline.ipynb", attached, monkeypatch)
    text = "".join(outputs(nb, "text"))
    assert "attach: application 'avatar'" in text
    assert "same reply as the pipelined turn: True" in text  # greedy decoding on both sides
    assert "| **voice to face** |" in text
    assert len(outputs(nb, "image/png")) == 2  # the timelines and the voice-to-face bar


@pytest.mark.timeout(900)
def test_03_avatars_and_voices_attached_to_a_running_app(attached, monkeypatch):
    nb = execute(NOTEBOOKS / "03_avatars_and_voices.ipynb", attached, monkeypatch)
    text = "".join(outputs(nb, "text"))
    assert "voice cloning: False" in text  # Piper: one voice
    assert len(outputs(nb, "image/png")) == 4  # faces, contact sheets, motion, voices


def test_run_turn_through_the_ingress_handle_stamps_events_and_spans(serve_app, jfk_bytes):
    """The handle-only turn that 02 draws: the HTTP turn's events, stamped, with the stages' spans."""
    from ray import serve

    from tests.conftest import JFK_WORDS

    ingress = serve.get_deployment_handle("Ingress", app_name="avatar")

    async def turn(audio, **choices) -> list[dict]:
        return [e async for e in ingress.options(stream=True).run_turn.remote(audio, **choices)]

    events = asyncio.run(turn(jfk_bytes))
    assert events[-1]["type"] == "done", events[-1]
    assert JFK_WORDS in next(e["text"] for e in events if e["type"] == "transcript").lower().replace(",", "")
    stamps = [e["at"] for e in events]
    assert stamps == sorted(stamps)
    segments = [e for e in events if e["type"] == "segment"]
    assert segments and all(isinstance(s["data"], bytes) and s["data"][4:8] == b"ftyp" for s in segments)
    spans = events[-1]["spans"]
    by = lambda stage: [s for s in spans if s["stage"] == stage]  # noqa: E731
    assert len(by("asr")) == 1 and by("asr")[0]["end"] <= events[1]["at"] + 1e-3  # before the transcript
    sentences = sorted({s["sentence"] for s in segments})
    assert [s["sentence"] for s in by("llm")] == sentences == [s["sentence"] for s in by("tts")]
    for llm, tts in zip(by("llm"), by("tts")):
        assert llm["start"] <= llm["end"] <= tts["start"] + 1e-3 <= tts["end"] + 1e-3  # spoken once written
    animated = by("animator")
    assert [a["fragment"] for a in animated] == [s["index"] for s in segments]
    for a, seg in zip(animated, segments):
        assert a["sentence"] == seg["sentence"] and a["end"] <= seg["at"] + 1e-3

    bad = asyncio.run(turn(b"this is not audio"))
    assert [e["type"] for e in bad] == ["error"] and bad[0]["code"] == "undecodable_audio", bad
    unknown = asyncio.run(turn(jfk_bytes, avatar_id="0123456789abcdef"))
    assert unknown[0]["code"] == "unknown_avatar", unknown
    for audio, code in ((np.full(1600, np.nan, np.float32), "bad_pcm"), (np.zeros(0, np.float32), "bad_pcm"),
                        ("a path?", "bad_audio_type")):
        wrong = asyncio.run(turn(audio))
        assert [e["type"] for e in wrong] == ["error"] and wrong[0]["code"] == code, wrong
