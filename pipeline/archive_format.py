"""Archive format v1: row schema, per-shard file metadata, manifest. Documented in FORMAT.md.

Layout under the archive URL::

    _archive.json               manifest, written last: an archive without it is incomplete
    _stats.json                 per-shard figures of the archive (rewritten by every run)
    _index.parquet              key -> shard, row group (sorted by key) for random access
    shards/<shard>.parquet      one file per input shard, rows in source order

Each shard file carries its own JSON metadata (key ``latentarc``) with the codec, quality,
library versions and the shard's figures, so a resumed run can trust a finished file without
re-reading its rows.
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.storage import (
    StorageError,
    StorageOptions,
    file_identity,
    filesystem,
    join,
    missing_credentials,
    open_random_access,
    read_bytes,
    write_bytes_atomic,
)

FORMAT_VERSION = 1
FORMAT_NAME = "latentarc-archive"
MANIFEST = "_archive.json"
STATS = "_stats.json"
INDEX = "_index.parquet"
SHARDS_DIR = "shards"
META_KEY = "latentarc"  # file-level Parquet key-value metadata

STATUS_OK = "ok"
STATUS_PASSTHROUGH = "passthrough"

MEMBER = pa.struct([("name", pa.string()), ("data", pa.large_binary())])

SCHEMA = pa.schema(
    [
        ("shard", pa.string()),
        ("key", pa.string()),
        ("index", pa.int32()),
        ("status", pa.string()),
        ("reason", pa.string()),
        ("image_name", pa.string()),
        ("format", pa.string()),
        ("mode", pa.string()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("codec", pa.string()),
        ("weights", pa.string()),
        ("bitstream", pa.large_binary()),
        ("crc32c", pa.uint32()),
        ("content_hash", pa.binary(16)),
        ("bytes", pa.int64()),
        ("bpp", pa.float32()),
        ("psnr", pa.float32()),
        ("orig_sha256", pa.binary(32)),
        ("orig_size", pa.int64()),
        ("members", pa.list_(MEMBER)),
        # Added within v1 (nullable, see FORMAT.md): the original's metadata, for restore.
        ("exif", pa.large_binary()),
        ("icc_profile", pa.large_binary()),
        ("xmp", pa.large_binary()),
        # Added within v1 (nullable): LPIPS-alex of the decode, only with compress --metrics lpips.
        ("lpips", pa.float32()),
        # Added within v1 (nullable): a PNG original's gAMA, cHRM and sRGB chunks, for restore.
        ("png_colour", pa.large_binary()),
    ]
)

# How shard files are written (any Parquet reader reads them; the encodings are the format's
# standard ones). Columns whose values repeat keep dictionary pages; per-row values that never
# repeat (key, hashes, CRCs, sizes, metrics) are written PLAIN, because a dictionary of unique
# values only adds an index per row; ``index`` counts up, which DELTA_BINARY_PACKED stores in
# next to nothing. Together about 12 B/row less than pyarrow's defaults on a 176-row shard of
# Kodak images (benchmarks/pipeline/msh-n96-v2/README.md, session 14).
DICTIONARY_COLUMNS = ["shard", "status", "reason", "image_name", "format", "mode", "codec",
                      "weights", "members.list.element.name", "exif", "icc_profile", "xmp", "png_colour"]
WRITER_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "write_page_checksum": True,
    "use_dictionary": DICTIONARY_COLUMNS,
    "column_encoding": {"index": "DELTA_BINARY_PACKED"},
}


class FormatError(ValueError):
    """An archive or shard file is not something this version of latentarc can read."""


@contextlib.contextmanager
def reading(what: str, fix: str = "latentarc verify checks every file of the archive"
            ) -> Iterator[None]:
    """Around the reads of one archive file: pyarrow's own errors name no file (a truncated
    file: "Parquet magic bytes not found in footer"; a damaged page: "could not verify page
    integrity"), and from a DataLoader worker in a training job they said nothing of where to
    look. This names ``what``. Arrow's errors become FormatError (the file is damaged or is
    not Parquet); a plain OSError stays one (it may be the network), with ``what`` named.
    ``fix`` says what to do."""
    try:
        yield
    except FormatError:
        raise
    except pa.ArrowException as exc:  # ArrowInvalid and the like: not an I/O error
        raise FormatError(f"{what} is damaged or not Parquet ({exc}); {fix}") from exc
    except OSError as exc:
        if type(exc) is not OSError:  # FileNotFoundError and the like name their path
            raise
        raise OSError(f"{what} cannot be read ({exc}); {fix}") from exc


def shard_url(archive: str, shard: str) -> str:
    return join(archive, SHARDS_DIR, f"{shard}.parquet")


def codec_meta(codec) -> dict[str, Any]:
    """What every shard file and the manifest record about the codec that wrote them."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "codec": codec.id,
        "quality": codec.quality,
        "codec_versions": codec.versions(),
        "weights_sha256": codec.weights_sha256(),
    }


