"""Realistic decoders: another synthesis transform g_s for an existing learned codec.

A realistic decoder reads exactly the faithful decoder's bitstream (same g_a, hyper path and
integer tables, so the same symbols and the same content hash); only the float transform from
dequantized latents to pixels differs, trained for appearance (``jobs/train.py --gan``) rather
than for MSE. Realism is therefore a decode-time choice: one archive restores either way.

File format (safetensors)::

    tensors   g_s.*   the paired model's g_s state dict, same architecture (fp16 allowed),
                      plus g_s.refine.* where the decoder is widened (models.synthesis)
    metadata  decoder     "realistic"
              pairs_with  sha256 of the faithful weights file whose latents it decodes
              architecture, N, M   of the paired model (checked when present)
              refine      the residual blocks' spec, e.g. "1:2:192,3:2:96" (absent: none)
              ...         free-form provenance (steps, losses, data) from the caller

A g_s is only meaningful for the latents of the model it was trained against, so a file whose
``pairs_with`` is not the codec's weights sha256 is refused rather than decoded into garbage.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load, save

from models.codec import CodecError
from models.synthesis import RefinedSynthesis, format_spec

if TYPE_CHECKING:
    from models.learned import LearnedModel

FAITHFUL = "faithful"
REALISTIC = "realistic"
PREFIX = "g_s."


def _channels(g_s: torch.nn.Module) -> tuple[int, int]:
    """(N, M) read off the module: M latent channels in, N channels inside."""
    first = next(m for m in g_s.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
    return first.out_channels, first.in_channels


def export_realistic(g_s: torch.nn.Module, faithful_sha256: str, path: str | Path,
                     dtype: torch.dtype = torch.float16,
                     metadata: dict[str, str] | None = None) -> str:
    """Write a realistic-decoder file for the faithful weights ``faithful_sha256``; returns the
    file's sha256 (what the registry pins). Pass ``metadata={"architecture": model.architecture,
    ...}`` so the loader can also check the architecture name."""
    if len(faithful_sha256) != 64:
        raise ValueError("faithful_sha256 must be the hex sha256 of the faithful weights file")
    n, m = _channels(g_s)
    if isinstance(g_s, RefinedSynthesis):
        metadata = {**(metadata or {}), "refine": format_spec(g_s.spec)}
    tensors = {PREFIX + k: v.detach().to(dtype).contiguous().cpu()
               for k, v in g_s.state_dict().items()}
    meta = {"N": str(n), "M": str(m), **{k: str(v) for k, v in (metadata or {}).items()},
            "decoder": REALISTIC, "pairs_with": faithful_sha256}
    data = save(tensors, metadata=meta)
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_metadata(data: bytes) -> dict[str, str]:
    """The safetensors header's metadata, without loading any tensor."""
    n = int.from_bytes(data[:8], "little")
    try:
        return json.loads(data[8:8 + n]).get("__metadata__", {}) or {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"not a safetensors file: {exc}") from exc


def load_realistic(data: bytes, model: LearnedModel, sha256_pinned: str | None = None,
                   where: str = "realistic decoder") -> torch.nn.Module:
    """A g_s module (eval mode, on ``model``'s device) from a realistic-decoder file.

    Refuses (``CodecError``) a file whose sha256 is not the pinned one, that is not a realistic
    decoder, that pairs with other faithful weights, or whose shapes do not fit ``model``."""
    digest = hashlib.sha256(data).hexdigest()
    if sha256_pinned and digest != sha256_pinned:
        raise CodecError(f"{where}: sha256 {digest[:16]}... is not the pinned {sha256_pinned[:16]}...")
    meta = read_metadata(data)
    if meta.get("decoder") != REALISTIC:
        raise CodecError(f"{where} is not a realistic-decoder file (metadata decoder="
                         f"{meta.get('decoder')!r})")
    pairs_with = meta.get("pairs_with", "")
    if pairs_with != model.sha256:
        raise CodecError(
            f"{where} pairs with faithful weights {pairs_with[:16] or '(none)'}..., but this "
            f"codec's weights are {model.sha256[:16]}...; a synthesis transform only decodes the "
            "latents of the model it was trained against")
    for key, ours in (("N", model.N), ("M", model.M)):
        if key in meta and int(meta[key]) != ours:
            raise CodecError(f"{where} has {key}={meta[key]}, the codec has {key}={ours}")
    architecture = meta.get("architecture")
    if architecture and architecture != model.net.architecture:
        raise CodecError(f"{where} is for {architecture}, the codec is {model.net.architecture}")
    tensors = load(data)
    extra = sorted(k for k in tensors if not k.startswith(PREFIX))
    if extra:
        raise CodecError(f"{where} holds tensors other than g_s.*: {', '.join(extra[:5])}")
    try:  # RefinedSynthesis copies the faithful layers itself
        g_s = (RefinedSynthesis(model.net.g_s, meta["refine"]) if meta.get("refine")
               else copy.deepcopy(model.net.g_s))
    except ValueError as exc:
        raise CodecError(f"{where}: {exc}") from exc
    try:
        g_s.load_state_dict({k[len(PREFIX):]: v.float() for k, v in tensors.items()}, strict=True)
    except RuntimeError as exc:
        raise CodecError(f"{where} does not fit the codec's g_s: {exc}") from exc
    return g_s.eval().to(model.device)


def interpolate(faithful: torch.nn.Module, realistic: torch.nn.Module,
                realism: float) -> torch.nn.Module:
    """A g_s whose every parameter is ``faithful + realism * (realistic - faithful)``.

    The decode-time realism knob (Wang et al. 2019, "Deep network interpolation"): the
    realistic g_s is a fine-tune of the faithful one, so the weights in between give decoders
    in between (measured in benchmarks/perceptual/kodak/realism-knob.md). Computed in float32
    from the loaded weights (LearnedCodec uses the end points themselves at realism 0 and 1).
    """
    out = copy.deepcopy(realistic)
    # a widened decoder's blocks start from "last convolution zero": the faithful function
    ours = {**(realistic.identity_state() if isinstance(realistic, RefinedSynthesis) else {}),
            **faithful.state_dict()}
    with torch.no_grad():
        for key, value in out.state_dict().items():
            start = ours[key].to(value.device, value.dtype)
            value.copy_(start + realism * (value - start))
    return out.eval()


def load_realistic_file(path: str | Path, model: LearnedModel,
                        sha256_pinned: str | None = None) -> torch.nn.Module:
    return load_realistic(Path(path).read_bytes(), model, sha256_pinned, f"realistic decoder {path}")
