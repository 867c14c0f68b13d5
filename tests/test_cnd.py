"""CND: conditioning matches the closed form, fitting recovers moments, samples converge."""

import numpy as np
import pytest
import scipy.linalg
import torch

from d3p_model.cnd import CONDITION_DIM, ERROR_DIM, ConditionalNoiseModel
from d3p_model.cnd.gaussian import condition_vectors, error_vectors

SIZE = ERROR_DIM + CONDITION_DIM


def random_gaussian(seed):
    rng = np.random.default_rng(seed)
    factor = rng.normal(size=(SIZE, SIZE)) / np.sqrt(SIZE)
    cov = factor @ factor.T + 0.05 * np.eye(SIZE)   # correlated, well conditioned
    mean = rng.normal(size=SIZE)
    return mean, cov


def closed_form_via_precision(mean, cov, condition):
    """e | c from the precision matrix: an independent route to the same answer."""
    precision = np.linalg.inv(cov)
    lam_ee = precision[:ERROR_DIM, :ERROR_DIM]
    lam_ec = precision[:ERROR_DIM, ERROR_DIM:]
    cond_cov = np.linalg.inv(lam_ee)
    cond_mean = mean[:ERROR_DIM] - cond_cov @ lam_ec @ (condition - mean[ERROR_DIM:])
    return cond_mean, cond_cov


def test_conditioning_matches_closed_form():
    mean, cov = random_gaussian(0)
    model = ConditionalNoiseModel(mean=mean, cov=cov, ridge=0.0, num_frames=1)
    condition = np.random.default_rng(1).normal(size=CONDITION_DIM)
    expected_mean, expected_cov = closed_form_via_precision(mean, cov, condition)
    np.testing.assert_allclose(model.conditional_mean(condition), expected_mean, atol=1e-8)
    np.testing.assert_allclose(model.cond_cov, expected_cov, atol=1e-8)
    np.testing.assert_allclose(model.cond_chol @ model.cond_chol.T, expected_cov, atol=1e-8)
    # a small ridge changes the answer only slightly
    ridged = ConditionalNoiseModel(mean=mean, cov=cov, ridge=1e-6, num_frames=1)
    np.testing.assert_allclose(ridged.conditional_mean(condition), expected_mean, atol=1e-4)
    assert 0 < model.explained_fraction() < 1


def test_fit_recovers_mean_and_covariance():
    mean, cov = random_gaussian(2)
    rng = np.random.default_rng(3)
    rows = rng.multivariate_normal(mean, cov, size=10000)
    model = ConditionalNoiseModel.fit(rows[:, :ERROR_DIM], rows[:, ERROR_DIM:])
    np.testing.assert_allclose(model.mean, rows.mean(axis=0), atol=1e-10)
    np.testing.assert_allclose(model.cov, np.cov(rows.T, bias=True), atol=1e-10)
    # and those are close to the truth (sampling error ~ 1/sqrt(10000))
    assert np.max(np.abs(model.mean - mean)) < 0.08
    assert np.max(np.abs(model.cov - cov)) < 0.15


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_sample_moments_converge(backend):
    mean, cov = random_gaussian(4)
    model = ConditionalNoiseModel(mean=mean, cov=cov, ridge=0.0, num_frames=1)
    condition = np.random.default_rng(5).normal(size=CONDITION_DIM)
    count = 20000
    if backend == "numpy":
        draws = model.sample(np.tile(condition, (count, 1)), np.random.default_rng(6))
    else:
        # torch takes keypoints (.., 17, 2) and a full estimate (.., 17, 3) with a zero root
        keypoints = torch.tensor(condition[:34], dtype=torch.float64).reshape(17, 2)
        estimate = torch.zeros(17, 3, dtype=torch.float64)
        estimate[1:] = torch.tensor(condition[34:]).reshape(16, 3)
        tcnd = model.to_torch(dtype=torch.float64)
        generator = torch.Generator().manual_seed(6)
        full = tcnd.sample(keypoints.expand(count, 17, 2), estimate.expand(count, 17, 3),
                           generator)
        assert torch.all(full[:, 0] == 0)
        draws = full[:, 1:].reshape(count, ERROR_DIM).numpy()
    expected_mean = model.conditional_mean(condition)
    std = np.sqrt(np.diag(model.cond_cov))
    # mean within 5 standard errors per dimension; covariance within a few percent
    assert np.all(np.abs(draws.mean(axis=0) - expected_mean) < 5 * std / np.sqrt(count))
    sample_cov = np.cov(draws.T)
    scale = np.sqrt(np.outer(std, std))
    assert np.max(np.abs(sample_cov - model.cond_cov) / scale) < 0.05


