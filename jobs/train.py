r"""`python -m jobs.train`: train the learned codec on Ray Train, in resumable chunks.

    python -m jobs.train prepare --out data/train-shards        # once: build training shards
    python -m jobs.train run --shards data/train-shards --checkpoint-dir checkpoints/msh \
        --minutes 30                                            # train; rerun to continue

``prepare`` reads ../shared/datasets/bsds500 and imagenet_samples (training sets only; never
Kodak, the Wikipedia photos or the face sets), scales each image down by a seeded factor in
[0.5, 0.75] with an antialiasing filter (their JPEG block artefacts shrink below the codec's
attention) and writes WebDataset shards of PNGs. ``run`` reads those shards through the
pipeline's own source code (fsspec + ``pipeline.tars``), takes random crops and flips, and
optimises lambda * 255^2 * MSE + bpp with lambda drawn per crop from the continuous quality
range. Checkpoints (model, optimizer, step) are safetensors written atomically every few
minutes, and a CSV loss log grows beside them; a rerun resumes from the checkpoint.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

TRAIN_SETS = ("bsds500", "imagenet_samples")
NEVER_TRAIN_ON = ("kodak", "wikipedia_photos_hr", "faces_utkface", "faces_celebahq")
CHECKPOINT = "checkpoint.safetensors"
OPTIMIZER = "optimizer.safetensors"
PAPERS = {
    "mean-scale": "mean-scale hyperprior (Minnen et al. 2018, without the serial context model)",
    "scale": "scale hyperprior (Balle et al. 2018)",
    "factorized": "factorized prior (Balle et al. 2017)",
}
LOSS_LOG = "loss_log.csv"


# ----------------------------------------------------------------------------- prepare


def prepare(datasets: Path, out: Path, images_per_shard: int = 128, seed: int = 0,
            image_format: str = "png", min_side: int = 0, jpeg_quality: int = 95,
            subsampling: int = 0) -> int:
    """Downscale the training images and write them as WebDataset shards of PNGs (or JPEGs at
    ``jpeg_quality``, chroma ``subsampling`` 0 = 4:4:4 or 2 = 4:2:0: a quarter of the bytes or
    less, for carrying the set to a GPU machine; the same seed gives the same images).

    ``min_side``: scale down less where needed so that the shorter side stays at least this
    (never up): training on crops of that size then never edge-replicates. The factor is drawn
    from [0.5, 0.75], each end raised to min_side / shorter side (at most 1)."""
    from PIL import Image

    from pipeline.tars import Sample, write_samples

    files = []
    for name in TRAIN_SETS:
        files += sorted(p for p in (datasets / name).rglob("*")
                        if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if any(bad in str(f) for f in files for bad in NEVER_TRAIN_ON):
        raise SystemExit("refusing: an evaluation set is among the training files")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(files))
    out.mkdir(parents=True, exist_ok=True)
    samples, shard = [], 0
    for count, i in enumerate(order, 1):
        path = files[i]
        with Image.open(path) as im:
            im = im.convert("RGB")
            floor = min(1.0, min_side / min(im.size)) if min_side else 0.0
            factor = rng.uniform(max(0.5, floor), max(0.75, floor))
            size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
            small = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        buf = io.BytesIO()
        if image_format == "jpg":
            small.save(buf, format="JPEG", quality=jpeg_quality, subsampling=subsampling)
        else:
            small.save(buf, format="PNG")
        meta = {"source": str(path.relative_to(datasets)), "factor": round(factor, 4)}
        samples.append(Sample(f"{path.parent.name}_{path.stem}",
                              [(image_format, buf.getvalue()), ("json", json.dumps(meta).encode())]))
        if len(samples) == images_per_shard or count == len(order):
            with open(out / f"train-{shard:06d}.tar", "wb") as f:
                write_samples(f, samples)
            samples, shard = [], shard + 1
    return len(files)


# ----------------------------------------------------------------------------- training


def load_images(shards: str) -> list[np.ndarray]:
    """Decode every training image into memory (a few hundred MB) through the pipeline's reader."""
    from pipeline.images import Unsupported, image_member_index, prepare
    from pipeline.sources import expand_sources
    from pipeline.storage import filesystem
    from pipeline.tars import iter_samples

    images = []
    for shard in expand_sources([shards]):
        fs, path = filesystem(shard.url)
        with fs.open(path, "rb") as f:
            for sample in iter_samples(f, shard.name):
                pos = image_member_index(sample.suffixes())
                if pos is None:
                    continue
                try:
                    images.append(prepare(sample.members[pos][1])[0])
                except Unsupported:
                    continue
    return images


