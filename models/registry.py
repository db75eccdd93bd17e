"""Codec registry: the one place that maps codec ids and header codes to implementations.

The pipeline knows codecs only through ``get_codec`` and ``list_codecs``. Codes are written into
every bitstream, so a code, once released, is never reused for another codec.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

from models.classical import CLASSICAL_CODECS
from models.codec import Codec, CodecError, check_decoder
from models.jpeg_lossless import JpegLosslessCodec

_CODECS: dict[str, type[Codec]] = {}


def register(cls: type[Codec]) -> type[Codec]:
    """Add a codec class; refuses a duplicate id or header code."""
    if cls.id in _CODECS:
        raise ValueError(f"codec id {cls.id!r} registered twice")
    for other in _CODECS.values():
        if other.code == cls.code:
            raise ValueError(f"codec code {cls.code} used by both {other.id} and {cls.id}")
    _CODECS[cls.id] = cls
    return cls


for _cls in (*CLASSICAL_CODECS, JpegLosslessCodec):
    register(_cls)


LEARNED_LEVELS = 7  # trained qualities 1..7 of every shipped learned codec (models.hyperprior.LAMBDAS)
# Qualities in [-1, 1) extend the gain line below the lowest trained level: lower rates than any
# trained point, for the GAN-trained realistic decoders (msh-n96-v2 at -1: 0.101 bpp on Kodak,
# benchmarks/kodak-low/). The stream stores quality x 1000 as a signed 16-bit integer.
LEARNED_QUALITY_MIN = -1.0


class _Lazy(Codec):
    """A registered codec whose implementation (and torch) is imported on first instantiation.

    Registering needs only the registry's JSON; building the codec needs torch and constriction
    (about 1-2 s and 200 MiB per process). Workers running a Pillow codec never pay that.
    Subclasses name the implementation (``_module``, ``_class``) and the attributes it takes
    from the registry entry (``_copied``)."""

    _module: str
    _class: str
    _copied: tuple[str, ...] = ("id", "code", "weights_file", "weights_sha256_pinned", "description")
    weights_file: str | None = None
    weights_sha256_pinned: str | None = None
    _real: type[Codec] | None = None

    def __new__(cls, quality: float | None = None, **kwargs):  # type: ignore[misc]
        # An unknown decoder is refused before torch is imported (restore plans without it).
        check_decoder(cls, kwargs.get("decoder", "faithful"))
        if cls._real is None:
            real = getattr(importlib.import_module(cls._module), cls._class)
            if real.quality_range != cls.quality_range:
                raise CodecError(f"{cls._class}'s quality range changed; update models.registry")
            attrs = {"__module__": __name__, **{k: getattr(cls, k) for k in cls._copied}}
            cls._real = type(cls.__name__, (real,), attrs)
        return cls._real(quality, **kwargs)


class _LazyLearned(_Lazy):
    """A hyperprior codec (``models.learned``), with the extra decoders of its entry."""

    _module, _class = "models.learned", "LearnedCodec"
    _copied = (*_Lazy._copied, "decoders", "decoder_weights")
    kind = "learned"
    quality_range = (LEARNED_QUALITY_MIN, float(LEARNED_LEVELS))
    default_quality = 4.0
    takes_effort = True  # latent refinement (models.refine); a factorized prior refuses it
    decoder_weights: dict[str, tuple[str, str]] = {}  # decoder name -> (file, pinned sha256)


class _LazyGanLatent(_Lazy):
    """gan-latent (``models.gan_latent``); the fetched generator is loaded when it is built."""

    _module, _class = "models.gan_latent", "GanLatentCodec"
    kind = "generative"
    quality_range = (1.0, 8.0)
    default_quality = 4.0
    takes_effort = True


# Which lazy class a registry entry's "class" names (absent: a learned hyperprior codec).
_ENTRY_CLASSES: dict[str, type[Codec]] = {"learned": _LazyLearned, "gan-latent": _LazyGanLatent}


def _register_learned() -> None:
    """One lazily built codec subclass per entry of models/weights/registry.json (and of the
    registry.json in each directory of LATENTARC_WEIGHTS_PATH)."""
    from models.weights import read_registry, weight_dirs

    for directory in weight_dirs():
        for codec_id, entry in sorted(read_registry(directory).items()):
            _register_one(_ENTRY_CLASSES[entry.get("class", "learned")], directory, codec_id, entry)


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _pinned(value: object, where: str) -> str:
    """A registry's sha256 pin; an empty or malformed one would load any file unchecked."""
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ValueError(f"{where}: sha256 {value!r} is not 64 lower-case hex digits; every "
                         "registered weights file must be pinned")
    return value


