"""gan-latent: an image stored as the quantized, range-coded latent of a pretrained generator.

The generator is the 64x64 DCGAN face generator (nz=100) shipped in the ``gan-face-generate``
wheel and fetched at set-up (``models.pretrained``). An encoder trained here
(``jobs.train_gan_latent``) gives a first latent; ``effort`` steps of gradient descent on the
latent then fit the generator's output to the image (pixels + LPIPS-alex when available + a
rate term), the last third through a straight-through quantizer so the fit sees the
quantization it will get. The decoder only runs the generator: it needs neither the encoder
nor the optimisation.

Only integers cross to the decoder: per-dimension symbols ``round(z / step)``, range-coded
with integer tables stored in this codec's weights file (one Gaussian table per dimension and
quality level, ``models.tables``). The generator's float output may differ by a level across
machines, as g_s may for the learned codecs; the content hash covers the symbols.

Images of any size are resized to 64x64 for coding and the reconstruction is resized back to
the original size, so the codec is meant for face crops; anything else will look wrong (the
guard in ``compress --min-psnr`` catches it).

Payload layout (inside the common frame of ``models.bitstream``)::

    level     1 byte   quality level 1..LEVELS (quantization step STEPS[level - 1])
    words     range-coder output, little-endian uint32 words, trailing zero bytes removed
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import constriction
import numpy as np
import torch
from PIL import Image
from safetensors.torch import load, save
from torch import nn

from models import tables
from models.bitstream import Header, pack
from models.codec import Codec, CodecError, Decoded, check_image

SIZE = 64
# Largest output a stream may ask for. The decoder resizes the generator's 64x64 face to the
# header's size before the row's content hash can be checked, so a damaged header must not be
# able to ask for gigabytes; encode refuses the same (the pipeline's default per-image budget).
MAX_PIXELS = 40_000_000
NZ = 100
LEVELS = 8
# Quantization step per quality level, in units of the latent (z ~ N(0, 1) for the generator).
STEPS = tuple(float(2.0 ** (-(k / 2))) for k in range(LEVELS))  # 1, 0.71, 0.5, ... 0.088
DEFAULT_EFFORT = 60
_ESCAPE_MODEL = constriction.stream.model.Uniform(tables.ESCAPE_RANGE)


class Generator(nn.Module):
    """The DCGAN face generator (PyTorch DCGAN tutorial layout, nz=100, ngf=64): keys main.*."""

    def __init__(self) -> None:
        super().__init__()
        ch = [NZ, 512, 256, 128, 64]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.ConvTranspose2d(ch[i], ch[i + 1], 4, 1 if i == 0 else 2, 0 if i == 0 else 1,
                                          bias=False), nn.BatchNorm2d(ch[i + 1]), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(64, 3, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """(B, NZ) latents -> (B, 3, 64, 64) images in [0, 1]."""
        return (self.main(z[:, :, None, None]) + 1) / 2


class LatentEncoder(nn.Module):
    """64x64 image in [0, 1] -> a first guess of the generator latent (refined at encode time)."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        c = [3, width, 2 * width, 4 * width, 8 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(c[i], c[i + 1], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c[4] * 16, NZ)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x * 2 - 1).flatten(1))


def load_generator() -> Generator:
    """The fetched generator, frozen, in eval mode (BatchNorm uses its running statistics)."""
    from models.pretrained import load_pretrained

    g = Generator()
    g.load_state_dict({k: v.float() for k, v in load_pretrained("dcgan64_face_g").items()})
    for p in g.parameters():
        p.requires_grad_(False)
    return g.eval()


def generator_hash() -> str:
    from models.pretrained import PINNED

    return PINNED["dcgan64_face_g"].tensor_sha256


# ------------------------------------------------------------------ weights file


def export_weights(encoder: LatentEncoder, scales: np.ndarray, path: str | Path,
                   metadata: dict[str, str] | None = None) -> str:
    """Write the codec's weights: encoder (fp16), fitted latent scales, integer tables per level.

    The tables are built here once in float64 and stored as integers; decoders never recompute
    them. Returns the file's sha256.
    """
    out = {f"encoder.{k}": v.detach().half().contiguous() for k, v in encoder.state_dict().items()}
    out["scales"] = torch.tensor(np.asarray(scales, np.float32))
    for level, step in enumerate(STEPS, start=1):
        halves, freqs = tables.gaussian_tables(np.asarray(scales, np.float64) / step)
        out.update(tables.to_tensors(halves, freqs, f"level{level}"))
    meta = {"codec": "gan-latent", "generator": generator_hash(), "nz": str(NZ), "size": str(SIZE),
            "steps": json.dumps(STEPS), **(metadata or {})}
    data = save(out, metadata=meta)
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]).get("__metadata__", {})


