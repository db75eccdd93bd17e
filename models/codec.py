"""The codec interface: batches of ``uint8 HxWx3`` arrays to self-describing bytes and back.

Every codec, classical or learned, implements this. The pipeline never looks inside a
bitstream; it asks the codec to decode and to say what the decode yields (``Decoded.content``),
which the archive hashes so that ``verify`` can prove a row still decodes to what was written.
For Pillow codecs that is the decoded pixels; for learned codecs it will be the entropy-decoded
latent symbols, which are exact by construction while float pixels may differ by a level
across machines.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from models.bitstream import MAX_DIM, BitstreamError, Header, unpack


class CodecError(ValueError):
    """A codec cannot encode an input or decode a stream."""


def check_device(device: str) -> None:
    """Refuse a CUDA device that this process cannot see, naming why (a GPU actor on a node
    without CUDA torch, or CUDA_VISIBLE_DEVICES hiding it), before any sample is read."""
    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise CodecError(f"unknown device {device!r}; use cpu or cuda[:N]")
    import torch

    if not torch.cuda.is_available():
        raise CodecError(
            f"device {device} asked for, but torch {torch.__version__} here sees no CUDA device "
            "(a CPU-only torch, or no GPU given to this process)")


@dataclass(frozen=True)
class Decoded:
    """One decoded image and the bytes its content hash is taken over.

    ``source`` is set by codecs that reconstruct the original file exactly (jpeg-lossless):
    restore then writes those bytes instead of re-encoding pixels.
    """

    image: np.ndarray  # uint8 HxWx3
    content: bytes
    source: bytes | None = None

    @property
    def content_hash(self) -> bytes:
        return content_hash(self.content)


def content_hash(content: bytes) -> bytes:
    """16-byte BLAKE2b digest: collisions are irrelevant at archive scale, rows stay small."""
    return hashlib.blake2b(content, digest_size=16).digest()


class Codec(ABC):
    """A registered image codec.

    Class attributes describe it for ``latentarc codecs`` and for the archive manifest.
    ``code`` is the number written into every bitstream header: never reuse one.
    """

    id: str
    code: int
    kind: str  # "classical" | "learned" | "generative"
    lossless: bool = False
    quality_range: tuple[float, float] | None = None
    default_quality: float | None = None
    description: str = ""
    # Codecs that transcode the original file bytes rather than pixels (jpeg-lossless).
    takes_source: bool = False
    # Codecs with an encode-time optimisation budget (gan-latent's --effort).
    takes_effort: bool = False
    # Decoders that read this codec's bitstreams: "faithful" (what encode optimised, and what
    # compress measures) and, for some learned codecs, "realistic" (another synthesis transform
    # trained for appearance, models.realistic). All yield the same ``Decoded.content``.
    decoders: tuple[str, ...] = ("faithful",)
    # What this codec writes into the header's channels and padding fields; read_header
    # refuses other values, so a damaged header byte is not taken for a good stream.
    header_channels: tuple[int, ...] = (3,)
    pads: bool = False
    # Images per codec batch in the pipeline (0: its default, pipeline.shard_encode.CHUNK_SAMPLES).
    # A codec that codes one image at a time gains nothing from a bigger batch, while a worker
    # holds two or three batches of decoded pixels (the one read ahead, the one being encoded
    # and, for images up to 1 MP, the one being checked in another thread).
    batch_samples: int = 0

    def __init__(self, quality: float | None = None, decoder: str = "faithful") -> None:
        check_decoder(type(self), decoder)
        self.decoder = decoder
        if self.quality_range is None:
            if quality is not None:
                raise CodecError(f"codec {self.id!r} takes no --quality")
        else:
            quality = self.default_quality if quality is None else float(quality)
            lo, hi = self.quality_range
            if not lo <= quality <= hi:
                raise CodecError(f"--quality {quality:g} is outside {self.id}'s range {lo:g}..{hi:g}")
        self.quality = quality

    @abstractmethod
    def encode_batch(self, images: Sequence[np.ndarray]) -> list[bytes]:
        """Encode ``uint8 HxWx3`` arrays into framed bitstreams."""

    @abstractmethod
    def decode_batch(self, streams: Sequence[bytes]) -> list[Decoded]:
        """Decode framed bitstreams; raise ``CodecError`` on any damaged stream."""

    def encode_sources(self, sources: Sequence[bytes]) -> list[bytes]:
        """Encode original files (only for ``takes_source`` codecs)."""
        raise CodecError(f"codec {self.id} encodes pixels, not files")

    def skips_effort(self, height: int, width: int) -> bool:
        """Whether an image this size is coded without the encode-time effort the codec was
        given (hyperprior codecs above ``--effort-max-mp``); the pipeline counts such images."""
        return False

    def versions(self) -> dict[str, str]:
        """Library versions that define this codec's decoded output (recorded in archives)."""
        return {}

    def weights_sha256(self) -> str | None:
        """sha256 of the weights this codec decodes with; None for codecs without weights."""
        return None

    def to(self, device: str) -> Codec:
        """Run the codec's network on ``device`` ("cpu", "cuda", "cuda:1"); returns self.

        Codecs without a network (Pillow, jpeg-lossless) and gan-latent stay on the CPU: they
        accept any device so that one worker option serves every codec. Learned codecs move
        their transforms and their exact integer hyper-decoder; the range coder stays on the
        CPU. A stream encoded on a GPU decodes exactly on a CPU (``jobs.cross_device``)."""
        check_device(device)
        return self

    def read_header(self, stream: bytes) -> tuple[Header, bytes]:
        """Unpack and check that ``stream`` was written by this codec."""
        try:
            header, payload = unpack(stream)
        except BitstreamError as exc:
            raise CodecError(str(exc)) from exc
        if header.codec_code != self.code:
            raise CodecError(
                f"bitstream was written by codec code {header.codec_code}, not {self.id} ({self.code})"
            )
        if header.channels not in self.header_channels:
            raise CodecError(f"{self.id} writes {' or '.join(map(str, self.header_channels))} "
                             f"channels, the header says {header.channels}")
        if not self.pads and (header.pad_h or header.pad_w):
            raise CodecError(f"{self.id} writes no padding, the header says {header.pad_h}x{header.pad_w}")
        return header, payload


