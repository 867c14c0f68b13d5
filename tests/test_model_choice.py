"""scripts/choose_default.py and scripts/results_ablation.py on generated data: the default
is chosen on each model's own validation split, a harmful or useless refiner never qualifies,
and ablations are compared at equal epochs from the training logs."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from d3p_model.data.predictions import save_predictions
from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.train.loop import train_from_config

REPO = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


choose_default = load_script("choose_default")
results_ablation = load_script("results_ablation")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("choice")
    data = root / "train.npz"
    save_predictions(data, make_synthetic_predictions(
        num_sequences=8, num_frames=40, seed=4, subjects=["SYN1", "SYN2", "SYN3", "SYN4"]))
    base = {"data": {"train": str(data), "validation_fraction": 0.25}, "window": 5,
            "stride": 5, "model": {"depth": 1, "width": 16, "heads": 1},
            "optim": {"epochs": 2, "batch_size": 8}, "threads": 1, "device": "cpu",
            "checkpoint_minutes": None}
    for name, extra in (("cand", {}), ("cand_depth6", {"model": {"depth": 2, "width": 16,
                                                                 "heads": 1}})):
        train_from_config({**base, **extra, "name": name}, root / "models" / name,
                          progress=False)
    # an identity refiner: the denoiser predicts no error at all
    from d3p_model.refiner import D3PRefiner
    identity = D3PRefiner.load(root / "models" / "cand" / "model")
    torch.nn.init.zeros_(identity.denoiser.head.weight)
    torch.nn.init.zeros_(identity.denoiser.head.bias)
    identity.save(root / "models" / "identity" / "model")
    return root / "models"


def test_a_refiner_that_changes_nothing_never_qualifies(models, tmp_path, monkeypatch):
    monkeypatch.setattr(choose_default, "MODELS", models)
    row = choose_default.assess("identity", [5, 2], every=1, thresholds_mm=[0.0, 3.0])
    assert row["refined_mm_by_stride"][5] == pytest.approx(row["lifter_mm"], abs=1e-3)
    assert set(row["harmed"]) == {"iid_10mm", "iid_20mm", "offset_30mm"}
    assert not row["qualifies"]
    # its validation keys are the model's own held-out takes, not its training ones
    info = json.loads((models / "identity" / "model" / "model.json").read_text())["info"]
    assert row["sequences"] == len(info["training"]["validation_keys"])
    assert choose_default.main(["identity", "--strides", "5", "--sequence-stride", "1",
                                "--docs", str(tmp_path), "--apply"]) == 0
    assert "No candidate qualifies" in (tmp_path / "default_choice.md").read_text()
    document = json.loads((tmp_path / "default_choice.json").read_text())
    assert document["chosen"] is None
    assert document["least_harmful"]["name"] == "identity"
    # the page can be rebuilt from the JSON without refining again
    page = (tmp_path / "default_choice.md").read_text()
    (tmp_path / "default_choice.md").unlink()
    choose_default.main(["identity", "--docs", str(tmp_path),
                         "--from-json", str(tmp_path / "default_choice.json")])
    assert (tmp_path / "default_choice.md").read_text() == page
    # a JSON written before the blend was measured still rebuilds its page, without that row
    old = json.loads((tmp_path / "default_choice.json").read_text())
    for row in old["rows"]:
        del row["blending_by_stride"], row["lifter_accel"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    choose_default.main(["identity", "--docs", str(tmp_path / "old"),
                         "--from-json", str(tmp_path / "old.json")])
    assert "| identity |" in (tmp_path / "old" / "default_choice.md").read_text()


def fake_row(name, lifter, by_stride, harmed, threshold=0.0):
    """What assess() returns, for a candidate measured at one threshold."""
    # a harmed case ends above its input, the others well below it
    harm = {c: {"input_mm": 10.0, "refined_mm": 12.0 if c in harmed else 5.0}
            for c in ("clean", "iid_10mm", "offset_30mm")}
    best = min(by_stride, key=by_stride.get)
    qualifies = not harmed and by_stride[best] < lifter
    at = {"refined_mm": by_stride[best], "do_no_harm": harm, "harmed": harmed,
          "qualifies": qualifies}
    blending = {s: {"accel": 1.0, "plain_mean_mm": mm + 0.1, "plain_mean_accel": 1.5}
                for s, mm in by_stride.items()}
    return {"name": name, "lifter_mm": lifter, "refined_mm_by_stride": by_stride,
            "best_stride": best, "lifter_accel": 2.0, "blending_by_stride": blending,
            "by_threshold": {threshold: at}, "best_threshold": threshold, **at}


def test_the_lowest_qualified_validation_error_is_chosen_and_applied(models, tmp_path,
                                                                     monkeypatch):
    monkeypatch.setattr(choose_default, "MODELS", models)
    fake = {"cand": (30.0, {5: 28.0, 2: 27.0}, [], 4.0),     # qualifies, best at stride 2
            "cand_depth6": (30.0, {5: 20.0, 2: 21.0}, ["iid_10mm"], 0.0),  # lower but harms
            "identity": (30.0, {5: 30.0, 2: 30.0}, [], 0.0)}      # no gain
    monkeypatch.setattr(choose_default, "assess", lambda name, *settings:
                        fake_row(name, *fake[name]))
    choose_default.main(["cand", "cand_depth6", "identity", "--docs", str(tmp_path), "--apply"])
    assert json.loads((tmp_path / "default_choice.json").read_text())["chosen"] == \
        {"name": "cand", "stride": 2, "correction_threshold_mm": 4.0}
    spec = json.loads((models / "cand" / "model" / "model.json").read_text())
    assert (spec["stride"], spec["correction_threshold_mm"]) == (2, 4.0)
    # every candidate gets its own best validation stride, chosen or not
    assert json.loads((models / "cand_depth6" / "model" / "model.json").read_text())["stride"] == 5
    from d3p_model.refiner import D3PRefiner
    loaded = D3PRefiner.load(models / "cand" / "model")
    assert (loaded.stride, loaded.correction_threshold) == (2, pytest.approx(0.004))


def test_with_none_qualifying_the_one_that_harms_least_stays(models, tmp_path, monkeypatch):
    """Both fail the same number of cases: the one that moves its worst case less far from
    the truth wins over one with a slightly lower validation error; with equal harm, the
    lower error decides."""
    monkeypatch.setattr(choose_default, "MODELS", models)

    def failing(name, lifter, mm, offset_refined):
        row = fake_row(name, lifter, {5: mm}, ["offset_30mm"])
        row["do_no_harm"] = {**row["do_no_harm"],
                             "offset_30mm": {"input_mm": 5.0, "refined_mm": offset_refined}}
        row["by_threshold"][0.0]["do_no_harm"] = row["do_no_harm"]
        return row
    fake = {"cand": (30.0, 28.00, 12.0), "cand_depth6": (30.0, 28.05, 10.0)}
    monkeypatch.setattr(choose_default, "assess", lambda name, *settings:
                        failing(name, *fake[name]))
    choose_default.main(["cand", "cand_depth6", "--docs", str(tmp_path)])
    document = json.loads((tmp_path / "default_choice.json").read_text())
    assert document["chosen"] is None
    assert document["least_harmful"]["name"] == "cand_depth6"
    assert "smallest worst harm" in (tmp_path / "default_choice.md").read_text()
    fake["cand_depth6"] = (30.0, 28.05, 12.0)
    choose_default.main(["cand", "cand_depth6", "--docs", str(tmp_path)])
    assert json.loads((tmp_path / "default_choice.json").read_text()
                      )["least_harmful"]["name"] == "cand"

def margin_row(name, refined_mm, offset_refined, lifter=30.0):
    """A candidate at one threshold whose offset case ends at `offset_refined` (input 5.0)."""
    row = fake_row(name, lifter, {5: refined_mm}, [])
    row["by_threshold"][0.0]["do_no_harm"] = row["do_no_harm"] = {
        **row["do_no_harm"], "offset_30mm": {"input_mm": 5.0, "refined_mm": offset_refined}}
    return row


def test_a_harm_margin_fails_a_case_improved_by_less(models, tmp_path, monkeypatch):
    """4.8 mm out of a 5.0 mm case passes by itself and fails a 0.5 mm margin; rows measured
    by an earlier run are judged again by this run's margin, and so is a rebuilt page."""
    monkeypatch.setattr(choose_default, "MODELS", models)
    monkeypatch.setattr(choose_default, "assess", lambda name, *settings:
                        margin_row(name, 27.0, {"cand": 4.8, "identity": 4.0}[name]))
    choose_default.main(["cand", "identity", "--strides", "5", "--docs", str(tmp_path)])
    assert json.loads((tmp_path / "default_choice.json").read_text())["chosen"]["name"] == "cand"
    choose_default.main(["cand", "identity", "--strides", "5", "--docs", str(tmp_path / "m"),
                         "--harm-margin-mm", "0.5",
                         "--reuse", str(tmp_path / "default_choice.json")])
    document = json.loads((tmp_path / "m" / "default_choice.json").read_text())
    assert document["chosen"]["name"] == "identity"
    assert {r["name"]: r["harmed"] for r in document["rows"]} == \
        {"cand": ["offset_30mm"], "identity": []}
    page = (tmp_path / "m" / "default_choice.md").read_text()
    assert "more than 0.5 mm below its input" in page
    choose_default.main(["cand", "--docs", str(tmp_path / "r"),
                         "--from-json", str(tmp_path / "m" / "default_choice.json")])
    assert (tmp_path / "r" / "default_choice.md").read_text() == page


