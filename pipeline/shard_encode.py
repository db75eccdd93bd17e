"""Compress one input shard into one Parquet file. Pure function of its inputs; no Ray here.

Samples stream through in chunks: prepare the image members, encode the chunk as one codec
batch, decode it again (for PSNR and the content hash), and append rows in source order.
Row groups are flushed by size, so a shard never sits in memory whole.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from models.allocator import release_freed_memory
from models.codec import Codec, CodecError
from pipeline.archive_format import (
    META_KEY,
    SCHEMA,
    STATUS_OK,
    STATUS_PASSTHROUGH,
    WRITER_OPTIONS,
    codec_meta,
    shard_url,
)
from pipeline.images import (
    DEFAULT_MAX_PIXELS,
    Unsupported,
    image_member_index,
    image_metadata,
    prepare,
    psnr,
)
from pipeline.prefetch import Pending, prefetch
from pipeline.sources import Shard
from pipeline.storage import StorageOptions, filesystem, write_atomic
from pipeline.tars import NOT_RETRYABLE, Sample, ShardReadError, iter_samples

CHUNK_SAMPLES = 8
# Decoded pixels per codec batch (and ahead of it, in the prefetch thread): 8 Kodak images
# are 3.1 MP; a 24 MP photo forms a batch of its own. With the per-image cap (--max-pixels)
# this bounds what a worker holds in pixels: the batch read ahead, the one being encoded and
# (images up to CHECK_THREAD_MAX_IMAGE_PIXELS only) the one being checked, each under this
# plus one image.
CHUNK_PIXELS = 16_000_000
# Batches whose images are all at most this size are checked (decoded again, for PSNR) in a
# thread beside the next batch's encode; a batch with a larger image is coded alone, as
# without the thread. A learned codec's working memory grows with the image (about 100-400
# B/pixel, benchmarks/pipeline/tiling), and a decode in another thread does not reuse the
# memory the encode freed: three 6 MP photos through msh-n96-v2 peaked at 2,566 MiB and took
# 46.6 s with their checks in the thread, against 1,785 MiB and 38.8 s without. Up to 1 MP the
# thread pays: 16 photos of 1 MP took 25.9 s instead of 33.7, for 1,797 MiB instead of 1,286
# (benchmarks/pipeline/check-thread/big_photos.py). 1 MP covers Kodak (0.4 MP) and most
# web-scale image sets.
CHECK_THREAD_MAX_IMAGE_PIXELS = 1 << 20
# Passthrough rows whose key and reason a shard's metadata (and _stats.json) lists: the first
# ones, as examples. Every one was listed, so the footer (read on every lookup) and
# _stats.json both grew with each passthrough row (138 bytes a row in _stats.json, as a review
# measured: 1.4 MB per 10k such rows, the same list in the footer). Each row keeps its
# reason (restore --where "status == 'passthrough'"; ArchiveDataset's sample["reason"]).
PASSTHROUGH_REASONS_KEPT = 20
ROW_GROUP_BYTES = 8 << 20  # caps what a random access (Archive.get) reads
# Optional per-row metrics (--metrics): column -> models.perceptual metric. Off by default:
# each costs a network forward per image, where PSNR is free.
METRICS = {"lpips": "lpips-alex"}


def check_metrics(metrics: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Refuse an unknown metric name (ValueError); returns them in a canonical order."""
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; known: {', '.join(METRICS)}")
    return tuple(m for m in METRICS if m in metrics)


def perceptual(name: str, reference: np.ndarray, decoded: np.ndarray) -> float | None:
    """The metric ``name`` (a key of METRICS) of a decode; 0 for identical pixels (no forward).

    Imported lazily: torch and the metric's weights are needed only when asked for. Null when
    the network cannot score the image (e.g. smaller than its receptive field)."""
    if np.array_equal(reference, decoded):
        return 0.0
    from models.perceptual import perceptual_scores

    metric = METRICS[name]
    try:
        return float(perceptual_scores(reference, decoded, metrics=(metric,))[metric])
    except (ValueError, RuntimeError):
        return None


