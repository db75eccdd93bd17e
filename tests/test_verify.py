"""verify decodes every row: a flipped bit is caught even when the CRC is made to match."""

import json

import crc32c
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.archive_format import META_KEY
from pipeline.cli import EXIT_INCOMPLETE, EXIT_OK, EXIT_REFUSED, main
from pipeline.compress import compress
from pipeline.restore import restore
from pipeline.shard_encode import Guard
from pipeline.storage import StorageOptions
from pipeline.verify import verify, verify_shard

pytestmark = pytest.mark.usefixtures("ray_local")
NO_GUARD = Guard(size=False)  # these tests exercise the codec path on every image


def rewrite_row(path, key, change):
    """Rewrite one row of a shard file, keeping its latentarc metadata."""
    parquet = pq.ParquetFile(path)
    meta = parquet.metadata.metadata[META_KEY.encode()]
    rows = parquet.read().to_pylist()
    for row in rows:
        if row["key"] == key:
            change(row)
    writer = pq.ParquetWriter(path, parquet.schema_arrow)
    writer.write_table(pa.Table.from_pylist(rows, schema=parquet.schema_arrow))
    writer.add_key_value_metadata({META_KEY: meta})
    writer.close()


def flip_bit_keep_crc(row):
    stream = bytearray(row["bitstream"])
    stream[len(stream) // 2] ^= 0x10
    row["bitstream"] = bytes(stream)
    row["crc32c"] = crc32c.crc32c(row["bitstream"])


@pytest.mark.parametrize("codec", ["webp", "jpeg", "png"])
def test_flipped_bit_with_matching_crc_is_caught(small_shards, tmp_path, capsys, codec):
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), codec, progress=False, guard=NO_GUARD).ok
    assert main(["verify", str(archive), "-q"]) == EXIT_OK
    rewrite_row(archive / "shards" / "shard-000001.parquet", "b1", flip_bit_keep_crc)

    assert main(["verify", str(archive), "-q"]) == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "BAD shard shard-000001 key 'b1'" in err
    assert "CRC32C" not in err  # caught by decoding, not by the checksum
    # restore refuses to write the damaged shard rather than return garbage as good
    report = restore(str(archive), str(tmp_path / "out"), progress=False)
    assert "shard-000001" in report.failed and "b1" in report.failed["shard-000001"]
    assert not (tmp_path / "out" / "shard-000001.tar").exists()
    assert report.written == {"shard-000000": 3}


def test_crc_catches_a_plain_bit_flip(small_shards, tmp_path, capsys):
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "webp", progress=False, guard=NO_GUARD).ok

    def flip(row):
        row["bitstream"] = row["bitstream"][:-1] + bytes([row["bitstream"][-1] ^ 1])

    rewrite_row(archive / "shards" / "shard-000000.parquet", "a0", flip)
    assert main(["verify", str(archive), "-q"]) == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "key 'a0': bitstream CRC32C mismatch" in err
    # a rerun does not read every row, so it skips the file; verify names the fix: --redo
    assert "1 shard file(s) damaged: rerun the compress command with --redo shard-000000" in err
    again = ["compress", str(small_shards), str(archive), "--codec", "webp", "--no-size-guard",
             "-q"]
    assert main(again) == EXIT_OK
    assert main(["verify", str(archive), "-q"]) == EXIT_INCOMPLETE
    assert main([*again, "--redo", "shard-000009"]) == EXIT_REFUSED  # not among the sources
    assert "--redo names shard(s) shard-000009 that are not among" in capsys.readouterr().err
    assert main([*again, "--redo", "shard-000000"]) == EXIT_OK
    assert main(["verify", str(archive), "-q"]) == EXIT_OK
    stats = json.loads((archive / "_stats.json").read_text())
    assert stats["run"]["done"] == ["shard-000000"] and stats["run"]["skipped"] == ["shard-000001"]


def test_changed_passthrough_bytes_are_caught(small_shards, tmp_path, capsys):
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "webp", progress=False, guard=NO_GUARD).ok

    def change(row):
        row["members"] = [{"name": m["name"], "data": m["data"] + b"!"} for m in row["members"]]

    rewrite_row(archive / "shards" / "shard-000000.parquet", "bad", change)
    assert main(["verify", str(archive), "-q"]) == EXIT_INCOMPLETE
    assert "key 'bad': passthrough image bytes changed" in capsys.readouterr().err


def test_unknown_format_version_is_refused(small_shards, tmp_path, capsys):
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "webp", progress=False, guard=NO_GUARD).ok
    manifest = json.loads((archive / "_archive.json").read_text())
    manifest["format_version"] = 99
    (archive / "_archive.json").write_text(json.dumps(manifest))
    assert main(["verify", str(archive)]) == EXIT_REFUSED
    assert main(["restore", str(archive), str(tmp_path / "o")]) == EXIT_REFUSED
    assert "format version 99; this latentarc reads version 1" in capsys.readouterr().err


def test_damaged_shard_files_are_caught_or_harmless(small_shards, tmp_path):
    """Bytes changed anywhere in a shard file: verify reports it, or nothing a reader sees changed
    (page CRCs cover kept members and every column, not only the bitstreams)."""
    import random

    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "webp", progress=False, guard=NO_GUARD).ok
    path = archive / "shards" / "shard-000000.parquet"
    pristine = path.read_bytes()
    before = pq.read_table(path).to_pylist()
    rng = random.Random(1234)
    caught = harmless = 0
    for _ in range(12):
        data = bytearray(pristine)
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))
        try:  # the per-shard check that verify runs on Ray, called directly: 12 runs stay fast
            problems = verify_shard(str(archive), "shard-000000", 3, StorageOptions())["problems"]
        except Exception:  # a reader error is a catch too, as verify reports it
            problems = ["raised"]
        if problems:
            caught += 1
            continue
        assert pq.read_table(path).to_pylist() == before  # nothing visible changed
        harmless += 1
    path.write_bytes(pristine[: len(pristine) // 2])
    report = verify(str(archive), progress=False)
    assert not report.ok and "shard shard-000000: file is unreadable" in report.problems[0]
    print(f"bit flips: {caught} caught, {harmless} harmless")
    assert caught >= 6


def test_a_row_of_an_unknown_codec_is_one_problem_and_the_rest_are_still_checked(small_shards,
                                                                                 tmp_path):
    """An archive row written by a codec this installation lacks names its key; before, the
    codec lookup's error ended the shard's check there and named no key."""
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "webp", progress=False, guard=NO_GUARD).ok
    path = archive / "shards" / "shard-000001.parquet"
    rewrite_row(path, "b0", lambda row: row.update(codec="future-codec"))
    rewrite_row(path, "b2", flip_bit_keep_crc)
    report = verify(str(archive), progress=False)
    assert report.rows == 6 and len(report.problems) == 2
    assert report.problems[0].startswith("shard shard-000001 key 'b0': cannot decode: unknown "
                                         "codec 'future-codec'")
    assert report.problems[1].startswith("shard shard-000001 key 'b2': ")
