"""`d3p train`: the tiny config improves MPJPE on held-out generated data; resume is exact;
DDP with 2 CPU processes (torchrun) works; configs are validated."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from d3p_model.data.predictions import save_predictions
from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.refiner import D3PRefiner
from d3p_model.train import cli as train_cli
from d3p_model.train.config import ConfigError, load_config
from d3p_model.train.loop import train_from_config

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]

MICRO = {
    "name": "micro",
    "data": {"train": {"synthetic": {"num_sequences": 6, "num_frames": 40, "seed": 3,
                                     "subjects": ["SYN1", "SYN2", "SYN3"]}},
             "validation_fraction": 0.2},
    "window": 5, "stride": 5,
    "model": {"depth": 1, "width": 16, "heads": 1},
    "optim": {"epochs": 2, "batch_size": 8},
    "threads": 1, "device": "cpu", "checkpoint_minutes": None,
}


def mpjpe_mm(predicted, truth):
    return 1000 * float(np.mean(np.linalg.norm(predicted - truth, axis=-1)))


# Training tests get a longer limit than the suite's 120 s: they do little CPU work
# (seconds) but the shared 2-core machine can stretch that a lot.
@pytest.mark.timeout(600)
def test_tiny_config_improves_held_out_mpjpe(tmp_path):
    model_dir = train_from_config("synthetic_tiny", tmp_path / "run", progress=False)
    for name in ("checkpoint.pt", "log.json", "loss.png", "config.yaml"):
        assert (tmp_path / "run" / name).is_file(), name
    refiner = D3PRefiner.load(model_dir)
    info = json.loads((model_dir / "model.json").read_text())["info"]
    assert info["provenance"]["commit"] and info["provenance"]["command"]
    uncertainty = refiner.joint_uncertainty
    assert uncertainty[0] == 0 and np.all(uncertainty[1:] > 0.005) and np.all(uncertainty < 0.2)

    # held out: other subjects, other motions, the same synthetic "lifter"
    test = make_synthetic_predictions(num_sequences=6, num_frames=120, seed=1234,
                                      subjects=["SYN8", "SYN9"], lifter_seed=0)
    before, after = [], []
    for _, seq in test.items():
        refined = refiner.refine_sequence(seq.keypoints_normalised(), seq.pose_3d)
        before.append(mpjpe_mm(seq.pose_3d, seq.ground_truth_3d))
        after.append(mpjpe_mm(refined, seq.ground_truth_3d))
    print(f"held-out MPJPE {np.mean(before):.2f} -> {np.mean(after):.2f} mm")
    assert np.mean(after) < 0.9 * np.mean(before)


@pytest.mark.timeout(600)
def test_resume_continues_exactly(tmp_path):
    straight = train_from_config(MICRO, tmp_path / "a", progress=False)
    assert train_from_config(MICRO, tmp_path / "b", progress=False, stop_after_epochs=1) is None
    assert not (tmp_path / "b" / "model").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        train_from_config(MICRO, tmp_path / "b", progress=False)
    resumed = train_from_config(MICRO, tmp_path / "b", resume=True, progress=False)
    a = torch.load(straight / "weights.pt", weights_only=True)
    b = torch.load(resumed / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    log = json.loads((tmp_path / "b" / "log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    # a different seed trains a different model
    other = train_from_config({**MICRO, "seed": 1}, tmp_path / "c", progress=False)
    c = torch.load(other / "weights.pt", weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.timeout(600)
def test_resume_after_a_crash_mid_epoch(tmp_path, monkeypatch):
    """A time-based checkpoint inside an epoch, then a crash: resume continues from it."""
    from d3p_model.train import loop
    config = {**MICRO, "checkpoint_minutes": 1e-9}     # a checkpoint after every batch
    straight = train_from_config(config, tmp_path / "a", progress=False)
    real_loss, calls = loop._loss, []

    def crash_in_epoch_two(*args):
        calls.append(1)
        # epoch 1: 5 training batches + 1 validation batch; call 8 = epoch 2's second batch
        if len(calls) == 8:
            raise KeyboardInterrupt
        return real_loss(*args)
    monkeypatch.setattr(loop, "_loss", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train_from_config(config, tmp_path / "b", progress=False)
    monkeypatch.setattr(loop, "_loss", real_loss)
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["batch"]) == (1, 1)
    resumed = train_from_config(config, tmp_path / "b", resume=True, progress=False)
    a = torch.load(straight / "weights.pt", weights_only=True)
    b = torch.load(resumed / "weights.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    log_a = json.loads((tmp_path / "a" / "log.json").read_text())
    log_b = json.loads((tmp_path / "b" / "log.json").read_text())
    assert log_a["batch_losses"] == log_b["batch_losses"]


@pytest.mark.timeout(600)
def test_ddp_with_two_cpu_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    config = tmp_path / "micro.yaml"
    config.write_text(yaml.safe_dump(MICRO))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", "-m", "d3p_model.train.cli",
         str(config), "--out", str(tmp_path / "ddp"), "--no-progress"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]
    log = json.loads((tmp_path / "ddp" / "log.json").read_text())
    assert log["provenance"]["world_size"] == 2
    assert log["provenance"]["command"].startswith("torchrun --nproc_per_node=2")
    assert log["ranks_in_sync"] is True
    single = load_config(MICRO)
    windows = 0
    # each rank gets half of the windows: batches per epoch halve (rounded up)
    from d3p_model.train.dataset import WindowSet, load_training_predictions, split_validation
    predictions = load_training_predictions(single["data"])
    train_keys, _ = split_validation(predictions.sequences, 0.2, 0)
    windows = len(WindowSet(predictions, train_keys, 5, 5))
    assert log["batches_per_epoch"] == -(-(-(-windows // 2)) // 8)
    D3PRefiner.load(tmp_path / "ddp" / "model")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("ablation", [{"noise": "real"}, {"diffusion": False}])
def test_ablations_train(tmp_path, ablation, monkeypatch):
    """Without CND no CND sample is drawn (the noise is the real error); without diffusion
    every training step is at t = T and inference takes one step."""
    from d3p_model.cnd.gaussian import TorchCND
    from d3p_model.train import loop
    steps_seen = []
    real_forward = loop.forward_noisy_pose

    def spy(y0, error, t, alpha_bar):
        steps_seen.append(t.clone())
        return real_forward(y0, error, t, alpha_bar)
    monkeypatch.setattr(loop, "forward_noisy_pose", spy)
    if ablation.get("noise") == "real":
        def no_cnd(*args, **kwargs):
            raise AssertionError("noise: real must not sample the CND")
        monkeypatch.setattr(TorchCND, "sample", no_cnd)
    config = {**MICRO, **ablation, "optim": {"epochs": 1, "batch_size": 8}}
    model_dir = train_from_config(config, tmp_path / "run", progress=False)
    refiner = D3PRefiner.load(model_dir)
    info = json.loads((model_dir / "model.json").read_text())["info"]
    steps = torch.cat(steps_seen)
    if ablation.get("diffusion") is False:
        assert refiner.steps == 1 and not refiner.diffusion
        assert torch.all(steps == 50)
    else:
        assert info["noise"] == "real" and refiner.diffusion and refiner.steps == 2
        assert len(set(steps.tolist())) > 5 and steps.min() >= 1 and steps.max() <= 50


@pytest.mark.timeout(600)
def test_init_from_continues_a_trained_model(tmp_path):
    """init_from starts from another run's weights: with lr 0 the continued run's weights
    are exactly the source's; a different architecture is refused."""
    first = train_from_config(MICRO, tmp_path / "first", progress=False)
    frozen = {**MICRO, "init_from": str(first), "optim": {"epochs": 1, "batch_size": 8,
                                                          "lr": 1e-12}}
    continued = train_from_config(frozen, tmp_path / "second", progress=False)
    a = torch.load(first / "weights.pt", weights_only=True)
    b = torch.load(continued / "weights.pt", weights_only=True)
    assert all(torch.allclose(a[k], b[k], atol=1e-9) for k in a)
    # without init_from the same run starts from its own random weights
    fresh = train_from_config({**frozen, "init_from": None}, tmp_path / "third",
                              progress=False)
    c = torch.load(fresh / "weights.pt", weights_only=True)
    assert not all(torch.allclose(a[k], c[k], atol=1e-3) for k in a)
    wider = {**frozen, "model": {"depth": 1, "width": 32, "heads": 1}}
    with pytest.raises(ConfigError, match="init_from .* differs"):
        train_from_config(wider, tmp_path / "fourth", progress=False)
    # adding the reprojection inputs: their embedding columns start at zero, so the
    # continued model refines exactly as its source
    extended = {**frozen, "model": {**MICRO["model"], "reprojection_inputs": True}}
    extended_dir = train_from_config(extended, tmp_path / "fifth", progress=False)
    d = torch.load(extended_dir / "weights.pt", weights_only=True)
    assert d["embed.weight"].shape[1] == a["embed.weight"].shape[1] + 2
    assert torch.allclose(d["embed.weight"][:, -2:], torch.zeros(1), atol=1e-9)
    source, target = D3PRefiner.load(first), D3PRefiner.load(extended_dir)
    assert target.denoiser.config.reprojection_inputs
    rng = np.random.default_rng(0)
    keypoints = rng.uniform(-1, 1, (2, 5, 17, 2)).astype(np.float32)
    pose = (0.3 * rng.normal(size=(2, 5, 17, 3))).astype(np.float32)
    np.testing.assert_allclose(target.refine_windows(keypoints, pose),
                               source.refine_windows(keypoints, pose), atol=1e-6)
    # and a model that has them cannot continue into one that has not
    with pytest.raises(ConfigError, match="init_from .* differs"):
        train_from_config({**frozen, "init_from": str(extended_dir)}, tmp_path / "sixth",
                          progress=False)
    # the bone-length inputs added the same way: two more zero columns, the same refinement
    lengths = {**frozen, "init_from": str(extended_dir),
               "model": {**extended["model"], "bone_length_inputs": True}}
    lengths_dir = train_from_config(lengths, tmp_path / "seventh", progress=False)
    e = torch.load(lengths_dir / "weights.pt", weights_only=True)
    assert e["embed.weight"].shape[1] == d["embed.weight"].shape[1] + 2
    np.testing.assert_allclose(D3PRefiner.load(lengths_dir).refine_windows(keypoints, pose),
                               target.refine_windows(keypoints, pose), atol=1e-6)
    # the output gate added: a factor of 1 at the start, the same refinement
    gated = {**lengths, "init_from": str(lengths_dir),
             "model": {**lengths["model"], "output_gate": True}}
    gated_dir = train_from_config(gated, tmp_path / "gated", progress=False)
    np.testing.assert_allclose(D3PRefiner.load(gated_dir).refine_windows(keypoints, pose),
                               target.refine_windows(keypoints, pose), atol=1e-6)
    with pytest.raises(ConfigError, match="init_from .* differs"):
        train_from_config({**lengths, "init_from": str(gated_dir)}, tmp_path / "ungated",
                          progress=False)
    # its columns come last: a model with them cannot add the reprojection inputs after
    bones_first = {**frozen, "model": {**MICRO["model"], "bone_length_inputs": True}}
    bones_dir = train_from_config(bones_first, tmp_path / "eighth", progress=False)
    with pytest.raises(ConfigError, match="init_from .* differs"):
        train_from_config({**frozen, "init_from": str(bones_dir),
                           "model": lengths["model"]}, tmp_path / "ninth", progress=False)


