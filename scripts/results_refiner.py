#!/usr/bin/env python3
"""Regenerates D3PRefiner's published results (issue 5, "Results to publish").

    .venv/bin/python scripts/results_refiner.py            (after the refiners are trained)

For each 2D setting (gt2d, sh2d) and window T (27, 81, 243): refines the lifter's test
predictions (S9/S11) with the trained model `h36m_<setting>_t<T>` through `d3p refine`
(skipped when the refined file is newer than its inputs), evaluates lifter, Savitzky-Golay
smoother and refiner side by side per action and writes
  docs/results/refiner_<setting>_t<T>.{md,json}   per action, summary, targets
  docs/results/refiner.md, refiner.json            all settings and windows, ablations,
                                                    figures, what was missing
  docs/results/figures/refiner_<setting>_t<T>_*.png  error histograms, skeletons, a trajectory
Models not trained (yet) are skipped with a note. Every command run is printed and recorded.
The model and file names are the lists below; every path can be changed by an argument (the
tests point them at a temporary folder with generated data).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # runnable as a plain script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from d3p_model.data.predictions import load_predictions  # noqa: E402
from d3p_model.evaluate.decomposition import decomposition_table, rigid_decomposition  # noqa: E402
from d3p_model.evaluate.metrics import mpjpe  # noqa: E402
from d3p_model.evaluate.report import (METRICS, evaluate_predictions, markdown_table,  # noqa: E402
                                       shared_keys, subject_of)

# ------------------------------------------------------------------ what is published
SETTINGS = ("gt2d", "sh2d")
SETTING_TITLES = {"gt2d": "ground-truth 2D", "sh2d": "detected 2D (Stacked Hourglass)"}
WINDOWS = (27, 81, 243)
MAIN_WINDOW = 81                 # figures use this T (else the largest one evaluated)
RUN_NAME = "h36m_{setting}_t{window}"
# The published (shipped) model per window: the 1-epoch model trained on for 20 more epochs
# (configs *_long.yaml); T = 243 has only its own from-scratch run.
MAIN_RUN_SUFFIX = {27: "_long", 81: "_long", 243: ""}
ABLATION_WINDOW = 27
# (suffix of RUN_NAME, what the variant is). The variants share the 1-epoch budget of the
# full model (""), so they compare like with like; "_long" shows what more training adds.
ABLATIONS = (
    ("", "full model (CND noise, diffusion, K=2), 1 epoch"),
    ("_nocnd", "without CND (trained on the real lifter errors), 1 epoch"),
    ("_nodiff", "without diffusion (one step from the lifter output), 1 epoch"),
    ("_depth6", "depth 6, 1 epoch"),
    ("_depth8", "depth 8, 1 epoch"),
    ("_long", "full model, 1 + 20 epochs (the published model)"),
)


def main_run_name(setting: str, window: int) -> str:
    return RUN_NAME.format(setting=setting, window=window) + MAIN_RUN_SUFFIX.get(window, "")
# Where trained model dirs are looked for, in order: <root>/<name>/ or <root>/<name>/model/.
MODEL_ROOTS = ("d3p_model/models/refiner", "runs")
TEST_SUBJECTS = ("S9", "S11")
LABELS = ("lifter", "smoother", "refiner")

# ------------------------------------------------------------------ targets (issue 5)
TARGET_MPJPE_PCT = 10.0          # refiner MPJPE at least 10% below the lifter's (average)
TARGET_P_MPJPE_PCT = 11.0        # P-MPJPE at least 11% below
# "Clearly better than the smoother": both averages at least this much below the smoother's.
CLEARLY_BETTER_PCT = 5.0

SKELETON_FRAMES = 4
TRAJECTORY_FRAMES = 150
TRAJECTORY_JOINT = "right_wrist"
FIGURE_DPI = 85
UP_TO_DATE = "(up to date)"


class Notes(list):
    """What could not be done; printed as it happens and published."""

    def add(self, text: str) -> None:
        print(f"NOTE: {text}", flush=True)
        self.append(text)


# ------------------------------------------------------------------ running d3p
def run_d3p(arguments: list[str], commands: list[str]) -> None:
    """Run `d3p ARGS` through the d3p entry point (in this process: torch imported once),
    printing and recording the command line. Raises RuntimeError when it fails."""
    from d3p_model.cli import main as d3p_main

    line = shlex.join(["d3p", *arguments])
    print(f"$ {line}", flush=True)
    commands.append(line)
    started = time.time()
    try:
        status = d3p_main(arguments)
    except SystemExit as exit_:  # argparse: bad options
        status = exit_.code if isinstance(exit_.code, int) else 2
    if status:
        raise RuntimeError(f"`{line}` failed with status {status}")
    print(f"  ({time.time() - started:.0f} s)", flush=True)


def is_fresh(output: Path, inputs: list[Path]) -> bool:
    """True when `output` exists and is newer than every existing input file."""
    if not output.is_file():
        return False
    newest = max((path.stat().st_mtime for path in inputs if path.exists()), default=0.0)
    return output.stat().st_mtime > newest


def model_files(model_dir: Path) -> list[Path]:
    return [model_dir / name for name in ("model.json", "weights.pt", "cnd.pt")]


def find_model(name: str, roots: list[Path]) -> Path | None:
    for root in roots:
        for candidate in (root / name, root / name / "model"):
            if (candidate / "model.json").is_file():
                return candidate
    return None


def model_summary(model_dir: Path) -> dict:
    """Architecture and training provenance from model.json (no torch needed)."""
    spec = json.loads((model_dir / "model.json").read_text())
    info = spec.get("info", {})
    config = info.get("config", {})
    provenance = info.get("provenance", {})
    return {
        "dir": str(model_dir),
        "denoiser": spec.get("denoiser", {}),
        "diffusion": spec.get("diffusion", {}).get("enabled"),
        "steps": spec.get("steps"),
        "noise": info.get("noise", config.get("noise")),
        "trained_with": provenance.get("command"),
        "commit": provenance.get("commit"),
        "calibration_mpjpe_mm": {k: info.get("calibration", {}).get(k)
                                 for k in ("mpjpe_in_mm", "mpjpe_out_mm")},
    }


def count_flops(model: dict) -> tuple[dict | None, str | None]:
    """FLOPs per window of a model's PoseDenoiser (one call, and one K-step refinement) and
    its parameter count, by d3p_model.denoiser.flops.count_flops; (None, why) if impossible."""
    try:
        from d3p_model.denoiser.flops import count_flops as denoiser_flops
        from d3p_model.denoiser.model import DenoiserConfig
        return denoiser_flops(DenoiserConfig.from_dict(model["denoiser"]),
                              steps=int(model["steps"])), None
    except (ImportError, KeyError, TypeError, ValueError, RuntimeError) as err:
        return None, f"FLOPs not counted ({err!r})"


# ------------------------------------------------------------------ evaluation
class Evaluator:
    """Per-action results of files on one fixed set of sequence keys, computed once each."""

    def __init__(self, lifter, subjects):
        self.lifter = lifter
        self.subjects = subjects
        self.keys = shared_keys([lifter], ["lifter"], subjects)
        self._cache: dict[str, dict] = {}

    def evaluate(self, predictions, name: str) -> dict:
        if name not in self._cache:
            # same keys as the lifter's and the same ground truth, or a clear error
            shared = shared_keys([self.lifter, predictions], ["lifter", name], self.subjects)
            missing = sorted(set(self.keys) - set(shared))
            if missing:
                raise ValueError(f"{name}: {len(missing)} test sequences missing, e.g. "
                                 f"{missing[0]!r}")
            self._cache[name] = evaluate_predictions(predictions, keys=self.keys, source=name)
        return self._cache[name]


def reduction_pct(before: float, after: float) -> float:
    return 100.0 * (before - after) / before


def summarise(results: dict) -> dict:
    """Headline numbers and the issue's targets from {"lifter", "refiner", optional
    "smoother"} evaluate_predictions results."""
    lifter, refiner = results["lifter"], results["refiner"]
    smoother = results.get("smoother")
    actions = list(lifter["actions"])
    summary = {"actions": len(actions), "average": {}, "reduction_pct": {},
               "improved": {}, "not_improved": {}}
    for label, result in results.items():
        summary["average"][label] = {name: result["average"][name] for name in METRICS}
    for name in ("mpjpe", "p_mpjpe"):
        summary["reduction_pct"].setdefault("refiner", {})[name] = reduction_pct(
            lifter["average"][name], refiner["average"][name])
        if smoother is not None:
            summary["reduction_pct"].setdefault("smoother", {})[name] = reduction_pct(
                lifter["average"][name], smoother["average"][name])
        worse = [a for a in actions
                 if not refiner["actions"][a][name] < lifter["actions"][a][name]]
        summary["improved"][name] = len(actions) - len(worse)
        summary["not_improved"][name] = worse
    targets = {
        "mpjpe": {"wanted_pct": TARGET_MPJPE_PCT,
                  "met": summary["reduction_pct"]["refiner"]["mpjpe"] >= TARGET_MPJPE_PCT},
        "p_mpjpe": {"wanted_pct": TARGET_P_MPJPE_PCT,
                    "met": summary["reduction_pct"]["refiner"]["p_mpjpe"] >= TARGET_P_MPJPE_PCT},
        "every_action": {"met": not summary["not_improved"]["mpjpe"]
                         and not summary["not_improved"]["p_mpjpe"]},
    }
    if smoother is not None:
        margin = {name: reduction_pct(smoother["average"][name], refiner["average"][name])
                  for name in ("mpjpe", "p_mpjpe")}
        beats = {name: sum(refiner["actions"][a][name] < smoother["actions"][a][name]
                           for a in actions) for name in ("mpjpe", "p_mpjpe")}
        targets["smoother"] = {"wanted_pct": CLEARLY_BETTER_PCT, "margin_pct": margin,
                               "actions_better": beats,
                               "met": min(margin.values()) >= CLEARLY_BETTER_PCT}
    else:
        targets["smoother"] = {"met": None, "why": "no smoother results"}
    decided = [entry["met"] for entry in targets.values() if entry["met"] is not None]
    targets["all"] = {"met": all(decided) and targets["smoother"]["met"] is not None}
    summary["targets"] = targets
    return summary


def _yes(met) -> str:
    return {True: "met", False: "**NOT met**", None: "not decided"}[met]


def target_lines(summary: dict) -> list[str]:
    """The targets stated plainly, with the numbers."""
    targets, reduction = summary["targets"], summary["reduction_pct"]["refiner"]
    lines = [
        f"- MPJPE at least {TARGET_MPJPE_PCT:g}% below the lifter (average over actions): "
        f"{reduction['mpjpe']:.1f}%: {_yes(targets['mpjpe']['met'])}",
        f"- P-MPJPE at least {TARGET_P_MPJPE_PCT:g}% below the lifter: "
        f"{reduction['p_mpjpe']:.1f}%: {_yes(targets['p_mpjpe']['met'])}",
    ]
    improved, worse = summary["improved"], summary["not_improved"]
    text = (f"- Every action improved: MPJPE {improved['mpjpe']}/{summary['actions']}, "
            f"P-MPJPE {improved['p_mpjpe']}/{summary['actions']}: "
            f"{_yes(targets['every_action']['met'])}")
    for name, title in (("mpjpe", "MPJPE"), ("p_mpjpe", "P-MPJPE")):
        if worse[name]:
            text += f"; not improved in {title}: {', '.join(worse[name])}"
    lines.append(text)
    smoother = targets["smoother"]
    if smoother["met"] is None:
        lines.append("- Clearly better than the smoother: not decided (no smoother results)")
    else:
        margin, beats = smoother["margin_pct"], smoother["actions_better"]
        lines.append(
            f"- Clearly better than the smoother (both averages at least "
            f"{CLEARLY_BETTER_PCT:g}% below the smoother's): MPJPE {margin['mpjpe']:.1f}% "
            f"and P-MPJPE {margin['p_mpjpe']:.1f}% below it, better in "
            f"{beats['mpjpe']}/{summary['actions']} and {beats['p_mpjpe']}/{summary['actions']} "
            f"actions: {_yes(smoother['met'])}")
    lines.append(f"- All targets: {_yes(targets['all']['met'])}")
    return lines


def _every(stride: int) -> str:
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(stride % 10 if stride % 100 not in (11, 12, 13)
                                           else 0, "th")
    return f"every {stride}{suffix}"


def _fmt(value, digits=1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _change(reduction: float) -> str:
    """A reduction in % as the signed change: 12.3 -> '-12.3%'."""
    return f"{-reduction:+.1f}%"


def headline_table(summary: dict) -> str:
    rows = ["| | MPJPE (mm) | vs lifter | P-MPJPE (mm) | vs lifter | Accel (mm/frame²) |",
            "|---|---:|---:|---:|---:|---:|"]
    for label, average in summary["average"].items():
        change = summary["reduction_pct"].get(label)
        mpjpe_change = _change(change["mpjpe"]) if change else "-"
        p_mpjpe_change = _change(change["p_mpjpe"]) if change else "-"
        rows.append(f"| {label} | {_fmt(average['mpjpe'])} | {mpjpe_change} | "
                    f"{_fmt(average['p_mpjpe'])} | {p_mpjpe_change} | "
                    f"{_fmt(average['accel'], 2)} |")
    return "\n".join(rows) + "\n"


# ------------------------------------------------------------------ the pipeline
def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("D3P_CACHE") or REPO_ROOT / "cache"),
                        help="holds predictions/<setting>/test.npz; refined files go to "
                             "<cache>/refined/ (default: $D3P_CACHE or cache/)")
    parser.add_argument("--models", type=Path, nargs="+",
                        default=[REPO_ROOT / root for root in MODEL_ROOTS],
                        help="folders holding the trained model dirs <name>/ or <name>/model/")
    parser.add_argument("--docs", type=Path, default=REPO_ROOT / "docs" / "results",
                        help="where pages, JSON and figures/ go; smoother_<setting>.json "
                             "is read from here")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--windows", nargs="+", type=int, default=list(WINDOWS))
    parser.add_argument("--main-window", type=int, default=MAIN_WINDOW)
    parser.add_argument("--ablation-window", type=int, default=ABLATION_WINDOW)
    parser.add_argument("--subjects", nargs="+", default=list(TEST_SUBJECTS),
                        help="test subjects (first key component); 'all' for every sequence")
    parser.add_argument("--stride", type=int, help="passed to d3p refine (default: its own)")
    parser.add_argument("--steps", type=int, help="passed to d3p refine (default: the model's)")
    parser.add_argument("--device", default="cpu", help="passed to d3p refine (cpu, cuda, ...)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="passed to d3p refine: sequences refined in N processes")
    parser.add_argument("--force", action="store_true", help="refine again even if fresh")
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--summary-only", action="store_true",
                        help="only rebuild refiner.md/.json from the refiner_<setting>.json "
                             "files of earlier runs")
    parser.add_argument("--sequence-stride", type=int, default=1, metavar="K",
                        help="use every K-th test sequence only (sorted keys; stated in the "
                             "pages): to save refinement time")
    parser.add_argument("--ablation-sequence-stride", type=int, default=1, metavar="K",
                        help="ablations on every K-th of those sequences only (the full "
                             "model is re-scored on the same subset)")
    return parser.parse_args(argv)


def refined_with(output: Path) -> dict:
    """The `refined_by` entry `d3p refine` wrote into a refined file's meta ({} if none)."""
    try:
        with np.load(output, allow_pickle=False) as data:
            return json.loads(str(data["__meta__"])).get("refined_by", {})
    except (OSError, KeyError, ValueError):
        return {}


