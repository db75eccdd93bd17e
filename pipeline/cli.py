"""The ``latentarc`` command line: compress, restore, verify, info, codecs.

Each verb is a thin wrapper over the Python function of the same name, and ``python -m
jobs.<verb>`` runs the same code for ``ray job submit``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import select
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from models.codec import CodecError
from pipeline import interrupt
from pipeline.archive_format import MANIFEST, STATS, FormatError, read_json, read_manifest
from pipeline.errors import Refused
from pipeline.progress import failed_line
from pipeline.runner import RayOptions
from pipeline.sources import SourceError
from pipeline.storage import StorageError, StorageOptions, exists, join, missing_credentials
from pipeline.tars import NOT_RETRYABLE
from pipeline.where import FILTERABLE, OPS

EXIT_OK, EXIT_INCOMPLETE, EXIT_REFUSED = 0, 1, 2

EXIT_CODES = """exit codes:
  0  done: every input shard is accounted for (verify: every row checks out)
  1  ran, but some shard failed or some row is bad (each is named with shard and key), or a
     key that --keys asked for was not found, or restore --skip-damaged left rows out
  2  refused: bad arguments (a missing SRC or --keys or --storage-config file, actors that
     no node can place), changed codec, quality or weights on resume, a shard of the same
     name from another source, unknown archive version, a damaged manifest, restore over
     existing output without --overwrite, an object store without credentials or that
     refuses them
  141  stdout is a pipe whose reader stopped reading (`latentarc info ARCHIVE | head`)
  130, 143  stopped by Ctrl-C (SIGINT) or SIGTERM (`ray job stop`, `timeout`, `kill`): the
     actors are stopped, finished shards are kept, and one line says what is left; compress
     records the run in _stats.json and a rerun of the same command does the rest

