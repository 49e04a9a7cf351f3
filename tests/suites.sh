#!/usr/bin/env bash
# `make test`: every test of both environments, in pytest runs side by side, each run's output
# printed whole once they end, then one line that adds up their pytest summaries.
#
#   tests/suites.sh SELECTION
#
# SELECTION is a marker expression every run adds ("not bench": the tests; "bench": the smoke runs
# of the `adcast bench` commands; "bench or not bench": both). The runs:
#   stream  the stream environment: tests/unit and tests/stream
#   vllm    the infer environment, tests that build a vLLM engine in the test process: vLLM's CPU
#           worker changes process-wide torch threading, which would change what later tests train
#   infer   the infer environment, everything else of tests/unit, integration and e2e, spread over
#           TEST_WORKERS pytest-xdist processes (default 3; most of those tests wait on workers,
#           the broker and Redis rather than compute), a test file per process at a time
# TEST_RUNS picks some of them (default "stream vllm infer"; `make test-stream`: stream).
# Logs: .adcast/test-logs/<run>.log. Exit status: non-zero when any run failed.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
selection="${1:-not bench}"
workers="${TEST_WORKERS:-3}"
runs=" ${TEST_RUNS:-stream vllm infer} "
stream_py="${STREAM_PY:-.venv-stream/bin/python}"
infer_py="${INFER_PY:-.venv-infer/bin/python}"
# One compute thread per process (torch, OpenMP, vLLM's CPU worker, the workers a test starts): the
# runs side by side fill the cores. More threads oversubscribe them, and OpenMP threads that vLLM
# binds to cores spin at their barriers while other processes hold those cores: every run slows.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
logs=.adcast/test-logs
mkdir -p "$logs"
infer_tests=(tests/unit tests/integration tests/e2e)

declare -A pid started took status
order=()
launch() {  # launch NAME COMMAND...: in the background, output to its log
  local name="$1"
  shift
  [[ "$runs" == *" $name "* ]] || return 0
  order+=("$name")
  started[$name]=$(date +%s)
  echo "started $name: $*"
  # Each run notes when it ended: they end in any order, and are waited for in launch order.
  ( "$@" >"$logs/$name.log" 2>&1; s=$?; date +%s >"$logs/$name.ended"; exit $s ) &
  pid[$name]=$!
}

launch stream "$stream_py" -m pytest -q -p no:cacheprovider --durations=15 -m "$selection" tests/unit tests/stream
launch vllm "$infer_py" -m pytest -q -p no:cacheprovider --durations=15 -m "vllm and ($selection)" "${infer_tests[@]}"
parallel=()
# --no-loadscope-reorder: keep the collection order (tests/conftest.py puts the longest files first)
[ "$workers" -gt 1 ] && parallel=(-n "$workers" --dist loadfile --no-loadscope-reorder)
launch infer "$infer_py" -m pytest -q -p no:cacheprovider --durations=15 "${parallel[@]}" -m "not vllm and ($selection)" \
  "${infer_tests[@]}"

failed=()
for name in "${order[@]}"; do
  wait "${pid[$name]}"
  status[$name]=$?
  took[$name]=$(($(cat "$logs/$name.ended" 2>/dev/null || date +%s) - started[$name]))
done
for name in "${order[@]}"; do
  echo
  echo "=== $name: exit ${status[$name]} in ${took[$name]} s ($logs/$name.log) ==="
  cat "$logs/$name.log"
  # pytest exits 5 when a selection holds no test (a run with nothing of its marker).
  case "${status[$name]}" in 0 | 5) ;; *) failed+=("$name") ;; esac
done
echo
for name in "${order[@]}"; do echo "run $name: exit ${status[$name]} in ${took[$name]} s"; done
# One closing line over every run: "tests: N passed, N failed, N skipped".
summaries=("${order[@]/#/$logs/}")
summaries=("${summaries[@]/%/.log}")
count() { grep -hE "^(=+ )?[0-9]+ [a-z]+.* in [0-9.]+s" "${summaries[@]}" | grep -oE "[0-9]+ $1" \
  | awk '{n += $1} END {print n + 0}'; }
echo "tests: $(count passed) passed, $(( $(count failed) + $(count error) )) failed, $(count skipped) skipped"
if [ ${#failed[@]} -gt 0 ]; then
  echo "failed runs: ${failed[*]}"
  exit 1
fi
