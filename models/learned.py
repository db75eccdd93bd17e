"""The learned codec: a trained ``MeanScaleHyperprior`` exported for exact, portable decoding.

What a bitstream means is defined here and in the weights file, not by a library:

- analysis/synthesis transforms run in float (reconstructions may differ by a level across
  machines; the archive's content hash covers symbols, not pixels);
- the hyper-decoder runs in exact integer arithmetic (``models.intnet``), so means and scale
  indexes are identical wherever the decoder runs;
- symbols are range-coded (constriction) with integer frequency tables stored in the weights
  file (``models.tables``); decoding checks the stream was consumed exactly.

Payload layout (inside the common frame of ``models.bitstream``)::

    quality   2 bytes, big-endian, signed, quality * 1000 (a quality >= 0 has the same bytes
              as the unsigned field of streams written before qualities below 0 existed)
    words     range coder output, little-endian uint32 words
"""

from __future__ import annotations

import hashlib
import itertools
import math
import struct
from collections.abc import Sequence
from pathlib import Path

import constriction
import numpy as np
import torch
from safetensors.torch import load, save

from models import intnet, refine, tables
from models.bitstream import Header, pack
from models.codec import Codec, CodecError, Decoded, check_device, check_image, parse_decoder
from models.entropy_models import scale_table
from models.hyperprior import ARCHITECTURE_NAMES, LAMBDAS, MeanScaleHyperprior, pad_to
from models.tiling import maybe_tiled

# Padded pixels per analysis (g_a) batch. On a GPU, images of one size share a pass. On a CPU a
# batch buys nothing and costs memory: 16 Kodak images, 8 per call, took 6.0-8.4 s with 8-image
# passes and 4.8-5.4 s one image at a time, at a peak RSS of 1,400 vs 534 MiB, same bytes
# (benchmarks/pipeline/analysis-batch/). A CPU pass takes one Kodak-sized image, or a few small.
BATCH_PIXELS = {"cuda": 4 << 20, "cpu": 1 << 19}
STRIDE = 64  # total downsampling of g_a (16) and h_a (4); images are padded to a multiple
FACTORIZED_MAX_HALF = 256
_ESCAPE_MODEL = constriction.stream.model.Uniform(tables.ESCAPE_RANGE)


def export_weights(model: MeanScaleHyperprior, path: str | Path, dtype: torch.dtype = torch.float32,
                   metadata: dict[str, str] | None = None) -> str:
    """Write the decoder-defining weights file; returns its sha256."""
    model = model.eval()
    out: dict[str, torch.Tensor] = {}
    factorized = model.prior == "factorized"
    for name in ("g_a", "g_s") if factorized else ("g_a", "g_s", "h_a"):
        for k, v in getattr(model, name).state_dict().items():
            out[f"{name}.{k}"] = v.detach().to(dtype).contiguous()
    out["log_gain"] = model.log_gain.detach().float().contiguous()
    out["log_inv_gain"] = model.log_inv_gain.detach().float().contiguous()
    if factorized:
        out.update(tables.to_tensors(*tables.density_tables(model.y_density.cdf, model.M,
                                                            FACTORIZED_MAX_HALF), "y"))
    else:
        out.update(intnet.to_tensors(intnet.export_layers(model.h_s), "h_s"))
        out.update(tables.to_tensors(*tables.density_tables(model.z_density.cdf, model.N), "z"))
        scales = scale_table()
        out.update(tables.to_tensors(*tables.gaussian_tables(scales), "y"))
        fixed = 2**intnet.A_BITS
        out["y.thresholds"] = torch.from_numpy(
            np.round(np.sqrt(scales[:-1] * scales[1:]) * fixed).astype(np.int64))
        out["y.scale_min"] = torch.tensor([round(scales[0] * fixed)], dtype=torch.int64)
    meta = {"architecture": model.architecture, "N": str(model.N), "M": str(model.M),
            "levels": str(model.levels), **(metadata or {})}
    data = save(out, metadata=meta)
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _categorical(freqs: np.ndarray):
    return constriction.stream.model.Categorical(freqs.astype(np.float64), perfect=False)