class CropSampler:
    """Random crops with flips, drawn on the training device in one gather.

    All images live in one flat uint8 buffer on the device (no padding, so one large image does
    not inflate the rest); a batch is one index computation plus one gather, with no host
    round trip per step, which keeps a GPU busy with small models. Images smaller than the crop
    are edge-replicated."""

    def __init__(self, images: list[np.ndarray], crop: int, device: str, seed: int) -> None:
        import torch

        if not images:
            raise SystemExit("no training images")
        self.crop, self.device = crop, device
        self.flat = torch.cat([torch.from_numpy(np.array(im, np.uint8).reshape(-1))
                               for im in images]).to(device)
        sizes = [im.shape[0] * im.shape[1] * 3 for im in images]
        self.offsets = torch.tensor(np.concatenate([[0], np.cumsum(sizes)[:-1]]), device=device)
        self.h = torch.tensor([im.shape[0] for im in images], device=device)
        self.w = torch.tensor([im.shape[1] for im in images], device=device)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed)
        self.r = torch.arange(crop, device=device)

    def __call__(self, batch: int):
        import torch

        c, g = self.crop, self.gen
        i = torch.randint(len(self.h), (batch,), generator=g, device=self.device)
        h, w = self.h[i], self.w[i]

        def axis(size):
            start = (torch.rand(batch, generator=g, device=self.device)
                     * (size - c + 1).clamp(min=1)).long()
            flip = torch.rand(batch, generator=g, device=self.device) < 0.5
            pos = torch.where(flip[:, None], start[:, None] + c - 1 - self.r, start[:, None] + self.r)
            return torch.minimum(pos, size[:, None] - 1)

        ys, xs = axis(h), axis(w)
        lin = self.offsets[i][:, None, None] + (ys[:, :, None] * w[:, None, None] + xs[:, None, :]) * 3
        pixels = self.flat[lin[..., None] + torch.arange(3, device=self.device)]
        return pixels.permute(0, 3, 1, 2).float().div_(255.0)


def save_checkpoint(directory: str, model, optimizer, step: int, config: dict) -> None:
    """Model and step in ``checkpoint.safetensors``; Adam's moments (bfloat16: enough to resume,
    half the bytes) in ``optimizer.safetensors``. Each written atomically, optimizer first, so a
    checkpoint never pairs with an older step's optimizer state."""
    import torch
    from safetensors.torch import save

    from pipeline.storage import join, write_bytes_atomic

    meta = {"step": str(step), "config": json.dumps(config, sort_keys=True)}
    moments = {}
    for i, p in enumerate(model.parameters()):
        state = optimizer.state.get(p, {})
        for name in ("exp_avg", "exp_avg_sq"):
            if name in state:
                moments[f"optim.{i}.{name}"] = state[name].to(torch.bfloat16).cpu().contiguous()
    write_bytes_atomic(join(directory, OPTIMIZER), save(moments, metadata=meta))
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_bytes_atomic(join(directory, CHECKPOINT), save(tensors, metadata=meta))


def load_checkpoint(directory: str, model, optimizer) -> int:
    """Restores model and step; Adam's moments too when ``optimizer.safetensors`` (or the older
    single-file layout) has them for the same step. Returns the step."""
    import torch
    from safetensors.torch import load

    from pipeline.storage import exists, join, read_bytes

    raw = read_bytes(join(directory, CHECKPOINT))
    tensors = load(raw)
    step = int(_safetensors_metadata(raw)["step"])
    device = next(model.parameters()).device
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    moments = {k: v for k, v in tensors.items() if k.startswith("optim.")}
    opt_url = join(directory, OPTIMIZER)
    if not moments and exists(opt_url):
        opt_raw = read_bytes(opt_url)
        if int(_safetensors_metadata(opt_raw)["step"]) == step:
            moments = load(opt_raw)
    for i, p in enumerate(model.parameters()):
        if f"optim.{i}.exp_avg" in moments:
            optimizer.state[p] = {
                "step": torch.tensor(float(step)),
                "exp_avg": moments[f"optim.{i}.exp_avg"].to(device, torch.float32),
                "exp_avg_sq": moments[f"optim.{i}.exp_avg_sq"].to(device, torch.float32),
            }
    return step


def _init_from(url: str, model) -> None:
    """Start a variant from another checkpoint's tensors where names and shapes match (e.g. the
    transforms of the mean-scale model for the scale-hyperprior and factorized variants)."""
    from safetensors.torch import load

    from pipeline.storage import read_bytes

    source = {k[len("model."):]: v for k, v in load(read_bytes(url)).items() if k.startswith("model.")}
    own = model.state_dict()
    taken = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(taken, strict=False)
    print(f"[train] initialised {len(taken)}/{len(own)} tensors from {url}", flush=True)