@pytest.mark.timeout(600)
def test_a_windowed_model_continues_into_a_longer_window(tmp_path):
    """init_from a model of a shorter window: every weight is the source's except the frame
    embedding, which is the source's stretched linearly (the same at both ends and, for
    5 -> 9 frames, at every second frame); the inference stride scales with the window; a
    shorter window is refused."""
    first = train_from_config(MICRO, tmp_path / "first", progress=False)
    spec = json.loads((first / "model.json").read_text())
    (first / "model.json").write_text(json.dumps({**spec, "stride": 2}))
    longer = {**MICRO, "init_from": str(first), "window": 9, "stride": 9,
              "optim": {"epochs": 1, "batch_size": 8, "lr": 1e-12}}
    model_dir = train_from_config(longer, tmp_path / "longer", progress=False)
    a = torch.load(first / "weights.pt", weights_only=True)
    b = torch.load(model_dir / "weights.pt", weights_only=True)
    assert set(a) == set(b)
    assert all(torch.allclose(a[k], b[k], atol=1e-9) for k in a if k != "frame_embedding")
    assert b["frame_embedding"].shape == (1, 9, 1, a["frame_embedding"].shape[-1])
    torch.testing.assert_close(b["frame_embedding"][:, ::2], a["frame_embedding"],
                               atol=1e-9, rtol=0)
    torch.testing.assert_close(b["frame_embedding"][:, 1],
                               (a["frame_embedding"][:, 0] + a["frame_embedding"][:, 1]) / 2,
                               atol=1e-9, rtol=0)
    refiner = D3PRefiner.load(model_dir)
    # the source's inference stride, as the same share of the longer window: 2 / 5 of 9
    assert refiner.window == 9 and refiner.stride == 4
    rng = np.random.default_rng(2)
    out = refiner.refine_sequence(rng.uniform(-1, 1, (20, 17, 2)).astype(np.float32),
                                  (0.3 * rng.normal(size=(20, 17, 3))).astype(np.float32))
    assert out.shape == (20, 17, 3) and np.isfinite(out).all()
    with pytest.raises(ConfigError, match="init_from .* differs"):
        train_from_config({**MICRO, "init_from": str(model_dir)}, tmp_path / "shorter",
                          progress=False)


