#!/usr/bin/env bash
# The speed numbers on one lent GPU (see /work/.library/device/README.md): prepare and build
# FFCV for the device, then one command per part; every figure written under $OUT (at most 8
# files come back).
#
#   here, once:   bash benchmarks/gpu/device_parts.sh prepare
#                 (downloads into .gpu_carry/, which .git/info/exclude must ignore)
#   on the GPU:   run(command="bash benchmarks/gpu/device_parts.sh step",      carry=[".gpu_carry"])
#                 run(command="bash benchmarks/gpu/device_parts.sh loader",    carry=[".gpu_carry"])
#                 run(command="bash benchmarks/gpu/device_parts.sh baselines", carry=[".gpu_carry"])
#                 run(command="bash benchmarks/gpu/device_parts.sh summary",   carry=[".gpu_carry"])
#   each part stays under the 10-minute limit of one command; `all` runs them in turn.
#   $OUT is emptied before every command, so the parts also keep their files in $RES (default
#   /tmp/gpu-parts-results, alive while the machine stays warm), where `summary` reads them; after
#   a cold start, carry the fetched files in a git-ignored folder and set GPU_PARTS_RESULTS to it.
#
# The machine has python3 3.12 with torch 2.11 and numpy, numba, opencv-python, rich; no ffcv,
# no submitit, no internet. gencond imports ffcv (data_prep.loaders), so FFCV is built here from
# its sdist against Debian's OpenCV and libjpeg-turbo, unpacked with dpkg -x into a prefix
# (docs: /work/shared/design/ENVIRONMENT.md). Not yet run on the device: no GPU was lent to the
# session that wrote it. Checked on the CPU machine instead: `prepare`, then `setup` with
# GPU_FFCV_REBUILD=1 built FFCV against the carried libraries (ldd: OpenCV, libjpeg-turbo and TBB
# resolved from the prefix) and imported it; `speed_targets.py step|summary --small` ran on the CPU.
# The device image's compiler and `wheel` package are assumed (nvcc there needs a host g++).
set -euo pipefail
cd "$(dirname "$0")/../.."
CARRY=.gpu_carry
PART=${1:-all}
RES=${GPU_PARTS_RESULTS:-/tmp/gpu-parts-results}

prepare() {  # on this (Debian 12, x86-64) machine, with pip and apt reachable
  grep -qx "/$CARRY/" .git/info/exclude || echo "/$CARRY/" >>.git/info/exclude
  mkdir -p "$CARRY/whl" "$CARRY/deb" "$CARRY/sdist"
  # ffcv's pure-Python needs (some are sdists only: built into py3-none-any wheels here)
  python3 -m pip wheel -q --no-deps -w "$CARRY/whl" fastargs terminaltables assertpy \
    pytorch-pfn-extras
  python3 -m pip download -q --no-deps --no-binary=:all: -d "$CARRY/sdist" ffcv==1.0.2
  (cd "$CARRY/deb" && apt-get download libopencv-core406 libopencv-core-dev \
    libopencv-imgproc406 libopencv-imgproc-dev libturbojpeg0 libturbojpeg0-dev libtbb12 \
    libblas3 liblapack3 libgfortran5 pkgconf pkgconf-bin libpkgconf3)
  du -sh "$CARRY"
}

