#!/usr/bin/env bash
# Everything lamina checks and measures on an NVIDIA GPU, in one go:
# build with nvcc, the GPU tests, the GPU tests under compute-sanitizer
# memcheck, the kernel benchmark against cuBLAS/cuDNN, and the training-step
# benchmark against PyTorch (eager and CUDA-graph).  Logs and results go to
# the folder given as the first argument (default: benchmarks/results/gpu-run).
#
#     bash benchmarks/run_gpu.sh [OUTDIR [STEP...]]
#
# STEPs (default: all, in this order): build tests memcheck kernels checkpoint
# bench ctc.  The build is kept between runs, so a long session can be split
# into several shorter ones, e.g. `run_gpu.sh OUT build tests memcheck`, then
# `run_gpu.sh OUT kernels checkpoint bench`.
#
# Needs CuPy, PyTorch with CUDA, pytest and nvcc.  Each step runs even if an
# earlier one failed; the exit status is that of the first failure.  The
# interpreter is $PYTHON, else python3.  LAMINA_GPU_BUDGET_S (seconds) bounds
# the whole run: each step gets at most what is left of it and a step that
# would start with under 30 s left is skipped.  The benchmarks write their
# results after every row, so a step stopped at its limit keeps its finished
# rows.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/gpu-run}
shift || true
wanted=" ${*:-build tests memcheck kernels checkpoint bench ctc} "
want() { [[ "$wanted" == *" $1 "* ]]; }
mkdir -p "$out"
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
budget=${LAMINA_GPU_BUDGET_S:-0}
step() {  # step NAME CAP COMMAND...: run for at most CAP seconds (0: no cap of its own) and what is
  # left of the budget, log to OUTDIR/NAME.log, remember the first failure
  local name=$1 cap=$2
  shift 2
  if [ "$budget" -gt 0 ]; then
    local left=$((budget - SECONDS - 5))
    if [ "$left" -lt 30 ]; then
      echo "== $name: skipped, ${left}s of LAMINA_GPU_BUDGET_S left"
      [ "$status" -eq 0 ] && status=124
      return 0
    fi
    if [ "$cap" -eq 0 ] || [ "$left" -lt "$cap" ]; then cap=$left; fi
  fi
  echo "== $name: $* (limit ${cap}s)"
  if [ "$cap" -gt 0 ]; then
    timeout -k 10 "$cap" "$@" >"$out/$name.log" 2>&1
  else
    "$@" >"$out/$name.log" 2>&1
  fi
  local rc=$?
  tail -n 15 "$out/$name.log"
  echo "== $name: exit $rc"
  [ "$rc" -ne 0 ] && [ "$status" -eq 0 ] && status=$rc
  return 0
}
if compgen -G ".whl/*.whl" >/dev/null; then
  # a wheelhouse for a machine without a package index: the test and benchmark
  # dependencies (mnist1d; pytest-timeout, pytest-xdist and execnet for the
  # test step below), installed beside (not over) what the machine has
  site="${TMPDIR:-/tmp}/lamina-wheelhouse"
  # (logged only on failure: a folder of results may have to stay small)
  if [ ! -d "$site" ] && ! "$py" -m pip install -q --no-index --no-deps --target "$site" .whl/*.whl >"$site.log" 2>&1; then
    cp "$site.log" "$out/wheels.log"
    echo "== wheels: install failed (wheels.log)"
    status=1
  fi
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
if want build; then
  step build 0 env LAMINA_CUDA=1 "$py" -m pip install --no-build-isolation --no-deps -e .
  step info 60 "$py" -m lamina info
fi
# Each test is named in the log, and a hang (a wgmma pipeline waiting forever,
# say) ends the test or the step, not the whole run; with pytest-xdist the
# tests run in 4 processes on the one GPU (CuPy compiles its kernels on the CPU).
extra=()
"$py" -c "import pytest_timeout" 2>/dev/null && extra+=(--timeout=120 --timeout-method=thread)
"$py" -c "import xdist" 2>/dev/null && extra+=(-n 4)
want tests && step gpu_tests 300 "$py" -m pytest -v -m gpu -p no:cacheprovider -p no:benchmark ${extra[@]+"${extra[@]}"}
memcheck_runs() {  # compute-sanitizer refuses some (virtualised) devices: a trivial CuPy program first
  timeout -k 10 120 compute-sanitizer --tool memcheck --error-exitcode 1 "$py" -c \
    "import cupy; assert int(cupy.arange(4).sum()) == 6" >"$out/memcheck_probe.log" 2>&1
}
if want memcheck && command -v compute-sanitizer >/dev/null && ! memcheck_runs; then
  tail -n 5 "$out/memcheck_probe.log"
  echo "== memcheck: compute-sanitizer cannot run a trivial CuPy program on this device (memcheck_probe.log);"
  echo "   not run. On the CPU, tests/emu/sanitize.py runs every kernel under AddressSanitizer and ThreadSanitizer."
elif want memcheck && command -v compute-sanitizer >/dev/null; then
  # every kernel under memcheck, on a subset of the shapes (memcheck is slow; "big" cases are left out)
  step memcheck 180 compute-sanitizer --tool memcheck --error-exitcode 1 "$py" -m pytest -q -m gpu -p no:benchmark \
    -p no:cacheprovider tests/test_cuda.py tests/test_cuda_gemm.py tests/test_cuda_conv.py \
    -k "((not test_fp32_gemm_matches_float64 and not padded_operands) or 1-1-1 or 129-129-33 or 300-136-700) and not big and not captures and not graph"
fi
# with a budget the kernel benchmark leaves time for the other two (the
# training-step benchmark last: it is the longest, and keeps what it finished)
want kernels && step kernels "$([ "$budget" -gt 0 ] && echo 330 || echo 0)" "$py" benchmarks/kernels.py --sweep --out "$out"
# targets met and missed, kernels side by side, split-K sweeps, and each row beside the committed results of
# the same device: kernels_<device>.md beside the results
if want kernels; then
  for f in "$out"/kernels_*.json; do
    [ -f "$f" ] || continue
    base=benchmarks/results/$(basename "$f")
    if [ -f "$base" ] && [ "$(realpath "$base")" != "$(realpath "$f")" ]; then
      step kernels_report 60 "$py" benchmarks/kernels_report.py "$f" --baseline "$base"
    else
      step kernels_report 60 "$py" benchmarks/kernels_report.py "$f"
    fi
  done
fi
want checkpoint && step checkpoint_amp 0 "$py" benchmarks/checkpoint_amp.py --device cuda --out "$out/cuda_checkpoint_amp.json"
want bench && step bench 0 "$py" benchmarks/bench.py --device cuda --models mlp,lenet,resnet20,mlp_wide,transformer,lstm \
  --precisions fp32,bf16,fp16 --kernels auto,cupy --graph --profile 5 --out "$out"
want ctc && step ctc 120 "$py" benchmarks/ctc.py --device cuda --shapes 100x16x28x20,400x32x40x60,1000x32x40x100 \
  --out "$out/cuda_ctc.json"
exit "$status"
