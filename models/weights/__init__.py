"""Shipped weights: ``registry.json`` pins each learned codec's file, sha256 and header code.

A weights file whose sha256 differs from the pinned one is refused at load. Model cards live in
the same JSON (architecture, steps, data and its terms, hardware, wall time).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent
REGISTRY = WEIGHTS_DIR / "registry.json"
# Extra directories with their own registry.json (os.pathsep-separated), e.g. a team's weights.
EXTRA_DIRS_ENV = "LATENTARC_WEIGHTS_PATH"


def weight_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get(EXTRA_DIRS_ENV, "").split(os.pathsep) if p]
    return [WEIGHTS_DIR, *extra]


def read_registry(directory: Path = WEIGHTS_DIR) -> dict[str, dict]:
    path = directory / REGISTRY.name
    return json.loads(path.read_text()) if path.exists() else {}


def register_weights(codec_id: str, file_name: str, sha256: str, code: int, card: dict,
                     directory: Path = WEIGHTS_DIR) -> None:
    registry = read_registry(directory)
    for other, entry in registry.items():
        if other != codec_id and entry["code"] == code:
            raise ValueError(f"code {code} already belongs to {other}")
    registry[codec_id] = {"file": file_name, "sha256": sha256, "code": code, "card": card}
    (directory / REGISTRY.name).write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")
