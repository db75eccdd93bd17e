"""Training straight from an archive: every sample exactly once across DataLoader workers and
distributed ranks (Ray Train's, or torchrun's); with ``drop_last``, the same number of samples
(hence of batches) on every one; ``shuffle`` draws another order each epoch, the same in every
process."""

import json
import operator
import sys
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from conftest import sample, write_shards

import pipeline.torch_dataset
from pipeline.compress import compress
from pipeline.shard_encode import Guard
from pipeline.torch_dataset import ArchiveDataset, split_even

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


@pytest.mark.parametrize("slots", [1, 2, 3, 4, 7, 40])
def test_split_even_gives_every_slot_the_same_count_and_each_sample_once(slots):
    counts = [((f"s{i}", rg), (7 * i + 3 * rg) % 11) for i in range(6) for rg in range(2)]
    total = sum(n for _, n in counts)
    cut = split_even(counts, slots)
    taken = [sum(n for *_, n in mine) for mine in cut]
    assert taken == [total // slots] * slots  # fewer than `slots` samples left out
    samples = [(shard, rg, i) for mine in cut for shard, rg, skip, n in mine
               for i in range(skip, skip + n)]
    assert len(samples) == len(set(samples)), "a sample went to two slots"
    assert all(i < dict(counts)[(shard, rg)] for shard, rg, i in samples)
    assert split_even(counts, slots) == cut


def test_split_even_is_this_exact_cut():
    """The cut is a pure function of the units' order and counts, which every process reads
    alike: pinned here, so a change to it (which would split processes built from different
    versions) is seen."""
    counts = [(("a", 0), 5), (("a", 1), 3), (("b", 0), 4), (("c", 0), 2)]
    assert split_even(counts, 2) == [[("a", 0, 0, 5), ("a", 1, 0, 2)],
                                     [("a", 1, 2, 1), ("b", 0, 0, 4), ("c", 0, 0, 2)]]
    assert split_even(counts, 3) == [[("a", 0, 0, 4)], [("a", 0, 4, 1), ("a", 1, 0, 3)],
                                     [("b", 0, 0, 4)]]


def test_split_even_refuses_more_slots_than_samples():
    with pytest.raises(ValueError, match=r"the epoch has 2 sample\(s\), fewer than the 3 slots"):
        split_even([(("a", 0), 1), (("a", 1), 0), (("b", 0), 1)], 3)


@pytest.fixture(scope="module")
def uneven(tmp_path_factory):
    """5 shards of 1, 3, 7, 4 and 6 samples."""
    base = tmp_path_factory.mktemp("uneven")
    sizes = [1, 3, 7, 4, 6]
    write_shards(base / "src", [[sample(f"s{i}-{j}", 10 * i + j) for j in range(n)]
                                for i, n in enumerate(sizes)])
    assert compress([str(base / "src")], str(base / "arc"), "jpeg", 80, progress=False,
                    guard=Guard(size=False)).ok
    return str(base / "arc"), sorted((f"shard-{i:06d}", f"s{i}-{j}")
                                     for i, n in enumerate(sizes) for j in range(n))


def _slots(monkeypatch, archive, world, workers, epoch=0, **options):
    """What each (torchrun rank, DataLoader worker) slot yields in ``epoch``: ranks from the
    environment torchrun sets, the worker from a stand-in for get_worker_info."""
    out = []
    for rank in range(world):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        dataset = ArchiveDataset(archive, transform=_key, **options)
        monkeypatch.delenv("RANK")
        monkeypatch.delenv("WORLD_SIZE")
        for worker in range(workers):
            monkeypatch.setattr(pipeline.torch_dataset, "get_worker_info",
                                lambda w=worker: SimpleNamespace(id=w, num_workers=workers))
            dataset.set_epoch(epoch)
            out.append(list(dataset))
    monkeypatch.setattr(pipeline.torch_dataset, "get_worker_info", lambda: None)
    return out


@pytest.mark.parametrize("shuffle", [False, True])
def test_torchrun_ranks_split_the_archive_and_shuffle_reorders_each_epoch(
        uneven, monkeypatch, shuffle):
    """Under torchrun (RANK/WORLD_SIZE, no Ray) every rank read the whole archive."""
    archive, everything = uneven
    for world, workers in ((2, 1), (2, 3), (3, 2)):
        slots = _slots(monkeypatch, archive, world, workers, shuffle=shuffle)
        assert sorted(s for slot in slots for s in slot) == everything, (world, workers)
        even = _slots(monkeypatch, archive, world, workers, drop_last=True, shuffle=shuffle)
        kept = [s for slot in even for s in slot]
        assert len({len(slot) for slot in even}) == 1 and len(kept) == len(set(kept))
        assert len(everything) - len(kept) < world * workers  # only the remainder is dropped
    epochs = [[s for slot in _slots(monkeypatch, archive, 2, 2, epoch=e, shuffle=shuffle)
               for s in slot] for e in (0, 1)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == everything
    assert (epochs[0] != epochs[1]) == shuffle


def _loaded(loader):
    return [tuple(s) for s in loader]  # (shard, key): the loader's conversion makes lists


def _loader(dataset, persistent):
    return torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2,
                                       persistent_workers=persistent,
                                       multiprocessing_context="fork")


def test_set_epoch_reaches_persistent_workers_and_a_peek_does_not_move_the_epoch(uneven):
    """An iteration counted an epoch even after set_epoch: a rank that peeked at a few samples
    split the next order while the others split this one (a reviewer's torchrun run: 7-26 of
    92 samples repeated per epoch). Persistent workers never saw set_epoch."""
    archive, everything = uneven
    dataset = ArchiveDataset(archive, transform=_key, shuffle=True, seed=7)
    first, second = list(dataset), list(dataset)  # never set: each iteration is an epoch
    assert sorted(first) == sorted(second) == everything and first != second
    dataset.set_epoch(1)
    next(iter(dataset))  # a peek
    assert list(dataset) == second and list(dataset) == second
    with pytest.raises(ValueError, match="epoch must be 0 or more"):
        dataset.set_epoch(-1)

    persistent = ArchiveDataset(archive, transform=_key, shuffle=True, seed=7)
    loader = _loader(persistent, True)
    orders = []
    for epoch in (0, 5):
        persistent.set_epoch(epoch)
        orders.append(_loaded(loader))
    fresh = ArchiveDataset(archive, transform=_key, shuffle=True, seed=7)
    fresh.set_epoch(5)
    assert orders[1] == _loaded(_loader(fresh, False)) != orders[0]
    assert sorted(orders[1]) == everything


def test_rank_and_world_size_can_be_given(uneven, monkeypatch):
    """Under torchrun every dataset took this rank's part: an evaluation on rank 0 alone, or
    shards split by the caller, lost the other ranks' samples."""
    archive, everything = uneven
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert len(list(ArchiveDataset(archive, transform=_key))) < len(everything)
    assert sorted(ArchiveDataset(archive, transform=_key, rank=0, world_size=1)) == everything
    halves = [list(ArchiveDataset(archive, transform=_key, rank=r, world_size=2)) for r in (0, 1)]
    assert sorted(halves[0] + halves[1]) == everything
    for bad, message in (({"rank": 0}, "together"), ({"rank": 2, "world_size": 2}, "not in 0..1")):
        with pytest.raises(ValueError, match=message):
            ArchiveDataset(archive, **bad)
    with pytest.raises(TypeError, match="shards must be a list or tuple"):
        ArchiveDataset(archive, shards={"shard-000000", "shard-000001"})


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
    gets the same count (20: 2 of the 42 are left out) and the same number of batches, and no
    sample comes twice."""
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
    assert len(samples[True][0]) == len(samples[True][1]) == 20  # 4 slots x 10 of the 42
    assert len(per_rank[True][0]) == len(per_rank[True][1]), "ranks ran different numbers of batches"
