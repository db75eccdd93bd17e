"""Tar shards as sample streams: WebDataset grouping, nothing dropped, damage named."""

import io
import tarfile

import pytest
from conftest import read_tar
from conftest import tar_bytes as _tar

from pipeline.tars import (
    NOT_RETRYABLE,
    Sample,
    ShardReadError,
    iter_samples,
    split_member_name,
    write_samples,
)


def test_grouping_follows_webdataset_and_keeps_everything():
    data = _tar([("dir/a.png", b"1"), ("dir/a.seg.png", b"2"), ("dir/a.json", b"3"),
                 ("__meta__", b"m"), ("b.txt", b"4")])
    samples = list(iter_samples(io.BytesIO(data), "s"))
    assert [(s.key, s.members) for s in samples] == [
        ("dir/a", [("png", b"1"), ("seg.png", b"2"), ("json", b"3")]),
        ("__meta__", [("", b"m")]),
        ("b", [("txt", b"4")]),
    ]
    assert split_member_name("x/y.tar.gz") == ("x/y", "tar.gz")


def test_repeated_suffix_starts_a_new_sample():
    data = _tar([("a.png", b"1"), ("a.png", b"2")])
    assert [s.members for s in iter_samples(io.BytesIO(data), "s")] == [[("png", b"1")], [("png", b"2")]]


@pytest.mark.parametrize(
    "cut, last_key", [(2600, "a"), (3500, "a' while reading member 'b.png"), (2560, "a"), (5120, "b")]
)
def test_truncated_tar_names_shard_and_last_key(cut, last_key):
    """Cut inside a header, inside a member's data, and exactly at a member boundary."""
    data = _tar([("a.png", b"x" * 2000), ("b.png", b"y" * 2000)])
    with pytest.raises(ShardReadError, match=f"shard s7: tar is damaged after key '{last_key}'"
                       ) as raised:
        list(iter_samples(io.BytesIO(data[:cut]), "s7"))
    assert str(raised.value).endswith(f"({NOT_RETRYABLE}: repair the shard, or leave it out)")


def test_a_read_that_fails_is_not_called_unretryable():
    """An OSError from the store may pass on a rerun; a tar that does not parse will not."""
    class Failing(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise ConnectionResetError("connection reset by peer")

    with pytest.raises(ShardReadError, match="tar is damaged before its first sample") as raised:
        list(iter_samples(Failing(), "s8"))
    assert NOT_RETRYABLE not in str(raised.value)


def test_written_shards_read_back_with_webdataset(tmp_path):
    path = tmp_path / "out.tar"
    with open(path, "wb") as f:
        write_samples(f, [Sample("k1", [("png", b"img"), ("json", b"{}")]), Sample("k2", [("txt", b"t")])])
    assert read_tar(path) == {"k1": {"png": b"img", "json": b"{}"}, "k2": {"txt": b"t"}}


def _tar_with(infos):
    """A tar of (TarInfo, data or None) pairs, for member types other than regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in infos:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name, kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize("kind, what", [(tarfile.LNKTYPE, "hard link to 'd/a.png'"),
                                        (tarfile.SYMTYPE, "symbolic link to 'd/a.png'"),
                                        (tarfile.FIFOTYPE, "FIFO")])
def test_links_and_devices_fail_the_shard_by_name(kind, what):
    """A link's bytes live in another member (or outside the tar): skipping it, as this reader
    once did, lost the sample with no error."""
    data = _tar_with([(_info("d/a.png"), b"1"), (_info("d/b.png", kind, "d/a.png"), None)])
    with pytest.raises(ShardReadError, match=f"^shard s: member 'd/b.png' is a {what}; only regular"):
        list(iter_samples(io.BytesIO(data), "s"))


def test_directory_entries_carry_no_data_and_are_passed_over():
    data = _tar_with([(_info("d", tarfile.DIRTYPE), None), (_info("d/a.png"), b"1")])
    assert [(s.key, s.members) for s in iter_samples(io.BytesIO(data), "s")] == [("d/a", [("png", b"1")])]


def test_a_name_ending_in_a_dot_is_written_back_under_that_name(tmp_path):
    """WebDataset splits "b." into key "b" and an empty suffix, which wrote it back as "b"."""
    assert split_member_name("x/b.") == ("x/b.", "")
    samples = list(iter_samples(io.BytesIO(_tar([("a.png", b"1"), ("b.", b"2")])), "s"))
    assert [(s.key, s.members) for s in samples] == [("a", [("png", b"1")]), ("b.", [("", b"2")])]
    buf = io.BytesIO()
    write_samples(buf, samples)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        assert tar.getnames() == ["a.png", "b."]


def test_members_after_a_zero_block_fail_the_shard_instead_of_vanishing():
    """tarfile stops at the first zero block: what follows must be zero padding, or the shard
    fails naming the last key read (two tars concatenated; a member header zeroed)."""
    first, second = _tar([("a.png", b"1"), ("b.png", b"2")]), _tar([("c.png", b"3")])
    with pytest.raises(ShardReadError, match=r"shard s: tar is damaged after key 'b': data at"):
        list(iter_samples(io.BytesIO(first + second), "s"))
    three = bytearray(_tar([("a.png", b"1"), ("b.png", b"2"), ("c.png", b"3")]))
    three[1024:1536] = bytes(512)  # b's header: a zero block in the middle
    with pytest.raises(ShardReadError, match=r"after key 'a': data at byte 1536 "):
        list(iter_samples(io.BytesIO(bytes(three)), "s"))
    # zero padding of any length (none at all: writers that skip the record padding) is fine
    end = first.rstrip(b"\0")
    for tail in (1024, 1024 + 512 * 7, len(first) - len(end) + 10240):
        assert len(list(iter_samples(io.BytesIO(end.ljust(len(end) + tail, b"\0")), "s"))) == 2


def test_a_member_name_that_is_not_utf8_fails_the_shard_naming_it():
    name = b"caf\xe9".decode("utf-8", "surrogateescape")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tar:
        for member in (f"{name}.png", "ok.png"):
            info = tarfile.TarInfo(member)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ShardReadError, match=r"shard s: member 'caf\\udce9.png' \(key "
                                             r"'caf\\udce9'\) has a name that is not UTF-8"):
        list(iter_samples(io.BytesIO(buf.getvalue()), "s"))
