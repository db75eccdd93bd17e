#!/usr/bin/env bash
# Make room in what travels to a lent GPU machine (tracked tree + carried folders, 64 MiB):
# take the shipped weights that a GPU session does not read out of the index and the working
# tree, and put them back afterwards. The tracked tree is about 65 MB since msh-n96-v2's
# checkpoint and weights, which leaves no room for training data without this.
#
#   bash infra/gpu/slim_tree.sh out    # before the device call (files go to $HOLD)
#   bash infra/gpu/slim_tree.sh back   # after it, always (restores files and index)
#
# Kept: the default codec's weights, and the codec checkpoints unless SLIM_CHECKPOINTS=1
# (train_and_check.sh's RESUME reads them; a GAN run does not: another 26 MB).
set -euo pipefail
HOLD=${HOLD:-/tmp/latentarc-hold}
FILES=(models/weights/msh-n96.safetensors models/weights/shp-n96.safetensors
       models/weights/fp-n96.safetensors models/weights/gan-latent.safetensors
       models/weights/msh-n96-realistic.safetensors)
CKPTS=(checkpoints/msh-n96/checkpoint.safetensors checkpoints/msh-n96-v2/checkpoint.safetensors)
# `back` restores whatever is held, checkpoints included, whatever SLIM_CHECKPOINTS says now
if [ "${SLIM_CHECKPOINTS:-0}" = 1 ] || [ "${1:-}" = back ]; then FILES+=("${CKPTS[@]}"); fi
held() { echo "$HOLD/${1//\//__}"; }  # two checkpoints share a base name
case "${1:-}" in
  out)
    mkdir -p "$HOLD"
    for f in "${FILES[@]}"; do
      git rm -q --cached "$f"
      mv "$f" "$(held "$f")"
    done
    echo "moved ${#FILES[@]} files to $HOLD; run '$0 back' after the device call"
    ;;
  back)
    for f in "${FILES[@]}"; do
      [ -e "$(held "$f")" ] && mv "$(held "$f")" "$f"
    done
    git reset -q -- "${FILES[@]}"
    git status --short -- models/weights checkpoints
    ;;
  *) echo "usage: $0 out|back" >&2; exit 2 ;;
esac
