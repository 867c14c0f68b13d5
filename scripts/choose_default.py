#!/usr/bin/env python3
"""Choose the shipped refiner, its inference stride and its correction threshold on the
VALIDATION split only.

    .venv/bin/python scripts/choose_default.py MODEL_NAME [MODEL_NAME ...] \
        [--strides 27 21 18 13 9] [--stride-tolerance-mm 0.05] [--thresholds 0 2 4 ...] \
        [--sequence-stride 2] [--harm-margin-mm 0] [--incumbent NAME --gain-margin-mm 0]
        [--apply]

For each candidate (d3p_model/models/refiner/<name>/model) it takes the validation sequences
its training held out (model.json info.training.validation_keys: takes of the training
subjects, or whole subjects held out with data.validation_subjects; never S9/S11; candidates
validated on different sequences are refused) from its own training file, and measures
  - MPJPE and acceleration error of the lifter's outputs and of the refined ones at each
    inference stride, overlapping windows blended as d3p refine does (blend_weights,
    d3p_model/data/windows.py) and, for comparison, by a plain mean;
  - the stride: the coarsest whose refined MPJPE is within --stride-tolerance-mm of the
    lowest (windows cost model calls in proportion to 1/stride, and the results are
    published to 0.1 mm, so a finer stride must win more than half of that to be worth it);
  - at that stride, for each correction threshold (d3p_model/trust.py: each joint's
    final correction soft-thresholded by that many mm; it acts after the windows are
    blended, so one refinement serves every threshold), the refined MPJPE and do no harm on
    the ground truth of those sequences (clean, i.i.d. 10/20 mm, offset).
A (candidate, threshold) qualifies when it improves every noisy do-no-harm case (by more
than --harm-margin-mm) and the lifter's output; each candidate gets the qualified threshold
with the lowest refined validation MPJPE (none qualifies: the one failing the fewest cases,
then the lowest error), and the default is the qualified candidate with the lowest refined
validation MPJPE. With --incumbent (the model that ships now), a challenger replaces it only
when it is clearly better (`clearly_better`): it qualifies where the incumbent does not, or
it is --gain-margin-mm lower without failing more.
--apply writes each candidate's stride and threshold into its model.json (inference
settings: the weights and their ONNX export do not change). Setting DEFAULT_MODEL in
d3p_model/refiner.py is left to the person who reads the table.
Writes docs/results/<--name, default default_choice>.{md,json}.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
from pathlib import Path

import numpy as np


REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from d3p_model.data.predictions import load_predictions  # noqa: E402
from d3p_model.data.windows import (refine_window_batches, stitch_windows,  # noqa: E402
                                    window_starts)
from d3p_model.evaluate.do_no_harm import (MIN_GAIN_MM, evaluate_do_no_harm,  # noqa: E402
                                           harm_failures,
                                           mean_joint_error_mm as mpjpe_mm)
from d3p_model.evaluate.metrics import acceleration_error_per_frame  # noqa: E402
from d3p_model.refiner import D3PRefiner  # noqa: E402
from d3p_model.skeleton import ROOT  # noqa: E402
from d3p_model.train.config import validation_split  # noqa: E402
from d3p_model.trust import SPEC_KEY as THRESHOLD_KEY, limit_corrections  # noqa: E402

MODELS = REPO_ROOT / "d3p_model" / "models" / "refiner"
THRESHOLDS_MM = [0.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0, 20.0]
REUSED = " (rows reused from: "     # how a command names the earlier runs it took rows from


def validation_set_of(name: str) -> tuple[str, tuple[str, ...]]:
    """(training file, sorted validation keys) of a model, from its model.json alone."""
    info = json.loads((MODELS / name / "model" / "model.json").read_text())["info"]
    return (info["config"]["data"]["train"],
            tuple(sorted(info["training"]["validation_keys"])))


def refuse_different_validation_sets(names) -> None:
    """Candidates are ranked by their error on their own validation split: that ranks them
    only when it is the same split (a model with S8 held out whole against one with a tenth
    of the takes held out would be scored on different people)."""
    sets = {}
    for name in names:
        sets.setdefault(validation_set_of(name), []).append(name)
    if len(sets) > 1:
        groups = "; ".join(f"{', '.join(group)}: {len(keys)} sequences of {path}"
                           for (path, keys), group in sets.items())
        raise SystemExit("the candidates were validated on different sequences, so their "
                         f"validation errors do not rank them ({groups}); compare models "
                         "that held out the same split")


def validation_sequences(refiner: D3PRefiner, every: int):
    """(key, keypoints normalised, root-relative pose, root-relative truth) of the model's
    own validation split."""
    try:
        path, keys = validation_split(refiner.info)
    except ValueError as err:
        raise SystemExit(str(err)) from err
    predictions = load_predictions(path)
    for key in keys[::every]:
        seq = predictions.sequences[key]
        yield (key, seq.keypoints_normalised(), seq.pose_3d - seq.pose_3d[:, ROOT:ROOT + 1],
               seq.ground_truth_3d - seq.ground_truth_3d[:, ROOT:ROOT + 1])


def refine_blended(refiner: D3PRefiner, keypoints, pose, stride: int) -> tuple:
    """One sequence refined at `stride` without a threshold: (blended as d3p refine does,
    plain mean of the same windows). A causal model has no windows: the whole sequence."""
    if refiner.causal:
        out = refiner.refine_sequence(keypoints, pose, correction_threshold=0.0)
        return out, out
    window = refiner.window
    starts = window_starts(len(pose), window, stride)
    windows = refine_window_batches(refiner.refine_windows, keypoints, pose, starts, window)
    return (stitch_windows(windows, starts, len(pose)),
            stitch_windows(windows, starts, len(pose), weights=np.ones(window)))


def mpjpe_over_frames(outputs, sequences) -> float:
    """MPJPE (mm) of each sequence's output against its truth, mean over all frames."""
    frames = sum(len(out) for out in outputs)
    return sum(mpjpe_mm(out, truth) * len(out)
               for out, (*_, truth) in zip(outputs, sequences)) / frames


