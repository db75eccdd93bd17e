"""The one place that opens URLs: fsspec filesystems, the credential policy, atomic writes.

Storage options given on the command line or in a config file are stored in Ray's job table
and may be logged, so they must be non-secret (endpoint, region, ...). ``StorageOptions``
refuses anything that looks like a credential; workers find credentials in their own
environment or the usual credential files, exactly as boto/gcsfs do without latentarc.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit

import fsspec
from fsspec.implementations.local import LocalFileSystem

try:
    import fcntl
except ImportError:  # not POSIX: the PID check alone decides
    fcntl = None  # type: ignore[assignment]

_SECRET_WORDS = ("key", "secret", "token", "password", "passwd", "credential", "session",
                 "authorization", "connection_string", "signature")
# Options whose names hold a secret word but whose values are not secrets: the listing cache,
# and the id (not the key material) of a KMS key for server-side encryption.
_ALLOWED_WITH_SECRET_WORD = {"use_listings_cache", "ssekmskeyid"}
# Query parameters that carry a credential (presigned S3/GCS URLs, Azure SAS, bearer tokens).
_SECRET_QUERY = re.compile(r"(^|&)(x-amz-(credential|signature|security-token)|x-goog-"
                           r"(credential|signature)|signature|awsaccesskeyid|sig|"
                           r"access_token|token)=", re.IGNORECASE)


# The name of write_atomic's local temp file beside its destination: a crashed writer's is
# recognised by exactly this, never by ".tmp-" anywhere in a name (a source may be
# called "night.tmp-2024.tar").
TEMP_NAME = re.compile(r"^\.(?P<final>.+)\.tmp-[0-9a-f]{32}$")


class StorageError(ValueError):
    """A URL or storage option is refused (for example, it carries a credential)."""


# gcsfs's ``token`` may name a way to find credentials instead of holding one.
_TOKEN_MODES = {"anon", "google_default", "cloud", "cache", "browser"}


def _check_non_secret(options: Mapping[str, Any], where: str) -> None:
    for name, value in options.items():
        lowered = str(name).lower()
        if lowered == "token" and value in _TOKEN_MODES:
            continue
        if lowered not in _ALLOWED_WITH_SECRET_WORD and any(w in lowered for w in _SECRET_WORDS):
            raise StorageError(
                f"storage option {where}{name!r} looks like a credential; credentials are taken "
                "only from the environment or credential files, never from flags or config"
            )
        if isinstance(value, Mapping):
            _check_non_secret(value, f"{where}{name}.")
        elif isinstance(value, str) and ("url" in lowered or "endpoint" in lowered):
            check_url(value)  # e.g. --storage-option endpoint_url=http://KEY:SECRET@host


def check_url(url: str) -> None:
    """Refuse URLs that embed credentials: ``s3://KEY:SECRET@bucket``, in any part of a
    chained URL (``simplecache::s3://...``), or a presigned URL's signature in its query."""
    for part in url.split("::"):
        parts = urlsplit(part)
        if parts.scheme and "@" in parts.netloc:
            raise StorageError("URLs must not carry credentials (found '@' in the host part)")
        if parts.scheme in ("http", "https") and _SECRET_QUERY.search(parts.query):
            raise StorageError(
                "URLs must not carry credentials (a signature or token in the query string, as "
                "in a presigned URL, would be stored in the archive and in Ray's job table); "
                "give the object's s3:// or gs:// URL, with credentials from the environment")


def missing_credentials(exc: BaseException) -> StorageError | None:
    """The StorageError to raise for botocore's "no credentials" errors (None for any other):
    the Python API (Archive.open, ArchiveDataset) gave botocore's NoCredentialsError, which
    does not say where latentarc looks for them."""
    if type(exc).__name__ not in ("NoCredentialsError", "PartialCredentialsError"):
        return None
    return StorageError(f"no credentials for this store ({exc}): set AWS_ACCESS_KEY_ID and "
                        "AWS_SECRET_ACCESS_KEY, or a profile in the usual credential files")


@dataclass(frozen=True)
class StorageOptions:
    """Non-secret fsspec options for remote URLs (local paths ignore them).

    ``endpoint_url`` and ``region`` are mapped to what s3fs expects; ``extra`` is passed to
    fsspec as is. When no endpoint is given, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``
    from the environment is used, since not every client library honours them.
    """

    endpoint_url: str | None = None
    region: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_non_secret(self.extra, "")
        if self.endpoint_url:
            check_url(self.endpoint_url)

    @classmethod
    def from_config(
        cls,
        config_file: str | None = None,
        endpoint_url: str | None = None,
        region: str | None = None,
        pairs: list[str] | None = None,
    ) -> StorageOptions:
        """Merge a JSON config file, then ``KEY=VALUE`` pairs, then explicit flags."""
        extra: dict[str, Any] = {}
        if config_file:
            try:
                with open(config_file, encoding="utf-8") as f:
                    loaded = json.load(f)
            except (OSError, ValueError) as exc:  # missing, unreadable, or not JSON
                raise StorageError(f"--storage-config {config_file}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise StorageError(f"{config_file}: storage config must be a JSON object")
            endpoint_url = endpoint_url or loaded.pop("endpoint_url", None)
            region = region or loaded.pop("region", None)
            extra.update(loaded)
        for pair in pairs or []:
            name, sep, value = pair.partition("=")
            if not sep:
                raise StorageError(f"--storage-option expects KEY=VALUE, got {pair!r}")
            try:
                extra[name] = json.loads(value)
            except json.JSONDecodeError:
                extra[name] = value
        return cls(endpoint_url=endpoint_url, region=region, extra=extra)

    def fsspec_options(self, protocol: str) -> dict[str, Any]:
        if protocol in ("file", "local", ""):
            return {}
        options = dict(self.extra)
        if protocol in ("s3", "s3a"):
            endpoint = (
                self.endpoint_url
                or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL")
            )
            client_kwargs = dict(options.pop("client_kwargs", {}) or {})
            if endpoint:
                options["endpoint_url"] = endpoint
            if self.region:
                client_kwargs["region_name"] = self.region
            if client_kwargs:
                options["client_kwargs"] = client_kwargs
        return options


def _is_chained(url: str) -> bool:
    """Whether ``url`` uses fsspec's ``::`` chaining (``simplecache::s3://b/x``,
    ``simplecache::/tmp/x``), rather than naming a file whose name holds ``::``.

    fsspec reads every ``::`` as chaining, so ``/data/part::1.tar`` became the path
    ``/data/part`` (the shard failed with FileNotFoundError naming a file it never had), and
    ``s3://b/arc/shards/x::1.parquet`` and ``x::2.parquet`` were both written to the object
    ``x``. A URL chains only when what comes before its first ``::`` is a bare protocol name
    fsspec knows (so a local file literally called ``simplecache::x.tar`` in the working
    directory would have to be given as ``./simplecache::x.tar``)."""
    return "::" in url and url.split("::", 1)[0] in fsspec.available_protocols()


def filesystem(url: str, storage: StorageOptions | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Resolve ``url`` to (filesystem, path) with the non-secret options applied."""
    check_url(url)
    chained = _is_chained(url)
    if chained:  # the options go to the chain's last link, the store (simplecache::s3://...)
        target = fsspec.core.split_protocol(url.rsplit("::", 1)[1])[0] or "file"
        target_options = (storage or StorageOptions()).fsspec_options(target)
        if target in ("s3", "s3a"):
            target_options.setdefault("use_listings_cache", False)  # see below
        return fsspec.core.url_to_fs(url, **({target: target_options} if target_options else {}))
    protocol = fsspec.core.split_protocol(url)[0] or "file"
    options = (storage or StorageOptions()).fsspec_options(protocol)
    if protocol in ("s3", "s3a"):
        # No listing cache: shard files are written by Ray workers in other processes, so a
        # listing the driver cached while planning is stale once they finish. With it, a
        # resumed run listed shards/ with some files missing, then could not find the files its
        # workers had just written (write_index: FileNotFoundError), and no _archive.json was
        # written. Found by tests/test_s3_restart.py. A given use_listings_cache is kept.
        options.setdefault("use_listings_cache", False)
    if "::" in url:  # a name holding "::": no chaining (see _is_chained)
        fs = fsspec.filesystem(protocol, **options)
        # _strip_protocol treats "::" as chaining too (memory:// then drops its leading "/"):
        # hide it from the call
        return fs, fs._strip_protocol(url.replace("::", "\0")).replace("\0", "::")
    fs, path = fsspec.core.url_to_fs(url, **options)
    return fs, path


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


def join(url: str, *parts: str) -> str:
    return "/".join([url.rstrip("/"), *parts])


def write_atomic(
    url: str, write: Callable[[IO[bytes]], None], storage: StorageOptions | None = None
) -> int:
    """Write ``url`` so that it appears only complete; returns the number of bytes written.

    Local: a hidden temp file in the target directory, fsync, then ``os.replace``. Object
    stores: a local temp file named with this process's PID and locked while in use, then one
    ``put_file`` (a single PUT, or a multipart upload that becomes visible only when
    completed); temp files of writers that died are removed first
    (``remove_dead_writers_parts``). If ``write`` raises, nothing appears at ``url``.
    """
    fs, path = filesystem(url, storage)
    if is_local(fs):
        directory = os.path.dirname(path) or "."
        os.makedirs(directory, exist_ok=True)
        # Named as TEMP_NAME expects, so that a crashed writer's file is found by that alone.
        tmp = os.path.join(directory, f".{_short(os.path.basename(path))}.tmp-{uuid.uuid4().hex}")
        try:
            with open(tmp, "wb") as f:
                if fcntl is not None:  # a live writer's: remove_temp_files leaves it alone
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
                write(f)
                f.flush()
                os.fsync(f.fileno())
                size = f.tell()
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        return size
    remove_dead_writers_parts()
    with tempfile.NamedTemporaryFile(prefix=f"{_PART_PREFIX}{os.getpid()}-", suffix=_PART_SUFFIX) as tmp:
        if fcntl is not None:
            fcntl.flock(tmp.fileno(), fcntl.LOCK_EX)  # held until closed, or the process dies
        write(tmp)
        tmp.flush()
        size = tmp.tell()
        fs.put_file(tmp.name, path)
    return size


def remove_temp_files(directory: str, storage: StorageOptions | None = None,
                      finals: Collection[str] | None = None) -> list[str]:
    """Remove the temp files that ``write_atomic`` left in ``directory`` (a local one) when
    its writer died: a killed worker, a stopped run. Only those for the file names in
    ``finals`` when it is given. Returns their final names (cut as ``_short`` cut them).

    Never valid, so safe to remove once their writer is gone. A writer still alive holds the
    ``flock`` that ``write_atomic`` takes (another compress run into the same archive, say):
    its temp file is left alone. (Temp files of versions before session 26 had no lock.)"""
    fs, path = filesystem(directory, storage)
    if not fs.exists(path):
        return []
    wanted = None if finals is None else {_short(name) for name in finals}
    stale = {p: match["final"] for p in fs.ls(path, detail=False)
             if (match := TEMP_NAME.match(p.rsplit("/", 1)[-1]))
             and (wanted is None or match["final"] in wanted)}
    removed = []
    for p, final in stale.items():
        if is_local(fs) and _locked(p):
            continue
        with contextlib.suppress(FileNotFoundError):  # its writer finished meanwhile
            fs.rm(p)
            removed.append(final)
    return removed


def _locked(path: str) -> bool:
    """Whether a live writer holds ``path``'s flock."""
    if fcntl is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True  # gone already: nothing to remove
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def _short(name: str, limit: int = 200) -> str:
    """``name`` cut to ``limit`` bytes of UTF-8, so that the temp name's 39 more bytes stay
    within the 255 bytes a file name may have (a 233-byte shard name failed every write)."""
    data = name.encode()
    return name if len(data) <= limit else data[:limit].decode(errors="ignore")


_PART_PREFIX, _PART_SUFFIX = "latentarc-", ".part"
_PART_NAME = re.compile(r"latentarc-(\d+)-.*\.part")


def pid_exists(pid: int) -> bool:
    """Whether a process of this PID exists (another user's too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_dead_writers_parts(directory: str | None = None) -> list[str]:
    """Remove the local temp files (``latentarc-<pid>-*.part``) of object-store writers that died.

    A SIGKILLed worker never runs the ``NamedTemporaryFile`` cleanup, so without this every
    killed upload leaves a shard-sized file in the node's temp directory; the next write on
    that node removes it. A file is removed only when the PID in its name does not exist and
    nobody holds the ``flock`` its writer takes for the file's whole life (the lock covers a
    writer in another PID namespace sharing this directory, whose PID means nothing here; a
    reused PID only keeps a file longer). Files without a PID in the name (written by older
    versions) are left alone: their owner cannot be told. Returns the paths removed; errors
    never fail the write that called this.
    """
    directory = directory or tempfile.gettempdir()
    removed: list[str] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _PART_NAME.fullmatch(entry.name)
        if not match or int(match.group(1)) == os.getpid() or pid_exists(int(match.group(1))):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:  # gone already (another cleaner) or not ours to read
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:  # held: its writer is alive
                    continue
            os.unlink(entry.path)
            removed.append(entry.path)
        except OSError:
            continue
        finally:
            os.close(fd)
    return removed


def write_bytes_atomic(url: str, data: bytes, storage: StorageOptions | None = None) -> None:
    write_atomic(url, lambda f: f.write(data), storage)


def read_bytes(url: str, storage: StorageOptions | None = None) -> bytes:
    fs, path = filesystem(url, storage)
    with fs.open(path, "rb") as f:
        return f.read()


# Requests made at once where the driver reads one small thing per shard file (footers, key
# columns): on an object store each is a round trip of 10-50 ms, so one after another, ten
# thousand shards took minutes before and after any work.
REQUEST_THREADS = 16
_T = TypeVar("_T")
_R = TypeVar("_R")


def per_file(fn: Callable[[_T], _R], items: Iterable[_T]) -> list[_R]:
    """``[fn(x) for x in items]``, up to ``REQUEST_THREADS`` at a time, in order; the first
    error (in order) is raised."""
    items = list(items)
    if len(items) < 2:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(min(REQUEST_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))


# A Parquet file streamed front to back on an object store (restore's and verify's rows) is
# fetched in blocks of this size, a few kept (pyarrow reads each column as its own stream, so
# the reads of two large columns interleave): one request per block, not one per pyarrow read.
# At most 32 MiB held per file (s3fs's default readahead held 50 MiB); a block is one request
# one after another, so it is large enough for a store 20-50 ms away.
STREAM_BLOCK = 8 << 20
STREAM_BLOCKS_KEPT = 4


def open_random_access(url: str, storage: StorageOptions | None = None, *,
                       streamed: bool = False):
    """Open a Parquet file for reading. Read at a few places (a footer, then the column chunks
    wanted), a remote file reads exactly what is asked, one ranged request per read: fsspec's
    default readahead fetches a whole block on every miss (s3fs: 50 MiB), so an
    ``Archive.get`` downloaded the whole index and the whole shard file, and a compress rerun
    with nothing to do downloaded the whole archive to rebuild the index from its key column.
    ``streamed``: read through (rows in order), in ``STREAM_BLOCK`` blocks, of which an LRU
    keeps ``STREAM_BLOCKS_KEPT``: a readahead of one range would thrash between interleaved
    columns, and no cache at all made a request of every 1 MiB pyarrow read."""
    fs, path = filesystem(url, storage)
    if is_local(fs) or _is_chained(url):  # local reads are not requests; a chain sets its own
        return fs.open(path, "rb")
    if streamed:
        return fs.open(path, "rb", cache_type="blockcache", block_size=STREAM_BLOCK,
                       cache_options={"maxblocks": STREAM_BLOCKS_KEPT})
    return fs.open(path, "rb", cache_type="none")


# What a store says of an object that changes with every write of it
_VERSION_FIELDS = ("ETag", "etag", "generation", "VersionId", "md5Hash")


def file_identity(f) -> tuple | None:
    """What tells this version of an open file from any other, from what opening it returned
    (no request): a store's ETag or generation with the size; a local file's device, inode,
    size, mtime and ctime (an inode is reused once freed, and mtime can be set back; ctime
    cannot). None where the file says neither. On a filesystem with coarse timestamps (FAT,
    some network mounts) a rewrite to the same size within one tick goes unseen. Checked on
    S3 (SeaweedFS) and local files; gcsfs's generation is taken on trust."""
    details = getattr(f, "details", None)
    if isinstance(details, dict):
        for name in _VERSION_FIELDS:
            if details.get(name):
                return ("store", details.get("size"), name, str(details[name]))
        return None
    try:
        st = os.fstat(f.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return ("local", st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def exists(url: str, storage: StorageOptions | None = None) -> bool:
    fs, path = filesystem(url, storage)
    return fs.exists(path)


def remove(url: str, storage: StorageOptions | None = None) -> None:
    """Delete one file if it exists."""
    fs, path = filesystem(url, storage)
    if fs.exists(path):
        fs.rm_file(path)  # this key only: s3fs's rm() expands [ ] ? * in a path as a glob


def remove_tree(url: str, storage: StorageOptions | None = None) -> None:
    """Delete a local directory or remote prefix (used by tests and the demo)."""
    fs, path = filesystem(url, storage)
    if is_local(fs):
        shutil.rmtree(path, ignore_errors=True)
    elif fs.exists(path):
        fs.rm(path, recursive=True)
