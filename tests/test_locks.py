"""The node images' lock files (locks/*.txt, written by scripts/lock.sh from pyproject.toml) resolve
and are current: resolving again, keeping their pins, changes nothing. Metadata only: uv reads the
index's metadata, builds and downloads no distribution (the script fails if it had to fetch a source
archive), and no GPU is involved."""

import importlib.metadata
import shutil
import subprocess
import tomllib

import pytest

from tests.conftest import ROOT

LOCK = ROOT / "scripts" / "lock.sh"


def check(root=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([str(root / "scripts" / "lock.sh"), "--check"], cwd=root, capture_output=True,
                          text=True, timeout=600)


def test_every_lock_resolves_and_is_current_against_pyproject():
    done = check()
    assert done.returncode == 0, done.stderr[-4000:]


def test_the_check_fails_on_a_lock_that_pyproject_has_moved_past(tmp_path):
    """A copy of the repository's lock inputs with a dependency added to the media extras: the check
    names locks/media.txt as stale, and only it."""
    for path in ("pyproject.toml", "README.md", "locks", "scripts/lock.sh", "scripts/cache_dir.sh"):
        src, dst = ROOT / path, tmp_path / path
        dst.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst)
    pyproject = tmp_path / "pyproject.toml"
    text = pyproject.read_text()
    assert '"tqdm", ' in text
    pyproject.write_text(text.replace('"tqdm", ', '"tqdm", "tabulate>=0.9", ', 1))
    done = check(tmp_path)
    assert done.returncode == 1
    assert "locks/media.txt is stale" in done.stderr and "+tabulate==" in done.stderr.replace(" ", "")
    assert "locks/serve.txt" not in done.stderr


@pytest.mark.parametrize("name", ["llama-cpp-python", "face-recognition-models"])
def test_stated_metadata_of_source_only_dependencies_is_theirs(name):
    """locks/uv.toml states what two source-only dependencies require, so that resolving never builds
    them; it must be what their installed metadata says (base requirements, extras left out)."""
    stated = {m["name"]: m for m in tomllib.loads((ROOT / "locks" / "uv.toml").read_text())["dependency-metadata"]}
    dist = importlib.metadata.distribution(name)
    assert stated[name]["version"] == dist.version
    base = sorted(r.replace(" ", "") for r in dist.requires or [] if "extra ==" not in r)
    assert sorted(r.replace(" ", "") for r in stated[name]["requires-dist"]) == base
