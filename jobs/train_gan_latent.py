r"""Train the gan-latent encoder, fit its prior, export the codec's weights.

    python -m jobs.train_gan_latent train --faces ../shared/datasets/faces_utkface \
        --out data/gan-latent --minutes 20
    python -m jobs.train_gan_latent export --checkpoint data/gan-latent --label "..."

The generator is fixed (fetched DCGAN, ``models.pretrained``); only the encoder learns. It sees
two kinds of pairs: real faces (pixel loss on G(E(x)), plus LPIPS-alex when the metric weights
are fetched) and the generator's own samples, where the true latent is known (latent loss),
which gives unlimited data beside the 400 training faces. The encoder is only a first guess;
encode-time refinement (``--effort``) does most of the fitting, so the prior's scales are
fitted on refined latents of the training faces.

faces_utkface is split by a hash of the file name: about one file in five is held out for
evaluation (``held_out``); those are never trained on. Research-use terms of UTKFace apply.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from models.gan_latent import (
    DEFAULT_EFFORT,
    SIZE,
    STEPS,
    GanLatentModel,
    LatentEncoder,
    export_weights,
    fit_latents,
    load_generator,
)


def held_out(name: str) -> bool:
    """Deterministic evaluation split of faces_utkface (about 20%)."""
    return hashlib.sha1(name.encode()).digest()[0] % 5 == 0


def face_files(directory: Path, split: str) -> list[Path]:
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [p for p in files if held_out(p.name) == (split == "test")]


def load_faces(files: list[Path], size: int) -> torch.Tensor:
    arrays = [np.asarray(Image.open(f).convert("RGB").resize((size, size), Image.LANCZOS))
              for f in files]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


def _perceptual():
    try:
        from models.perceptual import LPIPS

        return LPIPS("alex")
    except Exception as exc:  # weights not fetched: train on pixels only, say so
        print(f"LPIPS unavailable ({exc}); training with pixel + latent losses only", flush=True)
        return None


def train(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = face_files(Path(args.faces), "train")
    faces = load_faces(files, SIZE + 4)  # 4 px of jitter for random crops
    print(f"{len(files)} training faces from {args.faces}", flush=True)
    g = load_generator()
    enc = LatentEncoder()
    opt = torch.optim.Adam(enc.parameters(), lr=args.lr)
    step = 0
    ckpt = out / "encoder.safetensors"
    if ckpt.exists():
        state = load_file(ckpt)
        enc.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
        step = int(json.loads((out / "state.json").read_text())["step"])
        print(f"resumed at step {step}", flush=True)
    lp = _perceptual() if args.lpips_weight > 0 else None
    log_path = out / "loss_log.csv"
    new_log = not log_path.exists()
    log = open(log_path, "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "wall_s", "psnr_real", "lpips_real", "latent_mse"])
    start = time.time()
    last_save = start
    gen = torch.Generator().manual_seed(args.seed + step)
    while time.time() - start < args.minutes * 60 and step < args.steps:
        idx = torch.randint(len(faces), (args.batch,), generator=gen)
        dy, dx = torch.randint(5, (2,), generator=gen).tolist()
        x = faces[idx][:, :, dy:dy + SIZE, dx:dx + SIZE]
        flip = torch.rand(args.batch, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        rec = g(enc(x))
        mse = ((rec - x) ** 2).mean()
        loss = mse
        lp_val = torch.tensor(0.0)
        if lp is not None:
            lp_val = lp(rec, x).mean()
            loss = loss + args.lpips_weight * lp_val
        with torch.no_grad():
            z = torch.randn(args.batch, 100, generator=gen)
            xs = g(z)
        zs = enc(xs)
        latent = ((zs - z) ** 2).mean()
        loss = loss + args.latent_weight * latent + ((g(zs) - xs) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % args.log_every == 0:
            psnr = float(-10 * torch.log10(mse.detach()))
            writer.writerow([step, round(time.time() - start, 1), round(psnr, 3),
                             round(float(lp_val.detach()), 4), round(float(latent.detach()), 4)])
            log.flush()
            print(f"step {step}: real PSNR {psnr:.2f} dB, LPIPS {float(lp_val.detach()):.3f}, "
                  f"latent MSE {float(latent.detach()):.3f}", flush=True)
        if time.time() - last_save > 120:
            _save(enc, out, step)
            last_save = time.time()
    _save(enc, out, step)
    log.close()
    print(f"stopped at step {step}; checkpoint {ckpt}", flush=True)
    return 0


def _save(enc: LatentEncoder, out: Path, step: int) -> None:
    tmp = out / "encoder.safetensors.tmp"
    save_file({f"encoder.{k}": v.contiguous() for k, v in enc.state_dict().items()}, tmp)
    tmp.replace(out / "encoder.safetensors")
    (out / "state.json").write_text(json.dumps({"step": step}))


def export(args: argparse.Namespace) -> int:
    """Fit per-dimension latent scales on refined training latents, then write the weights."""
    torch.set_num_threads(args.threads)
    out = Path(args.checkpoint)
    enc = LatentEncoder()
    state = load_file(out / "encoder.safetensors")
    enc.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")})
    step = int(json.loads((out / "state.json").read_text())["step"])
    # A provisional model with unit scales drives the refinement used for fitting.
    provisional = out / "provisional.safetensors"
    export_weights(enc, np.ones(100, np.float32), provisional)
    model = GanLatentModel(provisional.read_bytes())
    files = face_files(Path(args.faces), "train")[: args.fit_images]
    faces = load_faces(files, SIZE)
    from models.perceptual import metric_module

    lp = metric_module("lpips-alex")  # the refinement the codec runs (GanLatentCodec default)
    latents = []
    for i in range(0, len(faces), 16):
        z = fit_latents(model, faces[i:i + 16], STEPS[-1], DEFAULT_EFFORT, lp) * STEPS[-1]
        latents.append(z)
    z = torch.cat(latents).numpy()
    scales = np.maximum(z.std(axis=0), 0.2).astype(np.float32)
    print(f"fitted scales on {len(z)} refined latents: mean {scales.mean():.3f}, "
          f"min {scales.min():.3f}, max {scales.max():.3f}", flush=True)
    Path(args.weights_dir).mkdir(parents=True, exist_ok=True)
    target = Path(args.weights_dir) / f"{args.id}.safetensors"
    sha = export_weights(enc, scales, target, {"steps_trained": str(step)})
    provisional.unlink()
    print(f"wrote {target} sha256 {sha}", flush=True)
    if args.register:
        from models.weights import register_weights

        card = {"title": "gan-latent on the DCGAN 64x64 face generator", "id": args.id,
                "budget_label": args.label, "encoder_steps": step,
                "data": "faces_utkface training split (hash of file name, ~80%); generator "
                        "samples. Research-use terms of UTKFace and DigiFace-1M apply.",
                "generator": "gan-face-generate==1.0.1 DCGAN (nz=100), fetched at set-up",
                "hardware": args.hardware, "quality_steps": list(STEPS)}
        register_weights(args.id, target.name, sha, 20, card, Path(args.weights_dir),
                         entry_class="gan-latent")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.train_gan_latent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the encoder (resumes from --out)")
    p.add_argument("--faces", type=Path, required=True, help="faces_utkface directory")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory")
    p.add_argument("--minutes", type=float, default=20)
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--lpips-weight", type=float, default=0.1,
                   help="weight of LPIPS-alex on real faces (0: pixels only)")
    p.add_argument("--latent-weight", type=float, default=0.1)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=train)
    e = sub.add_parser("export", help="fit the prior and write the codec weights")
    e.add_argument("--checkpoint", type=Path, required=True)
    e.add_argument("--faces", type=Path, required=True)
    e.add_argument("--id", default="gan-latent")
    e.add_argument("--weights-dir", default=str(Path(__file__).resolve().parent.parent
                                                / "models" / "weights"))
    e.add_argument("--fit-images", type=int, default=200)
    e.add_argument("--label", default="encoder: short CPU training")
    e.add_argument("--hardware", default="2-core CPU (no GPU)")
    e.add_argument("--register", action="store_true", help="add to the weights registry")
    e.add_argument("--threads", type=int, default=1)
    e.set_defaults(func=export)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