@pytest.mark.parametrize("incumbent, challenger, replaced", [
    # both qualify: the challenger must be the gain margin lower
    ((28.0, 4.0), (27.8, 4.0), False),
    ((28.0, 4.0), (27.6, 4.0), True),
    # it qualifies where the incumbent does not: replaced, even at a higher error
    ((28.0, 6.0), (28.5, 4.0), True),
    # the incumbent qualifies and the challenger does not: never, however low
    ((28.0, 4.0), (20.0, 6.0), False),
    # neither qualifies: lower by the margin and no worse a harm, or not at all
    ((28.0, 6.0), (27.5, 6.0), True),
    ((28.0, 6.0), (27.5, 6.5), False),
    ((28.0, 6.0), (27.8, 5.5), False),
])
def test_the_incumbent_stays_unless_a_challenger_is_clearly_better(
        models, tmp_path, monkeypatch, incumbent, challenger, replaced):
    monkeypatch.setattr(choose_default, "MODELS", models)
    fake = {"identity": incumbent, "cand": challenger}
    monkeypatch.setattr(choose_default, "assess", lambda name, *settings:
                        margin_row(name, *fake[name]))
    choose_default.main(["identity", "cand", "--docs", str(tmp_path), "--incumbent", "identity",
                         "--gain-margin-mm", "0.3"])
    document = json.loads((tmp_path / "default_choice.json").read_text())
    named = (document["chosen"] or document["least_harmful"])["name"]
    assert named == ("cand" if replaced else "identity")
    page = (tmp_path / "default_choice.md").read_text()
    assert "`identity` ships now" in page
    assert ("**cand** replaces it" if replaced else "**identity** stays") in page