@dataclass(frozen=True)
class Guard:
    """When a coded image is worse than keeping the original, keep the original.

    ``size``: a bitstream not smaller than the original member's bytes is not stored.
    ``min_psnr``: a decode below this PSNR (dB) is not stored. Either way the sample becomes
    passthrough (original bytes, restored byte-identical) and the row says why.
    """

    size: bool = True
    min_psnr: float | None = None
    jpeg_fallback: bool = True  # a JPEG the guard rejects is stored with jpeg-lossless instead
    max_pixels: int = DEFAULT_MAX_PIXELS  # larger images are kept as they are, never decoded

    def reason(self, stream: bytes, original: bytes, psnr_db: float) -> str | None:
        if self.size and len(stream) >= len(original):
            return f"bitstream ({len(stream)} B) not smaller than the original ({len(original)} B)"
        if self.min_psnr is not None and psnr_db < self.min_psnr:
            return f"PSNR {psnr_db:.2f} dB below --min-psnr {self.min_psnr:g}"
        return None


@dataclass(frozen=True)
class Batching:
    """How many samples, and how many decoded pixels, go to the codec in one batch.

    The prefetch thread prepares at most one batch ahead and the check thread holds the batch
    before (only batches of images up to CHECK_THREAD_MAX_IMAGE_PIXELS), so a worker holds
    about two batches of pixels, three with small images. The defaults (8 samples / 16 MP)
    are the same for CPU and GPU actors, as measured: on an H100 one GPU worker ran
    msh-n96-v2 at 10.3 images/s with batches of 8 and 9.0-9.8 with batches of 32 (Kodak,
    48-row shards; benchmarks/pipeline/gpu; before the check thread). The device is not what
    limits a GPU worker (the range coder and source decoding on the CPU are), and a bigger
    batch only lengthens each shard's first, unoverlapped read. More actors per GPU
    (``--gpus-per-actor 0.25``) is the lever there.
    """

    samples: int = 0  # 0: the codec's ``batch_samples``, or CHUNK_SAMPLES
    pixels: int = 0  # 0: the default, CHUNK_PIXELS
    # Read and decode the next batch in a thread while the codec works on this one. Costs one
    # batch of memory (measured: +23 MB with Kodak batches, benchmarks/pipeline/results.md)
    # and buys a third more throughput on CPU; off: all of it in the codec's thread.
    prefetch: bool = True
    # Decode each batch again (PSNR, content hash) and build its rows in a thread while the
    # codec encodes the next batch (batches of images up to CHECK_THREAD_MAX_IMAGE_PIXELS); off:
    # in the codec's thread. On 2 cores, Kodak: 1.24x webp's and 1.50x msh-n96-v2's speed in
    # one worker with one torch thread, 1.09x msh-n96-v2's for one Ray actor with two; where
    # actors already fill every core it costs msh-n96-v2 4 % (two actors), and webp nothing
    # (benchmarks/pipeline/check-thread). Against that, fresh processes one after another had
    # msh-n96-v2 with two torch threads 6 % slower with it (batch-memory/README.md, session
    # 20) and four alternated reps in one process alike with and without it (session 21), and
    # it costs about 290 MiB there. On by default for GPU actors, whose device it keeps busy
    # while the CPU checks the previous batch: on an H200 the reader and check threads together
    # took encode_shard from 7.41 to 12.57 images/s (benchmarks/pipeline/gpu, run 6; the check
    # thread alone not isolated).
    check_thread: bool = True

    def resolved(self, codec: Codec | None = None) -> tuple[int, int]:
        """(samples, pixels) per batch: the options given, else ``codec``'s own batch size,
        else the defaults."""
        samples = self.samples or (codec.batch_samples if codec is not None else 0) or CHUNK_SAMPLES
        return samples, self.pixels or CHUNK_PIXELS


@dataclass
class _Prepared:
    sample: Sample
    index: int
    image_pos: int | None
    image: np.ndarray | None = None
    mode: str | None = None
    fmt: str | None = None
    reason: str | None = None
    header: tuple[str, str, int, int] | None = None  # a passthrough image's, where Pillow read it


class _CountingReader:
    """Counts bytes read from the source, so the shard's input size needs no extra stat call."""

    def __init__(self, f) -> None:
        self._f = f
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self.count += len(data)
        return data


