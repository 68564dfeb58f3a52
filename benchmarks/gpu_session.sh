#!/usr/bin/env bash
# Everything a GPU session checks and measures, in stages that each fit one 10-minute device call.
# Logs and JSON go to $OUT (the device tool's return folder; ./gpu-out elsewhere).
#
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 1    # tests, kernels
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 2    # numerics' costs; Wan-1.3B, Flux, one Wan-14B block
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 3    # Wan-14B 720p and 480p, profiled
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 4    # Gluon kernel: tests, against FA3 FP8, whole calls
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 5    # issue 3's final table (kernel only, whole calls)
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 6    # the Gluon kernel at D = 64; 75600 tokens' grid
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 7    # FLUX 1024: FP8 below the key threshold?
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 8    # Gluon tests; short calls' host time; FLUX 1024
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 9    # run 6: FLUX 1024 presets, Wan-14B 480p, whole calls
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 10   # session 8: whole GPU suite, quantization passes
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 11   # quantization tiles; the rest of the suite
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 12   # session 8's final tables
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 13   # Wan-1.3B 480p; norm + RoPE tests
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 14   # session 9: Q quantized in the Gluon kernel
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 15   # session 9's final tables and tests
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 16   # session 9: fixed tests; cross-attention GPU time
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 17   # session 10: three consumer warpgroups at D = 64
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 18   # session 10: 192-key blocks probe; Gluon tests
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 19   # session 10: the rest of the GPU suite
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 20   # session 10: Q in the kernel at long rows, whole calls
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 21   # session 11: Nsight Compute profiles, Gluon vs FA3
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 22   # session 11: K loaded ahead of V; FA3's profile
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 23   # session 11: shallow reductions, key descales read early
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 24   # session 11: the kept kernel, key descales early or late; Gluon tests
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 25   # session 12: the 192-key probe beside the product under ncu
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 26   # session 12: 192-key blocks in the product; Gluon tests
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 27   # session 12: whole calls, 192- against 128-key blocks
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 28   # session 12: smooth-V's mean, shared or global memory
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 29   # session 12: a whole call's kernels, ours and torchao-style
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 30   # session 13: short rows under ncu; D = 64 whole calls
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 31   # session 13: TMA-stored output, padding-aware key blocks; Gluon tests
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 32   # session 13: whole calls, issue 3's rows
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 33   # session 14: the GPU suite stage 31 leaves out
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 34   # session 14: stage 31 again, key-group probe rows
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 35   # sessions 14-16: 31, 32, 34 and more cut to one call
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 36   # session 15: torchao and SageAttention baselines
#   source .devcarry/setup.sh || exit; bash benchmarks/gpu_session.sh 37   # session 16: 32, 33 and 36's essentials in one call
#   torchrun --nproc-per-node 2 benchmarks/context_parallel.py             # two GPUs (issue 7)
#
# Each stage prints its short tables last; the full logs stay under $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
stage="${1:?usage: gpu_session.sh 1|2|...|37}"

summary=/tmp/gpu-session-summary.txt  # printed last; $OUT brings back 8 files at most
: > "$summary"

run() {  # name, seconds, command...: append to $out/name.log, stop it at its limit, say how it ended
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >> "$out/$name.log" 2>&1
  local rc=$?
  echo "[$name] exit $rc after $((SECONDS - t0)) s" | tee -a "$summary"
  return $rc
}

profile() {  # name, seconds, shapes, kernels: Nsight Compute on benchmarks/profile_attention.py
  # (one launch per kernel); $out/name-{details.txt,raw.csv,sass.csv}, the loop's stalls in the summary
  local name=$1 limit=$2 shapes=$3 kernels=$4
  local ncu rep="/tmp/$1"
  ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu | head -n 1)
  # FA3's kernel is a cutlass device_kernel: only its demangled name says "flash"
  run "$name" "$limit" "$ncu" --profile-from-start off --clock-control none --set full -f -o "$rep" \
    --kernel-name-base demangled -k regex:'gluon|flash' \
    python benchmarks/profile_attention.py --shapes "$shapes" --kernels "$kernels"
  "$ncu" --import "$rep.ncu-rep" --page details > "$out/$name-details.txt" 2>&1
  "$ncu" --import "$rep.ncu-rep" --page raw --csv > "$out/$name-raw.csv" 2>&1
  "$ncu" --import "$rep.ncu-rep" --page source --csv --print-source sass > "$out/$name-sass.csv" 2>&1
  grep -E "^  [a-zA-Z_:<>]|Duration|Issue Slots Busy|No Eligible|L2 Hit Rate" "$out/$name-details.txt" \
    | cut -c1-100 >> "$summary"
  python benchmarks/ncu_stalls.py "$out/$name-sass.csv" >> "$summary" 2>&1
}

gluon_tests_and_rows() {  # kernels regex, tests' limit, rows' limit: the Gluon GPU tests, then
  # gluon_attention.py's rows matching the regex (A/B against the product) at issue 3's shapes
  run tests "$2" python -m pytest -q tests/test_gpu.py tests/test_triton_kernels.py -k \
    "gluon or query or keys_per_head or dispatch"
  run gluon-out "$3" python benchmarks/gluon_attention.py --json "$out/gluon-out.json" --kernels "$1" --shapes \
    12x32760x512x128,12x32760x1024x128,12x32760x2048x128,24x4608x4608x128,24x8192x8192x128,12x32760x32760x128,24x8192x8192x64
  grep -E "speed:" "$out/gluon-out.log" | cut -d: -f2- | cut -c1-330 >> "$summary"
  grep -E "NaN rows [1-9]" "$out/gluon-out.log"; tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
}