def _safetensors_metadata(raw: bytes) -> dict:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8:8 + n]).get("__metadata__", {})


def learning_rate(config: dict, step: int, start_step: int, elapsed: float) -> float:
    """Warm up over ``warmup`` steps after a start without optimizer state; then constant, except
    that the last ``decay_last`` fraction of this chunk's minutes anneals (cosine) to lr/20."""
    lr = config["lr"]
    warm = config.get("warmup", 0)
    if warm and step - start_step < warm:
        lr *= 0.1 + 0.9 * (step - start_step) / warm
    frac = config.get("decay_last", 0.0)
    if frac > 0:
        t = (elapsed / (config["minutes"] * 60) - (1 - frac)) / frac
        if t > 0:
            lr *= 0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * min(t, 1.0)))
    return lr


def fit(config: dict, rank: int = 0, world: int = 1, report=None, wrap=None) -> int:
    """The training loop, shared by Ray Train workers and ``--no-ray``; returns the final step.

    Rank 0 writes checkpoints and the loss log. Losses stay on the device between log lines (no
    per-step synchronisation); a non-finite loss at a log line rolls the model back to the last
    good log line and halves the learning rate."""
    import torch

    from models.hyperprior import LAMBDAS, MeanScaleHyperprior, rd_loss
    from pipeline.storage import exists, join

    device = config.get("device", "cpu")
    if device == "cpu":
        torch.set_num_threads(config["threads"])
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(config["seed"] + rank)
    model = MeanScaleHyperprior(config["N"], config["M"], prior=config.get("prior", "mean-scale"))
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"],
                                 fused=device.startswith("cuda"))
    directory = config["checkpoint_dir"]
    step = load_checkpoint(directory, model, optimizer) if exists(join(directory, CHECKPOINT)) else 0
    if step == 0 and config.get("init_from"):
        _init_from(config["init_from"], model)
    first = step
    start_step = step if not optimizer.state else -10**9  # warm up only without Adam state
    ddp = wrap(model) if wrap is not None and world > 1 else model
    images = load_images(config["shards"])
    sampler = CropSampler(images, config["crop"], device, config["seed"] + 1000 * rank + step)
    log_path = Path(directory) / LOSS_LOG
    started = last_save = time.monotonic()
    sums = torch.zeros(3, device=device)
    count, rollbacks = 0, 0
    good = {k: v.detach().clone() for k, v in model.state_dict().items()}
    scale = 1.0
    print(f"[train] rank {rank}: {len(images)} images on {device}, resuming at step {step}",
          flush=True)
    model.train()
    while step < config["steps"] and time.monotonic() - started < config["minutes"] * 60:
        lr = learning_rate(config, step, start_step, time.monotonic() - started) * scale
        for group in optimizer.param_groups:
            group["lr"] = lr
        x = sampler(config["batch"])
        quality = torch.rand(x.shape[0], device=device) * (len(LAMBDAS) - 1)
        losses = rd_loss(ddp(x, quality), x, quality)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        count += 1
        sums += torch.stack([losses[k].detach() for k in ("loss", "bpp", "psnr")])
        if step % config["log_every"] == 0:
            loss, bpp, psnr = (sums / count).tolist()
            sums.zero_()
            count = 0
            if not np.isfinite(loss):
                rollbacks += 1
                if rollbacks > 5:
                    raise SystemExit(f"[train] loss not finite at step {step} after 5 rollbacks")
                model.load_state_dict(good)
                optimizer.state.clear()
                scale /= 2
                print(f"[train] loss not finite at step {step}: rolled back, lr x{scale}", flush=True)
                continue
            good = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if report is not None:
                report({"step": step, "loss": loss, "bpp": bpp, "psnr": psnr})
            if rank == 0:
                new = not log_path.exists()
                with open(log_path, "a", newline="") as f:
                    writer = csv.writer(f)
                    if new:
                        writer.writerow(["step", "loss", "bpp", "psnr", "lr", "wall_s"])
                    writer.writerow([step, f"{loss:.4f}", f"{bpp:.4f}", f"{psnr:.3f}",
                                     f"{lr:.3g}", round(time.monotonic() - started, 1)])
                rate = (step - first) / max(1e-9, time.monotonic() - started)
                print(f"[train] step {step} loss {loss:.3f} bpp {bpp:.3f} psnr {psnr:.2f} "
                      f"lr {lr:.2g} ({rate:.1f} steps/s)", flush=True)
        if rank == 0 and time.monotonic() - last_save > config["save_minutes"] * 60:
            save_checkpoint(directory, model, optimizer, step, config)
            last_save = time.monotonic()
    if rank == 0:
        save_checkpoint(directory, model, optimizer, step, config)
        print(f"[train] saved step {step} to {directory}", flush=True)
    return step