def test_the_incumbent_must_be_a_candidate_and_keeps_its_settings(models, tmp_path):
    with pytest.raises(SystemExit):
        choose_default.main(["cand", "--docs", str(tmp_path), "--incumbent", "identity"])
    # --apply would write the incumbent's row at the margin over what it ships with
    with pytest.raises(SystemExit):
        choose_default.main(["cand", "identity", "--docs", str(tmp_path),
                             "--incumbent", "identity", "--apply"])


def test_the_coarsest_stride_within_the_tolerance_is_taken():
    by_stride = {27: 30.10, 21: 30.04, 13: 30.01, 9: 30.00, 3: 30.02}
    assert choose_default.coarsest_within(by_stride, 0.0) == 9
    assert choose_default.coarsest_within(by_stride, 0.05) == 21
    assert choose_default.coarsest_within(by_stride, 0.2) == 27


def test_the_measured_blend_is_what_d3p_refine_computes(models, monkeypatch):
    """The figures the stride is chosen by come from the same blending as refine_sequence;
    the plain mean differs from it only where windows overlap."""
    from d3p_model.refiner import D3PRefiner
    refiner = D3PRefiner.load(models / "cand" / "model")
    _, keypoints, pose, _ = next(choose_default.validation_sequences(refiner, 1))
    for stride in (5, 2):
        blended, plain = choose_default.refine_blended(refiner, keypoints, pose, stride)
        np.testing.assert_allclose(
            blended, refiner.refine_sequence(keypoints, pose, stride=stride,
                                             correction_threshold=0.0), atol=1e-6)
        if stride == 5:   # no overlap but the end-aligned last window
            np.testing.assert_allclose(blended[:35], plain[:35], atol=1e-6)
        else:
            assert not np.allclose(blended, plain, atol=1e-6)