case "$stage" in
1)
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$summary"
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$summary"
  run gpu-tests 300 python -m pytest -q --durations=10 tests/test_gpu.py tests/test_triton_kernels.py tests/test_processors.py tests/test_compile.py
  run attention 170 python benchmarks/attention.py --quick --json "$out/attention.json"
  run tune-attention 240 python benchmarks/tune_attention.py --quick --json "$out/tune-attention.json"
  run call-cost 60 python benchmarks/call_cost.py  # cross-attention: host or GPU? (NOTES 27)
  grep -E "^(FAILED|ERROR)" "$out/gpu-tests.log"; tail -n 1 "$out/gpu-tests.log"; tail -n 20 "$out/attention.log"
  grep -E "BEST|FA3 FP8" "$out/tune-attention.log"; cat "$out/call-cost.log"
  ;;
2)
  run gpu-tests-again 80 python -m pytest -q tests/test_gpu.py tests/test_triton_kernels.py -k "small_shapes or both_query"
  run numerics 60 python benchmarks/attention.py --quick --json "$out/numerics.json" --methods \
    sdpa-cudnn-bf16,accel-triton-head,accel-triton-token,accel-token-smooth-v,accel-token-smooth-q,accel-token-hadamard
  tail -n 1 "$out/gpu-tests-again.log"; tail -n 6 "$out/numerics.log"
  run pipeline-small 430 python benchmarks/pipeline.py --configs wan-1.3b-480p,flux-dev-1024,flux-dev-2048,wan-14b-720p-1block \
    --steps 4 --repeats 3 --profile --json "$out/pipeline-small.json"
  # Flux 1024x1024 runs stock bf16 under every preset: rounds in rotated orders take out order drift
  run flux-1024-rounds 60 python benchmarks/pipeline.py --configs flux-dev-1024 --repeats 5 --rounds 3 \
    --variants native,_native_cudnn,accel-speed,accel-balanced --json "$out/flux-1024-rounds.json"
  tail -n 60 "$out/pipeline-small.log"; tail -n 4 "$out/flux-1024-rounds.log"
  ;;
3)
  # the variants the targets compare (issue 8); 720p: ~11 s a bf16 forward, 4 a variant (warm-up,
  # timed, output, profiled)
  v=_native_cudnn,fa3-bf16,torchao-style,accel-speed,accel-balanced,accel-quality
  run pipeline-14b-720p 370 python benchmarks/pipeline.py --configs wan-14b-720p --repeats 1 --profile \
    --variants "$v" --json "$out/pipeline-14b-720p.json"
  run pipeline-14b-480p 190 python benchmarks/pipeline.py --configs wan-14b-480p --repeats 2 --profile \
    --variants "$v" --json "$out/pipeline-14b-480p.json"
  tail -n 14 "$out/pipeline-14b-720p.log"; tail -n 14 "$out/pipeline-14b-480p.log"
  ;;
4)
  # The Gluon kernel (NOTES 28-30): its GPU tests, kernel-only against FA3 FP8 and our Triton kernel
  # (gluon.json), then whole calls from bf16 against cuDNN, FA3 and torchao-style (attention.json).
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run gluon-tests 200 python -m pytest -q -x tests/test_gpu.py tests/test_triton_kernels.py \
    -k "gluon or matches_reference_on_gpu or nonfinite or smooth_v or small_shapes or key_order"
  run gluon 200 python benchmarks/gluon_attention.py --json "$out/gluon.json" --shapes \
    24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,40x75600x75600x128,12x32760x512x128,12x32760x1024x128,12x32760x2048x128,12x32760x4096x128,24x2048x2048x128
  run attention 200 python benchmarks/attention.py --quick --json "$out/attention.json"
  tail -n 3 "$out/gluon-tests.log"; grep -E "^(FAILED|ERROR)" "$out/gluon-tests.log"
  grep -E "rel. L2|speed|Error" "$out/gluon.log"; tail -n 25 "$out/attention.log"
  ;;
5)
  # Issue 3's final table in one call: the Gluon kernel's tail-shape tests, kernel only against FA3
  # FP8 (both grids), then every reference row whole-call against cuDNN, FA3 bf16 and torchao-style.
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run gluon-tests 120 python -m pytest -q -x tests/test_gpu.py -k "gluon_kernel_small or gluon_kernel_serves"
  run gluon 120 python benchmarks/gluon_attention.py --json "$out/gluon.json" --shapes \
    24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,40x75600x75600x128,12x32760x512x128,24x2048x2048x128
  run attention 300 python benchmarks/attention.py --warmup 50 --rep 200 --json "$out/attention.json" --methods \
    sdpa-cudnn-bf16,fa3-bf16,accel-triton-head,accel-triton-token,accel-fa3-head,kernel-only-head,kernel-only-token,fa3-fp8-kernel-only
  tail -n 1 "$out/gluon-tests.log"; grep -E "^(FAILED|ERROR)" "$out/gluon-tests.log"
  grep -E "speed|Error" "$out/gluon.log"; tail -n 16 "$out/attention.log"
  ;;
