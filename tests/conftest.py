"""One real Ray cluster and one real deployment of the whole graph, shared by the test session."""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from serve_app.local import free_port, use_local_ray, wait_healthy  # noqa: F401 -- the tests import them from here


def shipped_config_on(port: int, directory: Path) -> tuple[Path, dict]:
    """serve_config.yaml as shipped but on 127.0.0.1:`port`, written into `directory`: its path and
    its content."""
    import yaml

    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["http_options"] = {**config["http_options"], "host": "127.0.0.1", "port": port}
    path = directory / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, config


def stop_serve_run(proc: subprocess.Popen) -> None:
    """End a `serve run` started in a session of its own: SIGTERM to its process group (it ignores
    SIGINT when not interactive), SIGKILL after a minute."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

use_local_ray()

ROOT = Path(__file__).resolve().parent.parent
MEDIA = ROOT / "assets" / "media"  # real speech, with provenance (PROVENANCE.md)
JFK = MEDIA / "jfk.flac"
JFK_WORDS = "ask not what your country can do for you"
TEST_MAX_UPLOAD = 4 * 1024 * 1024


# This session's files, removed at its end. The processes it starts (Ray's workers, which import this
# module to unpickle the tests' objects) inherit the variable and share the directory.
if "AVATAR_TESTS_SCRATCH" not in os.environ:
    os.environ["AVATAR_TESTS_SCRATCH"] = tempfile.mkdtemp(prefix="avatar-tests-")
SCRATCH = Path(os.environ["AVATAR_TESTS_SCRATCH"])
STORAGE = SCRATCH / "storage"
STORAGE.mkdir(exist_ok=True)


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(SCRATCH, ignore_errors=True)


@pytest.fixture
def ray_tmpdir():
    """A temp dir for a `serve run` of the test's own (RAY_TMPDIR), removed after the test: short,
    because Ray's socket paths must fit 107 bytes."""
    path = tempfile.mkdtemp(prefix="ray-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def app_config():
    """The app's config for tests: the defaults, but greedy decoding so replies are reproducible;
    an upload cap below the proxy's 16 MiB WebSocket frame limit so the app's own check is reachable;
    and a fresh upload directory. Hearing as serve_config.yaml ships it (its 10 s window: the
    backend's own default of 30 s, kept for the GPU, made the speculative ASR at a pause three times
    slower than the product's, so JFK's words came after he went on). Hands-free turns end with the
    default turn model (Smart Turn): JFK's pauses do not split his sentence into turns
    (tests/test_turn_taking.py)."""
    import yaml

    from avatar_core.config import AppConfig

    shipped = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"][0]["args"]
    return AppConfig.model_validate(
        {
            "asr": shipped["asr"],
            "llm": {"temperature": 0.0},
            "limits": {"max_upload_bytes": TEST_MAX_UPLOAD},
            "storage": {"dir": str(STORAGE)},
        }
    )


FIRST = ("test_cluster_rehearsal.py", "test_cluster_autoscaling.py")


def pytest_collection_modifyitems(items):
    """The cluster rehearsals go first: each starts (and stops) its own multi-node Ray in this
    process, which must happen before the session cluster starts (a stable sort keeps every other
    test in its order, reversed or not)."""
    items.sort(key=lambda item: FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST))


# What the tests change in serve_config.yaml's `deployments` section: autoscaling that acts within
# seconds (the YAML waits 5 s to add a replica and 60 s to remove one), so that a burst of turns
# makes Serve scale a stage out and later tests find it scaled back in. Serve still averages the
# load over 30 s, so the short overlaps of ordinary tests add no replica.
TEST_AUTOSCALING = {"upscale_delay_s": 1, "downscale_delay_s": 8}


def production_options() -> dict[str, dict]:
    """serve_config.yaml's options per deployment (CPUs, autoscaling, max_ongoing_requests), with
    the test overrides above."""
    from serve_app.builder import yaml_deployment_options

    options = yaml_deployment_options()
    for name, opts in options.items():
        if name != "Ingress":
            opts["autoscaling_config"] = {**opts["autoscaling_config"], **TEST_AUTOSCALING}
    return options


def with_options(app, **options):
    from serve_app.builder import with_options

    return with_options(app, **options)


def production_graph(app):
    """build_app's graph, each deployment with the options serve_config.yaml gives it (and the
    test overrides)."""
    from serve_app.builder import with_deployment_options

    return with_deployment_options(app, production_options())


@pytest.fixture(scope="session")
def jfk_bytes() -> bytes:
    return JFK.read_bytes()


