import os

# Tests never reach the hub: everything they load is built here or installed from PyPI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path

import pytest
import torch

from mechref.testing import FAMILIES, tiny_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TESTS = Path(__file__).resolve().parent
# The tiers, by folder: each test carries its tier's marker (pytest -m "not integration and not browser" is the fast tier).
TIERS = ("unit", "contracts", "browser", "integration")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = Path(str(item.fspath)).resolve()
        tier = path.relative_to(TESTS).parts[0] if path.is_relative_to(TESTS) else "unit"  # doctests are unit tests
        item.add_marker(getattr(pytest.mark, tier if tier in TIERS else "unit"))


@pytest.fixture(scope="session", params=["qwen2", "llama"])
def tiny(request):
    """A tiny random model of each architecture (Qwen2 + ChatML, Llama + Llama-3 template)."""
    return tiny_model(request.param)


@pytest.fixture(scope="session", params=FAMILIES)
def family(request):
    """``(name, model)``: a two-layer tiny model of each family, built once per session and shared
    by the family-wide tests (they leave it as they found it: hooks in ``with`` blocks)."""
    return request.param, tiny_model(request.param, n_layers=2)


@pytest.fixture(scope="session")
def tiny_qwen():
    return tiny_model("qwen2")


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A tiny random Qwen2 chat model saved as a Hugging Face folder, loadable by path like a real one."""
    from mechref.testing import tiny_hf_model, tiny_tokenizer

    folder = tmp_path_factory.mktemp("tiny-qwen")
    tokenizer = tiny_tokenizer("chatml")
    tiny_hf_model("qwen2", vocab_size=len(tokenizer), n_layers=4).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def prompts():
    return ["Write a poem", "How do I bake a cake at home today?", "Hi", "Explain how photosynthesis works."]


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_leaked_process_state():
    """No test may change process-wide state that outlives it: environment variables, the working
    directory, torch's default dtype and grad mode."""

    def state():
        # Left out: pytest's own bookkeeping, the OpenMP switches scikit-learn sets when first imported,
        # and the cache folder torch's compiler records the first time a module imports it.
        ignored = {"PYTEST_CURRENT_TEST", "TORCHINDUCTOR_CACHE_DIR"}
        environment = {k: v for k, v in os.environ.items() if k not in ignored and not k.startswith("KMP_")}
        return environment, os.getcwd(), torch.get_default_dtype(), torch.is_grad_enabled()

    before = state()
    yield
    after = state()
    if after != before:
        changed = sorted(set(before[0].items()) ^ set(after[0].items()))
        pytest.fail(f"the test leaked process state: environment {changed[:4]}, cwd/dtype/grad {before[1:]} -> {after[1:]}")
