"""Train on a compressed archive without restoring it: a PyTorch ``IterableDataset``.

Samples stream out of the shard files and are decoded on the fly (each row checked like a
restore). The unit of work is one row group of one shard file; units are dealt over the slots
(distributed rank x DataLoader worker), so every sample is seen exactly once per epoch across all
of them (the compressed ones; passthrough ones too with ``include_passthrough``), or, with
``drop_last``, every slot yields the same number of samples.
"""

from __future__ import annotations

import os
import random
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.archive import passthrough_pixels, writable
from pipeline.archive_format import (
    STATUS_OK,
    FormatError,
    check_against_manifest,
    open_shard_file,
    read_manifest,
    reading,
    shard_url,
)
from pipeline.images import Unsupported
from pipeline.rows import RowDecoder, RowError, check_decoder_for
from pipeline.storage import StorageOptions, per_file
from pipeline.where import parse_where, row_group_may_match, row_matches

Unit = tuple[str, int]  # (shard, row group)


def _distributed_rank() -> tuple[int, int]:
    """(rank, world size) of this training process: Ray Train's context, else an initialised
    ``torch.distributed`` group, else torchrun's ``RANK``/``WORLD_SIZE``, else (0, 1). Only
    Ray Train was looked at: under torchrun every rank read the whole archive. Ray is asked
    only where it is loaded already (a Ray Train worker): importing it cost a DataLoader
    worker 5 s and 100 MB."""
    if "ray.train" in sys.modules:
        try:
            context = sys.modules["ray.train"].get_context()
            if context.get_world_size() > 1:
                return context.get_world_rank(), context.get_world_size()
        except Exception:  # not inside Ray Train
            pass
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except (KeyError, ValueError):
        return 0, 1
    return (rank, world) if 0 <= rank < world else (0, 1)


