#!/usr/bin/env bash
# Prepare SmolLM2-135M-Instruct offline as .cache/models/smollm2-135m-instruct (see server/prepare_model.py).
# Idempotent: exits at once when the folder is complete. Needs .venv-server (scripts/setup-server-env.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${VLAB_SERVER_VENV:-.venv-server}/bin/python"
if [[ ! -x "$PY" ]]; then
  echo "prepare-model: error: $PY not found; run scripts/setup-server-env.sh first" >&2
  exit 1
fi
HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 exec "$PY" -m server.prepare_model "$@"
