"""scripts/results_refiner.py end to end on generated data: a tiny trained refiner, the
smoother, pages, JSON, ablation table with FLOPs, figures, skipping what is missing."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from d3p_model.data.predictions import load_predictions, save_predictions
from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.denoiser.model import DenoiserConfig, PoseDenoiser
from d3p_model.evaluate.report import evaluate_predictions
from d3p_model.evaluate.smoother import smooth_predictions
from d3p_model.refiner import D3PRefiner

REPO = Path(__file__).resolve().parents[1]
WINDOW = 9


def load_script():
    spec = importlib.util.spec_from_file_location("results_refiner",
                                                  REPO / "scripts" / "results_refiner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results_refiner = load_script()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("results")
    test = make_synthetic_predictions(num_sequences=4, num_frames=60, seed=2, subjects=["SYN8"])
    save_predictions(root / "cache/predictions/gt2d/test.npz", test)
    save_predictions(root / "cache/predictions/sh2d/test.npz", test)  # no models, no smoother
    (root / "docs").mkdir()
    (root / "docs/smoother_gt2d.json").write_text(json.dumps({"window": 7, "order": 2}))

    from d3p_model.train.loop import train_from_config
    config = yaml.safe_load((REPO / "d3p_model/configs/synthetic_tiny.yaml").read_text())
    config["data"]["train"]["synthetic"].update(num_sequences=8, num_frames=100)
    config.update(name="tiny", window=WINDOW, stride=9, checkpoint_minutes=None)
    config["model"].update(depth=1)
    config["optim"].update(epochs=1)
    # a run dir: the script must find <name>/model/
    train_from_config(config, root / "models/h36m_gt2d_t9", progress=False)
    # An UNTRAINED depth-2 stand-in for an ablation (only its FLOPs and plumbing matter).
    trained = D3PRefiner.load(root / "models/h36m_gt2d_t9/model")
    torch.manual_seed(0)
    deeper = PoseDenoiser(DenoiserConfig(window=WINDOW, depth=2, width=32, heads=4))
    D3PRefiner(deeper, trained.cnd, info={"noise": "cnd"}).save(
        root / "models/h36m_gt2d_t9_depth6")
    return root, test


def run(root, *extra):
    return results_refiner.main([
        "--cache", str(root / "cache"), "--models", str(root / "models"),
        "--docs", str(root / "docs"), "--windows", str(WINDOW), "27", "--main-window", "81",
        "--ablation-window", str(WINDOW), "--subjects", "SYN8", *extra])


@pytest.mark.timeout(600)  # the CPU is shared; this is ~15 s of CPU time
def test_end_to_end(workspace, capsys):
    root, test = workspace
    assert run(root) == 0
    out = capsys.readouterr().out
    assert "$ d3p smooth apply" in out and "$ d3p refine" in out
    docs = root / "docs"

    # the numbers are those of the files, evaluated independently
    refined_path = root / "cache/refined/gt2d/h36m_gt2d_t9.npz"
    refined = load_predictions(refined_path)
    assert refined.meta["refined_by"]["window"] == WINDOW
    assert not np.allclose(refined.sequences[sorted(test.sequences)[0]].pose_3d,
                           test.sequences[sorted(test.sequences)[0]].pose_3d)
    page = json.loads((docs / "refiner_gt2d_t9.json").read_text())
    expected = {"lifter": evaluate_predictions(test),
                "smoother": evaluate_predictions(smooth_predictions(test, 7, 2)),
                "refiner": evaluate_predictions(refined)}
    assert page["labels"] == ["lifter", "smoother", "refiner"]
    for label, result in expected.items():
        for metric in ("mpjpe", "p_mpjpe", "accel"):
            assert page["results"][label]["average"][metric] == pytest.approx(
                result["average"][metric], rel=1e-9)
    summary = page["summary"]
    reduction = 100 * (1 - expected["refiner"]["average"]["mpjpe"]
                       / expected["lifter"]["average"]["mpjpe"])
    assert summary["reduction_pct"]["refiner"]["mpjpe"] == pytest.approx(reduction)
    assert summary["targets"]["mpjpe"]["met"] == (reduction >= 10.0)
    worse = [a for a, e in expected["refiner"]["actions"].items()
             if e["mpjpe"] >= expected["lifter"]["actions"][a]["mpjpe"]]
    assert summary["not_improved"]["mpjpe"] == worse
    assert summary["improved"]["mpjpe"] == len(expected["lifter"]["actions"]) - len(worse)

    # the pages say it plainly
    text = (docs / "refiner_gt2d_t9.md").read_text()
    assert f"{reduction:.1f}%: {'met' if reduction >= 10 else '**NOT met**'}" in text
    assert "| **Average** (4 actions) |" in text
    # the rigid decomposition of lifter and refiner, from the same files
    from d3p_model.evaluate.decomposition import rigid_decomposition
    assert page["rigid"]["refiner"] == rigid_decomposition(refined, keys=sorted(test.sequences))
    assert "## The rigid part of the error" in text
    overview = (docs / "refiner.md").read_text()
    assert "| gt2d | 9 |" in overview and "(refiner_gt2d_t9.md)" in overview
    for note in ("model h36m_gt2d_t27_long not trained", "model h36m_gt2d_t9_nocnd not trained",
                 "sh2d: no smoother", "model h36m_sh2d_t9 not trained"):
        assert note in overview

    # ablations: the full model and the deeper stand-in, FLOPs growing with depth
    document = json.loads((docs / "refiner.json").read_text())
    rows = document["settings"]["gt2d"]["ablation"]["rows"]
    assert [row["name"] for row in rows] == ["h36m_gt2d_t9", "h36m_gt2d_t9_depth6"]
    full, deeper = (row["flops"] for row in rows)
    assert 0 < full["flops_per_call"] < deeper["flops_per_call"]
    assert full["flops_per_refinement"] == 2 * full["flops_per_call"]
    assert rows[0]["mpjpe"] == pytest.approx(expected["refiner"]["average"]["mpjpe"])
    assert "| depth 6, 1 epoch (`h36m_gt2d_t9_depth6`) | 2 |" in overview
    assert document["settings"]["sh2d"]["ablation"] is None

    # figures: written, small, linked
    for kind in ("errors", "skeletons", "trajectory"):
        figure = docs / "figures" / f"refiner_gt2d_t9_{kind}.png"
        assert 5_000 < figure.stat().st_size < 300_000
        assert f"(figures/refiner_gt2d_t9_{kind}.png)" in overview

    # a second run refines nothing again
    stamp = refined_path.stat().st_mtime_ns
    assert run(root, "--no-figures") == 0
    out = capsys.readouterr().out
    assert f"up to date: {refined_path}" in out and "$ d3p refine" not in out
    assert refined_path.stat().st_mtime_ns == stamp
    # ... unless the refinement options change; ablations on every 2nd sequence only
    assert run(root, "--no-figures", "--stride", "3", "--settings", "gt2d",
               "--ablation-sequence-stride", "2") == 0
    out = capsys.readouterr().out
    assert f"$ d3p refine {root}/cache/predictions/gt2d/test.npz -o {refined_path}" in out
    assert load_predictions(refined_path).meta["refined_by"]["stride"] == 3
    subset = root / "cache/predictions/gt2d/test_every2.npz"
    assert f"$ d3p refine {subset} -o {root}/cache/refined/gt2d/h36m_gt2d_t9_depth6_every2.npz" \
        in out
    keys = sorted(test.sequences)[::2]
    assert sorted(load_predictions(subset).sequences) == keys
    document = json.loads((docs / "refiner.json").read_text())
    ablation = document["settings"]["gt2d"]["ablation"]
    assert ablation["sequences"] == 2 and ablation["sequence_stride"] == 2
    rescored = evaluate_predictions(load_predictions(refined_path), keys=keys)
    assert ablation["rows"][0]["mpjpe"] == pytest.approx(rescored["average"]["mpjpe"])
    assert ablation["lifter"]["mpjpe"] == pytest.approx(
        evaluate_predictions(test, keys=keys)["average"]["mpjpe"])
    overview = (docs / "refiner.md").read_text()
    assert "every 2nd test sequence" in overview
    # sh2d was not rerun: its earlier document still feeds the summary
    assert "model h36m_sh2d_t9 not trained" in overview
    assert document["settings"]["sh2d"]["notes"]


@pytest.mark.timeout(600)
def test_published_model_and_ablation_budget(workspace, tmp_path, monkeypatch):
    """The page of a window shows its published model (here `_long`); the ablation table
    starts with the 1-epoch full model its variants share a budget with, and lists the
    published one last, with the main page's numbers."""
    import shutil
    root, _ = workspace
    models = tmp_path / "models"
    shutil.copytree(root / "models/h36m_gt2d_t9", models / "h36m_gt2d_t9")
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(root / "docs/smoother_gt2d.json", docs)
    monkeypatch.setitem(results_refiner.MAIN_RUN_SUFFIX, WINDOW, "_long")
    torch.manual_seed(1)   # a different (untrained) model under the published name
    base = D3PRefiner.load(models / "h36m_gt2d_t9/model")
    other = PoseDenoiser(base.denoiser.config)
    D3PRefiner(other, base.cnd, info={"noise": "cnd"}).save(models / "h36m_gt2d_t9_long/model")
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache/predictions", cache / "predictions")
    assert results_refiner.main([
        "--cache", str(cache), "--models", str(models), "--docs", str(docs),
        "--windows", str(WINDOW), "--ablation-window", str(WINDOW), "--subjects", "SYN8",
        "--settings", "gt2d", "--no-figures"]) == 0
    page = json.loads((docs / f"refiner_gt2d_t{WINDOW}.json").read_text())
    assert page["model"]["dir"] == str(models / "h36m_gt2d_t9_long/model")
    rows = json.loads((docs / "refiner.json").read_text())["settings"]["gt2d"]["ablation"]["rows"]
    assert [row["name"] for row in rows] == ["h36m_gt2d_t9", "h36m_gt2d_t9_long"]
    assert rows[1]["mpjpe"] == pytest.approx(page["results"]["refiner"]["average"]["mpjpe"])
    assert rows[0]["mpjpe"] != pytest.approx(rows[1]["mpjpe"])


