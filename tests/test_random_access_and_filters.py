"""Archive.get through _index.parquet, --where filters pushed down to statistics, files layout."""

import io
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import read_tar, sample, write_shards
from fsspec.implementations.local import LocalFileSystem
from PIL import Image

from pipeline.archive import Archive, ArchiveKeyError
from pipeline.cli import EXIT_OK, EXIT_REFUSED, main
from pipeline.compress import compress
from pipeline.restore import restore
from pipeline.shard_encode import Guard
from pipeline.tars import iter_samples

pytestmark = pytest.mark.usefixtures("ray_local")


@pytest.fixture
def archive(small_shards, tmp_path):
    # a key that repeats in two shards
    write_shards(small_shards, [[sample("a0", 9)]], prefix="extra")
    url = str(tmp_path / "arc")
    assert compress([str(small_shards)], url, "webp", 80, progress=False, guard=Guard(size=False)).ok
    return url


def test_get_decodes_one_key_checked(archive, tmp_path):
    arc = Archive.open(archive)
    image = arc.get("shard-000001", "b1")
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8
    out = tmp_path / "out"
    assert restore(archive, str(out), image_format="png", progress=False).ok
    restored = read_tar(out / "shard-000001.tar")["b1"]["png"]
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(restored))), image)
    assert arc.get("b2").shape == (64, 96, 3)


def test_get_explains_missing_repeated_and_imageless_keys(archive):
    arc = Archive.open(archive)
    repeated = "is in 2 shards .*extra-000000, shard-000000.*get\\(shard, key\\)"
    with pytest.raises(ArchiveKeyError, match=repeated):
        arc.get("a0")
    assert arc.get("extra-000000", "a0").shape == (64, 96, 3)
    with pytest.raises(ArchiveKeyError, match="not in the archive"):
        arc.get("nope")
    with pytest.raises(ArchiveKeyError, match="sample 'bad' in shard shard-000000 .*stored as it "
                       "was \\(image does not decode.*original bytes"):
        arc.get("bad")  # passthrough whose bytes are not an image


def _rgba_png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 4), seed, np.uint8), "RGBA").save(buf, "PNG")
    return buf.getvalue()


def test_a_key_repeated_within_a_shard(tmp_path):
    """FORMAT.md: (shard, key) plus the sample's index identify a row. get(key) without the
    index once returned one of the two silently (or neither, in one row group); the files
    layout wrote both to one file, the second over the first."""
    src = tmp_path / "src"
    write_shards(src, [[sample("k", 1), sample("m", 2), sample("k", 3),
                        {"__key__": "rgba", "png": _rgba_png(7)}]])
    url = str(tmp_path / "arc")
    assert compress([str(src)], url, "webp", 80, progress=False, guard=Guard(size=False)).ok
    arc = Archive.open(url)
    with pytest.raises(ArchiveKeyError, match=r"'k' appears 2 times in shard shard-000000 "
                       r"\(sample indexes 0, 2\); call get\(shard, key, index=N\)"):
        arc.get("k")
    first, second = arc.get("shard-000000", "k", index=0), arc.get("k", index=2)
    assert not np.array_equal(first, second)
    out = tmp_path / "out"
    assert restore(url, str(out), image_format="png", progress=False).ok
    with open(out / "shard-000000.tar", "rb") as f:
        images = [dict(s.members)["png"] for s in iter_samples(f, "s") if s.key == "k"]
    assert [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).tolist() for b in images] == \
        [first.tolist(), second.tolist()]
    with pytest.raises(ArchiveKeyError, match="no sample with index 1"):
        arc.get("k", index=1)
    # A passthrough image that is not RGB: an RGB array would not be that image.
    with pytest.raises(ArchiveKeyError, match=r"'rgba' .*stored as it was \(image mode RGBA "
                       r"is not RGB or L\), and get cannot return it as RGB pixels"):
        arc.get("rgba")

    files = restore(url, str(tmp_path / "files"), layout="files", progress=False)
    assert list(files.failed) == ["shard-000000"]
    assert "key 'k' repeats in this shard, and --layout files would overwrite k.png" in \
        files.failed["shard-000000"]