def train_loop(config: dict) -> None:
    """Runs in each Ray Train worker."""
    import ray.train
    import ray.train.torch

    context = ray.train.get_context()
    config = {**config, "device": str(ray.train.torch.get_device())}
    fit(config, context.get_world_rank(), context.get_world_size(), report=ray.train.report,
        wrap=ray.train.torch.prepare_model)


def export(args: argparse.Namespace) -> int:
    """Checkpoint -> decoder-defining weights file + registry entry + model card."""
    import torch

    from models.hyperprior import LAMBDAS, MeanScaleHyperprior
    from models.learned import export_weights
    from models.weights import WEIGHTS_DIR, register_weights

    raw = Path(args.checkpoint_dir, CHECKPOINT).read_bytes()
    meta = _safetensors_metadata(raw)
    config, step = json.loads(meta["config"]), int(meta["step"])
    model = MeanScaleHyperprior(config["N"], config["M"], prior=config.get("prior", "mean-scale"))
    optimizer = torch.optim.Adam(model.parameters())
    load_checkpoint(args.checkpoint_dir, model, optimizer)
    dtype = torch.float16 if args.fp16 else torch.float32
    directory = Path(args.weights_dir) if args.weights_dir else WEIGHTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{args.id}.safetensors"
    sha = export_weights(model, path, dtype, metadata={"id": args.id, "steps": str(step)})
    log = list(csv.DictReader(open(Path(args.checkpoint_dir, LOSS_LOG))))
    wall = sum(float(r["wall_s"]) for r in _chunk_ends(log))
    card = {
        "id": args.id,
        "title": f"{model.architecture} N={config['N']} M={config['M']}",
        "architecture": f"{PAPERS[model.prior]}, gain units (Cui et al. 2021), "
                        f"N={config['N']}, M={config['M']}",
        "steps": step, "crops": f"{config['batch']} x {config['crop']}x{config['crop']} per step",
        "lambdas": list(LAMBDAS), "quality_range": [1, len(LAMBDAS)],
        "loss": "lambda * 255^2 * MSE + bpp, lambda interpolated in log domain per crop",
        "data": args.data,
        "hardware": args.hardware, "wall_hours": round(wall / 3600, 2),
        "last_log": log[-1] if log else None, "weights_dtype": str(dtype).replace("torch.", ""),
        "sha256": sha, "code": args.code, "budget_label": args.label,
    }
    register_weights(args.id, path.name, sha, args.code, card, directory)
    print(json.dumps(card, indent=2))
    return 0


def _chunk_ends(log: list[dict]) -> list[dict]:
    """Rows where a training chunk ended (wall time restarts at each resume)."""
    ends = []
    for i, row in enumerate(log):
        if i + 1 == len(log) or float(log[i + 1]["wall_s"]) < float(row["wall_s"]):
            ends.append(row)
    return ends