6)
  # The Gluon kernel at D = 64 (tests, kernel only against FA3 FP8 and our Triton kernel, whole
  # calls) and the 40x75600 D = 128 whole call with one CTA per tile (PERSISTENT_MAX_KEYS).
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run gluon-tests 120 python -m pytest -q tests/test_gpu.py -k "gluon_kernel_head_dim_64 or gluon_kernel_serves"
  d64=24x4608x4608x64,24x8192x8192x64,24x16384x16384x64,12x32760x32760x64,40x75600x75600x64
  run gluon 120 python benchmarks/gluon_attention.py --json "$out/gluon.json" --shapes "$d64"
  run attention 200 python benchmarks/attention.py --warmup 50 --rep 200 --json "$out/attention.json" \
    --shapes "$d64,40x75600x75600x128" \
    --methods sdpa-cudnn-bf16,fa3-bf16,accel-triton-head,accel-triton-token,accel-fa3-head,fa3-fp8-kernel-only
  tail -n 1 "$out/gluon-tests.log"; grep -E "^(FAILED|ERROR)" "$out/gluon-tests.log"
  grep -E "speed|Error" "$out/gluon.log"; tail -n 8 "$out/attention.log"
  ;;
8)
  # NOTES 37: the Gluon GPU tests (per-token key descales by TMA, 16-byte box starts), then
  # stage 7 (short calls' host time and GPU gaps, Flux 1024 rounds).
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run gluon-tests 240 python -m pytest -q tests/test_gpu.py -k gluon
  tail -n 1 "$out/gluon-tests.log"; grep -E "^(FAILED|ERROR)" "$out/gluon-tests.log"
  ;&
7)
  # Short calls (NOTES 34): where a 24x2048 / 24x4608 call's time goes (host, wall, each kernel).
  # Then FLUX 1024x1024 (4608 tokens; below the old 8192-key crossover): does FP8 pay inside the
  # model, where the host's time per attention call can hide under the GPU's? Rotated rounds
  # (NOTES 20); it did (NOTES 38).
  run call-cost-2048 40 python benchmarks/call_cost.py --shape 24x2048x2048x128
  run call-cost-4608 40 python benchmarks/call_cost.py --shape 24x4608x4608x128
  cat "$out/call-cost-2048.log" "$out/call-cost-4608.log"
  run flux-1024-all-keys 170 python benchmarks/pipeline.py --configs flux-dev-1024 --repeats 5 --rounds 3 \
    --variants _native_cudnn,fa3-bf16,accel-speed,speed-all-keys,speed-all-keys-triton --json "$out/flux-1024-all-keys.json"
  tail -n 12 "$out/flux-1024-all-keys.log"
  ;;
9)
  # Run 6's tables: Flux 1024x1024 under every preset now that per-head FP8 starts at 4096 keys
  # (CUDA_MIN_KEYS), rotated rounds; Wan-14B 480p end to end with the Gluon kernel; every
  # reference row whole-call and kernel only.
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run flux-1024-presets 130 python benchmarks/pipeline.py --configs flux-dev-1024 --repeats 5 --rounds 3 \
    --variants _native_cudnn,fa3-bf16,accel-speed,accel-balanced,accel-quality --json "$out/flux-1024-presets.json"
  run pipeline-14b-480p 200 python benchmarks/pipeline.py --configs wan-14b-480p --repeats 2 \
    --variants _native_cudnn,fa3-bf16,torchao-style,accel-speed,accel-balanced,accel-quality \
    --json "$out/pipeline-14b-480p.json"
  run attention 240 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/attention.json" --methods \
    sdpa-cudnn-bf16,fa3-bf16,accel-triton-head,accel-triton-token,accel-fa3-head,kernel-only-token,fa3-fp8-kernel-only
  tail -n 6 "$out/flux-1024-presets.log"; tail -n 8 "$out/pipeline-14b-480p.log"; tail -n 16 "$out/attention.log"
  ;;
10)
  # Session 8 (NOTES 40): the quantization passes' GPU time per kernel and share of copy
  # bandwidth (transposed casts storing whole columns, Wan's norm + RoPE with one read per token);
  # whole calls against cuDNN, FA3 bf16 and our quantization + FA3 FP8; the whole GPU test suite.
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  # before/after in one process: a session-only script (old kernels copied beside the new), not kept
  if [ -f benchmarks/_ab_quantize.py ]; then run ab-quantize 90 python benchmarks/_ab_quantize.py; fi
  run quantize 60 python benchmarks/tune_quantize.py --current --json "$out/quantize.json"
  run attention 110 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/attention.json" \
    --shapes 24x4608x4608x128,24x8192x8192x128,12x32760x32760x128,12x32760x512x128 \
    --methods sdpa-cudnn-bf16,fa3-bf16,accel-triton-head,accel-triton-token,accel-fa3-head
  run gpu-tests 270 python -m pytest -q --durations=10 tests/test_gpu.py tests/test_triton_kernels.py \
    tests/test_processors.py tests/test_compile.py
  grep AB "$out/ab-quantize.log"; grep -E "CURRENT|norm_rope" "$out/quantize.log"; tail -n 8 "$out/attention.log"
  grep -E "^(FAILED|ERROR)" "$out/gpu-tests.log"; tail -n 1 "$out/gpu-tests.log"
  ;;