def refine_file(lifter_path: Path, model_dir: Path, output: Path, args, commands, notes) -> bool:
    """Run `d3p refine` unless `output` is newer than its inputs and was made with the
    requested stride and steps. Appends the command line to `commands` either way (marked
    "(up to date)" when an earlier run's file is reused)."""
    arguments = ["refine", str(lifter_path), "-o", str(output), "--model", str(model_dir)]
    if args.stride is not None:
        arguments += ["--stride", str(args.stride)]
    if args.steps is not None:
        arguments += ["--steps", str(args.steps)]
    if args.device != "cpu":
        arguments += ["--device", args.device]
    if args.jobs > 1:
        arguments += ["--jobs", str(args.jobs)]
    if not args.force and is_fresh(output, [lifter_path, *model_files(model_dir)]):
        model = model_summary(model_dir)
        wanted = {"stride": args.stride or model["denoiser"].get("window"),
                  # a model without diffusion always takes one step, whatever was asked
                  "steps": (args.steps or model["steps"]) if model["diffusion"]
                  else model["steps"]}
        made = refined_with(output)
        if all(made.get(name) == value for name, value in wanted.items()):
            print(f"up to date: {output}", flush=True)
            commands.append(f"{UP_TO_DATE} {shlex.join(['d3p', *arguments])}")
            return True
    try:
        run_d3p(arguments, commands)
    except (RuntimeError, ImportError) as err:
        notes.add(f"refinement with {model_dir} failed: {err}")
        return False
    return True