def _register_one(base: type[Codec], directory: Path, codec_id: str, entry: dict) -> None:
    card = entry["card"]
    extra = entry.get("decoders") or {}  # {"realistic": {"file", "sha256", "card"}}
    where = f"{directory / 'registry.json'}, codec {codec_id}"
    _pinned(entry["sha256"], where)
    for name, d in extra.items():
        _pinned(d["sha256"], f"{where}, decoder {name}")
    attrs = {
        "id": codec_id,
        "code": entry["code"],
        "weights_file": str(directory / entry["file"]),
        "weights_sha256_pinned": entry["sha256"],
        "description": f"{card['title']} [{card['budget_label']}]",
        "decoders": ("faithful", *sorted(extra)),
        "decoder_weights": {name: (str(directory / d["file"]), d["sha256"])
                            for name, d in extra.items()},
    }
    register(type(f"Learned_{codec_id.replace('-', '_')}", (base,), attrs))


_register_learned()

DEFAULT_CODEC = "msh-n96-v2"  # beats WebP on Kodak: benchmarks/kodak/results.md


@dataclass(frozen=True)
class CodecInfo:
    id: str
    kind: str
    lossless: bool
    quality_range: tuple[float, float] | None
    default_quality: float | None
    description: str
    decoders: tuple[str, ...] = ("faithful",)


def _codec_class(codec_id: str) -> type[Codec]:
    try:
        return _CODECS[codec_id]
    except KeyError:
        known = ", ".join(sorted(_CODECS))
        raise CodecError(f"unknown codec {codec_id!r}; known codecs: {known}") from None


def get_codec(codec_id: str, quality: float | None = None, decoder: str = "faithful",
              effort: int | None = None, effort_for: str = "faithful",
              effort_max_pixels: float | None = None) -> Codec:
    """Instantiate a codec by id; raises ``CodecError`` naming the known ids, or naming the
    codec's decoders when it has no ``decoder``. ``effort`` (encode-time optimisation steps) is
    for codecs that take it (gan-latent, the hyperprior codecs); None means the codec's default.
    ``effort_for``: the decoder a hyperprior codec's refinement aims at (``models.refine``);
    ``effort_max_pixels``: the largest image it refines (None: the default of the device it
    runs on, ``refine.max_refined_pixels``)."""
    cls = _codec_class(codec_id)
    kwargs: dict = {"decoder": decoder}
    if effort_for != "faithful":
        if ":" in effort_for:
            raise CodecError(f"--effort-for {effort_for!r}: name a decoder (e.g. realistic); "
                             "refinement aims at the decoder itself, not at a realism setting")
        if effort_for not in cls.decoders or not issubclass(cls, _LazyLearned):
            raise CodecError(f"--effort-for {effort_for!r}: codec {codec_id} has no such decoder "
                             f"to refine for; its decoders: {', '.join(cls.decoders)}")
        kwargs["effort_for"] = effort_for
    if effort is not None:
        if not getattr(cls, "takes_effort", False):
            raise CodecError(f"codec {codec_id} takes no --effort")
        kwargs["effort"] = effort
    if effort_max_pixels is not None:
        if not issubclass(cls, _LazyLearned):
            raise CodecError(f"codec {codec_id} takes no --effort-max-mp: only the hyperprior "
                             "codecs refine images of any size")
        kwargs["effort_max_pixels"] = effort_max_pixels
    return cls(quality, **kwargs)


def uses_gpu(codec_id: str) -> bool:
    """Whether a codec's network runs on a GPU actor's device (``Codec.to``): the learned
    codecs' does; gan-latent and the Pillow codecs stay on the CPU. Known without building it."""
    return _codec_class(codec_id).kind == "learned"


def codec_decoders(codec_id: str) -> tuple[str, ...]:
    """The decoders a codec has, known without building it (no torch import)."""
    return _codec_class(codec_id).decoders


def list_codecs() -> list[CodecInfo]:
    return [
        CodecInfo(c.id, c.kind, c.lossless, c.quality_range, c.default_quality, c.description,
                  c.decoders)
        for c in sorted(_CODECS.values(), key=lambda c: c.code)
    ]
