#!/usr/bin/env bash
# Create the client environment (.venv): Locust, analysis, RAG and test tools, from pyproject.toml. It never holds
# vllm. Idempotent: a stamp records the pyproject.toml it was built from; a second run exits at once.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.vlab-stamp"
WANT="$(sha256sum pyproject.toml | cut -c1-16)"

# A git worktree that borrows another checkout's environment through a symlink must not re-point that checkout's
# editable install at itself: leave it alone (run the tools as .venv/bin/..., with PYTHONPATH=$PWD where needed).
if [[ -L "$VENV" ]]; then
  echo "client env: $VENV is a link to $(readlink -f "$VENV"); not reinstalling it from here"
  exit 0
fi
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "client env: up to date ($VENV)"
  exit 0
fi
PY=${PYTHON:-python3}
echo "client env: installing into $VENV (about 1-2 minutes the first time)"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
# Quiet pip, minus the noise of this machine's unused local index folders.
pipq() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pipq install -q --upgrade pip
# torch (for the RAG embeddings) is pinned to 2.13.0, the CPU build; elsewhere pass PyTorch's CPU wheel index via
# VLAB_CLIENT_PIP_ARGS so that pip does not fetch a multi-GB CUDA build (see README).
# shellcheck disable=SC2086
pipq install -q -e ".[rag,dev]" ${VLAB_CLIENT_PIP_ARGS:-}
echo "$WANT" > "$STAMP"
echo "client env: ready"