def test_a_windowed_model_continues_into_a_causal_one_trained_on_longer_windows(tmp_path):
    """init_from a windowed model with model.causal: the frame embedding is dropped, the
    offset biases start at zero and are trained; train_frames sets the training windows;
    the result refines whole sequences causally, and cannot go back to windowed."""
    first = train_from_config(MICRO, tmp_path / "first", progress=False)
    causal = {**MICRO, "init_from": str(first), "train_frames": 12,
              "model": {**MICRO["model"], "causal": True},
              "optim": {"epochs": 1, "batch_size": 4}}
    model_dir = train_from_config(causal, tmp_path / "causal", progress=False)
    weights = torch.load(model_dir / "weights.pt", weights_only=True)
    assert "frame_embedding" not in weights
    biases = [v for k, v in weights.items() if k.endswith("offset_bias")]
    assert len(biases) == 2 and all(b.shape == (1, 5) for b in biases)
    assert any(b.abs().max() > 0 for b in biases)                  # trained from zero
    refiner = D3PRefiner.load(model_dir)
    assert refiner.causal and refiner.window == 5
    rng = np.random.default_rng(1)
    keypoints = rng.uniform(-1, 1, (23, 17, 2)).astype(np.float32)
    pose = (0.3 * rng.normal(size=(23, 17, 3))).astype(np.float32)
    pose -= pose[:, :1]
    whole = refiner.refine_sequence(keypoints, pose)
    # causal: the first 10 frames alone give the same first 10 outputs
    np.testing.assert_allclose(refiner.refine_sequence(keypoints[:10], pose[:10]),
                               whole[:10], atol=1e-6)
    with pytest.raises(ConfigError, match="init_from .* differs"):
        train_from_config({**MICRO, "init_from": str(model_dir)}, tmp_path / "back",
                          progress=False)
    with pytest.raises(ConfigError, match="train_frames"):
        load_config({**MICRO, "train_frames": 12})     # a windowed model has no use for it


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="unknown setting 'epochs'"):
        load_config({**MICRO, "epochs": 3})
    with pytest.raises(ConfigError, match="optim: unknown setting 'lr_dacay'"):
        load_config({**MICRO, "optim": {"lr_dacay": 0.9}})
    with pytest.raises(ConfigError, match="noise"):
        load_config({**MICRO, "noise": "gaussian"})
    with pytest.raises(ConfigError, match="not found"):
        load_config("no_such_config")
    # every committed refiner config parses (lifter_*.yaml belong to the base lifter)
    paths = sorted((REPO / "d3p_model" / "configs").glob("h36m_*.yaml"))
    assert len(paths) >= 10
    for path in paths + [REPO / "d3p_model" / "configs" / "synthetic_tiny.yaml"]:
        config = load_config(path)
        assert config["name"] == path.stem
        if path.stem.startswith("h36m_"):
            train = config["data"]["train"]
            assert train.endswith("train_heldout.npz") and config["window"] == \
                int(path.stem.split("_t")[1].split("_")[0])
        if config["init_from"]:   # continues a committed model of the same architecture
            if not (REPO / config["init_from"]).is_dir():
                # only a run that is itself committed may outlive its (removed) source
                assert (REPO / "d3p_model/models/refiner" / path.stem / "model").is_dir(), \
                    f"{path.name}: init_from {config['init_from']} is not committed"
                continue
            source = json.loads((REPO / config["init_from"] / "model.json").read_text())
            # the same window, or a longer one (a windowed model stretched)
            assert source["denoiser"]["window"] == config["window"] or (
                source["denoiser"]["window"] < config["window"] and not config["model"]["causal"])
            # a model saved before a model setting existed has that setting's default
            from d3p_model.train.config import DEFAULTS
            # ... except that a continued run may add the reprojection or bone-length
            # inputs or the output gate, or make the model causal
            source_model = {**DEFAULTS["model"], **source["info"]["config"]["model"]}
            from d3p_model.train.loop import ADDABLE_SETTINGS
            for setting in ADDABLE_SETTINGS:
                if config["model"][setting]:
                    source_model[setting] = True
            assert source_model == config["model"]
            assert {**DEFAULTS["data"], **source["info"]["config"]["data"]} == config["data"]
            assert source["info"]["config"]["seed"] == config["seed"]  # same validation split


