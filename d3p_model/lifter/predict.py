"""`d3p predict`: run the base lifter's folds over Human3.6M and write prediction files.

For each setting it writes, into the git-ignored cache (`cache/` or `D3P_CACHE`):
- `predictions/<setting>/train_heldout.npz`: every training subject predicted by the fold
  model that did not train on it (what the CND is fitted on and the refiner trains on);
- `predictions/<setting>/test.npz`: S9 and S11 predicted by the model trained on all five.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from ..data.h36m import SETTINGS, TEST_SUBJECTS, TRAIN_SUBJECTS, load_sequences
from ..data.predictions import Predictions, Sequence, normalise_screen, save_predictions
from ..data.windows import extract_windows, stitch_windows, window_starts
from .train import MODELS_DIR, load_lifter

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    return Path(os.environ.get("D3P_CACHE", REPO_ROOT / "cache"))


@torch.no_grad()
def lift_sequence(model, keypoints_norm: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """(F, 17, 2) normalised 2D -> (F, 17, 3), non-overlapping windows, edge-padded."""
    starts = window_starts(len(keypoints_norm), model.window, model.window)
    windows = extract_windows(keypoints_norm, starts, model.window)
    out = np.concatenate([model(torch.from_numpy(windows[i:i + batch_size])).numpy()
                          for i in range(0, len(windows), batch_size)])
    return stitch_windows(out, starts, len(keypoints_norm))


def fold_for_subject(models_dir: Path, setting: str, subject: str) -> str:
    """The fold whose model did not see `subject` (held-out), or `all` for test subjects."""
    if subject not in TRAIN_SUBJECTS:
        return "all"
    for fold_dir in sorted((Path(models_dir) / setting).iterdir()):
        with open(fold_dir / "config.yaml") as f:
            config = yaml.safe_load(f)
        if fold_dir.name != "all" and subject not in config["train_subjects"]:
            return fold_dir.name
    raise FileNotFoundError(f"no trained {setting} lifter fold holds out {subject}")


def predict_split(setting: str, subjects, data=None, models_dir=MODELS_DIR) -> Predictions:
    sequences, folds = {}, {}
    models = {}
    for seq in tqdm(load_sequences(setting, subjects, data), desc=f"lift {setting}"):
        subject = seq.key.split("/")[0]
        fold = folds.setdefault(subject, fold_for_subject(models_dir, setting, subject))
        if fold not in models:
            models[fold] = load_lifter(Path(models_dir) / setting / fold)
        pose = lift_sequence(models[fold], normalise_screen(seq.keypoints_2d, *seq.image_size))
        sequences[seq.key] = Sequence(keypoints_2d=seq.keypoints_2d, image_size=seq.image_size,
                                      pose_3d=pose, ground_truth_3d=seq.ground_truth_3d)
    meta = {"estimator": "d3p base lifter (TemporalLifter)", "setting": setting,
            "folds": folds, "note": "held-out: each subject predicted by a model that did not train on it"}
    return Predictions(sequences, meta)


def add_arguments(parser):
    parser.add_argument("--setting", choices=SETTINGS, nargs="+", default=list(SETTINGS))
    parser.add_argument("--split", choices=("train_heldout", "test"), nargs="+",
                        default=["train_heldout", "test"])
    parser.add_argument("--data", help="Human3.6M folder (default: D3P_DATA or ../shared)")
    parser.add_argument("--cache", help="output folder (default: cache/ or D3P_CACHE)")
    parser.add_argument("--threads", type=int, default=0)


def main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out_root = Path(args.cache) if args.cache else cache_dir()
    for setting in args.setting:
        for split in args.split:
            subjects = TRAIN_SUBJECTS if split == "train_heldout" else TEST_SUBJECTS
            path = out_root / "predictions" / setting / f"{split}.npz"
            save_predictions(path, predict_split(setting, subjects, args.data))
            print(f"wrote {path}")
    return 0
