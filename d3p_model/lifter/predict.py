"""`d3p predict`: run the base lifter's folds over Human3.6M and write prediction files.

For each setting it writes, into the git-ignored cache (`cache/` or `D3P_CACHE`):
- `predictions/<setting>/train_heldout.npz`: every training subject predicted by the
  leave-one-subject-out fold that did not train on it (what the CND is fitted on and the
  refiner trains on);
- `predictions/<setting>/test.npz`: S9 and S11 predicted by the model trained on all five;
- `predictions/<setting>/train_insample.npz` (only when asked, `--split train_insample`): the
  training subjects predicted by that same model, which trained on them. This is what a user
  with a public pretrained lifter has: outputs on its own training subjects, more accurate
  than on new people (the bring-your-own-lifter simulation, docs/refiner.md).
Each file's metadata records which fold predicted each subject and what that fold trained on.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import yaml
from tqdm import tqdm

from ..data.h36m import SETTINGS, TEST_SUBJECTS, TRAIN_SUBJECTS, load_sequences
from ..data.predictions import Predictions, Sequence, normalise_screen, save_predictions
from .train import MODELS_DIR, load_lifter

REPO_ROOT = Path(__file__).resolve().parents[2]


def cache_dir() -> Path:
    return Path(os.environ.get("D3P_CACHE", REPO_ROOT / "cache"))


def fold_for_subject(models_dir: Path, setting: str, subject: str) -> str:
    """The trained fold that predicts `subject`; it never trained on it."""
    found = []
    for config_path in sorted((Path(models_dir) / setting).glob("*/config.yaml")):
        with open(config_path) as f:
            config = yaml.safe_load(f)
        if subject in config["predict_subjects"]:
            if subject in config["train_subjects"]:
                raise ValueError(f"{config_path}: fold predicts {subject}, which it trained on")
            found.append(config_path.parent.name)
    if len(found) != 1:
        raise FileNotFoundError(f"{len(found)} trained {setting} lifter folds predict {subject} "
                                f"in {models_dir} (expected exactly 1: {found})")
    return found[0]


def predict_split(setting: str, subjects, data=None, models_dir=MODELS_DIR,
                  in_sample: bool = False) -> Predictions:
    """Held-out predictions (each subject by the fold that never saw it), or with in_sample
    the `all` model's predictions of subjects it trained on."""
    sequences, folds = {}, {}
    models = {}
    for seq in tqdm(load_sequences(setting, subjects, data), desc=f"lift {setting}"):
        subject = seq.key.split("/")[0]
        fold = folds.setdefault(subject, "all" if in_sample else
                                fold_for_subject(models_dir, setting, subject))
        if fold not in models:
            models[fold] = load_lifter(Path(models_dir) / setting / fold)
        pose = models[fold].lift(normalise_screen(seq.keypoints_2d, *seq.image_size))
        sequences[seq.key] = Sequence(keypoints_2d=seq.keypoints_2d, image_size=seq.image_size,
                                      pose_3d=pose, ground_truth_3d=seq.ground_truth_3d)
    kinds = sorted({type(m).__name__ for m in models.values()})
    meta = {"estimator": f"d3p lifter ({', '.join(kinds)}) from {models_dir}", "setting": setting,
            "folds": folds, "fold_train_subjects": {
                fold: _train_subjects(Path(models_dir) / setting / fold) for fold in models},
            "note": "in-sample: every subject predicted by the model that trained on it"
            if in_sample else "held-out: each subject predicted by a model that did not train on it"}
    return Predictions(sequences, meta)


def _train_subjects(fold_dir: Path) -> list[str]:
    with open(fold_dir / "config.yaml") as f:
        return list(yaml.safe_load(f)["train_subjects"])


def add_arguments(parser):
    parser.add_argument("--setting", choices=SETTINGS, nargs="+", default=list(SETTINGS))
    parser.add_argument("--split", choices=("train_heldout", "test", "train_insample"), nargs="+",
                        default=["train_heldout", "test"])
    parser.add_argument("--data", help="Human3.6M folder (default: D3P_DATA or ../shared)")
    parser.add_argument("--cache", help="output folder (default: cache/ or D3P_CACHE)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--models", type=Path, default=MODELS_DIR,
                        help="lifter models folder, <setting>/<fold>/ inside (default: the "
                             "base lifter's); e.g. d3p_model/models/lifter_tcn for the unseen one")
    parser.add_argument("--name", help="output folder name under predictions/ (default: the "
                                       "setting)")


def main(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out_root = Path(args.cache) if args.cache else cache_dir()
    for setting in args.setting:
        for split in args.split:
            subjects = TEST_SUBJECTS if split == "test" else TRAIN_SUBJECTS
            name = args.name or setting
            path = out_root / "predictions" / name / f"{split}.npz"
            save_predictions(path, predict_split(setting, subjects, args.data, args.models,
                                                 in_sample=split == "train_insample"))
            print(f"wrote {path}")
    return 0
