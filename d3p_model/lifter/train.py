"""`d3p train-lifter CONFIG --fold NAME`: train one fold of the base lifter.

A fold names the subjects it trains on and the subjects it predicts (never the same: a
training subject's outputs must come from a model that did not see that subject). The budget
is a fixed number of steps, the same for every fold. Checkpointed every few minutes and at the
end; `--resume` continues a killed run where it stopped, with the same random stream. Writes
`weights.pt`, `config.yaml`, `train_log.json` and `command.txt` into the fold's model folder.
"""

from __future__ import annotations

import json
import math
import os
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
from ..data.predictions import action_of, normalise_screen
from .model import WindowLifter, WindowMLPLifter
from .tcn import TemporalConvLifter

MODELS_DIR = Path(__file__).resolve().parents[1] / "models" / "lifter"
CHECKPOINT_SECONDS = 120


class FoldError(ValueError):
    pass


def load_config(path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def fold_subjects(config: dict, fold: str) -> tuple[list[str], list[str]]:
    """(train subjects, predicted subjects) of a fold; refuses a fold that predicts a subject
    it trains on."""
    if fold not in config["folds"]:
        raise FoldError(f"unknown fold {fold!r}; the config has {list(config['folds'])}")
    spec = config["folds"][fold]
    train, predicts = list(spec["train"]), list(spec["predict"])
    overlap = sorted(set(train) & set(predicts))
    if overlap:
        raise FoldError(f"fold {fold!r} would predict {overlap}, which it trains on")
    if not train or not predicts:
        raise FoldError(f"fold {fold!r} needs train and predict subjects")
    return train, predicts


LIFTERS = {"window_mlp": WindowMLPLifter, "temporal_conv": TemporalConvLifter}


def build_model(config: dict) -> WindowLifter:
    """config["model"]: the lifter's arguments, with `type` naming its family (default
    window_mlp, the base lifter)."""
    arguments = dict(config["model"])
    kind = arguments.pop("type", "window_mlp")
    if kind not in LIFTERS:
        raise ValueError(f"unknown lifter type {kind!r}; known: {sorted(LIFTERS)}")
    return LIFTERS[kind](**arguments)


class FrameSampler:
    """Every frame of many sequences in flat arrays; a batch is random centre frames (every
    `frame_stride`-th frame of each sequence) with their 2D windows and 3D targets."""

    def __init__(self, sequences, model: WindowLifter, frame_stride: int,
                 rng: np.random.Generator):
        self.rng, self.offsets = rng, model.offsets
        self.x = np.concatenate([normalise_screen(s.keypoints_2d, *s.image_size) for s in sequences])
        self.y = np.concatenate([s.ground_truth_3d for s in sequences]).astype(np.float32)
        first, last, pool, offset = [], [], [], 0
        for s in sequences:
            frames = len(s.ground_truth_3d)
            first.append(np.full(frames, offset))
            last.append(np.full(frames, offset + frames - 1))
            pool.append(offset + np.arange(0, frames, frame_stride))
            offset += frames
        self.first, self.last = np.concatenate(first), np.concatenate(last)
        self.pool = np.concatenate(pool)

    def windows(self, centres: np.ndarray) -> np.ndarray:
        index = np.clip(centres[:, None] + self.offsets[None, :],
                        self.first[centres, None], self.last[centres, None])
        return self.x[index]

    def batch(self, size: int):
        centres = self.rng.choice(self.pool, size)
        return torch.from_numpy(self.windows(centres)), torch.from_numpy(self.y[centres])


def mpjpe_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (pred - target).norm(dim=-1).mean()


def learning_rate(step: int, train: dict) -> float:
    """Linear warm-up, then a cosine from lr down to lr_final at the last step."""
    warmup, steps = train["warmup_steps"], train["steps"]
    if step < warmup:
        return train["lr"] * (step + 1) / warmup
    progress = (step - warmup) / max(steps - warmup, 1)
    return train["lr_final"] + 0.5 * (train["lr"] - train["lr_final"]) * (1 + math.cos(math.pi * progress))


def heldout_mpjpe_mm(model: WindowLifter, sequences, frame_every: int = 10) -> float:
    """Action-mean MPJPE (mm) over every `frame_every`-th frame: the learning curve."""
    errors: dict[str, list[float]] = {}
    for seq in sequences:
        keypoints = normalise_screen(seq.keypoints_2d, *seq.image_size)
        frames = np.arange(0, len(keypoints), frame_every)
        with torch.no_grad():
            model.eval()
            pose = model.predict(torch.from_numpy(keypoints[model.window_index(len(keypoints),
                                                                             frames)])).numpy()
            model.train()
        error = np.linalg.norm(pose - seq.ground_truth_3d[frames], axis=-1).mean()
        errors.setdefault(action_of(seq.key), []).append(error)
    return 1000 * float(np.mean([np.mean(v) for v in errors.values()]))


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def half_precision(state: dict) -> dict:
    """Layer weights stored as float16: half the committed size, ~0.1 mm on the output
    (tests/test_h36m_lifter.py; docs/lifter.md for the trained folds). The input
    standardisation stays float32: it scales every input."""
    keep = ("input_mean", "input_std")
    return {k: v.half() if v.is_floating_point() and k not in keep else v
            for k, v in state.items()}


def train_fold(config: dict, fold: str, out_dir: Path, data=None, resume=False,
               command: str = "", progress: bool = True) -> Path:
    train_subjects, predict_subjects = fold_subjects(config, fold)
    train = config["train"]
    torch.manual_seed(train["seed"])
    rng = np.random.default_rng(train["seed"])
    model = build_model(config)
    training = load_sequences(config["setting"], train_subjects, data)
    seen = sorted({s.key.split("/")[0] for s in training})
    if set(seen) & set(predict_subjects):  # the loader must not hand over a predicted subject
        raise FoldError(f"fold {fold!r}: training data holds predicted subjects {seen}")
    sampler = FrameSampler(training, model, train["frame_stride"], rng)
    model.set_input_statistics(sampler.windows(sampler.pool))
    heldout = load_sequences(config["setting"], predict_subjects, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=train["lr"])
    steps = train["steps"]
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out_dir / "checkpoint.pt"
    log, step = [], 0
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        torch.set_rng_state(state["torch_rng"])
        step, log = int(state["step"]), json.loads(state["log"])

    def save_checkpoint():
        _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "numpy_rng": json.dumps(rng.bit_generator.state),
                      "torch_rng": torch.get_rng_state(), "step": step,
                      "log": json.dumps(log)}, checkpoint_path)

    model.train()
    last_save, running, started = time.monotonic(), [], time.monotonic()
    elapsed = log[-1]["seconds"] if log else 0.0
    with tqdm(total=steps, initial=step, desc=f"lifter {config['setting']} {fold}",
              disable=not progress, mininterval=10) as bar:
        while step < steps:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, train)
            x, y = train_batch(sampler, model, train)
            loss = mpjpe_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            running.append(loss.item())
            if step % train["log_every"] == 0 or step == steps:
                entry = {"step": step, "train_mpjpe_mm": 1000 * float(np.mean(running)),
                         "lr": learning_rate(step - 1, train),
                         "seconds": elapsed + time.monotonic() - started}
                if step % train["eval_every"] == 0 or step == steps:
                    entry["heldout_mpjpe_mm"] = heldout_mpjpe_mm(model, heldout)
                log.append(entry)
                bar.set_postfix(train_mm=f"{entry['train_mpjpe_mm']:.1f}")
                running = []
            bar.update(1)
            if time.monotonic() - last_save > CHECKPOINT_SECONDS:
                save_checkpoint()
                last_save = time.monotonic()
    save_checkpoint()
    model.eval()
    torch.save(half_precision(model.state_dict()), out_dir / "weights.pt")
    with open(out_dir / "config.yaml", "w") as f:
        yaml.safe_dump({**config, "fold": fold, "train_subjects": train_subjects,
                        "predict_subjects": predict_subjects}, f, sort_keys=False)
    (out_dir / "train_log.json").write_text(json.dumps(log, indent=1))
    (out_dir / "command.txt").write_text(command + "\n" + _git_commit() + "\n")
    return out_dir