def _result(per_action: dict) -> dict:
    actions = {name: {"mpjpe": m, "p_mpjpe": p, "accel": 1.0, "frames": 10, "sequences": 1}
               for name, (m, p) in per_action.items()}
    return {"actions": actions,
            "average": {metric: float(np.mean([e[metric] for e in actions.values()]))
                        for metric in ("mpjpe", "p_mpjpe", "accel")}}


def test_targets_are_judged_from_the_numbers():
    results = {"lifter": _result({"A": (100, 80), "B": (50, 40)}),
               "smoother": _result({"A": (95, 78), "B": (49, 39)}),
               "refiner": _result({"A": (85, 70), "B": (51, 33)})}
    summary = results_refiner.summarise(results)
    assert summary["reduction_pct"]["refiner"]["mpjpe"] == pytest.approx(100 * 7 / 75)
    assert summary["reduction_pct"]["refiner"]["p_mpjpe"] == pytest.approx(100 * 8.5 / 60)
    targets = summary["targets"]
    assert targets["mpjpe"]["met"] is False          # 9.3% < 10%
    assert targets["p_mpjpe"]["met"] is True         # 14.2% >= 11%
    assert summary["not_improved"] == {"mpjpe": ["B"], "p_mpjpe": []}
    assert targets["every_action"]["met"] is False
    assert targets["smoother"]["margin_pct"]["mpjpe"] == pytest.approx(100 * 4 / 72)
    assert targets["smoother"]["met"] is True        # 5.6% and 12.0% below the smoother
    assert targets["all"]["met"] is False
    lines = "\n".join(results_refiner.target_lines(summary))
    assert "9.3%: **NOT met**" in lines and "14.2%: met" in lines
    assert "not improved in MPJPE: B" in lines

    results["refiner"] = _result({"A": (80, 60), "B": (40, 30)})
    summary = results_refiner.summarise(results)
    assert summary["targets"]["all"]["met"] is True
    del results["smoother"]  # without a smoother the smoother target stays undecided
    summary = results_refiner.summarise(results)
    assert summary["targets"]["smoother"]["met"] is None
    assert summary["targets"]["all"]["met"] is False


