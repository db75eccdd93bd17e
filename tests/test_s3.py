"""Against a real S3 server (SeaweedFS on 127.0.0.1): compress s3 -> s3, restore s3 -> s3.

The Kodak test is the walking skeleton's acceptance test: the 24 Kodak images from ../shared
in 3 shards, each sample a .png plus .json and .txt members.
"""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import s3fs
import webdataset as wds
from conftest import shared_path, write_shards
from PIL import Image

from pipeline.archive_format import read_manifest
from pipeline.cli import EXIT_OK, main
from pipeline.compress import compress
from pipeline.images import psnr
from pipeline.restore import restore
from pipeline.storage import filesystem

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("ray_local")]


def _upload(fs: s3fs.S3FileSystem, local_dir, bucket: str, prefix: str) -> None:
    for path in sorted(local_dir.glob("*.tar")):
        fs.put_file(str(path), f"{bucket}/{prefix}/{path.name}")


def _read_s3_tar(url: str, storage) -> dict[str, dict[str, bytes]]:
    """key -> {suffix: bytes} of a restored shard on S3, read with webdataset's tar reader."""
    fs, path = filesystem(url, storage)
    with fs.open(path, "rb") as f:
        members = ({**m, "__url__": url} for m in wds.tariterators.tar_file_iterator(f))
        samples = wds.tariterators.group_by_keys(members)
        return {s.pop("__key__"): {k: v for k, v in s.items() if not k.startswith("__")}
                for s in samples}


@pytest.mark.shared
def test_kodak_webp_roundtrip_through_s3(s3_bucket, tmp_path):
    kodak = shared_path("datasets", "kodak")
    bucket, storage = s3_bucket
    files = sorted(kodak.glob("kodim*.png"))
    assert len(files) == 24
    shards = [[], [], []]
    for i, f in enumerate(files):
        key = f.stem
        shards[i // 8].append({
            "__key__": key,
            "png": f.read_bytes(),
            "json": json.dumps({"file": f.name, "index": i}).encode(),
            "txt": f"Kodak image {i + 1}".encode(),
        })
    local = tmp_path / "src"
    write_shards(local, shards, prefix="kodak")
    fs = s3fs.S3FileSystem(endpoint_url=storage.endpoint_url)
    _upload(fs, local, bucket[len("s3://"):], "src")

    src = f"{bucket}/src/kodak-{{000000..000002}}.tar"
    report = compress([src], f"{bucket}/archive", "webp", storage=storage, progress=False)
    assert report.ok and report.totals["samples"] == 24 and report.totals["passthrough"] == 0
    restored = restore(f"{bucket}/archive", f"{bucket}/restored", storage=storage, progress=False)
    assert restored.ok

    rows = {}
    for shard in read_manifest(f"{bucket}/archive", storage)["shards"]:
        sfs, path = filesystem(f"{bucket}/archive/shards/{shard['shard']}.parquet", storage)
        with sfs.open(path, "rb") as f:
            rows.update({r["key"]: r for r in pq.read_table(f).to_pylist()})
    seen = set()
    for i, samples in enumerate(shards):
        back = _read_s3_tar(f"{bucket}/restored/kodak-{i:06d}.tar", storage)
        assert sorted(back) == sorted(s["__key__"] for s in samples)
        for s in samples:
            key = s["__key__"]
            seen.add(key)
            assert back[key]["json"] == s["json"] and back[key]["txt"] == s["txt"]
            original = np.asarray(Image.open(io.BytesIO(s["png"])).convert("RGB"))
            decoded = np.asarray(Image.open(io.BytesIO(back[key]["png"])).convert("RGB"))
            assert abs(psnr(original, decoded) - rows[key]["psnr"]) < 0.01
    assert len(seen) == 24


