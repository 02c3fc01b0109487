#!/usr/bin/env bash
# `make test` N times in a row (default 3) with a CPU hog busy on one core, the way a user's busy machine runs it:
# the suite's own tests must not depend on an idle machine. Prints one line per run (result, minutes) and keeps the
# logs in test-artifacts/under-load/. Exit 0 only if every run passed.
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
OUT=test-artifacts/under-load
mkdir -p "$OUT"
# The hog: one process spinning, pinned to core 0 when taskset exists (else the scheduler moves it around).
hog_cmd=(python3 -c "while True: pass")
if command -v taskset > /dev/null; then hog_cmd=(taskset -c 0 "${hog_cmd[@]}"); fi
"${hog_cmd[@]}" &
HOG=$!
trap 'kill $HOG 2> /dev/null' EXIT
echo "under-load: CPU hog pid $HOG (${hog_cmd[*]}); $RUNS runs of make test on $(nproc) cores"
failed=0
for i in $(seq 1 "$RUNS"); do
  start=$(date +%s)
  if make --no-print-directory test > "$OUT/run-$i.log" 2>&1; then result=passed; else result=FAILED; failed=1; fi
  secs=$(( $(date +%s) - start ))
  summary=$(grep -E "^=+ .*(passed|failed).* in " "$OUT/run-$i.log" | tail -1 | tr -d '=' | xargs)
  printf "under-load: run %d: %s in %d min %02d s (%s)\n" "$i" "$result" $((secs / 60)) $((secs % 60)) "$summary" \
    | tee -a "$OUT/summary.txt"
done
exit $failed
