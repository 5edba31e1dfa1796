"""The code version stage manifests carry (mechref.framework.runs.code_version)."""

from __future__ import annotations

import importlib.metadata

import pytest

from mechref.framework import runs


@pytest.fixture
def fresh_version():
    runs.code_version.cache_clear()
    yield
    runs.code_version.cache_clear()


def test_an_upgraded_dependency_changes_the_code_version(fresh_version, monkeypatch):
    before = runs.code_version()
    real = importlib.metadata.version
    monkeypatch.setattr(runs.importlib.metadata, "version", lambda name: "99.0" if name == "transformer-lens" else real(name))
    runs.code_version.cache_clear()
    after = runs.code_version()
    assert after != before and after.split("+")[0] == before.split("+")[0]
    assert runs.dependency_versions()["transformer-lens"] == "99.0"


def test_every_computing_dependency_is_named(fresh_version):
    versions = runs.dependency_versions()
    assert set(versions) == {"torch", "transformers", "transformer-lens", "safetensors", "numpy", "gguf"}
    assert all(v != "absent" for v in versions.values())