def parse_decoder(decoder: str) -> tuple[str, float]:
    """``"NAME"`` or ``"NAME:REALISM"`` -> (NAME, realism in [0, 1]).

    The realism knob: ``realistic:0.5`` decodes with a synthesis halfway, in weight space,
    between the faithful g_s and the realistic one (network interpolation: the realistic g_s
    was fine-tuned from the faithful one, so the straight line between them stays a working
    decoder). ``realistic`` = ``realistic:1``; ``faithful`` has no knob (realism 0).
    """
    name, sep, value = decoder.partition(":")
    if not sep:
        return name, 0.0 if name == "faithful" else 1.0
    try:
        realism = float(value)
    except ValueError:
        raise CodecError(f"decoder {decoder!r}: realism {value!r} is not a number") from None
    if not 0.0 <= realism <= 1.0:
        raise CodecError(f"decoder {decoder!r}: realism must be in 0..1")
    if name == "faithful":
        raise CodecError(f"decoder {decoder!r}: the faithful decoder has no realism knob; "
                         "use e.g. realistic:0.5")
    return name, realism


def check_decoder(cls: type[Codec], decoder: str) -> None:
    """Refuse a decoder the codec does not have, naming the ones it has."""
    name, _ = parse_decoder(decoder)
    if name not in cls.decoders:
        raise CodecError(f"codec {cls.id} has no decoder {name!r}; its decoders: "
                         f"{', '.join(cls.decoders)}")


def check_image(image: np.ndarray) -> None:
    """Refuse anything but a non-empty ``uint8 HxWx3`` array whose size a header can carry
    (``bitstream.MAX_DIM`` a side: a larger one would encode into a stream unpack refuses)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise CodecError("codec input must be a uint8 numpy array")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise CodecError(f"codec input must be HxWx3, got shape {image.shape}")
    if max(image.shape[:2]) > MAX_DIM:
        raise CodecError(f"cannot encode a {image.shape[1]}x{image.shape[0]} image: a side above "
                         f"{MAX_DIM} pixels does not fit the bitstream header")