def test_the_threshold_that_passes_do_no_harm_is_chosen(models, tmp_path, monkeypatch):
    """An over-eager refiner (the trained candidate, proposing corrections on a correct
    skeleton) against thresholds: each threshold's figures come from one refinement, the
    chosen one qualifies if any does, and threshold 0 is exactly the raw refiner."""
    monkeypatch.setattr(choose_default, "MODELS", models)
    row = choose_default.assess("cand", [5], every=1, thresholds_mm=[0.0, 5.0, 1000.0])
    raw, huge = row["by_threshold"][0.0], row["by_threshold"][1000.0]
    assert raw["refined_mm"] == pytest.approx(row["refined_mm_by_stride"][5])
    # a threshold beyond any correction returns the input: no gain, nothing qualifies
    assert huge["refined_mm"] == pytest.approx(row["lifter_mm"], abs=1e-3)
    assert huge["do_no_harm"]["clean"]["refined_mm"] == pytest.approx(0.0, abs=1e-3)
    assert not huge["qualifies"]
    assert raw["do_no_harm"]["clean"]["refined_mm"] > \
        row["by_threshold"][5.0]["do_no_harm"]["clean"]["refined_mm"]
    qualified = [mm for mm, t in row["by_threshold"].items() if t["qualifies"]]
    if qualified:
        assert row["qualifies"] and row["best_threshold"] in qualified
    else:
        fewest = min(len(t["harmed"]) for t in row["by_threshold"].values())
        assert len(row["harmed"]) == fewest


def test_rows_of_an_earlier_run_are_reused_only_with_the_same_settings(models, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setattr(choose_default, "MODELS", models)
    measured = []

    def fake_assess(name, *settings):
        measured.append(name)
        return fake_row(name, 30.0, {5: {"cand": 27.0, "identity": 30.0}[name]}, [])
    monkeypatch.setattr(choose_default, "assess", fake_assess)
    first = tmp_path / "first"
    choose_default.main(["identity", "--strides", "5", "--docs", str(first)])
    assert measured == ["identity"]
    second = tmp_path / "second"
    choose_default.main(["identity", "cand", "--strides", "5", "--docs", str(second),
                         "--reuse", str(first / "default_choice.json")])
    assert measured == ["identity", "cand"]            # identity came from the first run
    document = json.loads((second / "default_choice.json").read_text())
    assert document["chosen"] == {"name": "cand", "stride": 5, "correction_threshold_mm": 0.0}
    assert "rows reused from: scripts/choose_default.py identity --strides 5" in \
        (second / "default_choice.md").read_text()
    # the reused run's settings must match
    for other in (["--strides", "5", "9"], ["--strides", "5", "--thresholds", "0", "3"],
                  ["--strides", "5", "--stride-tolerance-mm", "0.2"]):
        with pytest.raises(SystemExit, match="cannot reuse"):
            choose_default.main(["identity", *other, "--docs", str(tmp_path / "x"),
                                 "--reuse", str(first / "default_choice.json")])
    # and its command, as recorded, can itself be reused
    choose_default.main(["identity", "cand", "--strides", "5", "--docs", str(tmp_path / "y"),
                         "--reuse", str(second / "default_choice.json")])
    assert measured == ["identity", "cand"]


def test_ablation_rows_at_equal_epochs(models, tmp_path, monkeypatch):
    monkeypatch.setattr(results_ablation, "MODELS", models)
    assert results_ablation.main(["--base", "cand", "--epoch", "2", "--docs",
                                  str(tmp_path)]) == 0
    document = json.loads((tmp_path / "ablation_cand.json").read_text())
    rows = {r["name"]: r for r in document["rows"]}
    assert set(rows) == {"cand", "cand_depth6"}
    assert "cand_real" in document["missing"]
    # FLOPs follow the architecture: two blocks cost more than one
    assert rows["cand_depth6"]["mflops_per_window"] > rows["cand"]["mflops_per_window"]
    assert rows["cand"]["epoch"] == 2
    # an epoch no run reached gives no rows, and says so
    assert results_ablation.main(["--base", "cand", "--epoch", "9", "--docs",
                                  str(tmp_path)]) == 2


def test_candidates_validated_on_different_sequences_are_not_ranked(models, tmp_path,
                                                                     monkeypatch):
    """A model with one subject held out whole is scored on other people than one with a
    share of takes held out: their validation errors must not be compared."""
    import shutil
    monkeypatch.setattr(choose_default, "MODELS", models)
    other = models / "cand_other_split" / "model"
    shutil.copytree(models / "cand" / "model", other)
    spec = json.loads((other / "model.json").read_text())
    own = spec["info"]["training"]["validation_keys"]
    spec["info"]["training"]["validation_keys"] = own[:1]
    (other / "model.json").write_text(json.dumps(spec))
    monkeypatch.setattr(choose_default, "assess", lambda *a, **k: pytest.fail("measured"))
    with pytest.raises(SystemExit, match="different sequences"):
        choose_default.main(["cand", "cand_other_split", "--docs", str(tmp_path)])
    assert not (tmp_path / "default_choice.json").exists()
    # the same split, in another order: accepted
    assert choose_default.validation_set_of("cand") == \
        choose_default.validation_set_of("cand_depth6")
