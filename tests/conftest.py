"""Shared fixtures. End-to-end tests use one real local vLLM per test session (started here, stopped by its
process group at the end). Set VLAB_TEST_BASE_URL to reuse a server that is already running."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vlab.core.paths import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
RUN_FIXTURES = Path(__file__).parent / "fixtures" / "runs"
pytest_plugins = ["tests.support.rag"]


@pytest.fixture(scope="session")
def vllm_base_url() -> Iterator[str]:
    """Base URL (http://127.0.0.1:PORT) of the real local vLLM serving SmolLM2 as `smollm2`."""
    from server.launcher import serving

    ARTIFACTS.mkdir(exist_ok=True)
    with serving(os.environ.get("VLAB_TEST_BASE_URL"), log_path=ARTIFACTS / "vllm-test-server.log") as url:
        yield url


@pytest.fixture(scope="session")
def vllm_embed_base_url() -> Iterator[str]:
    """Base URL of a real local vLLM serving all-MiniLM-L6-v2 as a pooling model, `minilm` (profile
    cpu-minilm-embed). Set VLAB_TEST_EMBED_BASE_URL to reuse a server that is already running."""
    from server.launcher import serving

    ARTIFACTS.mkdir(exist_ok=True)
    log_path = ARTIFACTS / "vllm-test-embed-server.log"
    with serving(os.environ.get("VLAB_TEST_EMBED_BASE_URL"), "cpu-minilm-embed", log_path=log_path) as url:
        yield url


@pytest.fixture
def write_scenario(tmp_path: Path):
    """Write a scenario YAML into the test's temp folder and return its path."""

    def write(text: str, name: str = "scenario.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


@pytest.fixture
def run_copy(tmp_path: Path):
    """Copy a recorded run from tests/fixtures/runs into the test's temp folder (reports are written next to it)."""

    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(RUN_FIXTURES / name, dest)
        return dest

    return copy


@pytest.fixture(autouse=True)
def _pytest_process_stays_unpatched(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail the test that imported Locust into the pytest process: Locust's import runs gevent's `patch_all()`, after
    which every later test's threads are greenlets and an in-process server (the gateway's uvicorn) blocks the whole
    session. Tests reach Locust through subprocesses (see tests/unit/test_test_isolation.py for imports)."""
    yield
    if "gevent.monkey" in sys.modules and sys.modules["gevent.monkey"].is_module_patched("threading"):
        pytest.fail(f"{request.node.nodeid} patched the pytest process with gevent (imported Locust): use a subprocess")
