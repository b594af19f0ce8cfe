#!/usr/bin/env bash
# Every GPU check of mp-deploy, in one run on a lent H100/H200 (torch 2.11 + CUDA 13, triton 3.6, no TensorRT,
# no diffusers, no network). Prepare on the dev machine, from the repo root:
#   bash ../shared/device/fetch_wheels.sh        # diffusers wheel -> .whl/
#   bash tools/fetch_debs.sh                     # libpng/libjpeg/nlohmann-json for the C++ build -> .debs/
# then run it through the device tool with carry [".whl", ".debs"] and a timeout of 10 minutes:
#   bash tools/gpu_check.sh
# STAGES picks the stages (default "kernel_bench kernel_tests gpu_tests aoti_kernels tiny cpp", about 8 minutes,
# in priority order: a run cut off at its time limit loses the last ones, and still returns what it wrote):
#   kernel_bench   benchmarks/kernels.py (~2 min; first its single-launch check, under a 1-minute limit)
#   kernel_tests   tests/test_kernels.py on CUDA (~2 min)
#   gpu_tests      the other CUDA tests (eager fp16 parity of the bundled defaults)
#   kernel_aoti    the kernels' AOTInductor test (~2 min)     aoti_kernels  tools/aoti_kernels.py (~3 min)
#   full           full-size depth -> .pt2 (~5 min, in the background from the start) + latency.py beside it
#   tiny           the bundled depth demo -> CUDA fp16 .pt2 and its parity gate (~3 min, in the background)
#   cpp            the C++ build (in the background), then tests/test_cpp.py -m gpu: mp_infer against the
#                  Python runtime on a CUDA package the test builds
#   train          benchmarks/train_throughput.py's GPU set: SD-1.5 depth 480x480 bf16 + checkpointing at batch
#                  2 and 3 (peak memory must stay under 24 GB at 3), without checkpointing, seg 512x512, pose
#                  256x192 (~4 min)
# A 15-minute device budget (machine start included) holds the default call; the next one, in another lease
# if need be: STAGES="full train" (about 10 minutes).
# Each stage has its own time limit. The builds run in the background from the start while the kernel
# checks run in the foreground. Loads of CUDA packages run with tools/segv_backtrace.c preloaded, so a
# crash prints its native stack.
# Results land in $OUT: summary.txt, kernels-*.json, aoti_kernels.json, latency JSON/CSV/PNG and logs.tar.gz
# (every log and the small diagnostic packages, refreshed after each stage so that a cut-off run still returns
# them): 7 files of the 8 that come back, so send the console to /dev/null or one file, not more.
# What a run established goes into docs/performance.md (facts and numbers) and benchmarks/results/ (the
# curated JSON/CSV/PNG); its console logs are not kept in the repository.
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
LOGS=/tmp/logs
mkdir -p "$OUT" "$LOGS"
export PYTHONUNBUFFERED=1
T0=$SECONDS
STAGES=${STAGES:-kernel_bench kernel_tests gpu_tests aoti_kernels tiny cpp}
want() { [[ " $STAGES " == *" $1 "* ]]; }
stage() { echo "=== [$((SECONDS - T0)) s] $*" | tee -a "$OUT/summary.txt"; }
save_logs() { tar -czf "$OUT/logs.tar.gz" -C /tmp logs 2> /dev/null; }
FAILED=""
finish() {  # finish NAME RC: the log's tail and exit status into the summary; a failure makes the script fail
  tail -n 30 "$LOGS/$1.log" >> "$OUT/summary.txt"
  echo "--- $1 exit $2 after $((SECONDS - T0)) s" | tee -a "$OUT/summary.txt"
  [ "$2" -eq 0 ] || FAILED="$FAILED $1"
  save_logs
}
run() {  # run LIMIT NAME CMD...: in the foreground, logged to $LOGS/NAME.log
  local limit=$1 name=$2; shift 2
  stage "$name: $*"
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  finish "$name" $rc
  return $rc
}

stage "setup"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv >> "$OUT/summary.txt" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
# the package maps kernels/ and export/ to mp_deploy.kernels / mp_deploy.export; without an install, link them
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > "$LOGS/install.log" 2>&1 \
  || { ln -sfn ../kernels mp_deploy/kernels; ln -sfn ../export mp_deploy/export; export PYTHONPATH=/tmp/site:$PWD; }
python3 -c "import torch, triton, mp_deploy.kernels, mp_deploy.export; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" >> "$OUT/summary.txt" 2>&1
ART=/tmp/artifacts
# crash reports with the native stack (faulthandler prints only the Python frames)
gcc -shared -fPIC -O1 -o /tmp/segv_backtrace.so tools/segv_backtrace.c >> "$OUT/summary.txt" 2>&1 \
  && NATIVE_STACK="env LD_PRELOAD=/tmp/segv_backtrace.so" || NATIVE_STACK=""

