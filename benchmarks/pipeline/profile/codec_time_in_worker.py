"""Where encode_shard loses time against the bare codec loop, in one process, no Ray.

Times the codec's own ``encode_batch`` and ``decode_batch`` calls (wrapped with timers) inside
the bare loop (``jobs.worker_bench.bare_loop``: source decode, encode, decode the batch, PSNR)
and inside ``encode_shard`` (reader thread off and on), alternated, with the PSNR of before
session 10 (``np.dot``, OpenBLAS) and today's (integer sums). "other" is everything outside the
codec calls. Session 10 found the decode ~26 % slower inside encode_shard with the BLAS PSNR:
encode_shard computes a PSNR between two decodes, the bare loop after the whole batch.

    python benchmarks/pipeline/profile/codec_time_in_worker.py --n 48 --reps 2
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--codec", default="msh-n96-v2")
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()

    from blas_ab import psnr_blas

    import pipeline.images as images
    import pipeline.shard_encode as shard_encode
    from jobs.pipeline_benchmark import DEFAULT_IMAGES, load_images, sequence, write_layout
    from jobs.worker_bench import bare_loop
    from models.allocator import keep_freed_memory
    from models.registry import get_codec
    from pipeline.shard_encode import Batching, Guard, encode_shard
    from pipeline.sources import Shard

    keep_freed_memory()  # as a compress worker does
    codec = get_codec(args.codec)
    acc = {"encode": 0.0, "decode": 0.0}
    enc, dec = codec.encode_batch, codec.decode_batch

    def timed(fn, key):
        def wrapper(x):
            t = time.perf_counter()
            out = fn(x)
            acc[key] += time.perf_counter() - t
            return out
        return wrapper

    codec.encode_batch, codec.decode_batch = timed(enc, "encode"), timed(dec, "decode")
    seq = sequence(load_images(DEFAULT_IMAGES), args.n)
    work = Path(tempfile.mkdtemp(prefix="codec-time-"))
    variants = {"blas": psnr_blas, "integer": images.psnr}
    try:
        write_layout(seq, args.n, work / "src")
        shards = sorted((work / "src").glob("*.tar"))
        data = [it.data for it in seq]
        bare_loop(codec, data[:4], 4, "cpu")  # warm-up
        print("| rep | psnr | run | seconds | codec encode s | codec decode s | other s |")
        print("|---|---|---|---|---|---|---|")
        for rep in range(args.reps):
            for name in (("blas", "integer") if rep % 2 == 0 else ("integer", "blas")):
                images.psnr = shard_encode.psnr = variants[name]
                for mode in ("bare", "thread off", "thread on"):
                    acc.update(encode=0.0, decode=0.0)
                    t = time.perf_counter()
                    if mode == "bare":
                        bare_loop(codec, data, args.batch, "cpu")
                    else:
                        for path in shards:
                            encode_shard(Shard(str(path), path.stem, path.name),
                                         str(work / f"a{rep}{name}{mode[-2:]}"), codec,
                                         guard=Guard(size=False),
                                         batching=Batching(args.batch, 64_000_000, mode == "thread on"))
                    total = time.perf_counter() - t
                    print(f"| {rep} | {name} | {mode} | {total:.2f} | {acc['encode']:.2f} | "
                          f"{acc['decode']:.2f} | {total - acc['encode'] - acc['decode']:.2f} |",
                          flush=True)
    finally:
        images.psnr = shard_encode.psnr = variants["integer"]
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