class _Tables:
    def __init__(self, halves: torch.Tensor, freqs: torch.Tensor) -> None:
        self.halves = halves.numpy().astype(np.int64)
        self.models = [_categorical(freqs[i, : 2 * h + 2].numpy()) for i, h in enumerate(self.halves)]
        # The fewest bits any symbol of these tables costs: no table gives one symbol all of
        # 2**PRECISION (every symbol keeps a frequency of at least 1, tables.quantize_pmf).
        self.min_bits = -math.log2(int(freqs.max()) / (1 << tables.PRECISION))


class LearnedModel:
    """Everything a weights file defines, loaded for inference."""

    def __init__(self, data: bytes) -> None:
        self.sha256 = hashlib.sha256(data).hexdigest()
        tensors = load(data)
        meta = _metadata(data)
        priors = {v: k for k, v in ARCHITECTURE_NAMES.items()}
        if meta.get("architecture") not in priors:
            raise CodecError(f"unknown architecture in weights: {meta.get('architecture')}")
        self.prior = priors[meta["architecture"]]
        self.N, self.M, self.levels = int(meta["N"]), int(meta["M"]), int(meta["levels"])
        net = MeanScaleHyperprior(self.N, self.M, self.levels, self.prior)
        for name in ("g_a", "g_s") if self.factorized else ("g_a", "g_s", "h_a"):
            getattr(net, name).load_state_dict(
                {k[len(name) + 1:]: v.float() for k, v in tensors.items() if k.startswith(name + ".")})
        with torch.no_grad():
            net.log_gain.copy_(tensors["log_gain"])
            net.log_inv_gain.copy_(tensors["log_inv_gain"])
        self.net = net.eval()
        self.y = _Tables(tensors["y.halves"], tensors["y.freqs"])
        if not self.factorized:
            self.h_s = intnet.from_tensors(tensors, "h_s")
            self.z = _Tables(tensors["z.halves"], tensors["z.freqs"])
            self.thresholds = tensors["y.thresholds"].numpy()
            self.scale_min = int(tensors["y.scale_min"][0])

    @property
    def factorized(self) -> bool:
        return self.prior == "factorized"

    @classmethod
    def from_file(cls, path: str | Path) -> LearnedModel:
        return cls(Path(path).read_bytes())

    @property
    def device(self) -> torch.device:
        return self.net.log_gain.device

    def to(self, device: str | torch.device) -> LearnedModel:
        """Run the float transforms (g_a, h_a, g_s) and the integer hyper-decoder on ``device``.
        The hyper-decoder's float64 integer arithmetic is exact on any device, so bitstreams
        decode the same wherever they were made (``jobs.cross_device`` checks a GPU encode
        against a CPU decode); the range coder stays on the CPU."""
        self.net.to(device)
        if not self.factorized:
            self.h_s = intnet.to_device(self.h_s, device)
        return self

    def entropy_parameters(self, z_sym: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Exact means (fixed point, int64) and scale indexes from integer z symbols."""
        params = intnet.fixed_to_numpy(intnet.run(self.h_s, z_sym))
        if self.prior == "scale":
            mean, scale = np.zeros_like(params), params
        else:
            mean, scale = params[:, : self.M], params[:, self.M:]
        index = np.searchsorted(self.thresholds, np.maximum(scale, self.scale_min), side="right")
        return mean, index


def _metadata(data: bytes) -> dict[str, str]:
    import json

    n = int.from_bytes(data[:8], "little")
    return json.loads(data[8:8 + n]).get("__metadata__", {})


def _encode_grouped(encoder, symbols: np.ndarray, groups: np.ndarray, t: _Tables,
                    escapes: list[np.ndarray]) -> None:
    """Code symbols group by group (channel for z, scale index for y) in a fixed order."""
    for g in range(len(t.models)):
        sel = symbols[groups == g]
        if sel.size == 0:
            continue
        half = t.halves[g]
        idx = sel + half
        outside = (idx < 0) | (idx > 2 * half)
        if outside.any():
            escapes.append(sel[outside])
            idx = np.where(outside, 2 * half + 1, idx)
        encoder.encode(idx.astype(np.int32), t.models[g])


def _decode_grouped(decoder, groups: np.ndarray, t: _Tables) -> tuple[np.ndarray, list]:
    out = np.zeros(groups.shape, np.int64)
    escaped = []
    for g in range(len(t.models)):
        mask = groups == g
        n = int(mask.sum())
        if n == 0:
            continue
        half = t.halves[g]
        idx = decoder.decode(t.models[g], n).astype(np.int64)
        values = idx - half
        esc = idx == 2 * half + 1
        out[mask] = values
        if esc.any():
            escaped.append(np.flatnonzero(mask)[esc])
    return out, escaped


def _code_escapes(encoder, values: list[np.ndarray]) -> None:
    for v in values:
        if np.any(np.abs(v) >= tables.ESCAPE_RANGE // 2):
            raise CodecError("latent value out of the codable range")
        encoder.encode((v + tables.ESCAPE_RANGE // 2).astype(np.int32), _ESCAPE_MODEL)


def _decode_escapes(decoder, out: np.ndarray, positions: list[np.ndarray]) -> None:
    for pos in positions:
        out[pos] = decoder.decode(_ESCAPE_MODEL, len(pos)).astype(np.int64) - tables.ESCAPE_RANGE // 2


def _channel_groups(channels: int, shape: tuple[int, ...]) -> np.ndarray:
    return np.broadcast_to(np.arange(channels).reshape(1, -1, 1, 1), shape)


def _entropy_encode(m: LearnedModel, z_sym: np.ndarray | None, y_sym: np.ndarray,
                    index: np.ndarray) -> bytes:
    """z symbols by channel, their escapes, then y symbols by group (scale index, or channel
    for the factorized prior), their escapes: one stream."""
    encoder = constriction.stream.queue.RangeEncoder()
    escapes: list[np.ndarray] = []
    if z_sym is not None:
        _encode_grouped(encoder, z_sym, _channel_groups(m.N, z_sym.shape), m.z, escapes)
        _code_escapes(encoder, escapes)
        escapes = []
    _encode_grouped(encoder, y_sym, index, m.y, escapes)
    _code_escapes(encoder, escapes)
    return encoder.get_compressed().astype("<u4").tobytes()


def stream_length(code: int, height: int, width: int, pad_h: int, pad_w: int,
                  words: bytes) -> int:
    """Bytes of the stream codec ``code`` writes around these range-coder words (frame header,
    2-byte quality, words): what bpp counts."""
    return len(pack(Header(code, height, width, 3, pad_h, pad_w), bytes(2 + len(words))))


def _device_of(module: torch.nn.Module) -> torch.device:
    """Where a module's tensors are: parameters, or buffers for a metric that has none."""
    return next(itertools.chain(module.parameters(), module.buffers())).device


def _lpips_alex() -> torch.nn.Module:
    """LPIPS-alex for refinement aimed at a realistic decoder (the backbone from ``make
    weights``); a missing or altered file is a CodecError that says how to fetch it."""
    from models.perceptual import LPIPS
    from models.pretrained import PretrainedError

    try:
        return LPIPS("alex").eval().requires_grad_(False)
    except PretrainedError as exc:
        raise CodecError(f"--effort-for a realistic decoder needs LPIPS-alex: {exc}") from exc


class LearnedCodec(Codec):
    """A learned codec bound to one weights file (sha256 pinned by the registry); the weights
    file says which prior (mean-scale, scale, factorized) its bitstreams use."""

    kind = "learned"
    # 1..7 are the trained levels; [-1, 1) extrapolates the gains below level 1 (lower rates,
    # untrained; models.hyperprior._interpolate). Streams store quality * 1000, signed.
    quality_range = (-1.0, float(len(LAMBDAS)))
    default_quality = 4.0
    takes_effort = True  # encode-time latent refinement (models.refine); not the factorized prior
    pads = True  # to a multiple of the stride (pad_h, pad_w in the header)
    weights_file: str | None = None
    weights_sha256_pinned: str | None = None
    # Extra decoders (registry "decoders"): name -> (file, pinned sha256); see models.realistic.
    decoder_weights: dict[str, tuple[str, str]] = {}

    def __init__(self, quality: float | None = None, model: LearnedModel | None = None,
                 decoder: str = "faithful", synthesis: torch.nn.Module | None = None,
                 effort: int | None = None, effort_for: str = "faithful",
                 effort_max_pixels: float | None = None) -> None:
        """``effort``: Adam steps refining each image's latent before it is coded
        (``models.refine``; 0 codes the analysis transform's latent as it is), for images of
        at most ``effort_max_pixels`` pixels (``math.inf``: every image; None: the default of
        the device the codec runs on, ``refine.max_refined_pixels``); larger ones are coded
        unrefined, which bounds one image's encode time. ``effort_for``:
        the decoder the refinement aims at: "faithful" (rate + MSE) or another of the codec's
        decoders (rate + MSE + LPIPS-alex through that decoder's g_s). Default effort: 0 for
        the faithful decoder, ``refine.PERCEPTUAL_STEPS`` for another.
        ``decoder`` other than "faithful" swaps in that decoder's g_s (loaded from
        ``decoder_weights`` and checked to pair with this codec's weights, or given directly
        as ``synthesis``); "NAME:REALISM" interpolates it with the faithful g_s
        (``models.codec.parse_decoder``). The entropy decoding, hence ``Decoded.content``,
        is unchanged."""
        super().__init__(quality, decoder)
        if model is None:
            if self.weights_file is None:
                raise CodecError(f"codec {self.id} has no weights")
            data = Path(self.weights_file).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if self.weights_sha256_pinned and digest != self.weights_sha256_pinned:
                raise CodecError(f"weights {self.weights_file} do not match the pinned sha256")
            model = LearnedModel(data)
        if effort_for != "faithful" and effort_for not in self.decoder_weights:
            raise CodecError(f"--effort-for {effort_for!r}: codec {self.id} has no such decoder; "
                             f"its decoders: {', '.join(('faithful', *self.decoder_weights))}")
        if effort is None:
            effort = 0 if effort_for == "faithful" else refine.PERCEPTUAL_STEPS
        if effort < 0:
            raise CodecError("--effort must be >= 0")
        if effort_max_pixels is not None and not effort_max_pixels > 0:  # (NaN too)
            raise CodecError(f"--effort-max-mp must be above 0, not {effort_max_pixels / 1e6:g}")
        if effort and model.factorized:
            raise CodecError(f"codec {self.id} (factorized prior) takes no --effort: its refinement "
                             "needs the hyperprior's Gaussian entropy model")
        self.model = model
        self.effort = effort
        self.effort_for = effort_for
        self._effort_max_pixels = effort_max_pixels
        self.synthesis: torch.nn.Module | None = None
        self.synthesis_sha256: str | None = None
        name, realism = parse_decoder(decoder)
        if name != "faithful" and realism > 0:
            if synthesis is None:
                synthesis, self.synthesis_sha256 = self._load_decoder(name)
            if realism < 1:
                from models.realistic import interpolate

                synthesis = interpolate(model.net.g_s, synthesis, realism)
            self.synthesis = synthesis.eval()
        # What refinement aims at when it aims at another decoder: its g_s and LPIPS-alex.
        self.refine_synthesis: torch.nn.Module | None = None
        self.refine_metric: torch.nn.Module | None = None
        if effort and effort_for != "faithful":
            if self.synthesis is not None and (name, realism) == (effort_for, 1.0):
                self.refine_synthesis = self.synthesis  # the restore decoder is the one aimed at
            else:  # (an interpolated realism is not what the refinement aims at)
                self.refine_synthesis = self._load_decoder(effort_for)[0].requires_grad_(False)
            self.refine_metric = _lpips_alex().to(model.device)

    def _load_decoder(self, name: str) -> tuple[torch.nn.Module, str]:
        """Decoder ``name``'s g_s from its pinned file (checked to pair with these weights),
        and the file's sha256."""
        from models.realistic import load_realistic

        if name not in self.decoder_weights:
            raise CodecError(f"codec {self.id} lists decoder {name!r} but has no file for it")
        path, pinned = self.decoder_weights[name]
        data = Path(path).read_bytes()
        g_s = load_realistic(data, self.model, pinned, f"{name} decoder {path} of {self.id}")
        return g_s, hashlib.sha256(data).hexdigest()

    def weights_sha256(self) -> str:
        """The faithful weights: they define the bitstream, whichever decoder runs."""
        return self.model.sha256

    def _g_s(self) -> torch.nn.Module:
        if self.synthesis is None:
            return self.model.net.g_s
        if next(self.synthesis.parameters()).device != self.model.device:
            self.synthesis.to(self.model.device)  # LearnedModel.to() moved the faithful net
        return self.synthesis

    def to(self, device: str) -> LearnedCodec:
        """Transforms, integer hyper-decoder (and a realistic decoder's synthesis) on
        ``device``; the range coder stays on the CPU."""
        check_device(device)
        self.model.to(device)
        for module in (self.synthesis, self.refine_synthesis, self.refine_metric):
            if module is not None:
                module.to(device)
        return self

    def versions(self) -> dict[str, str]:
        from importlib.metadata import version  # constriction has no __version__

        return {"torch": torch.__version__, "constriction": version("constriction")}

    # -------------------------------------------------------------- encode

    def _quality_code(self) -> int:
        return int(round(self.quality * 1000))

    @torch.inference_mode()
    def encode_batch(self, images: Sequence[np.ndarray]) -> list[bytes]:
        """Images of the same padded size share one analysis pass, up to the device's
        BATCH_PIXELS at a time (a pass never holds more pixels than that, except one image
        larger than it, which goes alone and, if large, in tiles).

        An image becomes a float tensor only when its pass comes: converting the whole batch
        first held 8 float copies (38 MB for 8 Kodak images on a CPU, where a pass takes one),
        and made a worker's peak memory grow with the batches its shards reach."""
        for image in images:
            check_image(image)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            h, w = image.shape[:2]
            groups.setdefault((h + (-h) % STRIDE, w + (-w) % STRIDE), []).append(i)
        q = torch.tensor([self._quality_code() / 1000.0 - 1.0], device=self.model.device)
        gain, _ = self.model.net.gains(q)
        out: list[bytes] = [b""] * len(images)
        limit = BATCH_PIXELS.get(self.model.device.type, BATCH_PIXELS["cpu"])
        for (hp, wp), members in groups.items():
            per_batch = max(1, limit // (hp * wp))
            for start in range(0, len(members), per_batch):
                chunk = members[start:start + per_batch]
                padded = [self._padded(images[i]) for i in chunk]
                x = padded[0][0] if len(chunk) == 1 else torch.cat([p[0] for p in padded])
                # A photo above TILE_ABOVE_PIXELS (alone in its batch) goes through g_a in tiles.
                y = maybe_tiled(self.model.net.g_a, x, 16, 1, x.shape[2] * x.shape[3]) * gain
                del x
                for i, (x_i, pads), y_i in zip(chunk, padded, y, strict=True):
                    h, w, _ = images[i].shape
                    out[i] = self._finish(y_i[None], h, w, *pads, x=x_i)
        return out

    def _padded(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """One image as a 1x3xHxW float tensor in [0, 1] on the codec's device, padded."""
        # A view with negative strides (image[..., ::-1], BGR to RGB) is copied first: torch
        # takes no such array.
        x = torch.tensor(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        x = x.to(self.model.device).float() / 255.0
        return pad_to(x, STRIDE)

    def _finish(self, y: torch.Tensor, h: int, w: int, ph: int, pw: int,
                x: torch.Tensor | None = None) -> bytes:
        """Hyper path, (with an effort, refinement of y against the padded image ``x``),
        quantization and entropy coding of one image's latent."""
        m = self.model
        if m.factorized:
            y_sym = np.round(y.double().cpu().numpy()).astype(np.int64)
            words = _entropy_encode(m, None, y_sym, _channel_groups(m.M, y_sym.shape))
        else:
            z_sym = torch.round(m.net.h_a(y)).to(torch.int64).cpu()
            mean, index = m.entropy_parameters(z_sym)
            if x is not None and self.effort and h * w <= self.effort_max_pixels:
                # (in tiles above refine_max_pixels)
                y = self._refine(y, x[..., :h, :w], mean, index)
            y_sym = np.round(y.double().cpu().numpy() - mean / 2**intnet.A_BITS).astype(np.int64)
            words = _entropy_encode(m, z_sym.numpy(), y_sym, index)
        payload = struct.pack(">h", self._quality_code()) + words
        return pack(Header(self.code, h, w, 3, ph, pw), payload)

    def skips_effort(self, height: int, width: int) -> bool:
        """Whether an image this size is coded unrefined although the codec has an effort."""
        return bool(self.effort) and height * width > self.effort_max_pixels

    def refine_limits(self, device_type: str | None = None) -> tuple[int, float]:
        """(padded pixels one refinement pass holds, larger images being refined tile by tile;
        pixels above which an image is coded unrefined) on ``device_type`` ("cpu", "cuda";
        None: where this codec runs). A driver asks for its GPU workers' limits this way."""
        device_type = device_type or self.model.device.type
        skip_above = self._effort_max_pixels
        if skip_above is None:
            skip_above = refine.max_refined_pixels(device_type)
        return refine.pass_max_pixels(self.refine_metric is not None, device_type), skip_above

    @property
    def effort_max_pixels(self) -> float:
        """Images above this many pixels are coded unrefined (``refine_limits``)."""
        return self.refine_limits()[1]

    @property
    def refine_max_pixels(self) -> int:
        """Padded pixels one refinement pass holds here (``refine_limits``)."""
        return self.refine_limits()[0]

    def refine_inputs(self, mean_fx: np.ndarray, index: np.ndarray
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
        """What ``refine.refine_latent`` takes besides the image and y, from the decoder's
        entropy parameters (``LearnedModel.entropy_parameters``): y's mean and scale, the
        inverse gain and lambda at this codec's quality."""
        m = self.model
        device = m.device
        mean = torch.from_numpy(mean_fx / 2**intnet.A_BITS).float().to(device)
        scale = torch.from_numpy(scale_table()[index]).float().to(device)
        q = torch.tensor([self._quality_code() / 1000.0 - 1.0], device=device)
        _, inv_gain = m.net.gains(q)
        return mean, scale, inv_gain, float(m.net.lmbda(q))

    def _refine(self, y: torch.Tensor, x: torch.Tensor, mean_fx: np.ndarray,
                index: np.ndarray) -> torch.Tensor:
        m = self.model
        device = m.device
        mean, scale, inv_gain, lmbda = self.refine_inputs(mean_fx, index)
        g_s = self.refine_synthesis if self.refine_synthesis is not None else m.net.g_s
        for module in (g_s, self.refine_metric):  # LearnedModel.to() moves only the faithful net
            if module is not None and _device_of(module) != device:
                module.to(device)
        return refine.refine_latent(g_s, x, y, mean, scale, inv_gain, lmbda, self.effort,
                                    refine.LR, self.refine_metric,
                                    max_pixels=self.refine_max_pixels)

    # -------------------------------------------------------------- decode

    @torch.inference_mode()
    def decode_batch(self, streams: Sequence[bytes]) -> list[Decoded]:
        return [self._decode(s) for s in streams]

    def _check_length(self, payload: bytes, hp: int, wp: int) -> None:
        """Refuse a payload too short to hold the header's symbols, before decoding them.

        A range decoder reads past the end of its data as if zeros followed, so a damaged size
        in a header (or a stream framed for another image) would otherwise decode a large
        image's worth of symbols, for minutes and gigabytes, before the canonical re-encode
        refuses it. Each symbol costs at least its tables' ``min_bits``; 64 bits of slack
        cover the coder's word granularity."""
        m = self.model
        needed = (hp // 16) * (wp // 16) * m.M * m.y.min_bits
        if not m.factorized:
            needed += (hp // STRIDE) * (wp // STRIDE) * m.N * m.z.min_bits
        if 8 * (len(payload) - 2) + 64 < needed:
            raise CodecError(f"learned payload of {len(payload)} bytes is too short for a "
                             f"{wp}x{hp} (padded) image: its symbols need at least "
                             f"{math.ceil(needed / 8) - 8} bytes")

    def _decode(self, stream: bytes) -> Decoded:
        header, payload = self.read_header(stream)
        if len(payload) < 2 or (len(payload) - 2) % 4:
            raise CodecError("learned payload has a broken length")
        (quality_code,) = struct.unpack(">h", payload[:2])
        lo, hi = self.quality_range
        if not lo * 1000 <= quality_code <= hi * 1000:
            raise CodecError(f"quality {quality_code / 1000} in stream is outside {lo}..{hi}")
        m = self.model
        hp, wp = header.height + header.pad_h, header.width + header.pad_w
        if hp % STRIDE or wp % STRIDE or header.pad_h >= STRIDE or header.pad_w >= STRIDE:
            raise CodecError("padded size in header is not a multiple of the codec's stride")
        self._check_length(payload, hp, wp)
        words = np.frombuffer(payload[2:], dtype="<u4").astype(np.uint32)
        decoder = constriction.stream.queue.RangeDecoder(words)
        try:
            if m.factorized:
                z_sym = None
                index = _channel_groups(m.M, (1, m.M, hp // 16, wp // 16))
                mean = np.zeros(index.shape, np.int64)
            else:
                z_sym, z_esc = _decode_grouped(decoder, _channel_groups(m.N, (1, m.N, hp // STRIDE,
                                                                              wp // STRIDE)), m.z)
                _decode_escapes(decoder, z_sym.reshape(-1), z_esc)
                mean, index = m.entropy_parameters(torch.from_numpy(z_sym))
            y_sym, y_esc = _decode_grouped(decoder, index, m.y)
            _decode_escapes(decoder, y_sym.reshape(-1), y_esc)
        except CodecError:
            raise
        except Exception as exc:  # constriction raises on impossible streams
            raise CodecError(f"learned payload does not decode: {exc}") from exc
        # A range decoder cannot see trailing zero words; a canonical stream is exactly the
        # encoding of its own symbols, so re-encode them (cheap: no transforms) and compare.
        if _entropy_encode(m, z_sym, y_sym, index) != payload[2:]:
            raise CodecError("learned payload is not the canonical encoding of its symbols "
                             "(trailing or altered data)")
        q = torch.tensor([quality_code / 1000.0 - 1.0], device=m.device)
        _, inv_gain = m.net.gains(q)
        y_hat = torch.from_numpy(y_sym + mean / 2**intnet.A_BITS).float().to(m.device)
        x = maybe_tiled(self._g_s(), y_hat * inv_gain, 1, 16, hp * wp)
        x = x[0, :, : header.height, : header.width]
        # in place: a 40 MP decode holds one float copy of its pixels, not four
        image = x.clamp_(0, 1).mul_(255).round_().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        z_bytes = b"" if z_sym is None else z_sym.astype("<i4").tobytes()
        content = (struct.pack(">hII", quality_code, header.height, header.width)
                   + z_bytes + y_sym.astype("<i4").tobytes())
        return Decoded(image, content)