def acceleration_mm(outputs, sequences) -> float:
    """Acceleration error (mm / frame^2), mean over every inner frame of the sequences."""
    per_frame = np.concatenate([acceleration_error_per_frame(out, truth)
                                for out, (*_, truth) in zip(outputs, sequences)])
    return 1000.0 * float(per_frame.mean())


def coarsest_within(by_stride: dict, tolerance_mm: float) -> int:
    """The largest stride whose MPJPE is within `tolerance_mm` of the lowest."""
    lowest = min(by_stride.values())
    return max(s for s, mm in by_stride.items() if mm <= lowest + tolerance_mm)


def assess(name: str, strides, every: int, thresholds_mm=(0.0,),
           stride_tolerance_mm: float = 0.0, harm_margin_mm: float = MIN_GAIN_MM) -> dict:
    refiner = D3PRefiner.load(MODELS / name / "model")
    sequences = list(validation_sequences(refiner, every))
    frames = sum(s[2].shape[0] for s in sequences)
    lifter = mpjpe_over_frames([pose for _, _, pose, _ in sequences], sequences)
    lifter_accel = acceleration_mm([pose for _, _, pose, _ in sequences], sequences)
    by_stride, outputs, blending = {}, {}, {}
    if refiner.causal:      # refines whole sequences: the stride does not apply
        strides = [refiner.window]
    for stride in strides:
        stride = min(stride, refiner.window)
        blended, plain = zip(*(refine_blended(refiner, kp, pose, stride)
                               for _, kp, pose, _ in sequences))
        outputs[stride] = list(blended)
        by_stride[stride] = mpjpe_over_frames(blended, sequences)
        blending[stride] = {
            "accel": acceleration_mm(blended, sequences),
            "plain_mean_mm": mpjpe_over_frames(plain, sequences),
            "plain_mean_accel": acceleration_mm(plain, sequences)}
        print(f"{name} stride {stride}: {lifter:.2f} -> {by_stride[stride]:.2f} mm "
              f"(plain mean {blending[stride]['plain_mean_mm']:.2f}), acceleration "
              f"{lifter_accel:.2f} -> {blending[stride]['accel']:.2f} "
              f"({blending[stride]['plain_mean_accel']:.2f})", flush=True)
    best = coarsest_within(by_stride, stride_tolerance_mm)
    unthresholded = {}   # do-no-harm inputs -> their refinement at threshold 0

    def refine_case(kp, pose):
        digest = hashlib.sha1(np.ascontiguousarray(pose).tobytes()).hexdigest()
        if digest not in unthresholded:
            unthresholded[digest] = refiner.refine_sequence(kp, pose, stride=best,
                                                            correction_threshold=0.0)
        return unthresholded[digest]

    by_threshold = {}
    for mm in thresholds_mm:
        limit = lambda pose, out: limit_corrections(  # noqa: E731
            pose - pose[:, ROOT:ROOT + 1], out, mm / 1000.0)
        refined = mpjpe_over_frames([limit(pose, out) for out, (_, _, pose, _)
                                     in zip(outputs[best], sequences)], sequences)
        harm = evaluate_do_no_harm(lambda kp, pose: limit(pose, refine_case(kp, pose)),
                                   ((k, kp, truth) for k, kp, _, truth in sequences))
        by_threshold[float(mm)] = {"refined_mm": refined, "do_no_harm": harm}
        print(f"{name} stride {best} threshold {mm:g} mm: {lifter:.2f} -> {refined:.2f} mm, "
              f"harmed {harm_failures(harm, harm_margin_mm)}", flush=True)
    return judge({"name": name, "sequences": len(sequences), "frames": frames,
                  "lifter_mm": lifter, "refined_mm_by_stride": by_stride, "best_stride": best,
                  "lifter_accel": lifter_accel, "blending_by_stride": blending,
                  "by_threshold": by_threshold}, harm_margin_mm)


