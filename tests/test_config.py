"""The typed config: every YAML in the repository validates, backends are chosen by name with only
their own fields, and the deployments section agrees with what each backend can run at once."""

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from avatar_core import registry
from avatar_core.config import AppConfig
from avatar_core.protocols import SpeechBackend
from tests.conftest import ROOT

STAGE_DEPLOYMENTS = {"asr": "ASR", "llm": "LLM", "tts": "TTS", "animator": "Animator"}


def serve_configs() -> list[Path]:
    """Every Serve config in the repository but those under clusters/, which tests/test_clusters.py
    checks with the cluster schemas (the RayService embeds its Serve config as a string)."""
    found = [p for p in ROOT.rglob("*.yaml") if ".venv" not in p.parts and "clusters" not in p.parts
             and "applications" in p.read_text()]
    assert ROOT / "serve_config.yaml" in found
    return sorted(found)


@pytest.mark.parametrize("path", serve_configs(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_serve_config_in_the_repository_validates(path):
    from ray.serve.schema import ServeDeploySchema

    cfg = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(cfg)  # Ray's own schema
    for app in cfg["applications"]:
        AppConfig.model_validate(app.get("args") or {})


def test_serve_config_fits_a_cpu_machine_and_matches_each_backends_concurrency():
    cfg = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (application,) = cfg["applications"]
    app = AppConfig.model_validate(application["args"])
    deployments = {d["name"]: d for d in application["deployments"]}
    assert set(deployments) == {"Ingress", *STAGE_DEPLOYMENTS.values()}
    for stage, name in STAGE_DEPLOYMENTS.items():
        assert deployments[name]["max_ongoing_requests"] == app.backend(stage).max_concurrency, name
    for d in application["deployments"]:
        opts = d["ray_actor_options"]
        assert 0 < opts["num_cpus"] < 1 and opts["num_gpus"] == 0, d["name"]
        assert d["autoscaling_config"]["min_replicas"] >= 1, d["name"]
    most = sum(d["ray_actor_options"]["num_cpus"] * d["autoscaling_config"]["max_replicas"] for d in application["deployments"])
    assert most <= 2, "at full scale-out the graph must still fit two cores"


def test_each_stage_section_is_validated_by_its_backends_model():
    cfg = AppConfig.model_validate({"llm": {"backend": "llama-cpp", "n_threads": 1}, "tts": {"voice": "embedded"}})
    assert type(cfg.llm).__qualname__ == "LlamaCpp.Config" and cfg.llm.n_threads == 1
    assert cfg.tts.backend == "piper"  # the default backend when none is named
    dumped = cfg.model_dump(mode="json")
    assert dumped["llm"]["n_threads"] == 1  # serialised with the backend's own fields
    assert AppConfig.model_validate(dumped) == cfg


def test_an_unknown_backend_fails_with_the_choices():
    with pytest.raises(ValidationError) as err:
        AppConfig.model_validate({"tts": {"backend": "festival"}})
    message = str(err.value)
    assert "unknown tts backend 'festival'" in message and "piper" in message


def test_a_field_of_another_backend_fails_and_names_the_field():
    with pytest.raises(ValidationError) as err:
        AppConfig.model_validate({"tts": {"backend": "piper", "n_threads": 2}})
    assert "tts backend 'piper': n_threads: Extra inputs are not permitted" in str(err.value)
    with pytest.raises(ValidationError) as err:
        AppConfig.model_validate({"asr": {"backend": "faster-whisper", "voice": "x"}})
    assert "voice" in str(err.value)


def test_languages_are_what_the_configured_backends_share():
    assert AppConfig().languages() == ["en"]  # tiny.en: English only
    multilingual = AppConfig.model_validate({"asr": {"model": "/models/whisper-small"}, "tts": {}})
    assert multilingual.backend("asr").languages(multilingual.asr) > {"en", "de", "ja"}
    assert multilingual.languages() == ["en"]  # the Piper voice still speaks English only


def test_registering_a_backend_checks_it_against_its_stage_contract():
    with pytest.raises(TypeError, match="must subclass avatar_core.protocols.SpeechBackend"):
        registry.register("tts", "nothing")(type("Nothing", (), {}))

    class Mute(SpeechBackend):  # no stream, no probe
        def __init__(self, cfg): ...

    with pytest.raises(TypeError, match="does not implement probe, stream"):
        registry.register("tts", "mute")(Mute)

    class Unconfigured(SpeechBackend):
        def __init__(self, cfg): ...
        async def probe(self): ...
        def stream(self, text, voice_wav, voice_id, language): ...

    with pytest.raises(TypeError, match="nested `Config"):
        registry.register("tts", "unconfigured")(Unconfigured)
    assert "mute" not in registry.backends_of("tts") and "unconfigured" not in registry.backends_of("tts")
    with pytest.raises(ValueError, match="unknown stage"):
        registry.register("vision", "x")
