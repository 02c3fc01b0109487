"""Where the suite keeps things on disk. Everything generated lives under the repo, outside git."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = Path(os.environ.get("VLAB_CACHE_DIR", REPO_ROOT / ".cache"))
MODELS_DIR = CACHE_DIR / "models"
REPORTS_DIR = REPO_ROOT / "reports"
SCENARIOS_DIR = REPO_ROOT / "scenarios"
SERVER_VENV = Path(os.environ.get("VLAB_SERVER_VENV", REPO_ROOT / ".venv-server"))
SERVER_PYTHON = SERVER_VENV / "bin" / "python"
