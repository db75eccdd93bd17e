"""Turn the user's SRC arguments into a list of shard URLs, each with a unique shard name.

SRC may be a shard URL, a brace list (``s3://b/p/shard-{000000..000009}.tar``), a glob, or a
directory/prefix (every ``*.tar`` directly under it). The shard name (the file name without
``.tar``) names the archive's Parquet file and the restored shard, so two sources with the same
file name are refused rather than silently merged.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

import braceexpand

from pipeline.storage import StorageOptions, filesystem, is_local

SHARD_SUFFIX = ".tar"


class SourceError(ValueError):
    """The sources cannot be turned into a list of shards."""


@dataclass(frozen=True)
class Shard:
    url: str
    name: str  # file name without .tar: the shard's identity in the archive
    file_name: str  # original file name, used when restoring


def shard_name(url: str) -> tuple[str, str]:
    # An http(s) URL's query string is not part of its file name; in an object store's key
    # (s3://b/q?x#y.tar) ? and # are just characters.
    path = urlsplit(url).path if url.startswith(("http://", "https://")) else url
    file_name = path.rstrip("/").rsplit("/", 1)[-1]
    name = file_name[: -len(SHARD_SUFFIX)] if file_name.endswith(SHARD_SUFFIX) else file_name
    if not name or name.startswith("."):
        raise SourceError(f"cannot name a shard after {url!r}")
    return name, file_name


def _full_url(fs, path: str) -> str:
    if is_local(fs):
        return os.path.abspath(path)
    return fs.unstrip_protocol(path)


def _hidden(path: str) -> bool:
    """A dot-name (macOS's ``._shard.tar``): passed over in listings, as a shell does."""
    return path.rstrip("/").rsplit("/", 1)[-1].startswith(".")


def _expand_one(src: str, storage: StorageOptions | None, alone: bool = False) -> list[str]:
    """``alone``: ``src`` is a whole SRC argument, not one name of a brace list (whose names
    are not looked for one by one: a request each on an object store)."""
    fs, path = filesystem(src, storage)
    if not alone and path.endswith(SHARD_SUFFIX) and not any(ch in path for ch in "*?[") \
            and not is_local(fs):
        return [_full_url(fs, path)]  # a name of a brace list on a store: no request each
    # A file or directory whose name holds [ ] or ? is that file or directory, not a pattern
    # (a[1].tar matched a1.tar; a directory batch[1] matched nothing and was refused).
    if any(ch in path for ch in "*?[") and not fs.isfile(path) and not fs.isdir(path):
        urls = []
        for p, info in sorted(fs.glob(path, detail=True).items()):
            if _hidden(p):
                continue
            if info.get("type") == "directory":
                # as the directory itself given as SRC would be (data/batch* -> their shards);
                # one without shards adds none instead of being taken for a shard
                with contextlib.suppress(SourceError):
                    urls += _expand_one(_full_url(fs, p) + "/", storage)
                continue
            urls.append(_full_url(fs, p))
        if not urls:
            raise SourceError(f"no files match {src}")
        return urls
    if fs.isdir(path):
        # One listing with types: checking each entry cost a request per object on S3.
        found = sorted(e["name"] for e in fs.ls(path, detail=True)
                       if e.get("type") == "file" and e["name"].endswith(SHARD_SUFFIX)
                       and not _hidden(e["name"]))
        if not found:
            raise SourceError(f"no *{SHARD_SUFFIX} shards under {src}")
        return [_full_url(fs, p) for p in found]
    if src.endswith("/"):  # meant as a directory or prefix: a missing one is no shard
        raise SourceError(f"{src} is not a directory or prefix (or its bucket does not exist)")
    # A named shard of a brace list, or on a store, is taken as given: a missing one fails as
    # that shard, not the job (one missing file of a brace list of a thousand should not stop
    # the other 999, and on a store each look is a request). An SRC that is not named as a
    # shard is looked for (a mistyped directory ran a job that failed), and so is a local file
    # named alone (a stat: it ran Ray to report one failed shard, and left an archive stub).
    if alone and (is_local(fs) or not path.endswith(SHARD_SUFFIX)) and not fs.exists(path):
        raise SourceError(f"{src} does not exist (no such directory, prefix or {SHARD_SUFFIX} file)")
    return [_full_url(fs, path)]


def expand_sources(sources: list[str], storage: StorageOptions | None = None) -> list[Shard]:
    """Expand SRC arguments into shards, in the order given; refuse duplicate shard names."""
    shards: list[Shard] = []
    seen: dict[str, str] = {}
    for src in sources:
        patterns = list(braceexpand.braceexpand(src))
        for pattern in patterns:
            for url in _expand_one(pattern, storage, alone=len(patterns) == 1):
                name, file_name = shard_name(url)
                if name in seen:
                    if seen[name] == url:
                        continue
                    raise SourceError(
                        f"two sources share the shard name {name!r}: {seen[name]} and {url}"
                    )
                seen[name] = url
                shards.append(Shard(url, name, file_name))
    if not shards:
        raise SourceError("no input shards given")
    return shards