def test_finds_models_in_both_layouts(tmp_path):
    (tmp_path / "a/x").mkdir(parents=True)
    (tmp_path / "a/x/model.json").write_text("{}")
    (tmp_path / "b/y/model").mkdir(parents=True)
    (tmp_path / "b/y/model/model.json").write_text("{}")
    roots = [tmp_path / "a", tmp_path / "b"]
    assert results_refiner.find_model("x", roots) == tmp_path / "a/x"
    assert results_refiner.find_model("y", roots) == tmp_path / "b/y/model"
    assert results_refiner.find_model("z", roots) is None


def test_freshness(tmp_path):
    source, output = tmp_path / "in", tmp_path / "out"
    source.write_text("a")
    assert not results_refiner.is_fresh(output, [source])
    output.write_text("b")
    os.utime(source, ns=(1, 10**18))
    os.utime(output, ns=(1, 2 * 10**18))
    assert results_refiner.is_fresh(output, [source, tmp_path / "missing"])
    os.utime(source, ns=(1, 3 * 10**18))
    assert not results_refiner.is_fresh(output, [source])


def test_refiner_models_table(tmp_path):
    """The models README lists finished runs from their log.json, and skips unfinished ones."""
    spec = importlib.util.spec_from_file_location(
        "refiner_models_table", REPO / "scripts" / "refiner_models_table.py")
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    done = {"provenance": {"command": "d3p train x --out y"}, "batch_losses": [1.0] * 7,
            "epochs": [{"seconds": 600.0}],
            "calibration": {"mpjpe_in_mm": 120.0, "mpjpe_out_mm": 99.94}}
    for name, log in (("run_a", done), ("run_b", {"epochs": [], "batch_losses": []})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "log.json").write_text(json.dumps(log))
    assert table.main(["--models", str(tmp_path)]) == 0
    text = (tmp_path / "README.md").read_text()
    assert "| `run_a` | `d3p train x --out y` | 7 | 10 | 120.0 -> 99.9 |" in text
    assert "run_b" not in text
