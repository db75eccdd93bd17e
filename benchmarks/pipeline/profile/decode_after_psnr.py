"""Does what runs between two decodes slow the next one? 16 Kodak streams decoded one at a time
(as ``encode_shard`` does), with nothing between them, with a PSNR through OpenBLAS (``np.dot``,
before session 10), with today's integer PSNR, and with ``malloc_trim`` after each batch of 8.
Prints the seconds spent in ``decode_batch`` only.

    python benchmarks/pipeline/profile/decode_after_psnr.py
    OPENBLAS_NUM_THREADS=1 python benchmarks/pipeline/profile/decode_after_psnr.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))


def main() -> int:
    from blas_ab import psnr_blas

    from jobs.pipeline_benchmark import DEFAULT_IMAGES, load_images, sequence
    from models.allocator import keep_freed_memory, release_freed_memory
    from models.registry import get_codec
    from pipeline.images import prepare, psnr

    keep_freed_memory()  # as a compress worker does
    codec = get_codec("msh-n96-v2")
    images = [prepare(it.data, 1 << 40)[0] for it in sequence(load_images(DEFAULT_IMAGES), 16)]
    streams = codec.encode_batch(images[:8]) + codec.encode_batch(images[8:])
    codec.decode_batch(streams[:2])  # warm-up
    between = {"nothing": None, "psnr blas": psnr_blas, "psnr integer": psnr, "trim": None}

    def run(mode: str) -> float:
        spent = 0.0
        for i, stream in enumerate(streams):
            t = time.perf_counter()
            (decoded,) = codec.decode_batch([stream])
            spent += time.perf_counter() - t
            if between[mode] is not None:
                between[mode](images[i], decoded.image)
            if mode == "trim" and i % 8 == 7:
                release_freed_memory()
        return spent

    print("| rep | between decodes | decode seconds (16 Kodak images) |\n|---|---|---|")
    for rep in range(2):
        for mode in between if rep == 0 else reversed(between):
            print(f"| {rep} | {mode} | {run(mode):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
