"""Shipped weights: ``registry.json`` pins each learned codec's file, sha256 and header code.

A weights file whose sha256 differs from the pinned one is refused at load. Model cards live in
the same JSON (architecture, steps, data and its terms, hardware, wall time). An entry may also
pin extra decoders of the same bitstream (``"decoders": {"realistic": {"file", "sha256",
"card"}}``, see ``models.realistic``), added with ``register_decoder``.
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


def _write_registry(registry: dict[str, dict], directory: Path) -> None:
    (directory / REGISTRY.name).write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")


def register_weights(codec_id: str, file_name: str, sha256: str, code: int, card: dict,
                     directory: Path = WEIGHTS_DIR, entry_class: str | None = None) -> None:
    """Add or replace a codec's faithful weights. Its extra decoders are kept only while the
    weights stay the same: a realistic g_s decodes the latents of the weights it pairs with.
    ``entry_class`` names the codec class for entries that are not hyperprior codecs
    (``"gan-latent"``; see ``models.registry``)."""
    registry = read_registry(directory)
    for other, entry in registry.items():
        if other != codec_id and entry["code"] == code:
            raise ValueError(f"code {code} already belongs to {other}")
    new = {"file": file_name, "sha256": sha256, "code": code, "card": card}
    if entry_class is not None:
        new["class"] = entry_class
    old = registry.get(codec_id, {})
    if old.get("decoders") and old.get("sha256") == sha256:
        new["decoders"] = old["decoders"]
    registry[codec_id] = new
    _write_registry(registry, directory)


def register_decoder(codec_id: str, name: str, file_name: str, sha256: str, card: dict,
                     directory: Path = WEIGHTS_DIR) -> None:
    """Add (or replace) an alternative decoder of a registered codec, e.g. ``"realistic"``:
    ``registry[codec_id]["decoders"][name] = {"file", "sha256", "card"}``. The file lives in the
    same directory as the codec's weights; its pairing is checked when it is loaded."""
    registry = read_registry(directory)
    if codec_id not in registry:
        raise ValueError(f"no codec {codec_id!r} in {directory / REGISTRY.name}")
    if name == "faithful" or not name.replace("-", "").isalnum():
        raise ValueError(f"decoder name {name!r} is reserved or not a plain word")
    registry[codec_id].setdefault("decoders", {})[name] = {
        "file": file_name, "sha256": sha256, "card": card}
    _write_registry(registry, directory)