def judge(row: dict, harm_margin_mm: float) -> dict:
    """Each threshold's verdict at this margin, and the threshold the candidate gets. Kept
    apart from the measuring so that rows measured by an earlier run are judged by this
    run's margin."""
    for t in row["by_threshold"].values():
        t["harmed"] = harm_failures(t["do_no_harm"], harm_margin_mm)
        t["qualifies"] = not t["harmed"] and t["refined_mm"] < row["lifter_mm"]
    chosen = min(row["by_threshold"], key=lambda mm: (not row["by_threshold"][mm]["qualifies"],
                                                      len(row["by_threshold"][mm]["harmed"]),
                                                      row["by_threshold"][mm]["refined_mm"]))
    at = row["by_threshold"][chosen]
    row.update(best_threshold=chosen, refined_mm=at["refined_mm"], do_no_harm=at["do_no_harm"],
               harmed=at["harmed"], qualifies=at["qualifies"])
    return row


def failed_checks(row: dict) -> int:
    """Noisy do-no-harm cases not improved, plus one if the lifter's output is not."""
    return len(row["harmed"]) + (row["refined_mm"] >= row["lifter_mm"])


def clearly_better(challenger: dict, incumbent: dict, gain_margin_mm: float) -> bool:
    """Whether a challenger should replace the shipped model: it qualifies where the
    incumbent does not; or both qualify and it is `gain_margin_mm` lower on validation; or
    neither does and it fails fewer checks, or as many with no worse a worst harm and an error
    `gain_margin_mm` lower. The margins are there because validation and the test subjects
    differ by more than the differences between candidates."""
    if challenger["qualifies"] != incumbent["qualifies"]:
        return challenger["qualifies"]
    lower = challenger["refined_mm"] <= incumbent["refined_mm"] - gain_margin_mm
    if challenger["qualifies"]:
        return lower
    fewer = failed_checks(challenger) - failed_checks(incumbent)
    return fewer < 0 or (fewer == 0 and worst_harm(challenger) <= worst_harm(incumbent)
                         and lower)


