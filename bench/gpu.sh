#!/usr/bin/env bash
# The benchmark suite on one GPU, for sessions lent one (device tool): meant to end well inside
# 8 minutes on an H100 (unmeasured so far; about 5 minutes estimated). Each benchmark is capped
# so one that hangs cannot take the rest with it; the caps add up to more than the device tool's
# 10-minute call, which is why the most wanted figures run first.
#
# Runs from the repository root with the machine's own python3, which holds PyTorch with CUDA;
# the package is used from src/ without installing. The GPU image lacks pydantic: carry its
# wheels in .whl/ (README, "Benchmarks on a GPU") and they are put on the path here.
# Figures go to bench/results/<gpu-name>.json. With $OUT set (the device tool), the log and the
# results file are copied there after every benchmark, so a run cut short still returns what it
# measured. The most wanted figures come first: the GEMM ceiling and a whole anchor epoch.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -n "${OUT:-}" ]; then exec > >(tee "$OUT/gpu.log") 2>&1; fi
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/dcsbm-site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/dcsbm-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, pydantic; print('torch', torch.__version__, torch.cuda.get_device_name(0))" || exit 1

failed=()
bench() {  # bench SECONDS MODULE [ARGS...]: one benchmark, capped at SECONDS
  local limit=$1; shift
  echo; echo "=== python -m $* (limit ${limit}s, $(date -u +%H:%M:%S))"
  timeout "$limit" python3 -m "$@" || failed+=("$*")
  if [ -n "${OUT:-}" ]; then cp bench/results/*.json "$OUT"/ 2>/dev/null || true; fi
}

bench 45  bench.gemm --device cuda
bench 150 bench.epoch --device cuda                                    # one whole anchor epoch (200,000 walks)
bench 90  bench.epoch --device cuda --steps 3000 --compile             # compile time reported apart
bench 60  bench.epoch --device cuda --steps 3000 --precision bf16
bench 60  bench.training_step --device cuda --rounds 3                 # with the host-overhead floor per step
bench 75  bench.epoch --device cuda --steps 3000 --compile --compile-mode reduce-overhead  # CUDA graphs
bench 60  bench.gate_eval --device cuda
bench 40  bench.data_generation
bench 60  bench.time_to_gate --config configs/quick.json --device cuda
bench 180 pytest -q -p no:cacheprovider tests                          # the suite with CUDA present (device auto = cuda)

echo; echo "done $(date -u +%H:%M:%S); failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ]
