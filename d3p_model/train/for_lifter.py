"""`d3p train-for-lifter PREDICTIONS.npz --out DIR`: a refiner for your own lifter, end to end.

PREDICTIONS.npz holds your lifter's outputs on training subjects with their ground truth
(the format of `d3p predict`, docs/evaluation.md). The command
  1. checks the file and fits the CND on it (how much of the error the 2D input explains),
  2. trains the refiner with the shipped recipe (by default continuing the shipped model's
     weights, which is several times faster than from scratch),
  3. calibrates the per-joint uncertainty on the held-out validation part of the file,
  4. checks do no harm on that validation part (clean, jittered and offset ground truth),
  5. exports the K-step refinement to ONNX (checked against PyTorch),
and writes DIR/report.json and DIR/report.md with each stage's result and time.

Outputs of a *pretrained* lifter on the subjects it trained on are more accurate than its
outputs on new people; a refiner trained on them learns corrections that are too small.
Pass `--lifter-test-mpjpe MM` (the lifter's published error on new people): the training
error is scaled up by MM / (its MPJPE in the file), see docs/refiner.md.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from ..skeleton import ROOT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("predictions", type=Path,
                        help="your lifter's outputs on training subjects, with ground_truth_3d")
    parser.add_argument("--out", type=Path, required=True, help="run directory (model in DIR/model)")
    parser.add_argument("--recipe", default=None,
                        help="training config to start from (default: the shipped model's)")
    parser.add_argument("--from-scratch", action="store_true",
                        help="do not start from the shipped model's weights")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--lifter-test-mpjpe", type=float, default=None, metavar="MM",
                        help="the lifter's MPJPE on people it never saw (for in-sample outputs "
                             "of a pretrained lifter): scales the training error to it")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override a recipe entry (repeatable)")
    parser.add_argument("--no-progress", action="store_true")


def file_mpjpe_mm(predictions) -> float:
    """Frame-weighted MPJPE (root-relative) of the file's poses against its ground truth."""
    total, frames = 0.0, 0
    for seq in predictions.sequences.values():
        pose = seq.pose_3d - seq.pose_3d[:, ROOT:ROOT + 1]
        truth = seq.ground_truth_3d - seq.ground_truth_3d[:, ROOT:ROOT + 1]
        total += float(np.linalg.norm(pose - truth, axis=-1).mean(axis=1).sum())
        frames += pose.shape[0]
    return 1000 * total / max(frames, 1)


def build_recipe(args, file_error_mm: float) -> tuple[dict, dict]:
    """The training config for this lifter, and what was changed in the recipe and why."""
    from ..refiner import default_model_dir
    from .config import apply_overrides, read_config_file
    if args.recipe:
        recipe = read_config_file(args.recipe)
    else:
        import yaml
        recipe = yaml.safe_load((default_model_dir() / "train_config.yaml").read_text())
    recipe = {k: v for k, v in recipe.items()}
    recipe["name"] = args.out.name
    recipe["data"] = {**recipe.get("data", {}), "train": str(args.predictions.resolve()),
                      "allow_test_subjects": False}
    changes = {}
    recipe["init_from"] = None if args.from_scratch else str(default_model_dir())
    if args.epochs:
        recipe.setdefault("optim", {})["epochs"] = args.epochs
    if args.lifter_test_mpjpe:
        gain = args.lifter_test_mpjpe / file_error_mm
        low, high = recipe.get("noise_level", [1.0, 1.0])
        recipe["noise_level"] = [float(low * gain), float(high * gain)]
        changes["noise_gain"] = {"gain": gain, "why": (
            f"the file's MPJPE is {file_error_mm:.1f} mm, the lifter's on new people "
            f"{args.lifter_test_mpjpe:.1f} mm: training errors scaled by {gain:.2f}")}
    recipe = apply_overrides(recipe, args.overrides)
    return recipe, changes


