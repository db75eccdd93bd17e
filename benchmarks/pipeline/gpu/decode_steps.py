"""Where a learned decode (and encode) spends its time, step by step, on this machine's CPU.

    python benchmarks/pipeline/gpu/decode_steps.py [IMAGE] [--codec msh-n96-v2] [--threads 1]

Wraps the steps of ``LearnedCodec`` (range decoding, the canonical re-encode, the integer
hyper-decoder, g_a, g_s) with timers and prints milliseconds per step for three encode+decode
rounds of one image. Why: on a GPU the transforms take a few milliseconds, so the CPU steps are
what bound a GPU worker (README.md beside this file).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

import models.learned as learned  # noqa: E402
from models.registry import get_codec  # noqa: E402

KODIM05 = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "kodak" / "kodim05.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", nargs="?", type=Path, default=KODIM05)
    parser.add_argument("--codec", default="msh-n96-v2")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    codec = get_codec(args.codec, 4.0)
    image = np.array(Image.open(args.image).convert("RGB"))
    stream = codec.encode_batch([image])[0]
    spent: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            out = fn(*a, **k)
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - t
            return out
        return wrapper

    learned._decode_grouped = timed("range decode", learned._decode_grouped)
    learned._entropy_encode = timed("entropy encode (decode: canonical check)",
                                    learned._entropy_encode)
    codec.model.entropy_parameters = timed("integer hyper-decoder", codec.model.entropy_parameters)
    codec.model.net.g_a.forward = timed("g_a", codec.model.net.g_a.forward)
    g_s = codec._g_s()
    g_s.forward = timed("g_s", g_s.forward)
    for _ in range(3):
        for name, run in (("encode", lambda: codec.encode_batch([image])),
                          ("decode", lambda: codec.decode_batch([stream]))):
            spent.clear()
            t = time.perf_counter()
            run()
            total = time.perf_counter() - t
            steps = ", ".join(f"{k} {v * 1000:.0f}" for k, v in spent.items())
            print(f"{name}: {total * 1000:.0f} ms ({steps})")


if __name__ == "__main__":
    main()
