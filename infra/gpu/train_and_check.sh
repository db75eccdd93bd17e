#!/usr/bin/env bash
# One GPU lease, one command: train the default learned codec, export it, and encode Kodak on the
# GPU for the cross-device decode check (decoded afterwards on a CPU with jobs.cross_device).
#
# Run from the repository root on a GPU machine that has torch but no Ray and no network:
#   data/train-jpg      python -m jobs.train prepare --out data/train-jpg --image-format jpg
#   data/device/kodak   the Kodak PNGs (evaluation only; never trained on)
#   data/device/wheels  constriction and braceexpand wheels for that machine's Python (optional)
# What travels to the machine is capped at 64 MiB: the tracked tree (36 MB since the shipped
# weights and the msh-n96 checkpoint) plus these folders. The 43 MB q95 set no longer fits beside
# it; carry a smaller set (a subset of shards, or the JPEGs at a lower quality) next time.
# Results go to $OUT: ckpt/ (checkpoint, loss log), exported weights, xdev/ (streams, recons).
set -euo pipefail
OUT=${OUT:?set OUT to the results folder}
MINUTES=${MINUTES:-7}
DEVICE=${DEVICE:-cuda}
N=${N:-96} M=${M:-144} BATCH=${BATCH:-32} CROP=${CROP:-128} LR=${LR:-3e-4}
ID=${ID:-msh-n96}
WORK=${WORK:-/tmp/latentarc-gpu}
GPU_FLAG=$([ "$DEVICE" = cuda ] && echo --gpu || true)
export PYTHONUNBUFFERED=1
if [ -d data/device/wheels ] && ! python3 -c "import constriction, braceexpand" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    data/device/wheels/*.whl
  export PYTHONPATH=/tmp/site
fi
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, constriction, braceexpand, jobs.train, jobs.cross_device; \
print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
rm -rf "$WORK" && mkdir -p "$WORK"
# Checkpoints go straight to $OUT so that a lease ending mid-run still returns the last save.
python3 -m jobs.train run --no-ray $GPU_FLAG --shards data/train-jpg --checkpoint-dir "$OUT/ckpt" \
  --N "$N" --M "$M" --batch "$BATCH" --crop "$CROP" --lr "$LR" --warmup 500 --decay-last 0.3 \
  --minutes "$MINUTES" --log-every 250 --save-minutes 2
rm "$OUT/ckpt/optimizer.safetensors"  # at most 8 files come back; Adam state is optional
HW=$([ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || echo cpu)
python3 -m jobs.train export --checkpoint-dir "$OUT/ckpt" --id "$ID" --code 11 --fp16 \
  --label "GPU run" --hardware "$HW" --weights-dir "$WORK/weights" > "$WORK/card.json"
cp "$WORK/weights/$ID.safetensors" "$OUT"/
python3 -m jobs.cross_device encode --weights "$WORK/weights/$ID.safetensors" \
  --images data/device/kodak --device "$DEVICE" --qualities 2 4 6 --out "$OUT/xdev"