def test_bad_file_arguments_and_unplaceable_actors_are_refused(archive, tmp_path, capsys):
    """Exit 2 (refused), not 1 (incomplete): a keys file that is not there, and actors no node
    can place, which once left the job waiting for ever. The refusal changes nothing."""
    args = ["restore", archive, str(tmp_path / "o"), "-q"]
    assert main([*args, "--keys", str(tmp_path / "missing.txt")]) == EXIT_REFUSED
    assert "refused: --keys" in capsys.readouterr().err
    assert main([*args, "--cpus-per-actor", "4096"]) == EXIT_REFUSED
    assert "no node of the Ray cluster has that much" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()

    more = tmp_path / "more"
    write_shards(more, [[sample("c0", 5)]], prefix="more")
    manifest = (Path(archive) / "_archive.json").read_bytes()
    assert main(["compress", str(more), archive, "--codec", "webp", "--quality", "80",
                 "--cpus-per-actor", "4096", "-q"]) == EXIT_REFUSED
    assert (Path(archive) / "_archive.json").read_bytes() == manifest
    assert not (Path(archive) / "shards" / "more-000000.parquet").exists()


def test_where_filters_rows_and_skips_row_groups(archive, tmp_path, capsys):
    out = tmp_path / "pt"
    report = restore(archive, str(out), where="status == 'passthrough'", progress=False)
    assert report.ok and sum(report.written.values()) == 1
    assert sorted(p.name for p in out.iterdir()) == ["shard-000000.tar"]
    assert list(read_tar(out / "shard-000000.tar")) == ["bad"]

    none = restore(archive, str(tmp_path / "none"), where="bpp < 0", progress=False)
    assert none.ok and sum(none.written.values()) == 0
    assert none.row_groups_skipped == 3  # every row group ruled out by its statistics
    assert main(["restore", archive, str(tmp_path / "x"), "--where", "bitstream < 3"]) == EXIT_REFUSED
    assert main(["restore", archive, str(tmp_path / "x"), "--where", "bpp <"]) == EXIT_REFUSED
    # A number for a text column (or the reverse) matched nothing, and the restore "succeeded".
    assert main(["restore", archive, str(tmp_path / "x"), "--where", "key == 0"]) == EXIT_REFUSED
    assert main(["restore", archive, str(tmp_path / "x"), "--where", "height == '64'"]) == EXIT_REFUSED
    assert "column 'height' holds a number; write height == 64" in capsys.readouterr().err


def test_files_layout(archive, tmp_path):
    out = tmp_path / "files"
    assert main(["restore", archive, str(out), "--layout", "files", "--shards", "shard-000000",
                 "-q"]) == EXIT_OK
    names = sorted(p.name for p in (out / "shard-000000").iterdir())
    assert names == ["a0.png", "a1.jpg", "bad.jpg"]
    assert Image.open(out / "shard-000000" / "a1.jpg").format == "JPEG"


class _CountingFS(LocalFileSystem):
    """Local files that count the bytes read from each path (reads go through this process)."""

    protocol = "countfs"
    reads: dict = {}

    def _open(self, path, mode="rb", **kwargs):
        f = super()._open(path, mode, **kwargs)
        if "r" in mode:
            read = f.read

            def counted(*args):
                data = read(*args)
                _CountingFS.reads[path] = _CountingFS.reads.get(path, 0) + len(data)
                return data

            f.read = counted
        return f


