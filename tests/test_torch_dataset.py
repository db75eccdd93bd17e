"""Training straight from an archive: every sample exactly once across DataLoader workers and
Ray Train ranks; with ``drop_last``, the same number of samples (hence of batches) on every one."""

import json
import operator
import sys
from collections import Counter

import pytest
import torch
from conftest import sample, write_shards

from pipeline.compress import compress
from pipeline.shard_encode import Guard
from pipeline.torch_dataset import ArchiveDataset, even_deal

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


def test_passthrough_samples_come_with_their_pixels_where_they_have_some(small_shards, tmp_path):
    """With include_passthrough, an RGB image the size guard kept came with image=None (so a
    transform such as to_tensor failed), though Archive.get returns its pixels."""
    from pipeline.archive import Archive

    archive = str(tmp_path / "arc")
    assert compress([str(small_shards)], archive, "png", progress=False).ok  # guard keeps PNGs
    samples = {s["key"]: s for s in ArchiveDataset(archive, include_passthrough=True)}
    assert "not smaller" in samples["a0"]["reason"]
    assert (samples["a0"]["image"] == Archive.open(archive).get("a0")).all()
    assert samples["bad"]["image"] is None and "does not decode" in samples["bad"]["reason"]
    assert "bad" not in {s["key"] for s in ArchiveDataset(archive)}


@pytest.mark.parametrize("slots", [1, 2, 3, 4, 7])
def test_even_deal_gives_every_slot_the_same_count_from_whole_units(slots):
    counts = {(f"s{i}", rg): (7 * i + 3 * rg) % 11 for i in range(6) for rg in range(2)}
    deal = even_deal(counts, slots)
    taken = [sum(n for _, _, n in units) for units in deal]
    assert len(set(taken)) == 1, taken
    units = [(shard, rg) for mine in deal for shard, rg, _ in mine]
    assert len(units) == len(set(units)), "a unit went to two slots"
    assert all(0 < n <= counts[(shard, rg)] for mine in deal for shard, rg, n in mine)
    # largest-first to the emptiest slot: each slot is within one unit of an even share
    assert taken[0] >= sum(counts.values()) / slots - max(counts.values())
    assert even_deal(counts, slots) == deal


def test_even_deal_is_this_exact_deal():
    """The deal is a pure function of the counts, which every process reads alike: pinned here,
    so a change to it (which would split processes built from different versions) is seen."""
    counts = {("a", 0): 5, ("a", 1): 3, ("b", 0): 4, ("c", 0): 2}
    assert even_deal(counts, 2) == [[("a", 0, 5), ("c", 0, 2)], [("a", 1, 3), ("b", 0, 4)]]
    assert even_deal(counts, 3) == [[("a", 0, 4)], [("b", 0, 4)], [("a", 1, 3), ("c", 0, 1)]]


def test_even_deal_refuses_more_slots_than_units_with_samples():
    with pytest.raises(ValueError, match="2 row group.*fewer than the 3 slots"):
        even_deal({("a", 0): 5, ("a", 1): 0, ("b", 0): 4}, 3)


def _ranks_loop(config):
    """One Ray Train rank: read the archive through 2 DataLoader workers, in batches of 2."""
    from pathlib import Path

    import ray.train
    import torch

    from pipeline.torch_dataset import ArchiveDataset

    rank = ray.train.get_context().get_world_rank()
    for drop_last in (False, True):
        dataset = ArchiveDataset(config["archive"], transform=operator.itemgetter("shard", "key"),
                                 drop_last=drop_last)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2,
                                             multiprocessing_context="spawn",
                                             persistent_workers=False)
        batches = [list(zip(*batch, strict=True)) for batch in loader]
        Path(config["out"], f"{drop_last}-{rank}.json").write_text(json.dumps(batches))


@pytest.mark.slow
def test_ray_train_ranks_with_dataloader_workers(tmp_path):
    """Two Ray Train ranks x two DataLoader workers over 7 shards of 3..9 samples. Without
    drop_last every sample comes exactly once and the ranks get 22 and 20; with it, every rank
    gets the same count and the same number of batches, and no sample comes twice."""
    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    sizes = [3, 4, 5, 6, 7, 8, 9]
    src = tmp_path / "src"
    write_shards(src, [[sample(f"s{i}-{j}", 10 * i + j) for j in range(n)]
                       for i, n in enumerate(sizes)])
    archive = str(tmp_path / "arc")
    assert compress([str(src)], archive, "jpeg", 80, progress=False, guard=Guard(size=False)).ok
    everything = sorted([f"shard-{i:06d}", f"s{i}-{j}"] for i, n in enumerate(sizes) for j in range(n))
    out = tmp_path / "seen"
    out.mkdir()
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the loop runs in Ray workers
    try:
        TorchTrainer(_ranks_loop, train_loop_config={"archive": archive, "out": str(out)},
                     scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
                     run_config=RunConfig(name="ranks", storage_path=str(tmp_path / "ray"))).fit()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    per_rank = {d: [json.loads((out / f"{d}-{r}.json").read_text()) for r in (0, 1)]
                for d in (False, True)}
    samples = {d: [[s for batch in b for s in batch] for b in ranks] for d, ranks in per_rank.items()}
    assert sorted(s for rank in samples[False] for s in rank) == everything
    assert sorted(len(rank) for rank in samples[False]) == [20, 22]  # whole row groups, dealt round-robin
    kept = [s for rank in samples[True] for s in rank]
    assert not [s for s, n in Counter(map(tuple, kept)).items() if n > 1]
    assert set(map(tuple, kept)) <= set(map(tuple, everything))
    assert len(samples[True][0]) == len(samples[True][1]) == 18  # 4 slots x 9: the smallest slot
    assert len(per_rank[True][0]) == len(per_rank[True][1]), "ranks ran different numbers of batches"
