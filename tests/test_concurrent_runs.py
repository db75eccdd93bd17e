"""Compress runs into one archive at the same time (several `ray job submit`s, each with a range
of shards), and shard files that go missing: found by an adversarial review (session 26). The
run that finished last wrote the manifest from the files it saw when it started, leaving the
other run's shards out of a "complete" archive; a run deleted the other's live temp files; and a
listed shard whose file went missing was dropped from the manifest without a word."""

import json
import shutil
import threading
from pathlib import Path

import pytest
from conftest import sample, write_shards

import pipeline.compress
from pipeline.cli import EXIT_INCOMPLETE, EXIT_OK, main
from pipeline.compress import compress
from pipeline.shard_encode import Guard
from pipeline.storage import remove_temp_files, write_atomic
from pipeline.verify import verify

pytestmark = pytest.mark.usefixtures("ray_local")
NO_GUARD = Guard(size=False)


@pytest.fixture
def sources(tmp_path) -> Path:
    write_shards(tmp_path / "src", [[sample(f"k{i}{j}", 10 * i + j) for j in range(2)]
                                    for i in range(4)])
    return tmp_path / "src"


def _finishing_meanwhile(monkeypatch, shard_file: Path, archive: Path) -> None:
    """While the run works (after its first shard), ``shard_file`` lands in ``archive``, as a
    shard that another compress run finished."""
    real = pipeline.compress.run_per_shard

    def run(*args, **kwargs):
        for i, result in enumerate(real(*args, **kwargs)):
            if i == 0:
                shutil.copy(shard_file, archive / "shards" / shard_file.name)
            yield result

    monkeypatch.setattr(pipeline.compress, "run_per_shard", run)


def test_the_run_that_finishes_last_takes_in_the_other_runs_shards(sources, tmp_path, monkeypatch,
                                                                   capsys):
    other = tmp_path / "other"  # what the other run writes: shard-000003, same codec
    assert compress([str(sources / "shard-000003.tar")], str(other), "webp", progress=False,
                    guard=NO_GUARD).ok
    archive = tmp_path / "arc"
    _finishing_meanwhile(monkeypatch, other / "shards" / "shard-000003.parquet", archive)
    assert main(["compress", str(sources / "shard-00000{0..2}.tar"), str(archive), "--codec",
                 "webp", "--no-size-guard", "--actors", "1"]) == EXIT_OK
    assert "shard shard-000003: finished during this run by another compress run; taken in" in \
        capsys.readouterr().err
    manifest = json.loads((archive / "_archive.json").read_text())
    assert [e["shard"] for e in manifest["shards"]] == [f"shard-00000{i}" for i in range(4)]
    stats = json.loads((archive / "_stats.json").read_text())
    assert stats["listed"] == [f"shard-00000{i}" for i in range(4)]
    report = verify(str(archive), progress=False)
    assert report.ok and report.rows == 8  # the index holds shard-000003's keys too


def test_a_run_with_other_settings_meanwhile_leaves_the_archive_incomplete(sources, tmp_path,
                                                                           monkeypatch):
    other = tmp_path / "other"
    assert compress([str(sources / "shard-000003.tar")], str(other), "jpeg", progress=False,
                    guard=NO_GUARD).ok
    archive = tmp_path / "arc"
    _finishing_meanwhile(monkeypatch, other / "shards" / "shard-000003.parquet", archive)
    report = compress([str(sources / "shard-00000{0..2}.tar")], str(archive), "webp",
                      progress=False, guard=NO_GUARD)
    assert not report.ok and list(report.failed) == ["shard-000003"]
    assert "written during this run by another compress run with other settings" in \
        report.failed["shard-000003"]
    assert not (archive / "_archive.json").exists()  # it was "complete", mixing two codecs


def test_a_listed_shard_whose_file_is_gone_is_a_failure_until_redone(sources, tmp_path, capsys):
    archive = tmp_path / "arc"
    assert compress([str(sources / "shard-00000{0..1}.tar")], str(archive), "webp",
                    progress=False, guard=NO_GUARD).ok
    (archive / "shards" / "shard-000001.parquet").unlink()
    add = ["compress", str(sources / "shard-000002.tar"), str(archive), "--codec", "webp",
           "--no-size-guard", "-q"]
    for _ in range(2):  # the failed run removed the manifest: its list is kept in _stats.json
        assert main(add) == EXIT_INCOMPLETE
        err = capsys.readouterr().err
        assert "FAILED shard-000001: _archive.json listed it, but its file " \
               "is missing; compress again with its source to redo it" in err
        assert not (archive / "_archive.json").exists()
    assert main(["compress", str(sources / "shard-00000{0..2}.tar"), str(archive), "--codec",
                 "webp", "--no-size-guard"]) == EXIT_OK
    assert "redoing shard shard-000001: its file is missing (_archive.json listed it)" in \
        capsys.readouterr().err
    manifest = json.loads((archive / "_archive.json").read_text())
    assert [e["shard"] for e in manifest["shards"]] == [f"shard-00000{i}" for i in range(3)]


def test_a_live_writers_temp_file_is_not_removed(tmp_path):
    """remove_temp_files (each compress run calls it on shards/) took the temp file of a writer
    still at work, whose rename then failed."""
    started, release = threading.Event(), threading.Event()

    def slow(f) -> None:
        f.write(b"part one ")
        started.set()
        release.wait(10)
        f.write(b"part two")

    writer = threading.Thread(target=write_atomic, args=(str(tmp_path / "x.parquet"), slow))
    writer.start()
    assert started.wait(10)
    assert remove_temp_files(str(tmp_path)) == []
    release.set()
    writer.join(10)
    assert (tmp_path / "x.parquet").read_bytes() == b"part one part two"
    # a dead writer's (no lock held) is removed, as before
    (tmp_path / ".y.parquet.tmp-0123456789abcdef0123456789abcdef").write_bytes(b"left")
    assert remove_temp_files(str(tmp_path)) == ["y.parquet"]


def test_verify_is_not_alarmed_by_shards_added_while_it_runs(sources, tmp_path, monkeypatch):
    """verify read the manifest first and the index last: shards that a compress run added in
    between were reported as "_index.parquet lists shard(s) the archive does not have"."""
    import pipeline.verify

    archive = tmp_path / "arc"
    assert compress([str(sources / "shard-00000{0..1}.tar")], str(archive), "webp",
                    progress=False, guard=NO_GUARD).ok
    real = pipeline.verify.index_digests

    def added_meanwhile(*args, **kwargs):
        assert compress([str(sources / "shard-00000{0..2}.tar")], str(archive), "webp",
                        progress=False, guard=NO_GUARD).ok
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline.verify, "index_digests", added_meanwhile)
    report = verify(str(archive), progress=False)
    assert report.ok and report.rows == 4, report.problems
