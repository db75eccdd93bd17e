"""``restore``: an archive, or a selection of its shards and keys, back to WebDataset shards.

Each selected shard becomes one tar with its original file name and keys: non-image members
byte-identical, passthrough samples byte-identical, the image member decoded (every row checked,
see ``pipeline.rows``) and written in its original format (lossless formats losslessly, JPEG at
``jpeg_quality``) or in ``image_format`` for the exact decoded pixels. A shard is written
atomically, and not at all if any of its rows fails its checks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from models.allocator import keep_freed_memory, release_freed_memory
from models.codec import CodecError
from models.registry import uses_gpu
from pipeline import interrupt
from pipeline.archive import shard_index_entries, shards_holding
from pipeline.archive_format import (
    STATUS_OK,
    FormatError,
    open_shard_file,
    read_manifest,
)
from pipeline.errors import Refused
from pipeline.images import (
    IMAGE_SUFFIXES,
    METADATA_KEYS,
    RESTORE_FORMATS,
    WRITABLE_FORMATS,
    encode_for_restore,
)
from pipeline.ordered_map import ordered_map
from pipeline.prefetch import prefetch
from pipeline.progress import Progress
from pipeline.rows import (
    READ_BATCH_ROWS,
    RowDecoder,
    RowError,
    check_decoder_for,
    iter_rows,
    shard_has_match,
)
from pipeline.runner import (
    RayOptions,
    describe,
    resolve,
    run_per_shard,
    shard_task,
    use_reserved_cpus,
    worker_device,
)
from pipeline.storage import (
    StorageOptions,
    filesystem,
    is_local,
    join,
    per_file,
    remove,
    remove_temp_files,
    write_atomic,
    write_bytes_atomic,
)
from pipeline.tars import Sample, member_name, write_samples
from pipeline.where import Condition, parse_where


@dataclass
class RestoreReport:
    archive: str
    destination: str
    shards: list[str]
    written: dict[str, int] = field(default_factory=dict)  # shard -> samples written
    # shards whose tar or directory was written (not those where --keys/--where chose nothing)
    outputs: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    missing_keys: list[str] = field(default_factory=list)
    # requested keys that are in the archive but that --where excluded: not a failure
    excluded_keys: list[str] = field(default_factory=list)
    row_groups_skipped: int = 0  # by --where statistics pushdown
    # --skip-damaged: shard -> "key: problem" of each row left out of its restored output
    damaged: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.missing_keys and not self.damaged


def read_keys_file(path: str) -> tuple[set[str], set[tuple[str, str]]]:
    """Keys to restore: one per line, either ``key`` (in any shard) or ``shard<TAB>key``."""
    any_shard: set[str] = set()
    pairs: set[tuple[str, str]] = set()
    try:
        with open(path, encoding="utf-8-sig") as f:  # a byte-order mark is not part of a key
            lines = [line.removesuffix("\r") for line in f.read().split("\n")]  # CRLF too
    except (OSError, UnicodeDecodeError) as exc:  # a bad argument: refused, exit 2
        raise Refused(f"--keys {path}: {exc}") from exc
    for line in lines:
        if not line.strip():
            continue
        if "\t" in line:
            shard, key = line.split("\t", 1)
            pairs.add((shard, key))
        else:
            any_shard.add(line)
    return any_shard, pairs


def _image_member(row: dict[str, Any], image, image_format: str | None, jpeg_quality: int):
    suffix = row["image_name"]
    if image_format:
        pil_format = RESTORE_FORMATS[image_format]
        base = suffix.rsplit(".", 1)[0] + "." if "." in suffix else ""
        suffix = base + image_format
    elif row["format"] in WRITABLE_FORMATS:
        pil_format = row["format"]  # the format the original bytes had, whatever the name said
    else:
        pil_format = IMAGE_SUFFIXES.get(suffix.rsplit(".", 1)[-1].lower(), "PNG")
    metadata = {k: row.get(k) for k in METADATA_KEYS}
    return suffix, encode_for_restore(image, row["mode"], pil_format, jpeg_quality, metadata)


def restore_shard(
    archive: str,
    shard: str,
    destination_url: str,
    keys: set[str] | None,
    image_format: str | None,
    jpeg_quality: int,
    storage: StorageOptions,
    decoder: RowDecoder | None = None,
    where: list[Condition] | None = None,
    layout: str = "webdataset",
    writers: int = 1,
    expected_rows: int | None = None,
    skip_damaged: bool = False,
) -> dict[str, Any]:
    """Restore one shard file into one tar at ``destination_url`` (layout "webdataset"), or
    into one image file per sample under the directory ``destination_url`` (layout "files").
    ``writers`` threads encode the output images (``writer_threads``), in order.

    ``expected_rows``: the manifest's sample count for this shard, checked where the file is
    opened (``rows.iter_rows``): a file copied over from another shard or left by another run
    would otherwise restore other samples under this shard's name.

    ``skip_damaged``: a row that fails its checks, or the rest of a row group whose page
    cannot be read, is left out and named in ``damaged`` instead of failing the shard, so that
    what checks out is restored (the result is still not ok: the caller reports them)."""
    decoder = decoder or RowDecoder()
    found: list[str] = []
    skipped: list[int] = []
    damaged: list[str] = []  # "key: problem" of each row left out (--skip-damaged)
    damaged_keys: list[str] = []

    def lost(row_group: int, exc: Exception, lost_keys: list[str] | None) -> None:
        if lost_keys is None:
            damaged.append(f"row group {row_group}: its rows cannot be read, nor their keys "
                           f"({type(exc).__name__}: {exc})")
            return
        for key in lost_keys:
            if keys is None or key in keys:
                damaged.append(f"key {key!r}: unreadable (row group {row_group}: "
                               f"{type(exc).__name__}: {exc})")
                damaged_keys.append(key)

    def decoded_rows():
        for row in iter_rows(archive, shard, storage, where, skipped, expected_rows,
                             unreadable=lost if skip_damaged else None):
            if keys is not None and row["key"] not in keys:
                continue
            try:
                checked = decoder.check(row)
            except RowError as exc:
                if not skip_damaged:
                    raise
                damaged.append(f"key {row['key']!r}: {exc.problem}")
                damaged_keys.append(row["key"])
                continue
            found.append(row["key"])
            yield row, checked
            if len(found) % READ_BATCH_ROWS == 0:
                release_freed_memory()  # as compress does per codec batch (models/allocator.py)

    def to_sample(item: tuple[dict[str, Any], Any]) -> Sample:
        row, decoded = item
        sample = Sample(row["key"])
        if row["status"] == STATUS_OK and decoded.source is not None and image_format is None:
            sample.members.append((row["image_name"], decoded.source))  # the exact original
        elif row["status"] == STATUS_OK:
            try:
                member = _image_member(row, decoded.image, image_format, jpeg_quality)
            except Exception as exc:  # e.g. a size the output format cannot hold
                raise RowError(row["shard"], row["key"], "cannot write the restored image as "
                               f"{image_format or row['format']}: {type(exc).__name__}: {exc}"
                               ) from exc
            # two members of one name in a tar sample (--layout files writes the image only)
            if layout == "webdataset" and member[0] != row["image_name"] and any(
                    m["name"] == member[0] for m in row["members"]):
                name = member_name(row["key"], member[0])
                raise RowError(row["shard"], row["key"], f"--image-format {image_format} would "
                               f"name the image {name!r}, as another member of this sample "
                               "is named; restore this shard without --image-format")
            sample.members.append(member)
        sample.members.extend((m["name"], m["data"]) for m in row["members"])
        return sample

    def samples():
        # Reading, checking and decoding rows run in a reader thread a few rows ahead, while
        # ``writers`` threads encode the output format (PNG/JPEG encoding releases the GIL)
        # and this one writes the tar or the files.
        rows = prefetch(decoded_rows(), depth=READ_BATCH_ROWS, weight=_pixels,
                        max_weight=PREFETCH_PIXELS, name=f"restore-{shard}")
        yield from _kept_apart(
            ordered_map(to_sample, rows, writers, weight=_pixels, max_weight=WRITE_PIXELS), shard)

    if layout == "files":
        written: set[str] = set()
        before = _files_under(destination_url, storage)  # with --overwrite, some may be there
        try:
            size = sum(_write_image_file(destination_url, sample, storage, written)
                       for sample in samples())
        except BaseException:
            # Not at all if any row fails: remove the files this shard created. A file that was
            # there before (--overwrite) already holds its restored bytes, and its old ones are
            # gone either way: it stays. So does the directory, unless it is left empty.
            for name in written - before:
                with contextlib.suppress(Exception):  # the shard's own error is the one to see
                    remove(join(destination_url, name), storage)
            with contextlib.suppress(Exception):
                _remove_empty_dirs(destination_url, storage)
            raise
    else:
        def write(f) -> None:
            write_samples(f, samples())
            # nothing selected, or nothing that checks out (--skip-damaged): an empty tar
            # would pass for the shard restored
            if not found and (where or keys is not None or damaged):
                raise _NothingSelected  # write_atomic drops its temp file: no file is written

        try:
            size = write_atomic(destination_url, write, storage)
        except _NothingSelected:  # a file already there (--overwrite) is not this shard's to remove
            size = 0
    excluded: list[str] = []
    if keys is not None and where:  # tell "filtered out" from "not in this shard"
        f, parquet = open_shard_file(archive, shard, storage)
        with f:
            present = {key for key, _ in shard_index_entries(parquet)}
        excluded = sorted(present & (keys - set(found) - set(damaged_keys)))
    return {"shard": shard, "samples": len(found), "keys": found, "bytes_out": size,
            "row_groups_skipped": len(skipped), "excluded_keys": excluded,
            "wrote": bool(found) or not (where or keys is not None or damaged),
            "damaged": damaged, "damaged_keys": damaged_keys}


def _kept_apart(samples: Iterator[Sample], shard: str) -> Iterator[Sample]:
    """Samples as a tar reader will group them again.

    A tar reader starts a new sample where the key changes or a member name repeats, so two
    samples in a row with the same key were told apart, in the source, by a member of the
    second whose name the first has. Restore writes a coded sample's image first (the archive
    does not record where it stood), and with --image-format under another name; if that
    first member's name is not in the sample before, a reader would join the two. Then a
    member that does repeat a name goes first (the member order within a sample is not kept
    anyway); if none does (only --image-format can cause that), the shard fails, naming it."""
    before: tuple[str, set[str]] | None = None
    for sample in samples:
        if before is not None and before[0] == sample.key and sample.members \
                and sample.members[0][0] not in before[1]:
            first = next((i for i, (name, _) in enumerate(sample.members) if name in before[1]),
                         None)
            if first is None:
                raise RowError(shard, sample.key, "this sample and the one before it have the "
                               "same key and, with --image-format, no member name in common: "
                               "a tar reader would join them; restore this shard without "
                               "--image-format")
            sample.members.insert(0, sample.members.pop(first))
        before = (sample.key, {name for name, _ in sample.members})
        yield sample


class _NothingSelected(Exception):
    """A shard with no row selected by --keys/--where: nothing is written for it."""


def _stopped(report: RestoreReport, tasks: list[dict[str, Any]], layout: str,
             storage: StorageOptions, there_before: set[str]) -> str:
    """What a stopped restore leaves: which shards are whole, and how to get the rest.
    ``there_before``: the names DST had before this run (with --overwrite)."""
    done, restored = set(report.written), set(report.outputs)
    if layout == "webdataset":
        # A tar can be finished between the signal and its worker's end (Ray checks for
        # signals about once a second): its result never came back, but it is whole. Only a
        # tar that was not there before can be told to be this run's.
        present = _names_in(report.destination, storage) - there_before
        late = {t["shard"] for t in tasks if t["file_name"] in present and t["shard"] not in done}
        done, restored = done | late, restored | late
        partial = "a tar being written when it stopped is not there (each appears whole or not at all)"
        rerun = "rerun with --shards for those, or with --overwrite for all"
    else:
        partial = "the directories of shards in flight may hold some of their files"
        rerun = "rerun with --shards for those and --overwrite (their directories may be there)"
    left = [t["shard"] for t in tasks if t["shard"] not in done]
    shown = ", ".join(left[:10]) + (", ..." if len(left) > 10 else "")
    old = (" (DST had some of these shards before this run: those not restored may be the old "
           "ones)" if there_before & {t["file_name"] for t in tasks} else "")
    return (f"stopped by {interrupt.name()}: {len(restored)} shard(s) restored to "
            f"{report.destination}; {partial}. Not restored ({len(left)}): {shown}{old}; {rerun}")


# Decoded pixels a restore worker holds, at most (one row always passes each bound): those read
# ahead by the reader thread, plus, with several writers, those being encoded. WRITE_PIXELS lets
# two 12 MP photos or about 60 Kodak images be encoded at once; it applies only with writers > 1
# (with one writer the row being encoded is the one in hand).
PREFETCH_PIXELS = 16_000_000
WRITE_PIXELS = 24_000_000
# Output encoders per restore actor, at most; a cap, not a measured best: at 155 ms per Kodak
# PNG, 8 threads could write about 50 a second, more than one GPU actor decodes (20/s), both
# figures from benchmarks/pipeline/gpu/ (run 5).
MAX_WRITERS = 8


def writer_threads(cpus: int | None) -> int:
    """Threads that encode output images in one restore actor with ``cpus`` threads' worth of
    reserved CPUs (``use_reserved_cpus``; None outside Ray); 1 means no pool, the encoding in
    the writing thread. One CPU is counted for the reader thread, which reads and decodes rows.
    A learned codec's decode may use more: torch takes all ``cpus`` threads on the CPU, and on
    an H200 the bare decode loop kept 2.8 cores busy (benchmarks/pipeline/gpu/, run 5). There
    the writers compete with it; how much that costs is not measured. With the CLI's default
    ``--cpus-per-actor 0.5`` this is 1, restore as before; it takes more than 2 CPUs per actor
    (e.g. ``--cpus-per-actor 4`` on a GPU node) to get 2 writers or more."""
    return max(1, min(MAX_WRITERS, (cpus or 1) - 1))


def _pixels(item: tuple[dict[str, Any], Any]) -> int:
    image = getattr(item[1], "image", None)
    return 0 if image is None else image.shape[0] * image.shape[1]


def _safe_relative(key: str) -> str:
    """Keys become file paths: refuse anything that could leave the destination. A "." part
    is dropped: a tar made with ``tar -C dir .`` names its members ``./key.png``."""
    parts = [p for p in key.split("/") if p != "."]
    if key.startswith("/") or not parts or any(p in ("", "..") for p in parts) or "\\" in key:
        raise ValueError(f"key {key!r} cannot be used as a file path")
    return "/".join(parts)


def _files_under(directory: str, storage: StorageOptions) -> set[str]:
    """Paths of the files under ``directory``, relative to it (none if it is absent)."""
    fs, path = filesystem(directory, storage)
    if not fs.isdir(path):
        return set()
    root = path.rstrip("/") + "/"
    return {p[len(root):] for p in fs.find(path) if p.startswith(root)}


def _remove_empty_dirs(directory: str, storage: StorageOptions) -> None:
    """Remove ``directory`` and the directories in it that hold no file (local only: object
    stores have no directories)."""
    fs, path = filesystem(directory, storage)
    if not is_local(fs) or not os.path.isdir(path):
        return
    for root, _, _ in sorted(os.walk(path), key=lambda w: -len(w[0])):  # deepest first
        with contextlib.suppress(OSError):  # not empty
            os.rmdir(root)


def _write_image_file(directory: str, sample: Sample, storage: StorageOptions,
                      written: set[str]) -> int:
    """The sample's image member (or, without one, every member) as plain files.

    A key may repeat within a shard (FORMAT.md); one file per key would then overwrite the
    first sample with the second, so a name already ``written`` fails the shard instead."""
    members = sample.members
    images = [m for m in members if m[0].rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES]
    size = 0
    for suffix, data in images[:1] or members:
        name = member_name(_safe_relative(sample.key), suffix)
        if name in written:
            raise ValueError(f"key {sample.key!r} repeats in this shard, and --layout files would "
                             f"overwrite {name} with the later sample: restore this shard with "
                             "--layout webdataset, which keeps every sample")
        written.add(name)
        try:
            write_bytes_atomic(join(directory, name), data, storage)
        except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
            # keys "a" (a member without a suffix) and "a/b": a file and a directory both "a"
            raise ValueError(f"key {sample.key!r}: {name} cannot be written: a file and a "
                             "directory would have the same path (keys like 'a' and 'a/b'); "
                             f"restore this shard with --layout webdataset ({type(exc).__name__})"
                             ) from exc
        size += len(data)
    return size


class RestoreWorker:
    """Ray actor: keeps decoders resident, restores one shard per call."""

    def __init__(self, archive: str, destination: str, image_format: str | None,
                 jpeg_quality: int, storage: dict, where: str | None, layout: str,
                 decoder: str = "faithful", device: str = "cpu", skip_damaged: bool = False) -> None:
        cpus = use_reserved_cpus()
        keep_freed_memory()  # this actor's process is ours (models/allocator.py)
        self.archive = archive
        self.destination = destination
        self.image_format = image_format
        self.jpeg_quality = jpeg_quality
        self.storage = StorageOptions(**storage)
        self.decoder = RowDecoder(decoder, device)
        self.where = parse_where(where) if where else None
        self.layout = layout
        self.writers = writer_threads(cpus)
        self.skip_damaged = skip_damaged

    @shard_task
    def __call__(self, task: dict[str, Any]) -> dict[str, Any]:
        keys = set(task["keys"]) if task["keys"] is not None else None
        name = task["shard"] if self.layout == "files" else task["file_name"]
        url = join(self.destination, name)
        return restore_shard(self.archive, task["shard"], url, keys, self.image_format,
                             self.jpeg_quality, self.storage, self.decoder, self.where, self.layout,
                             self.writers, expected_rows=task.get("samples"),
                             skip_damaged=self.skip_damaged)


def _may_write(archive: str, shard: str, where: list[Condition], storage: StorageOptions) -> bool:
    """Whether a --where restore will write this shard: a shard file that cannot be read
    counts as written (the refusal errs on the side of the output already there)."""
    try:
        return shard_has_match(archive, shard, where, storage)
    except (OSError, ValueError, pa.ArrowException):
        return True


def _names_in(directory: str, storage: StorageOptions) -> set[str]:
    """Names of the files and directories directly in ``directory`` (none if it is absent)."""
    fs, path = filesystem(directory, storage)
    if not fs.isdir(path):
        return set()
    return {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)}


def _uses_gpu(codec_id: str | None) -> bool:
    """Whether restoring this archive's codec wants GPU actors where the cluster has GPUs; a
    codec this installation does not know decodes nothing anyway (its rows are refused)."""
    try:
        return codec_id is not None and uses_gpu(codec_id)
    except CodecError:
        return False


def restore(
    archive: str,
    destination: str,
    shards: list[str] | None = None,
    keys_file: str | None = None,
    image_format: str | None = None,
    jpeg_quality: int = 95,
    storage: StorageOptions | None = None,
    ray_options: RayOptions | None = None,
    progress: bool = True,
    where: str | None = None,
    layout: str = "webdataset",
    decoder: str = "faithful",
    overwrite: bool = False,
    skip_damaged: bool = False,
) -> RestoreReport:
    """Restore ``archive`` (or the chosen shards/keys/rows) into WebDataset shards at
    ``destination``, or into plain image files (``layout="files"``: DST/<shard>/<key>.<ext>).

    ``decoder``: "faithful" (the pixels compress measured) or another decoder of the archive's
    codec, e.g. "realistic" (same bitstream, a synthesis trained for appearance); refused when
    the codec has none. Passthrough and jpeg-lossless rows come back byte-identical either way.

    ``skip_damaged``: restore what checks out of a shard with damaged rows (each left out is
    named in ``report.damaged``; the report is not ok), instead of failing the shard.

    Refused when ``destination`` already holds a shard (or, with ``layout="files"``, a shard
    directory) this restore would write, unless ``overwrite``: restoring into the source
    folder would replace the original shards with decoded ones.
    """
    storage = storage or StorageOptions()
    started = time.monotonic()
    archive, destination = archive.rstrip("/"), destination.rstrip("/")
    if layout not in ("webdataset", "files"):
        raise Refused("--layout must be webdataset or files")
    if where is not None:  # "" too: an unset shell variable must not mean "every row"
        parse_where(where)  # refuse a bad filter before any work
    if image_format is not None and image_format not in RESTORE_FORMATS:
        raise Refused(f"--image-format must be one of {', '.join(sorted(RESTORE_FORMATS))}")
    try:
        manifest = read_manifest(archive, storage)
    except (FormatError, OSError) as exc:
        raise Refused(str(exc)) from exc
    if decoder != "faithful":
        try:
            check_decoder_for(manifest["codec"], decoder)
        except CodecError as exc:
            raise Refused(str(exc)) from exc
    entries = {e["shard"]: e for e in manifest["shards"]}
    if shards is not None and not shards:
        raise Refused("no shards selected (an empty shard list)")
    chosen = list(entries) if shards is None else list(dict.fromkeys(shards))  # each once
    unknown = [s for s in chosen if s not in entries]
    if unknown:
        names = ", ".join(list(entries)[:10]) + (", ..." if len(entries) > 10 else "")
        tar = (" (shard names are without .tar)"
               if any(s.endswith(".tar") and s[:-4] in entries for s in unknown) else "")
        raise Refused(f"archive has no shard(s) {', '.join(unknown)}{tar}; it has "
                      f"{len(entries)} shards: {names}")
    any_shard, pairs = read_keys_file(keys_file) if keys_file else (set(), set())
    if keys_file and not any_shard and not pairs:
        raise Refused(f"keys file {keys_file} lists no keys")
    if keys_file:
        # Keys without a shard: only the shards that the index says hold them are read (and
        # only their files are refused over, without --overwrite). A key the index does not
        # have is reported missing without reading any shard; verify checks the index.
        try:
            holding: dict[str, set[str]] | None = (shards_holding(archive, any_shard, storage)
                                                   if any_shard else {})
        except (ValueError, OSError, pa.ArrowException) as exc:  # FormatError: no index
            # look in every chosen shard (slower, but the shard files are what restore reads)
            if not isinstance(exc, FormatError) and progress:
                print(f"latentarc restore: _index.parquet is unreadable ({type(exc).__name__}: "
                      f"{exc}); looking in every shard (latentarc verify checks the index)",
                      file=sys.stderr)
            holding = None
        # by shard, in one pass over the keys (a pass per shard took minutes at 10k shards)
        wanted_by_shard: dict[str, set[str]] = {s: set() for s in chosen}
        if holding is None:
            for s in chosen:
                wanted_by_shard[s] |= any_shard
        else:
            for k, holders in holding.items():
                for s in holders:
                    if s in wanted_by_shard:
                        wanted_by_shard[s].add(k)
        for ps, k in pairs:
            if ps in wanted_by_shard:
                wanted_by_shard[ps].add(k)
        chosen = [s for s in chosen if wanted_by_shard[s]]
    report = RestoreReport(archive, destination, chosen)
    tasks = [
        {
            "shard": s,
            "file_name": entries[s]["source_file"],
            "keys": sorted(wanted_by_shard[s]) if keys_file else None,
            "samples": entries[s]["samples"],
        }
        for s in chosen
    ]
    fs, path = filesystem(destination, storage)
    if fs.isfile(path):
        raise Refused(f"{destination} is a file; restore writes shards into a directory or prefix")
    present = _names_in(destination, storage)  # one listing, not a request per shard
    if not overwrite:
        there = {t["shard"]: name for t in tasks
                 if (name := t["shard"] if layout == "files" else t["file_name"]) in present}
        if there and where:  # only the shards with a matching row are written
            conditions = parse_where(where)
            written = per_file(lambda s: _may_write(archive, s, conditions, storage), there)
            there = {s: name for (s, name), w in zip(there.items(), written, strict=True) if w}
        there = list(there.values())
        if there:
            raise Refused(f"{destination} already has {len(there)} of what this restore would "
                          f"write ({', '.join(there[:5])}{', ...' if len(there) > 5 else ''}); "
                          "restore elsewhere, or pass --overwrite to replace them")
    if layout == "webdataset" and tasks and is_local(fs):
        # A restore stopped or killed mid-shard left the temp file of each tar in flight (on an
        # object store its temp file is on the worker's node); this run writes those tars again.
        remove_temp_files(destination, storage, [t["file_name"] for t in tasks])
    log = Progress("restore", len(tasks), progress)
    found_pairs: set[tuple[str, str]] = set()
    excluded_pairs: set[tuple[str, str]] = set()
    ray_options = ray_options or RayOptions()
    if tasks:
        ray_options = resolve(ray_options, _uses_gpu(manifest.get("codec")))
        log.note(describe(ray_options))
    args = (archive, destination, image_format, jpeg_quality, asdict(storage), where, layout,
            decoder, worker_device(ray_options), skip_damaged)
    try:
        for result in run_per_shard(RestoreWorker, args, tasks, ray_options, on_start=log.start):
            name = result["shard"]
            if result["ok"]:
                report.written[name] = result["samples"]
                if result["wrote"]:
                    report.outputs.append(name)
                report.row_groups_skipped += result["row_groups_skipped"]
                found_pairs.update((name, k) for k in result["keys"] + result["damaged_keys"])
                if result["damaged"]:
                    report.damaged[name] = result["damaged"]
                excluded_pairs.update((name, k) for k in result["excluded_keys"])
                log.update(name, result["samples"], 0, result["bytes_out"])
            else:
                report.failed[name] = result["error"]
                log.update(name, error=result["error"])
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (pipeline/interrupt.py): the actors are gone
        raise interrupt.Interrupted(_stopped(report, tasks, layout, storage, present)) from None
    for task in tasks:
        if task["shard"] not in report.written and task["shard"] not in report.failed:
            report.failed[task["shard"]] = "no result returned by the worker"
    if keys_file:
        found_keys = {k for _, k in found_pairs}
        excluded_keys = {k for _, k in excluded_pairs} - found_keys
        report.excluded_keys = sorted(
            [k for k in any_shard if k in excluded_keys]
            + [f"{s}\t{k}" for s, k in pairs if (s, k) in excluded_pairs]
        )
        report.missing_keys = sorted(
            [k for k in any_shard if k not in found_keys and k not in excluded_keys]
            + [f"{s}\t{k}" for s, k in pairs if (s, k) not in found_pairs
               and (s, k) not in excluded_pairs and s in report.written]
            + [f"{s}\t{k}" for s, k in pairs if s not in entries]
            # a listed shard that --shards left out: not restored, so not found either
            + [f"{s}\t{k}" for s, k in pairs if s in entries and s not in report.shards]
        )
    report.seconds = round(time.monotonic() - started, 3)
    return report
