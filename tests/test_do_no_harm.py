"""Do no harm: the known-error inputs are what they claim, and the verdict tells a refiner
that leaves a skeleton alone or fixes it from one that moves a correct skeleton away."""

import numpy as np
import pytest

from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.evaluate.do_no_harm import (CASES, OFFSET_JOINTS, corrupt, evaluate_do_no_harm,
                                           harm_failures)


@pytest.fixture(scope="module")
def sequences():
    data = make_synthetic_predictions(num_sequences=3, num_frames=300, seed=5,
                                      subjects=["SYN8"])
    return [(k, s.keypoints_normalised(), s.ground_truth_3d) for k, s in data.items()]


def test_inputs_have_the_stated_error(sequences):
    _, _, truth = sequences[0]
    truth = truth - truth[:, :1]
    assert np.array_equal(corrupt(truth, "clean", 0), truth)
    for case, sigma in (("iid_10mm", 0.010), ("iid_20mm", 0.020)):
        error = corrupt(truth, case, 1) - truth
        assert np.all(error[:, 0] == 0)
        assert abs(error[:, 1:].std() - sigma) < 0.05 * sigma
        assert np.array_equal(corrupt(truth, case, 1), corrupt(truth, case, 1))  # seeded
    offset = corrupt(truth, "offset_30mm", 2) - truth
    lengths = np.linalg.norm(offset, axis=-1)
    np.testing.assert_allclose(lengths[:, list(OFFSET_JOINTS)], 0.030)
    others = [j for j in range(17) if j not in OFFSET_JOINTS]
    assert np.all(lengths[:, others] == 0)
    assert np.allclose(offset, offset[:1])          # constant in time
    with pytest.raises(ValueError, match="unknown"):
        corrupt(truth, "jpeg", 0)