class ArchiveDataset(IterableDataset):
    """Yields ``{"shard", "key", "index", "image": uint8 HxWx3 numpy (writable), "members":
    {name: bytes}}``; ``index`` is the sample's position in its source shard.

    Passthrough samples (stored as they came: the size guard kept them, or the codec could not
    take them) are skipped unless ``include_passthrough``; then ``image`` holds their pixels
    where they are 8-bit RGB or grey, as ``Archive.get`` returns them, else None, and
    ``reason`` says why they were kept.
    ``decoder="realistic"`` trains on the codec's realistic decodes of the same rows.
    ``transform`` maps each sample dict to whatever the training loop wants; PyTorch's default
    collate cannot batch the raw dicts (members differ between samples, passthrough images may
    be None), so batch what a transform returns (e.g. ``to_tensor``).

    ``shuffle=True``: each epoch, the row groups are dealt in an order drawn from ``seed`` and
    the epoch, and each row group's samples come in an order drawn from them too (the same in
    every process, so the slots still split the epoch exactly). Call ``set_epoch(epoch)`` before
    each epoch, as with ``DistributedSampler``; it reaches persistent DataLoader workers too
    (shared memory). Without it, each iteration counts an epoch in its own process: workers
    that are not persistent are made afresh each epoch and repeat epoch 0's order, and an extra
    iteration on one rank (a peek at a few samples) would put that rank an epoch ahead of the
    others, so that they split different orders: samples lost and repeated.
    Without ``shuffle``, every epoch is in archive order.

    Units are whole row groups, dealt round-robin over the slots (distributed rank x
    DataLoader worker), so slots get unequal numbers of samples (none at all where there are
    fewer row groups than slots; ``units()`` lists them). Every sample is seen exactly once, but
    a DistributedDataParallel loop must then allow for uneven inputs
    (``torch.distributed.algorithms.Join``), or the ranks that run out first wait for ever on
    the others' gradients.

    ``drop_last=True`` (as in PyTorch's ``DistributedSampler``) makes every slot yield the same
    number of samples, so every rank runs the same number of batches: the samples each row
    group yields are counted first (one read of the ``status`` column, and of the ``where``
    columns, per row group, in ``__init__``), and the epoch's samples, in their order, are cut
    into equal runs, one per slot (a row group cut between two slots is read by both, each
    taking its part). Fewer samples than the epoch has slots are dropped (the remainder;
    with ``shuffle``, other ones each epoch). Fewer samples than slots is an error then, not
    an empty epoch, and so is a row group that yields fewer samples than counted (a shard
    file rewritten meanwhile): a slot that came up short would hang a DDP loop.

    ``skip_damaged=True``: a row that fails its checks (CRC, decode, content hash), or a row
    group that cannot be read, is left out with a warning naming its shard and key, instead of
    ending the epoch (where the other DDP ranks would wait for ever). Not with ``drop_last``,
    whose equal counts a left-out row would break.

    Ranks: from Ray Train, ``torch.distributed`` or torchrun's environment (``RANK``,
    ``WORLD_SIZE``), recorded when the dataset is made; ``rank=`` and ``world_size=`` say them
    instead (``world_size=1``: all of the archive in this process, e.g. an evaluation on rank 0
    only, or shards the caller has already split between ranks). A DataLoader worker started with spawn
    gets the rank of the process that pickled the dataset (``__getstate__``); one started with
    fork keeps the rank recorded in ``__init__``, so make the dataset in the training process
    (inside the Ray Train loop, after ``init_process_group``).

    Every shard file's footer is read once, in ``__init__`` (several at a time), and checked
    against the manifest; the workers carry the list of row groups along.

    There is no ``len()``: what a rank yields depends on how many DataLoader workers share its
    slots, which the dataset is not told. ``units()`` and, with ``drop_last``, ``counts`` (the
    samples each row group yields) give what a caller needs to compute it.
    """

    def __init__(self, url: str, storage: StorageOptions | None = None,
                 shards: Sequence[str] | None = None, where: str | None = None,
                 include_passthrough: bool = False,
                 transform: Callable[[dict[str, Any]], Any] | None = None,
                 decoder: str = "faithful", drop_last: bool = False, shuffle: bool = False,
                 seed: int = 0, skip_damaged: bool = False, rank: int | None = None,
                 world_size: int | None = None) -> None:
        self.url = url.rstrip("/")
        self.storage = storage or StorageOptions()
        manifest = read_manifest(self.url, self.storage)
        if decoder != "faithful":
            check_decoder_for(manifest["codec"], decoder)  # refuse now, not in a worker
        self.decoder = decoder
        if isinstance(shards, str):  # iterated, it would be a list of characters
            raise TypeError(f"shards must be a list of shard names, e.g. [{shards!r}]")
        if isinstance(shards, (set, frozenset, dict)):  # an order that differs between processes
            raise TypeError("shards must be a list or tuple: every process must deal the units "
                            "in the same order, and a set's order differs between processes")
        if shards is not None:
            shards = list(shards)
        if shards is not None and not shards:  # not "every shard": an empty split is a mistake
            raise ValueError("shards=[] selects nothing; pass None for every shard")
        if shards is not None and len(set(shards)) < len(shards):  # a split built by concatenation
            twice = sorted({s for s in shards if shards.count(s) > 1})
            raise ValueError(f"shards lists {', '.join(twice)} more than once: its samples would "
                             "be seen more than once per epoch")
        # samples each shard file must hold, as verify checks: a file copied over from another
        # shard, or left by another run, would otherwise yield other samples under this name
        self.expected = {e["shard"]: e["samples"] for e in manifest["shards"]}
        unknown = [s for s in shards or [] if s not in self.expected]
        if unknown:
            raise ValueError(f"the archive has no shard(s) {', '.join(unknown)}; it has "
                             f"{len(self.expected)} shards")
        if drop_last and skip_damaged:
            raise ValueError("skip_damaged cannot be combined with drop_last: a row left out "
                             "would leave its slot short of the count every slot must yield")
        self.shards = shards if shards is not None else list(self.expected)
        self.where = where
        self.include_passthrough = include_passthrough
        self.transform = transform
        if where is not None:  # "" too: it must not mean "every row"
            parse_where(where)  # refuse a bad filter now, not in a worker
        self.drop_last = drop_last
        self.shuffle, self.seed, self.skip_damaged = shuffle, seed, skip_damaged
        # set_epoch's epoch (-1: never called), in shared memory so that it reaches persistent
        # DataLoader workers (fork and spawn carry the storage across); else iterations count
        self._epoch_given = torch.full((), -1, dtype=torch.int64).share_memory_()
        self._iterated = 0
        if (rank is None) != (world_size is None):
            raise ValueError("give rank and world_size together, or neither")
        if world_size is not None and not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1} (world_size {world_size})")
        self._given_rank = None if world_size is None else (rank, world_size)
        self._rank = self._given_rank or _distributed_rank()  # see my_units
        # row groups (and, for drop_last, the samples each yields): read once here, so that
        # DataLoader workers inherit them instead of each opening every shard file each epoch
        self._units, self.counts = self._scan()

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the iterations from now on (the shuffle's order depends on it); every
        rank must give the same one."""
        if epoch < 0:
            raise ValueError(f"epoch must be 0 or more, not {epoch}")
        self._epoch_given.fill_(epoch)

    def _next_epoch(self) -> int:
        if (epoch := int(self._epoch_given)) >= 0:
            return epoch
        self._iterated += 1
        return self._iterated - 1

    def units(self) -> list[Unit]:
        """(shard, row group) pairs, in archive order: the unit of work dealt to workers."""
        return list(self._units)

    def _reading(self, shard: str, rg: int | None = None):
        """Errors while reading name the shard file (and row group): see ``reading``."""
        at = f"row group {rg} of " if rg is not None else ""
        return reading(f"shard {shard} ({at}{shard_url(self.url, shard)})")

    def _check(self, shard: str, parquet: Any) -> None:
        check_against_manifest(parquet, shard, self.expected[shard], f"{self.url} shard {shard}")

    def _wanted(self, row: dict[str, Any], where: list | None) -> bool:
        return ((not where or row_matches(where, row))
                and (row["status"] == STATUS_OK or self.include_passthrough))

    def _scan(self) -> tuple[list[Unit], dict[Unit, int] | None]:
        """Every shard's row groups, and with ``drop_last`` the samples each yields (from the
        columns the filters read: no bitstreams), several shard files at a time."""
        where = parse_where(self.where) if self.where else None

        def scan(shard: str) -> tuple[list[Unit], dict[Unit, int]]:
            counts = {}
            with self._reading(shard):
                f, parquet = open_shard_file(self.url, shard, self.storage)
                with f:
                    self._check(shard, parquet)
                    units = [(shard, rg) for rg in range(parquet.num_row_groups)]
                    if not self.drop_last:
                        return units, counts
                    present = set(parquet.schema_arrow.names)
                    columns = [c for c in dict.fromkeys(["status", *(c.column for c in where or [])])
                               if c in present]
                    for rg in range(parquet.num_row_groups):
                        if where and not row_group_may_match(where, parquet.metadata.row_group(rg)):
                            counts[(shard, rg)] = 0
                            continue
                        rows = parquet.read_row_group(rg, columns=columns).to_pylist()
                        counts[(shard, rg)] = sum(self._wanted(r, where) for r in rows)
            return units, counts

        units, counts = [], {}
        for mine, counted in per_file(scan, self.shards):
            units += mine
            counts.update(counted)
        return units, (counts if self.drop_last else None)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for a DataLoader worker (spawn): the worker process is outside the training
        context, so it takes the rank of the process that made it. (``set_epoch``'s epoch is
        in shared memory: DataLoader's pickler shares it, where plain pickle copies it.)"""
        state = self.__dict__.copy()
        rank = _distributed_rank()
        if rank[1] > 1 and self._given_rank is None:
            state["_rank"] = rank
        return state

    def my_units(self, epoch: int = 0) -> list[tuple[str, int, int, int | None]]:
        """This slot's (shard, row group, samples to skip, samples to take or None for all)
        in ``epoch``."""
        rank, world = self._given_rank or _distributed_rank()
        if world == 1 and self._given_rank is None:
            rank, world = self._rank  # a DataLoader worker, or made in the trainer and carried out
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slot, slots = rank * workers + worker, world * workers
        order = list(self._units)
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        if self.counts is None:
            return [(*u, 0, None) for i, u in enumerate(order) if i % slots == slot]
        return split_even([(u, self.counts[u]) for u in order], slots)[slot]

    def __iter__(self) -> Iterator[Any]:
        epoch = self._next_epoch()
        decoder = RowDecoder(self.decoder)
        where = parse_where(self.where) if self.where else None
        for shard, rg, skip, take in self.my_units(epoch):
            try:
                with self._reading(shard, rg):
                    f, parquet = open_shard_file(self.url, shard, self.storage)
                    with f:
                        self._check(shard, parquet)
                        if where and not row_group_may_match(where, parquet.metadata.row_group(rg)):
                            continue
                        rows = parquet.read_row_group(rg).to_pylist()
            except (FormatError, OSError, pa.ArrowException) as exc:
                if not self.skip_damaged:
                    raise
                warnings.warn(f"ArchiveDataset: skipped row group {rg} of shard {shard}: {exc}",
                              stacklevel=2)
                continue
            rows = [r for r in rows if self._wanted(r, where)]
            if self.shuffle:  # the same order in every slot that takes part of this row group
                random.Random(f"{self.seed}:{epoch}:{shard}:{rg}").shuffle(rows)
            mine = rows[skip:] if take is None else rows[skip:skip + take]
            if take is not None and len(mine) < take:
                raise ValueError(f"drop_last: {shard} row group {rg} yielded {len(rows)} "
                                 f"sample(s), {skip + take} or more were counted when the "
                                 "dataset was made; was the archive rewritten meanwhile?")
            for row in mine:
                try:
                    decoded = decoder.check(row)
                except RowError as exc:
                    if not self.skip_damaged:
                        raise
                    warnings.warn(f"ArchiveDataset: skipped {exc}", stacklevel=2)
                    continue
                image = decoded.image if decoded is not None else _passthrough_image(row)
                sample = {
                    "shard": shard,
                    "key": row["key"],
                    "index": row["index"],  # tells apart the samples of a key that repeats
                    "image": writable(image) if image is not None else None,
                    "members": {m["name"]: m["data"] for m in row["members"]},
                }
                if row["status"] != STATUS_OK:
                    sample["reason"] = row["reason"]
                yield self.transform(sample) if self.transform else sample