11)
  # Session 8 (NOTES 40): every quantization pass's tiles (statistics, finalize, cast) and the
  # fused norm + RoPE kernel's (tokens x warps), GPU time per kernel; then the part of the GPU
  # suite that stage 10's time limit cut.
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run tune-quantize 250 python benchmarks/tune_quantize.py --json "$out/tune-quantize.json"
  run gpu-tests-rest 150 python -m pytest -q tests/test_processors.py tests/test_compile.py
  grep -E "BEST|norm_rope" "$out/tune-quantize.log"
  grep -E "^(FAILED|ERROR)" "$out/gpu-tests-rest.log"; tail -n 1 "$out/gpu-tests-rest.log"
  ;;
12)
  # Session 8's final tables (NOTES 40-42): the tests of what changed (quantization tiles, norm +
  # RoPE paths, TMA descriptors built once per geometry); quantization before and after (a
  # session-only script against the session's start); issue 3's whole-call table; the fused
  # kernel's head groups (as of 754b117; removed since); a short call's host time.
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  # (run at commit 754b117, which also had the exp2-on-FMA option, its tests and a D = 64 run of
  # benchmarks/gluon_attention.py --exp2-fma: measured slower, removed; NOTES 40)
  run tests 120 python -m pytest -q -x tests/test_triton_kernels.py tests/test_gpu.py -k \
    "norm_rope or quantize or gluon_kernel_small"
  if [ -f benchmarks/_ab_quantize.py ]; then run ab-quantize 60 python benchmarks/_ab_quantize.py; fi
  run attention 200 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/attention.json" \
    --shapes 24x2048x2048x128,24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,40x75600x75600x128,12x32760x512x128 \
    --methods sdpa-cudnn-bf16,fa3-bf16,accel-triton-head,accel-triton-token,accel-fa3-head,kernel-only-head,kernel-only-token,fa3-fp8-kernel-only
  run norm-rope-tiles 70 python benchmarks/tune_quantize.py --norm-rope-only --json "$out/norm-rope-tiles.json"
  run call-cost 30 python benchmarks/call_cost.py --shape 24x2048x2048x128 --calls 100
  tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"; grep AB "$out/ab-quantize.log"
  tail -n 10 "$out/attention.log"
  grep -E "host" "$out/call-cost.log"; grep -E "smooth=" "$out/norm-rope-tiles.log"
  ;;
13)
  # Session 8's last call: Wan-1.3B 480p end to end (the fused norm + RoPE kernel is a fifth of
  # its attention time), rotated rounds; the GPU tests stage 12's time limit cut.
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run pipeline-1.3b 130 python benchmarks/pipeline.py --configs wan-1.3b-480p --repeats 3 --rounds 2 \
    --variants _native_cudnn,fa3-bf16,torchao-style,accel-speed,accel-balanced,accel-quality \
    --json "$out/pipeline-1.3b.json"
  run tests 100 python -m pytest -q tests/test_gpu.py tests/test_triton_kernels.py -k \
    "norm_rope or (gluon_kernel_small and gaussian)"
  tail -n 10 "$out/pipeline-1.3b.log"; tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
  ;;
14)
  # Session 9 (NOTES 43), as run at commits c3f14cd and 09f2a85 (its methods accel-*-q-passes
  # and accel-token-gluon-all-keys have been renamed or removed since): Q quantized in the Gluon
  # kernel against Q's own two passes: GPU tests, kernel level, whole calls, the per-token crossover.
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run tests 120 python -m pytest -q -x tests/test_gpu.py tests/test_triton_kernels.py -k \
    "gluon or query_quantized or both_query"
  run gluon 150 python benchmarks/gluon_attention.py --json "$out/gluon.json" \
    --shapes 24x4608x4608x128,24x8192x8192x128,12x32760x32760x128,12x32760x512x128,12x32760x2048x128
  run attention 200 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/attention.json" \
    --shapes 24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,40x75600x75600x128,12x32760x512x128 \
    --methods sdpa-cudnn-bf16,fa3-bf16,accel-triton-head,accel-head-q-passes,accel-triton-token,accel-token-q-passes,accel-fa3-head
  run attention-reversed 60 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/attention-reversed.json" \
    --shapes 24x4608x4608x128,24x8192x8192x128,12x32760x512x128 \
    --methods accel-fa3-head,accel-token-q-passes,accel-triton-token,accel-head-q-passes,accel-triton-head,fa3-bf16,sdpa-cudnn-bf16
  run crossover 60 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/crossover.json" \
    --shapes 12x32760x512x128,12x32760x1024x128,12x32760x2048x128,12x32760x4096x128 \
    --methods sdpa-cudnn-bf16,accel-triton-token,accel-token-gluon-all-keys,accel-triton-head
  tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
  grep -E "speed|q-passes" "$out/gluon.log"; tail -n 9 "$out/attention.log"; tail -n 5 "$out/attention-reversed.log"
  tail -n 6 "$out/crossover.log"
  ;;
