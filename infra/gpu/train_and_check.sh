#!/usr/bin/env bash
# One GPU lease, one command: train (or continue training) a learned codec, export it, encode
# Kodak on the GPU for the cross-device decode check (decoded afterwards on a CPU with
# `python -m jobs.cross_device decode`), and measure one compress worker on the GPU.
#
# Run from the repository root on a GPU machine that has torch but no Ray and no network:
#   SHARDS (data/train-jpg)   python -m jobs.train prepare --out DIR --image-format jpg [...]
#   KODAK (data/device/kodak) the Kodak images (evaluation only; never trained on)
#   data/device/wheels        constriction, braceexpand, crc32c wheels for that machine's Python
#   RESUME (optional)         a checkpoint dir (checkpoint.safetensors + loss_log.csv) to continue
# What travels to the machine is capped at 64 MiB (tracked tree + carried folders): run
# `bash infra/gpu/slim_tree.sh out` before the device call and `... back` after it. Session 5
# carried a 33 MB training set (--min-side 256 --jpeg-quality 90 --subsampling 2) and Kodak as
# lossless WebP (11 MB) that way.
# Results go to $OUT (at most 8 files come back): ckpt/ (checkpoint, loss log), the exported
# weights, xdev/ (streams, json, one recon file), bench/worker_bench.json.
# Each step after training runs even if an earlier one failed; the exit status is the first
# failure's.
set -uo pipefail
OUT=${OUT:?set OUT to the results folder}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
N=${N:-96} M=${M:-144} BATCH=${BATCH:-32} CROP=${CROP:-128} LR=${LR:-3e-4}
WARMUP=${WARMUP:-500} DECAY_LAST=${DECAY_LAST:-0.3}
ID=${ID:-msh-n96} CODE=${CODE:-11} LABEL=${LABEL:-GPU run}
SHARDS=${SHARDS:-data/train-jpg} KODAK=${KODAK:-data/device/kodak} RESUME=${RESUME:-}
DATA_NOTE=${DATA_NOTE:-BSDS500 (500) + ImageNet samples (400), downscaled x0.5-0.75; research-use terms of those sets apply to these weights}
WORK=${WORK:-/tmp/latentarc-gpu}
GPU_FLAG=$([ "$DEVICE" = cuda ] && echo --gpu || true)
status=0
step() { local rc=$?; [ $rc -ne 0 ] && { echo "[gpu] $1 failed (exit $rc)"; [ $status -eq 0 ] && status=$rc; }; }
source "$(dirname "$0")/device_env.sh"
python3 -c "import torch, constriction, braceexpand, crc32c, jobs.train, jobs.cross_device; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
rm -rf "$WORK" && mkdir -p "$WORK" "$OUT/ckpt"
if [ -n "$RESUME" ]; then
  cp "$RESUME/checkpoint.safetensors" "$RESUME/loss_log.csv" "$OUT/ckpt/" && chmod u+w "$OUT"/ckpt/*
fi
# Checkpoints go straight to $OUT so that a lease ending mid-run still returns the last save.
timeout $(( ${MINUTES%.*} * 60 + 60 )) python3 -m jobs.train run --no-ray $GPU_FLAG \
  --shards "$SHARDS" --checkpoint-dir "$OUT/ckpt" --N "$N" --M "$M" --batch "$BATCH" \
  --crop "$CROP" --lr "$LR" --warmup "$WARMUP" --decay-last "$DECAY_LAST" --minutes "$MINUTES" \
  --log-every 250 --save-minutes 2
step train
rm -f "$OUT/ckpt/optimizer.safetensors"  # at most 8 files come back; Adam state is optional
HW=$([ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo cpu)
python3 -m jobs.train export --checkpoint-dir "$OUT/ckpt" --id "$ID" --code "$CODE" --fp16 \
  --label "$LABEL" --hardware "$HW" --data "$DATA_NOTE" --weights-dir "$WORK/weights" \
  > "$WORK/card.json"
step export
cp "$WORK/weights/$ID.safetensors" "$OUT"/ || { echo "[gpu] no exported weights"; exit 1; }
timeout 150 python3 -m jobs.cross_device encode --weights "$WORK/weights/$ID.safetensors" \
  --images "$KODAK" --device "$DEVICE" --qualities 2 4 6 --recon-images 8 --out "$OUT/xdev"
step cross-device
LATENTARC_WEIGHTS_PATH="$WORK/weights" timeout 120 python3 -m jobs.worker_bench \
  --images "$KODAK" --codec "$ID" --device "$DEVICE" --batches 8 32 --n "${BENCH_N:-96}" --out "$OUT/bench"
step worker-bench
rm -f "$OUT/bench/worker_bench.md"  # printed above; the json holds it
exit $status