def test_torch_mean_matches_numpy():
    mean, cov = random_gaussian(7)
    model = ConditionalNoiseModel(mean=mean, cov=cov, ridge=1e-6, num_frames=1)
    rng = np.random.default_rng(8)
    keypoints = rng.normal(size=(4, 17, 2))
    estimate = rng.normal(size=(4, 17, 3))
    conditions = condition_vectors(keypoints, estimate)
    tcnd = model.to_torch(dtype=torch.float64)
    got = tcnd.conditional_mean(tcnd.conditions(torch.tensor(keypoints), torch.tensor(estimate)))
    np.testing.assert_allclose(got.numpy(), model.conditional_mean(conditions), atol=1e-10)


def test_vectors_drop_the_root():
    rng = np.random.default_rng(9)
    truth = rng.normal(size=(5, 17, 3))
    estimate = truth + rng.normal(size=(5, 17, 3))
    errors = error_vectors(estimate, truth)
    assert errors.shape == (5, ERROR_DIM)
    np.testing.assert_allclose(errors[:, :3], (estimate - truth)[:, 1])
    conditions = condition_vectors(rng.normal(size=(5, 17, 2)), estimate)
    assert conditions.shape == (5, CONDITION_DIM)
    np.testing.assert_allclose(conditions[:, 34:37], estimate[:, 1])


