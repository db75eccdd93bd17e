#!/usr/bin/env bash
# One GPU lease, one command: GAN-train realistic decoders (issue 6) for a learned codec, several
# recipes side by side on the one GPU, then measure one compress worker there (issue 4).
#
# Each recipe is one `python -m jobs.train run --gan --device cuda` process; they share the GPU
# (a g_s step on 16 x 256^2 crops leaves most of an H100/H200 idle, so running them together
# costs each little) and the machine's CPU cores (--threads). Evaluation (DISTS needs the 59 MB
# VGG16, which does not fit beside the training set) is done afterwards on a CPU:
#   python -m jobs.train_gan eval --checkpoint-dir <returned dir> --images ...
#
# Run from the repository root on a GPU machine with torch but no Ray and no network:
#   SHARDS (data/device/train256)       training shards (`python -m jobs.train prepare`)
#   LATENTARC_CACHE (data/device/cache) holds weights/alexnet_features + lpips_alex (LPIPS-alex)
#   data/device/wheels                  constriction, braceexpand, crc32c wheels for that Python
#   KODAK (data/device/kodak12)         images for the worker measurement (never trained on)
#   RESUME (optional)                   a returned recipe dir: every recipe continues from its
#                                       checkpoint (g_s and D; Adam starts fresh)
# Before the device call: `SLIM_CHECKPOINTS=1 bash infra/gpu/slim_tree.sh out` (64 MiB cap);
# after it: `bash infra/gpu/slim_tree.sh back`.
# Back in $OUT (at most 8 files): <recipe>/checkpoint.safetensors (g_s + D, float32) and
# <recipe>/loss_log.csv per recipe, bench/worker_bench.json.
set -uo pipefail
OUT=${OUT:?set OUT to the results folder}
MINUTES=${MINUTES:-6} CODEC=${CODEC:-msh-n96-v2} DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-16} CROP=${CROP:-256} THREADS=${THREADS:-4}
[ -n "${SHARDS:-}" ] || SHARDS='data/device/train256/train-{000000..000007}.tar'
KODAK=${KODAK:-data/device/kodak12} BENCH_N=${BENCH_N:-96} BENCH_S=${BENCH_S:-100}
export LATENTARC_CACHE=${LATENTARC_CACHE:-$PWD/data/device/cache}
# name|flags: the common part (rates 0.1-0.25 bpp on Kodak, LPIPS-alex 1, MSE 0.002) is below.
# The defaults are the next step after session 15 (checkpoints/msh-n96-v2-realistic/README.md,
# round 4: training the shipped decoder on at half the learning rates gave -17.6 % held-out
# DISTS, against -14.6 % at full rates; a wider g_s from scratch did not pay in 6 minutes):
# the shipped decoder trained on again at half and at a quarter of the rates, and at half the
# rates with a stronger adversarial weight. A returned file is capped at 16 MiB: g_s + D in
# float32 is 11.5 MiB for `1:3:256,3:3:128`, 14.9 MiB for `1:4:320,3:3:128`, 19.1 MiB (too
# big) for `1:4:384,3:4:192`.
COMMON_D="--d-channels 32,64,128 --d-norm none"
SHIPPED=models/weights/msh-n96-v2-realistic.safetensors
CONT="--refine 1:3:256,3:3:128 --lr-refine-scale 4 --init-g-s $SHIPPED $COMMON_D"
RECIPES=${RECIPES:-"cont-lo|$CONT --k-adv 0.1 --lr-g 2.5e-5 --lr-d 1e-4
cont-lower|$CONT --k-adv 0.1 --lr-g 1.25e-5 --lr-d 5e-5
cont-lo-adv15|$CONT --k-adv 0.15 --lr-g 2.5e-5 --lr-d 1e-4"}
status=0
source "$(dirname "$0")/device_env.sh"
python3 -c "import torch, constriction, jobs.train_gan; from models.perceptual import LPIPS; LPIPS('alex'); \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
pids=()
while IFS='|' read -r name flags; do
  [ -z "$name" ] && continue
  mkdir -p "$OUT/$name"
  if [ -n "${RESUME:-}" ]; then
    cp "$RESUME/checkpoint.safetensors" "$RESUME/loss_log.csv" "$OUT/$name/" && chmod u+w "$OUT/$name"/*
  fi
  # shellcheck disable=SC2086  # flags is a word list on purpose
  timeout $(( ${MINUTES%.*} * 60 + 90 )) python3 -m jobs.train run --gan --init-codec "$CODEC" \
    --device "$DEVICE" --threads "$THREADS" --shards "$SHARDS" --checkpoint-dir "$OUT/$name" \
    --minutes "$MINUTES" --batch "$BATCH" --crop "$CROP" --q-min -2 --q-max 0.5 \
    --k-mse 0.002 --k-lpips 1 --d-warmup 300 --save-minutes 1.5 --log-every 100 --ref-every 5 \
    $flags > "/tmp/gan-$name.log" 2>&1 &
  pids+=($!)
  echo "[gpu] started $name: $flags"
done <<< "$RECIPES"
for pid in "${pids[@]}"; do wait "$pid" || { echo "[gpu] a recipe failed (exit $?)"; status=1; }; done
while IFS='|' read -r name _; do  # this run's logs only
  [ -z "$name" ] && continue
  log=/tmp/gan-$name.log
  echo "== $log"; grep -v "^\[gan\] step" "$log" | tail -5
  grep "^\[gan\] step" "$log" | awk 'NR % 4 == 0' | tail -6
done <<< "$RECIPES"
rm -f "$OUT"/*/optimizer.safetensors  # 8 files come back at most; Adam state is optional
for f in "$OUT"/*/checkpoint.safetensors; do  # a file over 16 MiB does not come back
  [ -f "$f" ] && [ "$(stat -c %s "$f")" -gt $((16 * 1024 * 1024)) ] && echo "[gpu] $f is over 16 MiB: it will not come back"
done
if [ "$BENCH_S" -gt 0 ]; then
  timeout "$BENCH_S" python3 -m jobs.worker_bench --images "$KODAK" --codec "$CODEC" \
    --device "$DEVICE" --batches 8 32 --n "$BENCH_N" --out "$OUT/bench" || { echo "[gpu] worker_bench failed"; status=1; }
  rm -f "$OUT/bench/worker_bench.md"
fi
exit $status
