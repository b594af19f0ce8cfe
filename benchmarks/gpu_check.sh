#!/usr/bin/env bash
# Every GPU check of mp-deploy, in one run on a lent H100/H200 (torch 2.11 + CUDA 13, triton 3.6, no TensorRT,
# no diffusers, no network). Prepare on the dev machine, from the repo root:
#   bash ../shared/device/fetch_wheels.sh        # diffusers wheel -> .whl/
#   bash benchmarks/fetch_debs.sh                # libpng/libjpeg/nlohmann-json headers for the C++ build -> .debs/
# then run it through the device tool with carry [".whl", ".debs"] and a timeout of about 9 minutes:
#   bash benchmarks/gpu_check.sh
# Results land in $OUT (at most 8 files come back): summary.txt, kernels-*.json, latency JSON/CSV/PNG,
# and logs.tar.gz (every log). Each stage has its own time limit so one slow stage cannot eat the rest.
set -uo pipefail
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT" /tmp/logs
T0=$SECONDS
stage() { echo "=== [$((SECONDS - T0)) s] $*" | tee -a "$OUT/summary.txt"; }
run() {  # run LIMIT NAME CMD...: log to /tmp/logs/NAME.log, record the exit status in the summary
  local limit=$1 name=$2; shift 2
  stage "$name: $*"
  timeout "$limit" "$@" > "/tmp/logs/$name.log" 2>&1
  local rc=$?
  tail -n 25 "/tmp/logs/$name.log" >> "$OUT/summary.txt"
  echo "--- $name exit $rc after $((SECONDS - T0)) s" | tee -a "$OUT/summary.txt"
}

stage "setup"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >> "$OUT/summary.txt" 2>&1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
# the package maps kernels/ and export/ to mp_deploy.kernels / mp_deploy.export; without an install, link them
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . > /tmp/logs/install.log 2>&1 \
  || { ln -sfn ../kernels mp_deploy/kernels; ln -sfn ../export mp_deploy/export; export PYTHONPATH=/tmp/site:$PWD; }
python3 -c "import torch, triton, mp_deploy.kernels, mp_deploy.export; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())" >> "$OUT/summary.txt" 2>&1
ART=/tmp/artifacts

# C++ build (libtorch of this machine; libpng/libjpeg/nlohmann-json unpacked from .debs) in the background
if ls .debs/*.deb > /dev/null 2>&1; then
  mkdir -p /tmp/debroot && for f in .debs/*.deb; do dpkg -x "$f" /tmp/debroot; done
  export LD_LIBRARY_PATH=/tmp/debroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
fi
( timeout 300 nice cmake -S . -B /tmp/cppbuild -G Ninja \
    -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)');/tmp/debroot/usr" \
  && timeout 300 nice cmake --build /tmp/cppbuild -j8 ) > /tmp/logs/cpp_build.log 2>&1 &
CPP_PID=$!

# 1. kernel microbenchmarks: fused rearrangement and GroupNorm+SiLU vs eager, GB/s against a copy ceiling
run 60 kernel_bench python3 benchmarks/kernels.py --out "$OUT/kernels-$(date +%F).json"

# 2. export: the full SD-1.5-size depth model (seeded weights) -> AOTInductor CUDA fp16 package with the
#    Triton kernels compiled in; parity against eager fp32 (TF32 off) and latency in the closing table
run 300 build_engine python3 export/build_engine.py --task depth --size sd15 --backend aoti --precision fp16 \
  --height 480 --width 480 --out-dir "$ART" --runs 20

# 3. latency of every backend side by side, per stage (NYU window, batch 1 and 8)
run 150 latency python3 benchmarks/latency.py --task depth --model-size sd15 --size 480x480 --batch 1,8 \
  --backends eager-fp32,eager-fp16,eager-fp16-kernels,cudagraph-fp16,cudagraph-fp16-kernels,aoti@1 \
  --artifacts "$ART" --out-dir "$OUT"

# 4. kernels: the interpreter tests, now on CUDA (incl. an AOTInductor package with the Triton kernels inside)
run 120 kernel_tests python3 -m pytest tests/test_kernels.py -q -p no:cacheprovider -o addopts=""

# 5. C++: mp_infer (built in the background above) on the CUDA package, compared with the Python runtime
stage "waiting for the C++ build"; wait "$CPP_PID"; echo "--- cpp_build exit $? after $((SECONDS - T0)) s" | tee -a "$OUT/summary.txt"
tail -n 15 /tmp/logs/cpp_build.log >> "$OUT/summary.txt"
run 60 cpp_parity python3 benchmarks/cpp_parity.py --engine "$(ls $ART/*-cuda.pt2 | head -1)" --mp-infer /tmp/cppbuild/cpp/mp_infer

stage "done"
tar -czf "$OUT/logs.tar.gz" -C /tmp logs
