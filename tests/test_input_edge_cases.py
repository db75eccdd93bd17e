"""Inputs that are valid but unusual: names holding glob or fsspec characters, compressed shards,
multi-picture JPEGs, and PNG metadata that Pillow only sees after the pixels."""

import bz2
import gzip
import io
import lzma
import struct
import tarfile
import zlib

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import tar_bytes as _tar
from PIL import Image

from pipeline.images import Unsupported, encode_for_restore, image_metadata, prepare
from pipeline.sources import expand_sources
from pipeline.storage import filesystem, read_bytes, write_bytes_atomic
from pipeline.tars import ShardReadError, iter_samples

ORIENTATION = 274  # EXIF tag


def _pixels(h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels()).save(buf, "PNG")
    return buf.getvalue()


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_with_exif_after_idat(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    png = _png()
    iend = png.rfind(b"IEND") - 4
    return png[:iend] + _chunk(b"eXIf", exif.tobytes()) + png[iend:]


def _mpo() -> bytes:
    im = Image.fromarray(_pixels(64, 96))
    buf = io.BytesIO()
    im.save(buf, "MPO", save_all=True, append_images=[im.resize((24, 16))], quality=90)
    return buf.getvalue()


# 1. A directory whose name holds [ ] is that directory, not a pattern.

def test_a_directory_named_like_a_glob_is_taken_as_that_directory(tmp_path):
    (tmp_path / "batch[1]").mkdir()
    (tmp_path / "batch[1]" / "shard-000000.tar").write_bytes(_tar([]))
    (tmp_path / "batch1").mkdir()  # what the name matches as a pattern
    (tmp_path / "batch1" / "other.tar").write_bytes(_tar([]))
    for src in (tmp_path / "batch[1]", f"{tmp_path}/batch[1]/"):
        shards = expand_sources([str(src)])
        assert [(s.name, s.url) for s in shards] == [
            ("shard-000000", str(tmp_path / "batch[1]" / "shard-000000.tar"))]
    # a real pattern still expands, and a directory it matches stands for its shards
    assert [s.name for s in expand_sources([str(tmp_path / "batch[01]" / "*.tar")])] == ["other"]
    assert [s.url for s in expand_sources([str(tmp_path / "batch[01]")])] == \
        [str(tmp_path / "batch1" / "other.tar")]
    (tmp_path / "logs2").mkdir()  # a matched directory without shards adds none
    assert [s.name for s in expand_sources([str(tmp_path / "*[12]")])] == ["other"]


# 2. A local file name holding "::" is a file name, not fsspec URL chaining.

def test_a_local_name_with_a_double_colon_is_read_and_written_as_named(tmp_path):
    shard = tmp_path / "colon" / "part::1.tar"
    shard.parent.mkdir()
    shard.write_bytes(_tar([("k.png", b"x")]))
    (url,) = [s.url for s in expand_sources([str(shard.parent)])]
    assert url == str(shard)
    fs, path = filesystem(url)
    with fs.open(path, "rb") as f:
        assert [s.key for s in iter_samples(f, "part::1")] == ["k"]
    out = tmp_path / "out" / "part::1.parquet"
    write_bytes_atomic(str(out), b"data")
    assert out.read_bytes() == b"data" and read_bytes(str(out)) == b"data"
    assert not (tmp_path / "out" / "part").exists()


def test_real_urls_still_chain_and_keep_their_protocol():
    from fsspec.implementations.cached import SimpleCacheFileSystem
    from fsspec.implementations.local import LocalFileSystem
    from fsspec.implementations.memory import MemoryFileSystem

    fs, path = filesystem("simplecache::memory://bucket/x.tar")
    assert isinstance(fs, SimpleCacheFileSystem) and path.endswith("bucket/x.tar")
    fs, path = filesystem("simplecache::/tmp/x.tar")  # chaining onto a local path
    assert isinstance(fs, SimpleCacheFileSystem) and path == "/tmp/x.tar"
    fs, path = filesystem("memory://bucket/x.tar")
    assert isinstance(fs, MemoryFileSystem) and path == "/bucket/x.tar"
    fs, path = filesystem("file:///tmp/x.tar")
    assert isinstance(fs, LocalFileSystem) and path == "/tmp/x.tar"


def test_object_store_names_with_a_double_colon_stay_apart():
    """s3://b/arc/shards/x::1.parquet and x::2.parquet were both written to the object x."""
    import fsspec

    root = f"memory://colons-{id(object())}"
    write_bytes_atomic(f"{root}/shards/x::1.parquet", b"one")
    write_bytes_atomic(f"{root}/shards/x::2.parquet", b"two")
    fs, path = filesystem(f"{root}/shards")
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)) == \
        ["x::1.parquet", "x::2.parquet"]
    assert fsspec.filesystem("memory").cat_file(filesystem(f"{root}/shards/x::1.parquet")[1]) == b"one"
    fs.pipe(f"{path}/part::1.tar", b"tar")  # a source listed from a store opens as itself
    [url] = [s.url for s in expand_sources([f"{root}/shards/part::1.tar"])]
    assert filesystem(url)[0].cat_file(filesystem(url)[1]) == b"tar"


# 3. A compressed shard fails saying so (a rerun cannot cure it), not as "damaged".

@pytest.mark.parametrize("kind, compress", [
    ("gzip", gzip.compress), ("bzip2", bz2.compress), ("xz", lzma.compress),
    ("zstd", lambda data: b"\x28\xb5\x2f\xfd" + zlib.compress(data)),  # magic + a body: detection only
])
def test_a_compressed_shard_is_named_as_compressed(kind, compress):
    data = compress(_tar([("a.png", b"x" * 3000)]))
    with pytest.raises(ShardReadError, match=f"^shard s3: the file is {kind}-compressed, not a tar; "
                                             "latentarc reads uncompressed tar shards") as info:
        list(iter_samples(io.BytesIO(data), "s3"))
    assert "damaged" not in str(info.value)