class GanLatentModel:
    """Everything the weights file and the fetched generator define, loaded for inference."""

    def __init__(self, data: bytes, generator: Generator | None = None) -> None:
        self.sha256 = hashlib.sha256(data).hexdigest()
        meta = _metadata(data)
        if meta.get("codec") != "gan-latent" or json.loads(meta.get("steps", "null")) != list(STEPS):
            raise CodecError("weights file is not a gan-latent file of this version")
        tensors = load(data)
        self.encoder = LatentEncoder()
        self.encoder.load_state_dict({k[8:]: v.float() for k, v in tensors.items()
                                      if k.startswith("encoder.")})
        self.encoder.eval()
        self.scales = tensors["scales"].float()
        self.tables = []
        for level in range(1, LEVELS + 1):
            halves = tensors[f"level{level}.halves"].numpy().astype(np.int64)
            freqs = tensors[f"level{level}.freqs"]
            models = [constriction.stream.model.Categorical(
                freqs[i, : 2 * h + 2].numpy().astype(np.float64), perfect=False)
                for i, h in enumerate(halves)]
            self.tables.append((halves, models))
        if meta.get("generator") != generator_hash():
            raise CodecError("gan-latent weights were made for another generator")
        self.generator = generator if generator is not None else load_generator()


def entropy_encode(model: GanLatentModel, level: int, symbols: np.ndarray) -> bytes:
    """Symbols (NZ,) -> range-coded bytes; values beyond a table's range are escaped."""
    halves, models = model.tables[level - 1]
    encoder = constriction.stream.queue.RangeEncoder()
    escapes = []
    for i in range(NZ):
        idx = int(symbols[i]) + int(halves[i])
        if not 0 <= idx <= 2 * halves[i]:
            escapes.append(int(symbols[i]))
            idx = 2 * int(halves[i]) + 1
        encoder.encode(np.array([idx], np.int32), models[i])
    for v in escapes:
        if abs(v) >= tables.ESCAPE_RANGE // 2:
            raise CodecError("gan-latent symbol out of the codable range")
        encoder.encode(np.array([v + tables.ESCAPE_RANGE // 2], np.int32), _ESCAPE_MODEL)
    return encoder.get_compressed().astype("<u4").tobytes().rstrip(b"\x00")


def entropy_decode(model: GanLatentModel, level: int, data: bytes) -> np.ndarray:
    halves, models = model.tables[level - 1]
    padded = data + b"\x00" * (-len(data) % 4)
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(padded, "<u4").astype(np.uint32))
    symbols = np.zeros(NZ, np.int64)
    escaped = []
    for i in range(NZ):
        idx = int(decoder.decode(models[i], 1)[0])
        if idx == 2 * halves[i] + 1:
            escaped.append(i)
        symbols[i] = idx - halves[i]
    for i in escaped:
        symbols[i] = int(decoder.decode(_ESCAPE_MODEL, 1)[0]) - tables.ESCAPE_RANGE // 2
    return symbols


# ------------------------------------------------------------------ encode-time fit


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> (1, 3, 64, 64) float in [0, 1] (Lanczos resize when not 64x64)."""
    if image.shape[:2] != (SIZE, SIZE):
        image = np.asarray(Image.fromarray(image).resize((SIZE, SIZE), Image.LANCZOS))
    return torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1)[None].float() / 255.0


def fit_latents(model: GanLatentModel, x: torch.Tensor, step: float, effort: int,
                perceptual: nn.Module | None = None, rate_weight: float = 1e-4,
                perceptual_weight: float = 0.3, lr: float = 0.1,
                cosine: bool = True) -> torch.Tensor:
    """Encoder guess, then ``effort`` Adam steps on the latent: MSE (+ LPIPS) + rate.

    The rate term is the Gaussian code length of z under the fitted scales (in bits, up to a
    constant); the last third of the steps passes z through a straight-through quantizer.
    ``cosine`` decays the learning rate from ``lr`` to a tenth of it over the steps.
    The defaults were chosen on training-split faces at the same effort
    (benchmarks/perceptual/gan-latent-refine/): against session 11's 0.1 / 0.05 / constant they
    give 0.004-0.007 lower DISTS at the same bytes there and on both evaluation sets, for up to
    0.3 dB of PSNR; a level costs more bytes than before. Returns the latent in units of the
    step (unrounded)."""
    with torch.no_grad():
        z0 = model.encoder(x)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    decay = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(effort, 1), lr / 10) if cosine else None
    scales = model.scales
    quantize_from = effort - effort // 3
    for i in range(effort):
        zq = z + (torch.round(z / step) * step - z).detach() if i >= quantize_from else z
        out = model.generator(zq)
        loss = ((out - x) ** 2).mean(dim=(1, 2, 3))
        if perceptual is not None:
            loss = loss + perceptual_weight * perceptual(out, x)
        bits = 0.5 * ((z / scales) ** 2).sum(dim=1) / np.log(2)
        loss = loss + rate_weight * bits
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        if decay is not None:
            decay.step()
    return z.detach() / step


class GanLatentCodec(Codec):
    """gan-latent on the 64x64 DCGAN face generator: bitstreams of about 30-70 bytes."""

    id = "gan-latent"
    code = 20
    kind = "generative"
    quality_range = (1.0, float(LEVELS))
    default_quality = 4.0
    description = ("face image as a quantized DCGAN latent (64x64 faces, nz=100); "
                   "needs `make weights`; other content reconstructs as a face")
    takes_effort = True
    weights_file: str | None = None
    weights_sha256_pinned: str | None = None

    def __init__(self, quality: float | None = None, model: GanLatentModel | None = None,
                 effort: int = DEFAULT_EFFORT, perceptual: nn.Module | str | None = "lpips-alex",
                 decoder: str = "faithful") -> None:
        super().__init__(quality, decoder=decoder)
        if self.quality != int(self.quality):
            raise CodecError(f"gan-latent takes integer qualities 1..{LEVELS}, got {self.quality:g}")
        if effort < 0:
            raise CodecError("--effort must be >= 0")
        if model is None:
            if self.weights_file is None:
                raise CodecError("gan-latent has no weights file")
            data = Path(self.weights_file).read_bytes()
            if self.weights_sha256_pinned and hashlib.sha256(data).hexdigest() != self.weights_sha256_pinned:
                raise CodecError(f"weights {self.weights_file} do not match the pinned sha256")
        from models.pretrained import PretrainedError

        try:  # the generator and LPIPS come from the set-up step's cache
            if model is None:
                model = GanLatentModel(data)
            if isinstance(perceptual, str):  # the fetched metric, shared per process
                from models.perceptual import metric_module

                perceptual = metric_module(perceptual)
        except PretrainedError as exc:  # a refusal the pipeline reports (exit 2), not a crash
            raise CodecError(f"gan-latent cannot be used: {exc}") from exc
        self.model = model
        self.effort = effort
        self.perceptual = perceptual
        # fit_latents' keywords beyond its defaults (trials: benchmarks/perceptual/gan-latent-refine)
        self.fit_options: dict = {}

    def weights_sha256(self) -> str:
        return self.model.sha256

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__, "generator": generator_hash()[:16]}

    def encode_batch(self, images: Sequence[np.ndarray]) -> list[bytes]:
        out = []
        level = int(self.quality)
        step = STEPS[level - 1]
        for image in images:
            check_image(image)
            if image.shape[0] * image.shape[1] > MAX_PIXELS:
                raise CodecError(f"gan-latent codes images of up to {MAX_PIXELS / 1e6:g} MP, not "
                                 f"{image.shape[1]}x{image.shape[0]}")
            x = to_tensor(image)
            with torch.enable_grad():
                z = fit_latents(self.model, x, step, self.effort, self.perceptual,
                                **self.fit_options)
            symbols = torch.round(z[0]).to(torch.int64).numpy()
            payload = bytes([level]) + entropy_encode(self.model, level, symbols)
            h, w, _ = image.shape
            out.append(pack(Header(self.code, h, w, 3), payload))
        return out

    @torch.inference_mode()
    def decode_batch(self, streams: Sequence[bytes]) -> list[Decoded]:
        return [self._decode(s) for s in streams]

    def _decode(self, stream: bytes) -> Decoded:
        header, payload = self.read_header(stream)
        if not payload or not 1 <= payload[0] <= LEVELS:
            raise CodecError("gan-latent payload has no valid quality level")
        if header.pad_h or header.pad_w:
            raise CodecError("gan-latent streams carry no padding")
        if header.height * header.width > MAX_PIXELS:
            raise CodecError(f"gan-latent header asks for {header.width}x{header.height}, above "
                             f"the codec's {MAX_PIXELS / 1e6:g} MP")
        level = payload[0]
        try:
            symbols = entropy_decode(self.model, level, payload[1:])
        except Exception as exc:  # constriction raises on impossible streams
            raise CodecError(f"gan-latent payload does not decode: {exc}") from exc
        if entropy_encode(self.model, level, symbols) != payload[1:]:
            raise CodecError("gan-latent payload is not the canonical encoding of its symbols")
        z = torch.from_numpy(symbols.astype(np.float32) * STEPS[level - 1])[None]
        x = self.model.generator(z)[0]
        image = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        if (header.height, header.width) != (SIZE, SIZE):
            image = np.asarray(Image.fromarray(image).resize((header.width, header.height),
                                                             Image.BICUBIC))
        content = bytes([level]) + header.height.to_bytes(4, "big") + \
            header.width.to_bytes(4, "big") + symbols.astype("<i4").tobytes()
        return Decoded(image, content)
