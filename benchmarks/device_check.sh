#!/usr/bin/env bash
# One run on a lent GPU machine: build, the CUDA tests on their own, compute-sanitizer, the slow
# model tests, benchmarks and one ncu profile; everything written under $OUT as it goes.
#
#   OUT=/some/dir bash benchmarks/device_check.sh
#
# The step logs go to a scratch folder and, after every step, into $OUT/device_check.tgz (a lent
# machine hands back only a few files: one archive carries them all, even if the run is cut short).
# Each step has its own time limit (seconds, below), cut further so that the whole script ends
# within 9 minutes; a failing or timed-out step is recorded in steps.txt and the next one runs.
#   machine 15 | build 140 | build_info 10 | cuda_tests 100 | memcheck 25 | synccheck 20 |
#   initcheck 20 | model_tests 60 | attn_float32 60 | dn 45 | ncu 20  = 515 (seconds each took on an
#   H200, 2026-12-04: 9, 103, 5, 61, 11, 10, 8, 32+, 27 + start-up, 35, 11)
# Sanitizers run with PYTORCH_NO_CUDA_MEMORY_CACHING=1: with PyTorch's caching allocator an
# out-of-bounds access that stays inside a cached block is invisible to memcheck. synccheck covers
# the backward's full-mask warp shuffles; initcheck reads of memory no kernel wrote (device_smoke.py
# reads back every output). racecheck is not run: no kernel uses shared memory.
set -u
OUT=${OUT:?set OUT to the folder for the results}
cd "$(dirname "$0")/.."
LOGS=$(mktemp -d)
mkdir -p "$OUT"
mkdir -p "$LOGS"
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=16
export PATH="$CUDA_HOME/bin:$PATH" PYTHONUNBUFFERED=1
status="$LOGS/steps.txt"
: > "$status"
deadline=$((SECONDS + 540))

step() {  # step NAME SECONDS COMMAND...: run with a time limit, output to NAME.txt as it comes
  local name=$1 limit=$2; shift 2
  local left=$((deadline - SECONDS))
  if [ "$left" -lt 5 ]; then
    echo "$name skipped: the 9-minute budget is spent" | tee -a "$status"
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local start=$SECONDS
  # SIGINT first: pytest then still prints its summary and writes its JUnit XML.
  timeout --signal=INT --kill-after=5 "$limit" "$@" > "$LOGS/$name.txt" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start)) limit=$limit$([ $rc -eq 124 ] && echo ' TIMED OUT')" | tee -a "$status"
  tar -czf "$OUT/device_check.tgz" -C "$LOGS" .
}

sanitize() {  # sanitize TOOL: the command line of compute-sanitizer on the small smoke run
  echo env PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$1" --error-exitcode 1 \
    python benchmarks/device_smoke.py
}

step machine 15 bash -c 'nvidia-smi; python -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; nvcc --version'
step build 140 python -m pip install -e . --no-build-isolation --no-deps -v
step build_info 10 python -c "import detrx, json; print(json.dumps(detrx.build_info(), indent=1))"
# The CUDA tests alone first, verbose with skip reasons; the JUnit XML and the log fill as tests end.
step cuda_tests 100 python -m pytest -v -rs -p no:cacheprovider -k cuda tests \
  --junitxml="$LOGS/cuda_tests.xml" -o junit_logging=all
step memcheck 25 $(sanitize memcheck)
step synccheck 20 $(sanitize synccheck)
step initcheck 20 $(sanitize initcheck)
step model_tests 60 python -m pytest -v -rs -p no:cacheprovider -k "not cuda" \
  tests/test_models.py tests/test_models_two_stage.py tests/test_train.py --junitxml="$LOGS/model_tests.xml"
step attn_float32 60 python benchmarks/attn.py --device cuda --dtype float32 --json "$LOGS/attn_cuda_float32.json"
step dn 45 python benchmarks/dn.py --device cuda --quick --json "$LOGS/dn_cuda.json"
step ncu 20 ncu --section SpeedOfLight --section Occupancy --section MemoryWorkloadAnalysis \
  -k "regex:(forward_kernel|backward_kernel)" -c 2 python benchmarks/device_smoke.py --standard
cat "$status"