setup() {  # on the GPU machine; idempotent while the machine stays warm
  export PREFIX=/tmp/gpu-ffcv-prefix SITE=/tmp/gpu-ffcv-site
  export PYTHONPATH=$SITE:$PWD LD_LIBRARY_PATH=$PREFIX/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  if [ -z "${GPU_FFCV_REBUILD:-}" ] && python3 -c "import ffcv" 2>/dev/null; then return; fi
  mkdir -p "$PREFIX" "$SITE"
  for f in "$CARRY"/deb/*.deb; do dpkg -x "$f" "$PREFIX"; done
  lib=$PREFIX/usr/lib/x86_64-linux-gnu
  for so in opencv_core opencv_imgproc turbojpeg; do  # the -dev symlinks point at runtime names
    [ -e "$lib/lib$so.so" ] || ln -sf "$(ls "$lib"/lib$so.so.* | head -1)" "$lib/lib$so.so"
  done
  # opencv.hpp includes every module Debian built; only core and imgproc are carried
  printf '#define HAVE_OPENCV_CORE\n#define HAVE_OPENCV_IMGPROC\n' \
    >"$PREFIX/usr/include/opencv4/opencv2/opencv_modules.hpp"
  # ffcv's setup.py asks pkg-config for opencv4 and libturbojpeg: minimal .pc files that name
  # only what libffcv uses (core, imgproc), so the rest of OpenCV need not be carried
  mkdir -p "$PREFIX/pc"
  cat >"$PREFIX/pc/opencv4.pc" <<EOF
Name: opencv4
Description: OpenCV core and imgproc from $CARRY
Version: 4.6.0
Cflags: -I$PREFIX/usr/include/opencv4
Libs: -L$lib -lopencv_imgproc -lopencv_core
EOF
  cat >"$PREFIX/pc/libturbojpeg.pc" <<EOF
Name: libturbojpeg
Description: TurboJPEG from $CARRY
Version: 2.1
Cflags: -I$PREFIX/usr/include
Libs: -L$lib -lturbojpeg
EOF
  export PKG_CONFIG_PATH=$PREFIX/pc PATH=$PREFIX/usr/bin:$PATH
  command -v pkg-config >/dev/null || ln -sf "$PREFIX/usr/bin/pkgconf" "$PREFIX/usr/bin/pkg-config"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    "$CARRY"/whl/*.whl
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir \
    --target "$SITE" "$CARRY"/sdist/ffcv-1.0.2.tar.gz
  python3 -c "import ffcv, torch; print('ffcv', ffcv.__version__, 'torch', torch.__version__,
torch.cuda.get_device_name(0))"
}

keep() {  # results to $OUT (what comes back) as well as $RES (what summary reads)
  mkdir -p "$RES" && cp "$RES"/$1 "$OUT"/ 2>/dev/null || true  # $1 may be a glob
}

step() {  # peak, bf16 update cosine, profile, speed switches (MFU of each)
  python3 -m benchmarks.gpu.speed_targets step --out "$RES"
  keep "*_cuda.json"
}

loader() {  # FFCV loader images/s on ImageNet-64-shaped generated betons, on the GPU
  mkdir -p "$RES"
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >"$RES/device.txt"
  python3 -m launch.cli bench loader --device cuda --images 200000 --classes 1000 \
    --classes-per-step 100 --n-per-class 40 --threads 16 --out "$RES/loader_cuda.json"
  keep "loader_cuda.json"  # device.txt stays in $RES: $OUT returns 8 files at most
}

baselines() {  # ours vs DM sweep time and vs MTT/TESLA memory (issue 6's bench, same GPU)
  [ -f "$RES/peak_cuda.json" ] || python3 -m launch.cli bench peak --device cuda --out "$RES/peak_cuda.json"
  cp "$RES/peak_cuda.json" benchmarks/results/peak_cuda.json
  python3 -m launch.cli bench throughput --device cuda --shapes imagenet64 --ipcs 10 50 \
    --timed-classes 10 --warmup 2 --repeats 5 --out "$RES/throughput_cuda.json"
  keep "throughput_cuda.*"
}

summary() {
  python3 -m benchmarks.gpu.speed_targets summary --out "$RES"
  keep "speed_targets_cuda.json"
}

case "$PART" in
  prepare) prepare ;;
  setup) setup ;;  # alone: FFCV built into /tmp/gpu-ffcv-site for benchmarks/gpu/throughput_suite.sh
  step | loader | baselines | summary) setup; "$PART" ;;
  all) setup; step; loader; baselines; summary ;;
  *) echo "usage: $0 prepare|setup|step|loader|baselines|summary|all" >&2; exit 2 ;;
esac