def _members(sample: Sample, skip: int | None) -> list[dict[str, Any]]:
    return [{"name": s, "data": d} for i, (s, d) in enumerate(sample.members) if i != skip]


def _passthrough_row(p: _Prepared, shard: str) -> dict[str, Any]:
    image = p.sample.members[p.image_pos][1] if p.image_pos is not None else None
    header = p.header  # not decoded; or decoded, and the size guard or --min-psnr kept it
    if header is None and p.image is not None:
        header = (p.fmt, p.mode, *p.image.shape[:2])
    return {
        "shard": shard,
        "key": p.sample.key,
        "index": p.index,
        "status": STATUS_PASSTHROUGH,
        "reason": p.reason,
        "image_name": p.sample.members[p.image_pos][0] if p.image_pos is not None else None,
        # what Pillow read of the image's header, where it could: --where finds these rows
        **(dict(zip(("format", "mode", "height", "width"), header, strict=True))
           if header else {}),
        "codec": None,
        "orig_sha256": hashlib.sha256(image).digest() if image is not None else None,
        "orig_size": len(image) if image is not None else None,
        "members": _members(p.sample, None),
    }


def _ok_row(p: _Prepared, shard: str, codec: Codec, stream: bytes, decoded,
            metrics: tuple[str, ...] = ()) -> dict[str, Any]:
    suffix, original = p.sample.members[p.image_pos]
    h, w, _ = p.image.shape
    value = psnr(p.image, decoded.image)
    return {
        "shard": shard,
        "key": p.sample.key,
        "index": p.index,
        "status": STATUS_OK,
        "image_name": suffix,
        "format": p.fmt,
        "mode": p.mode,
        "height": h,
        "width": w,
        "codec": codec.id,
        "weights": codec.weights_sha256(),
        "bitstream": stream,
        "crc32c": crc32c.crc32c(stream),
        "content_hash": decoded.content_hash,
        "bytes": len(stream),
        "bpp": 8.0 * len(stream) / (h * w),
        "psnr": value,
        "orig_sha256": hashlib.sha256(original).digest(),
        "orig_size": len(original),
        "members": _members(p.sample, p.image_pos),
        **image_metadata(original),
        "lpips": perceptual("lpips", p.image, decoded.image) if "lpips" in metrics else None,
    }


def _encode_streams(codec: Codec, items: list[_Prepared]) -> list[bytes]:
    """The batch's bitstreams, one per item (raises CodecError)."""
    if codec.takes_source:
        streams = codec.encode_sources([p.sample.members[p.image_pos][1] for p in items])
    else:
        streams = codec.encode_batch([p.image for p in items])
    if len(streams) != len(items):
        raise CodecError(f"codec {codec.id} returned {len(streams)} streams for {len(items)} images")
    return streams


def _decoded(codec: Codec, streams: list[bytes]) -> Iterator[tuple[bytes, Any]]:
    """Decode (for PSNR and the content hash) one stream at a time: the caller turns each into
    a row before the next is decoded, so a batch's decoded images and symbols are never all
    held at once."""
    for stream in streams:
        (decoded,) = codec.decode_batch([stream])
        yield stream, decoded


def _encode(codec: Codec, items: list[_Prepared]) -> Iterator[tuple[bytes, Any]]:
    """Encode the batch, then decode it one stream at a time (``_decoded``)."""
    return _decoded(codec, _encode_streams(codec, items))


def _jpeg_fallback(p: _Prepared, shard: str, guard_reason: str,
                   metrics: tuple[str, ...] = ()) -> dict[str, Any] | str:
    """A JPEG that the guard keeps out is still recompressed losslessly, byte-exact on restore,
    where that makes it smaller; else why not, for the passthrough row's reason."""
    from models.registry import get_codec

    codec = get_codec("jpeg-lossless")
    try:
        ((stream, decoded),) = _encode(codec, [p])
    except CodecError as exc:
        return f"jpeg-lossless failed too: {exc}"
    if len(stream) >= len(p.sample.members[p.image_pos][1]):
        return "jpeg-lossless was not smaller either"
    row = _ok_row(p, shard, codec, stream, decoded, metrics)
    row["reason"] = f"stored with jpeg-lossless: {guard_reason}"
    return row