15)
  # Session 9's final state (NOTES 43): Q quantized in the Gluon kernel up to 2048 keys, the
  # Gluon kernel per token from 512 keys. Its tests; issue 3's whole-call rows with Q's passes
  # forced for the A/B; the per-token crossover against the Triton kernel.
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run tests 250 python -m pytest -q tests/test_gpu.py tests/test_triton_kernels.py tests/test_compile.py -k \
    "gluon or query or dispatch or compile"
  run attention 120 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/attention.json" \
    --shapes 24x2048x2048x128,24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,40x75600x75600x128,12x32760x512x128,12x32760x2048x128 \
    --methods sdpa-cudnn-bf16,fa3-bf16,accel-triton-head,accel-head-q-passes,accel-triton-token,accel-token-q-passes,accel-fa3-head
  run crossover 60 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/crossover.json" \
    --shapes 12x32760x512x128,12x32760x1024x128,12x32760x2048x128,12x32760x4096x128 \
    --methods sdpa-cudnn-bf16,accel-triton-token,accel-token-triton-kernel,accel-token-q-passes,accel-triton-head,accel-head-q-passes
  tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
  tail -n 10 "$out/attention.log"; tail -n 6 "$out/crossover.log"
  ;;
16)
  # Session 9's last call: stage 15's failing tests, fixed (their own bugs: a NaN row compared
  # with itself, an LSE tolerance below the FP8 tensor cores' accumulation); cross-attention's
  # GPU time against cuDNN's (lone calls are host-bound there, NOTES 38).
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run tests 100 python -m pytest -q tests/test_gpu.py tests/test_triton_kernels.py -k \
    "query_paths or keys_per_head or matches_triton"
  run call-cost 90 python benchmarks/call_cost.py --shape 12x32760x512x128 --calls 100 --cudnn
  run call-cost-1024 60 python benchmarks/call_cost.py --shape 12x32760x1024x128 --calls 100 --cudnn
  tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
  grep -E "busy" "$out/call-cost.log" "$out/call-cost-1024.log"
  ;;
17)
  # Session 10 (NOTES 44): the Gluon kernel at D = 64 with three consumer warpgroups (192-row
  # tiles, FA3's at D <= 64) against two, FA3 FP8 and the Triton kernel; its tests and session
  # 9's fixed ones; whole calls at D = 64 through either kernel (run as accel-*-gluon-d64 before
  # D = 64 was dispatched to the Gluon kernel; the A/B is now accel-*-triton-d64).
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run tests 150 python -m pytest -q tests/test_gpu.py tests/test_triton_kernels.py -k \
    "gluon or query or keys_per_head"
  run gluon64 220 python benchmarks/gluon_attention.py --json "$out/gluon64.json" \
    --shapes 24x4608x4608x64,24x8192x8192x64,24x16384x16384x64,12x32760x32760x64,40x75600x75600x64
  run attention64 130 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/attention64.json" \
    --shapes 24x4608x4608x64,24x8192x8192x64,24x16384x16384x64,12x32760x32760x64,40x75600x75600x64,12x32760x512x64 \
    --methods sdpa-cudnn-bf16,fa3-bf16,accel-triton-head,accel-head-triton-d64,accel-triton-token,accel-token-triton-d64,accel-fa3-head
  tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
  grep -E "speed" "$out/gluon64.log"; tail -n 8 "$out/attention64.log"
  ;;
18)
  # Session 10 (NOTES 45): 192-key blocks (128 + 64 sub-blocks) against the product's 128, per
  # head at D = 128 (benchmarks/gluon_wide_probe.py, removed after: commit 08896d5 has it); then
  # the Gluon tests with D = 64 dispatched.
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run wide 150 python benchmarks/gluon_wide_probe.py
  run tests 330 python -m pytest -q tests/test_gpu.py tests/test_triton_kernels.py -k \
    "gluon or query or keys_per_head or dispatch"
  grep -E "speed|NaN rows [1-9]" "$out/wide.log"; tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
  ;;
19)
  # Session 10: the GPU suite's tests stage 18 left out (D = 64 now takes the Gluon kernel
  # through every path: real shapes, processors, torch.compile).
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee -a "$summary"
  run tests 330 python -m pytest -q --durations=5 tests/test_gpu.py tests/test_triton_kernels.py \
    tests/test_processors.py tests/test_compile.py -k "not (gluon or query or keys_per_head or dispatch)"
  tail -n 8 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
  ;;
20)
  # Session 10's last call: whole calls with Q quantized in the kernel at every key count
  # against the default (Q's passes beyond 2048 keys), D = 64 and 128 (NOTES 44's lead).
  run q-in-kernel 150 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/q-in-kernel.json" \
    --shapes 24x4608x4608x64,24x8192x8192x64,24x16384x16384x64,24x4608x4608x128,24x8192x8192x128 \
    --methods accel-triton-head,accel-head-q-in-kernel,accel-triton-token,accel-token-q-in-kernel
  tail -n 8 "$out/q-in-kernel.log"
  ;;