def test_training_refuses_test_subjects(tmp_path):
    predictions = make_synthetic_predictions(num_sequences=2, num_frames=20, subjects=["S9"])
    save_predictions(tmp_path / "train.npz", predictions)
    with pytest.raises(ConfigError, match="test-subject"):
        train_from_config({**MICRO, "data": {"train": str(tmp_path / "train.npz")}},
                          tmp_path / "r", progress=False)
    save_predictions(tmp_path / "test.npz", make_synthetic_predictions(2, 20))
    with pytest.raises(ConfigError, match="test file"):
        train_from_config({**MICRO, "data": {"train": str(tmp_path / "test.npz")}},
                          tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match="does not exist"):
        train_from_config({**MICRO, "data": {"train": str(tmp_path / "none.npz")}},
                          tmp_path / "r", progress=False)


def test_cache_paths_follow_d3p_cache(tmp_path, monkeypatch):
    from d3p_model.train.config import resolve_data_path
    monkeypatch.setenv("D3P_CACHE", str(tmp_path))
    assert resolve_data_path("cache/predictions/gt2d/train_heldout.npz") == \
        tmp_path / "predictions" / "gt2d" / "train_heldout.npz"
    monkeypatch.delenv("D3P_CACHE")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_path("cache/x.npz") == REPO / "cache" / "x.npz"