object stores: URLs are fsspec URLs (s3://bucket/prefix, gs://..., file paths). Only
non-secret options are taken by flag or config (--endpoint-url, --region, --storage-option,
--storage-config); credentials come from the environment (AWS_ACCESS_KEY_ID, ...) or the usual
credential files, never from flags, because a `ray job submit` entrypoint is stored in Ray's
job table. AWS_ENDPOINT_URL is honoured when --endpoint-url is not given."""


def _add_storage(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("object store (non-secret options only)")
    g.add_argument("--endpoint-url", help="S3-compatible endpoint, e.g. http://127.0.0.1:8333")
    g.add_argument("--region", help="object store region")
    g.add_argument("--storage-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra fsspec option (value parsed as JSON when it is JSON); repeatable")
    g.add_argument("--storage-config", metavar="FILE",
                   help="JSON file of fsspec options (endpoint_url, region, ...)")


def _auto_number(text: str) -> float | None:
    """A resource option's value: a number >= 0, or "auto" (None: derived from the cluster)."""
    if text == "auto":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number or auto, not {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {text}")
    return value


def _add_ray(p: argparse.ArgumentParser, gpus: bool = True) -> None:
    g = p.add_argument_group("Ray")
    g.add_argument("--ray-address", help="cluster address (default: RAY_ADDRESS, else in-process Ray)")
    g.add_argument("--actors", type=int,
                   help=("codec actors (default: one per cluster CPU, or per GPU share with GPU "
                         "actors; at most one per shard)") if gpus else
                        "checking actors (default: one per cluster CPU; at most one per shard)")
    g.add_argument("--cpus-per-actor", type=_auto_number, default=None, metavar="N|auto",
                   help="CPUs reserved per actor (default auto: 0.5 for CPU actors, so that with "
                        "the default count, one per CPU, each actor's torch gets one thread"
                        + ("; for GPU actors an equal share of their node's CPUs, less half a CPU)"
                           if gpus else ")"))
    if gpus:  # verify decodes on CPUs: a GPU it reserved would sit idle
        g.add_argument("--gpus-per-actor", type=_auto_number, default=None, metavar="N|auto",
                       help="GPUs per actor; fractions share one device (default auto: 0.5, "
                            "two actors per GPU, for the learned codecs where the cluster has "
                            "GPUs; else 0). 0 keeps every actor on CPUs")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress lines")


def _version() -> str:
    try:
        return importlib.metadata.version("latentarc")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latentarc",
        description="Compress WebDataset image shards into a Parquet archive of codec "
        "bitstreams, and restore them.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"latentarc {_version()}")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("compress", help="compress shards into an archive (resumable)",
                       description="Compress WebDataset shards into ARCHIVE, one Parquet file per "
                       "shard. Rerunning on the same ARCHIVE redoes only shards whose file is "
                       "missing or unreadable (footer, row count; --redo names others, e.g. "
                       "those `latentarc verify` finds damaged); another codec or quality than "
                       "the archive's is refused.",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="SRC",
                   help="shard URL, brace list (s3://b/p/shard-{000000..000009}.tar), glob, or "
                   "a directory/prefix holding *.tar shards")
    p.add_argument("archive", metavar="ARCHIVE", help="archive URL (directory or prefix)")
    p.add_argument("--codec", default=None,
                   help="codec id (see `latentarc codecs`; default: the registry's default codec)")
    p.add_argument("--quality", type=float,
                   help="codec quality (default: the codec's own; both are listed by "
                   "`latentarc codecs`)")
    p.add_argument("--effort", type=int, default=None, metavar="STEPS",
                   help="encode-time optimisation steps per image, for codecs that take it: "
                   "gan-latent (refinement of the generator latent; default 60) and the "
                   "hyperprior codecs (refinement of the latent for rate and distortion; "
                   "default 0; 20, the setting measured best, saves a few %% of the bytes at "
                   "equal PSNR and encodes about 40x slower on a CPU). Decoding and the "
                   "bitstream format are unaffected")
    p.add_argument("--effort-for", default="faithful", metavar="DECODER",
                   help="the decoder a hyperprior codec's refinement aims at: faithful (default; "
                   "rate + MSE) or realistic (rate + MSE + LPIPS-alex through the realistic "
                   "decoder; --effort defaults to 40 then). Either decoder still restores the "
                   "archive, but its streams suit the one named: on Kodak at quality -1 (0.109 "
                   "bpp), restored with --decoder realistic, DISTS is 20.8%% below the faithful "
                   "decoder's at the same bytes (unrefined: 15.9%%), PSNR not lower; restored "
                   "faithfully, about 0.2 dB below an unrefined stream of that size. About 45 s "
                   "per Kodak image on 2 CPU cores (benchmarks/perceptual/kodak-v5/). Images "
                   "above 0.52 MP (padded; 1 MP for the faithful aim) are refined tile by tile: "
                   "a worker's memory stays that of one tile, the time grows with the pixels "
                   "(benchmarks/perceptual/wikipedia-tiled/)")
    p.add_argument("--effort-max-mp", type=float, default=None, metavar="MP",
                   help="hyperprior codecs with --effort: images above this many megapixels are "
                   "coded unrefined, as with --effort 0, and counted in the run's figures "
                   "(default: 16 on CPU workers, none on GPU workers; inf refines every "
                   "image). Refinement time grows with the pixels: on 2 CPU cores about 30 s "
                   "per MP at --effort 20 and 225 s per MP for the realistic decoder's 40 "
                   "steps, so this bounds one photo's encode; on an H200 0.2 and 0.4 s per MP")
    p.add_argument("--min-psnr", type=float,
                   help="store an image losslessly (passthrough) when its decode falls below this "
                   "PSNR in dB (default: off)")
    p.add_argument("--max-pixels", type=float, default=40e6,
                   help="images above this many pixels are kept as they are, never decoded "
                   "(bounds a worker's memory; default 40e6)")
    p.add_argument("--no-size-guard", action="store_true",
                   help="keep bitstreams even when not smaller than the original image bytes "
                   "(default: such images are stored as their original bytes)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help="samples per codec batch (default 8, on CPU and GPU actors alike: measured "
                   "no faster with 32 on a GPU, benchmarks/pipeline/gpu; 4 for the Pillow codecs, "
                   "which code one image at a time)")
    p.add_argument("--batch-mp", type=float, default=None, metavar="MP",
                   help="decoded megapixels per codec batch; a batch ends at whichever bound comes "
                   "first (default 16). A worker holds two or "
                   "three batches of pixels: the one read ahead, the one being encoded and, for "
                   "images up to 1 MP, the one being checked")
    p.add_argument("--no-prefetch", action="store_true",
                   help="read and decode samples in the codec's thread instead of one batch ahead "
                   "in a reader thread: one batch less memory per worker, slower on CPU")
    p.add_argument("--no-check-thread", action="store_true",
                   help="decode each batch's bitstreams again (for PSNR and the content hash) in "
                   "the codec's thread instead of in a thread beside it while the codec encodes "
                   "the next batch (batches of images up to 1 MP; larger ones are always coded "
                   "alone): one batch less memory per worker, slower where there is a core or a "
                   "GPU to overlap with")
    p.add_argument("--redo", nargs="+", default=[], metavar="SHARD",
                   help="compress these shards again although their files are finished, e.g. "
                   "the ones `latentarc verify` found damaged (a rerun redoes only missing or "
                   "unreadable files: damage inside a file's pages shows only when every row is "
                   "read). Names without .tar; their SRC must be given too. Each file is "
                   "replaced only once its new one is written. Put it after ARCHIVE: it takes "
                   "every name that follows")
    p.add_argument("--metrics", default="", metavar="NAMES",
                   help="extra per-row metrics beside PSNR, comma-separated: lpips (LPIPS-alex of "
                   "the decode against the source, in the nullable column `lpips`; filter with "
                   "--where \"lpips < 0.2\"). Off by default: one AlexNet forward per image; needs "
                   "the weights from `python -m jobs.fetch_weights`")
    _add_storage(p)
    _add_ray(p)

    p = sub.add_parser("restore", help="restore an archive (or part of it) to WebDataset shards",
                       description="Write WebDataset shards with the original names and keys. "
                       "Non-image members and passthrough samples come back byte-identical; images "
                       "are decoded, checked against their content hash, and written in their "
                       "original format (lossless formats losslessly, JPEG at --jpeg-quality).",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("archive", metavar="ARCHIVE", help="archive URL (directory or prefix)")
    p.add_argument("destination", metavar="DST", help="directory or prefix for the restored shards")
    p.add_argument("--shards", nargs="+", metavar="SHARD",
                   help="only these shards (names without .tar, as `latentarc info --json` lists them)")
    p.add_argument("--keys", metavar="FILE", help="only these keys: one per line, `key` or `shard<TAB>key`")
    p.add_argument("--where", metavar="FILTER",
                   help="only rows matching COLUMN OP VALUE [and ...], e.g. \"bpp < 0.3 and "
                   "status == 'ok'\"; pushed down to Parquet row-group statistics. OP: "
                   + " ".join(OPS) + "; text values in quotes. Columns: "
                   + ", ".join(sorted(FILTERABLE)) + ". status is 'ok' (coded) or "
                   "'passthrough' (stored as it came, reason says why); lpips is empty "
                   "unless compress ran with --metrics lpips; a filter that matches no row "
                   "restores nothing (exit 0)")
    p.add_argument("--layout", choices=["webdataset", "files"], default="webdataset",
                   help="webdataset: shards with the original names (default); "
                   "files: DST/<shard>/<key>.<ext> image files")
    p.add_argument("--image-format", choices=["png", "jpeg", "webp", "bmp", "tiff"],
                   help="write every decoded image in this format (every one but jpeg is "
                   "written losslessly: the exact decoded pixels; jpeg at --jpeg-quality); "
                   "passthrough samples keep their original bytes and format")
    p.add_argument("--jpeg-quality", type=int, default=95, help="quality for JPEG output (default 95)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace shards (or, with --layout files, shard directories) that DST "
                   "already has; without it such a restore is refused (exit 2), so that restoring "
                   "into the source folder cannot replace the originals")
    p.add_argument("--skip-damaged", action="store_true",
                   help="restore what checks out of a shard with damaged rows: each row that "
                   "fails its checks (CRC, decode, content hash), and the rest of a row group "
                   "whose pages cannot be read, is left out and named (exit 1). Without it such "
                   "a shard is not written at all")
    p.add_argument("--decoder", default="faithful", metavar="faithful|realistic[:R]",
                   help="which decoder turns the stored bitstreams into pixels. faithful (default): "
                   "the decoder the codec was trained and measured with (the archive's PSNR); "
                   "realistic: the same bitstreams through a synthesis trained for appearance "
                   "(sharper texture, typically lower PSNR), for learned codecs that have one (`latentarc "
                   "codecs` lists them); realistic:R with R in 0..1: a decoder in between (the two "
                   "syntheses' weights interpolated; R=0 is faithful, R=1 realistic). Rows are "
                   "checked the same way either way; passthrough and "
                   "jpeg-lossless rows come back byte-identical. Refused (exit 2) when the "
                   "archive's codec has no such decoder")
    _add_storage(p)
    _add_ray(p)

    p = sub.add_parser("verify", help="decode every row and check it against its content hash",
                       description="Decode every row and check it against its content hash "
                       "(always with the faithful decoder: every decoder of a codec yields the same "
                       "symbols, which is what the hash covers).",
                       epilog=EXIT_CODES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("archive", metavar="ARCHIVE", help="archive URL (directory or prefix)")
    _add_storage(p)
    _add_ray(p, gpus=False)

    p = sub.add_parser("info", help="show an archive's manifest and figures",
                       description="Show an archive's status, codec, totals (samples, bytes, "
                       "ratio, bpp, PSNR), its shards and last compress run (failures, "
                       "interrupted attempts) and its passthrough samples with their reasons. "
                       "Reads only _archive.json and _stats.json.",
                       epilog="exit codes: 0 complete archive; 1 compress has not finished (the "
                       "last run's failures are listed); 2 not a latentarc archive, or an "
                       "unknown format version")
    p.add_argument("archive", metavar="ARCHIVE", help="archive URL (directory or prefix)")
    p.add_argument("--json", action="store_true", help="print the manifest and stats as JSON")
    _add_storage(p)

    sub.add_parser("codecs", help="list codec ids, kinds, quality ranges and decoders")
    return parser


def _storage(args: argparse.Namespace) -> StorageOptions:
    return StorageOptions.from_config(args.storage_config, args.endpoint_url, args.region,
                                      args.storage_option)


def _ray(args: argparse.Namespace) -> RayOptions:
    if args.actors is not None and args.actors < 1:
        raise Refused(f"--actors must be 1 or more, not {args.actors} (leave it out for the "
                      "default count)")
    return RayOptions(args.ray_address, args.actors, args.cpus_per_actor,
                      getattr(args, "gpus_per_actor", None))


def _fmt(value: float | None, spec: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _lpips_of(totals: dict[str, Any]) -> str:
    """Over how many images the LPIPS mean is, where not all (shards added by a run without
    --metrics lpips, or images the network cannot score): the mean alone read as the
    archive's."""
    counted, compressed = totals.get("lpips_count"), totals.get("compressed", 0)
    if counted is None or counted >= compressed:
        return ""
    return (f" (of {counted} of the {compressed} coded images; the others have none: a run "
            "without --metrics lpips, or too small to score)")


def summary_table(totals: dict[str, Any], archive: str | None,
                  extra: list[tuple[str, str]] | None = None) -> str:
    """The one table users read after a run; ``extra`` rows (the demo's restore and verify)
    are aligned with it. Its first line counts samples, not images: a passthrough sample may
    hold no image at all."""
    rows = [
        ("samples", str(totals.get("samples", 0))),
        ("compressed / passthrough", f"{totals.get('compressed', 0)} / {totals.get('passthrough', 0)}"),
        ("MB in (source shards)", _fmt(totals.get("source_bytes", 0) / 1e6, ".2f")),
        ("MB out (archive files)", _fmt(totals.get("archive_bytes", 0) / 1e6, ".2f")),
        ("ratio", _fmt(totals.get("ratio"), ".2f")),
        # archives written before session 26 have no "bpp" in their totals
        *([("bpp (coded bits / pixels)", _fmt(totals["bpp"], ".3f"))] if "bpp" in totals else []),
        ("mean bpp per image", _fmt(totals.get("mean_bpp"), ".3f")),
        ("mean PSNR per image (dB)", _fmt(totals.get("mean_psnr"), ".2f")),
        *([("mean LPIPS-alex per image", _fmt(totals["mean_lpips"], ".4f") + _lpips_of(totals))]
          if "mean_lpips" in totals else []),
        *([("archive", archive)] if archive is not None else []),
        *(extra or []),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def _cmd_compress(args: argparse.Namespace) -> int:
    from models.registry import DEFAULT_CODEC
    from pipeline.compress import compress
    from pipeline.shard_encode import Batching, Guard

    # not given: the defaults (shard_encode.Batching). 0 was taken silently for them, and so
    # was a --batch-mp below one pixel.
    if args.batch_size is not None and args.batch_size < 1:
        raise Refused("--batch-size must be at least 1 (leave it out for the default)")
    if args.batch_mp is not None and not (1e-6 <= args.batch_mp < math.inf):  # nan fails too
        raise Refused("--batch-mp must be a finite number of megapixels, at least 1e-6 (one "
                      "pixel; leave it out for the default)")
    if args.min_psnr is not None and not math.isfinite(args.min_psnr):
        raise Refused("--min-psnr must be a finite number of dB (nan would turn the guard off)")
    if not math.isfinite(args.max_pixels) or args.max_pixels < 1:
        raise Refused("--max-pixels must be a finite number of pixels, at least 1: it bounds "
                      "what one image may take of a worker's memory")
    batching = Batching(args.batch_size or 0, round((args.batch_mp or 0) * 1e6),  # 0: default
                        prefetch=not args.no_prefetch, check_thread=not args.no_check_thread)
    report = compress(args.sources, args.archive, args.codec or DEFAULT_CODEC, args.quality,
                      _storage(args), _ray(args), progress=not args.quiet,
                      guard=Guard(not args.no_size_guard, args.min_psnr,
                                  max_pixels=int(args.max_pixels)),
                      metrics=tuple(m.strip() for m in args.metrics.split(",") if m.strip()),
                      effort=args.effort, batching=batching, effort_for=args.effort_for,
                      effort_max_pixels=(None if args.effort_max_mp is None
                                         else args.effort_max_mp * 1e6),
                      redo=args.redo)
    print(f"compress: {len(report.done)} shard(s) done, {len(report.skipped)} skipped "
          f"(already finished), {len(report.failed)} failed, in {report.seconds:.1f} s")
    print(summary_table(report.totals, report.archive))
    if report.totals.get("passthrough"):
        print(f"  ({report.totals['passthrough']} sample(s) stored as they came, each with its "
              f"reason: `latentarc info {report.archive}` lists them)")
    if report.failed:
        for name, error in report.failed.items():
            print(failed_line(name, error), file=sys.stderr)
        mine = [n for n in report.failed if n in set(report.shards)]
        if mine:
            # e.g. a compressed shard: its error says so, and a rerun meets it again
            fix_first = sum(NOT_RETRYABLE in report.failed[n] for n in mine)
            if fix_first == len(mine):
                then = ("fix their sources first (FAILED above), then rerun the same command; "
                        "a rerun alone meets the same errors")
            else:
                first = f" ({fix_first} of them need their source fixed first)" if fix_first else ""
                then = f"rerun the same command to retry them{first}"
            print(f"latentarc: {len(mine)} of {len(report.shards)} shards not compressed; {then}",
                  file=sys.stderr)
        if others := len(report.failed) - len(mine):
            print(f"latentarc: {others} shard file(s) in the archive from other sources are "
                  "damaged (FAILED above): compress again with their sources, or delete them",
                  file=sys.stderr)
        return EXIT_INCOMPLETE
    return EXIT_OK


def _cmd_restore(args: argparse.Namespace) -> int:
    from pipeline.restore import restore

    if not 1 <= args.jpeg_quality <= 100:
        raise Refused(f"--jpeg-quality must be 1..100, not {args.jpeg_quality}")
    report = restore(args.archive, args.destination, args.shards, args.keys, args.image_format,
                     args.jpeg_quality, _storage(args), _ray(args), progress=not args.quiet,
                     where=args.where, layout=args.layout, decoder=args.decoder,
                     overwrite=args.overwrite, skip_damaged=args.skip_damaged)
    samples = sum(report.written.values())
    pushed = f"; {report.row_groups_skipped} row group(s) skipped by --where" if args.where else ""
    decoder = f" ({args.decoder} decoder)" if args.decoder != "faithful" else ""
    print(f"restore: {samples} sample(s) from {len(report.outputs)} shard(s) written to "
          f"{report.destination}{decoder} in {report.seconds:.1f} s{pushed}")
    for name, error in report.failed.items():
        print(failed_line(name, error), file=sys.stderr)
    if report.excluded_keys:
        shown = ", ".join(report.excluded_keys[:10])
        print(f"restore: {len(report.excluded_keys)} requested key(s) excluded by --where: "
              f"{shown}")
    if report.missing_keys:
        shown = ", ".join(report.missing_keys[:10])
        where = "the selected shards" if args.shards else "the archive"
        if report.failed:  # a key of a shard that failed was not looked for
            where = f"the shards restored ({len(report.failed)} failed, and may hold them)"
        print(f"latentarc: {len(report.missing_keys)} requested key(s) not in {where}: {shown}",
              file=sys.stderr)
    lost = [f"{name} {problem}" for name, problems in report.damaged.items() for problem in problems]
    for line in lost[:50]:
        print(f"DAMAGED {line}", file=sys.stderr)
    if lost:
        more = " (the first 50 above)" if len(lost) > 50 else ""
        empty = sorted(set(report.damaged) - set(report.outputs))
        none = (f"; nothing of {len(empty)} of them checked out, so no file was written for "
                f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}" if empty else "")
        print(f"latentarc: {len(lost)} damaged row(s) or row group(s) left out of "
              f"{len(report.damaged)} shard(s){more}; the rest of each was restored "
              f"and checks out{none}", file=sys.stderr)
    if report.failed:
        names = sorted(report.failed)
        again = (f"; to restore just those, rerun with --shards {' '.join(names[:10])}"
                 f"{' ...' if len(names) > 10 else ''}")  # a plain rerun is refused over the rest
        hint = ("" if args.skip_damaged else
                "; where a shard failed on damaged rows, --skip-damaged restores the rest of it")
        print(f"latentarc: {len(report.failed)} shard(s) not restored{again}{hint}",
              file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_INCOMPLETE


def _cmd_verify(args: argparse.Namespace) -> int:
    from pipeline.verify import verify

    report = verify(args.archive, _storage(args), _ray(args), progress=not args.quiet)
    for problem in report.problems:
        print(f"BAD {problem}", file=sys.stderr)
    verdict = "OK" if report.ok else f"{len(report.problems)} problem(s)"
    print(f"verify: {report.rows} rows in {report.shards} shards checked in "
          f"{report.seconds:.1f} s: {verdict}")
    if report.damaged:
        names = " ".join(report.damaged[:10]) + (" ..." if len(report.damaged) > 10 else "")
        print(f"latentarc: {len(report.damaged)} shard file(s) damaged: rerun the compress "
              f"command with --redo {names} to make them again from their sources, or "
              "`restore --skip-damaged` to restore what checks out of them", file=sys.stderr)
    return EXIT_OK if report.ok else EXIT_INCOMPLETE


def _cmd_info(args: argparse.Namespace) -> int:
    storage = _storage(args)
    archive = args.archive.rstrip("/")
    complete = exists(join(archive, MANIFEST), storage)
    manifest = read_manifest(archive, storage) if complete else None  # FormatError: exit 2
    stats = read_json(join(archive, STATS), storage) if exists(join(archive, STATS), storage) else None
    if manifest is None and stats is None:
        raise Refused(f"{archive} is not a latentarc archive (no {MANIFEST} or {STATS})")
    if args.json:
        print(json.dumps({"manifest": manifest, "stats": stats}, indent=2))
        return EXIT_OK if complete else EXIT_INCOMPLETE
    source = manifest or stats["run"]
    print(f"archive    {archive}")
    print(f"status     {'complete' if complete else 'INCOMPLETE (' + _why_incomplete(stats) + ')'}")
    if manifest:
        print(f"format     v{manifest['format_version']}, created {manifest['created']}")
        versions = ", ".join(f"{k} {v}" for k, v in sorted(manifest["codec_versions"].items()))
        print(f"codec      {manifest['codec']} quality {manifest['quality']} ({versions})")
    else:
        print(f"codec      {source['codec']} quality {source['quality']}")
    run = stats["run"] if stats else {}
    if run.get("done") and run.get("effort"):
        aim = f" for the {run['effort_for']} decoder" if run.get("effort_for") else ""
        if run.get("refine_tile_above_pixels"):
            cap = f"; images above {run['refine_tile_above_pixels'] / 1e6:.2f} MP (padded) in tiles"
        elif run.get("refine_max_pixels"):  # written before session 17: larger ones were skipped
            cap = f"; images above {run['refine_max_pixels'] / 1e6:.2f} MP (padded) unrefined"
        else:
            cap = ""
        if run.get("refine_skip_above_pixels"):
            unrefined = (manifest or stats)["totals"].get("unrefined", 0)
            cap += (f"; images above {run['refine_skip_above_pixels'] / 1e6:g} MP unrefined "
                    f"({unrefined} in the archive)")
        print(f"encoding   last run ({len(run['done'])} shard(s)) refined latents: "
              f"--effort {run['effort']}{aim}{cap}")
    totals = (manifest or stats)["totals"]
    print(summary_table(totals, None))  # the archive is the first line already
    if stats:
        failed = stats["run"].get("failed") or {}
        stopped = (f", then stopped by {stats['run']['stopped_by']} (rerun the same compress "
                   "to do the rest)" if stats["run"].get("stopped_by") else "")
        print(f"shards     {len(stats['shards'])} in archive; last run: {len(stats['run']['done'])} "
              f"done, {len(stats['run']['skipped'])} skipped, {len(failed)} failed{stopped}")
        for name, error in failed.items():
            print(f"  {failed_line(name, error)}")
        interrupted = stats["run"].get("interrupted_attempts") or []
        if interrupted:
            print(f"           {len(interrupted)} shard attempt(s) were interrupted and redone: "
                  f"{', '.join(interrupted)}")
        passthrough = [(n, r) for n, s in stats["shards"].items() for r in s.get("passthrough_reasons", [])]
        if passthrough:  # each shard lists its first ones; the rows hold every reason
            total = sum(s.get("passthrough", 0) for s in stats["shards"].values())
            shown = passthrough[:20]
            print(f"passthrough samples ({total}; {len(shown)} shown, every one with "
                  "`restore --where \"status == 'passthrough'\"`):" if total > len(shown)
                  else f"passthrough samples ({total}):")
            for name, r in shown:
                print(f"  {name} {r['key']}: {r['reason']}")
    return EXIT_OK if complete else EXIT_INCOMPLETE


def _why_incomplete(stats: dict[str, Any] | None) -> str:
    """What ``info`` says of an archive without a manifest, from its last run's record."""
    run = (stats or {}).get("run", {})
    if run.get("stopped_by"):
        return f"the last compress run was stopped by {run['stopped_by']}"
    if run.get("failed"):
        return (f"the last compress run ended with {len(run['failed'])} failed shard(s), "
                "listed below")
    return "compress has not finished"


def _cmd_codecs(args: argparse.Namespace) -> int:
    from models.registry import DEFAULT_CODEC, list_codecs

    print(f"{'id':<15} {'kind':<10} {'quality':<12} {'default':<8} {'decoders':<20} description")
    for c in list_codecs():
        q = "lossless" if c.quality_range is None else f"{c.quality_range[0]:g}..{c.quality_range[1]:g}"
        d = "-" if c.default_quality is None else f"{c.default_quality:g}"
        star = " (default codec)" if c.id == DEFAULT_CODEC else ""
        decoders = ",".join(c.decoders)
        print(f"{c.id:<15} {c.kind:<10} {q:<12} {d:<8} {decoders:<20} {c.description}{star}")
    print("\ndecoders: restore/Archive.get --decoder picks one; all decoders of a codec read the "
          "same bitstreams")
    return EXIT_OK


COMMANDS = {"compress": _cmd_compress, "restore": _cmd_restore, "verify": _cmd_verify,
            "info": _cmd_info, "codecs": _cmd_codecs}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with interrupt.catch_signals():
            code = COMMANDS[args.verb](args)
            sys.stdout.flush()  # a closed pipe fails here, not at exit (exit 120, a traceback)
            return code
    except BrokenPipeError as exc:
        if not _stdout_closed():  # a pipe of the verb's own (a socket, a FIFO): an error
            return _error(args, exc)
        return 128 + 13  # as a process ended by SIGPIPE, the shell's convention
    except interrupt.Interrupted as exc:  # the verb put its work in order and says what it kept
        print(f"latentarc {args.verb}: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:  # outside the shard loop (before the workers, at the end), or twice
        then = {"compress": " (the shard files it finished are kept); rerun the same command",
                "restore": "; rerun it (with --overwrite where DST has some of its shards)"}
        print(f"latentarc {args.verb}: stopped by {interrupt.name()}"
              f"{then.get(args.verb, '; rerun the same command')}", file=sys.stderr)
        return 128 + interrupt.received()
    except (Refused, StorageError, FormatError, CodecError, SourceError) as exc:
        print(f"latentarc {args.verb}: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except PermissionError as exc:  # e.g. an S3 HEAD answered 403, which has no message body
        print(f"latentarc {args.verb}: refused: access was refused ({exc or 'Forbidden'}): check "
              "the credentials for this store (environment or credential files) and its "
              "permissions", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as exc:
        if (refused := missing_credentials(exc)) is not None:  # botocore's, anywhere else
            print(f"latentarc {args.verb}: refused: {refused}", file=sys.stderr)
            return EXIT_REFUSED
        if type(exc).__name__ == "ParamValidationError":  # botocore: e.g. an invalid bucket name
            first = str(exc).splitlines()[1:2] or [str(exc)]  # without the regex that follows
            print(f"latentarc {args.verb}: refused: {first[0].split(':')[0]}", file=sys.stderr)
            return EXIT_REFUSED
        return _error(args, exc)


def _error(args: argparse.Namespace, exc: BaseException) -> int:
    """An error no verb foresaw: one line, exit 1 (LATENTARC_DEBUG=1: the traceback too)."""
    if os.environ.get("LATENTARC_DEBUG"):
        traceback.print_exception(exc)
    # compress never removes a finished shard file: e.g. a store still down as the run
    # ends fails the final listing, and the rerun has only the rest to do
    hint = ("; shard files finished before the error, if any, are kept: rerun the same "
            "command to do the rest" if args.verb == "compress" else "")
    print(f"latentarc {args.verb}: error: {type(exc).__name__}: {exc}{hint}", file=sys.stderr)
    return EXIT_INCOMPLETE


def _stdout_closed() -> bool:
    """Whether stdout is a pipe its reader closed (`latentarc info ARCHIVE | head`: the reader
    has all it wanted). Then what stdout still buffers goes nowhere, or it fails again at exit."""
    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        # a pipe without readers polls as an error on its write end (Linux, BSD)
        if not any(events & select.POLLERR for _, events in poll.poll(0)):
            return False
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    except (OSError, ValueError, AttributeError):  # no real stdout (pytest's capture)
        return False
    return True


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":  # python -m pipeline.cli, as the latentarc script
    run()