21)
  # Session 11: hardware counters of the Gluon kernel (per head, per token) and FA3's FP8 kernel,
  # one launch each, to see what holds each back (issue slots, tensor pipe, stalls). As run at
  # 7dc22c6 its kernel filter missed FA3 (stage 22 profiled it); profile() now matches it.
  profile ncu-d128 200 24x8192x8192x128,12x32760x32760x128 gluon-head,gluon-token,fa3-fp8
  profile ncu-d64 120 24x8192x8192x64 gluon-head,gluon-token,fa3-fp8
  ;;
22)
  # Session 11 (NOTES 46): the producer loading K a block ahead of V^T, per-token key descales read
  # before Q K^T, a three-stage ring (the variant rows of commit ea605d8); kernel only against FA3
  # FP8, D = 128 and 64. Then FA3's profile beside ours.
  s128=24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,40x75600x75600x128
  run gluon-d128 200 python benchmarks/gluon_attention.py --shapes "$s128" --json "$out/gluon-d128.json"
  run gluon-d64 150 python benchmarks/gluon_attention.py --shapes "${s128//x128/x64}" --json "$out/gluon-d64.json"
  profile ncu-fa3 120 24x8192x8192x128,24x8192x8192x64 gluon-head,gluon-token,fa3-fp8
  grep -E "speed:" "$out/gluon-d128.log" "$out/gluon-d64.log" | cut -d: -f2- >> "$summary"
  ;;
23)
  # Session 11 (NOTES 46): row max and row sum in short chains (SHALLOW_REDUCTIONS), per-token
  # key descales read before Q K^T (PRELOAD_KEY_SCALES, D = 128), the producer's order back to
  # K_j, V^T_j (the variant rows of commit d608aba); kernel only against FA3 FP8, D = 128 and 64.
  s128=24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,40x75600x75600x128
  run gluon-d128 200 python benchmarks/gluon_attention.py --shapes "$s128" --json "$out/gluon-d128.json"
  run gluon-d64 170 python benchmarks/gluon_attention.py --shapes "${s128//x128/x64}" --json "$out/gluon-d64.json"
  grep -E "speed:" "$out/gluon-d128.log" "$out/gluon-d64.log" | cut -d: -f2- >> "$summary"
  grep -E "NaN rows [1-9]" "$out/gluon-d128.log" "$out/gluon-d64.log"
  ;;
24)
  # Session 11's last call: the product as kept (producer K_j, V^T_j; one reduction chain per
  # row; key descales read before Q K^T per token at D = 128) against the descales read after,
  # kernel only, D = 128; then the Gluon tests.
  run gluon-final 100 python benchmarks/gluon_attention.py --json "$out/gluon-final.json" \
    --shapes 24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128
  run tests 280 python -m pytest -q tests/test_gpu.py tests/test_triton_kernels.py -k \
    "gluon or query or keys_per_head or dispatch"
  grep -E "speed:" "$out/gluon-final.log" | cut -d: -f2- >> "$summary"
  grep -E "NaN rows [1-9]" "$out/gluon-final.log"; tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
  ;;
25)
  # NOTES 46's lead (run in session 12, NOTES 47; the probe and its wide-head kernel are in commit
  # f1df7db): why 192-key blocks (gluon_wide_probe.py) run at FA3's speed at
  # 12x32760 and at 0.7x of the product at 24x8192: both kernels under Nsight Compute at both
  # shapes, then the probe's timing table at them.
  profile ncu-wide 200 24x8192x8192x128,12x32760x32760x128 gluon-head,wide-head
  run wide 120 python benchmarks/gluon_wide_probe.py --shapes 24x8192x8192x128,24x16384x16384x128,12x32760x32760x128
  grep -E "speed" "$out/wide.log" >> "$summary"
  ;;
26)
  # Session 12: 192-key blocks in the product (D = 128 per head, NOTES 47): kernel only against
  # 128-key blocks and FA3 FP8 at the five reference shapes, then the Gluon tests.
  run gluon-wide 200 python benchmarks/gluon_attention.py --json "$out/gluon-wide.json" --shapes \
    24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,40x75600x75600x128
  run tests 280 python -m pytest -q tests/test_gpu.py tests/test_triton_kernels.py -k \
    "gluon or query or keys_per_head or dispatch"
  grep -E "speed:" "$out/gluon-wide.log" | cut -d: -f2- | cut -c1-150 >> "$summary"
  grep -E "NaN rows [1-9]" "$out/gluon-wide.log"; tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
  ;;
27)
  # Session 12: whole calls from bf16 with 192-key blocks against 128-key ones, smooth-V
  # (`balanced`) too, beside cuDNN, FA3 bf16 and torchao-style (our per-head quantization + FA3 FP8).
  run whole 420 python benchmarks/attention.py --warmup 50 --rep 200 --json "$out/whole.json" --shapes \
    24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,40x75600x75600x128,12x32760x512x128 \
    --methods sdpa-cudnn-bf16,fa3-bf16,accel-fa3-head,accel-triton-head,accel-head-128keys,accel-head-smooth-v,accel-head-smooth-v-128keys,accel-triton-token
  tail -n 24 "$out/whole.log"
  ;;
