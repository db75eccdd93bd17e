"""Benchmarks. Four modes:

    python -m jobs.benchmark --dataset DIR --out OUT [--anchors ../shared/anchors]     # rate-distortion
    python -m jobs.benchmark codecs --images DIR --out OUT                            # through the pipeline
    python -m jobs.benchmark --pipeline [--images DIR] [--codec webp]                 # pipeline vs bare codec
    python -m jobs.benchmark --perceptual --dataset DIR --out OUT                      # perceptual RD

The first (``rd``, the default) is ``jobs.rd_benchmark``: bare codecs at several qualities.
The second (``codecs``): every codec through the real pipeline, on one image set.
The third (``pipeline``, also ``--pipeline``) is ``jobs.pipeline_benchmark``: compress/restore
throughput against the bare codec, peak RSS per worker, bytes per row, 1 vs 2 actors.
The fourth (``--perceptual``) is ``jobs.perceptual_benchmark``: low rates, DISTS and LPIPS.

For each codec (at its default quality, or at ``--quality`` where given) the images are packed
into WebDataset shards, compressed with ``compress`` on Ray, restored and verified; the
archive's own figures are reported. All codecs run in the same process on the same shards, so
the ratios between rows are the meaningful comparison on a noisy machine.

Writes ``OUT/results.json`` and ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from models.registry import list_codecs
from pipeline.compress import compress
from pipeline.restore import restore
from pipeline.runner import RayOptions, ensure_ray
from pipeline.shard_encode import Guard
from pipeline.tars import Sample, write_samples
from pipeline.verify import verify

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp"}


def pack_images(images: Path, out: Path, shards: int) -> int:
    files = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"no images in {images}")
    out.mkdir(parents=True, exist_ok=True)
    per = -(-len(files) // shards)
    for i in range(shards):
        group = files[i * per:(i + 1) * per]
        samples = [Sample(p.stem, [(p.suffix[1:].lower(), p.read_bytes()),
                                   ("json", json.dumps({"file": p.name}).encode())])
                   for p in group]
        with open(out / f"bench-{i:06d}.tar", "wb") as f:
            write_samples(f, samples)
    return len(files)


def trained_on(codec_id: str, images: Path) -> bool:
    """Whether a learned codec was trained on this folder's images: the hyperprior codecs are
    trained by ``jobs.train`` on every image of its ``TRAIN_SETS`` folders, so a benchmark on
    one of them measures images the codec has seen, not an archive it has not."""
    from jobs.train import TRAIN_SETS

    kinds = {c.id: c.kind for c in list_codecs()}
    return kinds.get(codec_id) == "learned" and images.resolve().name in TRAIN_SETS


def run_codecs(images: Path, out: Path, codecs: list[str], shards: int, quality: dict,
               guard: Guard | None = None) -> dict:
    work = Path(tempfile.mkdtemp(prefix="latentarc-bench-"))
    try:
        n = pack_images(images, work / "src", shards)
        # Ray once, before any timing: compress starts it only if it is not running, so the
        # first codec's seconds used to include it (jpeg: 18.4 s against webp's 8.2).
        ensure_ray(RayOptions())
        results = []
        for codec in codecs:
            archive = work / f"arc-{codec}"
            started = time.monotonic()
            report = compress([str(work / "src")], str(archive), codec, quality.get(codec),
                              progress=False, guard=guard or Guard(size=False))
            compress_s = time.monotonic() - started
            if not report.ok:
                raise SystemExit(f"{codec}: compress failed: {report.failed}")
            started = time.monotonic()
            back = restore(str(archive), str(work / f"out-{codec}"), progress=False)
            restore_s = time.monotonic() - started
            checked = verify(str(archive), progress=False)
            t = report.totals
            results.append({
                "codec": codec, "quality": report.quality, "images": t["samples"],
                "compressed": t["compressed"], **_image_bytes(archive),
                "passthrough": t["passthrough"], "source_bytes": t["source_bytes"],
                "archive_bytes": t["archive_bytes"], "bitstream_bytes": t["bitstream_bytes"],
                "ratio": t["ratio"], "mean_bpp": t["mean_bpp"], "mean_psnr": t["mean_psnr"],
                "compress_seconds": round(compress_s, 2), "restore_seconds": round(restore_s, 2),
                "restored_ok": back.ok, "verify_ok": checked.ok,
                "trained_on_these_images": trained_on(codec, images),
            })
            print(f"{codec}: ratio {t['ratio']:.2f}, {t['compressed']}/{t['samples']} coded, "
                  f"bpp {t['mean_bpp']}, PSNR {t['mean_psnr']}", flush=True)
        return {"images": n, "image_dir": str(images), "shards": shards,
                "guard": None if guard is None else {"size": guard.size, "min_psnr": guard.min_psnr},
                "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
                "python": platform.python_version(), "results": results}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _image_bytes(archive: Path) -> dict:
    """Original vs stored bytes of the image members, and the worst row's stored/original."""
    import pyarrow.parquet as pq

    from jobs.payload_bytes import stored_payload

    original = stored = rows = 0
    worst = 0.0
    by_codec: dict[str, int] = {}  # ok rows by the codec that coded them (guard fallbacks too)
    table = pq.read_table(archive / "shards", columns=["status", "bytes", "orig_size", "codec"])
    for row in table.to_pylist():
        rows += 1
        if row["status"] == "ok":
            by_codec[row["codec"]] = by_codec.get(row["codec"], 0) + 1
        if row["orig_size"]:
            kept = row["bytes"] if row["status"] == "ok" else row["orig_size"]
            original += row["orig_size"]
            stored += kept
            worst = max(worst, kept / row["orig_size"])
    files = payload = 0
    for path in (archive / "shards").glob("*.parquet"):
        files += path.stat().st_size
        part = stored_payload(path)
        payload += part["stored_bitstream_bytes"] + part["stored_member_bytes"]
    return {"original_image_bytes": original, "stored_image_bytes": stored,
            "rows_by_codec": dict(sorted(by_codec.items())),
            "image_ratio": original / stored if stored else None, "largest_row_vs_original": worst,
            # everything in the shard files but bitstreams and kept members (as stored), per row
            "overhead_bytes_per_row": (files - payload) / rows if rows else None}


