#!/usr/bin/env python3
"""Does validation on a subject the refiner never saw agree with S9/S11? The verdict of the
held-out-subject experiment (docs/refiner.md, "A held-out subject"), by the rule written
there before any of its models was measured:

    .venv/bin/python scripts/results_heldout.py [--choice docs/results/heldout_s8_choice.json]
        [--reference A --replicate B --challenger C] [--results docs/results]

A (reference) and B (replicate) are one recipe trained with two seeds, C (challenger) the
variant asked about, all with the same subject held out (their validation set). The seed
spread is |A - B| in refined MPJPE, on validation and on S9/S11; C is better on validation
when choose_default.clearly_better(C, A) holds with a gain margin of max(--min-margin-mm, the
validation spread); the verdict carries to S9/S11 when C is lower than A there by more than
the S9/S11 spread exactly when it was better on validation. Reads the choice page's JSON
(scripts/choose_default.py) and the S9/S11 pages of scripts/results_trials.sh
(trial_<model>.json, trial_do_no_harm_<model>.json, trial_unseen_<model>.json); writes
<results>/heldout_s8.{md,json}. scripts/results_heldout.sh runs the whole chain.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PREFIX = "h36m_sh2d_t27_heldout_s8"
CASES = ("clean", "iid_10mm", "iid_20mm", "offset_30mm")
UNSEEN = "temporal-conv lifter (unseen)"     # its label on the unseen-lifter pages


def _choose_default():
    spec = importlib.util.spec_from_file_location(
        "choose_default", REPO_ROOT / "scripts" / "choose_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def verdict(validation: dict, test: dict, reference: str, replicate: str, challenger: str,
            min_margin_mm: float, clearly_better) -> dict:
    """validation: name -> choice row (refined_mm, qualifies, harmed, do_no_harm);
    test: name -> S9/S11 refined MPJPE. The rule of docs/refiner.md, "A held-out subject"."""
    spread_val = abs(validation[reference]["refined_mm"] - validation[replicate]["refined_mm"])
    margin = max(min_margin_mm, spread_val)
    better = bool(clearly_better(validation[challenger], validation[reference], margin))
    spread_test = abs(test[reference] - test[replicate])
    change_test = test[challenger] - test[reference]
    lower_on_test = change_test < -spread_test
    return {"validation_spread_mm": spread_val, "gain_margin_mm": margin,
            "challenger_better_on_validation": better,
            "validation_change_mm": (validation[challenger]["refined_mm"]
                                     - validation[reference]["refined_mm"]),
            "test_spread_mm": spread_test, "test_change_mm": change_test,
            "challenger_lower_on_test": lower_on_test,
            "carries": better == lower_on_test}


def harm_margin_of(command: str, chosen_by) -> float:
    """The --harm-margin-mm a choice page was made with (its recorded command)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--harm-margin-mm", type=float, default=chosen_by.MIN_GAIN_MM)
    own = command.split(chosen_by.REUSED)[0]
    return parser.parse_known_args(shlex.split(own)[1:])[0].harm_margin_mm


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path} is missing: run scripts/results_heldout.sh") from None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "docs" / "results")
    parser.add_argument("--choice", type=Path, default=None,
                        help="the choice page's JSON (default <results>/heldout_s8_choice.json)")
    parser.add_argument("--reference", default=PREFIX)
    parser.add_argument("--replicate", default=f"{PREFIX}_seed1")
    parser.add_argument("--challenger", default=f"{PREFIX}_extended")
    parser.add_argument("--shipped", default="h36m_sh2d_t27_extended",
                        help="the shipped model (trained on every subject), for S9/S11 beside")
    parser.add_argument("--min-margin-mm", type=float, default=0.3)
    args = parser.parse_args(argv)
    command = shlex.join(["scripts/results_heldout.py",
                          *(argv if argv is not None else sys.argv[1:])])
    choice_path = args.choice or args.results / "heldout_s8_choice.json"
    choice = _read(choice_path)
    rows = {r["name"]: r for r in choice["rows"]}
    names = [args.reference, args.replicate, args.challenger]
    missing = [n for n in names if n not in rows]
    if missing:
        raise SystemExit(f"{choice_path} has no row for {missing}")
    chosen_by = _choose_default()
    # judged again at the page's harm margin, as choose_default.main does with reused rows
    harm_margin = harm_margin_of(choice["command"], chosen_by)
    rows = {n: chosen_by.judge(rows[n], harm_margin) for n in names}

    s9s11, harm, unseen = {}, {}, {}
    for name in names + [args.shipped]:
        # the shipped model's pages come from scripts/results_refiner.sh, the others' from
        # scripts/results_trials.sh
        shipped = name == args.shipped
        page = _read(args.results / ("refiner_sh2d_t27.json" if shipped
                                     else f"trial_{name}.json"))["results"]
        lifter, refined = page["lifter"], page["refiner" if shipped else name]
        s9s11[name] = {"lifter": lifter["average"], "refined": refined["average"],
                       "actions_improved": sum(refined["actions"][a]["mpjpe"]
                                               < lifter["actions"][a]["mpjpe"]
                                               for a in lifter["actions"]),
                       "actions": len(lifter["actions"])}
        cases = _read(args.results / ("do_no_harm_sh2d.json" if shipped else
                                      f"trial_do_no_harm_{name}.json"))["models"][name]["cases"]
        harm[name] = {c: (cases[c]["input_mm"], cases[c]["refined_mm"]) for c in CASES}
        page = _read(args.results / ("refiner_unseen.json" if shipped
                                     else f"trial_unseen_{name}.json"))["results"]
        unseen[name] = (page[UNSEEN]["average"]["mpjpe"], page[name]["average"]["mpjpe"])
        # the same model without its correction threshold (step 3b), where measured
        off = args.results / f"trial_threshold0_{name}.json"
        s9s11[name]["refined_threshold0"] = (json.loads(off.read_text())["results"][name]
                                             ["average"] if off.exists() else None)

    result = verdict(rows, {n: s9s11[n]["refined"]["mpjpe"] for n in names}, *names,
                     args.min_margin_mm, chosen_by.clearly_better)
    document = {"command": command, "choice": str(choice_path), "harm_margin_mm": harm_margin,
                "validation": {n: {k: rows[n][k] for k in ("lifter_mm", "refined_mm",
                                                           "best_stride", "best_threshold",
                                                           "harmed", "qualifies")}
                               for n in names},
                "s9s11": s9s11, "do_no_harm_s9s11": harm, "unseen_s9s11": unseen,
                "verdict": result}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "heldout_s8.json").write_text(json.dumps(document, indent=1) + "\n")
    (args.results / "heldout_s8.md").write_text(markdown(document, names, args.shipped))
    print((args.results / "heldout_s8.md").read_text())
    return 0


