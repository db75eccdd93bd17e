"""Restore and lookups at their edges, each found by an adversarial review (session 25): a
selection restored with --overwrite, a shard file that is not the manifest's, a repeated key
whose image is not its first member, empty filters, damaged manifests, odd destinations."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import encode_image, read_tar, sample, tar_bytes, write_shards

from jobs.synthetic import synthetic_image
from pipeline.archive import Archive, ArchiveKeyError
from pipeline.archive_format import FormatError
from pipeline.cli import main
from pipeline.compress import compress
from pipeline.restore import restore
from pipeline.shard_encode import Guard
from pipeline.storage import StorageOptions
from pipeline.tars import iter_samples
from pipeline.torch_dataset import ArchiveDataset

pytestmark = pytest.mark.usefixtures("ray_local")
NO_GUARD = Guard(size=False)
NO_STORAGE = StorageOptions()


@pytest.fixture
def archive(tmp_path) -> str:
    """Three shards of two samples each, webp."""
    src = tmp_path / "src"
    write_shards(src, [[sample(f"k{i}{j}", 10 * i + j) for j in range(2)] for i in range(3)])
    url = str(tmp_path / "arc")
    assert compress([str(src)], url, "webp", progress=False, guard=NO_GUARD).ok
    return url


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tar_bytes(members))


def _groups(path: Path) -> list[tuple[str, dict[str, bytes]]]:
    with open(path, "rb") as f:
        return [(s.key, dict(s.members)) for s in iter_samples(f, path.name)]


def test_a_selection_with_overwrite_leaves_the_shards_it_does_not_write(archive, tmp_path):
    out = tmp_path / "out"
    assert restore(archive, str(out), progress=False).ok
    before = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert len(before) == 3

    report = restore(archive, str(out), where="key == 'k10'", overwrite=True, progress=False)
    assert report.ok and report.outputs == ["shard-000001"]
    after = {p.name: p.read_bytes() for p in out.glob("*.tar")}
    assert sorted(after) == sorted(before)  # shard-000000 and -000002 were deleted before
    assert after["shard-000000.tar"] == before["shard-000000.tar"]
    assert after["shard-000002.tar"] == before["shard-000002.tar"]
    assert list(read_tar(out / "shard-000001.tar")) == ["k10"]
    assert not list(out.glob(".*"))  # no temp file left by the shards with nothing selected


def test_a_shard_file_that_is_not_the_manifests_is_refused(archive, tmp_path, capsys):
    shards = Path(archive) / "shards"
    shutil.copy(shards / "shard-000000.parquet", shards / "shard-000001.parquet")

    report = restore(archive, str(tmp_path / "out"), progress=False)
    assert sorted(report.failed) == ["shard-000001"]
    assert "holds shard 'shard-000000'" in report.failed["shard-000001"]
    assert not (tmp_path / "out" / "shard-000001.tar").exists()
    with pytest.raises(FormatError, match="not the file this archive was made with"):
        list(ArchiveDataset(archive, shards=["shard-000001"]))
    with pytest.raises(ValueError, match="no shard"):
        ArchiveDataset(archive, shards=["nope"])

    # a key of the failed shard is not "not in the archive": it was not looked for
    keys = tmp_path / "keys.txt"
    keys.write_text("k10\n")
    code = main(["restore", archive, str(tmp_path / "out2"), "--keys", str(keys), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "FAILED shard-000001" in err
    assert "not in the shards restored (1 failed, and may hold them)" in err


def test_samples_with_a_repeated_key_are_restored_in_their_own_groups(tmp_path):
    """Restore writes a coded sample's image first. For a sample whose key repeats the one
    before it, that would join its image to the sample before: the member whose name the
    sample before has goes first instead."""
    png = [encode_image(synthetic_image(s)) for s in range(3)]
    jpg = encode_image(synthetic_image(7), "JPEG")
    rgba = encode_image(np.dstack([synthetic_image(8), np.full((64, 96), 200, np.uint8)]))
    source = tmp_path / "src" / "shard-000000.tar"
    _tar(source, [("a.txt", b"label-A"), ("a.txt", b"label-B"), ("a.png", png[0]),
                  ("b.jpg", jpg), ("b.txt", b"first b"), ("b.txt", b"second b"), ("b.png", png[1]),
                  ("c.txt", b"c"), ("c.png", png[2]),
                  ("d.png", rgba), ("d.png", png[0])])  # kept as it came (RGBA), then coded
    archive, out = str(tmp_path / "arc"), tmp_path / "out"
    report = compress([str(source.parent)], archive, "webp", progress=False, guard=NO_GUARD)
    assert report.ok and report.totals["passthrough"] == 2  # the first a (no image), the RGBA d
    assert restore(archive, str(out), progress=False).ok
    back, original = _groups(out / "shard-000000.tar"), _groups(source)
    assert [(k, sorted(m)) for k, m in back] == [(k, sorted(m)) for k, m in original]
    assert [m.get("txt") for _, m in back] == \
        [b"label-A", b"label-B", b"first b", b"second b", b"c", None, None]
    assert back[5][1]["png"] == rgba

    # with --image-format, the second d would be d.webp after d.png: no name in common, so a
    # reader would join them; the shard fails instead of being written so
    report = restore(archive, str(tmp_path / "out2"), image_format="webp", progress=False)
    assert "no member name in common" in report.failed["shard-000000"]
    assert not (tmp_path / "out2" / "shard-000000.tar").exists()


def test_an_empty_where_is_refused_not_read_as_every_row(archive, tmp_path, capsys):
    assert main(["restore", archive, str(tmp_path / "o"), "--where", "", "-q"]) == 2
    assert "--where: cannot parse" in capsys.readouterr().err
    with pytest.raises(Exception, match="cannot parse"):
        ArchiveDataset(archive, where="")


@pytest.mark.parametrize("content", [b'{"format": "latent', b"[]"], ids=["truncated", "a list"])
def test_a_damaged_manifest_is_refused_and_named(archive, tmp_path, capsys, content):
    (Path(archive) / "_archive.json").write_bytes(content)
    for verb in (["info", archive], ["verify", archive, "-q"],
                 ["restore", archive, str(tmp_path / "o"), "-q"]):
        assert main(verb) == 2, verb
        err = capsys.readouterr().err
        assert "_archive.json is damaged" in err and "Traceback" not in err, err


def test_odd_destinations_and_arguments_are_refused_before_any_work(archive, tmp_path, capsys):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert main(["restore", archive, str(a_file), "-q"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["restore", archive, str(tmp_path / "o"), "--jpeg-quality", "500", "-q"]) == 2
    assert "--jpeg-quality must be 1..100" in capsys.readouterr().err
    for flag, value in (("--batch-mp", "nan"), ("--batch-mp", "inf"), ("--min-psnr", "nan")):
        assert main(["compress", str(tmp_path), str(tmp_path / "arc2"), flag, value, "-q"]) == 2
        assert "finite" in capsys.readouterr().err
    with pytest.raises(ArchiveKeyError, match="the archive has no shard 'nope'"):
        Archive.open(archive).get("nope", "k10")


def test_files_layout_takes_dot_slash_keys_and_a_failed_shard_keeps_what_was_there(tmp_path):
    png = [encode_image(synthetic_image(s)) for s in range(4)]
    src = tmp_path / "src"
    _tar(src / "shard-000000.tar", [("./k1.png", png[0]), ("./k1.txt", b"one")])  # tar -C dir .
    _tar(src / "shard-000001.tar", [("s0.png", png[1]), ("dup.png", png[2]), ("dup.png", png[3])])
    archive, out = str(tmp_path / "arc"), tmp_path / "out"
    assert compress([str(src)], archive, "webp", progress=False, guard=NO_GUARD).ok

    assert restore(archive, str(out), shards=["shard-000000"], layout="files", progress=False).ok
    assert [p.name for p in (out / "shard-000000").iterdir()] == ["k1.png"]

    # a repeated key fails the shard in this layout; what it created goes, what was there stays
    keys = tmp_path / "keys.txt"
    keys.write_text("s0\n")
    assert restore(archive, str(out), shards=["shard-000001"], keys_file=str(keys),
                   layout="files", progress=False).ok
    failed = restore(archive, str(out), shards=["shard-000001"], layout="files", overwrite=True,
                     progress=False)
    assert "repeats in this shard" in failed.failed["shard-000001"]
    assert [p.name for p in (out / "shard-000001").iterdir()] == ["s0.png"]
    fresh = restore(archive, str(tmp_path / "out2"), shards=["shard-000001"], layout="files",
                    progress=False)
    assert fresh.failed and not (tmp_path / "out2" / "shard-000001").exists()


def test_files_layout_names_a_key_that_is_both_a_file_and_a_directory(tmp_path):
    _tar(tmp_path / "src" / "shard-000000.tar", [("a", b"no suffix"), ("a/b.txt", b"under a")])
    archive = str(tmp_path / "arc")
    assert compress([str(tmp_path / "src")], archive, "webp", progress=False).ok
    report = restore(archive, str(tmp_path / "out"), layout="files", progress=False)
    error = report.failed["shard-000000"]
    assert "cannot be written: a file and a directory would have the same path" in error
    assert "--layout webdataset" in error and "Traceback" not in error
    assert restore(archive, str(tmp_path / "out2"), progress=False).ok  # the tar holds both


def test_a_keys_restore_reads_only_the_shards_the_index_names(archive, tmp_path):
    keys = tmp_path / "keys.txt"
    keys.write_text("k10\nnope\n")
    out = tmp_path / "out"
    report = restore(archive, str(out), keys_file=str(keys), progress=False)
    assert report.written == {"shard-000001": 1} and report.missing_keys == ["nope"]
    assert sorted(p.name for p in out.iterdir()) == ["shard-000001.tar"]

    # the refusal names only what this restore would write, not every shard of the archive
    assert restore(archive, str(tmp_path / "all"), progress=False).ok
    with pytest.raises(Exception, match=r"already has 1 of what this restore would write "
                                        r"\(shard-000001.tar\)"):
        restore(archive, str(tmp_path / "all"), keys_file=str(keys), progress=False)

    # without an index, or with a damaged one, every shard is looked in: the same answer
    (Path(archive) / "_index.parquet").write_bytes(b"garbage")
    again = restore(archive, str(tmp_path / "out3"), keys_file=str(keys), progress=False)
    assert {s: n for s, n in again.written.items() if n} == {"shard-000001": 1}
    assert again.missing_keys == ["nope"] and len(again.written) == 3
    (Path(archive) / "_index.parquet").unlink()
    again = restore(archive, str(tmp_path / "out4"), keys_file=str(keys), progress=False)
    assert {s: n for s, n in again.written.items() if n} == {"shard-000001": 1}


def test_a_stopped_overwrite_does_not_count_the_tars_that_were_there_before(tmp_path):
    from pipeline.restore import RestoreReport, _stopped

    for name in ("s0", "s1", "s2"):
        (tmp_path / f"{name}.tar").write_bytes(b"old")
    tasks = [{"shard": n, "file_name": f"{n}.tar"} for n in ("s0", "s1", "s2")]
    report = RestoreReport("arc", str(tmp_path), ["s0", "s1", "s2"], written={"s0": 4},
                           outputs=["s0"])
    line = _stopped(report, tasks, "webdataset", NO_STORAGE, {"s0.tar", "s1.tar", "s2.tar"})
    assert line.startswith("stopped by ") and ": 1 shard(s) restored to " in line
    assert "Not restored (2): s1, s2 (DST had some of these shards before this run" in line
    (tmp_path / "s3.tar").write_bytes(b"new")  # finished after the driver's last result
    tasks.append({"shard": "s3", "file_name": "s3.tar"})
    line = _stopped(report, tasks, "webdataset", NO_STORAGE, {"s0.tar", "s1.tar", "s2.tar"})
    assert ": 2 shard(s) restored to " in line and "Not restored (2): s1, s2 " in line


def test_a_where_restore_refuses_over_only_the_shards_it_would_write(archive, tmp_path):
    out = tmp_path / "out"
    assert restore(archive, str(out), progress=False).ok
    # k10 is in shard-000001 only: the tars of the other two are no concern of this restore
    with pytest.raises(Exception, match=r"already has 1 of what this restore would write "
                                        r"\(shard-000001.tar\)"):
        restore(archive, str(out), where="key == 'k10'", progress=False)
    # statistics cannot rule shard-000001 out of '!=' filters; its rows do
    with pytest.raises(Exception, match=r"already has 2 of what this restore would write "
                                        r"\(shard-000000.tar, shard-000002.tar\)"):
        restore(archive, str(out), where="key != 'k10' and key != 'k11'", progress=False)
    # no shard has a matching row: nothing would be written, so nothing is refused
    report = restore(archive, str(out), where="key == 'nope'", progress=False)
    assert report.ok and report.outputs == []
    (out / "shard-000001.tar").unlink()
    report = restore(archive, str(out), where="key == 'k10'", progress=False)
    assert report.ok and report.outputs == ["shard-000001"]
    assert list(read_tar(out / "shard-000001.tar")) == ["k10"]
