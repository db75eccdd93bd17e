r"""`python -m jobs.train run --gan`: GAN fine-tune of a learned codec's synthesis transform.

    python -m jobs.train run --gan --init-codec msh-n96 --shards data/train-shards \
        --checkpoint-dir data/gan-msh-n96 --minutes 60        # rerun to continue
    python -m jobs.train_gan eval --checkpoint-dir data/gan-msh-n96 --images a.png b.png

(``python -m jobs.train_gan run ...`` is the same thing.) The realistic decoder of issue 6
(Agustsson et al. 2019; Mentzer et al. 2020, HiFiC) reads the *same bitstream* as the faithful
codec it starts from, so everything that defines the bitstream stays frozen: g_a, h_a, the
integer hyper-decoder, the tables and the gains. Only a float32 copy of g_s is trained, on
exactly the latents a decoder would see: ``y_hat = round(y * gain - mu) + mu`` with mu from the
integer hyper-decoder (``LearnedModel.entropy_parameters``), never a noisy training proxy. Its
loss is ``k_mse * MSE (0..255 scale) + k_lpips * LPIPS-alex + k_adv * adversarial``, the
adversary a small conditional patch discriminator (``models.discriminator``) that also sees
``y_hat`` (HiFiC), so realism is rewarded only where it is consistent with the bitstream.

Rates: qualities are drawn per crop from [--q-min, --q-max] in the model's *internal* quality
(codec quality - 1); below 0 the gains are extrapolated (``MeanScaleHyperprior._interpolate``),
which is where the low rates (about 0.1-0.2 bpp on Kodak) live.

Checkpoints, written atomically every --save-minutes to --checkpoint-dir: ``checkpoint.safetensors``
(``g_s.*`` float32 — the realistic decoder — and ``D.*``; metadata: step, cumulative wall
seconds, config, ``pairs_with`` = sha256 of the faithful weights file) and
``optimizer.safetensors`` (both Adams' moments, float32, same step). ``loss_log.csv`` grows beside
them; on resume, rows beyond the checkpoint's step are dropped so the log never repeats a step.
"""

from __future__ import annotations

import argparse
import copy
import csv
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CHECKPOINT = "checkpoint.safetensors"
OPTIMIZER = "optimizer.safetensors"
LOSS_LOG = "loss_log.csv"
LOG_FIELDS = ["step", "wall_s", "q", "mse", "psnr", "psnr_faithful", "dpsnr", "lpips",
              "lpips_faithful", "dlpips", "d_loss", "g_adv", "d_real", "d_fake", "k_mse", "lr_g"]


# ----------------------------------------------------------------------------- frozen codec


def resolve_codec(name: str) -> Path:
    """A codec id from the shipped registry (``msh-n96``) or a weights file path."""
    path = Path(name)
    if path.suffix == ".safetensors" and path.exists():
        return path
    from models.weights import read_registry, weight_dirs

    for directory in weight_dirs():
        entry = read_registry(directory).get(name)
        if entry:
            return directory / entry["file"]
    raise SystemExit(f"--init-codec {name!r}: neither a registered codec nor a weights file")


