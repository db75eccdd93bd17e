"""Read and write WebDataset tar shards as streams of samples, losing nothing.

Grouping follows WebDataset: a member ``dir/abc.seg.png`` has key ``dir/abc`` and suffix
``seg.png``; consecutive members with the same key form one sample. Unlike webdataset's own
iterator, nothing is skipped (``__meta__`` files and members without a suffix are kept) and a
damaged tar raises an error naming the shard and the last key read, so no member is dropped
silently. Directory entries carry no data and are passed over; a link, device or FIFO member
fails the shard with its name (a link's bytes live elsewhere, so storing it would lose them).
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO

_KEY_SUFFIX = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


class ShardReadError(IOError):
    """A shard cannot be read to the end; the message names the shard and the last key."""


# Magic bytes of the compressed files a shard is most often mistaken for (a .tar.gz named .tar,
# a .tgz, a .tar.zst). Read as a tar they fail with "invalid header", which looks like damage a
# rerun might cure; naming the compression says what to do instead.
_COMPRESSED = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"), (b"\xfd7zXZ\x00", "xz"))
# bzip2: "BZh", the block size digit, then the block magic (pi's digits): "BZh" alone is also how
# a tar whose first member is named BZh... starts
_BZIP2 = re.compile(rb"BZh[1-9]1AY&SY")


# How a shard error says that running again cannot help (the CLI counts such shards apart).
NOT_RETRYABLE = "rerunning will not help"


def compression_of(head: bytes) -> str | None:
    """The compression whose magic ``head`` (a file's first bytes) starts with, or None."""
    if _BZIP2.match(head):
        return "bzip2"
    return next((name for magic, name in _COMPRESSED if head.startswith(magic)), None)


_MEMBER_KINDS = {tarfile.SYMTYPE: "symbolic link", tarfile.LNKTYPE: "hard link",
                 tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
                 tarfile.FIFOTYPE: "FIFO"}


@dataclass
class Sample:
    key: str
    members: list[tuple[str, bytes]] = field(default_factory=list)  # (suffix, bytes), tar order

    def suffixes(self) -> list[str]:
        return [s for s, _ in self.members]

    @property
    def nbytes(self) -> int:
        return sum(len(d) for _, d in self.members)


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset's key/suffix split; a name without a suffix is its own key.

    So is a name ending in a dot ("a."), which WebDataset would split into key "a" and an empty
    suffix: kept whole, it is written back under the same name."""
    match = _KEY_SUFFIX.match(name)
    if not match or not match.group(2):
        return name, ""
    return match.group(1), match.group(2)


def member_name(key: str, suffix: str) -> str:
    return f"{key}.{suffix}" if suffix else key


class _TailReader:
    """Passes reads through, counting bytes and keeping the last few records read.

    tarfile treats a header cut short after the first member as a normal end of archive, so a
    shard truncated at a member boundary would lose its tail silently. A complete tar has a zero
    block where tarfile stops reading headers (``TarFile.offset``); this reader lets us look at
    those bytes afterwards without relying on tarfile's private classes (an earlier TarInfo
    subclass hook broke on a patched Python 3.12)."""

    KEEP = 4 * tarfile.RECORDSIZE
    HEAD = 10  # enough for every magic in _COMPRESSED and _BZIP2

    def __init__(self, fileobj: IO[bytes]) -> None:
        self.fileobj, self.pos, self.tail, self.head = fileobj, 0, b"", b""

    def read(self, size: int = -1) -> bytes:
        data = self.fileobj.read(size)
        if len(self.head) < self.HEAD:
            self.head = (self.head + data)[:self.HEAD]
        self.pos += len(data)
        self.tail = (self.tail + data)[-self.KEEP:]
        return data

    def ends_with_zero_block_at(self, offset: int) -> bool:
        start = offset - (self.pos - len(self.tail))
        block = self.tail[start:start + tarfile.BLOCKSIZE] if start >= 0 else b""
        return len(block) == tarfile.BLOCKSIZE and block.count(0) == tarfile.BLOCKSIZE

    def nonzero_after(self, offset: int) -> int | None:
        """Read to the end of the file; the offset of the first non-zero byte at or after
        ``offset`` (where tarfile stopped), or None when only zero padding follows.

        tarfile stops at the first zero block, so a tar with members after one (two tars
        concatenated, or a header zeroed in the middle) would otherwise lose them silently."""
        start = max(0, offset - (self.pos - len(self.tail)))
        base = self.pos - len(self.tail)
        chunk = self.tail[start:]
        while True:
            stripped = chunk.lstrip(b"\0")
            if stripped:
                return base + start + len(chunk) - len(stripped)
            base, start = self.pos, 0
            chunk = self.read(1 << 16)
            if not chunk:
                return None


def iter_samples(fileobj: IO[bytes], shard: str) -> Iterator[Sample]:
    """Stream samples out of an open tar file object; a truncated tar raises."""
    current: Sample | None = None
    reading = ""
    any_member = False
    reader = _TailReader(fileobj)
    try:
        # "r|": plain tar streams only (a compressed shard fails, named as compressed, instead
        # of being misjudged by the end-of-archive check).
        with tarfile.open(fileobj=reader, mode="r|") as stream:
            for info in stream:
                any_member = True
                if info.isdir():
                    continue
                if not info.isreg():
                    kind = _MEMBER_KINDS.get(info.type, f"member of tar type {info.type!r}")
                    target = f" to {info.linkname!r}" if info.islnk() or info.issym() else ""
                    raise ShardReadError(
                        f"shard {shard}: member {info.name!r} is a {kind}{target}; only regular "
                        "files can be archived (write the file's bytes into the shard instead; "
                        f"{NOT_RETRYABLE})")
                reading = info.name
                key, suffix = split_member_name(info.name)
                try:
                    info.name.encode("utf-8")
                except UnicodeEncodeError:  # tarfile's surrogate escapes of non-UTF-8 bytes
                    raise ShardReadError(
                        f"shard {shard}: member {info.name!r} (key {key!r}) has a name that is "
                        "not UTF-8; the archive stores names as UTF-8 text, so this shard is not "
                        f"archived (write the shard again with UTF-8 member names; {NOT_RETRYABLE})"
                    ) from None
                handle = stream.extractfile(info)
                data = handle.read() if handle is not None else b""
                if current is not None and (key != current.key or suffix in current.suffixes()):
                    yield current
                    current = None
                if current is None:
                    current = Sample(key)
                current.members.append((suffix, data))
                stream.members = []  # streaming: do not keep every TarInfo of the shard
                reading = ""
            end = stream.offset
        if not reader.ends_with_zero_block_at(end):
            raise tarfile.ReadError("tar ends without its end-of-archive block (truncated)")
        if (extra := reader.nonzero_after(end)) is not None:
            raise tarfile.ReadError(
                f"data at byte {extra} follows the end-of-archive block at byte {end} (tars "
                "concatenated, or a member header zeroed): the members after it cannot be read")
    except ShardReadError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        # Only before the first header: a file whose first header parsed is a tar.
        if not any_member and (kind := compression_of(reader.head)):
            raise ShardReadError(
                f"shard {shard}: the file is {kind}-compressed, not a tar; latentarc reads "
                f"uncompressed tar shards, so {NOT_RETRYABLE}: decompress it to a .tar first"
            ) from exc
        after = f"after key {current.key!r}" if current is not None else "before its first sample"
        where = f" while reading member {reading!r}" if reading else ""
        # a read that failed (OSError: the store, the network) may succeed when run again; a
        # tar that does not parse will not
        fix = "" if isinstance(exc, OSError) else f" ({NOT_RETRYABLE}: repair the shard, or leave it out)"
        raise ShardReadError(f"shard {shard}: tar is damaged {after}{where}: {exc}{fix}") from exc
    if current is not None:
        yield current


def write_samples(fileobj: IO[bytes], samples: Iterable[Sample]) -> int:
    """Write samples as a tar stream (fixed mtime and owner, so output is reproducible)."""
    count = 0
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for sample in samples:
            for suffix, data in sample.members:
                info = tarfile.TarInfo(member_name(sample.key, suffix))
                info.size = len(data)
                info.mode = 0o644
                info.mtime = 0
                tar.addfile(info, io.BytesIO(data))
            count += 1
    return count
