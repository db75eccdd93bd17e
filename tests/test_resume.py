"""Rerunning compress: redo exactly the shards whose output is missing or invalid; refuse a
changed codec, quality, weights or source; an unreadable input shard fails alone and is named."""

import json
import os
import shutil

import pytest
import torch
from learned_fixtures import (
    REALISTIC_CODE,
    REALISTIC_CODEC,
    register_tiny_realistic,
    run_in_process,
    unregister,
)

from models.hyperprior import MeanScaleHyperprior
from models.learned import export_weights
from pipeline.cli import EXIT_INCOMPLETE, EXIT_OK, EXIT_REFUSED, main
from pipeline.compress import compress
from pipeline.errors import Refused

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
    # a local file named alone that is not there is a bad argument: refused before any work
    code = main(["compress", str(small_shards), missing, str(archive), "--codec", "png", "-q"])
    assert code == EXIT_REFUSED
    assert "shard-000009.tar does not exist" in capsys.readouterr().err
    assert not archive.exists()
    # (a missing name of a brace list fails as its shard: test_sources_and_storage)
    code = main(["compress", str(small_shards), str(archive), "--codec", "png", "-q"])
    assert code == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "FAILED shard-000002: tar is damaged" in err
    assert "1 of 3 shards not compressed" in err
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


def test_a_shard_of_the_same_name_from_another_source_is_refused(small_shards, tmp_path, capsys):
    """Finished files were once skipped by name alone: another directory's shard-000000.tar
    was taken as done, and its samples never compressed (exit 0)."""
    archive = tmp_path / "arc"
    assert compress([str(small_shards / "shard-000000.tar")], str(archive), "webp", 70,
                    progress=False).ok
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(small_shards / "shard-000001.tar", other / "shard-000000.tar")
    manifest = (archive / "_archive.json").read_bytes()
    assert main(["compress", str(other), str(archive), "--codec", "webp", "--quality", "70",
                 "-q"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert f"shard shard-000000 is already in the archive, compressed from {small_shards}" in err
    assert f"this run's shard-000000 is {other / 'shard-000000.tar'}" in err
    assert (archive / "_archive.json").read_bytes() == manifest


def test_other_weights_under_the_same_codec_id_are_refused(small_shards, tmp_path, monkeypatch):
    """A codec id re-registered with retrained weights writes streams the archive's weights
    cannot decode; mixing them was found only by verify."""
    from models.registry import _LazyLearned, _register_one
    from models.weights import read_registry, register_weights

    run_in_process(monkeypatch)
    first, second = tmp_path / "w1", tmp_path / "w2"
    first.mkdir()
    second.mkdir()
    register_tiny_realistic(first)
    try:
        archive = tmp_path / "arc"
        assert compress([str(small_shards / "shard-000000.tar")], str(archive), REALISTIC_CODEC,
                        4.0, progress=False).ok
        torch.manual_seed(7)
        sha = export_weights(MeanScaleHyperprior(N=16, M=24), second / "tiny.safetensors")
        register_weights(REALISTIC_CODEC, "tiny.safetensors", sha, REALISTIC_CODE,
                         {"title": "retrained", "budget_label": "tests only"}, second)
        unregister(REALISTIC_CODEC)
        _register_one(_LazyLearned, second, REALISTIC_CODEC, read_registry(second)[REALISTIC_CODEC])
        with pytest.raises(Refused, match=f"{archive} was written by codec {REALISTIC_CODEC} with "
                           "weights sha256 .* refusing to mix them"):
            compress([str(small_shards)], str(archive), REALISTIC_CODEC, 4.0, progress=False)
        (archive / "_archive.json").unlink()  # an unfinished run: the shard files are checked
        with pytest.raises(Refused, match="shard-000000.parquet was written by codec"):
            compress([str(small_shards)], str(archive), REALISTIC_CODEC, 4.0, progress=False)
        assert sorted(os.listdir(archive / "shards")) == ["shard-000000.parquet"]
    finally:
        unregister(REALISTIC_CODEC)


def test_resumed_totals_count_every_file_and_a_damaged_file_of_another_run_fails(
        small_shards, tmp_path, capsys):
    """A skipped shard's bytes were counted as 0 (ratio too high after every resume), and a
    damaged file whose source was not in the run was dropped from the manifest with exit 0."""
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "webp", 70, progress=False).ok
    sizes = sum(f.stat().st_size for f in (archive / "shards").iterdir())
    first = json.loads((archive / "_archive.json").read_text())["totals"]
    assert first["archive_bytes"] == sizes
    again = compress([str(small_shards)], str(archive), "webp", 70, progress=False)
    assert again.skipped == ["shard-000000", "shard-000001"]
    assert json.loads((archive / "_archive.json").read_text())["totals"] == first

    damaged = archive / "shards" / "shard-000001.parquet"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    code = main(["compress", str(small_shards / "shard-000000.tar"), str(archive), "--codec",
                 "webp", "--quality", "70", "-q"])
    assert code == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert "FAILED shard-000001: its file is unreadable" in err
    assert "1 shard file(s) in the archive from other sources are damaged" in err
    assert "rerun the same command" not in err  # this run's one shard was fine
    stats = json.loads((archive / "_stats.json").read_text())
    assert "its source is not among this run's" in stats["run"]["failed"]["shard-000001"]
    # this run had nothing to do, and the manifest (listing the damaged shard) stayed: info
    # then called the archive complete
    assert not (archive / "_archive.json").exists()


def test_a_shard_file_copied_under_another_name_is_not_a_second_shard(small_shards, tmp_path):
    """shards/extra.parquet holding shard-000000's rows was accepted: the manifest listed
    shard-000000.tar twice, verify passed, and restore wrote one tar over the other."""
    archive = tmp_path / "arc"
    assert compress([str(small_shards)], str(archive), "webp", 70, progress=False).ok
    shutil.copy(archive / "shards" / "shard-000000.parquet", archive / "shards" / "extra.parquet")
    again = compress([str(small_shards)], str(archive), "webp", 70, progress=False)
    assert not again.ok and "named extra but holds shard 'shard-000000'" in again.failed["extra"]
    assert not (archive / "_archive.json").exists()


def test_a_source_whose_name_looks_like_a_temp_file_is_kept(small_shards, tmp_path):
    """Stale temp files were found by ".tmp-" anywhere in a name, so a shard made from
    night.tmp-2024.tar was deleted as soon as it was written, on every rerun."""
    src = tmp_path / "night"
    src.mkdir()
    shutil.copy(small_shards / "shard-000000.tar", src / "night.tmp-2024.tar")
    archive = tmp_path / "arc"
    report = compress([str(src)], str(archive), "webp", 70, progress=False)
    assert report.ok and report.interrupted == []
    assert os.listdir(archive / "shards") == ["night.tmp-2024.parquet"]
    assert [s["shard"] for s in json.loads((archive / "_archive.json").read_text())["shards"]] == \
        ["night.tmp-2024"]