class FrozenEncoder:
    """The faithful codec's encoder and dequantizer, frozen: image -> what g_s is given.

    Computes the symbols exactly as ``LearnedCodec`` does (float64 subtraction of the integer
    hyper-decoder's fixed-point means, rounding), so the realistic g_s trains on the latents it
    will decode, bit for bit; the gains follow the continuous quality per crop."""

    def __init__(self, model) -> None:
        from models import intnet

        self.model = model
        self.net = model.net.eval().requires_grad_(False)
        self.fixed = float(2**intnet.A_BITS)

    def symbols(self, x, quality):
        """(y_sym int64, z_sym int64 or None, mean (float64, latent units), inv_gain)."""
        import torch

        with torch.no_grad():
            gain, inv_gain = self.net.gains(quality)
            y = (self.net.g_a(x) * gain).double()
            if self.model.factorized:
                return torch.round(y).long(), None, torch.zeros_like(y), inv_gain, None
            z_sym = torch.round(self.net.h_a(y.float())).long()
            mean, index = self.model.entropy_parameters(z_sym)
            mean = torch.from_numpy(mean).double().to(y.device) / self.fixed
            return torch.round(y - mean).long(), z_sym, mean, inv_gain, index

    def __call__(self, x, quality):
        """Decoder input ``y_hat * inv_gain`` (float32), as ``LearnedCodec._decode`` builds it."""
        y_sym, _, mean, inv_gain, _ = self.symbols(x, quality)
        return (y_sym + mean).float() * inv_gain


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(directory: str, g_s, disc, opt_g, opt_d, step: int, wall: float,
                    config: dict, k_mse: float | None = None) -> None:
    """Optimizer file first, then the model file, each atomic; both carry the step, so a model
    file is never paired with another step's moments. ``k_mse`` is the MSE weight in force (it
    moves under --max-psnr-drop) so a resume continues from it."""
    import torch
    from safetensors.torch import save

    from pipeline.storage import join, write_bytes_atomic

    meta = {"step": str(step), "wall_s": f"{wall:.1f}", "config": json.dumps(config, sort_keys=True),
            "pairs_with": config["pairs_with"], "init_codec": config["init_codec"],
            "k_mse": f"{config['k_mse'] if k_mse is None else k_mse:.6g}"}
    moments = {}
    for prefix, opt, module in (("opt_g", opt_g, g_s), ("opt_d", opt_d, disc)):
        for i, p in enumerate(module.parameters()):
            state = opt.state.get(p, {})
            for name in ("exp_avg", "exp_avg_sq"):
                if name in state:
                    moments[f"{prefix}.{i}.{name}"] = state[name].detach().float().cpu().contiguous()
            if "step" in state:
                moments[f"{prefix}.{i}.step"] = torch.tensor([float(state["step"])])
    write_bytes_atomic(join(directory, OPTIMIZER), save(moments, metadata=meta))
    tensors = {f"g_s.{k}": v.detach().float().cpu().contiguous() for k, v in g_s.state_dict().items()}
    tensors.update({f"D.{k}": v.detach().cpu().contiguous() for k, v in disc.state_dict().items()})
    write_bytes_atomic(join(directory, CHECKPOINT), save(tensors, metadata=meta))
    if config.get("snapshots"):  # g_s alone, kept per save: GAN training oscillates, pick one
        g_only = {k: v for k, v in tensors.items() if k.startswith("g_s.")}
        write_bytes_atomic(join(directory, f"snapshots/g_s-{step:06d}.safetensors"),
                           save(g_only, metadata=meta))


def checkpoint_metadata(raw: bytes) -> dict:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]).get("__metadata__", {})


def load_checkpoint(directory: str, g_s, disc, opt_g, opt_d, pairs_with: str) -> tuple[int, float, dict]:
    """Restore g_s, D and (same step only) both Adams; refuse a checkpoint made for other
    faithful weights. Returns (step, cumulative wall seconds, metadata)."""
    from safetensors.torch import load

    from pipeline.storage import exists, join, read_bytes

    raw = read_bytes(join(directory, CHECKPOINT))
    meta = checkpoint_metadata(raw)
    if meta.get("pairs_with") != pairs_with:
        raise SystemExit(f"{directory}: checkpoint pairs with weights {meta.get('pairs_with')}, "
                         f"not {pairs_with}; use another --checkpoint-dir")
    step, wall = int(meta["step"]), float(meta.get("wall_s", 0))
    tensors = load(raw)
    load_synthesis_state(g_s, {k[4:]: v for k, v in tensors.items() if k.startswith("g_s.")},
                         directory)
    disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("D.")})
    opt_url = join(directory, OPTIMIZER)
    if exists(opt_url):
        opt_raw = read_bytes(opt_url)
        if int(checkpoint_metadata(opt_raw)["step"]) == step:
            moments = load(opt_raw)
            for prefix, opt, module in (("opt_g", opt_g, g_s), ("opt_d", opt_d, disc)):
                for i, p in enumerate(module.parameters()):
                    if f"{prefix}.{i}.exp_avg" in moments:
                        opt.state[p] = {
                            "step": moments[f"{prefix}.{i}.step"][0].clone(),
                            "exp_avg": moments[f"{prefix}.{i}.exp_avg"].to(p.device),
                            "exp_avg_sq": moments[f"{prefix}.{i}.exp_avg_sq"].to(p.device),
                        }
        else:
            print(f"[gan] {OPTIMIZER} is from another step: fresh Adam state", flush=True)
    return step, wall, meta


def load_synthesis_state(g_s, state: dict, where: str) -> None:
    """Load a g_s state; a state without residual blocks loads into a widened g_s too (its
    blocks keep their identity start), so a trained decoder can be widened and trained on."""
    missing = set(g_s.state_dict()) - set(state)
    if missing and all(k.startswith("refine.") for k in missing) \
            and not any(k.startswith("refine.") for k in state):
        print(f"[gan] {where} has no residual blocks: they start as the identity", flush=True)
        g_s.load_state_dict(state, strict=False)
    else:
        g_s.load_state_dict(state)