28)
  # Session 12: smooth-V's mean from shared or global memory (stage 27: narrow blocks with
  # smooth-V ran 16% slower than without), wide and narrow blocks, per head and per token.
  run gluon-vmean 400 python benchmarks/gluon_attention.py --json "$out/gluon-vmean.json" --shapes \
    24x8192x8192x128,12x32760x32760x128,40x75600x75600x128,24x8192x8192x64
  grep -E "speed:" "$out/gluon-vmean.log" | cut -d: -f2- | cut -c1-220 >> "$summary"
  grep -E "NaN rows [1-9]" "$out/gluon-vmean.log"
  ;;
29)
  # Session 12: where a whole per-head call's time goes, ours against torchao-style (our
  # quantization + FA3's FP8 kernel): stage 27 had ours 0.93x at 24x8192 with the kernel 1.01x.
  for shape in 24x8192x8192x128 24x16384x16384x128; do
    for backend in triton fa3; do
      run call-cost 60 python benchmarks/call_cost.py --shape $shape --granularity head --backend $backend
    done
  done
  grep -E "ms/call|^    " "$out/call-cost.log" | grep -v "host, self" | cut -c1-120 | head -n 60
  ;;
30)
  # Session 13: why calls with few keys run far below the tensor cores (12x32760 against 512 keys:
  # ~570 TFLOP/s, the cuDNN bf16 call's speed): the Gluon kernel (192- and 128-key blocks) and
  # FA3 FP8 under Nsight Compute; a three-slot ring; a short call's kernels against cuDNN's GPU
  # time; D = 64 and 24x8192 whole calls against torchao-style (not rerun since run 8 / run 11).
  profile ncu-cross 150 12x32760x512x128 gluon-head,gluon-head-128keys,fa3-fp8
  grep -E "Throughput|Duration|Busy|Hit Rate|Pipe|Eligible|Active Warps" "$out/ncu-cross-details.txt" | cut -c1-110 > "$out/ncu-cross-brief.txt"
  # (the -3stages rows: a three-slot ring, gone with NOTES 48)
  run gluon-short 150 python benchmarks/gluon_attention.py --json "$out/gluon-short.json" \
    --kernels "128keys|3stages|qin" --shapes 12x32760x512x128,12x32760x2048x128,24x2048x2048x128,24x8192x8192x128
  run call-cost 80 python benchmarks/call_cost.py --shape 12x32760x512x128 --granularity head --calls 100 --cudnn
  run call-cost 60 python benchmarks/call_cost.py --shape 24x2048x2048x128 --granularity head --calls 100 --cudnn
  run whole 200 python benchmarks/attention.py --warmup 50 --rep 200 --json "$out/whole.json" --shapes \
    24x8192x8192x128,24x8192x8192x64,24x16384x16384x64,12x32760x32760x64,40x75600x75600x64 \
    --methods sdpa-cudnn-bf16,accel-fa3-head,accel-triton-head,accel-triton-token
  grep -E "speed:" "$out/gluon-short.log" | cut -d: -f2- | cut -c1-220 >> "$summary"
  grep -E "NaN rows [1-9]" "$out/gluon-short.log"
  grep -E "busy|ms/call" "$out/call-cost.log" | cut -c1-120 >> "$summary"
  tail -n 9 "$out/whole.log"
  ;;
31)
  # Session 13 (NOTES 48): the output stored by TMA from shared memory (asynchronous) against
  # plain stores from registers; 128-key blocks where 192-key ones would pad many keys; the
  # Gluon tests (the new output-path test among them).
  gluon_tests_and_rows "keys|plain" 300 240
  ;;
32)
  # Session 13: issue 3's whole-call rows (D = 128 per head and per token, cross-attention)
  # beside cuDNN and torchao-style, and the short calls' GPU time against cuDNN's.
  run whole 330 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/whole.json" --shapes \
    24x4608x4608x128,24x8192x8192x128,24x16384x16384x128,12x32760x32760x128,40x75600x75600x128,12x32760x512x128 \
    --methods sdpa-cudnn-bf16,fa3-bf16,accel-fa3-head,accel-triton-head,accel-triton-token
  run call-cost 60 python benchmarks/call_cost.py --shape 12x32760x512x128 --granularity head --calls 100 --cudnn
  run call-cost 60 python benchmarks/call_cost.py --shape 24x2048x2048x128 --granularity head --calls 100 --cudnn
  grep -E "busy|ms/call|^      0" "$out/call-cost.log" | cut -c1-120 >> "$summary"
  tail -n 9 "$out/whole.log"
  ;;
33)
  # Session 14: the rest of stage 1's GPU suite (processors, compile, Triton kernels, numerics),
  # everything stage 31's selection leaves out, so that the two calls cover the whole suite.
  run suite 540 python -m pytest -q --durations=10 tests/test_gpu.py tests/test_triton_kernels.py \
    tests/test_processors.py tests/test_compile.py -k "not (gluon or query or keys_per_head or dispatch)"
  tail -n 14 "$out/suite.log"; grep -E "^(FAILED|ERROR)" "$out/suite.log"
  ;;
34)
  # Session 14 (NOTES 49): stage 31 from the committed kernel (session 13's logs were lost), with
  # the key-group probe's rows (K's descales per 32 / 64 keys, one factor per group) and its test.
  gluon_tests_and_rows "keys|plain|kgroup" 270 270
  grep -E "kgroup" "$out/gluon-out.log" | cut -c1-110 | head -n 12 >> "$summary"
  ;;
