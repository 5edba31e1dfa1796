"""Integration tests on the real embedded model (Qwen2.5-Coder-1.5B-Instruct, Q4_K_M).

The first run assembles and dequantizes the model (about two minutes) into MECHREF_CACHE;
later runs load it in seconds. Set MECHREF_SKIP_INTEGRATION=1 to skip them locally.
"""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if os.environ.get("MECHREF_SKIP_INTEGRATION") == "1":
                item.add_marker(pytest.mark.skip(reason="MECHREF_SKIP_INTEGRATION=1"))


@pytest.fixture(scope="session")
def qwen():
    from mechref import load_model

    return load_model()  # the embedded default, float32