def _trim_log(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint we resume from (a run killed between saves);
    a log with older columns is rewritten with today's (new columns blank)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows, fields = list(reader), reader.fieldnames
    kept = [r for r in rows if int(r["step"]) <= step]
    if len(kept) != len(rows) or fields != LOG_FIELDS:
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS, restval="", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(kept)


# ----------------------------------------------------------------------------- training


def make_discriminator(config: dict, latent_channels: int):
    from models.discriminator import PatchDiscriminator

    return PatchDiscriminator(latent_channels if config["d_condition"] else 0,
                              tuple(config["d_channels"]), norm=config.get("d_norm", "spectral"))


def make_synthesis(model, config: dict):
    """A float32 copy of the faithful g_s to train, widened by residual blocks when the config
    has a ``refine`` spec (``models.synthesis``; the blocks start as the identity)."""
    from models.synthesis import RefinedSynthesis

    g_s = (RefinedSynthesis(model.net.g_s, config["refine"]) if config.get("refine")
           else copy.deepcopy(model.net.g_s))  # either way a copy: the faithful g_s stays frozen
    return g_s.float().to(model.device)


def make_lpips(config: dict):
    """LPIPS-alex from ``models.perceptual`` (weights fetched by ``python -m jobs.fetch_weights``),
    or None when --k-lpips is 0 and no LPIPS is logged."""
    if config["k_lpips"] <= 0 and not config.get("log_lpips", True):
        return None
    try:
        from models.perceptual import LPIPS

        net = LPIPS("alex")
    except Exception as exc:  # module or fetched weights missing
        if config["k_lpips"] > 0:
            raise SystemExit(f"--k-lpips {config['k_lpips']} needs models.perceptual.LPIPS and its "
                             f"weights (python -m jobs.fetch_weights): {exc}") from exc
        print(f"[gan] LPIPS unavailable, not logged: {exc}", flush=True)
        return None
    return net.eval().requires_grad_(False)


def fit_gan(config: dict) -> int:
    """The training loop; returns the final step.

    Per step: one frozen encode (no grad), one D update on real vs detached fake (from
    ``d_start`` on), one g_s update (from ``g_start`` on; earlier steps train D alone so its
    first gradients are informative). Every ``ref_every`` steps the faithful g_s decodes the same
    latents for the logged reference PSNR/LPIPS. A non-finite loss at a log line rolls g_s and D
    back to the last good log line with fresh Adams and half the learning rates."""
    import torch
    import torch.nn.functional as F

    from jobs.train import CropSampler, load_images
    from models.discriminator import d_loss, g_loss
    from models.learned import LearnedModel
    from pipeline.storage import exists, join

    torch.set_num_threads(config["threads"])
    torch.manual_seed(config["seed"])
    device = config.get("device", "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no GPU here")
    weights = Path(config["weights"])
    # On a GPU the whole frozen encoder runs there too: g_a, h_a and the integer hyper-decoder,
    # whose float64 arithmetic is exact on any device (``LearnedModel.to``), so g_s still trains
    # on the symbols a CPU encoder would produce (up to g_a's own float rounding).
    model = LearnedModel.from_file(weights).to(device)
    config = {**config, "pairs_with": model.sha256}
    encoder = FrozenEncoder(model)
    g_s = make_synthesis(model, config).train().requires_grad_(True)
    disc = make_discriminator(config, model.M).to(device).train()
    # new residual blocks (from zero) may take a larger step than the pretrained layers
    new = [p for n, p in g_s.named_parameters() if n.startswith("refine.")]
    old = [p for n, p in g_s.named_parameters() if not n.startswith("refine.")]
    lr_new = config["lr_g"] * config.get("lr_refine_scale", 1.0)
    opt_g = torch.optim.Adam([{"params": old, "lr": config["lr_g"], "base": config["lr_g"]}]
                             + ([{"params": new, "lr": lr_new, "base": lr_new}] if new else []),
                             betas=(0.9, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=config["lr_d"], betas=(0.5, 0.999))
    directory = config["checkpoint_dir"]
    Path(directory).mkdir(parents=True, exist_ok=True)
    step, wall0, k_mse = 0, 0.0, config["k_mse"]
    if exists(join(directory, CHECKPOINT)):
        step, wall0, meta = load_checkpoint(directory, g_s, disc, opt_g, opt_d, model.sha256)
        saved = json.loads(meta.get("config", "{}"))
        adapted = saved.get("max_psnr_drop", 0) > 0
        if config["max_psnr_drop"] > 0 and adapted:  # continue from the controller's last value
            k_mse = float(meta["k_mse"])
        for key in INIT_KEYS:  # --init-g-s is ignored on resume: the run started from what it saved
            if key in saved:
                config[key] = saved[key]
            else:
                config.pop(key, None)
    elif config.get("init_g_s"):  # a fresh run starting from another decoder's g_s
        from safetensors.torch import load

        raw = Path(config["init_g_s"]).read_bytes()
        config.update(init_g_s_record(raw))  # what export counts: the bytes loaded here
        state = {k[4:]: v.float().to(device) for k, v in load(raw).items() if k.startswith("g_s.")}
        load_synthesis_state(g_s, state, config["init_g_s"])
        print(f"[gan] g_s starts from {config['init_g_s']} ({config['init_g_s_steps']} steps)",
              flush=True)
    lpips = make_lpips(config)
    if lpips is not None:
        lpips = lpips.to(device)
    images = load_images(config["shards"])
    sampler = CropSampler(images, config["crop"], device, config["seed"] + step)
    log_path = Path(directory) / LOSS_LOG
    _trim_log(log_path, step)
    first, started = step, time.monotonic()
    last_save = started
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    good = (copy.deepcopy(g_s.state_dict()), copy.deepcopy(disc.state_dict()))
    scale, rollbacks = 1.0, 0
    adv_on = config["k_adv"] > 0
    print(f"[gan] {len(images)} images; g_s from {weights.name} ({model.sha256[:12]}); "
          f"resuming at step {step}; lpips {'on' if lpips is not None else 'off'}; on {device}",
          flush=True)

    def add(name: str, value: float) -> None:
        sums[name] = sums.get(name, 0.0) + value
        counts[name] = counts.get(name, 0) + 1

    while step < config["steps"] and time.monotonic() - started < config["minutes"] * 60:
        for group in opt_g.param_groups:
            group["lr"] = group["base"] * scale
        for group in opt_d.param_groups:
            group["lr"] = config["lr_d"] * scale
        x = sampler(config["batch"])
        q = (config["q_min"] + torch.rand(x.shape[0]) * (config["q_max"] - config["q_min"])).to(device)
        latent = encoder(x, q)
        x_hat = g_s(latent)
        cond = latent if config["d_condition"] else None
        if adv_on and step >= config["d_start"]:
            real_logits = disc(x, cond)
            fake_logits = disc(x_hat.detach(), cond)
            loss_d = d_loss(real_logits, fake_logits, config["gan_loss"])
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            add("d_loss", loss_d.item())
            add("d_real", real_logits.mean().item())
            add("d_fake", fake_logits.mean().item())
        train_g = step >= config["g_start"]
        mse = F.mse_loss(x_hat, x, reduction="none").flatten(1).mean(1)
        loss = k_mse * 255**2 * mse.mean()
        if lpips is not None:
            lp = lpips(x_hat, x)
            if config["k_lpips"] > 0:
                loss = loss + config["k_lpips"] * lp.mean()
            add("lpips", lp.mean().item())
        if adv_on and train_g:
            for p in disc.parameters():
                p.requires_grad_(False)
            adv = g_loss(disc(x_hat, cond), config["gan_loss"])
            for p in disc.parameters():
                p.requires_grad_(True)
            loss = loss + config["k_adv"] * adv
            add("g_adv", adv.item())
        if train_g:
            opt_g.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(g_s.parameters(), config["clip"])
            opt_g.step()
        step += 1
        add("q", q.mean().item())
        add("mse", (255**2 * mse.detach()).mean().item())
        add("psnr", (10 * torch.log10(1 / mse.detach().clamp_min(1e-10))).mean().item())
        add("loss", loss.item())
        if step % config["ref_every"] == 0:
            with torch.no_grad():
                ref = encoder.net.g_s(latent)
                ref_mse = F.mse_loss(ref, x, reduction="none").flatten(1).mean(1)
                ref_psnr = (10 * torch.log10(1 / ref_mse.clamp_min(1e-10))).mean().item()
                add("psnr_faithful", ref_psnr)
                # the same crops through both decoders: the fair comparison
                add("dpsnr", (10 * torch.log10(1 / mse.detach().clamp_min(1e-10))).mean().item()
                    - ref_psnr)
                if lpips is not None:
                    ref_lp = lpips(ref, x).mean().item()
                    add("lpips_faithful", ref_lp)
                    add("dlpips", lp.mean().item() - ref_lp)
        if step % config["log_every"] == 0:
            means = {k: sums[k] / counts[k] for k in sums}
            sums.clear()
            counts.clear()
            if not np.isfinite(means["loss"]):
                rollbacks += 1
                if rollbacks > 5:
                    raise SystemExit(f"[gan] loss not finite at step {step} after 5 rollbacks")
                g_s.load_state_dict(good[0])
                disc.load_state_dict(good[1])
                opt_g.state.clear()
                opt_d.state.clear()
                scale /= 2
                print(f"[gan] loss not finite at step {step}: rolled back, lr x{scale}", flush=True)
                continue
            good = (copy.deepcopy(g_s.state_dict()), copy.deepcopy(disc.state_dict()))
            wall = wall0 + time.monotonic() - started
            row = {"step": step, "wall_s": f"{wall:.1f}", "lr_g": f"{config['lr_g'] * scale:.3g}",
                   "k_mse": f"{k_mse:.5g}"}
            if config["max_psnr_drop"] > 0 and train_g and "dpsnr" in means:
                k_mse = _control_k_mse(k_mse, -means["dpsnr"], config)
            for k in LOG_FIELDS[2:-2]:
                row[k] = f"{means[k]:.4f}" if k in means else ""
            new = not log_path.exists()
            with open(log_path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow(row)
            rate = (step - first) / max(1e-9, time.monotonic() - started)
            print("[gan] " + " ".join(f"{k} {row[k]}" for k in LOG_FIELDS if row.get(k) != "")
                  + f" ({rate:.2f} steps/s)", flush=True)
        if time.monotonic() - last_save > config["save_minutes"] * 60:
            save_checkpoint(directory, g_s, disc, opt_g, opt_d, step,
                            wall0 + time.monotonic() - started, config, k_mse)
            last_save = time.monotonic()
    save_checkpoint(directory, g_s, disc, opt_g, opt_d, step, wall0 + time.monotonic() - started,
                    config, k_mse)
    print(f"[gan] saved step {step} to {directory}", flush=True)
    return step


def _control_k_mse(k_mse: float, drop: float, config: dict) -> float:
    """Multiplicative dual ascent on the MSE weight: minimise LPIPS + adversarial subject to
    "PSNR at most --max-psnr-drop dB below the faithful decoder on the same crops". A drop above
    the target raises k_mse, one below lowers it; the rate is per log line and slow enough that
    g_s answers before k_mse has moved far. Bounded to 1/50..50x the starting weight."""
    k = k_mse * float(np.exp(config["k_mse_rate"] * (drop - config["max_psnr_drop"])))
    return float(np.clip(k, config["k_mse"] / 50, config["k_mse"] * 50))


def run(args: argparse.Namespace) -> int:
    config = {
        "init_codec": args.init_codec, "weights": str(resolve_codec(args.init_codec).resolve()),
        "shards": str(Path(args.shards).resolve()) if "://" not in args.shards else args.shards,
        "checkpoint_dir": str(Path(args.checkpoint_dir).resolve()),
        "k_mse": args.k_mse, "k_lpips": args.k_lpips, "k_adv": args.k_adv,
        "max_psnr_drop": args.max_psnr_drop, "k_mse_rate": args.k_mse_rate,
        "gan_loss": args.gan_loss, "d_channels": [int(c) for c in args.d_channels.split(",")],
        "d_condition": not args.d_unconditional, "d_norm": args.d_norm, "lr_g": args.lr_g, "lr_d": args.lr_d,
        "clip": args.clip, "q_min": args.q_min, "q_max": args.q_max, "batch": args.batch,
        "crop": args.crop, "steps": args.steps, "minutes": args.minutes, "threads": args.threads,
        "save_minutes": args.save_minutes, "log_every": args.log_every, "ref_every": args.ref_every,
        "d_start": 0, "g_start": args.d_warmup, "seed": args.seed,
        "refine": args.refine, "lr_refine_scale": args.lr_refine_scale,
        "init_g_s": str(Path(args.init_g_s).resolve()) if args.init_g_s else "",
        "log_lpips": not args.no_log_lpips, "snapshots": args.snapshots, "device": args.device,
    }
    if config["crop"] % 64:
        raise SystemExit("--crop must be a multiple of 64 (the codec's total stride)")
    fit_gan(config)
    return 0


# ----------------------------------------------------------------------------- evaluation


def evaluate(args: argparse.Namespace) -> int:
    """Sanity check on a few held-out images: same symbols, faithful vs realistic g_s.

    bpp counts the stream those symbols make (``models.learned``'s coder, frame header and
    quality included; before session 23 the 15 bytes of those were left out, about 0.4 % of
    the rate of a 512 x 512 crop at 0.1 bpp), so it holds for both decoders."""
    import torch
    from PIL import Image
    from safetensors.torch import load

    from models.codec import CodecError
    from models.hyperprior import pad_to
    from models.learned import LearnedModel, _channel_groups, _entropy_encode, stream_length
    from models.registry import _codec_class

    torch.set_num_threads(args.threads)
    raw = Path(args.g_s or Path(args.checkpoint_dir, CHECKPOINT)).read_bytes()
    meta = checkpoint_metadata(raw)
    config = json.loads(meta["config"])
    model = LearnedModel.from_file(args.weights or config["weights"])
    if model.sha256 != meta["pairs_with"]:
        raise SystemExit("checkpoint does not pair with these weights")
    encoder = FrozenEncoder(model)
    try:  # the stream's header carries the codec's code
        code = _codec_class(config["init_codec"]).code
    except CodecError:  # weights given by path: every registered learned code is one varint
        code = 10       # byte, as 10 is, so the length is the same
    g_s = make_synthesis(model, config)
    g_s.load_state_dict({k[4:]: v for k, v in load(raw).items() if k.startswith("g_s.")})
    g_s.eval()
    lpips = make_lpips({"k_lpips": 0.0, "log_lpips": True})
    try:  # the target metric; optional like LPIPS
        from models.perceptual import DISTS

        dists = DISTS().eval()
    except Exception as exc:
        print(f"[gan] DISTS unavailable: {exc}", flush=True)
        dists = None
    rows = []
    for path in args.images:
        with Image.open(path) as im:
            a = np.asarray(im.convert("RGB"))
        if args.crop:
            h, w = a.shape[:2]
            c = min(args.crop, h, w)
            a = a[(h - c) // 2:(h - c) // 2 + c, (w - c) // 2:(w - c) // 2 + c]
        x0 = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255
        x, (ph, pw) = pad_to(x0, 64)
        h, w = a.shape[:2]
        for quality in args.qualities:
            q = torch.tensor([quality - 1.0])
            y_sym, z_sym, mean, inv_gain, index = encoder.symbols(x, q)
            if index is None:  # factorized prior: y grouped by channel
                index = _channel_groups(model.M, tuple(y_sym.shape))
            words = _entropy_encode(model, None if z_sym is None else z_sym.numpy(),
                                    y_sym.numpy(), index)
            latent = (y_sym + mean).float() * inv_gain
            row = {"image": Path(path).name, "quality": quality,
                   "bpp": stream_length(code, h, w, ph, pw, words) * 8 / (h * w)}
            with torch.no_grad():
                for name, dec in (("faithful", encoder.net.g_s), ("realistic", g_s)):
                    out = dec(latent)[..., :h, :w].clamp(0, 1)
                    out = (out * 255).round() / 255  # what a decode writes
                    mse = float(((out - x0) ** 2).mean())
                    row[f"psnr_{name}"] = 10 * np.log10(1 / mse)
                    if lpips is not None:
                        row[f"lpips_{name}"] = float(lpips(out, x0).mean())
                    if dists is not None:
                        row[f"dists_{name}"] = float(dists(out, x0).mean())
                    if args.save_dir:
                        Path(args.save_dir).mkdir(parents=True, exist_ok=True)
                        Image.fromarray((out[0].permute(1, 2, 0).numpy() * 255).round()
                                        .astype(np.uint8)).save(
                            Path(args.save_dir, f"{Path(path).stem}_q{quality:g}_{name}.png"))
            rows.append(row)
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"step": int(meta["step"]), "rows": rows}, indent=2))
    return 0


# ----------------------------------------------------------------------------- export


INIT_KEYS = ("init_g_s", "init_g_s_sha256", "init_g_s_steps")


def trained_steps(meta: dict) -> int:
    """Training steps behind a g_s file, from its metadata: an exported decoder's ``steps``
    (all runs counted), or a checkpoint's or snapshot's ``step`` plus the steps of what that
    run itself started from; 0 for a file with neither (the faithful weights)."""
    if "steps" in meta:
        return int(meta["steps"])
    if "step" in meta:
        config = json.loads(meta.get("config", "{}"))
        return int(meta["step"]) + int(config.get("init_g_s_steps", 0))
    return 0


def init_g_s_record(raw: bytes) -> dict[str, Any]:
    """What a run continued from (``--init-g-s``): the file's sha256 and its training steps
    (``trained_steps``), so that an export can say how much training the decoder had in all."""
    return {"init_g_s_sha256": hashlib.sha256(raw).hexdigest(),
            "init_g_s_steps": trained_steps(checkpoint_metadata(raw))}


def _prior_steps(config: dict, directory: Path, checkpoint_sha: str) -> tuple[int, str] | None:
    """(steps, description) of the decoder a run continued from, or None for a fresh one.

    Runs before session 15 did not record it. For them the file of that name in the codec's
    weights folder is read, before the export overwrites it, and the card says so. That file
    may be an earlier export of this same checkpoint (a re-export): its metadata then names
    the checkpoint (``checkpoint_sha256``) and keeps the prior steps found the first time."""
    init = config.get("init_g_s")
    if not init:
        return None
    name = Path(init).name
    if "init_g_s_steps" in config:
        return (config["init_g_s_steps"],
                f"{name} (sha256 {config['init_g_s_sha256'][:16]}..., {config['init_g_s_steps']} steps)")
    local = directory / name
    if not local.is_file():
        print(f"[gan] {name}, which this run continued from, is not in {directory}: "
              "the card counts this run's steps only", flush=True)
        return 0, f"{name} (not found at export: its steps are not counted)"
    raw = local.read_bytes()
    meta = checkpoint_metadata(raw)
    if meta.get("checkpoint_sha256") == checkpoint_sha and "prior" in meta:
        prior = json.loads(meta["prior"])  # a re-export: what the first export found
        return prior["steps"], prior["description"]
    rec = init_g_s_record(raw)
    print(f"[gan] the checkpoint does not record {name}'s steps; read {local} instead "
          f"({rec['init_g_s_steps']} steps)", flush=True)
    return (rec["init_g_s_steps"], f"{name} (sha256 {rec['init_g_s_sha256'][:16]}..., "
            f"{rec['init_g_s_steps']} steps; read at export from the weights folder)")


def export(args: argparse.Namespace) -> int:
    """Ship a checkpoint's g_s as a registered realistic decoder of its faithful codec.

    Writes ``<codec>-<name>.safetensors`` (float16, metadata ``pairs_with`` = the faithful file's
    sha256, so ``models.realistic.load_realistic`` refuses it beside any other weights) into the
    codec's weights folder and records it in the registry with a card: what the loss, data,
    steps and hardware were, read from the checkpoint's own config where it has them."""
    import torch
    from safetensors.torch import load

    from models.learned import LearnedModel
    from models.realistic import export_realistic
    from models.weights import read_registry, register_decoder, weight_dirs

    raw = Path(args.g_s or Path(args.checkpoint_dir, CHECKPOINT)).read_bytes()
    meta = checkpoint_metadata(raw)
    config = json.loads(meta["config"])
    directory = next((d for d in weight_dirs() if args.codec in read_registry(d)), None)
    if directory is None:
        raise SystemExit(f"--codec {args.codec!r} is not a registered codec")
    model = LearnedModel.from_file(directory / read_registry(directory)[args.codec]["file"])
    if model.sha256 != meta["pairs_with"]:
        raise SystemExit(f"the checkpoint pairs with weights {meta['pairs_with'][:16]}..., "
                         f"{args.codec} is {model.sha256[:16]}...")
    g_s = make_synthesis(model, config)
    g_s.load_state_dict({k[4:]: v for k, v in load(raw).items() if k.startswith("g_s.")})
    step = int(meta["step"])
    checkpoint_sha = hashlib.sha256(raw).hexdigest()
    prior = _prior_steps(config, directory, checkpoint_sha)  # before its file is overwritten
    total = step + (prior[0] if prior else 0)
    file_name = f"{args.codec}-{args.name}.safetensors"
    extra = {"architecture": model.net.architecture, "steps": str(total), "run": args.record,
             "checkpoint_sha256": checkpoint_sha}
    if prior:
        extra["prior"] = json.dumps({"steps": prior[0], "description": prior[1]})
    sha = export_realistic(g_s, model.sha256, directory / file_name, torch.float16, extra)
    d = ",".join(str(c) for c in config["d_channels"])
    card = {
        "title": args.title or f"{args.codec} {args.name} decoder (GAN fine-tune of g_s)",
        "budget_label": args.budget_label, "steps": total,
        "wall_hours": round(float(meta.get("wall_s", 0)) / 3600, 2),
        "crops": f"{config['batch']} x {config['crop']}x{config['crop']} per step",
        "loss": (f"{config['k_mse']:g} * MSE(0-255) + {config['k_lpips']:g} LPIPS-alex + "
                 f"{config['k_adv']:g} {'hinge' if config['gan_loss'] == 'hinge' else 'non-saturating'}"
                 f" adversarial (conditional patch discriminator {d}, "
                 f"{'spectral norm' if config['d_norm'] == 'spectral' else 'no spectral norm'})"),
        "qualities_trained": f"{config['q_min'] + 1:g}..{config['q_max'] + 1:g} "
                             f"(internal {config['q_min']:g}..{config['q_max']:g})",
        "data": args.data, "hardware": args.hardware, "record": args.record,
    }
    if prior:
        card["continued_from"] = f"{prior[1]}; this run added {step} steps"
    if config.get("refine"):
        card["synthesis"] = (f"the codec's g_s widened with residual blocks {config['refine']} "
                             "(models.synthesis)")
    register_decoder(args.codec, args.name, file_name, sha, card, directory)
    print(json.dumps({"file": str(directory / file_name), "sha256": sha, "card": card}, indent=1))
    return 0


# ----------------------------------------------------------------------------- CLI


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init-codec", default="msh-n96",
                   help="faithful codec whose bitstream the realistic g_s decodes: a registered "
                        "id or a .safetensors weights file (default msh-n96)")
    p.add_argument("--shards", required=True, help="training shards (see `jobs.train prepare`)")
    p.add_argument("--checkpoint-dir", required=True, help="e.g. data/gan-msh-n96 (resumes)")
    p.add_argument("--k-mse", type=float, default=0.005, help="weight of MSE on the 0..255 scale")
    p.add_argument("--max-psnr-drop", type=float, default=0.0,
                   help="adapt k_mse (starting at --k-mse) so that PSNR on the training crops stays "
                        "this many dB below the faithful g_s on the same crops (0: fixed k_mse)")
    p.add_argument("--k-mse-rate", type=float, default=0.1,
                   help="log-step of that adaptation per log line and dB of error")
    p.add_argument("--k-lpips", type=float, default=1.0, help="weight of LPIPS-alex (0: off)")
    p.add_argument("--k-adv", type=float, default=0.1, help="weight of the adversarial loss (0: off)")
    p.add_argument("--gan-loss", choices=["ns", "hinge"], default="ns",
                   help="non-saturating (HiFiC) or hinge")
    p.add_argument("--d-channels", default="32,64,128",
                   help="discriminator widths, one stride-2 4x4 conv each")
    p.add_argument("--d-norm", choices=["none", "spectral"], default="none",
                   help="spectral norm on D's convolutions (HiFiC) or none: the plain D starts "
                        "learning within a few hundred steps, the CPU budget (models.discriminator)")
    p.add_argument("--d-unconditional", action="store_true",
                   help="do not show the discriminator the quantized latent")
    p.add_argument("--d-warmup", type=int, default=300,
                   help="first steps train only the discriminator (g_s frozen)")
    p.add_argument("--refine", default="",
                   help="widen g_s with residual blocks, LAYER:BLOCKS:WIDTH,... e.g. 1:2:192,3:2:96 "
                        "(models.synthesis; default none: the codec's own g_s)")
    p.add_argument("--init-g-s", default="",
                   help="start g_s from this decoder file (g_s.* tensors, e.g. a shipped realistic "
                        "decoder) instead of the faithful g_s; ignored when resuming")
    p.add_argument("--lr-refine-scale", type=float, default=1.0,
                   help="the residual blocks' learning rate as a multiple of --lr-g")
    p.add_argument("--lr-g", type=float, default=5e-5)
    p.add_argument("--lr-d", type=float, default=2e-4)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip for g_s")
    p.add_argument("--q-min", type=float, default=-1.0,
                   help="lowest internal quality (codec quality - 1) drawn per crop")
    p.add_argument("--q-max", type=float, default=0.5, help="highest internal quality")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=128, help="square crops, a multiple of 64")
    p.add_argument("--steps", type=int, default=1_000_000, help="stop at this total step")
    p.add_argument("--minutes", type=float, default=60, help="stop after this long (this chunk)")
    p.add_argument("--save-minutes", type=float, default=5)
    p.add_argument("--log-every", type=int, default=25)
    p.add_argument("--ref-every", type=int, default=5,
                   help="decode with the faithful g_s every N steps for the reference columns")
    p.add_argument("--no-log-lpips", action="store_true",
                   help="with --k-lpips 0, do not compute LPIPS for the log either")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where g_s, D, LPIPS and the frozen encoder run (checkpoints are CPU tensors "
                        "either way, so a GPU run resumes on a CPU and back)")
    p.add_argument("--snapshots", action="store_true",
                   help="also keep g_s at every save under snapshots/ (4 MB each), to choose "
                        "among the states an oscillating GAN run passes through")
    p.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None, via_train: bool = False) -> int:
    """``via_train``: called by ``python -m jobs.train run --gan``, whose usage line this shows."""
    parser = argparse.ArgumentParser(prog="python -m jobs.train_gan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("run", help="train the realistic g_s (resumes from --checkpoint-dir)",
                       prog="python -m jobs.train run --gan" if via_train else None,
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(p)
    p = sub.add_parser("eval", help="faithful vs realistic on a few held-out images (never Kodak "
                                    "for choices made while training)")
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--weights", help="faithful weights file (default: the one trained from)")
    p.add_argument("--g-s", help="a snapshots/g_s-*.safetensors file instead of the checkpoint")
    p.add_argument("--images", nargs="+", required=True)
    p.add_argument("--qualities", type=float, nargs="+", default=[0.0, 1.0],
                   help="codec qualities (internal + 1), e.g. 0 1")
    p.add_argument("--crop", type=int, default=0, help="centre crop to this size (0: whole image)")
    p.add_argument("--save-dir", help="write the decoded crops here as PNG")
    p.add_argument("--json", help="write the table here")
    p.add_argument("--threads", type=int, default=1)
    p = sub.add_parser("export", help="ship a checkpoint's g_s as a registered decoder of its codec")
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--g-s", help="a snapshots/g_s-*.safetensors file instead of the checkpoint")
    p.add_argument("--codec", required=True, help="the registered faithful codec, e.g. msh-n96-v2")
    p.add_argument("--name", default="realistic", help="decoder name (restore --decoder NAME)")
    p.add_argument("--title", default="")
    p.add_argument("--budget-label", required=True,
                   help="one line for users: how much training this is and how it measured")
    p.add_argument("--data", required=True, help="training data and its terms")
    p.add_argument("--hardware", required=True)
    p.add_argument("--record", required=True, help="where the training record is (a README)")
    args = parser.parse_args(argv)
    if args.cmd == "eval":
        return evaluate(args)
    if args.cmd == "export":
        return export(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