def test_synthetic_shards_through_s3_with_the_cli(s3_bucket, small_shards, tmp_path, capsys):
    bucket, storage = s3_bucket
    fs = s3fs.S3FileSystem(endpoint_url=storage.endpoint_url)
    _upload(fs, small_shards, bucket[len("s3://"):], "src")
    endpoint = ["--endpoint-url", storage.endpoint_url, "-q"]
    assert main(["compress", f"{bucket}/src", f"{bucket}/arc", "--codec", "jpeg", *endpoint]) == EXIT_OK
    assert main(["verify", f"{bucket}/arc", *endpoint]) == EXIT_OK
    assert main(["restore", f"{bucket}/arc", f"{bucket}/out", *endpoint]) == EXIT_OK
    assert main(["info", f"{bucket}/arc", "--endpoint-url", storage.endpoint_url]) == EXIT_OK
    out = capsys.readouterr().out
    assert "status     complete" in out and "bad: image does not decode" in out
    restored = fs.ls(f"{bucket[len('s3://'):]}/out")
    assert sorted(p.rsplit("/", 1)[-1] for p in restored) == ["shard-000000.tar", "shard-000001.tar"]
    # No half-written objects or temp names are left behind in the archive.
    names = [p.rsplit("/", 1)[-1] for p in fs.find(f"{bucket[len('s3://'):]}/arc")]
    assert sorted(names) == ["_archive.json", "_index.parquet", "_stats.json", "shard-000000.parquet",
                            "shard-000001.parquet"]

    # Through fsspec's chaining: --endpoint-url reaches the chain's s3 link (it reached only
    # simplecache: "no _archive.json"), and a shard file read through simplecache, which has no
    # .size, is valid (verify said "unreadable", and a rerun would have redone every shard).
    chained = f"simplecache::{bucket}/arc"
    assert main(["verify", chained, *endpoint]) == EXIT_OK
    assert main(["compress", f"{bucket}/src", chained, "--codec", "jpeg", *endpoint]) == EXIT_OK
    assert "0 shard(s) done, 2 skipped" in capsys.readouterr().out


def test_wrong_credentials_give_a_clear_error_without_the_secret(s3_bucket, small_shards, monkeypatch,
                                                                 capsys, tmp_path):
    bucket, storage = s3_bucket
    fs = s3fs.S3FileSystem(endpoint_url=storage.endpoint_url)
    _upload(fs, small_shards, bucket[len("s3://"):], "src")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "latentarc-wrong")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-do-not-print")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        code = main(["compress", f"{bucket}/src", str(tmp_path / "arc"),
                     "--endpoint-url", storage.endpoint_url, "-q"])
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
    err = capsys.readouterr().err
    assert code != EXIT_OK
    assert "wrong-secret-do-not-print" not in err
    assert f"refused: cannot list the shards of {bucket}/src: The access key ID" in err


def test_names_with_glob_characters_are_files_not_patterns_on_s3(s3_bucket, tmp_path):
    """s3fs's rm() and glob() read [ ] ? in a key as a pattern: removing arc[1]/_archive.json
    deleted arc1/_archive.json, and the source a[1].tar was compressed as a1.tar. Dot-names
    in a listing (macOS's ._x.tar) are passed over, and a missing prefix is refused."""
    from pipeline.sources import SourceError, expand_sources
    from pipeline.storage import remove

    bucket, storage = s3_bucket
    fs = s3fs.S3FileSystem(endpoint_url=storage.endpoint_url)
    root = bucket[len("s3://"):]
    for name in ("a1.tar", "a[1].tar", "bX.tar", "b?.tar", "._a1.tar"):
        fs.pipe_file(f"{root}/src/{name}", b"x")
    fs.pipe_file(f"{root}/arc1/_archive.json", b"{}")
    fs.pipe_file(f"{root}/arc[1]/_archive.json", b"{}")
    remove(f"{bucket}/arc[1]/_archive.json", storage)
    assert fs.exists(f"{root}/arc1/_archive.json")
    assert not fs.exists(f"{root}/arc[1]/_archive.json")

    def names(*sources):
        return [s.name for s in expand_sources(list(sources), storage)]

    assert names(f"{bucket}/src/a[1].tar", f"{bucket}/src/b?.tar") == ["a[1]", "b?"]
    assert names(f"{bucket}/src/a*.tar") == ["a1", "a[1]"]  # a real pattern still globs
    assert names(f"{bucket}/src") == ["a1", "a[1]", "b?", "bX"]  # sorted keys
    with pytest.raises(SourceError, match="is not a directory or prefix"):
        expand_sources([f"{bucket}/no-such-prefix/"], storage)


class _S3Bytes:
    """Counts the requests this process makes to S3 and the bytes its GETs return (every s3fs
    request goes through S3FileSystem._call_s3)."""

    def __init__(self, monkeypatch):
        self.requests, self.got = 0, 0
        original = s3fs.S3FileSystem._call_s3

        async def counted(fs, method, *args, **kwargs):
            out = await original(fs, method, *args, **kwargs)
            self.requests += 1
            name = method if isinstance(method, str) else getattr(method, "__name__", "")
            if name == "get_object" and isinstance(out, dict):
                self.got += out.get("ContentLength") or 0
            return out

        monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counted)

    def reset(self) -> None:
        self.requests, self.got = 0, 0