def test_a_tar_that_starts_with_gzip_magic_and_is_damaged_later_is_called_damaged():
    """Only a file whose first header does not parse is called compressed."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        directory = tarfile.TarInfo("\x1f\udc8b-dir")  # the bytes 1f 8b, as tarfile writes them
        directory.type = tarfile.DIRTYPE
        tar.addfile(directory)
        info = tarfile.TarInfo("b.png")
        info.size = 2000
        tar.addfile(info, io.BytesIO(b"y" * 2000))
    data = buf.getvalue()
    assert data[:2] == b"\x1f\x8b"
    with pytest.raises(ShardReadError, match=r"tar is damaged before its first sample while reading member"):
        list(iter_samples(io.BytesIO(data[:1500]), "s"))


# 4. A multi-picture JPEG is kept as it came, with a true reason.

def test_an_mpo_is_passthrough_as_multi_picture_not_animated():
    data = _mpo()
    assert Image.open(io.BytesIO(data)).format == "MPO"
    with pytest.raises(Unsupported) as info:
        prepare(data)
    assert str(info.value).startswith("multi-picture JPEG (MPO, 2 pictures): kept as it came")
    assert "animated" not in str(info.value)


# 5. PNG metadata: eXIf after IDAT keeps the orientation.

def test_exif_after_idat_is_found_and_written_back_in_every_restore_format():
    data = _png_with_exif_after_idat(6)
    with Image.open(io.BytesIO(data)) as im:
        assert "exif" not in im.info  # Pillow's open alone misses it: the case being fixed
    meta = image_metadata(data)
    assert meta["exif"] is not None
    for fmt in ("PNG", "JPEG", "WEBP"):
        restored = encode_for_restore(_pixels(), "RGB", fmt, metadata=meta)
        with Image.open(io.BytesIO(restored)) as im:
            im.load()
            assert im.getexif().get(ORIENTATION) == 6, fmt


def test_a_png_without_exif_has_none():
    assert image_metadata(_png())["exif"] is None
    broken = _png()[:40] + _chunk(b"eXIf", b"")  # cut short, then an empty chunk: no crash
    assert image_metadata(broken)["exif"] is None


def _png_with_gamma() -> bytes:
    png = _png()
    ihdr_end = 8 + 25
    return (png[:ihdr_end] + _chunk(b"gAMA", struct.pack(">I", 100000))
            + _chunk(b"cHRM", struct.pack(">8I", 31270, 32900, 64000, 33000, 30000, 60000,
                                          15000, 6000)) + png[ihdr_end:])


def test_png_gamma_and_chromaticity_survive_a_restore():
    data = _png_with_gamma()
    assert image_metadata(_png())["png_colour"] is None
    restored = encode_for_restore(_pixels(), "RGB", "PNG", metadata=image_metadata(data))
    with Image.open(io.BytesIO(restored)) as im:
        assert im.info.get("gamma") == 1.0
        assert im.info.get("chromaticity") is not None


# End to end: the names, the MPO and the late eXIf through compress and restore.

@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_compress_and_restore_keep_odd_names_mpo_and_late_exif(tmp_path):
    from pipeline.compress import compress
    from pipeline.restore import restore
    from pipeline.shard_encode import Guard

    src = tmp_path / "batch[1]"
    src.mkdir()
    mpo = _mpo()
    (src / "part::1.tar").write_bytes(_tar([("late.png", _png_with_exif_after_idat(6)),
                                            ("photo.jpg", mpo), ("gamma.png", _png_with_gamma())]))
    archive = tmp_path / "arc"
    report = compress([str(src)], str(archive), "webp", 85, progress=False, guard=Guard(size=False))
    assert report.ok, report.failed
    rows = {r["key"]: r for r in pq.read_table(archive / "shards" / "part::1.parquet").to_pylist()}
    assert rows["late"]["status"] == "ok" and rows["late"]["exif"] is not None
    assert rows["photo"]["status"] == "passthrough"
    assert rows["photo"]["reason"].startswith("multi-picture JPEG (MPO, 2 pictures)")

    assert restore(str(archive), str(tmp_path / "out"), progress=False).ok
    with tarfile.open(tmp_path / "out" / "part::1.tar") as tar:
        with Image.open(tar.extractfile("late.png")) as im:
            im.load()
            assert im.getexif().get(ORIENTATION) == 6
        assert tar.extractfile("photo.jpg").read() == mpo
        with Image.open(tar.extractfile("gamma.png")) as im:  # through the png_colour column
            assert im.info.get("gamma") == 1.0 and im.info.get("chromaticity") is not None


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_a_gzip_shard_fails_saying_it_is_compressed(tmp_path, capsys):
    from pipeline.cli import EXIT_INCOMPLETE, main

    src = tmp_path / "src"
    src.mkdir()
    (src / "zipped.tar").write_bytes(gzip.compress(_tar([("a.png", _png())])))
    (src / "fine.tar").write_bytes(_tar([("a.png", _png())]))
    code = main(["compress", str(src), str(tmp_path / "arc"), "--codec", "webp", "-q"])
    assert code == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "FAILED zipped: the file is gzip-compressed, not a tar" in err
    # the one failure cannot be retried: a rerun alone is not the advice
    assert "1 of 2 shards not compressed; fix their sources first (FAILED above), then rerun " \
        "the same command" in err
    assert (tmp_path / "arc" / "shards" / "fine.parquet").exists()
