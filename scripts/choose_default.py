#!/usr/bin/env python3
"""Choose the shipped refiner and its inference stride on the VALIDATION split only.

    .venv/bin/python scripts/choose_default.py MODEL_NAME [MODEL_NAME ...] \
        [--strides 27 9] [--sequence-stride 2] [--apply]

For each candidate (d3p_model/models/refiner/<name>/model) it takes the validation sequences
its training held out (model.json info.training.validation_keys: takes of the training
subjects, never S9/S11) from its own training file, and measures
  - MPJPE of the lifter's outputs and of the refined ones at each inference stride,
  - do no harm on the ground truth of those sequences (clean, i.i.d. 10/20 mm, offset).
A candidate qualifies when it improves every noisy do-no-harm case and the lifter's output;
the default is the qualified candidate with the lowest refined validation MPJPE, at its best
stride. --apply writes each candidate's best validation stride into its model.json (an
inference setting). Setting DEFAULT_MODEL in d3p_model/refiner.py is left to the person who
reads the table.
Writes docs/results/<--name, default default_choice>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from d3p_model.data.predictions import load_predictions  # noqa: E402
from d3p_model.evaluate.do_no_harm import (evaluate_do_no_harm, harm_failures,  # noqa: E402
                                           mean_joint_error_mm as mpjpe_mm)
from d3p_model.refiner import D3PRefiner  # noqa: E402
from d3p_model.skeleton import ROOT  # noqa: E402
from d3p_model.train.config import resolve_data_path  # noqa: E402

MODELS = REPO_ROOT / "d3p_model" / "models" / "refiner"
REUSED = " (rows reused from: "     # how a command names the earlier runs it took rows from


def validation_sequences(refiner: D3PRefiner, every: int):
    """(key, keypoints normalised, root-relative pose, root-relative truth) of the model's
    own validation split."""
    config = refiner.info["config"]
    keys = sorted(refiner.info["training"]["validation_keys"])[::every]
    if any(k.split("/")[0] in ("S9", "S11") for k in keys):
        raise SystemExit("validation keys contain test subjects: refusing")
    predictions = load_predictions(resolve_data_path(config["data"]["train"]))
    for key in keys:
        seq = predictions.sequences[key]
        yield (key, seq.keypoints_normalised(), seq.pose_3d - seq.pose_3d[:, ROOT:ROOT + 1],
               seq.ground_truth_3d - seq.ground_truth_3d[:, ROOT:ROOT + 1])


def assess(name: str, strides, every: int) -> dict:
    refiner = D3PRefiner.load(MODELS / name / "model")
    sequences = list(validation_sequences(refiner, every))
    frames = sum(s[2].shape[0] for s in sequences)
    lifter = sum(mpjpe_mm(pose, truth) * len(pose) for _, _, pose, truth in sequences) / frames
    by_stride = {}
    for stride in strides:
        stride = min(stride, refiner.window)
        total = sum(mpjpe_mm(refiner.refine_sequence(kp, pose, stride=stride), truth) * len(pose)
                    for _, kp, pose, truth in sequences)
        by_stride[stride] = total / frames
        print(f"{name} stride {stride}: {lifter:.2f} -> {by_stride[stride]:.2f} mm", flush=True)
    best = min(by_stride, key=by_stride.get)
    harm = evaluate_do_no_harm(lambda kp, pose: refiner.refine_sequence(kp, pose, stride=best),
                               ((k, kp, truth) for k, kp, _, truth in sequences))
    failures = harm_failures(harm)
    return {"name": name, "sequences": len(sequences), "frames": frames,
            "lifter_mm": lifter, "refined_mm_by_stride": by_stride, "best_stride": best,
            "do_no_harm": harm, "harmed": failures,
            "qualifies": not failures and by_stride[best] < lifter}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model names under d3p_model/models/refiner/")
    parser.add_argument("--strides", type=int, nargs="+", default=[27, 9])
    parser.add_argument("--sequence-stride", type=int, default=2, metavar="K",
                        help="every K-th validation sequence (default 2)")
    parser.add_argument("--apply", action="store_true",
                        help="write each candidate's best stride into its model.json")
    parser.add_argument("--docs", type=Path, default=REPO_ROOT / "docs" / "results")
    parser.add_argument("--name", default="default_choice", help="output file stem")
    parser.add_argument("--reuse", type=Path, nargs="+", default=[], metavar="JSON",
                        help="take the rows of candidates already measured by earlier runs "
                             "(their JSON) with the same --strides and --sequence-stride "
                             "instead of measuring them again; their commands are recorded")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="rebuild the page from an earlier run's JSON (no refinement)")
    args = parser.parse_args(argv)
    command = shlex.join(["scripts/choose_default.py",
                          *(argv if argv is not None else sys.argv[1:])])
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        rows, command = saved["rows"], saved["command"]
        for r in rows:   # JSON keys are strings
            r["refined_mm_by_stride"] = {int(k): v for k, v in r["refined_mm_by_stride"].items()}
    else:
        earlier = reusable_rows(parser, args)
        rows = [earlier[name] if name in earlier else
                assess(name, args.strides, args.sequence_stride) for name in args.models]
        sources = sorted({earlier[name]["measured_by"] for name in args.models
                          if name in earlier})
        if sources:
            command += REUSED + "; ".join(sources) + ")"
    qualified = [r for r in rows if r["qualifies"]]
    chosen = min(qualified, key=lambda r: r["refined_mm_by_stride"][r["best_stride"]]) \
        if qualified else None
    # none qualifies: the least harmful (fewest failed cases, then the lowest validation
    # error) is what stays shipped, and the page says it fails
    fallback = None if chosen else min(rows, key=lambda r: (
        len(r["harmed"]), r["refined_mm_by_stride"][r["best_stride"]]))
    document = {"command": command, "rows": rows,
                "chosen": chosen and {"name": chosen["name"], "stride": chosen["best_stride"]},
                "least_harmful": fallback and {"name": fallback["name"],
                                               "stride": fallback["best_stride"],
                                               "harmed": fallback["harmed"]}}
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{args.name}.json").write_text(json.dumps(document, indent=1) + "\n")
    strides = sorted({s for r in rows for s in r["refined_mm_by_stride"]}, reverse=True)
    lines = ["# Choosing the shipped refiner (validation split only)", "",
             f"Generated by `{command}`. Each candidate's own validation sequences (takes of "
             "the training subjects held out from its training; never S9/S11), MPJPE in mm. "
             "Do-no-harm columns: refined MPJPE of the ground truth fed as input (clean) and "
             "with known errors; the input errors are given in the header.", ""]
    cases = list(rows[0]["do_no_harm"])
    inputs = {c: rows[0]["do_no_harm"][c]["input_mm"] for c in cases}
    lines.append("| model | lifter | " + " | ".join(f"refined, stride {s}" for s in strides)
                 + " | " + " | ".join(f"{c} ({inputs[c]:.1f})" for c in cases)
                 + " | qualifies |")
    lines.append("| --- | ---: | " + " | ".join("---:" for _ in strides) + " | "
                 + " | ".join("---:" for _ in cases) + " | --- |")
    for r in rows:
        refined = [f"{r['refined_mm_by_stride'][s]:.2f}" if s in r["refined_mm_by_stride"]
                   else "" for s in strides]
        harm = [f"{r['do_no_harm'][c]['refined_mm']:.1f}" for c in cases]
        verdict = "yes" if r["qualifies"] else "no (" + (", ".join(r["harmed"]) or
                                                         "no gain") + ")"
        lines.append(f"| {r['name']} | {r['lifter_mm']:.2f} | " + " | ".join(refined) + " | "
                     + " | ".join(harm) + f" | {verdict} |")
    lines += ["", (f"Chosen: **{chosen['name']}**, inference stride {chosen['best_stride']} "
                   "(do-no-harm measured at that stride)." if chosen else
                   "No candidate qualifies. The least harmful (fewest failed do-no-harm cases, "
                   f"then the lowest validation error) is **{fallback['name']}** at stride "
                   f"{fallback['best_stride']}; it still fails "
                   f"{', '.join(fallback['harmed']) or 'to improve the lifter'}.")]
    (args.docs / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.apply:
        for r in rows:
            apply_stride(r["name"], r["best_stride"])
    return 0


def reusable_rows(parser: argparse.ArgumentParser, args) -> dict:
    """{model name: row} from earlier runs' JSON measured with these settings; each row
    remembers the command that measured it."""
    rows = {}
    for path in args.reuse:
        saved = json.loads(path.read_text())
        saved_args = parser.parse_args(shlex.split(saved["command"].split(REUSED)[0])[1:])
        if (saved_args.strides, saved_args.sequence_stride) != (args.strides,
                                                                args.sequence_stride):
            raise SystemExit(f"{path}: measured with --strides {saved_args.strides} "
                             f"--sequence-stride {saved_args.sequence_stride}, not "
                             f"{args.strides} / {args.sequence_stride}: cannot reuse")
        for row in saved["rows"]:
            row["refined_mm_by_stride"] = {int(k): v for k, v in
                                           row["refined_mm_by_stride"].items()}
            row.setdefault("measured_by", saved["command"].split(REUSED)[0])
            rows[row["name"]] = row
    return rows


def apply_stride(name: str, stride: int) -> None:
    """Write a model's best validation stride into its model.json (an inference setting: the
    weights and their ONNX export do not change)."""
    spec_path = MODELS / name / "model" / "model.json"
    spec = json.loads(spec_path.read_text())
    spec["stride"] = int(stride)
    spec_path.write_text(json.dumps(spec, indent=2, allow_nan=False) + "\n")
    print(f"wrote stride {stride} into {spec_path}")


if __name__ == "__main__":
    sys.exit(main())
