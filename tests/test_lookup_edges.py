"""Archive.get, ArchiveDataset, verify and info at their edges, each found by an adversarial
review of the Python API (session 26): a shard file copied from another shard that holds the
same key, damaged index and shard files, keys of the wrong type, a split that lists a shard
twice, passthrough samples through to_tensor, read-only arrays, a manifest without shards."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import sample, write_shards

from pipeline.archive import Archive, ArchiveKeyError
from pipeline.archive_format import FormatError
from pipeline.cli import EXIT_INCOMPLETE, EXIT_REFUSED, main
from pipeline.compress import compress
from pipeline.restore import restore
from pipeline.shard_encode import Guard
from pipeline.torch_dataset import ArchiveDataset, to_tensor

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> Path:
    """Two shards that both hold key ``a``; shard 1 also a key repeated within it and a sample
    whose image does not decode (passthrough). Copied for each test that changes it."""
    base = tmp_path_factory.mktemp("lookup")
    write_shards(base / "src", [
        [sample("a", 1), sample("b", 2)],
        [sample("a", 3), sample("rep", 4), sample("rep", 5),
         {"__key__": "bad", "png": b"not an image", "txt": b"kept"}],
    ])
    assert compress([str(base / "src")], str(base / "arc"), "webp", progress=False,
                    guard=Guard(size=False)).ok
    return base / "arc"


@pytest.fixture
def archive(made, tmp_path) -> Path:
    shutil.copytree(made, tmp_path / "arc")
    return tmp_path / "arc"


def test_get_refuses_a_shard_file_copied_from_another_shard_with_the_same_key(archive):
    first = Archive.open(str(archive)).get("shard-000000", "a")
    shards = archive / "shards"
    shutil.copy(shards / "shard-000001.parquet", shards / "shard-000000.parquet")
    # it returned shard-000001's "a" as shard-000000's, every check passed
    with pytest.raises(FormatError, match=r"shard shard-000000: its file holds shard "
                                          r"'shard-000001' with 4 rows where the manifest says "
                                          r"'shard-000000' with 2"):
        Archive.open(str(archive)).get("shard-000000", "a")
    assert first.shape[2] == 3


def test_damaged_index_and_shard_files_are_named_by_get_verify_and_the_dataset(archive, capsys):
    index = archive / "_index.parquet"
    index.write_bytes(index.read_bytes()[:-20])  # truncated: no Parquet footer
    with pytest.raises(FormatError, match=r"_index.parquet is damaged or not Parquet \(.*\); "
                                          "rerun the compress command to rebuild it"):
        Archive.open(str(archive)).get("b")
    # verify reports it with every other problem (it ended in a bare ArrowInvalid, exit 1,
    # dropping the rest: here the missing shard file)
    (archive / "shards" / "shard-000000.parquet").unlink()
    assert main(["verify", str(archive), "-q"]) == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "BAD _index.parquet: " in err and "is damaged or not Parquet" in err
    assert "BAD shard shard-000000" in err and "error:" not in err

    shard = archive / "shards" / "shard-000001.parquet"
    data = bytearray(shard.read_bytes())
    data[len(data) // 3] ^= 0xFF  # in a data page: its checksum no longer matches
    shard.write_bytes(bytes(data))
    with pytest.raises((OSError, FormatError), match=r"shard shard-000001 \(row group 0 of "
                                                     r".*shard-000001.parquet\)"):
        list(ArchiveDataset(str(archive), shards=["shard-000001"]))
    # verify says it once: not again as "has 0 rows, the manifest says 4"
    from pipeline.verify import verify

    said = [p for p in verify(str(archive), progress=False).problems if "shard-000001" in p]
    assert len(said) == 1 and "unreadable before its first row (0 of 4 rows read)" in said[0]


def test_lookups_say_what_is_wrong_with_the_key(archive):
    arc = Archive.open(str(archive))
    with pytest.raises(ArchiveKeyError, match=r"key 'rep' is not in shard shard-000000 \(it is "
                                              r"in shard-000001\)"):
        arc.get("shard-000000", "rep")
    with pytest.raises(ArchiveKeyError, match=r"key 'nope' is not in shard shard-000000 \(nor"):
        arc.get("shard-000000", "nope")
    with pytest.raises(ArchiveKeyError, match=r"key 'nope' is not in the archive$"):
        arc.get("nope")
    for bad in ((None,), (7,), ("shard-000000", None)):
        with pytest.raises(TypeError, match=r"get: the (key|shard) must be a str, not "):
            arc.get(*bad)
    image = arc.get("b")  # webp: Pillow's decode is a read-only view
    image[0, 0] = 0
    assert image.flags.writeable


def test_the_dataset_gives_each_sample_its_index_and_refuses_odd_splits(archive):
    samples = list(ArchiveDataset(str(archive), shards=["shard-000001"], include_passthrough=True))
    assert [(s["key"], s["index"]) for s in samples] == [("a", 0), ("rep", 1), ("rep", 2),
                                                          ("bad", 3)]
    arc = Archive.open(str(archive))
    for s in samples[1:3]:  # the two samples of "rep" are told apart, and get finds each
        assert np.array_equal(s["image"], arc.get("shard-000001", "rep", index=s["index"]))
        assert s["image"].flags.writeable
    with pytest.raises(ValueError, match=r"shards lists shard-000001 more than once"):
        ArchiveDataset(str(archive), shards=["shard-000001", "shard-000000", "shard-000001"])
    with pytest.raises(TypeError, match=r"shards must be a list of shard names, e\.g\. "
                                        r"\['shard-000001'\]"):
        ArchiveDataset(str(archive), shards="shard-000001")
    with pytest.raises(ValueError, match=r"to_tensor: sample 'bad' of shard shard-000001 has no "
                                         r"RGB pixels: it is stored as it came \("):
        list(ArchiveDataset(str(archive), shards=["shard-000001"], include_passthrough=True,
                            transform=to_tensor))
    assert len(list(ArchiveDataset(str(archive), transform=to_tensor))) == 5


def test_a_manifest_without_shards_is_refused_and_named(archive, capsys):
    manifest = json.loads((archive / "_archive.json").read_text())
    del manifest["shards"]
    (archive / "_archive.json").write_text(json.dumps(manifest))
    for argv in (["verify", str(archive)], ["info", str(archive)]):
        assert main(argv) == EXIT_REFUSED, argv
        assert "_archive.json is damaged: it lacks the codec or a list of shards" in \
            capsys.readouterr().err
    with pytest.raises(FormatError, match="_archive.json is damaged"):
        ArchiveDataset(str(archive))


def test_info_says_why_an_archive_is_incomplete(archive, tmp_path, capsys):
    src = tmp_path / "src"
    write_shards(src, [[sample("x", 1)]])
    (src / "shard-000001.tar").write_bytes(b"not a tar at all" * 64)
    arc = tmp_path / "arc2"
    assert not compress([str(src)], str(arc), "webp", progress=False).ok
    assert main(["info", str(arc)]) == EXIT_INCOMPLETE
    out = capsys.readouterr().out
    assert "INCOMPLETE (the last compress run ended with 1 failed shard(s), listed below)" in out
    assert "FAILED shard-000001" in out
    assert out.count(str(arc)) == 1  # the first line; the table below it said it again
    # restore --shards naming a shard twice restores it once and says so
    report = restore(str(archive), str(tmp_path / "out"), shards=["shard-000000"] * 2,
                     progress=False)
    assert report.ok and report.shards == ["shard-000000"]
    # a shard named as its file is refused naming the shards there are
    assert main(["restore", str(archive), str(tmp_path / "o2"), "--shards",
                 "shard-000000.tar"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "no shard(s) shard-000000.tar (shard names are without .tar); it has 2 shards: " \
        "shard-000000, shard-000001" in err


def _row_groups_of_one(path: Path, change=None) -> None:
    """Rewrite a shard file with one row per row group (page checksums on, its metadata kept),
    ``change`` applied to each row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.archive_format import META_KEY

    parquet = pq.ParquetFile(path)
    meta = parquet.metadata.metadata[META_KEY.encode()]
    rows = parquet.read().to_pylist()
    for row in rows:
        if change:
            change(row)
    with pq.ParquetWriter(path, parquet.schema_arrow, write_page_checksum=True) as writer:
        writer.write_table(pa.Table.from_pylist(rows, schema=parquet.schema_arrow), row_group_size=1)
        writer.add_key_value_metadata({META_KEY: meta})


