"""`d3p train-lifter CONFIG --fold NAME`: train one fold of the base lifter.

Steps-based (every fold gets the same budget), checkpointed every few minutes and at the
end, resumable with `--resume`. Writes `weights.pt`, `config.yaml`, `train_log.json` and
`command.txt` into the fold's model folder.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..data.h36m import load_sequences
from ..data.predictions import normalise_screen
from ..skeleton import H36M17_LEFT, H36M17_RIGHT
from .model import TemporalLifter

MODELS_DIR = Path(__file__).resolve().parents[1] / "models" / "lifter"
CHECKPOINT_SECONDS = 120


def load_config(path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def build_model(config: dict) -> TemporalLifter:
    return TemporalLifter(config["window"], **config["model"])


class WindowSampler:
    """Random training windows from many sequences, concatenated into flat arrays."""

    def __init__(self, sequences, window: int, start_stride: int, rng: np.random.Generator):
        self.window, self.rng = window, rng
        self.x = np.concatenate([normalise_screen(s.keypoints_2d, *s.image_size) for s in sequences])
        self.y = np.concatenate([s.ground_truth_3d for s in sequences])
        starts, offset = [], 0
        for s in sequences:
            frames = len(s.ground_truth_3d)
            if frames >= window:
                starts.append(offset + np.arange(0, frames - window + 1, start_stride))
            offset += frames
        self.starts = np.concatenate(starts)

    def batch(self, size: int, flip: bool):
        starts = self.rng.choice(self.starts, size)
        index = starts[:, None] + np.arange(self.window)[None]
        x, y = self.x[index], self.y[index]
        if flip:  # mirror half the batch: negate x, swap left and right joints
            mirror = self.rng.random(size) < 0.5
            swap = np.arange(x.shape[2])
            swap[list(H36M17_LEFT) + list(H36M17_RIGHT)] = list(H36M17_RIGHT) + list(H36M17_LEFT)
            x[mirror] = x[mirror][:, :, swap]
            y[mirror] = y[mirror][:, :, swap]
            x[mirror, ..., 0] *= -1
            y[mirror, ..., 0] *= -1
        return torch.from_numpy(x), torch.from_numpy(y)


def mpjpe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).norm(dim=-1).mean()


def train_fold(config: dict, fold: str, out_dir: Path, data=None, resume=False,
               command: str = "") -> Path:
    subjects = config["folds"][fold]
    train = config["train"]
    torch.manual_seed(train["seed"])
    rng = np.random.default_rng(train["seed"])
    sampler = WindowSampler(load_sequences(config["setting"], subjects, data),
                            config["window"], train["start_stride"], rng)
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=train["lr"])
    steps = train["steps"]
    gamma = (train["lr_final"] / train["lr"]) ** (1 / max(steps, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "checkpoint.pt"
    log, step = [], 0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=False)  # our own file: holds RNG state
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        rng.bit_generator.state = state["numpy_rng"]
        torch.set_rng_state(state["torch_rng"])
        step, log = state["step"], state["log"]

    def save_checkpoint():
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "numpy_rng": rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(), "step": step, "log": log},
                   checkpoint_path)

    model.train()
    last_save, running = time.monotonic(), []
    with tqdm(total=steps, initial=step, desc=f"lifter {config['setting']} {fold}") as bar:
        while step < steps:
            x, y = sampler.batch(train["batch_size"], train["flip"])
            loss = mpjpe_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            running.append(loss.item())
            if step % 50 == 0 or step == steps:
                log.append({"step": step, "mpjpe_mm": 1000 * float(np.mean(running))})
                bar.set_postfix(mpjpe_mm=f"{log[-1]['mpjpe_mm']:.1f}")
                running = []
            bar.update(1)
            if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                save_checkpoint()
                last_save = time.monotonic()
    save_checkpoint()
    torch.save(model.state_dict(), out_dir / "weights.pt")
    with open(out_dir / "config.yaml", "w") as f:
        yaml.safe_dump({**config, "fold": fold, "train_subjects": subjects}, f, sort_keys=False)
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=1))
    (out_dir / "command.txt").write_text(command + "\n" + _git_commit() + "\n")
    return out_dir


def load_lifter(fold_dir: Path, device="cpu") -> TemporalLifter:
    with open(fold_dir / "config.yaml") as f:
        config = yaml.safe_load(f)
    model = build_model(config)
    model.load_state_dict(torch.load(fold_dir / "weights.pt", map_location=device, weights_only=True))
    return model.to(device).eval()


def _git_commit() -> str:
    try:
        return "git " + subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                       text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        return "git unknown"


def add_arguments(parser):
    parser.add_argument("config", help="lifter config, e.g. d3p_model/configs/lifter_gt2d.yaml")
    parser.add_argument("--fold", required=True, help="fold name from the config's `folds`")
    parser.add_argument("--data", help="Human3.6M folder (default: D3P_DATA or ../shared)")
    parser.add_argument("--out", help="model folder (default: d3p_model/models/lifter/SETTING/FOLD)")
    parser.add_argument("--resume", action="store_true", help="continue from checkpoint.pt")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")


def main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    if args.fold not in config["folds"]:
        raise SystemExit(f"unknown fold {args.fold!r}; the config has {list(config['folds'])}")
    out = Path(args.out) if args.out else MODELS_DIR / config["setting"] / args.fold
    command = "d3p train-lifter " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    train_fold(config, args.fold, out, args.data, args.resume, command)
    print(f"saved {out / 'weights.pt'}")
    return 0