def test_save_load_roundtrip_and_bad_files(tmp_path):
    mean, cov = random_gaussian(10)
    model = ConditionalNoiseModel(mean=mean, cov=cov, ridge=1e-6, num_frames=123)
    path = tmp_path / "cnd.pt"
    model.save(path)
    loaded = ConditionalNoiseModel.load(path)
    np.testing.assert_array_equal(loaded.cov, model.cov)
    np.testing.assert_array_equal(loaded.gain, model.gain)
    assert loaded.num_frames == 123
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="bad.npz"):
        ConditionalNoiseModel.load(bad)
    torch.save({"mean": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        ConditionalNoiseModel.load(tmp_path / "other.pt")


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="errors must be"):
        ConditionalNoiseModel.fit(np.zeros((10, 47)), np.zeros((10, CONDITION_DIM)))
    with pytest.raises(ValueError, match="conditions must be"):
        ConditionalNoiseModel.fit(np.zeros((10, ERROR_DIM)), np.zeros((9, CONDITION_DIM)))
    mean, cov = random_gaussian(11)
    cov[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ConditionalNoiseModel(mean=mean, cov=cov, ridge=0.0, num_frames=1)


def test_fit_cnd_command(tmp_path, capsys):
    from d3p_model.cli import main as d3p
    from d3p_model.data.predictions import save_predictions
    from d3p_model.data.synthetic import make_synthetic_predictions
    predictions = make_synthetic_predictions(num_sequences=4, num_frames=100, seed=2)
    save_predictions(tmp_path / "p.npz", predictions)
    assert d3p(["fit-cnd", str(tmp_path / "p.npz"), "-o", str(tmp_path / "cnd.pt")]) == 0
    model = ConditionalNoiseModel.load(tmp_path / "cnd.pt")
    assert model.num_frames == 400
    assert "explains" in capsys.readouterr().out
    # the synthetic lifter's error depends on the condition: the CND captures that
    assert model.explained_fraction() > 0.3
    assert model.temporal_acf is None
    assert d3p(["fit-cnd", str(tmp_path / "p.npz"), "-o", str(tmp_path / "cnd_t.pt"),
                "--temporal-lags", "12"]) == 0
    assert ConditionalNoiseModel.load(tmp_path / "cnd_t.pt").temporal_acf.shape == (48, 12)
    assert "autocorrelation" in capsys.readouterr().out
    for seq in predictions.sequences.values():
        seq.ground_truth_3d = None
    save_predictions(tmp_path / "nogt.npz", predictions)
    assert d3p(["fit-cnd", str(tmp_path / "nogt.npz"), "-o", str(tmp_path / "c2.npz")]) == 2
    assert "ground_truth_3d" in capsys.readouterr().err


def test_streamed_fit_equals_fit_on_all_frames():
    rng = np.random.default_rng(12)
    sequences = []
    for frames in (30, 1, 57, 12):
        truth = rng.normal(size=(frames, 17, 3))
        pose = truth + 0.05 * rng.normal(size=(frames, 17, 3)) + 0.1
        sequences.append((rng.normal(size=(frames, 17, 2)), pose, truth))
    streamed = ConditionalNoiseModel.fit_sequences(sequences)
    errors = np.concatenate([error_vectors(p, t) for _, p, t in sequences])
    conditions = np.concatenate([condition_vectors(k, p) for k, p, _ in sequences])
    whole = ConditionalNoiseModel.fit(errors, conditions)
    assert streamed.num_frames == whole.num_frames == 100
    np.testing.assert_allclose(streamed.mean, whole.mean, atol=1e-12)
    np.testing.assert_allclose(streamed.cov, whole.cov, atol=1e-12)


def smooth_error_sequences(frames=400, count=6, rho=0.9, seed=0):
    """Generated sequences whose error is an AR(1) process in time with coefficient rho."""
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(count):
        truth = rng.normal(0, 0.2, (frames, 17, 3))
        truth -= truth[:, :1]
        keypoints = rng.normal(0, 0.3, (frames, 17, 2))   # unrelated to the error
        noise = np.empty((frames, 17, 3))
        noise[0] = rng.normal(size=(17, 3))
        for t in range(1, frames):
            noise[t] = rho * noise[t - 1] + np.sqrt(1 - rho ** 2) * rng.normal(size=(17, 3))
        error = 0.03 * noise
        error[:, 0] = 0
        sequences.append((keypoints, truth + error, truth))
    return sequences


def test_temporal_correlation_is_measured_and_sampled():
    """An AR(1) error with rho 0.9: the fitted residual autocorrelation is rho^k, and windows
    drawn from the CND carry it; without it the draws are white in time."""
    sequences = smooth_error_sequences()
    white = ConditionalNoiseModel.fit_sequences(sequences)
    model = white.with_temporal_correlation(sequences, lags=12)
    # the FFT estimate equals the plain lag products of the whitened residuals
    residuals = [white.residuals(*s) for s in sequences]
    for lag in (0, 1, 5, 11):
        products = sum((r[lag:] * r[:len(r) - lag]).sum(axis=0) for r in residuals)
        pairs = sum(len(r) - lag for r in residuals)
        variance = sum((r ** 2).sum(axis=0) for r in residuals) / sum(len(r) for r in residuals)
        np.testing.assert_allclose(model.temporal_acf[:, lag], products / pairs / variance,
                                   atol=1e-9)
    # and it sees the AR(1) structure (a little weaker: m(c) absorbs part of the error)
    acf = model.temporal_acf.mean(axis=0)
    assert 0.75 < acf[1] < 0.95 and acf[5] < acf[2] < acf[1]
    factors = model.temporal_factors(12)
    np.testing.assert_allclose(factors[3] @ factors[3].T,
                               scipy.linalg.toeplitz(model.temporal_acf[3, :12]), atol=1e-3)
    with pytest.raises(ValueError, match="covers 12 frames"):
        model.temporal_factors(13)

    keypoints, pose, _ = sequences[0]
    windows = np.stack([np.arange(12) + s for s in range(0, 240, 2)])
    kp = torch.tensor(keypoints[windows], dtype=torch.float64)
    ps = torch.tensor(pose[windows], dtype=torch.float64)
    for cnd, expected in ((model, float(acf[1])), (white, 0.0)):
        tcnd = cnd.to_torch(dtype=torch.float64)
        draws = tcnd.sample(kp, ps, torch.Generator().manual_seed(0))[:, :, 1:].reshape(
            len(windows), 12, ERROR_DIM)
        spread = draws - tcnd.conditional_mean(tcnd.conditions(kp, ps))   # L z
        residual = np.linalg.solve(cnd.cond_chol, spread.numpy().reshape(-1, ERROR_DIM).T).T \
            .reshape(len(windows), 12, ERROR_DIM)
        lag1 = (residual[:, 1:] * residual[:, :-1]).sum() / (residual ** 2).sum()
        assert abs(lag1 - expected) < 0.08, (expected, lag1)


def test_temporal_correlation_survives_save_and_version_1_loads(tmp_path):
    sequences = smooth_error_sequences(frames=100, count=2)
    model = ConditionalNoiseModel.fit_sequences(sequences).with_temporal_correlation(
        sequences, lags=9)
    model.save(tmp_path / "cnd.pt")
    loaded = ConditionalNoiseModel.load(tmp_path / "cnd.pt")
    np.testing.assert_array_equal(loaded.temporal_acf, model.temporal_acf)
    # a file written before temporal correlation existed: white residual
    torch.save({"format": "d3p-cnd", "version": 1, "mean": torch.from_numpy(model.mean),
                "cov": torch.from_numpy(model.cov), "ridge": 1e-6, "num_frames": 5},
               tmp_path / "v1.pt")
    assert ConditionalNoiseModel.load(tmp_path / "v1.pt").temporal_acf is None
    with pytest.raises(ValueError, match="temporal_acf"):
        ConditionalNoiseModel(mean=model.mean, cov=model.cov, ridge=1e-6, num_frames=5,
                              temporal_acf=np.full((48, 3), 2.0))