def check_version(meta: dict[str, Any], where: str) -> None:
    if meta.get("format") != FORMAT_NAME:
        raise FormatError(f"{where} is not a latentarc archive")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatError(
            f"{where} has archive format version {version}; this latentarc reads version "
            f"{FORMAT_VERSION} only. Use a latentarc release that supports it."
        )


def shard_meta(parquet: pq.ParquetFile, where: str) -> dict[str, Any]:
    raw = (parquet.metadata.metadata or {}).get(META_KEY.encode())
    if raw is None:
        raise FormatError(f"{where} has no latentarc metadata")
    meta = json.loads(raw)
    check_version(meta, where)
    return meta


def check_against_manifest(parquet: pq.ParquetFile, shard: str, expected_rows: int,
                           where: str) -> None:
    """FormatError unless an open shard file names ``shard`` and holds the manifest's
    ``expected_rows``, as verify checks: a file copied over from another shard, or left by
    another run, would otherwise be read as this shard's samples."""
    named = shard_meta(parquet, where).get("shard", shard)
    rows = parquet.metadata.num_rows
    if named != shard or rows != expected_rows:
        raise FormatError(f"{where}: its file holds shard {named!r} with {rows} rows where the "
                          f"manifest says {shard!r} with {expected_rows}: not the file this "
                          "archive was made with (latentarc verify names it)")


@dataclass(frozen=True)
class ShardFile:
    """A finished, readable shard file and its metadata."""

    shard: str
    url: str
    meta: dict[str, Any]
    # which version of the file (storage.file_identity): tells a file rewritten since apart
    identity: tuple | None = None