def test_identity_and_oracle_refiners(sequences):
    identity = evaluate_do_no_harm(lambda kp, pose: pose, sequences)
    assert set(identity) == set(CASES)
    assert identity["clean"]["refined_mm"] == 0
    assert abs(identity["iid_20mm"]["input_mm"] - 20 * np.sqrt(8 / np.pi) * 16 / 17) < 1.0
    assert abs(identity["offset_30mm"]["input_mm"] - 30 * 3 / 17) < 1e-6
    # leaving the input alone improves nothing: every noisy case fails
    assert harm_failures(identity) == ["iid_10mm", "iid_20mm", "offset_30mm"]
    # the offset case split by joint: the offset joints keep their 30 mm, the others 0
    assert identity["offset_30mm"]["offset_joints_mm"] == pytest.approx(30.0, abs=1e-3)
    assert identity["offset_30mm"]["other_joints_mm"] == pytest.approx(0.0, abs=1e-3)

    assert identity["clean"]["constant_mm"] == 0 and max(identity["clean"]["per_joint_mm"]) == 0
    # a constant shift of one joint is all "constant"; jitter is not
    shift = np.zeros((17, 3))
    shift[5, 0] = 0.017
    shifted = evaluate_do_no_harm(lambda kp, pose: pose + shift, sequences, cases=("clean",))
    assert shifted["clean"]["per_joint_mm"][5] == pytest.approx(17.0)
    assert shifted["clean"]["constant_mm"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    jitter = evaluate_do_no_harm(lambda kp, pose: pose + rng.normal(0, 0.01, pose.shape),
                                 sequences, cases=("clean",))
    assert jitter["clean"]["constant_mm"] < 0.1 * jitter["clean"]["refined_mm"]

    truths = {id(kp): t - t[:, :1] for _, kp, t in sequences}
    oracle = evaluate_do_no_harm(lambda kp, pose: truths[id(kp)], sequences)
    assert harm_failures(oracle) == [] and oracle["iid_10mm"]["refined_mm"] < 1e-9
    assert oracle["offset_30mm"]["offset_joints_mm"] < 1e-6


def test_a_refiner_that_pulls_towards_a_mean_pose_is_caught(sequences):
    """What the old refiners did: replace the input by an estimate of its own (here a
    blend with a fixed pose). It halves large noise, so the averages look good, but it
    moves the clean and the slightly wrong skeletons away from the truth."""
    mean_pose = np.mean([t[0] - t[0, :1] for _, _, t in sequences], axis=0)

    def pull(kp, pose):
        return 0.6 * pose + 0.4 * mean_pose

    results = evaluate_do_no_harm(pull, sequences)
    assert results["clean"]["refined_mm"] > 15
    assert "offset_30mm" in harm_failures(results)
    assert results["offset_30mm"]["worse_sequences"] == len(sequences)


def test_results_script_page(tmp_path):
    """scripts/results_do_no_harm.py on generated data: the table, the verdicts and what a
    model adds to the clean input."""
    import importlib.util
    import json
    from pathlib import Path

    import torch

    from d3p_model.cnd import ConditionalNoiseModel
    from d3p_model.data.predictions import save_predictions
    from d3p_model.denoiser import DenoiserConfig, PoseDenoiser
    from d3p_model.refiner import D3PRefiner

    script = Path(__file__).resolve().parents[1] / "scripts" / "results_do_no_harm.py"
    spec = importlib.util.spec_from_file_location("results_do_no_harm", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    data = make_synthetic_predictions(num_sequences=2, num_frames=30, seed=6, subjects=["S9"])
    save_predictions(tmp_path / "test.npz", data)
    torch.manual_seed(0)
    train = [(s.keypoints_normalised(), s.pose_3d, s.ground_truth_3d) for _, s in data.items()]
    D3PRefiner(PoseDenoiser(DenoiserConfig(window=9, depth=1, width=16)),
               ConditionalNoiseModel.fit_sequences(train)).save(tmp_path / "m" / "model")
    assert module.main([str(tmp_path / "m" / "model"), "--predictions",
                        str(tmp_path / "test.npz"), "--sequence-stride", "1",
                        "--docs", str(tmp_path)]) == 0
    page = (tmp_path / "do_no_harm.md").read_text()
    document = json.loads((tmp_path / "do_no_harm.json").read_text())
    clean = document["models"]["m"]["cases"]["clean"]
    assert len(clean["per_joint_mm"]) == 17 and clean["per_joint_mm"][0] == 0   # root exact
    assert "constant over the sequence" in page and "+ i.i.d. 10 mm" in page
    assert "| offset joints (30.0 in) | other joints (0.0 in) |" in page


def test_offset_visibility_page(tmp_path):
    """scripts/results_offset_visibility.py on generated data: the offset's signal in the
    2D-consistency residual does not depend on the keypoints' noise, the floor does (noisy
    keypoints: a higher floor, fewer windows where the offset shows); the offset joints are
    those of the do-no-harm case."""
    import importlib.util
    import json
    from pathlib import Path

    from d3p_model.data.predictions import save_predictions
    from d3p_model.skeleton import H36M17_JOINTS

    script = Path(__file__).resolve().parents[1] / "scripts" / "results_offset_visibility.py"
    spec = importlib.util.spec_from_file_location("results_offset_visibility", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for setting, noise in (("gt2d", 0.0), ("sh2d", 15.0)):
        save_predictions(tmp_path / "cache" / "predictions" / setting / "test.npz",
                         make_synthetic_predictions(num_sequences=3, num_frames=90, seed=7,
                                                    subjects=["S9"], keypoint_noise_px=noise))
    assert module.main(["--cache", str(tmp_path / "cache"), "--docs", str(tmp_path),
                        "--window", "9", "--sequence-stride", "1"]) == 0
    document = json.loads((tmp_path / "offset_visibility.json").read_text())
    exact, noisy = (document["settings"][s]["joints"] for s in ("gt2d", "sh2d"))
    assert list(exact) == [H36M17_JOINTS[j] for j in OFFSET_JOINTS]
    assert document["settings"]["gt2d"]["windows"] == 3 * 10
    for joint in exact:
        assert exact[joint]["signal_mm"] == pytest.approx(noisy[joint]["signal_mm"], rel=0.2)
        assert 5 < exact[joint]["signal_mm"] <= 30.0 + 1e-6   # at most the whole offset
        assert noisy[joint]["floor_mm"] > exact[joint]["floor_mm"]
        assert noisy[joint]["visible_share"] <= exact[joint]["visible_share"]
    assert "| detected 2D (Stacked Hourglass) | right_ankle |" in \
        (tmp_path / "offset_visibility.md").read_text()
    with pytest.raises(SystemExit, match="missing"):
        module.main(["--cache", str(tmp_path / "nothing"), "--docs", str(tmp_path)])
