"""`d3p train-for-lifter`: one command from a user's predictions file to a checked,
exported refiner (generated data; no Human3.6M)."""

import json

import numpy as np
import pytest
import yaml

from d3p_model import cli
from d3p_model.data.predictions import save_predictions
from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.refiner import D3PRefiner

RECIPE = {
    "window": 5, "stride": 5,
    "model": {"depth": 1, "width": 16, "heads": 1},
    "noise": "cnd", "noise_level": [0.0, 1.5], "identity_fraction": 0.3,
    "data": {"validation_fraction": 0.25},
    "optim": {"epochs": 2, "batch_size": 8},
    "threads": 1, "device": "cpu", "checkpoint_minutes": None,
}


@pytest.fixture
def own_lifter(tmp_path):
    path = tmp_path / "my_lifter_train.npz"
    save_predictions(path, make_synthetic_predictions(
        num_sequences=8, num_frames=40, seed=5, subjects=["SYN1", "SYN2", "SYN3", "SYN4"]))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    return path, recipe


def test_one_command_fits_trains_checks_and_exports(own_lifter, tmp_path):
    pytest.importorskip("onnxruntime")
    path, recipe = own_lifter
    out = tmp_path / "mine"
    code = cli.main(["train-for-lifter", str(path), "--out", str(out), "--recipe", str(recipe),
                     "--from-scratch", "--no-progress"])
    report = json.loads((out / "report.json").read_text())
    assert code == (1 if report["harmed"] else 0)
    assert list(report["stages"]) == ["cnd", "train+calibrate", "do-no-harm", "export"]
    assert all(s["seconds"] >= 0 for s in report["stages"].values())
    assert set(report["do_no_harm_validation"]) == {"clean", "iid_10mm", "iid_20mm", "offset_30mm"}
    refiner = D3PRefiner.load(out / "model")
    assert np.isfinite(refiner.joint_uncertainty[1:]).all()     # calibrated
    assert (out / "model" / "refiner_k2.onnx").is_file()
    # it trained on the user's file, nothing else
    assert refiner.info["config"]["data"]["train"] == str(path.resolve())
    assert "| export |" in (out / "report.md").read_text()


def test_in_sample_outputs_scale_the_training_error(own_lifter, tmp_path):
    path, recipe = own_lifter
    out = tmp_path / "pretrained"
    cli.main(["train-for-lifter", str(path), "--out", str(out), "--recipe", str(recipe),
              "--from-scratch", "--no-progress", "--no-export", "--epochs", "1",
              "--lifter-test-mpjpe", "500"])
    report = json.loads((out / "report.json").read_text())
    gain = report["recipe_changes"]["noise_gain"]["gain"]
    file_mm = report["stages"]["cnd"]["file_mpjpe_mm"]
    assert gain == pytest.approx(500 / file_mm)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["noise_level"] == pytest.approx([0.0, 1.5 * gain])


def test_refuses_a_file_without_ground_truth_or_with_test_subjects(tmp_path, capsys):
    bad = tmp_path / "test_subjects.npz"
    save_predictions(bad, make_synthetic_predictions(num_sequences=2, num_frames=20,
                                                     subjects=["S9", "S11"]))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    assert cli.main(["train-for-lifter", str(bad), "--out", str(tmp_path / "o"),
                     "--recipe", str(recipe), "--from-scratch"]) == 2
    assert "S9" in capsys.readouterr().err


def test_default_starts_from_the_shipped_model_and_keeps_its_stride(own_lifter, tmp_path):
    """No --recipe, no --from-scratch: the shipped model's recipe and weights, and its
    validated inference stride (about 10 s on generated data)."""
    from d3p_model.refiner import default_model_dir
    path, _ = own_lifter
    out = tmp_path / "fine_tuned"
    cli.main(["train-for-lifter", str(path), "--out", str(out), "--epochs", "1",
              "--no-export", "--no-progress"])
    refiner = D3PRefiner.load(out / "model")
    shipped = D3PRefiner.load(default_model_dir())
    assert refiner.info["config"]["init_from"] == str(default_model_dir())
    assert refiner.denoiser.config == shipped.denoiser.config
    assert refiner.stride == shipped.stride
    assert json.loads((out / "report.json").read_text())["stages"]["train+calibrate"]["epochs"] == 1