def test_cli_reports_errors(tmp_path, capsys):
    import argparse
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    bad = tmp_path / "bad.yaml"
    bad.write_text("window: 9\nwindw: 3\n")
    assert train_cli.main(parser.parse_args([str(bad), "--out", str(tmp_path / "o")])) == 2
    assert "unknown setting 'windw'" in capsys.readouterr().err


def test_noise_level_clean_fraction_and_white_noise(tmp_path, monkeypatch):
    """The error fed to the forward process: lambda-scaled real errors, some windows exactly
    clean, plus root-free white noise bounded by white_noise_mm."""
    from d3p_model.train import loop
    seen = []
    real_forward = loop.forward_noisy_pose

    def spy(y0, error, t, alpha_bar):
        seen.append((y0.clone(), error.clone()))
        return real_forward(y0, error, t, alpha_bar)
    monkeypatch.setattr(loop, "forward_noisy_pose", spy)
    base = {**MICRO, "noise": "real", "optim": {"epochs": 1, "batch_size": 8},
            "data": {**MICRO["data"], "validation_fraction": 0.0}}
    train_from_config(base, tmp_path / "a1", progress=False)
    real_errors = [e for _, e in seen]
    seen.clear()
    train_from_config({**base, "noise_level": [2.0, 2.0]}, tmp_path / "a2", progress=False)
    assert len(seen) == len(real_errors)
    for (_, doubled), real in zip(seen, real_errors):
        torch.testing.assert_close(doubled, 2 * real)
    assert float(real_errors[0].abs().max()) > 0

    seen.clear()
    train_from_config({**base, "noise_level": [2.0, 2.0], "clean_fraction": 0.5,
                       "seed": 1}, tmp_path / "b", progress=False)
    windows = torch.cat([e for _, e in seen])
    clean = (windows.flatten(1).abs().amax(dim=1) == 0).float().mean()
    assert 0.2 < float(clean) < 0.8

    seen.clear()
    train_from_config({**base, "noise_level": [0.0, 0.0], "white_noise_mm": 10.0},
                      tmp_path / "c", progress=False)
    windows = torch.cat([e for _, e in seen])
    assert torch.all(windows[:, :, 0] == 0)
    per_window_std = windows[:, :, 1:].flatten(1).std(dim=1)
    assert float(per_window_std.max()) < 0.012 and float(per_window_std.min()) < 0.005
    assert float((per_window_std == 0).float().mean()) == 0      # every window jittered
    # white_noise_fraction: only that share of the windows is jittered, the rest exact
    seen.clear()
    train_from_config({**base, "noise_level": [0.0, 0.0], "white_noise_mm": 10.0,
                       "white_noise_fraction": 0.5}, tmp_path / "d", progress=False)
    windows = torch.cat([e for _, e in seen])
    exact = float((windows.flatten(1).abs().amax(dim=1) == 0).float().mean())
    assert 0.2 < exact < 0.8
    with pytest.raises(ConfigError, match="white_noise_fraction"):
        load_config({**MICRO, "white_noise_fraction": 1.5})
    with pytest.raises(ConfigError, match="noise_level"):
        load_config({**MICRO, "noise_level": [1.0, 0.5]})
    with pytest.raises(ConfigError, match="clean_fraction"):
        load_config({**MICRO, "clean_fraction": 1.0})


