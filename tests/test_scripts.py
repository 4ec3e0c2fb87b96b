"""The shell scripts agree with the Python code on where the install keeps what it fetches or builds
once: scripts/cache_dir.sh is the shell's one spelling of avatar_core.config.model_cache()."""

import os
import re
import subprocess

import pytest

from avatar_core.config import model_cache
from tests.conftest import ROOT

SCRIPTS = ROOT / "scripts"


def sourced(script: str, variable: str, env: dict[str, str], cwd) -> str:
    """`variable` after bash sources scripts/`script` in `env` (and nothing else), from `cwd`."""
    command = f'. "$1" && printf %s "${variable}"'
    done = subprocess.run(["bash", "-c", command, "bash", str(SCRIPTS / script)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


@pytest.mark.parametrize("xdg", ["set", "unset", "empty"])
def test_the_shell_cache_dir_is_model_cache(xdg, tmp_path, monkeypatch):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "home")}
    if xdg != "unset":
        env["XDG_CACHE_HOME"] = str(tmp_path / "xdg") if xdg == "set" else ""
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    expected = model_cache()
    assert expected == (tmp_path / "xdg" if xdg == "set" else tmp_path / "home" / ".cache") / "talking-avatar"
    assert sourced("cache_dir.sh", "AVATAR_CACHE", env, ROOT) == str(expected)
    # llama_wheel.sh finds cache_dir.sh beside itself, wherever it is sourced from
    assert sourced("llama_wheel.sh", "LLAMA_WHEELS", env, tmp_path) == str(expected / "wheels")


def test_only_cache_dir_sh_spells_out_the_cache_path():
    """The cache directory's path, not any mention of the project's name (a GCP account's label)."""
    path = re.compile(r"(\.cache|CACHE_HOME\S*)/talking-avatar")
    spelled = [p.name for p in sorted(SCRIPTS.glob("*.sh")) if path.search(p.read_text())]
    assert spelled == ["cache_dir.sh"], "source scripts/cache_dir.sh and use $AVATAR_CACHE instead"
    assert not path.search('--display-name="talking-avatar nodes"') and path.search("$HOME/.cache/talking-avatar")
