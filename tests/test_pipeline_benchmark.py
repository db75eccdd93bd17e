"""`python -m jobs.benchmark --pipeline` runs end to end on four tiny images and reports every
measurement with plausible values (the real figures are in benchmarks/pipeline/)."""

import json
from pathlib import Path

import pytest
from conftest import encode_image, synthetic_image

from jobs.benchmark import main


def tiny_images(tmp_path):
    """Four small synthetic PNGs: enough for every measurement, in seconds."""
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        (images / f"im{i}.png").write_bytes(encode_image(synthetic_image(i)))
    return images


def test_pipeline_benchmark_refuses_a_missing_image_folder(tmp_path):
    with pytest.raises(SystemExit, match="is missing"):
        main(["--pipeline", "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_pipeline_benchmark_writes_every_measurement(tmp_path):
    images = tiny_images(tmp_path)
    out = tmp_path / "out"
    assert main(["--pipeline", "--images", str(images), "--out", str(out), "--rows-small", "2",
                 "--rows-big", "4", "--big-shards", "2", "--budget-mib", "0.01",
                 "--actors", "1", "2", "--sample-interval", "0.05"]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["settings"]["images_per_run"] == 8 and summary["bare"]["images"] == 8

    # 1. throughput: two layouts x two actor counts x compress/restore, against the bare codec
    rows = summary["derived"]["pipeline"]
    assert {(r["op"], r["rows_per_shard"], r["actors"]) for r in rows} == {
        (op, size, a) for op in ("compress", "restore") for size in (2, 4) for a in (1, 2)}
    # tiny images: Ray start-up dominates, so efficiencies are near zero (rounded), never negative
    assert all(r["images"] == 8 and r["images_per_s"] > 0 for r in rows)
    assert all(r["efficiency"] >= 0 and r["cpu_efficiency"] >= 0 for r in rows)
    assert {b["what"] for b in summary["derived"]["bare"]} >= {"encode+decode+PSNR", "decode"}
    for run in summary["runs"]:
        assert run["compressed"] == 8 and run["restored_samples"] == 8
        assert run["shards"] == (4 if run["layout"] == "small" else 2)

    # 2. memory: each run saw its own actors, with a Python process's worth of RSS
    for run in summary["runs"]:
        for op in ("compress", "restore"):
            mem = run[f"{op}_memory"]
            assert 1 <= mem["workers"] <= run["actors"]
            assert 50 < mem["peak_rss_mib"] < 4096
            # VmHWM is the kernel's own peak of VmRSS: never below a sample of it (0.95: slack)
            assert mem["peak_hwm_mib"] >= 0.95 * mem["peak_rss_mib"]
            # the sampler timed its own thread, and that time is not the pipeline's
            assert mem["contention"]["sampler_cpu_seconds"] > 0
            assert mem["contention"]["cpu_seconds"] > 0
    assert len(summary["derived"]["memory"]) == 4

    # 3. overhead: the shard files hold the bitstreams, the members and something more
    for layout in ("small", "big"):
        o = summary["overhead"][layout]
        assert o["rows"] == 8 and o["bitstream_bytes"] > 0 and o["member_bytes"] > 0
        assert o["overhead_bytes_per_row"] > 0
    per_row = {layout: o["overhead_bytes_per_row"] for layout, o in summary["overhead"].items()}
    assert per_row["small"] > per_row["big"]  # the footer is spread over more rows

    # 4. actor scaling and the targets, and the markdown carries all of it
    assert len(summary["derived"]["scaling"]) == 4
    assert set(summary["derived"]["targets"]) == {
        "efficiency_ge_0.9", "efficiency_ge_0.9_default_actors", "cpu_efficiency_ge_0.9",
        "big_shard_rss_within_10pct", "overhead_le_128_B_per_row", "in_worker_efficiency_ge_0.9"}
    # the fixture's cluster has 2 CPUs: the CLI's default count, 2 actors, on the 4 small shards
    default = summary["derived"]["targets"]["efficiency_ge_0.9_default_actors"]
    by_hand = next(r["efficiency"] for r in rows
                   if r["op"] == "compress" and r["rows_per_shard"] == 2 and r["actors"] == 2)
    assert summary["settings"]["cluster_cpus"] == 2 and default["value"] == by_hand
    # the in-worker comparison of the worker's threads: off then on, every image of the big
    # shards each time
    ab = summary["derived"]["in_worker"]
    assert [r["prefetch"] for r in ab] == [False, True]
    assert [r["check_thread"] for r in ab] == [False, True]
    assert all(r["images"] == 8 and r["efficiency"] > 0 for r in ab)
    assert "### The worker's threads, in one worker" in (out / "results.md").read_text()
    text = (out / "results.md").read_text()
    assert text.startswith("# Pipeline benchmark")
    assert "Command: `python -m jobs.benchmark --pipeline --images" in text
    for heading in ("## Targets", "## 1. Throughput", "## 2. Peak RSS per worker",
                    "## 3. Archive bytes vs bitstream bytes", "## 4. 1 vs 2 encoder actors"):
        assert heading in text


def test_pipeline_benchmark_refuses_a_bad_gpu_share(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--pipeline", "--images", str(tmp_path), "--gpus-per-actor", "half"])
    assert "--gpus-per-actor takes a number or auto" in capsys.readouterr().err


def test_pipeline_benchmark_auto_gpu_share_needs_a_gpu(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: auto is valid here")
    with pytest.raises(SystemExit):
        main(["--pipeline", "--images", str(tmp_path), "--gpus-per-actor", "auto"])
    assert "torch sees no GPU here" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_pipeline_benchmark_runs_the_codec_on_the_gpu(tmp_path):
    """The GPU run of the benchmark (infra/gpu/pipeline_bench.sh) on tiny images: the bare loop
    and the actors run the learned codec on cuda, and the report says so."""
    images = tiny_images(tmp_path)
    out = tmp_path / "out"
    assert main(["--pipeline", "--images", str(images), "--out", str(out), "--codec", "msh-n96-v2",
                 "--rows-small", "2", "--rows-big", "4", "--big-shards", "2", "--budget-mib", "0.01",
                 "--actors", "1", "2", "--gpus-per-actor", "auto", "--prefetch-reps", "0"]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["settings"]["device"] == "cuda"
    import torch

    gpus = torch.cuda.device_count()  # auto: the machine's GPUs shared by the actors
    assert summary["settings"]["gpus_per_actor"] == {"1": float(gpus), "2": gpus / 2}
    assert all(r["compressed"] == 8 and r["restored_samples"] == 8 for r in summary["runs"])
    assert summary["machine"]["gpu"] != "none used"
    assert "codec on" in (out / "results.md").read_text()


def test_overhead_counts_kept_members_as_stored(tmp_path):
    """The overhead subtracted the members' raw bytes from a zstd-compressed file, crediting
    their compression to the per-row columns: with compressible captions it went negative."""
    import io
    import tarfile

    from jobs.pipeline_benchmark import archive_bytes
    from models.registry import get_codec
    from pipeline.shard_encode import Guard, encode_shard
    from pipeline.sources import Shard

    caption = b"a caption that repeats " * 800  # 18 KB, compresses a hundredfold
    src = tmp_path / "s-000000.tar"
    with tarfile.open(src, "w") as tar:
        for i in range(6):
            for name, data in ((f"k{i}.png", encode_image(synthetic_image(i), "PNG")),
                               (f"k{i}.txt", caption)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    encode_shard(Shard(str(src), "s-000000", src.name), str(tmp_path / "arc"), get_codec("webp"),
                 guard=Guard(size=False))
    o = archive_bytes(tmp_path / "arc")
    assert o["member_bytes"] == 6 * len(caption)
    assert o["stored_member_bytes"] < o["member_bytes"] / 20
    assert o["stored_bitstream_bytes"] == o["bitstream_bytes"]  # incompressible: raw is smaller
    assert o["overhead_bytes"] == (o["shard_file_bytes"] - o["stored_bitstream_bytes"]
                                   - o["stored_member_bytes"])
    assert o["overhead_bytes_per_row"] > 0
    # The raw count would have put the overhead below zero here.
    assert o["shard_file_bytes"] - o["bitstream_bytes"] - o["member_bytes"] < 0


def test_shard_files_spend_fewer_bytes_per_row_than_pyarrows_defaults(tmp_path):
    """archive_format.WRITER_OPTIONS: no dictionaries for values that never repeat, a delta
    encoding for the index. The same rows written with pyarrow's defaults take more."""
    import io
    import tarfile

    import pyarrow.parquet as pq

    from models.registry import get_codec
    from pipeline.shard_encode import Guard, encode_shard
    from pipeline.sources import Shard

    src, rows = tmp_path / "s-000000.tar", 80
    with tarfile.open(src, "w") as tar:
        for i in range(rows):
            data = encode_image(synthetic_image(i, 16, 16), "PNG")
            info = tarfile.TarInfo(f"k{i:04d}.png")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    encode_shard(Shard(str(src), "s-000000", src.name), str(tmp_path / "arc"), get_codec("webp"),
                 guard=Guard(size=False))
    path = tmp_path / "arc" / "shards" / "s-000000.parquet"
    table = pq.read_table(path)
    pq.write_table(table, tmp_path / "defaults.parquet", compression="zstd",
                   write_page_checksum=True, row_group_size=table.num_rows)
    saved = (tmp_path / "defaults.parquet").stat().st_size - path.stat().st_size
    assert saved >= 5 * rows, saved


def test_the_default_count_target_on_a_gpu_is_two_actors_per_gpu():
    """On a GPU machine the CLI's default is ACTORS_PER_GPU actors per GPU (auto resources): the
    target reads that row of a GPU run (run 6, H200), and no row of a run with other shares."""
    from jobs.pipeline_benchmark import derive
    from pipeline.runner import ACTORS_PER_GPU

    path = Path(__file__).parents[1] / "benchmarks/pipeline/gpu/run6-h200/results.json"
    summary = json.loads(path.read_text())
    default = derive(summary)["targets"]["efficiency_ge_0.9_default_actors"]
    row = next(r for r in summary["derived"]["pipeline"] if r["op"] == "compress"
               and r["layout"] == "small" and r["actors"] == ACTORS_PER_GPU)
    assert default["value"] == row["efficiency"] and "0.5 GPU each" in default["what"]
    summary["settings"]["gpus_per_actor"] = {"1": 2.0, "2": 1.0}  # two GPUs: no 4-actor row
    assert derive(summary)["targets"]["efficiency_ge_0.9_default_actors"]["value"] is None
