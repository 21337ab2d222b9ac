#!/usr/bin/env bash
# Issue 17's GPU numbers on one lent H200 in one device call (see /work/.library/device/):
#   here, once:   bash benchmarks/gpu/device_parts.sh prepare      (fills .gpu_carry/)
#   on the GPU:   run(command="bash benchmarks/gpu/throughput_suite.sh", carry=[".gpu_carry"],
#                     timeout_s=580)
# Builds FFCV there (device_parts.sh setup), then benchmarks/gpu/throughput_suite.py with a
# 480 s deadline: peaks, the imagenet64-ipc10 speed switches, ours vs DM / TESLA at IPC 50.
# Result files land in $OUT as each part ends. Checked on the CPU with --tiny (a test runs it);
# not yet run on a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash benchmarks/gpu/device_parts.sh setup
export PYTHONPATH=/tmp/gpu-ffcv-site:$PWD
export LD_LIBRARY_PATH=/tmp/gpu-ffcv-prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >"${OUT:-/tmp}/device.txt" || true
python3 -m benchmarks.gpu.throughput_suite --out "${OUT:-/tmp/throughput-suite}" --deadline-s "${DEADLINE_S:-480}"