def smoothed_file(setting: str, prediction_dir: Path, lifter_path: Path, args, commands,
                  notes) -> Path | None:
    smoothed = prediction_dir / "test_smoothed.npz"
    params = args.docs / f"smoother_{setting}.json"
    if smoothed.is_file() and is_fresh(smoothed, [lifter_path, params]):
        return smoothed
    if not params.is_file():
        notes.add(f"{setting}: no smoother: {smoothed} missing or stale and {params} missing "
                  f"(run scripts/results_lifter.sh)")
        return None
    try:
        run_d3p(["smooth", "apply", str(lifter_path), "-o", str(smoothed), "--params",
                 str(params)], commands)
    except RuntimeError as err:
        notes.add(f"{setting}: smoother failed: {err}")
        return None
    return smoothed


def write_page(path: Path, setting: str, window: int, record: dict, comparison: dict) -> None:
    summary = record["summary"]
    model = record["model"]
    denoiser = model["denoiser"]
    lines = [
        f"# D3PRefiner, {SETTING_TITLES.get(setting, setting)}, T = {window}",
        "",
        f"Generated by `scripts/results_refiner.py` on {record['generated_utc']}; do not edit.",
        f"Test sequences: {record['num_sequences']} ({record['frames']} frames, subjects "
        f"{', '.join(record['subjects']) if record['subjects'] else 'all'}"
        + (f"; only {_every(record['sequence_stride'])} sequence in sorted key order"
           if record["sequence_stride"] > 1 else "") + "), "
        f"{summary['actions']} actions. Average = mean over actions of the per-action "
        f"means (errors pooled over each action's frames), in mm.",
        "",
        f"Model `{model['dir']}`: depth {denoiser.get('depth')}, width "
        f"{denoiser.get('width')}, T = {denoiser.get('window')}, noise {model['noise']}, "
        f"diffusion {model['diffusion']}, K = {model['steps']} steps"
        + (f"; trained with `{model['trained_with']}` at commit {model['commit']}"
           if model.get("trained_with") else "") + ".",
        "",
        "Commands:",
        "",
        *[f"    {line}" for line in record["commands"]],
        "",
        "## Summary",
        "",
        headline_table(summary),
        "## Targets (issue 5)",
        "",
        *target_lines(summary),
        "",
        "## Per action",
        "",
        markdown_table(comparison),
    ]
    if record.get("rigid"):
        lines += [
            "",
            "## The rigid part of the error (where MPJPE and P-MPJPE disagree)",
            "",
            "P-MPJPE removes, per frame, the best rotation and uniform scale. `rot °`: mean "
            "angle of that rotation; `size`: RMS spread of the joints about their centroid, "
            "relative to the ground truth's (1 = right size). An action whose P-MPJPE drops "
            "while its MPJPE does not is turned or resized as a whole "
            "(`d3p_model/evaluate/decomposition.py`).",
            "",
            decomposition_table(record["rigid"]),
        ]
    path.write_text("\n".join(lines) + "\n")


