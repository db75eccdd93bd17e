"""Peak RSS of a worker coding large photos with the learned codec, check thread on and off.

    python benchmarks/pipeline/check-thread/big_photos.py [--mp 12 6] [--photos 3]
        [--codec msh-n96-v2] [--image ../shared/datasets/wikipedia_photos_hr/006.png]

For each size, one tar of ``--photos`` copies of a Wikipedia photo resized (Lanczos) to about
that many megapixels, each copy shifted a little so no two are identical, is coded by
``encode_shard`` with the check thread on and off, each in a fresh child process (peak RSS =
the child's ``ru_maxrss``), one torch thread, the worker's allocator settings. Why: with the
check thread a learned codec's decode can run beside its encode, and its working memory grows
with the photo (about 1.2 GiB above the loaded codec for 12 MP, ../tiling). Since commit
8f47bad's successor, batches with an image above 1 MP are coded alone in the codec's thread
(``shard_encode.CHECK_THREAD_MAX_IMAGE_PIXELS``), which this checks.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def _child(tar_path: str, codec_id: str, check_thread: bool) -> None:
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "system")
    import torch

    from models.allocator import keep_freed_memory
    from models.registry import get_codec
    from pipeline.shard_encode import Batching, Guard, encode_shard
    from pipeline.sources import Shard

    torch.set_num_threads(1)
    keep_freed_memory()
    codec = get_codec(codec_id)
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with tempfile.TemporaryDirectory(prefix="lar-big-") as tmp:
        started = time.perf_counter()
        stats = encode_shard(Shard(tar_path, "big", Path(tar_path).name), tmp, codec,
                             guard=Guard(size=False), batching=Batching(check_thread=check_thread))
        seconds = time.perf_counter() - started
    print(json.dumps({"check_thread": check_thread, "samples": stats["samples"],
                      "compressed": stats["compressed"], "seconds": round(seconds, 1),
                      "loaded_mib": round(loaded),
                      "peak_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}))


def _tar(image: Path, mp: float, photos: int, out: Path) -> tuple[str, tuple[int, int]]:
    import numpy as np
    from PIL import Image

    with Image.open(image) as im:
        im = im.convert("RGB")
        scale = (mp * 1e6 / (im.width * im.height)) ** 0.5
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.LANCZOS)
    base = np.asarray(im)
    path = out / f"photos-{mp:g}mp.tar"
    with tarfile.open(path, "w") as tar:
        for k in range(photos):
            buf = io.BytesIO()
            Image.fromarray(np.roll(base, (5 * k, 7 * k), axis=(0, 1))).save(buf, format="PNG")
            info = tarfile.TarInfo(f"p{k:03d}.png")
            info.size = buf.tell()
            buf.seek(0)
            tar.addfile(info, buf)
    return str(path), im.size


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mp", type=float, nargs="+", default=[12.0, 6.0])
    p.add_argument("--photos", type=int, default=3)
    p.add_argument("--codec", default="msh-n96-v2")
    p.add_argument("--image", type=Path,
                   default=ROOT.parent / "shared" / "datasets" / "wikipedia_photos_hr" / "006.png")
    p.add_argument("--json", type=Path, help="also write the figures here")
    p.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], args.child[2] == "on")
        return
    results = []
    with tempfile.TemporaryDirectory(prefix="lar-photos-") as tmp:
        for mp in args.mp:
            tar_path, size = _tar(args.image, mp, args.photos, Path(tmp))
            for way in ("on", "off"):
                out = subprocess.run([sys.executable, __file__, "--child", tar_path, args.codec, way],
                                     check=True, capture_output=True, text=True).stdout
                row = {"mp": mp, "size": list(size), **json.loads(out.strip().splitlines()[-1])}
                results.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"codec": args.codec, "photos": args.photos,
                                         "image": str(args.image), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
