#!/usr/bin/env bash
# Compatibility matrix on a CPU (no GPU): for each Triton, the interpreter's test suites and the
# sm_90 compiles of both attention kernels. pyproject asks triton >= 3.2; CI runs the newest only.
#
#   bash benchmarks/triton_versions.sh                  # 3.2.0 3.3.1 3.4.0 3.5.0 3.6.0 3.7.0 3.8.0 3.9.0
#   bash benchmarks/triton_versions.sh 3.6.0 3.9.0
#
# Wheels go to ~/.cache/triton-versions. Interpreters up to 3.6 fail on numpy >= 2.4 (int() of a
# 1-element array inside them), so the suites run with numpy 2.2 there. Results: NOTES 50.
set -uo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(3.2.0 3.3.1 3.4.0 3.5.0 3.6.0 3.7.0 3.8.0 3.9.0)
cache="${HOME}/.cache/triton-versions"
mkdir -p "$cache"
install() {  # name==version -> its own --target folder, printed
  local dir="$cache/${1/==/-}"
  [ -d "$dir" ] || python -m pip install -q --no-deps --only-binary=:all: --target "$dir" "$1" >&2
  echo "$dir"
}
old_numpy=$(install numpy==2.2.6)
for v in "${versions[@]}"; do
  site=$(install "triton==$v")
  path="$site"
  [ "$(printf '%s\n' "$v" 3.6.99 | sort -V | head -n 1)" = "$v" ] && path="$old_numpy:$site"
  suites=$(PYTHONPATH="$path" TRITON_INTERPRET=1 python -m pytest -q -p no:cacheprovider tests/test_triton_kernels.py \
    tests/test_processors.py tests/test_compile.py tests/test_reference.py tests/test_validation.py 2>&1 | tail -n 1)
  gluon=$(PYTHONPATH="$path" python -m pytest -q -p no:cacheprovider tests/test_gluon_compile.py -rs 2>&1 | tail -n 1)
  triton_kernel=$(PYTHONPATH="$path" python benchmarks/kernel_resources.py --tiles 128x128x4x3 --granularity head \
    2>&1 | tail -n 1 | tr -s ' ')
  echo "triton $v | interpreter: $suites | Gluon compile: $gluon | Triton kernel sm_90: $triton_kernel"
done