def choose(rows: list, incumbent: str | None = None, gain_margin_mm: float = 0.0):
    """(the chosen row, or None; the least harmful row where none qualifies, else None)."""
    if incumbent is not None:
        kept = next(r for r in rows if r["name"] == incumbent)
        better = [r for r in rows if r is not kept and clearly_better(r, kept, gain_margin_mm)]
        best = min(better, key=lambda r: (not r["qualifies"], failed_checks(r), worst_harm(r),
                                          r["refined_mm"])) if better else kept
        return (best, None) if best["qualifies"] else (None, best)
    qualified = [r for r in rows if r["qualifies"]]
    if qualified:
        return min(qualified, key=lambda r: r["refined_mm"]), None
    # none qualifies: the least harmful (fewest failed cases, then the smallest worst harm,
    # then the lowest validation error) is what stays shipped, and the page says it fails
    return None, min(rows, key=lambda r: (len(r["harmed"]), worst_harm(r), r["refined_mm"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model names under d3p_model/models/refiner/")
    parser.add_argument("--strides", type=int, nargs="+", default=[27, 21, 18, 13, 9])
    parser.add_argument("--stride-tolerance-mm", type=float, default=0.05, metavar="MM",
                        help="take the coarsest stride within MM of the lowest validation "
                             "MPJPE (default 0.05: half the published resolution)")
    parser.add_argument("--thresholds", type=float, nargs="+", default=THRESHOLDS_MM,
                        metavar="MM", help="correction thresholds to try, mm (0: off)")
    parser.add_argument("--sequence-stride", type=int, default=2, metavar="K",
                        help="every K-th validation sequence (default 2)")
    parser.add_argument("--harm-margin-mm", type=float, default=MIN_GAIN_MM, metavar="MM",
                        help="a noisy do-no-harm case counts as improved only when the refined "
                             "error is more than MM below its input (default: float rounding)")
    parser.add_argument("--incumbent", default=None, metavar="NAME",
                        help="the model that ships now (one of the candidates): kept unless a "
                             "challenger is clearly better")
    parser.add_argument("--gain-margin-mm", type=float, default=0.0, metavar="MM",
                        help="with --incumbent: how much lower a challenger's validation "
                             "MPJPE must be to replace it")
    parser.add_argument("--apply", action="store_true",
                        help="write each candidate's best stride and threshold into its "
                             "model.json")
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
    if args.incumbent is not None and args.incumbent not in args.models:
        parser.error(f"--incumbent {args.incumbent} is not one of the candidates")
    if args.incumbent is not None and args.apply:
        parser.error("--apply with --incumbent would rewrite the incumbent's published settings "
                     "with its row at this margin: apply a challenger by a run of its own")
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        rows, command = saved["rows"], saved["command"]
        judged_by = parser.parse_args(shlex.split(command.split(REUSED)[0])[1:])
        args.harm_margin_mm, args.incumbent, args.gain_margin_mm = (
            judged_by.harm_margin_mm, judged_by.incumbent, judged_by.gain_margin_mm)
        for r in rows:
            json_keys_to_numbers(r)
    else:
        refuse_different_validation_sets(args.models)
        earlier = reusable_rows(parser, args)
        rows = [earlier[name] if name in earlier else
                assess(name, args.strides, args.sequence_stride, args.thresholds,
                       args.stride_tolerance_mm, args.harm_margin_mm)
                for name in args.models]
        sources = sorted({earlier[name]["measured_by"] for name in args.models
                          if name in earlier})
        if sources:
            command += REUSED + "; ".join(sources) + ")"
    rows = [judge(r, args.harm_margin_mm) for r in rows]
    chosen, fallback = choose(rows, args.incumbent, args.gain_margin_mm)
    document = {"command": command, "rows": rows,
                "chosen": chosen and {"name": chosen["name"], "stride": chosen["best_stride"],
                                      THRESHOLD_KEY: chosen["best_threshold"]},
                "least_harmful": fallback and {"name": fallback["name"],
                                               "stride": fallback["best_stride"],
                                               THRESHOLD_KEY: fallback["best_threshold"],
                                               "harmed": fallback["harmed"]}}
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"{args.name}.json").write_text(json.dumps(document, indent=1) + "\n")
    strides = sorted({s for r in rows for s in r["refined_mm_by_stride"]}, reverse=True)
    lines = ["# Choosing the shipped refiner (validation split only)", "",
             f"Generated by `{command}`. The candidates' validation sequences (held out from "
             "each one's training, the same for all: takes of the training subjects, or whole "
             "subjects with `data.validation_subjects`; never S9/S11), MPJPE in mm. "
             "Refined at each inference stride without a correction threshold, overlapping "
             "windows blended as `d3p refine` does (`blend_weights`); the stride taken is the "
             "coarsest within the tolerance of the lowest MPJPE (the command's "
             "`--stride-tolerance-mm`, default 0.05); then, at that stride, each correction "
             "threshold (d3p_model/trust.py). Do-no-harm "
             "columns: refined MPJPE of the ground truth fed as input (clean) and with known "
             "errors; the input errors are given in the header.", ""]
    cases = list(rows[0]["do_no_harm"])
    inputs = {c: rows[0]["do_no_harm"][c]["input_mm"] for c in cases}
    harm_header = " | ".join(f"{c} ({inputs[c]:.1f})" for c in cases)
    lines.append("| model | lifter | " + " | ".join(f"refined, stride {s}" for s in strides)
                 + " | threshold (mm) | refined | " + harm_header + " | qualifies |")
    lines.append("| --- | ---: | " + " | ".join("---:" for _ in strides) + " | ---: | ---: | "
                 + " | ".join("---:" for _ in cases) + " | --- |")
    for r in rows:
        refined = [f"{r['refined_mm_by_stride'][s]:.2f}" if s in r["refined_mm_by_stride"]
                   else "" for s in strides]
        lines.append(f"| {r['name']} | {r['lifter_mm']:.2f} | " + " | ".join(refined)
                     + f" | {r['best_threshold']:g} | {r['refined_mm']:.2f} | "
                     + harm_cells(r, cases) + f" | {verdict(r)} |")
    lines += ["", "Blending the overlapping windows: MPJPE (mm) and acceleration error "
              "(mm / frame^2) of the refined output without a threshold, by stride, with "
              "`d3p refine`'s blend (weights favouring each window's centre) / a plain mean "
              "of the same windows:", "",
              "| model | lifter MPJPE / accel | " + " | ".join(f"stride {s}" for s in strides)
              + " |", "| --- | --- | " + " | ".join("---" for _ in strides) + " |"]
    for r in (r for r in rows if r["blending_by_stride"]):
        cells = []
        for s in strides:
            b = r["blending_by_stride"].get(s)
            cells.append(f"{r['refined_mm_by_stride'][s]:.2f} / {b['plain_mean_mm']:.2f} mm, "
                         f"accel {b['accel']:.2f} / {b['plain_mean_accel']:.2f}" if b else "")
        lines.append(f"| {r['name']} | {r['lifter_mm']:.2f} / {r['lifter_accel']:.2f} | "
                     + " | ".join(cells) + " |")
    for r in rows:
        lines += ["", f"`{r['name']}` at stride {r['best_stride']}, by correction threshold:", "",
                  "| threshold (mm) | refined | " + harm_header + " | qualifies |",
                  "| ---: | ---: | " + " | ".join("---:" for _ in cases) + " | --- |"]
        for mm, t in sorted(r["by_threshold"].items()):
            lines.append(f"| {mm:g} | {t['refined_mm']:.2f} | " + harm_cells(t, cases)
                         + f" | {verdict(t)} |")
    if args.harm_margin_mm > MIN_GAIN_MM:
        lines += ["", f"A noisy do-no-harm case counts as improved only when the refined error is "
                  f"more than {args.harm_margin_mm:g} mm below its input (`--harm-margin-mm`)."]
    if args.incumbent:
        lines += ["", f"`{args.incumbent}` ships now and stays unless a challenger is clearly "
                  "better: it qualifies where the incumbent does not; or both qualify and it is "
                  f"at least {args.gain_margin_mm:g} mm lower; or neither qualifies and it fails "
                  "fewer checks, or as many with no worse a worst harm (refined / input error of "
                  f"the case it fails worst) and an error at least {args.gain_margin_mm:g} mm "
                  "lower (`--gain-margin-mm`)."]
        named = chosen or fallback
        fails = "" if named["qualifies"] else \
            f", failing {', '.join(named['harmed']) or 'to improve the lifter'}"
        decision = (f"No challenger is clearly better: **{named['name']}** stays, with the "
                    "stride and threshold it ships with (at this margin its best row is "
                    f"stride {named['best_stride']}, threshold {named['best_threshold']:g} mm"
                    f"{fails})." if named["name"] == args.incumbent else
                    f"**{named['name']}** replaces it, at stride {named['best_stride']}, "
                    f"threshold {named['best_threshold']:g} mm{fails}.")
    elif chosen:
        decision = (f"Chosen: **{chosen['name']}**, inference stride {chosen['best_stride']}, "
                    f"correction threshold {chosen['best_threshold']:g} mm.")
    else:
        decision = ("No candidate qualifies. The least harmful (fewest failed do-no-harm cases, "
                    "then the smallest worst harm: refined / input error of the case it fails "
                    f"worst, then the lowest validation error) is **{fallback['name']}** at "
                    f"stride {fallback['best_stride']}, threshold {fallback['best_threshold']:g} "
                    "mm; it still fails "
                    f"{', '.join(fallback['harmed']) or 'to improve the lifter'}.")
    lines += ["", decision]
    (args.docs / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if args.apply:
        for r in rows:
            apply_settings(r["name"], r["best_stride"], r["best_threshold"])
    return 0


def worst_harm(row: dict) -> float:
    """The largest refined / input error ratio among the cases a row fails (0: none): how
    far from the truth the refiner moves the input it harms most."""
    return max((row["do_no_harm"][c]["refined_mm"] / row["do_no_harm"][c]["input_mm"]
                for c in row["harmed"]), default=0.0)


def harm_cells(row: dict, cases) -> str:
    return " | ".join(f"{row['do_no_harm'][c]['refined_mm']:.1f}" for c in cases)


def verdict(row: dict) -> str:
    return "yes" if row["qualifies"] else "no (" + (", ".join(row["harmed"]) or "no gain") + ")"


def json_keys_to_numbers(row: dict) -> None:
    """JSON keys are strings: the strides and thresholds back to numbers."""
    row["refined_mm_by_stride"] = {int(k): v for k, v in row["refined_mm_by_stride"].items()}
    # rows saved before the blend was measured have none (their page shows no blend row)
    row["blending_by_stride"] = {int(k): v for k, v in row.get("blending_by_stride", {}).items()}
    row["by_threshold"] = {float(k): v for k, v in row["by_threshold"].items()}


def reusable_rows(parser: argparse.ArgumentParser, args) -> dict:
    """{model name: row} from earlier runs' JSON measured with these settings; each row
    remembers the command that measured it."""
    rows = {}
    wanted = (args.strides, args.sequence_stride, [float(t) for t in args.thresholds],
              args.stride_tolerance_mm)
    for path in args.reuse:
        saved = json.loads(path.read_text())
        saved_args = parser.parse_args(shlex.split(saved["command"].split(REUSED)[0])[1:])
        measured = (saved_args.strides, saved_args.sequence_stride,
                    [float(t) for t in saved_args.thresholds], saved_args.stride_tolerance_mm)
        if measured != wanted or any("blending_by_stride" not in r for r in saved["rows"]):
            raise SystemExit(f"{path}: measured with --strides {measured[0]} --sequence-stride "
                             f"{measured[1]} --thresholds {measured[2]} --stride-tolerance-mm "
                             f"{measured[3]} (or before blending was measured), not "
                             f"{wanted[0]} / {wanted[1]} / {wanted[2]} / {wanted[3]}: "
                             "cannot reuse")
        for row in saved["rows"]:
            json_keys_to_numbers(row)
            row.setdefault("measured_by", saved["command"].split(REUSED)[0])
            rows[row["name"]] = row
    return rows


def apply_settings(name: str, stride: int, threshold_mm: float) -> None:
    """Write a model's best validation stride and correction threshold into its model.json
    (inference settings: the weights and their ONNX export do not change)."""
    spec_path = MODELS / name / "model" / "model.json"
    spec = json.loads(spec_path.read_text())
    if spec.get("stride") == int(stride) and float(spec.get(THRESHOLD_KEY, 0.0)) == threshold_mm:
        return   # unchanged: the file (and the results made from it) stay as they are
    spec["stride"] = int(stride)
    spec[THRESHOLD_KEY] = float(threshold_mm)
    spec_path.write_text(json.dumps(spec, indent=2, allow_nan=False) + "\n")
    print(f"wrote stride {stride}, {THRESHOLD_KEY} {threshold_mm:g} into {spec_path}")


if __name__ == "__main__":
    sys.exit(main())
