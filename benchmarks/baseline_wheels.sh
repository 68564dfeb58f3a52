#!/usr/bin/env bash
# Fetch the third-party FP8 / INT8 attention baselines that the GPU machine lacks into
# .baselines/ (git-ignored), for benchmarks/gpu_session.sh 36 to install there:
#   torchao       - apply_low_precision_attention (FA3 FP8 through torch's quantized SDPA op;
#                   needs torch >= 2.11 and FA3, i.e. .devcarry's build)
#   sageattention - what `pip install sageattention` gives (1.0.x, Triton: INT8 Q K^T, FP16 P V);
#                   SageAttention2's CUDA kernels need a source build with nvcc, not available here
#
#   bash benchmarks/baseline_wheels.sh     # then carry .baselines along with .devcarry
set -euo pipefail
root=$(git rev-parse --show-toplevel)
dest="$root/.baselines"
TORCHAO_VERSION="${TORCHAO_VERSION:-0.18.0}"
SAGEATTENTION_VERSION="${SAGEATTENTION_VERSION:-1.0.6}"
mkdir -p "$dest"
rm -f "$dest"/*.whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$dest" "torchao==$TORCHAO_VERSION" "sageattention==$SAGEATTENTION_VERSION"
cat > "$dest/setup.sh" <<'SH'
# source .baselines/setup.sh: the wheels beside this file into /tmp/baselines, on PYTHONPATH
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/baselines \
  "$here"/*.whl && export PYTHONPATH="/tmp/baselines${PYTHONPATH:+:$PYTHONPATH}"
SH
ls -la "$dest"