class Footers:
    """Parquet footers of files read before, reused while the file is unchanged, so that a
    second ``Archive.get`` reads no footer: on a store each is a request of up to 64 KiB
    (pyarrow's first read from a file's end), about half of a get's bytes.

    "Unchanged" is ``storage.file_identity`` of the newly opened file: the store's ETag or
    generation, or a local file's inode, size, mtime and ctime, all known from opening it, so
    the check costs no request. A file that tells none is never cached. The ``kept`` most recently
    used footers are kept."""

    def __init__(self, kept: int) -> None:
        self._kept = kept
        self._cache: collections.OrderedDict[
            str, tuple[tuple, pq.FileMetaData, dict[str, Any]]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def parquet(self, url: str, f) -> pq.ParquetFile:
        """``pq.ParquetFile`` of the open ``f`` (``url``'s), through the cached footer if any."""
        return self.open(url, f)[0]

    def open(self, url: str, f) -> tuple[pq.ParquetFile, dict[str, Any]]:
        """``parquet(url, f)``, and a dict kept with this version's footer, for what a caller
        derives from it (a new one for a new version, or where nothing is kept)."""
        identity = file_identity(f)
        with self._lock:
            cached = self._cache.get(url)
            if cached is not None and cached[0] == identity:
                self._cache.move_to_end(url)
                return (pq.ParquetFile(f, metadata=cached[1], page_checksum_verification=True),
                        cached[2])
        parquet = pq.ParquetFile(f, page_checksum_verification=True)
        derived: dict[str, Any] = {}
        if identity is not None:
            with self._lock:
                self._cache[url] = (identity, parquet.metadata, derived)
                self._cache.move_to_end(url)
                while len(self._cache) > self._kept:
                    self._cache.popitem(last=False)
        return parquet, derived


def open_shard_file(archive: str, shard: str, storage: StorageOptions | None = None,
                    footers: Footers | None = None):
    """Open a shard file for reading; the caller closes the returned file object. With
    ``footers``, the footer of this same file read before is not read again."""
    url = shard_url(archive, shard)
    f = open_random_access(url, storage)
    try:
        if footers is not None:
            return f, footers.parquet(url, f)
        return f, pq.ParquetFile(f, page_checksum_verification=True)
    except Exception:
        f.close()
        raise


def validate_shard_file(
    archive: str, shard: str, storage: StorageOptions | None = None
) -> tuple[ShardFile | None, str]:
    """Check that a shard file exists, has a readable footer and the rows its metadata claims.

    Returns (ShardFile, "") when valid, else (None, reason). Rows are not decoded here:
    that is ``verify``'s job.
    """
    url = shard_url(archive, shard)
    try:
        f, parquet = open_shard_file(archive, shard, storage)  # no HEAD before: one request less
        with f:
            meta = shard_meta(parquet, url)
            rows = parquet.metadata.num_rows
            identity = file_identity(f)
            size = getattr(f, "size", None)  # known from opening it: no second request
            if size is None:  # a chained URL's local copy (simplecache::s3://...) has none
                fs, path = filesystem(url, storage)
                size = fs.size(path)
    except FormatError:
        raise
    except FileNotFoundError:
        return None, "missing"
    except Exception as exc:
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    if rows != meta.get("samples"):
        return None, f"has {rows} rows, metadata says {meta.get('samples')}"
    if meta.get("shard", shard) != shard:  # a copied or renamed file: two entries, one source
        return None, f"named {shard} but holds shard {meta.get('shard')!r} (renamed or copied)"
    # The file's size is known only once it is written, so its metadata cannot hold it;
    # without it the totals of a resumed run counted 0 bytes for every skipped shard.
    return ShardFile(shard, url, {**meta, "archive_bytes": size}, identity), ""


def read_json(url: str, storage: StorageOptions | None = None) -> dict[str, Any]:
    """An archive's JSON file; FormatError, naming it, when it is not a JSON object (a damaged
    or truncated file gave a bare JSONDecodeError, exit 1, without saying which file)."""
    try:
        value = json.loads(read_bytes(url, storage))
    except (ValueError, UnicodeDecodeError) as exc:
        raise FormatError(f"{url} is damaged: it is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise FormatError(f"{url} is damaged: it holds a JSON {type(value).__name__}, not an object")
    return value


def write_json(url: str, value: dict[str, Any], storage: StorageOptions | None = None) -> None:
    write_bytes_atomic(url, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode(), storage)


def read_manifest(archive: str, storage: StorageOptions | None = None) -> dict[str, Any]:
    """Read and version-check ``_archive.json``; FormatError if absent or unknown."""
    url = join(archive, MANIFEST)
    fs, path = filesystem(url, storage)
    try:
        if not fs.exists(path):
            if not fs.exists(path.rsplit("/", 1)[0]):  # (on a store: a prefix with no objects)
                raise FormatError(f"{archive} does not exist (no such directory or prefix)")
            raise FormatError(
                f"{archive} has no {MANIFEST}: it is not an archive, or its compress run has not "
                "finished (run compress again to complete it)"
            )
        manifest = read_json(url, storage)
    except PermissionError as exc:
        # An S3 HEAD answered 403 carries no body: say what was refused and what to check.
        raise StorageError(
            f"access to {url} was refused ({exc or 'Forbidden'}): check the credentials for "
            "this store (environment or credential files) and its permissions") from exc
    except Exception as exc:
        if (refused := missing_credentials(exc)) is not None:
            raise refused from exc
        raise
    check_version(manifest, url)
    shards = manifest.get("shards")
    if not isinstance(manifest.get("codec"), str) or not isinstance(shards, list) or not all(
            isinstance(e, dict) and isinstance(e.get("shard"), str)
            and isinstance(e.get("source_file"), str) and isinstance(e.get("samples"), int)
            for e in shards):
        raise FormatError(f"{url} is damaged: it lacks the codec or a list of shards with "
                          "shard, source_file and samples each (rerun the compress command to "
                          "write it again)")
    return manifest
