#!/usr/bin/env bash
# Ray for a lent GPU machine, which has torch but no Ray and no network (issue 4: the pipeline
# benchmark "on a GPU machine"). Ray's wheel is 76 MB and unpacks to 201 MB; what travels to
# that machine is capped at 64 MiB. This keeps what an in-process cluster needs (the raylet,
# the GCS server, _raylet.so and the Python package) and drops the Java jars, the dashboard's
# web client, RLlib, Serve, the LLM library and Ray's own tests, then packs it with xz: about
# 28 MB. Run here (it needs PyPI), once; the result is under data/ (ignored by git):
#
#   bash infra/gpu/pack_ray.sh            # data/device/ray/ray-cp312-slim.tar.xz (PYVER=3.12)
#   PYVER=3.11 bash infra/gpu/pack_ray.sh # the same for this machine's Python, to try it here
#
# It also downloads the wheels Ray needs that the GPU image lacks (jsonschema and its three
# dependencies) into data/device/wheels, beside constriction and the others (device_env.sh
# installs them there). The Ray version is this checkout's: the one in .venv.
set -euo pipefail
PYVER=${PYVER:-3.12}
TAG=cp${PYVER/./}
RAY_VERSION=${RAY_VERSION:-$(.venv/bin/python -c 'import ray; print(ray.__version__)')}
OUTDIR=${OUTDIR:-data/device/ray}  # a 3.11 pack for a dry run here: OUTDIR=/tmp/...
OUTFILE=$OUTDIR/ray-$TAG-slim.tar.xz
PLAT=(--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
.venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
  --implementation cp "${PLAT[@]}" -d "$WORK" "ray==$RAY_VERSION"
mkdir "$WORK/site"
(cd "$WORK/site" && unzip -q "$WORK"/ray-*.whl)
rm -rf "$WORK/site/ray/jars" "$WORK/site/ray/dashboard/client/build" "$WORK/site/ray/rllib" \
  "$WORK/site/ray/serve" "$WORK/site/ray/llm" "$WORK/site/ray/tests" "$WORK/site/ray/data/tests" \
  "$WORK/site/ray/tune/tests"
mkdir -p "$OUTDIR"
XZ_OPT=-6 tar -C "$WORK/site" -cJf "$OUTFILE.tmp" .
mv "$OUTFILE.tmp" "$OUTFILE"
if [ "$PYVER" = 3.12 ]; then
  mkdir -p data/device/wheels
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp "${PLAT[@]}" -d data/device/wheels \
    jsonschema jsonschema-specifications referencing rpds-py
fi
ls -l "$OUTFILE"