def run(args: argparse.Namespace) -> int:
    config = {
        "shards": str(Path(args.shards).resolve()) if "://" not in args.shards else args.shards,
        "checkpoint_dir": str(Path(args.checkpoint_dir).resolve()),
        "N": args.N, "M": args.M, "prior": args.prior, "init_from": args.init_from,
        "lr": args.lr, "batch": args.batch, "crop": args.crop,
        "steps": args.steps, "minutes": args.minutes, "threads": args.threads,
        "save_minutes": args.save_minutes, "log_every": args.log_every, "seed": args.seed,
        "warmup": args.warmup, "decay_last": args.decay_last,
        "device": "cuda" if args.gpu else "cpu",
    }
    Path(config["checkpoint_dir"]).mkdir(parents=True, exist_ok=True)
    if args.no_ray:
        fit(config)
        return 0
    if not os.environ.get("RAY_ADDRESS"):  # in-process Ray on loopback only
        from pipeline.runner import prefer_loopback

        prefer_loopback()
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=args.workers, use_gpu=args.gpu,
                                     resources_per_worker={"CPU": args.cpus_per_worker}),
        run_config=RunConfig(name="latentarc-train",
                             storage_path=str(Path(args.checkpoint_dir).resolve() / "ray")),
    )
    trainer.fit()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build training shards from ../shared training sets")
    p.add_argument("--datasets", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    p.add_argument("--out", type=Path, required=True, help="directory for the training shards")
    p.add_argument("--image-format", choices=["png", "jpg"], default="png",
                   help="png (lossless, default) or jpg (compact, to carry elsewhere)")
    p.add_argument("--min-side", type=int, default=0,
                   help="downscale less so the shorter side stays >= this (e.g. the crop size)")
    p.add_argument("--jpeg-quality", type=int, default=95,
                   help="quality of --image-format jpg (default 95)")
    p.add_argument("--subsampling", type=int, choices=[0, 2], default=0,
                   help="JPEG chroma subsampling: 0 = 4:4:4 (default), 2 = 4:2:0")
    p = sub.add_parser("run", help="train (resumes from --checkpoint-dir)")
    p.add_argument("--shards", required=True, help="training shards (directory, URL or brace list)")
    p.add_argument("--checkpoint-dir", required=True,
                   help=f"where {CHECKPOINT} and {LOSS_LOG} are kept; a run resumes from it")
    p.add_argument("--prior", choices=["mean-scale", "scale", "factorized"], default="mean-scale",
                   help="entropy model of the latent (default mean-scale)")
    p.add_argument("--init-from", help="checkpoint whose matching tensors start a new run")
    p.add_argument("--N", type=int, default=64, help="channels of the hidden layers (default 64)")
    p.add_argument("--M", type=int, default=96, help="channels of the latent y (default 96)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default 1e-4)")
    p.add_argument("--batch", type=int, default=16, help="crops per step (default 16)")
    p.add_argument("--crop", type=int, default=128, help="square crop side in pixels (default 128)")
    p.add_argument("--steps", type=int, default=1_000_000, help="stop at this total step")
    p.add_argument("--minutes", type=float, default=60, help="stop after this long (this chunk)")
    p.add_argument("--save-minutes", type=float, default=5,
                   help="checkpoint at least this often (default 5)")
    p.add_argument("--log-every", type=int, default=50,
                   help=f"steps between rows of {LOSS_LOG}, log lines and the finite-loss check "
                        "(default 50)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    p.add_argument("--workers", type=int, default=1, help="Ray Train workers (default 1)")
    p.add_argument("--cpus-per-worker", type=float, default=1,
                   help="CPUs each Ray Train worker reserves (default 1)")
    p.add_argument("--gpu", action="store_true", help="train on CUDA (Ray Train GPU workers)")
    p.add_argument("--no-ray", action="store_true",
                   help="train in this process without Ray Train (a single-GPU machine without "
                        "Ray installed); same loop, checkpoints and log")
    p.add_argument("--warmup", type=int, default=500,
                   help="steps of linear warm-up when starting without optimizer state")
    p.add_argument("--decay-last", type=float, default=0.0,
                   help="anneal the lr (cosine, to lr/20) over this last fraction of --minutes")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the weights' init and the crops (default 0)")
    p.add_argument("--gan", action="store_true",
                   help="instead: GAN fine-tune of a codec's synthesis transform (realistic "
                        "decoder), handled by jobs.train_gan; `run --gan --help` lists its flags")
    p = sub.add_parser("export", help="checkpoint -> models/weights/<id>.safetensors + registry")
    p.add_argument("--checkpoint-dir", required=True, help="the directory `run` trained in")
    p.add_argument("--id", required=True, help="codec id, e.g. msh-n64")
    p.add_argument("--code", type=int, required=True, help="bitstream header code (never reuse)")
    p.add_argument("--label", required=True, help="training budget label shown by `latentarc codecs`")
    p.add_argument("--hardware", default="2-core CPU (no GPU)",
                   help="the model card's hardware line (default: 2-core CPU (no GPU))")
    p.add_argument("--fp16", action="store_true", help="store transforms as float16")
    p.add_argument("--weights-dir", help="where to write (default: models/weights, the shipped registry)")
    p.add_argument("--data", default="BSDS500 (500) + ImageNet samples (400), downscaled x0.5-0.75; "
                   "research-use terms of those sets apply to these weights",
                   help="the model card's training-data line")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"] and "--gan" in argv:  # its own flags: parsed by jobs.train_gan
        from jobs import train_gan

        return train_gan.main([a for a in argv if a != "--gan"], via_train=True)
    args = parser.parse_args(argv)
    if args.cmd == "export":
        return export(args)
    if args.cmd == "prepare":
        n = prepare(args.datasets, args.out, image_format=args.image_format,
                    min_side=args.min_side, jpeg_quality=args.jpeg_quality,
                    subsampling=args.subsampling)
        print(f"prepare: {n} training images written as shards under {args.out}")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
