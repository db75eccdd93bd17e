"""The bad-input corpus (tests/bad_inputs.py) through compress and restore: nothing crashes,
every sample is compressed or kept as it was with a reason, and restore gives back passthrough
samples and every non-image member byte for byte."""

import pyarrow.parquet as pq
import pytest
from bad_inputs import _tar, samples, shard_cases

from pipeline.cli import EXIT_INCOMPLETE, main
from pipeline.compress import compress
from pipeline.restore import restore
from pipeline.shard_encode import Guard
from pipeline.tars import iter_samples

pytestmark = pytest.mark.usefixtures("ray_local")


def _write(path, cases):
    path.write_bytes(_tar([(f"{key}.{suffix}" if suffix else key, data)
                           for key, members, _, _ in cases for suffix, data in members]))


def test_corpus_is_compressed_or_kept_with_reasons(tmp_path):
    cases = samples()
    assert len(cases) >= 30
    src = tmp_path / "src"
    src.mkdir()
    _write(src / "bad-000000.tar", cases)
    _write(src / "bad-000001.tar", [c for c in cases if c[0] == "dup-across"])
    (src / "empty.tar").write_bytes(shard_cases()["empty.tar"][0])
    archive = tmp_path / "arc"
    report = compress([str(src)], str(archive), "webp", 85, progress=False, guard=Guard(size=False))
    assert report.ok, report.failed

    rows = pq.read_table(archive / "shards" / "bad-000000.parquet").to_pylist()
    with open(src / "bad-000000.tar", "rb") as f:
        keys_in_tar = [s.key for s in iter_samples(f, "bad-000000")]
    assert [r["key"] for r in rows] == keys_in_tar  # every sample, in order, exactly once
    expected = {}
    for key, _, status, reason in cases:
        expected.setdefault(key.split(".")[0], (status, reason))
    for row in rows:
        status, reason = expected[row["key"]]
        assert row["status"] == status, (row["key"], row["reason"])
        if status == "passthrough":
            assert reason in row["reason"], (row["key"], row["reason"])

    assert restore(str(archive), str(tmp_path / "out"), progress=False).ok
    for shard in ("bad-000000.tar", "bad-000001.tar"):
        with open(src / shard, "rb") as f:
            originals = list(iter_samples(f, shard))
        with open(tmp_path / "out" / shard, "rb") as f:
            restored = list(iter_samples(f, shard))
        assert [s.key for s in restored] == [s.key for s in originals]
        shard_rows = pq.read_table(archive / "shards" / shard.replace(".tar", ".parquet")).to_pylist()
        for row, before, after in zip(shard_rows, originals, restored, strict=True):
            if row["status"] == "passthrough":
                assert after.members == before.members, row["key"]
            else:
                image = row["image_name"]
                assert [m for m in after.members if m[0] != image] == \
                    [m for m in before.members if m[0] != image], row["key"]
    with open(tmp_path / "out" / "empty.tar", "rb") as f:
        assert list(iter_samples(f, "empty")) == []


@pytest.mark.parametrize("name", ["corrupt-header.tar", "truncated.tar", "zero-bytes.tar"])
def test_damaged_shards_fail_alone_and_are_named(tmp_path, capsys, name):
    src = tmp_path / "src"
    src.mkdir()
    data, expected = shard_cases()[name]
    (src / name).write_bytes(data)
    (src / "fine.tar").write_bytes(shard_cases()["empty.tar"][0])
    code = main(["compress", str(src), str(tmp_path / "arc"), "--codec", "jpeg", "-q"])
    assert code == EXIT_INCOMPLETE
    err = capsys.readouterr().err
    assert f"FAILED {name[:-4]}: {expected}" in err
    assert (tmp_path / "arc" / "shards" / "fine.parquet").exists()
    assert not (tmp_path / "arc" / "shards" / f"{name[:-4]}.parquet").exists()