35)
  # Sessions 14-16, when one device call is all a session gets: the output-path, key-group,
  # CUDA-graphs and one-launch quantization tests, the kernel-only A/B rows (TMA stores, key
  # blocks, key groups) at three shapes, issue 3's whole calls at D = 128 (with torchao's and
  # SageAttention where .baselines is carried), cross-attention's GPU time against cuDNN's with
  # K and V quantized in one launch and in three.
  [ -f .baselines/setup.sh ] && source .baselines/setup.sh
  run tests 130 python -m pytest -q tests/test_gpu.py tests/test_compile.py tests/test_triton_kernels.py -k \
    "output_paths or key_groups or gluon_kernel_matches or cuda_graphs or one_launch"
  run gluon-out 130 python benchmarks/gluon_attention.py --json "$out/gluon-out.json" --kernels "keys|plain|kgroup" \
    --shapes 12x32760x512x128,24x8192x8192x128,12x32760x32760x128
  run whole 190 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/whole.json" --shapes \
    24x8192x8192x128,12x32760x32760x128,12x32760x512x128 \
    --methods sdpa-cudnn-bf16,fa3-bf16,accel-fa3-head,accel-triton-head,accel-triton-token,torchao-fp8,sageattn-int8
  for n in 512 0; do
    run call-cost 45 python benchmarks/call_cost.py --shape 12x32760x512x128 --granularity head --calls 100 \
      --one-launch-tokens $n $([ $n = 0 ] && echo --cudnn)
  done
  grep -E "busy|ms/call|_kernel" "$out/call-cost.log" | cut -c1-120 >> "$summary"
  grep -E "speed:" "$out/gluon-out.log" | cut -d: -f2- | cut -c1-330 >> "$summary"
  grep -E "kgroup" "$out/gluon-out.log" | cut -c1-110 | head -n 12 >> "$summary"
  grep -E "NaN rows [1-9]" "$out/gluon-out.log"; tail -n 1 "$out/tests.log"; grep -E "^(FAILED|ERROR)" "$out/tests.log"
  tail -n 7 "$out/whole.log"
  ;;
36)
  # Session 15: the baselines users compare us with, installed from .baselines (carry it; made by
  # benchmarks/baseline_wheels.sh): torchao's own apply_low_precision_attention (its quantization
  # kernels + FA3 FP8 through torch's quantized SDPA op) and pip's SageAttention (1.0.x, Triton,
  # INT8 Q K^T), whole calls beside ours; torchao inside Flux 1024x1024 beside our presets.
  source .baselines/setup.sh || { echo "no .baselines: run benchmarks/baseline_wheels.sh, carry .baselines"; exit 1; }
  python -c "import torchao, sageattention, accel.benchmarking.baselines as b; print('torchao', torchao.__version__, b.torchao_reason())" \
    2>&1 | tail -n 1 | tee -a "$summary"
  run baselines 330 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/baselines.json" --shapes \
    24x4608x4608x128,24x8192x8192x128,12x32760x32760x128,12x32760x512x128,24x8192x8192x64 --methods \
    sdpa-cudnn-bf16,fa3-bf16,accel-fa3-head,torchao-fp8,sageattn-int8,accel-triton-head,accel-triton-token
  run flux-1024-torchao 180 python benchmarks/pipeline.py --configs flux-dev-1024 --repeats 5 --rounds 3 \
    --variants _native_cudnn,torchao-style,torchao,sageattn,accel-speed,accel-balanced --json "$out/flux-1024-torchao.json"
  tail -n 8 "$out/baselines.log"; tail -n 7 "$out/flux-1024-torchao.log"
  ;;
37)
  # Session 16, when a session gets two calls (34 first): issue 3's whole calls beside torchao's
  # own FP8 attention and SageAttention, cross-attention's GPU time against cuDNN's, and the
  # CUDA-graphs compile test (new in session 15, never run on a GPU).
  source .baselines/setup.sh || { echo "no .baselines: run benchmarks/baseline_wheels.sh, carry .baselines"; exit 1; }
  run cuda-graphs 100 python -m pytest -q tests/test_compile.py -k cuda_graphs
  run baselines 290 python benchmarks/attention.py --warmup 25 --rep 100 --json "$out/baselines.json" --shapes \
    24x4608x4608x128,24x8192x8192x128,12x32760x32760x128,12x32760x512x128,24x8192x8192x64 --methods \
    sdpa-cudnn-bf16,fa3-bf16,accel-fa3-head,torchao-fp8,sageattn-int8,accel-triton-head,accel-triton-token
  for n in 512 0; do  # K and V quantized in one launch, then in three (NOTES 51)
    run call-cost 45 python benchmarks/call_cost.py --shape 12x32760x512x128 --granularity head --calls 100 \
      --one-launch-tokens $n $([ $n = 0 ] && echo --cudnn)
  done
  grep -E "busy|ms/call|_kernel" "$out/call-cost.log" | cut -c1-120 >> "$summary"
  tail -n 1 "$out/cuda-graphs.log"; grep -E "^(FAILED|ERROR)" "$out/cuda-graphs.log"
  tail -n 8 "$out/baselines.log"
  ;;
*)
  echo "unknown stage $stage: 1 to 37" >&2; exit 2 ;;
esac
cat "$summary"
