# Sourced by the infra/gpu/*.sh scripts: what a lent GPU machine (torch, no Ray, no network)
# needs before latentarc imports there. It installs the carried wheels (constriction,
# braceexpand, crc32c for that machine's Python, from data/device/wheels) into /tmp/site where
# they are missing, and prints the GPU. DEVICE (cuda or cpu) must be set.
if [ -d data/device/wheels ] && ! python3 -c "import constriction, braceexpand, crc32c" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    data/device/wheels/*.whl
  export PYTHONPATH=/tmp/site
fi
[ "$DEVICE" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
export PYTHONUNBUFFERED=1