# background 1 (export issue): the full SD-1.5-size depth model (seeded weights) -> AOTInductor CUDA fp16
# package; build_engine checks parity against eager fp32 (TF32 off) and times the package. Kernels off (the
# default): their own AOTInductor check is stage 4.
if want full; then
  stage "build_engine (background): full-size depth -> AOTInductor CUDA fp16"
  timeout 370 python3 export/build_engine.py --task depth --model-size sd15 --backend aoti --precision fp16 \
    --height 480 --width 480 --output "$ART" --runs 20 > "$LOGS/build_engine.log" 2>&1 &
  BUILD_PID=$!
fi
if want tiny; then  # the bundled depth demo at its 128 x 128 window: a CUDA package in about a minute
  stage "build_engine (background): tiny depth -> AOTInductor CUDA fp16"
  timeout 240 python3 export/build_engine.py --task depth --backend aoti --precision fp16 --output "$ART" \
    > "$LOGS/build_engine_tiny.log" 2>&1 &
  TINY_PID=$!
fi

# background 2 (C++ issue): mp_infer against this machine's libtorch; libpng/libjpeg/json from .debs
if want cpp && ls .debs/*.deb > /dev/null 2>&1; then
  # not on LD_LIBRARY_PATH: Python must keep its own libraries; mp_infer finds these by its build RPATH
  mkdir -p /tmp/debroot && for f in .debs/*.deb; do dpkg -x "$f" /tmp/debroot; done
  export CMAKE_PREFIX_PATH=/tmp/debroot/usr  # read by CMake here and when tests/test_cpp.py reconfigures
fi
want cpp && ( timeout 300 nice -n 19 cmake -S . -B /tmp/cppbuild -G Ninja \
    -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)')" \
  && timeout 300 nice -n 19 cmake --build /tmp/cppbuild -j4 ) > "$LOGS/cpp_build.log" 2>&1 &
CPP_PID=$!

# 1. kernel microbenchmarks (GPU time from CUDA-graph replays, so the compiles beside them do not count)
# the single launch waits at a grid barrier: checked alone first, so that a barrier which never opens costs
# this minute, not the sweep (which then skips it); its failure still fails the script (FAILED)
if want kernel_bench; then
  run 60 single_launch python3 benchmarks/kernels.py --check-single-launch && SINGLE="" || SINGLE="--no-single-launch"
  run 200 kernel_bench python3 benchmarks/kernels.py $SINGLE --output "$OUT"
fi

# 2. kernel tests on CUDA: every kernel against its reference, the ops, torch's mutation analysis
want kernel_tests && run 180 kernel_tests python3 -m pytest tests/test_kernels.py -q -p no:cacheprovider \
  -o addopts="" -k "not aoti_package${SINGLE:+ and not single}"

# 2b. the other CUDA tests: the bundled defaults' eager fp16 against the fp16 parity rule
want gpu_tests && run 90 gpu_tests python3 -m pytest tests/test_export.py -q -p no:cacheprovider -o addopts="" \
  -m gpu -s

# 3. an AOTInductor CUDA package with the Triton kernels inside, loaded and compared with eager in a fresh
#    process (a crash there cannot take the other checks with it)
want kernel_aoti && run 150 kernel_aoti $NATIVE_STACK python3 -m pytest tests/test_kernels.py -q -p no:cacheprovider \
  -o addopts="" -m gpu -k "aoti_package"

# 4. which kernel features such packages survive: small variants built in parallel, each loaded apart
want aoti_kernels && run 200 aoti_kernels $NATIVE_STACK python3 tools/aoti_kernels.py --timeout 150 \
  --out "$OUT/aoti_kernels.json" --keep-dir "$LOGS/aoti_packages"

if want full; then
  stage "waiting for build_engine"
  wait "$BUILD_PID"; finish build_engine $?
  # 5. latency, same run: eager fp16, its CUDA graph and the package, batch 1, per stage
  run 100 latency python3 benchmarks/latency.py --task depth --model-size sd15 --height 480 --width 480 \
    --batches 1 --backends eager-fp16,cudagraph-fp16,aoti --kernels off --runs 20 --artifacts "$ART" --output "$OUT"
fi
if want tiny; then
  stage "waiting for the tiny build"
  wait "$TINY_PID"; finish build_engine_tiny $?
fi

# 5b. training steps of the full-size models: images/s and peak memory (CUDA events, torch's peak allocation)
want train && run 300 train_throughput python3 benchmarks/train_throughput.py --output "$LOGS/train"  # in logs.tar.gz

# 6. C++: mp_infer (built in the background) against the Python runtime on a CUDA package the test builds
if want cpp; then
  stage "waiting for the C++ build"; wait "$CPP_PID"; finish cpp_build $?
  run 240 cpp_parity env MP_CPP_BUILD_DIR=/tmp/cppbuild $NATIVE_STACK python3 -m pytest tests/test_cpp.py -q \
    -p no:cacheprovider -o addopts="" -rs -m gpu
fi
stage "done${FAILED:+: FAILED:$FAILED}"
save_logs
[ -z "$FAILED" ]  # the script's exit status: 0 only when every check passed