def _encode_stage(chunk: list[_Prepared], codec: Codec) -> list[bytes] | None:
    """The codec's encode of the chunk's images; None when the batch failed (CodecError), so
    that ``_check_stage`` codes them one at a time."""
    try:
        return _encode_streams(codec, [p for p in chunk if p.image is not None])
    except CodecError:
        return None


def _check_stage(chunk: list[_Prepared], streams: list[bytes] | None, shard: str, codec: Codec,
                 guard: Guard, metrics: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The chunk's rows, in order: decode each stream (PSNR, content hash), then the guard.

    Runs in a thread of its own while the codec encodes the next chunk (``Batching.check_thread``)."""
    todo = [p for p in chunk if p.image is not None]
    results: dict[int, dict[str, Any]] = {}
    try:
        if streams is None:
            raise CodecError("the batch failed")
        for p, (stream, decoded) in zip(todo, _decoded(codec, streams), strict=True):
            results[p.index] = _ok_row(p, shard, codec, stream, decoded, metrics)
    except CodecError:
        # Find the image the batch failed on; the others still go through the codec.
        results.clear()
        for p in todo:
            try:
                ((stream, decoded),) = _encode(codec, [p])
                results[p.index] = _ok_row(p, shard, codec, stream, decoded, metrics)
            except CodecError as exc:
                p.image, p.reason = None, f"codec {codec.id} failed: {exc}"
    rows = []
    for p in chunk:
        if p.index in results:
            row = results[p.index]
            p.reason = guard.reason(row["bitstream"], p.sample.members[p.image_pos][1], row["psnr"])
            if p.reason is None:
                rows.append(row)
                continue
            if guard.jpeg_fallback and p.fmt == "JPEG" and codec.id != "jpeg-lossless":
                fallback = _jpeg_fallback(p, shard, p.reason, metrics)
                if isinstance(fallback, dict):
                    rows.append(fallback)
                    continue
                p.reason = f"{p.reason}; {fallback}"
        rows.append(_passthrough_row(p, shard))
    return rows


def _encode_chunk(chunk: list[_Prepared], shard: str, codec: Codec, guard: Guard,
                  metrics: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Both stages of one chunk in the caller's thread."""
    return _check_stage(chunk, _encode_stage(chunk, codec), shard, codec, guard, metrics)


def _prepare(sample: Sample, index: int, max_pixels: int) -> _Prepared:
    pos = image_member_index(sample.suffixes())
    p = _Prepared(sample, index, pos)
    if pos is None:
        p.reason = "no image member"
        return p
    try:
        p.image, p.mode, p.fmt = prepare(sample.members[pos][1], max_pixels)
    except Unsupported as exc:
        p.reason, p.header = str(exc), exc.header
    return p


def _pixels(p: _Prepared) -> int:
    return p.image.shape[0] * p.image.shape[1] if p.image is not None else 0


def _chunks(prepared: Iterator[_Prepared], max_samples: int, max_pixels: int,
            ramp: bool) -> Iterator[list[_Prepared]]:
    """Codec batches: a batch ends at ``max_samples`` samples or when its decoded pixels reach
    ``max_pixels``. ``ramp``: a shard's first batches grow (1, 2, 4, ... samples)."""
    limit = 1 if ramp else max_samples
    chunk: list[_Prepared] = []
    pixels = 0
    for p in prepared:
        chunk.append(p)
        pixels += _pixels(p)
        if len(chunk) >= limit or pixels >= max_pixels:
            yield chunk
            chunk, pixels = [], 0
            limit = min(max_samples, 2 * limit)
    if chunk:
        yield chunk


def _row_chunks(samples: Iterator[Sample], shard: str, codec: Codec, guard: Guard,
                metrics: tuple[str, ...] = (), batching: Batching | None = None,
                ) -> Iterator[list[dict]]:
    """Rows, one codec batch at a time, in source order (batches as in ``_chunks``).

    Three threads overlap (``Batching``): tar reading and source decoding run in a prefetch
    thread at most one batch ahead (the same two bounds); the codec encodes a batch in the
    caller's thread; the previous batch is decoded again for PSNR and the content hash, and
    made into rows, in a check thread. Pillow's coders, zlib and torch's kernels release the
    GIL, so on a CPU the stages run on separate cores, and on a GPU one batch's range coding
    on the CPU overlaps the next batch's transforms on the device. A batch holding an image
    above CHECK_THREAD_MAX_IMAGE_PIXELS is encoded and checked alone in the caller's thread,
    as without the check thread. With the reader thread, a shard's batches ramp up (1, 2, 4,
    ... samples up to the bound): the codec starts after one sample's read and decode instead
    of a whole batch's, which is what it waited for at the start of every shard (21.5% of a
    worker's time with 8-row shards, benchmarks/pipeline/profile).
    """
    batching = batching or Batching()
    max_samples, max_pixels = batching.resolved(codec)
    prepared = prefetch(
        (_prepare(sample, index, guard.max_pixels) for index, sample in enumerate(samples)),
        depth=max_samples if batching.prefetch else 0, weight=_pixels, max_weight=max_pixels,
        name=f"read-{shard}")
    chunks = _chunks(prepared, max_samples, max_pixels, ramp=batching.prefetch)
    if not batching.check_thread:
        for chunk in chunks:
            rows = _encode_chunk(chunk, shard, codec, guard, metrics)
            release_freed_memory()  # the batch's tensors are freed: give their pages back
            yield rows
        return
    pending: Pending | None = None
    try:
        for chunk in chunks:
            if max(map(_pixels, chunk)) > CHECK_THREAD_MAX_IMAGE_PIXELS:
                # A large image is encoded and checked alone, in this thread, as without the
                # check thread: its working memory is not doubled by another batch's beside it.
                if pending is not None:
                    rows, pending = pending.result(), None
                    release_freed_memory()
                    yield rows
                rows = _encode_chunk(chunk, shard, codec, guard, metrics)
                release_freed_memory()
                yield rows
                continue
            streams = _encode_stage(chunk, codec)
            rows = pending.result() if pending is not None else None
            # The check of this batch starts before the previous batch's rows are written, so
            # the Parquet work overlaps it too. At most one check runs.
            pending = Pending(
                functools.partial(_check_stage, chunk, streams, shard, codec, guard, metrics),
                name=f"check-{shard}")
            del chunk, streams
            if rows is not None:
                release_freed_memory()
                yield rows
        if pending is not None:
            rows = pending.result()
            pending = None
            release_freed_memory()
            yield rows
    finally:
        if pending is not None:  # stopped early: the codec is not to be left in use
            pending.wait()


class _RowGroup:
    """The row group being filled: rows become Arrow record batches chunk by chunk.

    A shard's worker memory must not grow with the shard (ARCHITECTURE: archive-scale). Rows
    are Python dicts only for one chunk (one codec batch); they are converted to a record
    batch at once, so a row group is held once (Arrow buffers), not twice (dicts plus the
    table built from them), and is written as one row group when about ``ROW_GROUP_BYTES`` of
    payload has gathered. Arrow's default pool (mimalloc) keeps freed pages for reuse, which
    made a worker's RSS grow with the row group it last held; ``flush`` gives them back. In
    the pipeline's workers Arrow uses glibc's malloc instead (``runner.worker_env``), which
    the trim after each batch reaches.
    """

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer = writer
        self.batches: list[pa.RecordBatch] = []
        self.payload = 0  # bitstream and kept-member bytes: what the row-group cap counts

    def add(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self.batches.append(pa.RecordBatch.from_pylist(rows, schema=SCHEMA))
        self.payload += sum((row.get("bytes") or 0) + sum(len(m["data"]) for m in row["members"])
                            for row in rows)

    def flush(self) -> None:
        """Write what has gathered as one row group (an empty one for an empty shard)."""
        table = pa.Table.from_batches(self.batches, schema=SCHEMA)
        self.writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.batches, self.payload = [], 0
        del table
        pa.default_memory_pool().release_unused()


def encode_shard(
    shard: Shard,
    archive: str,
    codec: Codec,
    storage: StorageOptions | None = None,
    guard: Guard | None = None,
    metrics: tuple[str, ...] = (),
    batching: Batching | None = None,
) -> dict[str, Any]:
    """Compress ``shard`` into ``archive``/shards/<name>.parquet; returns the shard's figures.

    ``metrics`` (names in METRICS, e.g. "lpips") fills those nullable columns for ``ok`` rows.
    ``batching``: codec batch bounds and the reader thread (default: the CPU defaults).

    The output appears only when complete. Raises on a shard that cannot be read to the end
    (the message names the shard and the last key), leaving no output behind.
    """
    started = time.monotonic()
    stats: dict[str, Any] = {
        "shard": shard.name,
        "source": shard.url,
        "source_file": shard.file_name,
        "samples": 0,
        "compressed": 0,
        "passthrough": 0,
        "image_bytes": 0,
        "bitstream_bytes": 0,
        "pixels": 0,
        "bpp_sum": 0.0,
        "psnr_sum": 0.0,
        "psnr_count": 0,
        "lpips_sum": 0.0,
        "lpips_count": 0,
        # images coded without the codec's --effort, being above --effort-max-mp
        "unrefined": 0,
        "passthrough_reasons": [],
    }
    fs, path = filesystem(shard.url, storage)

    def write_rows(source: _CountingReader, writer: pq.ParquetWriter) -> None:
        group = _RowGroup(writer)
        chunks = _row_chunks(iter_samples(source, shard.name), shard.name, codec,
                             guard or Guard(), check_metrics(metrics), batching)
        for rows in chunks:
            for row in rows:
                _account(stats, row, codec)
            group.add(rows)
            if group.payload >= ROW_GROUP_BYTES:
                group.flush()
        if group.batches or stats["samples"] == 0:
            group.flush()
        stats["source_bytes"] = source.count
        stats["seconds"] = round(time.monotonic() - started, 3)
        meta = {**codec_meta(codec), **stats}
        # The shard's figures are known only now; file-level metadata is written at close.
        writer.add_key_value_metadata({META_KEY: json.dumps(meta, sort_keys=True)})

    def write(out) -> None:
        try:
            raw_file = fs.open(path, "rb")
        except FileNotFoundError as exc:  # a brace list's missing member (sources.py)
            raise ShardReadError(f"shard {shard.name}: its source {shard.url} does not exist "
                                 f"(mistyped, or moved since it was listed), so {NOT_RETRYABLE} "
                                 "until it is there") from exc
        with raw_file as raw:
            source = _CountingReader(raw)
            # Page CRCs cover what the bitstream CRC and content hash do not: the kept members
            # and every other column. Readers verify them (archive_format.open_shard_file).
            writer = pq.ParquetWriter(out, SCHEMA, **WRITER_OPTIONS)
            try:
                write_rows(source, writer)
            except BaseException:
                # Closed here, not by the garbage collector after write_atomic has removed the
                # temp file (which logged "write to closed file" from the writer's __del__).
                with contextlib.suppress(Exception):
                    writer.close()
                raise
            writer.close()

    stats["archive_bytes"] = write_atomic(shard_url(archive, shard.name), write, storage)
    return stats


def _account(stats: dict[str, Any], row: dict[str, Any], codec: Codec) -> None:
    stats["samples"] += 1
    stats["image_bytes"] += row.get("orig_size") or 0
    if row["status"] == STATUS_OK:
        stats["compressed"] += 1
        stats["bitstream_bytes"] += row["bytes"]
        stats["pixels"] += row["height"] * row["width"]
        stats["bpp_sum"] += row["bpp"]
        if math.isfinite(row["psnr"]):
            stats["psnr_sum"] += row["psnr"]
            stats["psnr_count"] += 1
        if row.get("lpips") is not None:
            stats["lpips_sum"] += row["lpips"]
            stats["lpips_count"] += 1
        if row["codec"] == codec.id and codec.skips_effort(row["height"], row["width"]):
            stats["unrefined"] += 1
    else:
        stats["passthrough"] += 1
        if len(stats["passthrough_reasons"]) < PASSTHROUGH_REASONS_KEPT:
            stats["passthrough_reasons"].append({"key": row["key"], "reason": row["reason"]})