def main(args) -> int:
    from .config import ConfigError, load_config
    started = time.time()
    stages = {}
    command = shlex.join(["d3p", "train-for-lifter", *sys.argv[sys.argv.index(
        "train-for-lifter") + 1:]]) if "train-for-lifter" in sys.argv else shlex.join(sys.argv)

    def stage(name, since, **values):
        stages[name] = {"seconds": round(time.time() - since, 1), **values}
        text = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in values.items())
        print(f"[d3p train-for-lifter] {name}: {text} ({stages[name]['seconds']:.0f} s)",
              flush=True)

    # 1. the file (read once here; training reads it again for its windows)
    t0 = time.time()
    from .dataset import load_training_predictions
    try:
        predictions = load_training_predictions({"train": args.predictions,
                                                 "allow_test_subjects": False})
        error_mm = file_mpjpe_mm(predictions)
        recipe, changes = build_recipe(args, error_mm)
        config = load_config(recipe)
    except (ConfigError, FileNotFoundError, ValueError, KeyError) as err:
        print(f"d3p train-for-lifter: error: {err}", file=sys.stderr)
        return 2
    # the CND is fitted by the training itself (on its split); its figures join this stage
    stage("cnd", t0, sequences=len(predictions), file_mpjpe_mm=error_mm)

    # 2 + 3. training (calibration is its last step, on the validation sequences)
    from .loop import train_from_config
    t0 = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        model_dir = train_from_config(config, args.out, args.resume, command=command,
                                      progress=not args.no_progress)
    except (ConfigError, FileExistsError, FileNotFoundError) as err:
        print(f"d3p train-for-lifter: error: {err}", file=sys.stderr)
        return 2
    from ..refiner import D3PRefiner
    refiner = D3PRefiner.load(model_dir)
    stages["cnd"].update(frames=int(refiner.info["cnd"]["frames"]),
                         explained_by_2d=float(refiner.info["cnd"]["explained_fraction"]))
    calibration = refiner.info["calibration"]
    stage("train+calibrate", t0, epochs=config["optim"]["epochs"],
          validation_mpjpe_in_mm=calibration["mpjpe_in_mm"],
          validation_mpjpe_out_mm=calibration["mpjpe_out_mm"])

    # 4. do no harm on the validation sequences
    from ..evaluate.do_no_harm import evaluate_do_no_harm, harm_failures
    t0 = time.time()
    check_keys = refiner.info["training"]["validation_keys"] or sorted(predictions.sequences)
    harm = evaluate_do_no_harm(refiner.refine_sequence, (
        (k, predictions.sequences[k].keypoints_normalised(),
         predictions.sequences[k].ground_truth_3d) for k in check_keys))
    failures = harm_failures(harm)
    stage("do-no-harm", t0, clean_in_mm=0.0, clean_out_mm=harm["clean"]["refined_mm"],
          harmed=",".join(failures) or "none")

    # 5. ONNX
    onnx_file = None
    if not args.no_export:
        from ..export.cli import PARITY_TOLERANCE_M, parity_error
        from ..export.onnx import export_onnx, onnx_file_name, source_digest
        t0 = time.time()
        onnx_file = model_dir / onnx_file_name(refiner.steps)
        export_onnx(refiner, onnx_file, refiner.steps, source=source_digest(model_dir))
        difference = parity_error(refiner, onnx_file, refiner.steps)
        if difference >= PARITY_TOLERANCE_M:
            onnx_file.unlink()
            print(f"d3p train-for-lifter: error: ONNX differs from PyTorch by "
                  f"{difference * 1000:.4f} mm", file=sys.stderr)
            return 1
        stage("export", t0, file=onnx_file.name, max_difference_mm=difference * 1000)

    report = {"command": command, "predictions": str(args.predictions), "model_dir": str(model_dir),
              "recipe_changes": changes, "stages": stages,
              "do_no_harm_validation": harm, "harmed": failures,
              "total_seconds": round(time.time() - started, 1)}
    (args.out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "report.md").write_text(report_markdown(report))
    print(f"[d3p train-for-lifter] done in {report['total_seconds'] / 60:.1f} min: {model_dir}"
          + (f" (DOES HARM on validation: {', '.join(failures)})" if failures else ""))
    return 1 if failures else 0


def report_markdown(report: dict) -> str:
    lines = [f"# Refiner for {report['predictions']}", "", f"`{report['command']}`", "",
             "| stage | seconds | result |", "| --- | ---: | --- |"]
    for name, values in report["stages"].items():
        text = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in values.items() if k != "seconds")
        lines.append(f"| {name} | {values['seconds']:.0f} | {text} |")
    lines += ["", "Do no harm on the validation sequences (MPJPE, mm):", "",
              "| input | in | refined |", "| --- | ---: | ---: |"]
    for case, r in report["do_no_harm_validation"].items():
        lines.append(f"| {case} | {r['input_mm']:.1f} | {r['refined_mm']:.1f} |")
    for change in report["recipe_changes"].values():
        lines += ["", change["why"]]
    return "\n".join(lines) + "\n"
