"""One progress line per finished shard: readable in `ray job submit` logs and on a terminal."""

from __future__ import annotations

import sys
import time
from typing import IO


def _mb(n: float) -> str:
    """MB to one decimal, or kB below 0.1 MB: "0.0 MB out, ratio 8.6x" could not be read."""
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def failed_line(shard: str, error: str) -> str:
    """``FAILED shard: error``. Errors name their shard first ("shard S: ..."); said once."""
    return f"FAILED {shard}: {error.removeprefix(f'shard {shard}: ')}"


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Counts shards, images and bytes; prints ``[done/total shards] ...`` lines."""

    def __init__(self, verb: str, total: int, enabled: bool = True, out: IO[str] | None = None):
        self.verb = verb
        self.total = total
        self.enabled = enabled
        self.out = out or sys.stderr
        self.done = 0
        self.images = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.started = time.monotonic()

    def start(self) -> None:
        """The work starts now (the first actor is ready): rates and the ETA count from here,
        not from Ray's start-up and the codec's loading, which made the first ETAs several
        times too long."""
        self.started = time.monotonic()

    def update(self, shard: str, images: int = 0, bytes_in: int = 0, bytes_out: int = 0,
               error: str | None = None) -> None:
        self.done += 1
        self.images += images
        self.bytes_in += bytes_in
        self.bytes_out += bytes_out
        if not self.enabled:
            return
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.images / elapsed
        remaining = elapsed / self.done * (self.total - self.done)
        volume = "".join(
            f", {_mb(n)} {label}" for n, label in ((self.bytes_in, "in"), (self.bytes_out, "out")) if n
        )
        ratio = f", ratio {self.bytes_in / self.bytes_out:.1f}x" if self.bytes_in and self.bytes_out else ""
        status = failed_line(shard, error) if error else shard
        print(
            f"[{self.verb} {self.done}/{self.total} shards] {self.images} images, "
            f"{rate:.1f} img/s{volume}{ratio}, ETA {_eta(remaining)} | {status}",
            file=self.out,
            flush=True,
        )

    def note(self, message: str) -> None:
        if self.enabled:
            print(message, file=self.out, flush=True)
