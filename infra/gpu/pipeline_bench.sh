#!/usr/bin/env bash
# The pipeline benchmark (issue 4) on a lent GPU machine: `python -m jobs.benchmark --pipeline`
# with the learned codec on cuda in the bare loop, in the in-worker runs and in 1 and 2 Ray
# actors sharing the GPU (--gpus-per-actor auto: 1, then 0.5 each).
#
# Before the device call, here:
#   bash infra/gpu/pack_ray.sh                       # once: data/device/ray/, data/device/wheels
#   SLIM_CHECKPOINTS=1 bash infra/gpu/slim_tree.sh out
# The call (about 5 minutes on an H100; carry data/device/ray, data/device/wheels, KODAK):
#   OUT=$OUT bash infra/gpu/pipeline_bench.sh
# After it: `bash infra/gpu/slim_tree.sh back`. Back in $OUT: pipeline-gpu/results.{json,md}
# and log.txt.
set -uo pipefail
OUT=${OUT:?set OUT to the results folder}
CODEC=${CODEC:-msh-n96-v2} KODAK=${KODAK:-data/device/kodak12} ROWS_BIG=${ROWS_BIG:-176}
# A dry run on a CPU machine checks the script and the slimmed Ray before a GPU lease is spent:
#   PYVER=3.11 OUTDIR=/tmp/ray311 bash infra/gpu/pack_ray.sh
#   PYTHONPATH=infra/gpu/hide_missing OUT=/tmp/dry PY=.venv/bin/python GPUS=0 DEVICE=cpu \
#     RAY_TARBALL=/tmp/ray311/ray-cp311-slim.tar.xz KODAK=../shared/datasets/kodak ROWS_BIG=16 \
#     EXTRA="--budget-mib 4" bash infra/gpu/pipeline_bench.sh
# (hide_missing/ hides the packages this .venv has and the GPU image lacks, e.g. Ray's optional
# ones and pydantic, so the dry run sees what that machine will.)
PY=${PY:-python3} GPUS=${GPUS:-auto} DEVICE=${DEVICE:-cuda}
RAY_TARBALL=${RAY_TARBALL:-data/device/ray/ray-cp312-slim.tar.xz}
if [ "$DEVICE" = cuda ]; then source "$(dirname "$0")/device_env.sh"; fi
RAYSITE=$(mktemp -d)
tar -C "$RAYSITE" -xJf "$RAY_TARBALL" || exit 1
# The tarball has no .pyc files: compile them now, or the first Ray run's workers do it while
# timed (a dry run here: the first compress ran at 0.13 img/s against 1.9 for the next).
"$PY" -m compileall -q -j 0 "$RAYSITE" > /dev/null
export PYTHONPATH=$RAYSITE${PYTHONPATH:+:$PYTHONPATH}
export RAY_AUTH_MODE=disabled PYTHONUNBUFFERED=1
"$PY" -c "import ray, torch; print('ray', ray.__version__, ray.__file__, 'torch', torch.__version__, \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" || exit 1
mkdir -p "$OUT"
"$PY" -m jobs.benchmark --pipeline --codec "$CODEC" --images "$KODAK" --rows-big "$ROWS_BIG" \
  --big-shards 1 --prefetch-reps 1 --cpus-per-actor auto --gpus-per-actor "$GPUS" \
  --out "$OUT/pipeline-gpu" ${EXTRA:-} 2>&1 | tee "$OUT/log.txt"
status=${PIPESTATUS[0]}
rm -rf "$RAYSITE"
exit "$status"
