"""Rerunning compress: redo exactly the shards whose output is missing or invalid; refuse a
changed codec or quality; an unreadable input shard fails alone and is named."""

import os

import pytest

from pipeline.cli import EXIT_INCOMPLETE, EXIT_OK, EXIT_REFUSED, main
from pipeline.compress import compress

pytestmark = pytest.mark.usefixtures("ray_local")


def test_rerun_redoes_only_the_damaged_shard(small_shards, tmp_path, capsys):
    archive = tmp_path / "arc"
    first = compress([str(small_shards)], str(archive), "webp", 70, progress=False)
    assert first.ok
    damaged = archive / "shards" / "shard-000001.parquet"
    kept = archive / "shards" / "shard-000000.parquet"
    kept_mtime = kept.stat().st_mtime_ns
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])

    second = compress([str(small_shards)], str(archive), "webp", 70, progress=False)
    assert second.ok
    assert second.done == ["shard-000001"] and second.skipped == ["shard-000000"]
    assert "unreadable" in second.redone["shard-000001"]
    assert kept.stat().st_mtime_ns == kept_mtime
    assert (archive / "_archive.json").exists()

    # Nothing to do: everything is skipped, and the CLI says so.
    assert main(["compress", str(small_shards), str(archive), "--codec", "webp",
                 "--quality", "70", "-q"]) == EXIT_OK
    assert "0 shard(s) done, 2 skipped" in capsys.readouterr().out


def test_other_quality_or_codec_is_refused(small_shards, tmp_path, capsys):
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "webp", 70, progress=False).ok
    before = sorted(os.listdir(archive / "shards"))
    code = main(["compress", str(small_shards), str(archive), "--codec", "webp", "--quality", "50", "-q"])
    assert code == EXIT_REFUSED
    assert "refusing" in capsys.readouterr().err
    assert main(["compress", str(small_shards), str(archive), "--codec", "jpeg", "-q"]) == EXIT_REFUSED
    assert sorted(os.listdir(archive / "shards")) == before


def test_missing_or_damaged_input_shard_fails_alone(small_shards, tmp_path, capsys):
    archive = tmp_path / "arc"
    broken = small_shards / "shard-000002.tar"
    broken.write_bytes((small_shards / "shard-000000.tar").read_bytes()[:3000])
    missing = str(small_shards / "shard-000009.tar")
    code = main(["compress", str(small_shards), missing, str(archive), "--codec", "png", "-q"])
    assert code == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "FAILED shard-000002: shard shard-000002: tar is damaged" in err
    assert "FAILED shard-000009" in err and "2 of 4 shards not compressed" in err
    assert sorted(os.listdir(archive / "shards")) == ["shard-000000.parquet", "shard-000001.parquet"]
    assert not (archive / "_archive.json").exists()  # incomplete archives have no manifest
    assert main(["info", str(archive)]) == EXIT_INCOMPLETE


def test_files_of_an_unfinished_run_with_another_codec_are_refused(small_shards, tmp_path, capsys):
    archive = tmp_path / "arc"
    first = small_shards / "shard-000000.tar"
    assert compress([str(first)], str(archive), "webp", 70, progress=False).ok
    (archive / "_archive.json").unlink()  # as if the run had stopped before finishing
    code = main(["compress", str(small_shards), str(archive), "--codec", "jpeg", "-q"])
    assert code == EXIT_REFUSED
    assert "shard-000000.parquet was written with --codec webp" in capsys.readouterr().err
    assert sorted(os.listdir(archive / "shards")) == ["shard-000000.parquet"]
