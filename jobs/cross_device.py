"""`python -m jobs.cross_device`: bitstreams made on one device decode exactly on another.

    # on the GPU machine: encode every image there, decode there (GPU and CPU) and keep the lot
    python -m jobs.cross_device encode --weights W.safetensors --images DIR --device cuda --out D
    # on any other machine: decode those bitstreams on its CPU and compare
    python -m jobs.cross_device decode --weights W.safetensors --dir D --report results.md

A learned bitstream is only archival if its symbols come out identical wherever it is decoded
(one flipped scale index garbles the rest of the range-coded stream). ``encode`` records, per
image and quality: the bitstream, the content hash (of the decoded symbols) and reconstruction
hash on the encoding device and on that machine's CPU, and their largest pixel difference; it
keeps the device's reconstructions at one quality. ``decode`` checks that this machine decodes
every stream to the same symbols and reports the largest pixel difference against the device's
reconstructions. Exit status 1 when any symbol differs or a pixel differs by more than one level.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

RECON_PER_FILE = 8  # device reconstructions split so each file stays small (8 Kodak ~ 7 MB)


def _codec(weights: Path, quality: float, device: str):
    from models.learned import LearnedCodec, LearnedModel

    class Checked(LearnedCodec):
        id, code = "cross-device", 250

    return Checked(quality, model=LearnedModel.from_file(weights).to(device))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def encode(args: argparse.Namespace) -> int:
    import torch

    from jobs.rd_benchmark import load_images

    images = load_images(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows, streams, recon = [], {}, {}
    for quality in args.qualities:
        dev, cpu = _codec(args.weights, quality, args.device), _codec(args.weights, quality, "cpu")
        for name, image in images:
            t0 = time.perf_counter()
            stream = dev.encode_batch([image])[0]
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            on_dev = dev.decode_batch([stream])[0]
            on_cpu = cpu.decode_batch([stream])[0]
            diff = int(np.abs(on_dev.image.astype(np.int16) - on_cpu.image).max())
            rows.append({"image": name, "quality": quality, "bytes": len(stream),
                         "encode_s": round(t1 - t0, 4),
                         "content_device": _sha(on_dev.content), "content_cpu": _sha(on_cpu.content),
                         "recon_device": _sha(on_dev.image.tobytes()),
                         "recon_cpu": _sha(on_cpu.image.tobytes()), "max_diff_device_cpu": diff})
            streams[f"{quality}/{name}"] = np.frombuffer(stream, np.uint8)
            if quality == args.keep_recon and (args.recon_images is None
                                               or len(recon) < args.recon_images):
                recon[name] = on_dev.image
            print(f"[cross-device] q{quality} {name}: {len(stream)} B, device/cpu max diff {diff}",
                  flush=True)
    np.savez(out / "streams.npz", **streams)
    names = sorted(recon)
    for part, start in enumerate(range(0, len(names), RECON_PER_FILE)):
        np.savez_compressed(out / f"recon-{part}.npz",
                            **{n: recon[n] for n in names[start:start + RECON_PER_FILE]})
    summary = {"device": args.device, "device_name": _device_name(args.device),
               "weights_sha256": hashlib.sha256(Path(args.weights).read_bytes()).hexdigest(),
               "torch": torch.__version__, "kept_recon_quality": args.keep_recon, "rows": rows}
    (out / "cross_device.json").write_text(json.dumps(summary, indent=1))
    bad = [r for r in rows if r["content_device"] != r["content_cpu"] or r["max_diff_device_cpu"] > 1]
    print(f"[cross-device] {len(rows)} streams; symbols differ or pixels >1 level off: {len(bad)}")
    return 1 if bad else 0


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    import platform

    return platform.processor() or platform.machine()


def decode(args: argparse.Namespace) -> int:
    import torch

    folder = Path(args.dir)
    summary = json.loads((folder / "cross_device.json").read_text())
    sha = hashlib.sha256(Path(args.weights).read_bytes()).hexdigest()
    if sha != summary["weights_sha256"]:
        print(f"weights {args.weights} are not the ones the streams were made with", file=sys.stderr)
        return 2
    streams = np.load(folder / "streams.npz")
    recon: dict[str, np.ndarray] = {}
    for path in sorted(folder.glob("recon-*.npz")):
        recon.update(dict(np.load(path)))
    codecs: dict[float, object] = {}
    results = []
    for row in summary["rows"]:
        q = row["quality"]
        codec = codecs.setdefault(q, _codec(Path(args.weights), q, "cpu"))
        here = codec.decode_batch([streams[f"{q}/{row['image']}"].tobytes()])[0]
        diff = None
        if q == summary["kept_recon_quality"] and row["image"] in recon:
            kept = recon[row["image"]]
            diff = (int(np.abs(here.image.astype(np.int16) - kept).max())
                    if kept.shape == here.image.shape else 255)
        results.append({**row, "content_here": _sha(here.content),
                        "recon_here": _sha(here.image.tobytes()), "max_diff_device_here": diff})
    lines = _report(summary, results, torch.__version__)
    print("\n".join(lines))
    if args.report:
        Path(args.report).write_text("\n".join(lines) + "\n")
    bad = [r for r in results if r["content_here"] != r["content_device"]
           or (r["max_diff_device_here"] or 0) > 1 or r["max_diff_device_cpu"] > 1]
    return 1 if bad else 0


def _report(summary: dict, results: list[dict], torch_here: str) -> list[str]:
    lines = [
        "# Encode on one device, decode on another",
        "",
        f"Streams encoded on {summary['device']} ({summary['device_name']}, torch "
        f"{summary['torch']}); weights sha256 `{summary['weights_sha256'][:16]}…`; decoded "
        f"there (device and its CPU) and here (torch {torch_here}, CPU).",
        "",
        "| quality | streams | bytes (mean) | symbols equal device/its CPU | symbols equal here | "
        "max px diff device vs its CPU | max px diff device vs here | recon identical here vs "
        "device's CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for q in sorted({r["quality"] for r in results}):
        rs = [r for r in results if r["quality"] == q]
        diffs = [r["max_diff_device_here"] for r in rs if r["max_diff_device_here"] is not None]
        kept = f"{max(diffs)} (over {len(diffs)} kept)" if diffs else "not kept"
        lines.append(
            f"| {q} | {len(rs)} | {np.mean([r['bytes'] for r in rs]):.0f} | "
            f"{sum(r['content_device'] == r['content_cpu'] for r in rs)}/{len(rs)} | "
            f"{sum(r['content_here'] == r['content_device'] for r in rs)}/{len(rs)} | "
            f"{max(r['max_diff_device_cpu'] for r in rs)} | {kept} | "
            f"{sum(r['recon_here'] == r['recon_cpu'] for r in rs)}/{len(rs)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("encode", help="encode and decode on this machine's device and CPU")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--images", type=Path, required=True, help="folder of images (e.g. Kodak)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--qualities", type=float, nargs="+", default=[2.0, 4.0, 6.0])
    p.add_argument("--keep-recon", type=float, default=4.0,
                   help="keep the device's reconstructions at this quality")
    p.add_argument("--recon-images", type=int,
                   help="keep reconstructions of only the first N images (default: all)")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("decode", help="decode another machine's streams here and compare")
    p.add_argument("--weights", type=Path, required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--report", type=Path, help="write the markdown table here")
    args = parser.parse_args(argv)
    return encode(args) if args.cmd == "encode" else decode(args)


if __name__ == "__main__":
    sys.exit(main())