def running_graph(cfg, name: str, storage: Path, production: bool = True):
    """The graph of `cfg` running in this process (serve_app.local.running_app), each deployment
    with serve_config.yaml's options and the test overrides above, or one replica a stage when not
    `production`."""
    from serve_app.local import running_app

    return running_app(cfg, name, storage, production_options() if production else None)


@pytest.fixture(scope="session")
def serve_app():
    with running_graph(app_config(), "avatar", STORAGE) as base_url:
        yield base_url


def stage_stats(deployment: str, app: str = "avatar") -> dict:
    """A stage's request counters, read from the StageBoard: a stage whose max_ongoing_requests is
    1 cannot answer `stats()` while it works, which is when the counters matter."""
    from deployments.counters import read_board

    return read_board(app, deployment)


def stages_when_idle(names, deadline_s: float = 20) -> dict:
    """The stages' counters once none has a request in flight: a replica posts a request's end to
    the board as its stream closes, which can come just after the client has its `done`."""
    end = time.monotonic() + deadline_s
    while any((now := {n: stage_stats(n) for n in names})[n]["in_flight"] for n in names):
        assert time.monotonic() < end, f"work still in flight after {deadline_s} s: {now}"
        time.sleep(0.05)
    return now


@pytest.fixture(scope="session")
def handles(serve_app):
    from ray import serve

    return {name: serve.get_deployment_handle(name, app_name="avatar") for name in ("ASR", "LLM", "TTS", "Animator")}


GREEN = (0, 200, 0)  # the stand-in Ditto fails its first stream of a green avatar at frame 30


@pytest.fixture(scope="module")
def ditto_app(serve_app):
    """A second application whose animator is the Ditto backend around the STAND-IN SDK
    (tests/ditto_stand_in): no GPU here. Route /ditto; its Animator answers through handles.
    Deleted after each module that uses it: two cores hold only two whole graphs at once."""
    from ray import serve

    from serve_app.builder import build_app
    from tests.ditto_stand_in.config import stand_in_config

    animator = stand_in_config(pool_size=2, frame_s=0.002, fail_at_frame=30, fail_once=True, fail_colour=GREEN)
    serve.run(build_app(app_config().model_copy(update={"animator": animator})), name="ditto",
              route_prefix="/ditto", blocking=False)
    base = f"{serve_app}/ditto"
    try:
        wait_healthy(base)
        yield base
    finally:
        serve.delete("ditto")


def second_app(session_url: str, name: str, cfg, own: dict | None = None, ingress: dict | None = None) -> str:
    """Deploy an ingress with `cfg` as application `name` at route prefix /`name` on the session's
    cluster, and return its base URL once healthy. It calls the session app's stages, except those
    in `own` (stage -> bound deployment) which it deploys itself, its Ingress with the deployment
    options `ingress` (e.g. num_replicas). Its deployments ask for no CPU, so it fits beside a
    session app scaled out to the whole cluster. Delete it with serve.delete(name)."""
    from ray import serve

    from serve_app.ingress import Ingress

    stages = []
    for stage, deployment in (("asr", "ASR"), ("llm", "LLM"), ("tts", "TTS"), ("animator", "Animator")):
        if own and stage in own:
            stages.append(with_options(own[stage], ray_actor_options={"num_cpus": 0, "num_gpus": 0}))
        else:
            stages.append(serve.get_deployment_handle(deployment, app_name="avatar"))
    options = {"ray_actor_options": {"num_cpus": 0, "num_gpus": 0}, **(ingress or {})}
    serve.run(Ingress.options(**options).bind(*stages, cfg), name=name, route_prefix=f"/{name}", blocking=False)
    base = f"{session_url}/{name}"
    try:
        wait_healthy(base)
    except BaseException:
        serve.delete(name)
        raise
    return base


SECURE_TOKEN = "test-token-0123456789"
OTHER_ORIGIN = "https://app.example"


@pytest.fixture(scope="session")
def secure_app(serve_app):
    """The real ingress with every security setting on: a bearer token, a WebSocket Origin
    allow-list (this page's own origin and one other) and CORS for that other origin."""
    from ray import serve

    from avatar_core.config import SecurityConfig

    cfg = app_config().model_copy(update={"security": SecurityConfig(
        auth_token=SECURE_TOKEN, ws_allowed_origins=[serve_app, OTHER_ORIGIN], cors_allow_origins=[OTHER_ORIGIN],
    )})
    base = second_app(serve_app, "secure", cfg)
    try:
        yield base
    finally:
        serve.delete("secure")