def test_clean_loss_weights_each_window_by_its_remaining_error():
    """loss: clean is the error loss times b_t^2 = 1 - abar_t: at small t little of the error
    is left in y_t, so little is asked of the prediction there."""
    from d3p_model.diffusion.schedule import cosine_alpha_bar
    from d3p_model.train import loop
    config = load_config({**MICRO, "noise": "real"})
    alpha_bar = cosine_alpha_bar(config["timesteps"], config["schedule_offset"])
    truth = torch.zeros(2, 5, 17, 3)
    pose = torch.ones(2, 5, 17, 3)
    keypoints = torch.zeros(2, 5, 17, 2)
    scale = torch.ones(17, 3)

    class Zero(torch.nn.Module):
        def forward(self, noisy, keypoints, t):
            self.t = t
            return torch.zeros_like(noisy)
    model = Zero()
    generator = torch.Generator().manual_seed(0)
    error_loss = loop._loss(model, (keypoints, pose, truth), None, scale, alpha_bar, config,
                            generator)
    assert float(error_loss) == pytest.approx(1.0)
    generator.manual_seed(0)
    clean_loss = loop._loss(model, (keypoints, pose, truth), None, scale, alpha_bar,
                            {**config, "loss": "clean"}, generator)
    expected = float((1 - alpha_bar[model.t]).mean())
    assert float(clean_loss) == pytest.approx(expected) and expected < 1
    with pytest.raises(ConfigError, match="loss"):
        load_config({**MICRO, "loss": "l1"})


