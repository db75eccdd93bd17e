"""`python -m jobs.train`: train the learned codec on Ray Train, in resumable chunks.

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
PAPERS = {
    "mean-scale": "mean-scale hyperprior (Minnen et al. 2018, without the serial context model)",
    "scale": "scale hyperprior (Balle et al. 2018)",
    "factorized": "factorized prior (Balle et al. 2017)",
}
LOSS_LOG = "loss_log.csv"


# ----------------------------------------------------------------------------- prepare


def prepare(datasets: Path, out: Path, images_per_shard: int = 128, seed: int = 0) -> int:
    """Downscale the training images and write them as WebDataset shards of PNGs."""
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
            factor = rng.uniform(0.5, 0.75)
            size = (max(1, round(im.width * factor)), max(1, round(im.height * factor)))
            small = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        buf = io.BytesIO()
        small.save(buf, format="PNG")
        meta = {"source": str(path.relative_to(datasets)), "factor": round(factor, 4)}
        samples.append(Sample(f"{path.parent.name}_{path.stem}",
                              [("png", buf.getvalue()), ("json", json.dumps(meta).encode())]))
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


def random_batch(images: list[np.ndarray], rng: np.random.Generator, batch: int, crop: int):
    import torch

    out = np.empty((batch, crop, crop, 3), np.uint8)
    for b in range(batch):
        im = images[rng.integers(len(images))]
        h, w = im.shape[:2]
        if h < crop or w < crop:  # too small for a crop: tile it
            im = np.pad(im, ((0, max(0, crop - h)), (0, max(0, crop - w)), (0, 0)), mode="reflect")
            h, w = im.shape[:2]
        y, x = rng.integers(h - crop + 1), rng.integers(w - crop + 1)
        patch = im[y:y + crop, x:x + crop]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        if rng.random() < 0.5:
            patch = patch[::-1]
        out[b] = patch
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)


def save_checkpoint(url: str, model, optimizer, step: int, config: dict) -> None:
    """Model, Adam state and step in one safetensors file, written atomically."""
    from safetensors.torch import save

    from pipeline.storage import write_bytes_atomic

    tensors = {f"model.{k}": v.detach().contiguous() for k, v in model.state_dict().items()}
    for i, p in enumerate(model.parameters()):
        state = optimizer.state.get(p, {})
        for name in ("exp_avg", "exp_avg_sq"):
            if name in state:
                tensors[f"optim.{i}.{name}"] = state[name].contiguous()
    meta = {"step": str(step), "config": json.dumps(config, sort_keys=True)}
    write_bytes_atomic(url, save(tensors, metadata=meta))


def load_checkpoint(url: str, model, optimizer) -> int:
    import torch
    from safetensors.torch import load

    from pipeline.storage import read_bytes

    raw = read_bytes(url)
    tensors = load(raw)
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    step = int(_safetensors_metadata(raw)["step"])
    for i, p in enumerate(model.parameters()):
        if f"optim.{i}.exp_avg" in tensors:
            optimizer.state[p] = {
                "step": torch.tensor(float(step)),
                "exp_avg": tensors[f"optim.{i}.exp_avg"],
                "exp_avg_sq": tensors[f"optim.{i}.exp_avg_sq"],
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


def train_loop(config: dict) -> None:
    """Runs in each Ray Train worker (rank 0 writes checkpoints and the loss log)."""
    import ray.train
    import torch

    from models.hyperprior import LAMBDAS, MeanScaleHyperprior, rd_loss
    from pipeline.storage import exists, join

    torch.set_num_threads(config["threads"])
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(config["seed"] + rank)
    model = MeanScaleHyperprior(config["N"], config["M"], prior=config.get("prior", "mean-scale"))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    ckpt = join(config["checkpoint_dir"], CHECKPOINT)
    step = load_checkpoint(ckpt, model, optimizer) if exists(ckpt) else 0
    if step == 0 and config.get("init_from"):
        _init_from(config["init_from"], model)
    for group in optimizer.param_groups:
        group["lr"] = config["lr"]
    if ray.train.get_context().get_world_size() > 1:
        model = ray.train.torch.prepare_model(model)
    core = model.module if hasattr(model, "module") else model
    images = load_images(config["shards"])
    rng = np.random.default_rng(config["seed"] + 1000 * rank + step)
    log_path = Path(config["checkpoint_dir"]) / LOSS_LOG
    started = last_save = time.monotonic()
    window: list[list[float]] = []
    print(f"[train] rank {rank}: {len(images)} images, resuming at step {step}", flush=True)
    model.train()
    while step < config["steps"] and time.monotonic() - started < config["minutes"] * 60:
        x = random_batch(images, rng, config["batch"], config["crop"])
        quality = torch.rand(x.shape[0]) * (len(LAMBDAS) - 1)
        out = model(x, quality)
        losses = rd_loss(out, x, quality)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        window.append([float(losses[k]) for k in ("loss", "bpp", "psnr")])
        if step % config["log_every"] == 0:
            loss, bpp, psnr = np.mean(window, axis=0)
            window = []
            ray.train.report({"step": step, "loss": loss, "bpp": bpp, "psnr": psnr})
            if rank == 0:
                new = not log_path.exists()
                with open(log_path, "a", newline="") as f:
                    writer = csv.writer(f)
                    if new:
                        writer.writerow(["step", "loss", "bpp", "psnr", "lr", "wall_s"])
                    writer.writerow([step, f"{loss:.4f}", f"{bpp:.4f}", f"{psnr:.3f}",
                                     config["lr"], round(time.monotonic() - started, 1)])
                print(f"[train] step {step} loss {loss:.3f} bpp {bpp:.3f} psnr {psnr:.2f}", flush=True)
        if rank == 0 and time.monotonic() - last_save > config["save_minutes"] * 60:
            save_checkpoint(ckpt, core, optimizer, step, config)
            last_save = time.monotonic()
    if rank == 0:
        save_checkpoint(ckpt, core, optimizer, step, config)
        print(f"[train] saved step {step} to {ckpt}", flush=True)


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
    load_checkpoint(str(Path(args.checkpoint_dir, CHECKPOINT)), model, optimizer)
    dtype = torch.float16 if args.fp16 else torch.float32
    directory = Path(args.weights_dir) if args.weights_dir else WEIGHTS_DIR
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
        "data": "BSDS500 (500) + ImageNet samples (400), downscaled x0.5-0.75; research-use terms "
                "of those sets apply to these weights",
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
    if not os.environ.get("RAY_ADDRESS"):  # in-process Ray on loopback only (read at import)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    config = {
        "shards": str(Path(args.shards).resolve()) if "://" not in args.shards else args.shards,
        "checkpoint_dir": str(Path(args.checkpoint_dir).resolve()),
        "N": args.N, "M": args.M, "prior": args.prior, "init_from": args.init_from,
        "lr": args.lr, "batch": args.batch, "crop": args.crop,
        "steps": args.steps, "minutes": args.minutes, "threads": args.threads,
        "save_minutes": args.save_minutes, "log_every": args.log_every, "seed": args.seed,
    }
    Path(config["checkpoint_dir"]).mkdir(parents=True, exist_ok=True)
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
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build training shards from ../shared training sets")
    p.add_argument("--datasets", type=Path,
                   default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("run", help="train (resumes from --checkpoint-dir)")
    p.add_argument("--shards", required=True, help="training shards (directory, URL or brace list)")
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--prior", choices=["mean-scale", "scale", "factorized"], default="mean-scale")
    p.add_argument("--init-from", help="checkpoint whose matching tensors start a new run")
    p.add_argument("--N", type=int, default=64)
    p.add_argument("--M", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=128)
    p.add_argument("--steps", type=int, default=1_000_000, help="stop at this total step")
    p.add_argument("--minutes", type=float, default=60, help="stop after this long (this chunk)")
    p.add_argument("--save-minutes", type=float, default=5)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--gpu", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("export", help="checkpoint -> models/weights/<id>.safetensors + registry")
    p.add_argument("--checkpoint-dir", required=True)
    p.add_argument("--id", required=True, help="codec id, e.g. msh-n64")
    p.add_argument("--code", type=int, required=True, help="bitstream header code (never reuse)")
    p.add_argument("--label", required=True, help="training budget label shown by `latentarc codecs`")
    p.add_argument("--hardware", default="2-core CPU (no GPU)")
    p.add_argument("--fp16", action="store_true", help="store transforms as float16")
    p.add_argument("--weights-dir", help="where to write (default: models/weights, the shipped registry)")
    args = parser.parse_args(argv)
    if args.cmd == "export":
        return export(args)
    if args.cmd == "prepare":
        n = prepare(args.datasets, args.out)
        print(f"prepare: {n} training images written as shards under {args.out}")
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