def train_batch(sampler: FrameSampler, model: WindowLifter, train: dict):
    x, y = sampler.batch(train["batch_size"])
    if train["flip"]:  # mirror half the batch: negated x, left and right swapped
        mirror = torch.from_numpy(sampler.rng.random(len(x)) < 0.5)
        x[mirror] = model.mirrored(x[mirror])
        y[mirror] = model.mirrored(y[mirror])
    return x, y


def load_lifter(fold_dir: Path, device="cpu") -> WindowLifter:
    with open(Path(fold_dir) / "config.yaml") as f:
        config = yaml.safe_load(f)
    model = build_model(config)
    state = torch.load(Path(fold_dir) / "weights.pt", map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
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
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set model.radius=0 (repeatable; "
                             "the comparison runs of docs/lifter.md)")


def main(args) -> int:
    from ..train.config import ConfigError, apply_overrides
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = apply_overrides(load_config(args.config), args.set)
    except ConfigError as err:
        raise SystemExit(f"d3p train-lifter: {err}")
    try:
        fold_subjects(config, args.fold)
    except FoldError as err:
        raise SystemExit(f"d3p train-lifter: {err}")
    out = Path(args.out) if args.out else MODELS_DIR / config["setting"] / args.fold
    command = "d3p train-lifter " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    train_fold(config, args.fold, out, args.data, args.resume, command)
    print(f"saved {out / 'weights.pt'}")
    return 0
