"""Codec registry: the one place that maps codec ids and header codes to implementations.

The pipeline knows codecs only through ``get_codec`` and ``list_codecs``. Codes are written into
every bitstream, so a code, once released, is never reused for another codec.
"""

from __future__ import annotations

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
# Qualities in [0, 1) extend the gain line below the lowest trained level: lower rates than any
# trained point (about 0.7x the rate per unit), for the GAN-trained realistic decoders.
LEARNED_QUALITY_MIN = 0.0


class _LazyLearned(Codec):
    """A registered learned codec that imports torch only when first instantiated.

    Registering needs only the registry's JSON; building the codec needs torch and constriction
    (about 1-2 s and 200 MiB per process). Workers running a Pillow codec never pay that."""

    kind = "learned"
    quality_range = (LEARNED_QUALITY_MIN, float(LEARNED_LEVELS))
    default_quality = 4.0
    weights_file: str | None = None
    weights_sha256_pinned: str | None = None
    decoder_weights: dict[str, tuple[str, str]] = {}  # decoder name -> (file, pinned sha256)
    _real: type[Codec] | None = None

    def __new__(cls, quality: float | None = None, **kwargs):  # type: ignore[misc]
        # An unknown decoder is refused before torch is imported (restore plans without it).
        check_decoder(cls, kwargs.get("decoder", "faithful"))
        if cls._real is None:
            from models.learned import LearnedCodec

            if LearnedCodec.quality_range != cls.quality_range:
                raise CodecError("learned codec quality range changed; update LEARNED_LEVELS")
            attrs = {"__module__": __name__, **{k: getattr(cls, k) for k in
                     ("id", "code", "weights_file", "weights_sha256_pinned", "description",
                      "decoders", "decoder_weights")}}
            cls._real = type(cls.__name__, (LearnedCodec,), attrs)
        return cls._real(quality, **kwargs)


class _LazyGanLatent(Codec):
    """gan-latent (``models.gan_latent``), registered from its weights entry; torch and the
    fetched generator are loaded only when the codec is built."""

    kind = "generative"
    quality_range = (1.0, 8.0)
    default_quality = 4.0
    takes_effort = True
    weights_file: str | None = None
    weights_sha256_pinned: str | None = None
    _real: type[Codec] | None = None

    def __new__(cls, quality: float | None = None, **kwargs):  # type: ignore[misc]
        check_decoder(cls, kwargs.get("decoder", "faithful"))
        if cls._real is None:
            from models.gan_latent import GanLatentCodec

            if GanLatentCodec.quality_range != cls.quality_range:
                raise CodecError("gan-latent quality range changed; update _LazyGanLatent")
            attrs = {"__module__": __name__, **{k: getattr(cls, k) for k in
                     ("id", "code", "weights_file", "weights_sha256_pinned", "description")}}
            cls._real = type(cls.__name__, (GanLatentCodec,), attrs)
        return cls._real(quality, **kwargs)


# Which lazy class a registry entry's "class" names (absent: a learned hyperprior codec).
_ENTRY_CLASSES: dict[str, type[Codec]] = {"learned": _LazyLearned, "gan-latent": _LazyGanLatent}


def _register_learned() -> None:
    """One lazily built codec subclass per entry of models/weights/registry.json (and of the
    registry.json in each directory of LATENTARC_WEIGHTS_PATH)."""
    from models.weights import read_registry, weight_dirs

    for directory in weight_dirs():
        for codec_id, entry in sorted(read_registry(directory).items()):
            _register_one(_ENTRY_CLASSES[entry.get("class", "learned")], directory, codec_id, entry)


def _register_one(base: type[Codec], directory: Path, codec_id: str, entry: dict) -> None:
    card = entry["card"]
    extra = entry.get("decoders") or {}  # {"realistic": {"file", "sha256", "card"}}
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

DEFAULT_CODEC = "webp"


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
              effort: int | None = None) -> Codec:
    """Instantiate a codec by id; raises ``CodecError`` naming the known ids, or naming the
    codec's decoders when it has no ``decoder``. ``effort`` (encode-time optimisation steps) is
    for codecs that take it (gan-latent); None means the codec's default."""
    cls = _codec_class(codec_id)
    if effort is None:
        return cls(quality, decoder=decoder)
    if not getattr(cls, "takes_effort", False):
        raise CodecError(f"codec {codec_id} takes no --effort")
    return cls(quality, decoder=decoder, effort=effort)


def codec_decoders(codec_id: str) -> tuple[str, ...]:
    """The decoders a codec has, known without building it (no torch import)."""
    return _codec_class(codec_id).decoders


def list_codecs() -> list[CodecInfo]:
    return [
        CodecInfo(c.id, c.kind, c.lossless, c.quality_range, c.default_quality, c.description,
                  c.decoders)
        for c in sorted(_CODECS.values(), key=lambda c: c.code)
    ]