def test_get_reads_the_index_and_one_shard_file_only(archive):
    fsspec.register_implementation("countfs", _CountingFS, clobber=True)
    _CountingFS.reads = {}
    arc = Archive.open(f"countfs://{archive}")
    _CountingFS.reads = {}
    assert arc.get("shard-000001", "b2").shape == (64, 96, 3)
    touched = {p.rsplit("/", 1)[-1]: n for p, n in _CountingFS.reads.items()}
    assert set(touched) == {"_index.parquet", "shard-000001.parquet"}
    # pyarrow reads up to 64 KiB from the end for the footer, then the row group's chunks.
    for name, path in (("_index.parquet", Path(archive) / "_index.parquet"),
                       ("shard-000001.parquet", Path(archive) / "shards" / "shard-000001.parquet")):
        meta = pq.ParquetFile(path).metadata
        largest_group = max(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        assert touched[name] <= 64 * 1024 + largest_group, name


def test_keys_with_where_tell_filtered_out_keys_from_missing_ones(archive, tmp_path, capsys):
    """A listed key that --where excludes is in the archive: reported as excluded, not as
    missing, and the restore succeeds; a key in no shard still fails it. The keys file may
    start with a byte-order mark (Windows editors write one)."""
    keys = tmp_path / "keys.txt"
    keys.write_text("b0\nbad\n", encoding="utf-8-sig")
    report = restore(archive, str(tmp_path / "ok"), keys_file=str(keys),
                     where="status == 'ok'", progress=False)
    assert report.ok and report.excluded_keys == ["bad"] and not report.missing_keys
    assert list(read_tar(tmp_path / "ok" / "shard-000001.tar")) == ["b0"]
    keys.write_text("b0\nbad\nnope\nshard-000001\tb1\n")
    args = ["restore", archive, str(tmp_path / "o2"), "-q", "--keys", str(keys)]
    assert main([*args, "--where", "status == 'ok' and key != 'b1'"]) != EXIT_OK
    out = capsys.readouterr()
    assert "2 requested key(s) excluded by --where: bad, shard-000001\tb1" in out.out
    assert "1 requested key(s) not in the archive: nope" in out.err


def test_an_empty_shard_list_selects_nothing_rather_than_everything(archive, tmp_path):
    from pipeline.errors import Refused
    from pipeline.torch_dataset import ArchiveDataset

    with pytest.raises(Refused, match="no shards selected"):
        restore(archive, str(tmp_path / "o"), shards=[], progress=False)
    with pytest.raises(ValueError, match="selects nothing"):
        ArchiveDataset(archive, shards=[])


def test_files_layout_writes_nothing_of_a_shard_that_fails(archive, tmp_path):
    """The docstring's promise for both layouts: a shard is not written at all if a row fails.
    Here the second sample of shard-000001 has a damaged bitstream (CRC mismatch)."""
    path = Path(archive) / "shards" / "shard-000001.parquet"
    table = pq.read_table(path)
    meta = pq.ParquetFile(path).metadata.metadata
    rows = table.to_pylist()
    assert rows[1]["key"] == "b1"
    rows[1]["crc32c"] ^= 1
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema.with_metadata(meta)), path)
    out = tmp_path / "files"
    report = restore(archive, str(out), shards=["shard-000001"], layout="files", progress=False)
    assert "key 'b1': bitstream CRC32C mismatch" in report.failed["shard-000001"]
    assert not list(out.rglob("*.*"))  # b0's file, written first, is gone again


def test_restore_errors_name_the_key_and_never_write_two_members_of_one_name(tmp_path):
    """--image-format that would rename the image onto another member of its sample (k.jpg
    restored as png beside a k.png mask) fails the row; so does an image the output format
    cannot hold (WebP stops at 16383 pixels a side). Both name shard and key."""
    src = tmp_path / "src"
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((8, 17000, 3), np.uint8)).save(jpeg, "JPEG")
    write_shards(src, [[{"__key__": "k", "jpg": sample("k", 1, "jpg")["jpg"],
                         "png": sample("m", 2)["png"]},
                        {"__key__": "wide", "jpg": jpeg.getvalue()}]])
    archive = str(tmp_path / "arc")
    assert compress([str(src)], archive, "jpeg", 50, progress=False, guard=Guard(size=False)).ok
    rows = {r["key"]: r for r in pq.read_table(Path(archive) / "shards").to_pylist()}
    assert rows["k"]["image_name"] == "jpg" and rows["wide"]["status"] == "ok"
    keys = tmp_path / "keys.txt"
    keys.write_text("k\n")
    png = restore(archive, str(tmp_path / "png"), keys_file=str(keys), image_format="png",
                  progress=False)
    assert "key 'k': --image-format png would name the image 'k.png'" in png.failed["shard-000000"]
    assert not (tmp_path / "png" / "shard-000000.tar").exists()
    # --layout files writes the image alone: no two files of one name, so no failure
    files = restore(archive, str(tmp_path / "files"), keys_file=str(keys), image_format="png",
                    layout="files", progress=False)
    assert files.ok and sorted(p.name for p in (tmp_path / "files" / "shard-000000").iterdir()) \
        == ["k.png"]
    source = Image.open(io.BytesIO(sample("k", 1, "jpg")["jpg"]))
    assert Image.open(tmp_path / "files" / "shard-000000" / "k.png").size == source.size
    keys.write_text("wide\n")
    webp = restore(archive, str(tmp_path / "webp"), keys_file=str(keys), image_format="webp",
                   progress=False)
    assert "key 'wide': cannot write the restored image as webp" in webp.failed["shard-000000"]


