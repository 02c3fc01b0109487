#!/usr/bin/env bash
# The lab on the GPU host (device tool), after shared/gpu-offline's last stage and `. /tmp/gpu-site/gpu-offline/env.sh`.
#   bash bench/gpu/lab.sh start WAIT_S   prepare SmolLM2, start `vlab lab` in its own session, wait, pack
#   bash bench/gpu/lab.sh wait WAIT_S    wait for the lab to end (or WAIT_S), pack
# `vlab lab` runs detached (setsid), so one lab spans several device calls; each call packs what is there into
# $OUT/lab.tar.xz (split into 15 MiB parts when larger). The reports are built afterwards, off the GPU host:
#   vlab lab --report-only <unpacked lab folder>
set -uo pipefail
cd "$(dirname "$0")/../.."
LAB=/tmp/lab-h200
mode=${1:?start|wait}; wait_s=${2:-500}
T0=$(date +%s)
if [[ $mode == start ]]; then
  { nvidia-smi; nproc; free -g; } > /tmp/host.txt 2>&1
  python3 -m server.prepare_model > /tmp/prepare-model.log 2>&1 || echo "prepare_model failed" >&2
  setsid nohup python3 -m vlab lab --profile "${LAB_PROFILE:-h200-qwen2-1.5b}" -o $LAB --no-report \
    ${LAB_ARGS:-} > /tmp/lab.out 2>&1 < /dev/null &
  echo $! > /tmp/lab.pid
  sleep 2
fi
pid=$(cat /tmp/lab.pid)
while kill -0 "$pid" 2>/dev/null && (( $(date +%s) - T0 < wait_s )); do sleep 5; done
if kill -0 "$pid" 2>/dev/null; then echo "lab still running after ${wait_s}s"; else echo "lab ended"; fi
tail -n 40 /tmp/lab.out
cp /tmp/lab.out /tmp/host.txt /tmp/prepare-model.log $LAB/ 2>/dev/null
nvidia-smi --query-gpu=memory.used,utilization.gpu,power.draw --format=csv >> $LAB/host.txt 2>&1
tar -C /tmp -cf - lab-h200 | xz -T0 -6 > /tmp/lab.tar.xz
size=$(stat -c %s /tmp/lab.tar.xz); echo "packed $size bytes"
if (( size > 15 * 1024 * 1024 )); then split -b 15M -d /tmp/lab.tar.xz "$OUT/lab.tar.xz.part"; else cp /tmp/lab.tar.xz "$OUT/"; fi
ls -la "$OUT"