def pick_sequence(lifter, keys: list[str]) -> str:
    """The sequence whose lifter MPJPE is the median one: representative, and chosen
    without looking at the refiner's output."""
    scored = []
    for key in keys:
        seq = lifter.sequences[key]
        pose, truth = (np.asarray(a, np.float64) for a in (seq.pose_3d, seq.ground_truth_3d))
        scored.append((mpjpe(pose - pose[:, :1], truth - truth[:, :1]), key))
    return sorted(scored)[len(scored) // 2][1]


def make_figures(setting: str, window: int, files: dict, keys: list[str], figures_dir: Path,
                 notes) -> list[str]:
    from d3p_model.evaluate.plots import (error_histogram_figure, save_figure, skeleton_figure,
                                          trajectory_figure)

    labels = list(files)
    predictions = list(files.values())
    stem = f"refiner_{setting}_t{window}"
    title = f"{SETTING_TITLES.get(setting, setting)}, T = {window}"
    key = pick_sequence(files["lifter"], keys)
    num_frames = files["lifter"].sequences[key].num_frames
    written = []
    figure, _ = error_histogram_figure(predictions, labels, keys=keys, title=title)
    written.append(save_figure(figure, figures_dir / f"{stem}_errors.png", FIGURE_DPI))
    figure = skeleton_figure(predictions, labels, key, title=title)
    written.append(save_figure(figure, figures_dir / f"{stem}_skeletons.png", FIGURE_DPI))
    first = max(0, num_frames // 2 - TRAJECTORY_FRAMES // 2)
    figure = trajectory_figure(predictions, labels, key, TRAJECTORY_JOINT, first,
                               TRAJECTORY_FRAMES, title=title)
    written.append(save_figure(figure, figures_dir / f"{stem}_trajectory.png", FIGURE_DPI))
    for path in written:
        size = path.stat().st_size
        print(f"wrote {path} ({size // 1024} KB)", flush=True)
        if size > 300 * 1024:
            notes.add(f"{path} is {size // 1024} KB (> 300 KB)")
    return [str(path.relative_to(figures_dir.parent)) for path in written] + [f"sequence {key}"]


def subset_file(source: Path, stride: int, subjects) -> Path:
    """`source` itself (stride 1), or a file beside it with every `stride`-th sequence (sorted
    keys, after the subject filter), written when missing or stale."""
    if stride == 1:
        return source
    target = source.with_name(f"{source.stem}_every{stride}.npz")
    if is_fresh(target, [source]):
        return target
    from d3p_model.data.predictions import Predictions, save_predictions
    predictions = load_predictions(source)
    keys = sorted(k for k in predictions.sequences
                  if subjects is None or subject_of(k) in subjects)[::stride]
    meta = {**predictions.meta, "subset": {"of": str(source), "sequence_stride": stride,
                                           "sequences": len(keys),
                                           "of_sequences": len(predictions.sequences)}}
    save_predictions(target, Predictions({k: predictions.sequences[k] for k in keys}, meta))
    print(f"wrote {target}: {_every(stride)} sequence, {len(keys)} of "
          f"{len(predictions.sequences)}", flush=True)
    return target


def process_setting(setting: str, args, subjects, generated: str) -> dict:
    """Everything of one 2D setting: smoother, main runs, ablations, figures. Returns the
    setting's document (written to refiner_<setting>.json)."""
    notes = Notes()
    commands_all: list[str] = []
    document = {"setting": setting, "generated_utc": generated, "subjects": subjects,
                "refine_options": {"stride": args.stride, "steps": args.steps},
                "sequence_stride": args.sequence_stride,
                "ablation_sequence_stride": args.ablation_sequence_stride,
                "results": {}, "ablation": None, "figures": None, "notes": notes,
                "commands": commands_all}
    prediction_dir = args.cache / "predictions" / setting
    full_path = prediction_dir / "test.npz"
    if not full_path.is_file():
        notes.add(f"{setting}: {full_path} missing (run `d3p predict --setting "
                  f"{setting}`); setting skipped")
        return document
    setting_commands: list[str] = []
    smoothed_path = smoothed_file(setting, prediction_dir, full_path, args, setting_commands,
                                  notes)
    commands_all.extend(setting_commands)
    lifter_path = subset_file(full_path, args.sequence_stride, subjects)
    print(f"loading {lifter_path}", flush=True)
    lifter = load_predictions(lifter_path)
    evaluator = Evaluator(lifter, subjects)
    smoother = load_predictions(smoothed_path) if smoothed_path else None
    base = {"lifter": evaluator.evaluate(lifter, "lifter")}
    if smoother is not None:
        base["smoother"] = evaluator.evaluate(smoother, "smoother")

    def evaluate_run(name: str, input_path: Path, judge: Evaluator):
        model_dir = find_model(name, args.models)
        if model_dir is None:
            notes.add(f"{setting}: model {name} not trained (looked for {name}/ and "
                      f"{name}/model/ in {', '.join(str(r) for r in args.models)})")
            return None
        tail = input_path.stem.removeprefix("test")  # "" or "_every4"
        output = args.cache / "refined" / setting / f"{name}{tail}.npz"
        commands = list(setting_commands)
        before = len(commands)
        if not refine_file(input_path, model_dir, output, args, commands, notes):
            return None
        commands_all.extend(c for c in commands[before:] if not c.startswith(UP_TO_DATE))
        refined = load_predictions(output)
        result = judge.evaluate(refined, name)
        record = {"model": model_summary(model_dir), "refined": str(output),
                  "lifter": str(input_path),
                  "smoother": str(smoothed_path) if smoothed_path else None,
                  "commands": commands, "refined_meta": refined.meta}
        return record, result, refined

    main_runs = {}
    lifter_rigid = None
    for window in dict.fromkeys(args.windows):
        name = main_run_name(setting, window)
        outcome = evaluate_run(name, lifter_path, evaluator)
        if outcome is None:
            continue
        record, result, refined = outcome
        results = {**base, "refiner": result}
        if lifter_rigid is None:   # the same lifter file for every window
            lifter_rigid = rigid_decomposition(lifter, keys=evaluator.keys)
        record["rigid"] = {"lifter": lifter_rigid,
                           "refiner": rigid_decomposition(refined, keys=evaluator.keys)}
        comparison = {"labels": list(results), "sequences": evaluator.keys, "results": results}
        record.update({"generated_utc": generated, "setting": setting, "window": window,
                       "subjects": subjects, "num_sequences": len(evaluator.keys),
                       "sequence_stride": args.sequence_stride,
                       "frames": result["num_frames"], "summary": summarise(results)})
        stem = f"refiner_{setting}_t{window}"
        write_page(args.docs / f"{stem}.md", setting, window, record, comparison)
        (args.docs / f"{stem}.json").write_text(
            json.dumps({**record, **comparison}, indent=1) + "\n")
        print(f"wrote {args.docs / stem}.md/.json", flush=True)
        document["results"][str(window)] = record
        main_runs[window] = (record, result)

    # Ablations, optionally on a further subset; the full model is then re-scored on it.
    ablation_path = subset_file(lifter_path, args.ablation_sequence_stride, subjects)
    judge = evaluator if ablation_path == lifter_path else \
        Evaluator(load_predictions(ablation_path), subjects)
    ablation_lifter = judge.evaluate(judge.lifter, "lifter")
    rows = []
    for suffix, description in ABLATIONS:
        name = RUN_NAME.format(setting=setting, window=args.ablation_window) + suffix
        if args.ablation_window in main_runs \
                and name == main_run_name(setting, args.ablation_window):
            record, result = main_runs[args.ablation_window]
            if judge is not evaluator:
                result = judge.evaluate(load_predictions(record["refined"]), name)
        else:
            outcome = evaluate_run(name, ablation_path, judge)
            if outcome is None:
                continue
            record, result, _ = outcome
        flops, why = count_flops(record["model"])
        if why:
            notes.add(f"{setting} {name}: {why}")
        rows.append({
            "name": name, "variant": description, "model": record["model"], "flops": flops,
            "mpjpe": result["average"]["mpjpe"], "p_mpjpe": result["average"]["p_mpjpe"],
            "reduction_pct": {m: reduction_pct(ablation_lifter["average"][m],
                                               result["average"][m])
                              for m in ("mpjpe", "p_mpjpe")},
            "commands": record["commands"]})
    if rows:
        document["ablation"] = {
            "window": args.ablation_window, "sequences": len(judge.keys),
            "frames": ablation_lifter["num_frames"],
            "sequence_stride": args.sequence_stride * args.ablation_sequence_stride,
            "lifter": {m: ablation_lifter["average"][m] for m in ("mpjpe", "p_mpjpe")},
            "rows": rows}

    if main_runs and not args.no_figures:
        window = args.main_window if args.main_window in main_runs else max(main_runs)
        files = {"lifter": lifter}
        if smoother is not None:
            files["smoother"] = smoother
        files["refiner"] = load_predictions(main_runs[window][0]["refined"])
        try:
            document["figures"] = {
                "window": window,
                "files": make_figures(setting, window, files, evaluator.keys,
                                      args.docs / "figures", notes)}
        except (ValueError, OSError) as err:
            notes.add(f"{setting}: figures failed: {err}")
    return document


def setting_file(docs: Path, setting: str) -> Path:
    return docs / f"refiner_{setting}.json"


def merged_document(docs: Path, settings) -> dict:
    """The summary's content, from each setting's latest refiner_<setting>.json: settings
    can be (re)run separately, e.g. as soon as their models are trained."""
    document = {"generated_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "targets": {"mpjpe_pct": TARGET_MPJPE_PCT, "p_mpjpe_pct": TARGET_P_MPJPE_PCT,
                            "clearly_better_than_smoother_pct": CLEARLY_BETTER_PCT,
                            "every_action": "MPJPE and P-MPJPE lower than the lifter's in "
                                            "every action"},
                "settings": {}}
    for setting in dict.fromkeys(settings):
        path = setting_file(docs, setting)
        if path.is_file():
            document["settings"][setting] = json.loads(path.read_text())
    return document


def main(argv=None) -> int:
    args = parse_arguments(argv)
    if args.sequence_stride < 1 or args.ablation_sequence_stride < 1:
        raise SystemExit("results_refiner: sequence strides must be >= 1")
    subjects = None if [s.lower() for s in args.subjects] == ["all"] else args.subjects
    generated = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    args.docs.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        for setting in args.settings:
            document = process_setting(setting, args, subjects, generated)
            setting_file(args.docs, setting).write_text(json.dumps(document, indent=1) + "\n")
    document = merged_document(args.docs, [*SETTINGS, *args.settings])
    write_summary(args.docs, document)
    (args.docs / "refiner.json").write_text(json.dumps(document, indent=1) + "\n")
    notes = sum(len(entry["notes"]) for entry in document["settings"].values())
    print(f"wrote {args.docs / 'refiner.md'} and refiner.json ({', '.join(document['settings'])}"
          f"); {notes} notes", flush=True)
    return 0


def _subjects_text(subjects) -> str:
    return ", ".join(subjects) if subjects else "all sequences"


def write_summary(docs: Path, document: dict) -> None:
    settings = document["settings"]
    runs = "; ".join(f"{setting} on {entry['generated_utc']} (subjects "
                     f"{_subjects_text(entry['subjects'])})"
                     for setting, entry in settings.items()) or "no setting yet"
    lines = [
        "# D3PRefiner results",
        "",
        f"Generated by `scripts/results_refiner.py`; do not edit (rerun it). Evaluated: "
        f"{runs}. Averages are the mean over actions of the per-action means, in mm. The "
        "smoother is the Savitzky-Golay reference tuned on the training subjects' held-out "
        "lifter outputs (see [the index](README.md)).",
        "",
        f"Targets (issue 5): MPJPE at least {TARGET_MPJPE_PCT:g}% and P-MPJPE at least "
        f"{TARGET_P_MPJPE_PCT:g}% below the lifter, every action improved in both, and clearly "
        f"better than the smoother (taken here as: both averages at least "
        f"{CLEARLY_BETTER_PCT:g}% below the smoother's).",
        "",
        "## Before / after",
        "",
        "| Setting | T | MPJPE lifter | smoother | refiner | Δ | P-MPJPE lifter | smoother | "
        "refiner | Δ | actions improved (MPJPE / P-MPJPE) | targets | page |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    statements, subsets = [], []
    for setting, entry in settings.items():
        if entry["sequence_stride"] > 1 and entry["results"]:
            subsets.append(f"{setting}: only {_every(entry['sequence_stride'])} test sequence "
                           "(sorted keys) was refined and scored (`--sequence-stride`).")
        for window, record in entry["results"].items():
            summary = record["summary"]
            average, change = summary["average"], summary["reduction_pct"]["refiner"]
            smoother = average.get("smoother", {"mpjpe": None, "p_mpjpe": None})
            lines.append(
                f"| {setting} | {window} | {_fmt(average['lifter']['mpjpe'])} | "
                f"{_fmt(smoother['mpjpe'])} | {_fmt(average['refiner']['mpjpe'])} | "
                f"{_change(change['mpjpe'])} | {_fmt(average['lifter']['p_mpjpe'])} | "
                f"{_fmt(smoother['p_mpjpe'])} | {_fmt(average['refiner']['p_mpjpe'])} | "
                f"{_change(change['p_mpjpe'])} | {summary['improved']['mpjpe']}/"
                f"{summary['actions']} / {summary['improved']['p_mpjpe']}/{summary['actions']} | "
                f"{_yes(summary['targets']['all']['met'])} | "
                f"[{setting} T={window}](refiner_{setting}_t{window}.md) |")
            statements += [f"### {SETTING_TITLES.get(setting, setting)}, T = {window}", "",
                           *target_lines(summary), ""]
    if not statements:
        lines.append("| (no trained refiner was found) | | | | | | | | | | | | |")
    lines += ["", "Δ: change of the refiner against the lifter."]
    lines += [f"\n**Subset:** {text}" for text in subsets]
    lines += ["", "## Targets", ""]
    lines += statements or ["No results: nothing to judge.", ""]
    lines += ["## Ablations", ""]
    ablations = {setting: entry["ablation"] for setting, entry in settings.items()
                 if entry.get("ablation")}
    if not ablations:
        lines += ["No ablation model was found.", ""]
    for setting, ablation in ablations.items():
        subset = (f", {_every(ablation['sequence_stride'])} test sequence"
                  if ablation["sequence_stride"] > 1 else "")
        lines += [f"### {SETTING_TITLES.get(setting, setting)}, T = {ablation['window']}", "",
                  f"{ablation['sequences']} test sequences{subset}, {ablation['frames']} "
                  f"frames; lifter MPJPE {_fmt(ablation['lifter']['mpjpe'])}, P-MPJPE "
                  f"{_fmt(ablation['lifter']['p_mpjpe'])} mm. FLOPs per window of T frames "
                  "counted by `d3p flops` (one denoiser call, and the K calls of one "
                  "refinement).", "",
                  "| Variant | depth | noise | diffusion | K | parameters | MFLOPs / call | "
                  "MFLOPs / window (K calls) | MPJPE | Δ | P-MPJPE | Δ |",
                  "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for row in ablation["rows"]:
            model, flops = row["model"], row["flops"] or {}
            per_call, per_window = (flops.get("flops_per_call"),
                                    flops.get("flops_per_refinement"))
            lines.append(
                f"| {row['variant']} (`{row['name']}`) | {model['denoiser'].get('depth')} | "
                f"{model['noise']} | {model['diffusion']} | {model['steps']} | "
                f"{flops.get('parameters', '-')} | "
                f"{_fmt(None if per_call is None else per_call / 1e6, 2)} | "
                f"{_fmt(None if per_window is None else per_window / 1e6, 2)} | "
                f"{_fmt(row['mpjpe'])} | "
                f"{_change(row['reduction_pct']['mpjpe'])} | {_fmt(row['p_mpjpe'])} | "
                f"{_change(row['reduction_pct']['p_mpjpe'])} |")
        lines.append("")
    lines += ["## Figures", ""]
    figures = {setting: entry["figures"] for setting, entry in settings.items()
               if entry.get("figures")}
    if not figures:
        lines += ["No figures (no trained refiner, or --no-figures).", ""]
    for setting, entry in figures.items():
        *paths, sequence = entry["files"]
        lines += [f"### {SETTING_TITLES.get(setting, setting)}, T = {entry['window']}", "",
                  f"Error distribution of lifter, smoother and refiner (per axis, all test "
                  f"frames, non-root joints; legend: standard deviation in mm) and MPJPE per "
                  f"joint; then skeletons and the {TRAJECTORY_JOINT.replace('_', ' ')}'s "
                  f"trajectory of the test sequence with the median lifter MPJPE "
                  f"({sequence.removeprefix('sequence ')}).", ""]
        lines += [f"![{Path(path).stem}]({path})" for path in paths] + [""]
    lines += ["## Notes (what is missing or failed)", ""]
    notes = [note for entry in settings.values() for note in entry["notes"]]
    lines += [f"- {note}" for note in notes] or ["- none"]
    lines += ["", "## Commands", "",
              "What made each result (`(up to date)`: made by an earlier run, reused).", ""]
    for setting, entry in settings.items():
        made = [line for record in entry["results"].values() for line in record["commands"]]
        made += [line for row in (entry.get("ablation") or {}).get("rows", [])
                 for line in row["commands"]]
        made = list(dict.fromkeys(made + entry["commands"]))
        lines += [f"{setting} ({entry['generated_utc']}):", ""]
        lines += [f"    {line}" for line in made] or ["    (none)"]
        lines.append("")
    (docs / "refiner.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
