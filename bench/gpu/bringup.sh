#!/usr/bin/env bash
# GPU host bring-up: after shared/gpu-offline's last stage, check what the lab relies on and measure the load
# generator at GPU rates with the current suite. Runs on the GPU host (device tool), results under $OUT.
#   bash bench/gpu/bringup.sh        (after: . /tmp/gpu-site/gpu-offline/env.sh)
set -uo pipefail
cd "$(dirname "$0")/../.."
R=/tmp/bringup; rm -rf $R; mkdir -p $R
finish() { tar -C /tmp -czf "$OUT/bringup.tar.gz" bringup 2>/dev/null; ls -la $R >&2; }
trap finish EXIT
T0=$(date +%s)
stamp() { echo "[bringup +$(( $(date +%s) - T0 ))s] $*" | tee -a $R/steps.log >&2; }
PY=python3

stamp "host facts"
{ nvidia-smi; nvidia-smi -q -d CLOCK,POWER,MEMORY | head -120; nproc; free -g; $PY -V; } > $R/host.txt 2>&1
$PY - > $R/nvml.json 2>&1 <<'PYEOF'
import json, pynvml as n
n.nvmlInit(); h = n.nvmlDeviceGetHandleByIndex(0)
out = {"name": n.nvmlDeviceGetName(h), "driver": n.nvmlSystemGetDriverVersion(),
       "mem_total": n.nvmlDeviceGetMemoryInfo(h).total, "power_limit_mw": n.nvmlDeviceGetEnforcedPowerLimit(h),
       "power_mw": n.nvmlDeviceGetPowerUsage(h), "util": n.nvmlDeviceGetUtilizationRates(h).gpu,
       "sm_clock": n.nvmlDeviceGetClockInfo(h, n.NVML_CLOCK_SM), "max_sm_clock": n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_SM),
       "mem_clock_max": n.nvmlDeviceGetMaxClockInfo(h, n.NVML_CLOCK_MEM)}
try: out["energy_mj"] = n.nvmlDeviceGetTotalEnergyConsumption(h)
except Exception as e: out["energy_err"] = repr(e)
try: out["mem_bus_width"] = n.nvmlDeviceGetMemoryBusWidth(h)
except Exception as e: out["bus_err"] = repr(e)
print(json.dumps(out, indent=1))
PYEOF
$PY -m vllm.entrypoints.cli.main serve --help=all > $R/serve-help.txt 2>&1
$PY -m vllm.entrypoints.cli.main bench serve --help > $R/bench-help.txt 2>&1
stamp "start qwen2-1.5b (whole card)"
$PY -m vlab serve --profile h200-qwen2-1.5b --port 8000 > $R/serve.out 2> $R/serve.err &
SERVE=$!
for i in $(seq 1 240); do curl -sf localhost:8000/health >/dev/null && break; sleep 1; done
stamp "healthy? $(curl -s -o /dev/null -w '%{http_code}' localhost:8000/health)"
cp .cache/logs/server-h200-qwen2-1.5b-8000.log $R/server-startup.log 2>/dev/null || cp "$VLAB_CACHE_DIR"/logs/server-h200-qwen2-1.5b-8000.log $R/server-startup.log
curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \
  -d '{"model":"qwen2-1.5b","prompt":"Hello world","max_tokens":16,"ignore_eos":true}' > $R/completion.json
curl -s localhost:8000/metrics > $R/metrics-0.26-idle.txt
curl -s localhost:8000/version > $R/version.json
cat > $R/gpu-rates.yaml <<'YEOF'
name: gpu-rates
description: Load generator at GPU rates (bring-up), 512-token prompts, 256 output tokens.
api: {endpoint: completions}
load:
  stages:
    - {users: 64, duration: 25s}
    - {users: 256, duration: 25s}
    - {users: 512, duration: 25s}
  warmup_s: 8
data: {prompt_tokens: 512, output_tokens: 256, ignore_eos: true}
YEOF
stamp "suite sweep 64/256/512, 4 processes"
$PY -m vlab sweep $R/gpu-rates.yaml --host http://127.0.0.1:8000 --run-dir $R/sweep-p4 --processes 4 > $R/sweep-p4.out 2>&1
stamp "sweep rc=$?"
curl -s localhost:8000/metrics > $R/metrics-0.26-busy.txt
for c in 64 256 512; do
  stamp "vllm bench serve c=$c"
  timeout 120 $PY -m vllm.entrypoints.cli.main bench serve --backend vllm --base-url http://127.0.0.1:8000 \
    --endpoint /v1/completions --model qwen2-1.5b --tokenizer "$VLAB_CACHE_DIR/models/qwen2-1.5b-dummy" \
    --dataset-name random --random-input-len 512 --random-output-len 256 --ignore-eos --num-prompts $((c*3)) \
    --max-concurrency $c --percentile-metrics ttft,tpot,itl,e2el --save-result --result-dir $R \
    --result-filename vllm-bench-c$c.json --seed $c > $R/vllm-bench-c$c.out 2>&1
done
stamp "done; stopping server"
kill -INT $SERVE; wait $SERVE
cp $VLAB_CACHE_DIR/logs/server-h200-qwen2-1.5b-8000.log $R/server.log 2>/dev/null
du -sh $R/sweep-p4/* > $R/sweep-p4-sizes.txt; rm -f $R/sweep-p4/tokens.csv
stamp "end"
