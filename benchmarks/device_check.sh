#!/usr/bin/env bash
# One run on a GPU machine: build, CUDA tests, sanitizers, benchmarks
# and one ncu profile, everything written under $OUT. Every step has its own time limit so the
# whole script ends inside ~7.5 minutes; a failing step is recorded and the next one still runs.
#
#   OUT=/some/dir bash benchmarks/device_check.sh
set -u
OUT=${OUT:?set OUT to the folder for the results}
cd "$(dirname "$0")/.."
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=16
export PATH="$CUDA_HOME/bin:$PATH" PYTHONUNBUFFERED=1
status="$OUT/steps.txt"
: > "$status"

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.txt, record rc
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start))" | tee -a "$status"
}

step machine 30 bash -c 'nvidia-smi; python -c "import torch, sys; print(sys.version); print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; nvcc --version'
step build 180 pip install -e . --no-build-isolation --no-deps -v
step build_info 30 python -c "import detrx, json; print(json.dumps(detrx.build_info(), indent=1))"
step tests 150 python -m pytest -q -rs tests
step memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 1 python benchmarks/device_smoke.py
step racecheck 60 compute-sanitizer --tool racecheck --error-exitcode 1 python benchmarks/device_smoke.py
for dtype in float32 float16 bfloat16; do
  step "attn_$dtype" 70 python benchmarks/attn.py --device cuda --dtype "$dtype" --json "$OUT/attn_cuda_$dtype.json"
done
step dn 40 python benchmarks/dn.py --device cuda --json "$OUT/dn_cuda.json"
step ncu 60 ncu --section SpeedOfLight --section Occupancy --section MemoryWorkloadAnalysis \
  -k "regex:(forward_kernel|backward_kernel)" -c 2 python benchmarks/device_smoke.py --standard
cat "$status"