def _damage_every(row):
    """Every row's bitstream replaced by bytes that are no stream, under a matching CRC."""
    import crc32c

    row["bitstream"] = b"\0" * 8
    row["crc32c"] = crc32c.crc32c(row["bitstream"])


def _damage_a(row):
    """A flipped bit in key a's bitstream, under a matching CRC: the decode or the content
    hash catches it."""
    import crc32c

    if row["key"] == "a":
        stream = bytearray(row["bitstream"])
        stream[len(stream) // 2] ^= 0x10
        row["bitstream"] = bytes(stream)
        row["crc32c"] = crc32c.crc32c(row["bitstream"])


def test_the_dataset_skips_a_damaged_row_when_told_and_its_error_crosses_workers(archive):
    """A damaged row ended the epoch (under DDP the other ranks then wait for ever), and from a
    DataLoader worker it came as a RuntimeError: PyTorch re-raises a worker's error as
    type(exc)(message), which RowError's three arguments did not allow."""
    from pipeline.rows import RowError

    _row_groups_of_one(archive / "shards" / "shard-000001.parquet", _damage_a)
    with pytest.raises(RowError, match=r"^shard shard-000001 key 'a': "):
        list(ArchiveDataset(str(archive), shards=["shard-000001"]))
    loader = torch.utils.data.DataLoader(ArchiveDataset(str(archive), shards=["shard-000001"]),
                                         batch_size=None, num_workers=2,
                                         multiprocessing_context="fork")
    with pytest.raises(RowError, match=r"shard shard-000001 key 'a': "):
        list(loader)
    with pytest.warns(UserWarning, match=r"ArchiveDataset: skipped shard shard-000001 key 'a': "):
        kept = [s["key"] for s in ArchiveDataset(str(archive), skip_damaged=True)]
    assert kept == ["a", "b", "rep", "rep"]  # shard-000000's a, and not shard-000001's
    with pytest.raises(ValueError, match="skip_damaged cannot be combined with drop_last"):
        ArchiveDataset(str(archive), skip_damaged=True, drop_last=True)


def test_skip_damaged_restores_what_checks_out_and_names_the_rest(archive, tmp_path, capsys):
    import pyarrow.parquet as pq
    from conftest import read_tar

    shard = archive / "shards" / "shard-000001.parquet"
    _row_groups_of_one(shard, _damage_a)
    group = pq.ParquetFile(shard).metadata.row_group(2)  # the second "rep" (index 2)
    column = next(group.column(i) for i in range(group.num_columns)
                  if group.column(i).path_in_schema == "bitstream")
    assert column.has_dictionary_page  # the value is in the dictionary page, which ends where
    data = bytearray(shard.read_bytes())  # the data page starts (page headers hold statistics
    data[column.data_page_offset - 10] ^= 0xFF  # that the page CRC does not cover)
    shard.write_bytes(bytes(data))

    plain = restore(str(archive), str(tmp_path / "plain"), shards=["shard-000001"], progress=False)
    assert "shard-000001" in plain.failed and not (tmp_path / "plain" / "shard-000001.tar").exists()

    out = tmp_path / "out"
    assert main(["restore", str(archive), str(out), "--shards", "shard-000001", "--skip-damaged",
                 "-q"]) == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "DAMAGED shard-000001 key 'a': bitstream does not decode" in err
    assert "DAMAGED shard-000001 key 'rep': unreadable (row group 2: " in err
    assert "latentarc: 2 damaged row(s) or row group(s) left out of 1 shard(s)" in err
    restored = read_tar(out / "shard-000001.tar")
    assert sorted(restored) == ["bad", "rep"]  # the first "rep" (index 1) and the passthrough
    assert restored["bad"]["png"] == b"not an image"
    again = restore(str(archive), str(tmp_path / "again"), shards=["shard-000001"],
                    skip_damaged=True, progress=False)
    assert not again.ok and again.written == {"shard-000001": 2} and not again.failed

    # a shard none of whose rows check out is not written at all: an empty tar would pass
    # for the shard restored (it was written, and counted as restored)
    _row_groups_of_one(archive / "shards" / "shard-000000.parquet", _damage_every)
    none = restore(str(archive), str(tmp_path / "none"), shards=["shard-000000"],
                   skip_damaged=True, progress=False)
    assert not none.ok and len(none.damaged["shard-000000"]) == 2
    assert not (tmp_path / "none" / "shard-000000.tar").exists() and not none.outputs