def to_markdown(summary: dict, command: str) -> str:
    lines = [
        f"# Codecs through the pipeline: {summary['images']} images from {Path(summary['image_dir']).name}",
        "",
        f"Command: `{command}`",
        "",
        "`compress` on in-process Ray, then `restore` and `verify`. Guard: "
        + ("off (every image through the codec)" if not summary.get("guard")
           else f"size on, min PSNR {summary['guard']['min_psnr']}") + ".",
        "Image MB = the original image members; image ratio = original image bytes / stored image bytes",
        "(bitstreams, or the original bytes of passthrough samples); worst row = largest stored/original;",
        "overhead = shard-file bytes beyond bitstreams and kept members as stored, per row (Parquet, zstd).",
        "Coded / all = rows stored as a bitstream, by the codec or, where the guard kept a JPEG out,",
        "by jpeg-lossless (the split in brackets).",
        "MB in = the source WebDataset shards; MB out = the archive's Parquet files (bitstreams,",
        "kept members, row metadata). Seconds include starting each codec's actors (Ray itself is "
        "started before the first codec); compare ratios.",
        "",
        "| codec | quality | MB in | MB out | ratio | coded / all | image ratio | worst row | mean bpp "
        "| mean PSNR (dB) | overhead B/row | compress s | restore s | verify |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    seen = [r["codec"] for r in summary["results"] if r.get("trained_on_these_images")]
    if seen:
        lines[1:1] = ["", f"**In-sample: {', '.join(seen)} trained on every image of this "
                      "folder** (`jobs.train`'s training sets), so its figures here are not those "
                      "of an archive it has not seen."]
    for r in summary["results"]:
        if not r["compressed"]:
            psnr = "-"
        else:
            psnr = "lossless" if r["mean_psnr"] is None else f"{r['mean_psnr']:.2f}"
        quality = "-" if r["quality"] is None else f"{r['quality']:g}"
        image_ratio = r["image_ratio"] or float("nan")
        bpp = "-" if r["mean_bpp"] is None else f"{r['mean_bpp']:.3f}"
        split = r.get("rows_by_codec") or {}
        coded = f"{r['compressed']}/{r['images']}" + (
            " (" + ", ".join(f"{n} {c}" for c, n in split.items()) + ")" if len(split) > 1 else "")
        lines.append(
            f"| {r['codec']} | {quality} | {r['source_bytes'] / 1e6:.2f} | {r['archive_bytes'] / 1e6:.2f} "
            f"| {r['ratio']:.2f} | {coded} | {image_ratio:.2f} "
            f"| {r['largest_row_vs_original']:.2f} | {bpp} | {psnr} | {r['overhead_bytes_per_row']:.0f} "
            f"| {r['compress_seconds']:.1f} "
            f"| {r['restore_seconds']:.1f} | {'OK' if r['verify_ok'] else 'FAILED'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "python -m jobs.benchmark " + " ".join(argv)
    if argv and argv[0] in ("pipeline", "--pipeline"):
        from jobs.pipeline_benchmark import main as run_pipeline_benchmark

        return run_pipeline_benchmark(argv[1:])
    if argv and argv[0] in ("perceptual", "--perceptual"):
        from jobs.perceptual_benchmark import main as run_perceptual_benchmark

        return run_perceptual_benchmark(argv[1:])
    if not argv or argv[0] not in ("codecs", "rd", "-h", "--help"):
        argv = ["rd", *argv]
    parser = argparse.ArgumentParser(prog="python -m jobs.benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("rd", help="rate-distortion of bare codecs (the default mode)")
    p.add_argument("--dataset", required=True, type=Path, help="directory of images")
    p.add_argument("--out", type=Path, required=True,
                   help="results directory (the committed results are under benchmarks/: name "
                   "a new folder unless you mean to replace them)")
    p.add_argument("--codecs", nargs="+", default=["jpeg", "webp", "avif"],
                   help="codec ids (jpeg/webp/avif are the benchmark baselines: WebP method 6); "
                   "CODEC+effortN encodes a learned codec with --effort N (latent refinement)")
    p.add_argument("--anchors", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "anchors",
                   help="folder with bdrate.py and kodak/*.json (skipped when missing)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--qualities", action="append", default=[], metavar="CODEC=Q1,Q2,...",
                   help="qualities of one codec (default: its benchmark set); repeatable")
    p = sub.add_parser("codecs", help="every codec through compress/restore/verify")
    p.add_argument("--images", required=True, type=Path, help="directory of images")
    p.add_argument("--out", required=True, type=Path, help="where results.json/md go")
    p.add_argument("--codecs", nargs="+", default=[c.id for c in list_codecs()],
                   help="codec ids (default: every registered codec)")
    p.add_argument("--shards", type=int, default=3, help="shards the images are split into (default 3)")
    p.add_argument("--quality", action="append", default=[], metavar="CODEC=Q",
                   help="quality for one codec (default: the codec's default); repeatable")
    p.add_argument("--guard", action="store_true",
                   help="compress as users do: size guard on (and --min-psnr), JPEG fallback")
    p.add_argument("--min-psnr", type=float, help="with --guard: compress's --min-psnr (default: off)")
    sub.add_parser("pipeline", add_help=False,
                   help="pipeline vs bare codec: throughput, worker RSS, bytes/row, 1 vs 2 actors "
                        "(also --pipeline; see `python -m jobs.benchmark --pipeline --help`)")
    sub.add_parser("perceptual", add_help=False,
                   help="bpp vs DISTS / LPIPS / PSNR at low rates, generative codecs included "
                        "(also --perceptual; see `python -m jobs.benchmark --perceptual --help`)")
    args = parser.parse_args(argv)
    if args.mode == "rd":
        from jobs.rd_benchmark import run as run_rd

        qualities = {k: [float(x) for x in v.split(",")]
                     for k, v in (q.split("=", 1) for q in args.qualities)}
        anchors = args.anchors if args.anchors.exists() else None
        run_rd(args.dataset, args.out, args.codecs,
               anchors, args.limit, qualities, command)
        return 0
    quality = {k: float(v) for k, v in (q.split("=", 1) for q in args.quality)}
    guard = Guard(size=True, min_psnr=args.min_psnr) if args.guard else None
    summary = run_codecs(args.images, args.out, args.codecs, args.shards, quality, guard)
    summary["command"] = command
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / "results.md").write_text(to_markdown(summary, command))
    print(to_markdown(summary, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
