"""scripts/results_error_structure.py on generated errors of known structure: a constant bias
is all removed by the bias oracle and none of it by the smoother's, jitter the other way."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from d3p_model.data.predictions import Predictions, Sequence, save_predictions

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location(
        "results_error_structure", REPO / "scripts" / "results_error_structure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def predictions_with(error_of_frames, frames=400, seed=0):
    rng = np.random.default_rng(seed)
    truth = rng.normal(0, 0.2, (1, 17, 3)) + 0.05 * np.sin(
        np.linspace(0, 4, frames))[:, None, None]
    truth = (truth - truth[:, :1]).astype(np.float32)
    error = error_of_frames(rng, frames)
    error[:, 0] = 0
    sequences = {f"S9/{action} 1/cam0": Sequence(
        keypoints_2d=rng.uniform(0, 1000, (frames, 17, 2)).astype(np.float32),
        image_size=np.array([1000, 1000], np.float32),
        pose_3d=(truth + error).astype(np.float32), ground_truth_3d=truth)
        for action in ("Walking", "Eating")}
    return Predictions(sequences)


def test_bias_and_jitter_are_told_apart(tmp_path):
    module = load_script()
    cases = {"bias": lambda rng, f: np.broadcast_to(rng.normal(0, 0.03, (1, 17, 3)),
                                                    (f, 17, 3)).copy(),
             "jitter": lambda rng, f: rng.normal(0, 0.03, (f, 17, 3))}
    for name, error in cases.items():
        save_predictions(tmp_path / "cache" / "predictions" / name / "test.npz",
                         predictions_with(error))
    assert module.main(["--settings", "bias", "jitter", "missing", "--cache",
                        str(tmp_path / "cache"), "--docs", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "error_structure.json").read_text())["settings"]
    assert set(result) == {"bias", "jitter"}            # a missing setting is skipped
    bias, jitter = result["bias"]["mean"], result["jitter"]["mean"]
    assert bias["lifter"] > 20
    assert bias["bias_removed"] == pytest.approx(0, abs=1e-3)
    assert bias["fast_removed"] == pytest.approx(bias["lifter"], rel=1e-3)
    assert result["bias"]["fast_share_of_squared_error"] < 1e-3
    assert jitter["fast_removed"] < 0.4 * jitter["lifter"]
    assert jitter["bias_removed"] > 0.9 * jitter["lifter"]
    assert result["jitter"]["fast_share_of_squared_error"] > 0.8   # white: 92% of the band
    assert "| **mean over actions** |" in (tmp_path / "error_structure.md").read_text()
