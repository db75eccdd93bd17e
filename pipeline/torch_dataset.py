"""Train on a compressed archive without restoring it: a PyTorch ``IterableDataset``.

Samples stream out of the shard files and are decoded on the fly (each row checked like a
restore). The unit of work is one row group of one shard file; units are dealt over the slots
(Ray Train rank x DataLoader worker), so every sample is seen exactly once per epoch across all
of them (the compressed ones; passthrough ones too with ``include_passthrough``), or, with
``drop_last``, every slot yields the same number of samples.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.archive import passthrough_pixels, writable
from pipeline.archive_format import (
    STATUS_OK,
    check_against_manifest,
    open_shard_file,
    read_manifest,
    reading,
    shard_url,
)
from pipeline.images import Unsupported
from pipeline.rows import RowDecoder, check_decoder_for
from pipeline.storage import StorageOptions
from pipeline.where import parse_where, row_group_may_match, row_matches


def _ray_train_rank() -> tuple[int, int]:
    """(rank, world size) inside a Ray Train worker, else (0, 1)."""
    try:
        import ray.train

        context = ray.train.get_context()
        return context.get_world_rank(), context.get_world_size()
    except Exception:  # not inside Ray Train
        return 0, 1


class ArchiveDataset(IterableDataset):
    """Yields ``{"shard", "key", "index", "image": uint8 HxWx3 numpy (writable), "members":
    {name: bytes}}``; ``index`` is the sample's position in its source shard.

    Passthrough samples (stored as they came: the size guard kept them, or the codec could not
    take them) are skipped unless ``include_passthrough``; then ``image`` holds their pixels
    where they are 8-bit RGB or grey, as ``Archive.get`` returns them, else None, and
    ``reason`` says why they were kept.
    ``decoder="realistic"`` trains on the codec's realistic decodes of the same rows.
    ``transform`` maps each sample dict to whatever the training loop wants.

    Units are whole row groups, dealt round-robin over the slots (Ray Train rank x DataLoader
    worker), so slots get unequal numbers of samples (none at all where there are fewer row
    groups than slots; ``units()`` lists them). Every sample is seen exactly once, but a
    DistributedDataParallel loop must then allow for uneven inputs
    (``torch.distributed.algorithms.Join``), or the ranks that run out first wait for ever on
    the others' gradients.

    ``drop_last=True`` (as in PyTorch's ``DistributedSampler``) makes every slot yield the same
    number of samples, so every rank runs the same number of batches: the samples each row
    group yields are counted first (one read of the ``status`` column, and of the ``where``
    columns, per row group, in ``__init__``), the units are dealt so that slots are as even as
    whole row groups allow, and each slot stops at the smallest slot's count. The rest of the
    epoch's samples is dropped, at most about one row group per slot, and it is the same
    samples every epoch (the deal is fixed; ``DistributedSampler`` reshuffles with
    ``set_epoch``, this does not). Fewer row groups that yield samples than slots is an error
    then, not an empty epoch, and so is a row group that yields fewer samples than counted
    (a shard file rewritten meanwhile): a slot that came up short would hang a DDP loop.

    Ranks: a DataLoader worker started with spawn gets the rank of the process that pickled
    the dataset (``__getstate__``); one started with fork keeps the rank recorded in
    ``__init__``, so make the dataset inside the Ray Train loop.
    """

    def __init__(self, url: str, storage: StorageOptions | None = None,
                 shards: list[str] | None = None, where: str | None = None,
                 include_passthrough: bool = False,
                 transform: Callable[[dict[str, Any]], Any] | None = None,
                 decoder: str = "faithful", drop_last: bool = False) -> None:
        self.url = url.rstrip("/")
        self.storage = storage or StorageOptions()
        manifest = read_manifest(self.url, self.storage)
        if decoder != "faithful":
            check_decoder_for(manifest["codec"], decoder)  # refuse now, not in a worker
        self.decoder = decoder
        if isinstance(shards, str):  # iterated, it would be a list of characters
            raise TypeError(f"shards must be a list of shard names, e.g. [{shards!r}]")
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
        self.shards = shards if shards is not None else list(self.expected)
        self.where = where
        self.include_passthrough = include_passthrough
        self.transform = transform
        if where is not None:  # "" too: it must not mean "every row"
            parse_where(where)  # refuse a bad filter now, not in a worker
        self.drop_last = drop_last
        self._rank = _ray_train_rank()  # see my_units
        # samples each unit yields: counted once here, so DataLoader workers inherit them
        self.counts = self._count_units() if drop_last else None

    def units(self) -> list[tuple[str, int]]:
        """(shard, row group) pairs: the unit of work that is dealt to workers."""
        out = []
        for shard in self.shards:
            with self._reading(shard):
                f, parquet = open_shard_file(self.url, shard, self.storage)
                with f:
                    self._check(shard, parquet)
                    out += [(shard, rg) for rg in range(parquet.num_row_groups)]
        return out

    def _reading(self, shard: str, rg: int | None = None):
        """Errors while reading name the shard file (and row group): see ``reading``."""
        at = f"row group {rg} of " if rg is not None else ""
        return reading(f"shard {shard} ({at}{shard_url(self.url, shard)})")

    def _check(self, shard: str, parquet: Any) -> None:
        check_against_manifest(parquet, shard, self.expected[shard], f"{self.url} shard {shard}")

    def _wanted(self, row: dict[str, Any], where: list | None) -> bool:
        return ((not where or row_matches(where, row))
                and (row["status"] == STATUS_OK or self.include_passthrough))

    def _count_units(self) -> dict[tuple[str, int], int]:
        """Samples each unit yields, from the columns the filters read (no bitstreams)."""
        where = parse_where(self.where) if self.where else None
        counts = {}
        for shard in self.shards:
            with self._reading(shard):
                f, parquet = open_shard_file(self.url, shard, self.storage)
                with f:
                    self._check(shard, parquet)
                    present = set(parquet.schema_arrow.names)
                    columns = [c for c in dict.fromkeys(["status", *(c.column for c in where or [])])
                               if c in present]
                    for rg in range(parquet.num_row_groups):
                        if where and not row_group_may_match(where, parquet.metadata.row_group(rg)):
                            counts[(shard, rg)] = 0
                            continue
                        rows = parquet.read_row_group(rg, columns=columns).to_pylist()
                        counts[(shard, rg)] = sum(self._wanted(r, where) for r in rows)
        return counts

    def __getstate__(self) -> dict[str, Any]:
        """Pickled for a DataLoader worker (spawn): the worker process is outside Ray Train's
        context, so it takes the rank of the process that made it."""
        state = self.__dict__.copy()
        rank = _ray_train_rank()
        if rank[1] > 1:
            state["_rank"] = rank
        return state

    def my_units(self) -> list[tuple[str, int, int | None]]:
        """This slot's (shard, row group, most samples to take from it, or None for all)."""
        rank, world = _ray_train_rank()
        if world == 1:  # a DataLoader worker process, or made inside Ray Train and carried out
            rank, world = self._rank
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slot, slots = rank * workers + worker, world * workers
        if self.counts is None:
            return [(*u, None) for i, u in enumerate(self.units()) if i % slots == slot]
        return even_deal(self.counts, slots)[slot]

    def __iter__(self) -> Iterator[Any]:
        decoder = RowDecoder(self.decoder)
        where = parse_where(self.where) if self.where else None
        for shard, rg, limit in self.my_units():
            if limit == 0:
                continue
            with self._reading(shard, rg):
                f, parquet = open_shard_file(self.url, shard, self.storage)
                with f:
                    if where and not row_group_may_match(where, parquet.metadata.row_group(rg)):
                        continue
                    rows = parquet.read_row_group(rg).to_pylist()
            taken = 0
            for row in rows:
                if not self._wanted(row, where):
                    continue
                if limit is not None and taken == limit:
                    break
                taken += 1
                decoded = decoder.check(row)
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
            if limit is not None and taken < limit:
                raise ValueError(f"drop_last: {shard} row group {rg} yielded {taken} sample(s), "
                                 f"{limit} were counted when the dataset was made; was the "
                                 "archive rewritten meanwhile?")


def _passthrough_image(row: dict[str, Any]) -> np.ndarray | None:
    """Pixels of a passthrough sample where they are 8-bit RGB or grey (an image the size
    guard kept, say), as ``Archive.get`` returns them; None where there are none to give."""
    try:
        return passthrough_pixels(row)
    except Unsupported:
        return None


def even_deal(counts: dict[tuple[str, int], int],
              slots: int) -> list[list[tuple[str, int, int | None]]]:
    """Units dealt to ``slots`` so that every slot yields the same number of samples: each unit,
    largest first, goes to the slot with the fewest samples so far (the same deal in every
    process: ties go by archive order and slot number); each slot keeps its units in archive
    order and takes from them only up to the smallest slot's total."""
    order = {unit: i for i, unit in enumerate(counts)}
    totals = [0] * slots
    dealt: list[list[tuple[str, int]]] = [[] for _ in range(slots)]
    for unit in sorted(counts, key=lambda u: -counts[u]):  # stable: archive order among equals
        if counts[unit] == 0:
            continue
        slot = min(range(slots), key=lambda i: totals[i])
        dealt[slot].append(unit)
        totals[slot] += counts[unit]
    target = min(totals)
    if target == 0:
        raise ValueError(f"drop_last: {sum(c > 0 for c in counts.values())} row group(s) hold "
                         f"samples, fewer than the {slots} slots (Ray Train ranks x DataLoader "
                         "workers), so every slot would yield nothing; use fewer workers")
    out = []
    for units in dealt:
        left, mine = target, []
        for unit in sorted(units, key=order.__getitem__):
            take = min(left, counts[unit])
            mine.append((*unit, take))
            left -= take
        out.append(mine)
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