def _passthrough_image(row: dict[str, Any]) -> np.ndarray | None:
    """Pixels of a passthrough sample where they are 8-bit RGB or grey (an image the size
    guard kept, say), as ``Archive.get`` returns them; None where there are none to give."""
    try:
        return passthrough_pixels(row)
    except Unsupported:
        return None


def split_even(counts: list[tuple[Unit, int]],
               slots: int) -> list[list[tuple[str, int, int, int]]]:
    """The epoch's samples (``counts``: units in the epoch's order, with the samples each yields)
    cut into ``slots`` equal runs, in that order: each slot's (shard, row group, samples to skip,
    samples to take). A unit cut between two slots is in both; fewer than ``slots`` samples (the
    remainder) are left out. The same cut in every process: it depends on nothing else."""
    total = sum(n for _, n in counts)
    per = total // slots
    if per == 0:
        raise ValueError(f"drop_last: the epoch has {total} sample(s), fewer than the {slots} "
                         "slots (distributed ranks x DataLoader workers), so every slot would "
                         "yield nothing; use fewer workers")
    out: list[list[tuple[str, int, int, int]]] = [[] for _ in range(slots)]
    slot, room = 0, per
    for (shard, rg), n in counts:
        start = 0
        while start < n and slot < slots:
            take = min(room, n - start)
            out[slot].append((shard, rg, start, take))
            start, room = start + take, room - take
            if room == 0:
                slot, room = slot + 1, per
    return out


def to_tensor(sample: dict[str, Any]) -> torch.Tensor:
    """A ready-made transform: the image as float CHW in [0, 1]. A passthrough sample without
    RGB pixels (``include_passthrough``) is an error naming it: there is no tensor to give."""
    image: np.ndarray | None = sample["image"]
    if image is None:
        raise ValueError(f"to_tensor: sample {sample['key']!r} of shard {sample['shard']} has no "
                         f"RGB pixels: it is stored as it came ({sample.get('reason')}); use "
                         "include_passthrough=False, or a transform that handles image None")
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
