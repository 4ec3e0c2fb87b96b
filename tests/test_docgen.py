"""docs/protocol.md and docs/configuration.md are generated from the code: stale files fail here."""

import pytest

from serve_app import docgen, events


@pytest.mark.parametrize("name", ["protocol.md", "configuration.md"])
def test_generated_reference_is_current(name):
    path = docgen.DOCS / name
    fresh = docgen.generated()[path]
    assert path.read_text() == fresh, f"docs/{name} is stale: run .venv/bin/python -m serve_app.docgen"


def test_the_references_name_every_message_event_and_backend():
    """Content, not just equality: a model or a backend left out of the generator would also be left
    out of a file that matches it."""
    from avatar_core import registry

    protocol, configuration = docgen.protocol_md(), docgen.configuration_md()
    for model in (*events.CLIENT_MESSAGES, *events.SERVER_EVENTS):
        kind = model.model_fields["type"].annotation.__args__[0]
        assert f"### `{kind}`" in protocol
        for field in model.model_fields:
            if field != "type":
                assert f"| `{field}` |" in protocol, (kind, field)
    for route in ("`/api/v1/turn`", "`/ws`", "`/api/v1/segments/{segment_id}`", "`/healthz`"):
        assert route in protocol
    for stage in registry.STAGES:
        installed = docgen.installed_backends(stage)
        assert installed and set(installed) <= set(registry.backends_of(stage))
        for name in installed:
            assert f"### `{stage}: {{backend: {name}}}`" in configuration
    assert "{backend: piper}" in configuration and "{backend: ditto}" in configuration
    assert "| `segment_ttl_s` | float | `600.0` |" in configuration
    assert "/work/" not in configuration and docgen.ROOT.as_posix() not in configuration


def test_backends_a_test_registers_stay_out_of_the_reference():
    import tests.test_seam  # noqa: F401  registers the toy "echo" and "broken" LLM backends

    assert "echo" not in docgen.installed_backends("llm")
    assert docgen.generated()[docgen.DOCS / "configuration.md"] == (docgen.DOCS / "configuration.md").read_text()
