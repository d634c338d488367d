#!/usr/bin/env bash
# On a lent GPU machine: build once (one native CPU copy, Hopper only), run the CUDA tests, then the
# CUDA kernels' hand mutants (tests/mutation/kernel_mutants.py --device cuda); results under $OUT.
#
#   OUT=/some/dir bash tests/mutation/device_kernel_mutants.sh
#
# Each step has a time limit so that the whole script ends within 9.5 minutes; kernel_mutants.py
# writes its JSON after every mutant, so a run cut short keeps what it found.
set -u
OUT=${OUT:?set OUT to the folder for the results}
cd "$(dirname "$0")/../.."
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
export DETRX_NATIVE=1 DETRX_OPENVINO=0 PATH="${CUDA_HOME:-/usr/local/cuda}/bin:$PATH" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/machine.txt"
timeout 170 python setup.py build_ext --inplace > "$OUT/build.log" 2>&1; echo "build rc=$?" | tee -a "$OUT/steps.txt"
timeout --signal=INT 100 python -m pytest -q -rs -p no:cacheprovider --continue-on-collection-errors -k cuda tests > "$OUT/cuda_tests.txt" 2>&1
echo "cuda_tests rc=$?" | tee -a "$OUT/steps.txt"
tail -3 "$OUT/cuda_tests.txt"
timeout 290 python tests/mutation/kernel_mutants.py --device cuda ${MUTANTS:+--only "$MUTANTS"} --json "$OUT/kernel_mutants_cuda.json" \
  --log "$OUT/kernel_mutants_cuda.log" --test-timeout 90 2>&1 | tee "$OUT/kernel_mutants_cuda.txt"
echo "kernel_mutants rc=$?" | tee -a "$OUT/steps.txt"
