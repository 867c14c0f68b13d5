"""scripts/results_heldout.py: the held-out-subject verdict by the rule of docs/refiner.md
("A held-out subject"), on made-up pages."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


heldout = load_script("results_heldout")
choose_default = load_script("choose_default")
CASES = {"clean": 0.0, "iid_10mm": 15.0, "iid_20mm": 30.0, "offset_30mm": 5.3}


def row(name, refined_mm, offset_refined=4.0, lifter=56.0):
    harm = {case: {"input_mm": mm, "refined_mm": {"clean": 1.0, "iid_10mm": 12.0,
                                                  "iid_20mm": 20.0}.get(case, offset_refined)}
            for case, mm in CASES.items()}
    return {"name": name, "lifter_mm": lifter, "best_stride": 18,
            "by_threshold": {"0.0": {"refined_mm": refined_mm, "do_no_harm": harm}}}


def judged(*rows):
    return {r["name"]: choose_default.judge(r, 1.0) for r in rows}


@pytest.mark.parametrize("a, b, c, test, better, carries", [
    # C 0.5 lower on validation, seeds 0.1 apart: better (margin 0.3); on S9/S11 0.4 lower
    # with seeds 0.2 apart: carries
    (55.0, 55.1, 54.5, (61.0, 61.2, 60.6), True, True),
    # the same, but on S9/S11 C is 0.1 lower, inside the seeds' 0.2: does not carry
    (55.0, 55.1, 54.5, (61.0, 61.2, 60.9), True, False),
    # seeds 0.8 apart on validation: a 0.5 gain is within it, not better; S9/S11 agrees
    (55.0, 55.8, 54.5, (61.0, 61.2, 60.9), False, True),
    # not better on validation, clearly lower on S9/S11: does not carry
    (55.0, 55.1, 54.9, (61.0, 61.1, 60.0), False, False),
])
def test_the_verdict_follows_the_rule(a, b, c, test, better, carries):
    rows = judged(row("A", a), row("B", b), row("C", c))
    v = heldout.verdict(rows, dict(zip("ABC", test)), "A", "B", "C", 0.3,
                        choose_default.clearly_better)
    assert v["validation_spread_mm"] == pytest.approx(abs(a - b))
    assert v["gain_margin_mm"] == pytest.approx(max(0.3, abs(a - b)))
    assert v["challenger_better_on_validation"] is better
    assert v["carries"] is carries


def test_a_challenger_that_harms_more_is_not_better_however_low():
    rows = judged(row("A", 55.0), row("B", 55.0), row("C", 50.0, offset_refined=9.0))
    assert rows["C"]["harmed"] == ["offset_30mm"] and not rows["A"]["harmed"]
    v = heldout.verdict(rows, {"A": 61.0, "B": 61.0, "C": 60.0}, "A", "B", "C", 0.3,
                        choose_default.clearly_better)
    assert not v["challenger_better_on_validation"] and not v["carries"]


def evaluation(lifter, refined, label):
    # Walking improved, Sitting made worse
    actions = {"Walking": (lifter, refined), "Sitting": (lifter + 10, lifter + 10.5)}
    return {"results": {
        "lifter": {"average": {"mpjpe": lifter + 5, "p_mpjpe": 40.0},
                   "actions": {a: {"mpjpe": v[0]} for a, v in actions.items()}},
        label: {"average": {"mpjpe": refined + 5.25, "p_mpjpe": 39.0},
                "actions": {a: {"mpjpe": v[1]} for a, v in actions.items()}}}}


def test_the_page_is_written_from_the_choice_and_s9s11_pages(tmp_path):
    names = ["A", "A_seed1", "A_ext"]
    choice = {"command": "scripts/choose_default.py A A_seed1 A_ext --harm-margin-mm 1.0",
              "rows": [row("A", 55.0), row("A_seed1", 55.1), row("A_ext", 54.5)]}
    (tmp_path / "choice.json").write_text(json.dumps(choice))
    harm = {c: {"input_mm": mm, "refined_mm": mm / 2} for c, mm in CASES.items()}
    for name, refined in zip(names + ["shipped"], (60.0, 60.2, 59.5, 59.8)):
        shipped = name == "shipped"
        (tmp_path / ("refiner_sh2d_t27.json" if shipped else f"trial_{name}.json")).write_text(
            json.dumps(evaluation(61.0, refined, "refiner" if shipped else name)))
        (tmp_path / ("do_no_harm_sh2d.json" if shipped else
                     f"trial_do_no_harm_{name}.json")).write_text(
            json.dumps({"models": {name: {"cases": harm}}}))
        unseen = {"results": {heldout.UNSEEN: {"average": {"mpjpe": 66.0}},
                              name: {"average": {"mpjpe": 65.0}}}}
        (tmp_path / ("refiner_unseen.json" if shipped else
                     f"trial_unseen_{name}.json")).write_text(json.dumps(unseen))
    (tmp_path / "trial_threshold0_A.json").write_text(json.dumps(evaluation(61.0, 61.4, "A")))
    heldout.main(["--results", str(tmp_path), "--choice", str(tmp_path / "choice.json"),
                  "--reference", "A", "--replicate", "A_seed1", "--challenger", "A_ext",
                  "--shipped", "shipped"])
    doc = json.loads((tmp_path / "heldout_s8.json").read_text())
    assert doc["harm_margin_mm"] == 1.0
    # S9/S11 changes: A_ext 0.5 below A, seeds 0.2 apart; S8: 0.5 below, seeds 0.1 apart
    assert doc["verdict"]["test_change_mm"] == pytest.approx(-0.5)
    assert doc["verdict"]["carries"] is True
    assert doc["s9s11"]["A"]["actions_improved"] == 1     # Sitting got worse
    page = (tmp_path / "heldout_s8.md").read_text()
    assert "**carries**" in page and "`shipped` (shipped, trained on S8 too)" in page
    assert "66.00 -> 65.00" in page
    # threshold 0 measured for A only
    assert doc["s9s11"]["A"]["refined_threshold0"]["mpjpe"] == pytest.approx(66.65)
    assert doc["s9s11"]["A_ext"]["refined_threshold0"] is None
    assert "| 66.65 |" in page and "not measured" in page


def test_a_missing_page_is_named(tmp_path):
    with pytest.raises(SystemExit, match="results_heldout.sh"):
        heldout.main(["--results", str(tmp_path)])
