import os

# Tests never reach the hub: everything they load is built here or installed from PyPI.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path

import pytest
import torch

from mechref.testing import FAMILIES, tiny_model

# Under pytest-xdist, each worker's share of the cores: torch's default (every core per process)
# oversubscribes them, and its spinning threads then slow each worker down more than they help.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

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


# The doctests build tiny models by name (``tiny_model("qwen2")``), as a reader would; in the suite
# each distinct model is built once per session and handed back with its weights restored, since a
# doctest may edit them in place (orthogonalization does).
_REAL_TINY_MODEL = tiny_model
_SHARED_TINY: dict[tuple, tuple] = {}


def shared_tiny_model(arch: str = "qwen2", seed: int = 0, n_layers: int = 3, system_prompt: str | None = None):
    key = (arch, seed, n_layers, system_prompt)
    if key not in _SHARED_TINY:
        model = _REAL_TINY_MODEL(arch, seed=seed, n_layers=n_layers, system_prompt=system_prompt)
        _SHARED_TINY[key] = (model, {k: v.clone() for k, v in model.hf_model.state_dict().items()})
    model, weights = _SHARED_TINY[key]
    model.hf_model.load_state_dict(weights)
    return model


@pytest.fixture(autouse=True)
def _doctests_share_tiny_models(request):
    # No monkeypatch here: an autouse fixture that requests it would undo a test's own monkeypatch
    # (a chdir, say) only after _no_leaked_process_state has looked.
    from _pytest.doctest import DoctestItem

    if not isinstance(request.node, DoctestItem):
        yield
        return
    import mechref.testing

    request.getfixturevalue("doctest_namespace")["tiny_model"] = shared_tiny_model
    mechref.testing.tiny_model = shared_tiny_model  # type: ignore[assignment]
    try:
        yield
    finally:
        mechref.testing.tiny_model = _REAL_TINY_MODEL  # type: ignore[assignment]