def markdown(doc: dict, names: list, shipped: str) -> str:
    val, test, harm, unseen, v = (doc["validation"], doc["s9s11"], doc["do_no_harm_s9s11"],
                                  doc["unseen_s9s11"], doc["verdict"])
    roles = dict(zip(names, ("A, reference", "B, seed 1", "C, 32 epochs longer")))
    inputs = {c: harm[names[0]][c][0] for c in CASES}
    lines = [
        "# A held-out subject (S8): does its verdict carry to S9/S11?", "",
        f"Generated by `{doc['command']}` from `{doc['choice']}` (validation on S8, every 2nd "
        "take; each model at its own stride and correction threshold) and the S9/S11 pages of "
        "`scripts/results_trials.sh`. MPJPE in mm; the rule is in docs/refiner.md, "
        "\"A held-out subject\", written before any of these models was measured.", "",
        "| model | S8: lifter -> refined | stride, threshold | S8 do-no-harm failures "
        f"(margin {doc['harm_margin_mm']:g} mm) | S9/S11 MPJPE: lifter -> refined | P-MPJPE | "
        "actions improved (MPJPE) | S9/S11 MPJPE at threshold 0 | "
        + " | ".join(f"{c} ({inputs[c]:.1f})" for c in CASES) + " | unseen lifter |",
        "| --- | --- | --- | --- | --- | --- | --- | ---: | " + " | ".join("---:" for _ in CASES)
        + " | --- |"]
    for name in names + [shipped]:
        t = test[name]
        row = [f"`{name}` ({roles.get(name, 'shipped, trained on S8 too')})"]
        if name in val:
            r = val[name]
            row += [f"{r['lifter_mm']:.2f} -> {r['refined_mm']:.2f}",
                    f"{r['best_stride']}, {float(r['best_threshold']):g} mm",
                    ", ".join(r["harmed"]) or "none"]
        else:
            row += ["(trained on S8)", "", ""]
        row += [f"{t['lifter']['mpjpe']:.2f} -> {t['refined']['mpjpe']:.2f}",
                f"{t['lifter']['p_mpjpe']:.2f} -> {t['refined']['p_mpjpe']:.2f}",
                f"{t['actions_improved']}/{t['actions']}",
                "not measured" if t["refined_threshold0"] is None
                else f"{t['refined_threshold0']['mpjpe']:.2f}"]
        row += [f"{harm[name][c][1]:.1f}" for c in CASES]
        row += [f"{unseen[name][0]:.2f} -> {unseen[name][1]:.2f}"]
        lines.append("| " + " | ".join(row) + " |")
    better = "better" if v["challenger_better_on_validation"] else "not better"
    lower = "lower" if v["challenger_lower_on_test"] else "not lower"
    lines += [
        "",
        f"- Seed spread |A - B|: {v['validation_spread_mm']:.2f} mm on S8, "
        f"{v['test_spread_mm']:.2f} mm on S9/S11.",
        f"- C against A on S8: {v['validation_change_mm']:+.2f} mm; with a gain margin of "
        f"{v['gain_margin_mm']:.2f} mm C is **{better}** (`clearly_better`).",
        f"- C against A on S9/S11: {v['test_change_mm']:+.2f} mm, **{lower}** by more than "
        "the seed spread there.",
        f"- The S8 verdict **{'carries' if v['carries'] else 'does not carry'}** to S9/S11.",
        ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
