#!/usr/bin/env bash
# Fetch, here, the wheels bench/gpu.sh needs on the GPU machine, whose image has PyTorch, numpy,
# scipy, matplotlib and tqdm but not pydantic and can reach no package index: the versions this
# checkout's .venv runs (made by `make test`), built for that image's CPython 3.12 on x86-64.
# Then: device run with carry [".whl"] and the command `bash bench/gpu.sh` (README).
set -euo pipefail
cd "$(dirname "$0")/.."
version() { .venv/bin/python -c "import importlib.metadata as m; print(m.version('$1'))"; }
rm -rf .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  "pydantic==$(version pydantic)" "pydantic-core==$(version pydantic-core)" \
  "annotated-types==$(version annotated-types)" "typing-inspection==$(version typing-inspection)" \
  "typing-extensions==$(version typing-extensions)"
ls -l .whl
