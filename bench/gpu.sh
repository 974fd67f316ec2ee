#!/usr/bin/env bash
# The benchmark suite on one GPU, for sessions lent one (device tool): about 5 minutes on an H100.
#
# Runs from the repository root with the machine's own python3, which holds PyTorch with CUDA;
# the package is used from src/ without installing. The GPU image lacks pydantic: carry its
# wheels in .whl/ (README, "Benchmarks on a GPU") and they are put on the path here.
# Figures go to bench/results/<gpu-name>.json, copied to $OUT when set.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/dcsbm-site .whl/*.whl
  export PYTHONPATH="/tmp/dcsbm-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD/src:$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))"

python3 -m bench.gemm --device cuda
python3 -m bench.training_step --device cuda --rounds 3
python3 -m bench.data_generation
python3 -m bench.gate_eval --device cuda
python3 -m bench.epoch --device cuda                      # one whole anchor epoch (200,000 walks)
python3 -m bench.epoch --device cuda --precision bf16
python3 -m bench.time_to_gate --config configs/quick.json --device cuda

if [ -n "${OUT:-}" ]; then cp bench/results/*.json "$OUT"/; fi
