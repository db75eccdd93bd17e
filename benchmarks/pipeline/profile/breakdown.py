"""Share of a compress run's samples per pipeline step, from ``py-spy record --format raw``.

The raw file has one collapsed stack per line (root first, ``;``-separated, then a count);
with ``--subprocesses --threads`` the stacks start with ``process PID:"cmdline"`` and
``thread (TID): name`` frames. The actor is the process whose stacks reach ``encode_shard``,
and its work runs in one thread (Ray Data calls the actor's ``__call__`` from a thread pool).
Each of that thread's samples is put in the first step, from the leaf up, that one of its
frames names; the order below matters (e.g. the PSNR decode sits inside ``_encode``).

With ``--learned``, the two codec steps of a learned codec (``models/learned.py``) are split
into what they are made of: g_a, h_a, the integer hyper-decoder, range coding, g_s and the
decode's canonical re-encode (py-spy sees Python frames, so a torch kernel counts in the
Python function that called it).

Usage: python breakdown.py RAW [--run-seconds S --in-worker-seconds S] [--learned]
"""

from __future__ import annotations

import argparse
import collections
import re

# (step, pattern on a frame "function (file:line)"); first match from the leaf wins.
STEPS = [
    ("codec encode", r"^\S*encode_batch \(models/|^LearnedCodec\.encode|^encode_sources "),
    ("decode for PSNR / content hash", r"\.decode_batch \(models/"),
    ("PSNR", r"^psnr \(pipeline/images\.py"),
    ("content hash (BLAKE2b of the decode)", r"^(Decoded\.content_hash|content_hash) \(models/"),
    ("source decode (Pillow, to RGB array)", r"^prepare \(pipeline/images\.py"),
    ("original's metadata (EXIF/ICC/XMP)", r"^image_metadata \(pipeline/images\.py"),
    ("sha256 of the original", r"^_ok_row \(pipeline/shard_encode\.py:\d+\)$#sha"),
    ("Parquet (rows to Arrow, write)", r"^(_RowGroup\.\w+|ParquetWriter\.\w+) "),
    ("tar read", r"^iter_samples \(pipeline/tars\.py"),
    ("write_atomic (fsync, rename)", r"^write_atomic \(pipeline/storage\.py"),
]
SHA_LINE = re.compile(r"^_ok_row \(pipeline/shard_encode\.py:(\d+)\)$")


# Inside a learned codec: (sub-step, pattern), first match from the leaf wins; then named by
# whether the stack is in the encode or in the decode.
LEARNED = [
    ("range coder", r"^(_encode_grouped|_code_escapes|_decode_grouped|_decode_escapes) \(models/"),
    ("integer hyper-decoder", r"^LearnedModel\.entropy_parameters \(models/"),
    ("transform", r"^maybe_tiled \(models/"),
]


def classify_learned(frames: list[str], step: str) -> str:
    """``step`` of a learned codec, split by sub-step (see LEARNED)."""
    decoding = any(f.startswith("LearnedCodec._decode ") for f in frames)
    reencode = decoding and any(f.startswith("_entropy_encode ") for f in frames)
    for frame in reversed(frames):
        for name, pattern in LEARNED:
            if re.search(pattern, frame):
                if name == "transform":
                    return f"{step}: {'g_s' if decoding else 'g_a'}"
                if name == "range coder" and reencode:
                    return f"{step}: canonical re-encode (range coder)"
                return f"{step}: {name}"
    if any(f.startswith("LearnedCodec._finish ") for f in frames):
        return f"{step}: h_a, rounding, other"
    return f"{step}: other"


def classify(frames: list[str], sha_lines: set[int], learned: bool = False) -> str:
    step = _classify(frames, sha_lines)
    if learned and step in ("codec encode", "decode for PSNR / content hash"):
        return classify_learned(frames, step)
    return step


def _classify(frames: list[str], sha_lines: set[int]) -> str:
    for frame in reversed(frames):
        m = SHA_LINE.match(frame)
        if m and int(m.group(1)) in sha_lines:
            return "sha256 of the original"
        for step, pattern in STEPS:
            if "#sha" not in pattern and re.search(pattern, frame):
                return step
        if frame.startswith("encode_shard "):
            return "other, inside encode_shard"
    return "actor thread outside encode_shard (Ray Data glue)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("raw")
    parser.add_argument("--sha-lines", type=int, nargs="*", default=[164],
                        help="lines of _ok_row that hash the original (hashlib.sha256)")
    parser.add_argument("--run-seconds", type=float, help="wall time of the compress call")
    parser.add_argument("--in-worker-seconds", type=float, help="summed encode_shard seconds")
    parser.add_argument("--learned", action="store_true",
                        help="split a learned codec's encode and decode into their sub-steps")
    args = parser.parse_args()
    stacks: list[tuple[list[str], int]] = []
    for line in open(args.raw):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    actors = collections.Counter()
    for frames, n in stacks:
        if any(f.startswith("encode_shard ") for f in frames):
            # A file already cut down to the actor's thread has no process/thread frames.
            proc = next((f for f in reversed(frames) if f.startswith("process ")), "")
            thread = next((f for f in frames if f.startswith("thread ")), "")
            actors[(proc.split(":")[0], thread)] += n
    (proc, thread), _ = actors.most_common(1)[0]
    steps = collections.Counter()
    per_thread = collections.Counter()
    for frames, n in stacks:
        if proc and not any(f.startswith(proc + ":") for f in frames):
            continue
        t = next((f for f in frames if f.startswith("thread ")), "")
        per_thread[t] += n
        if t == thread:
            steps[classify(frames, set(args.sha_lines), args.learned)] += n
    total = sum(steps.values())
    print(f"actor {proc or '(file has one thread)'}, work thread {thread or '-'}: {total} samples")
    print("\n| step | samples | share of the actor's work thread |\n|---|---|---|")
    for step, n in steps.most_common():
        print(f"| {step} | {n} | {n / total:.1%} |")
    print("\nSamples per thread of the actor process (with --idle, idle threads count too):")
    for t, n in per_thread.most_common():
        print(f"  {n:6d}  {t}")
    if args.run_seconds and args.in_worker_seconds:
        outside = args.run_seconds - args.in_worker_seconds
        print(f"\nOutside encode_shard (Ray start of the actor pool, scheduling, driver "
              f"bookkeeping): {outside:.1f} s of {args.run_seconds:.1f} s = "
              f"{outside / args.run_seconds:.1%} of the run's wall time")


if __name__ == "__main__":
    main()
