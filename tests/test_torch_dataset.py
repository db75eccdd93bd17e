"""Training straight from an archive: every sample exactly once across DataLoader workers."""

import pytest
import torch
from conftest import sample, write_shards

from pipeline.compress import compress
from pipeline.shard_encode import Guard
from pipeline.torch_dataset import ArchiveDataset

pytestmark = pytest.mark.usefixtures("ray_local")


def _key(s):
    return (s["shard"], s["key"])


def _summary(s):  # module level: spawned DataLoader workers must unpickle the transform
    return s["shard"], s["key"], s["image"].shape


def test_two_dataloader_workers_see_every_sample_once(tmp_path):
    src = tmp_path / "src"
    write_shards(src, [[sample(f"s{i}-{j}", 10 * i + j) for j in range(5)] for i in range(3)])
    archive = str(tmp_path / "arc")
    assert compress([str(src)], archive, "jpeg", 80, progress=False, guard=Guard(size=False)).ok

    dataset = ArchiveDataset(archive, transform=_summary)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2,
                                         multiprocessing_context="spawn")
    seen = [(shard, key) for shard, key, shape in loader]
    assert sorted(seen) == sorted((f"shard-{i:06d}", f"s{i}-{j}") for i in range(3) for j in range(5))
    assert len(seen) == len(set(seen)) == 15

    only = [_key(s) for s in ArchiveDataset(archive, where="key == 's1-3'")]
    assert only == [("shard-000001", "s1-3")]