def test_verify_checks_the_index_that_get_relies_on(archive):
    """A stale index (here: a1 listed in the wrong shard) made get raise a bare IndexError, and
    verify did not look at the index at all."""
    from pipeline.archive_format import FormatError
    from pipeline.verify import verify

    assert verify(archive, progress=False).ok
    path = Path(archive) / "_index.parquet"
    table = pq.read_table(path)
    rows = table.to_pylist()
    for row in rows:
        if row["key"] == "a1":
            row["shard"] = "shard-000001"
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)
    with pytest.raises(FormatError, match="places key 'a1' in row group.* of shard shard-000001, "
                                          "but it is not there: the index is stale"):
        Archive.open(archive).get("a1")
    problems = verify(archive, progress=False).problems
    assert [p.split(":")[0] for p in problems] == ["shard shard-000000", "shard shard-000001"]
    assert "_index.parquet does not list this shard's keys" in problems[0]
    path.unlink()
    assert "has no _index.parquet" in verify(archive, progress=False).problems[0]
    assert main(["compress", str(Path(archive).parent / "src"), archive, "--codec", "webp",
                 "--quality", "80", "--no-size-guard", "-q"]) == EXIT_OK  # rebuilds it
    assert verify(archive, progress=False).ok


def test_restore_does_not_replace_what_dst_has_unless_told(archive, small_shards, tmp_path,
                                                          capsys):
    """Restoring into the source folder replaced the original tars with decoded ones, silently."""
    before = {p.name: p.read_bytes() for p in small_shards.iterdir()}
    args = ["restore", archive, str(small_shards), "-q"]
    assert main(args) == EXIT_REFUSED
    assert "already has 3 of what this restore would write" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in small_shards.iterdir()} == before
    assert main([*args, "--shards", "shard-000001", "--overwrite"]) == EXIT_OK
    assert (small_shards / "shard-000001.tar").read_bytes() != before["shard-000001.tar"]
    files = tmp_path / "files"
    assert main(["restore", archive, str(files), "--layout", "files", "-q"]) == EXIT_OK
    assert main(["restore", archive, str(files), "--layout", "files", "-q"]) == EXIT_REFUSED


def test_a_get_after_the_files_change_reads_their_new_footers(archive):
    """An Archive reuses the footers it read while a file is unchanged; a shard file rewritten
    with other row groups, and the index rebuilt, are read anew (the kept footers would place
    the rows at the old offsets)."""
    from pipeline.archive import write_index
    from pipeline.storage import file_identity

    arc = Archive.open(archive)
    expected = {key: arc.get(key) for key in ("b0", "b1", "b2")}
    shard = Path(archive) / "shards" / "shard-000001.parquet"
    with open(shard, "rb") as f:
        before = file_identity(f)
    table = pq.read_table(shard)
    meta = pq.ParquetFile(shard).metadata.metadata  # the file's own, latentarc's included
    pq.write_table(table.replace_schema_metadata(meta), shard, row_group_size=1)
    with open(shard, "rb") as f:
        assert file_identity(f) not in (None, before)
    write_index(archive, [e["shard"] for e in arc.manifest["shards"]])
    for key in ("b2", "b1", "b0"):
        assert np.array_equal(arc.get(key), expected[key])
    assert file_identity(io.BytesIO(b"x")) is None  # tells nothing: never cached