def test_identity_windows_and_sparse_offsets(tmp_path, monkeypatch):
    """identity_fraction: windows with no error at all, jitter included; offset_fraction:
    constant-in-time offsets of at most offset_mm on 1..offset_joints non-root joints."""
    from d3p_model.train import loop
    seen = []
    real_forward = loop.forward_noisy_pose

    def spy(y0, error, t, alpha_bar):
        seen.append(error.clone())
        return real_forward(y0, error, t, alpha_bar)
    monkeypatch.setattr(loop, "forward_noisy_pose", spy)
    base = {**MICRO, "noise": "real", "optim": {"epochs": 1, "batch_size": 8},
            "data": {**MICRO["data"], "validation_fraction": 0.0}}
    train_from_config({**base, "noise_level": [0.0, 0.0], "offset_fraction": 1.0,
                       "offset_mm": 30.0, "offset_joints": 2}, tmp_path / "a", progress=False)
    windows = torch.cat(seen)
    assert torch.all(windows[:, :, 0] == 0)
    # constant over the window's frames
    torch.testing.assert_close(windows, windows[:, :1].expand_as(windows))
    moved = (windows[:, 0].norm(dim=-1) > 0).sum(dim=1)
    assert int(moved.min()) >= 1 and int(moved.max()) <= 2 and int(moved.max()) == 2
    assert float(windows.norm(dim=-1).max()) <= 0.030 + 1e-6

    seen.clear()
    train_from_config({**base, "white_noise_mm": 20.0, "offset_fraction": 0.5,
                       "identity_fraction": 0.5, "seed": 2}, tmp_path / "b", progress=False)
    windows = torch.cat(seen)
    exact = (windows.flatten(1).abs().amax(dim=1) == 0).float().mean()
    assert 0.2 < float(exact) < 0.8
    for bad in ({"identity_fraction": 1.0}, {"offset_fraction": 1.5}, {"offset_joints": 0},
                {"offset_mm": -1.0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            load_config({**MICRO, **bad})


def test_a_held_out_subject_is_the_validation_split(tmp_path):
    """data.validation_subjects holds out every take of those subjects and nothing else; a run
    continued from a model that trained on them is refused (the subject must be held out of
    the whole chain), one continued from a model that held them out too is not."""
    held = {**MICRO, "data": {**MICRO["data"], "validation_subjects": ["SYN2"]}}
    model_dir = train_from_config(held, tmp_path / "held", progress=False)
    keys = D3PRefiner.load(model_dir).info["training"]["validation_keys"]
    every = make_synthetic_predictions(**MICRO["data"]["train"]["synthetic"]).sequences
    assert sorted(keys) == sorted(k for k in every if k.startswith("SYN2/")) and keys
    train_from_config({**held, "init_from": str(model_dir)}, tmp_path / "continued",
                      progress=False)
    by_takes = train_from_config(MICRO, tmp_path / "takes", progress=False)
    assert not {k for k in every if k.startswith("SYN2/")} <= \
        set(D3PRefiner.load(by_takes).info["training"]["validation_keys"])
    with pytest.raises(ConfigError, match="held out of its source"):
        train_from_config({**held, "init_from": str(by_takes)}, tmp_path / "leaky",
                          progress=False)


@pytest.mark.parametrize("subjects, message", [
    (["S9"], "never a validation split"),
    (["SYN7"], "not in the training file"),
    (["SYN1", "SYN2", "SYN3"], "nothing to train on"),
    ([], "non-empty list"),
])
def test_validation_subjects_refusals(tmp_path, subjects, message):
    config = {**MICRO, "data": {**MICRO["data"], "validation_subjects": subjects}}
    with pytest.raises(ConfigError, match=message):
        train_from_config(config, tmp_path / "run", progress=False)