def _samples_with_a_kept_member(seed: int, count: int, member_bytes: int) -> list[dict]:
    """``count`` samples k00, k01, ...: a 16x16 PNG and ``member_bytes`` random bytes kept
    beside it (what makes a shard file larger than the reads a lookup should make)."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
        samples.append({"__key__": f"k{i:02d}", "png": buf.getvalue(),
                        "bin": rng.bytes(member_bytes)})
    return samples


def test_lookups_and_a_rerun_read_footers_and_one_row_group_not_whole_files(
        s3_bucket, tmp_path, monkeypatch):
    """fsspec's remote files read ahead 50 MiB on every miss: a get downloaded the whole
    index and the whole shard file (now it does not read even the kept members), and a
    compress rerun with nothing to do downloaded the whole archive to rebuild the index from
    its key column. A shard file here has 3 row groups (1 MiB of random bytes kept beside each
    of 20 small images; row groups are cut at ROW_GROUP_BYTES of payload)."""
    from pipeline.archive import Archive

    url, storage = s3_bucket
    samples = _samples_with_a_kept_member(3, 20, 1 << 20)
    write_shards(tmp_path / "src", [samples])
    archive = f"{url}/arc"
    args = [str(tmp_path / "src"), archive, "--codec", "webp", "--endpoint-url",
            storage.endpoint_url, "--quiet"]
    assert main(["compress", *args]) == EXIT_OK
    fs, path = filesystem(f"{archive}/shards/shard-000000.parquet", storage)
    with fs.open(path, "rb") as f:
        meta = pq.ParquetFile(f).metadata
        size = f.size
    assert meta.num_row_groups >= 3
    largest = max(sum(group.column(c).total_compressed_size for c in range(group.num_columns))
                  for group in map(meta.row_group, range(meta.num_row_groups)))
    assert size > 1.5 * largest, (size, largest)  # cut at ROW_GROUP_BYTES after a batch

    counter = _S3Bytes(monkeypatch)
    arc = Archive.open(archive, storage)
    counter.reset()
    assert arc.get("k00").shape == (16, 16, 3)
    # the index (a few kB), the shard's footer (pyarrow reads up to 64 KiB from the end) and
    # the columns of one row group that decoding needs: not the kept members
    assert counter.got < 4 * 65536, (counter.got, size)
    counter.reset()
    row = arc.row("k00")
    assert row["members"][-1]["data"] == samples[0]["bin"]  # row() reads the members too
    assert counter.got < largest + 4 * 65536, (counter.got, size)  # of one row group

    counter.reset()
    assert main(["compress", *args]) == EXIT_OK  # nothing to do: footers and key columns
    assert counter.got < 4 * 65536, (counter.got, size)

    # restore's and verify's workers read rows in order: in blocks, not a request per pyarrow
    # read (1 MiB), and each byte about once, though two large columns' reads interleave
    from pipeline.rows import iter_rows
    from pipeline.storage import STREAM_BLOCK

    counter.reset()
    assert len(list(iter_rows(archive, "shard-000000", storage))) == 20
    assert size <= counter.got < size + 2 * 65536, (counter.got, size)  # + the footer's read
    assert counter.requests < size / STREAM_BLOCK + 8, counter.requests


def test_a_second_get_reads_no_footer_until_the_files_change(s3_bucket, tmp_path, monkeypatch):
    """An Archive keeps the footers it read: a first get reads the index's footer and the shard
    file's (pyarrow's 64 KiB from the end), the next gets only row groups. A file rewritten
    since (a new ETag) has its footer read again: the old one would place the rows wrongly."""
    from pipeline.archive import Archive, write_index

    url, storage = s3_bucket
    samples = _samples_with_a_kept_member(4, 12, 40_000)
    write_shards(tmp_path / "src", [samples])
    archive = f"{url}/arc"
    assert main(["compress", str(tmp_path / "src"), archive, "--codec", "webp", "--endpoint-url",
                 storage.endpoint_url, "--quiet"]) == EXIT_OK
    counter = _S3Bytes(monkeypatch)
    arc = Archive.open(archive, storage)
    expected = {}
    reads = []
    for key in ("k00", "k07", "k11"):
        counter.reset()
        expected[key] = arc.get(key)
        reads.append((counter.requests, counter.got))
    assert reads[0][1] > 65536, reads  # the shard file's footer read
    for requests, got in reads[1:]:
        assert got < 16384 and requests < reads[0][0], reads

    fs, path = filesystem(f"{archive}/shards/shard-000000.parquet", storage)
    with fs.open(path, "rb") as f:
        parquet = pq.ParquetFile(f)
        table = parquet.read().replace_schema_metadata(parquet.metadata.metadata)
    local = tmp_path / "rewritten.parquet"
    pq.write_table(table, local, row_group_size=1)  # the same rows, placed elsewhere
    fs.put_file(str(local), path)
    write_index(archive, ["shard-000000"], storage)
    for key in ("k07", "k00"):
        counter.reset()
        assert np.array_equal(arc.get(key), expected[key])
        if key == "k07":
            assert counter.got > 65536, counter.got  # both footers read anew
