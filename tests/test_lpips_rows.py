"""LPIPS beside PSNR in archive rows (issue 6): ``compress --metrics lpips``.

The plumbing tests put a stand-in ``models.perceptual`` in ``sys.modules`` (a cheap score with
the real module's signature), so they run without the fetched AlexNet weights; the last test
uses the real metric and is skipped until ``python -m jobs.fetch_weights`` has been run.
Workers run in this process (learned_fixtures.run_in_process): no Ray cluster.
"""

import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, read_tar
from learned_fixtures import run_in_process

from pipeline.cli import EXIT_OK, EXIT_REFUSED, main

CACHE = Path(os.environ.get("LATENTARC_CACHE", Path.home() / ".cache" / "latentarc"))


def _fake_scores(reference: np.ndarray, decoded: np.ndarray, metrics=("lpips-alex",)) -> dict:
    assert reference.dtype == decoded.dtype == np.uint8 and reference.shape == decoded.shape
    diff = np.abs(reference.astype(np.float64) - decoded.astype(np.float64)).mean() / 255.0
    return {m: diff for m in metrics}


@pytest.fixture
def fake_perceptual(monkeypatch):
    module = types.ModuleType("models.perceptual")
    module.perceptual_scores = _fake_scores
    monkeypatch.setitem(sys.modules, "models.perceptual", module)


def _rows(archive: Path) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(archive / "shards").to_pylist()}


def test_lpips_column_stats_info_and_where(fake_perceptual, small_shards, tmp_path, monkeypatch,
                                           capsys):
    run_in_process(monkeypatch)
    archive = tmp_path / "arc"
    assert main(["compress", str(small_shards), str(archive), "--codec", "webp", "--quality", "30",
                 "--no-size-guard", "--metrics", "lpips", "-q"]) == EXIT_OK
    assert "mean LPIPS-alex" in capsys.readouterr().out
    schema = pq.read_schema(archive / "shards" / "shard-000000.parquet")
    assert schema.field("lpips").type == pa.float32()
    assert schema.names[-2:] == ["lpips", "png_colour"]  # columns added within v1: appended
    rows = _rows(archive)
    ok = {k: r for k, r in rows.items() if r["status"] == "ok"}
    assert len(ok) == 5 and rows["bad"]["lpips"] is None  # passthrough: nothing decoded
    assert all(0 < r["lpips"] < 1 for r in ok.values())
    stats = json.loads((archive / "_stats.json").read_text())
    assert stats["run"]["metrics"] == ["lpips"]
    mean = np.mean([r["lpips"] for r in ok.values()])
    assert stats["totals"]["mean_lpips"] == pytest.approx(mean, rel=1e-5)

    assert main(["info", str(archive)]) == EXIT_OK
    assert "mean LPIPS-alex" in capsys.readouterr().out

    cut = float(np.median([r["lpips"] for r in ok.values()]))
    assert main(["restore", str(archive), str(tmp_path / "out"), "--where", f"lpips < {cut}",
                 "-q"]) == EXIT_OK
    restored = {k for p in (tmp_path / "out").glob("*.tar") for k in read_tar(p)}
    assert restored == {k for k, r in ok.items() if r["lpips"] < cut} and restored


def test_the_lpips_mean_says_how_many_images_it_covers(fake_perceptual, small_shards, tmp_path,
                                                       monkeypatch, capsys):
    """A shard added by a run without --metrics lpips has no LPIPS; the archive's mean was
    shown as if it covered every image."""
    run_in_process(monkeypatch)
    archive = tmp_path / "arc"
    args = ["--codec", "webp", "--quality", "30", "--no-size-guard", "-q"]
    assert main(["compress", str(small_shards / "shard-000000.tar"), str(archive), *args,
                 "--metrics", "lpips"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "coded images" not in out  # every coded image has one
    # and the passthrough sample ("bad": no decodable image) is pointed to, not only counted
    assert f"(1 sample(s) stored as they came, each with its reason: `latentarc info {archive}`" \
        in out
    assert main(["compress", str(small_shards), str(archive), *args]) == EXIT_OK
    capsys.readouterr()
    assert main(["info", str(archive)]) == EXIT_OK
    assert "(of 2 of the 5 coded images; the others have none: a run without --metrics lpips" \
        in capsys.readouterr().out


def test_lpips_is_off_by_default_and_unknown_metrics_are_refused(fake_perceptual, small_shards,
                                                                  tmp_path, monkeypatch, capsys):
    run_in_process(monkeypatch)
    archive = tmp_path / "arc"
    assert main(["compress", str(small_shards), str(archive), "--codec", "webp", "-q"]) == EXIT_OK
    assert all(r["lpips"] is None for r in _rows(archive).values())
    assert "LPIPS" not in capsys.readouterr().out
    # A filter on a column nobody filled selects nothing (null never matches).
    assert main(["restore", str(archive), str(tmp_path / "o"), "--where", "lpips < 1", "-q"]) == EXIT_OK
    assert not list((tmp_path / "o").glob("*.tar"))
    capsys.readouterr()
    assert main(["compress", str(small_shards), str(tmp_path / "b"), "--metrics", "ssim"]) == EXIT_REFUSED
    assert "unknown metric(s) ssim" in capsys.readouterr().err


def test_a_metric_that_cannot_run_is_refused_before_any_work(small_shards, tmp_path, monkeypatch,
                                                             capsys):
    run_in_process(monkeypatch)
    broken = types.ModuleType("models.perceptual")

    def scores(reference, decoded, metrics=("lpips-alex",)):
        raise FileNotFoundError("lpips_alex.safetensors is not in the cache")

    broken.perceptual_scores = scores
    monkeypatch.setitem(sys.modules, "models.perceptual", broken)
    archive = tmp_path / "arc"
    assert main(["compress", str(small_shards), str(archive), "--metrics", "lpips"]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert "jobs.fetch_weights" in err and "lpips_alex.safetensors" in err
    assert not archive.exists()


@pytest.mark.skipif(not (REPO / "models" / "perceptual.py").exists()
                    or not (CACHE / "weights" / "lpips_alex.safetensors").exists(),
                    reason="needs models/perceptual.py and `python -m jobs.fetch_weights`")
def test_real_lpips_matches_the_metric_and_orders_qualities(small_shards, tmp_path, monkeypatch):
    from PIL import Image

    from models.perceptual import perceptual_scores
    from pipeline.archive import Archive

    run_in_process(monkeypatch)
    means = {}
    for quality in (5, 95):
        archive = tmp_path / f"q{quality}"
        assert main(["compress", str(small_shards), str(archive), "--codec", "webp", "--quality",
                     str(quality), "--no-size-guard", "--metrics", "lpips", "-q"]) == EXIT_OK
        ok = {k: r for k, r in _rows(archive).items() if r["status"] == "ok"}
        means[quality] = np.mean([r["lpips"] for r in ok.values()])
    assert means[5] > means[95] >= 0
    # The stored value is LPIPS-alex between the source pixels and the decode.
    row = ok["b0"]
    source = read_tar(small_shards / "shard-000001.tar")["b0"]["png"]
    import io

    reference = np.asarray(Image.open(io.BytesIO(source)).convert("RGB"))
    decoded = Archive.open(str(archive)).get("b0")
    expected = perceptual_scores(reference, decoded, metrics=("lpips-alex",))["lpips-alex"]
    assert row["lpips"] == pytest.approx(expected, rel=1e-3, abs=1e-4)
