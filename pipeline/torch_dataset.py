"""Train on a compressed archive without restoring it: a PyTorch ``IterableDataset``.

Samples stream out of the shard files and are decoded on the fly (each row checked like a
restore). The unit of work is one row group of one shard file; units are dealt round-robin
first over Ray Train workers (when running inside one) and then over DataLoader workers, so
every sample is seen exactly once per epoch across all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.archive_format import STATUS_OK, open_shard_file, read_manifest
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
    """Yields ``{"shard", "key", "image": uint8 HxWx3 numpy, "members": {name: bytes}}``.

    Passthrough samples are skipped unless ``include_passthrough`` (their ``image`` is None).
    ``decoder="realistic"`` trains on the codec's realistic decodes of the same rows.
    ``transform`` maps each sample dict to whatever the training loop wants.

    Units are whole row groups, so ranks and workers get unequal numbers of samples (none at
    all where there are fewer row groups than slots; ``units()`` lists them). Every sample is
    still seen exactly once, but a DistributedDataParallel loop must allow for uneven inputs
    (``torch.distributed.algorithms.Join``, or a fixed number of steps per epoch), or the
    ranks that run out first wait for ever on the others' gradients.
    """

    def __init__(self, url: str, storage: StorageOptions | None = None,
                 shards: list[str] | None = None, where: str | None = None,
                 include_passthrough: bool = False,
                 transform: Callable[[dict[str, Any]], Any] | None = None,
                 decoder: str = "faithful") -> None:
        self.url = url.rstrip("/")
        self.storage = storage or StorageOptions()
        manifest = read_manifest(self.url, self.storage)
        if decoder != "faithful":
            check_decoder_for(manifest["codec"], decoder)  # refuse now, not in a worker
        self.decoder = decoder
        self.shards = shards or [e["shard"] for e in manifest["shards"]]
        self.where = where
        self.include_passthrough = include_passthrough
        self.transform = transform
        if where:
            parse_where(where)  # refuse a bad filter now, not in a worker

    def units(self) -> list[tuple[str, int]]:
        """(shard, row group) pairs: the unit of work that is dealt to workers."""
        out = []
        for shard in self.shards:
            f, parquet = open_shard_file(self.url, shard, self.storage)
            with f:
                out += [(shard, rg) for rg in range(parquet.num_row_groups)]
        return out

    def my_units(self) -> list[tuple[str, int]]:
        rank, world = _ray_train_rank()
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        slot, slots = rank * workers + worker, world * workers
        return [u for i, u in enumerate(self.units()) if i % slots == slot]

    def __iter__(self) -> Iterator[Any]:
        decoder = RowDecoder(self.decoder)
        where = parse_where(self.where) if self.where else None
        for shard, rg in self.my_units():
            f, parquet = open_shard_file(self.url, shard, self.storage)
            with f:
                if where and not row_group_may_match(where, parquet.metadata.row_group(rg)):
                    continue
                rows = parquet.read_row_group(rg).to_pylist()
            for row in rows:
                if where and not row_matches(where, row):
                    continue
                if row["status"] != STATUS_OK and not self.include_passthrough:
                    continue
                decoded = decoder.check(row)
                sample = {
                    "shard": shard,
                    "key": row["key"],
                    "image": decoded.image if decoded is not None else None,
                    "members": {m["name"]: m["data"] for m in row["members"]},
                }
                yield self.transform(sample) if self.transform else sample


def to_tensor(sample: dict[str, Any]) -> torch.Tensor:
    """A ready-made transform: the image as float CHW in [0, 1]."""
    image: np.ndarray = sample["image"]
    return torch.from_numpy(image.copy()).permute(2, 0, 1).float().div_(255.0)
