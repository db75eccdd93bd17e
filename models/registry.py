"""Codec registry: the one place that maps codec ids and header codes to implementations.

The pipeline knows codecs only through ``get_codec`` and ``list_codecs``. Codes are written into
every bitstream, so a code, once released, is never reused for another codec.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.classical import CLASSICAL_CODECS
from models.codec import Codec, CodecError
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


LEARNED_LEVELS = 7  # quality range 1..7 of every shipped learned codec (models.hyperprior.LAMBDAS)


class _LazyLearned(Codec):
    """A registered learned codec that imports torch only when first instantiated.

    Registering needs only the registry's JSON; building the codec needs torch and constriction
    (about 1-2 s and 200 MiB per process). Workers running a Pillow codec never pay that."""

    kind = "learned"
    quality_range = (1.0, float(LEARNED_LEVELS))
    default_quality = 4.0
    weights_file: str | None = None
    weights_sha256_pinned: str | None = None
    _real: type[Codec] | None = None

    def __new__(cls, quality: float | None = None, **kwargs):  # type: ignore[misc]
        if cls._real is None:
            from models.learned import LearnedCodec

            if LearnedCodec.quality_range != cls.quality_range:
                raise CodecError("learned codec quality range changed; update LEARNED_LEVELS")
            attrs = {"__module__": __name__, **{k: getattr(cls, k) for k in
                     ("id", "code", "weights_file", "weights_sha256_pinned", "description")}}
            cls._real = type(cls.__name__, (LearnedCodec,), attrs)
        return cls._real(quality, **kwargs)


def _register_learned() -> None:
    """One lazily built LearnedCodec subclass per entry of models/weights/registry.json (and of
    the registry.json in each directory of LATENTARC_WEIGHTS_PATH)."""
    from models.weights import read_registry, weight_dirs

    for directory in weight_dirs():
        for codec_id, entry in sorted(read_registry(directory).items()):
            _register_one(_LazyLearned, directory, codec_id, entry)


def _register_one(base: type[Codec], directory: Path, codec_id: str, entry: dict) -> None:
    card = entry["card"]
    attrs = {
        "id": codec_id,
        "code": entry["code"],
        "weights_file": str(directory / entry["file"]),
        "weights_sha256_pinned": entry["sha256"],
        "description": f"{card['title']} [{card['budget_label']}]",
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


def get_codec(codec_id: str, quality: float | None = None) -> Codec:
    """Instantiate a codec by id; raises ``CodecError`` naming the known ids."""
    try:
        cls = _CODECS[codec_id]
    except KeyError:
        known = ", ".join(sorted(_CODECS))
        raise CodecError(f"unknown codec {codec_id!r}; known codecs: {known}") from None
    return cls(quality)


def list_codecs() -> list[CodecInfo]:
    return [
        CodecInfo(c.id, c.kind, c.lossless, c.quality_range, c.default_quality, c.description)
        for c in sorted(_CODECS.values(), key=lambda c: c.code)
    ]
