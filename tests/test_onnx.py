"""ONNX export of the K-step refinement: parity with PyTorch (< 0.1 mm), a self-contained file,
stale/missing exports handled, the onnx backend of the node and of `d3p refine`."""

import shutil

import numpy as np
import onnx
import pytest
import torch

from d3p_model.cli import main as d3p
from d3p_model.cnd import ConditionalNoiseModel
from d3p_model.data.predictions import load_predictions, save_predictions
from d3p_model.data.synthetic import make_synthetic_predictions
from d3p_model.denoiser import DenoiserConfig, PoseDenoiser
from d3p_model.export.onnx import META_SOURCE, export_model_dir, export_onnx, onnx_file_name
from d3p_model.export.runtime import CPU_BATCH_SIZE, OnnxRefiner
from d3p_model.refiner import D3PModelError, D3PRefiner, default_model_dir
from d3p_model.trust import limit_corrections
from d3p_ros.inference import create_backend

torch.set_num_threads(1)
TOLERANCE_M = 1e-4   # 0.1 mm


def generated_windows(window: int, batch: int, seed: int = 0):
    """Lifter-like windows from generated motion: real skeletons, a noisy 3D estimate."""
    predictions = make_synthetic_predictions(num_sequences=batch, num_frames=window, seed=seed)
    sequences = [s for _, s in predictions.items()]
    keypoints = np.stack([s.keypoints_normalised() for s in sequences]).astype(np.float32)
    pose = np.stack([s.pose_3d - s.pose_3d[:, :1] for s in sequences]).astype(np.float32)
    return keypoints, pose


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """An untrained refiner with two heads and a short window: exercises every op quickly."""
    root = tmp_path_factory.mktemp("onnx_model")
    predictions = make_synthetic_predictions(num_sequences=2, num_frames=40, seed=3)
    torch.manual_seed(0)
    train = [(s.keypoints_normalised(), s.pose_3d, s.ground_truth_3d) for _, s in predictions.items()]
    # every input feature (pose scale, bone vectors, reprojection residual, bone-length
    # change) and the output gate must export too
    denoiser = PoseDenoiser(DenoiserConfig(window=9, depth=2, width=16, heads=2,
                                           pose_scale=4.0, bone_inputs=True,
                                           reprojection_inputs=True, bone_length_inputs=True,
                                           output_gate=True))
    torch.nn.init.normal_(denoiser.gate.weight, std=0.5)   # a gate that is not 1 everywhere
    refiner = D3PRefiner(denoiser,
                         ConditionalNoiseModel.fit_sequences(train),
                         joint_uncertainty=np.linspace(0.01, 0.05, 17))
    refiner.save(root / "model")
    return root / "model"


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_shipped_model_parity(tmp_path, steps):
    refiner = D3PRefiner.load(default_model_dir())
    path = export_onnx(refiner, tmp_path / "r.onnx", steps)
    runtime = OnnxRefiner(path, num_threads=1)
    assert runtime.steps == steps and runtime.window == refiner.window
    for batch in (1, 10):   # one person, and ten (the batch axis is dynamic)
        keypoints, pose = generated_windows(refiner.window, batch, seed=steps)
        expected = refiner.refine_windows(keypoints, pose, steps=steps)
        got = runtime.refine_windows(keypoints, pose)
        assert got.shape == expected.shape == (batch, refiner.window, 17, 3)
        assert np.abs(got - expected).max() < TOLERANCE_M
        # the refinement really moved the poses: parity is not "both returned the input"
        assert np.abs(expected - pose).max() > 10 * TOLERANCE_M


def test_sequence_and_deterministic(small_model):
    refiner = D3PRefiner.load(small_model)
    runtime = OnnxRefiner.load(small_model, num_threads=1)
    predictions = make_synthetic_predictions(num_sequences=1, num_frames=31, seed=8)
    (_, seq), = predictions.items()
    pose = seq.pose_3d - seq.pose_3d[:, :1]
    for stride in (None, 4):
        expected = refiner.refine_sequence(seq.keypoints_normalised(), pose, stride=stride)
        got = runtime.refine_sequence(seq.keypoints_normalised(), pose, stride=stride, batch_size=3)
        assert np.abs(got - expected).max() < TOLERANCE_M
    again = runtime.refine_sequence(seq.keypoints_normalised(), pose, stride=4, batch_size=3)
    np.testing.assert_array_equal(again, got)


def test_the_models_inference_stride_is_saved_and_used_by_both_backends(small_model, tmp_path):
    """A model.json "stride" (overlapping windows at inference) is what refine_sequence
    uses by default, in PyTorch and in the ONNX export; models without it do not overlap."""
    refiner = D3PRefiner.load(small_model)
    assert refiner.stride == refiner.window          # saved before strides existed: none
    refiner.stride = 3
    refiner.save(tmp_path / "m")
    loaded = D3PRefiner.load(tmp_path / "m")
    runtime = OnnxRefiner.load(tmp_path / "m", num_threads=1)
    assert loaded.stride == runtime.stride == 3
    predictions = make_synthetic_predictions(num_sequences=1, num_frames=31, seed=9)
    (_, seq), = predictions.items()
    pose = seq.pose_3d - seq.pose_3d[:, :1]
    overlapped = loaded.refine_sequence(seq.keypoints_normalised(), pose)
    np.testing.assert_array_equal(overlapped, loaded.refine_sequence(
        seq.keypoints_normalised(), pose, stride=3))
    assert np.abs(overlapped - loaded.refine_sequence(seq.keypoints_normalised(), pose,
                                                      stride=9)).max() > 1e-5
    assert np.abs(runtime.refine_sequence(seq.keypoints_normalised(), pose)
                  - overlapped).max() < TOLERANCE_M
    spec = (tmp_path / "m" / "model.json").read_text()
    (tmp_path / "m" / "model.json").write_text(spec.replace('"stride": 3', '"stride": 99'))
    with pytest.raises(D3PModelError, match="stride"):
        D3PRefiner.load(tmp_path / "m")


def test_the_models_correction_threshold_is_saved_and_used_by_both_backends(small_model,
                                                                             tmp_path):
    """model.json "correction_threshold_mm" limits each joint's final correction, in PyTorch
    and ONNX Runtime alike, read from the model directory (the .onnx file is unchanged)."""
    refiner = D3PRefiner.load(small_model)
    assert refiner.correction_threshold == 0.0        # saved before thresholds existed
    predictions = make_synthetic_predictions(num_sequences=1, num_frames=31, seed=9)
    (_, seq), = predictions.items()
    pose = seq.pose_3d - seq.pose_3d[:, :1]
    raw = refiner.refine_sequence(seq.keypoints_normalised(), pose)
    threshold = float(np.median(np.linalg.norm(raw - pose, axis=-1)[:, 1:]))
    refiner.save(tmp_path / "m")
    export_model_dir(tmp_path / "m")          # exported without a threshold ...
    refiner.correction_threshold = threshold
    refiner.save(tmp_path / "m")              # ... and set afterwards: the file stays current
    loaded = D3PRefiner.load(tmp_path / "m")
    runtime = OnnxRefiner.load(tmp_path / "m", num_threads=1)
    assert loaded.correction_threshold == pytest.approx(threshold)
    assert runtime.correction_threshold == pytest.approx(threshold)
    expected = limit_corrections(pose, raw, threshold)
    limited = loaded.refine_sequence(seq.keypoints_normalised(), pose)
    np.testing.assert_allclose(limited, expected, atol=1e-6)
    assert np.abs(limited - raw).max() > 1e-4
    assert np.abs(runtime.refine_sequence(seq.keypoints_normalised(), pose)
                  - expected).max() < TOLERANCE_M
    np.testing.assert_array_equal(loaded.refine_sequence(seq.keypoints_normalised(), pose,
                                                         correction_threshold=0.0), raw)
    spec = (tmp_path / "m" / "model.json").read_text()
    (tmp_path / "m" / "model.json").write_text(
        spec.replace('"correction_threshold_mm": ', '"correction_threshold_mm": -'))
    with pytest.raises(D3PModelError, match="correction_threshold_mm"):
        D3PRefiner.load(tmp_path / "m")


def test_batch_size_defaults_per_backend(small_model):
    """refine_sequence batches windows by the backend's default (ONNX Runtime on the CPU:
    small, cache-sized batches; PyTorch: large) and the result does not depend on it."""
    runtime = OnnxRefiner.load(small_model, num_threads=1)
    refiner = D3PRefiner.load(small_model)
    assert runtime.default_batch_size == CPU_BATCH_SIZE == 16
    assert refiner.default_batch_size == 256
    predictions = make_synthetic_predictions(num_sequences=1, num_frames=200, seed=3)
    (_, seq), = predictions.items()
    pose = seq.pose_3d - seq.pose_3d[:, :1]
    by_default = runtime.refine_sequence(seq.keypoints_normalised(), pose, stride=3)
    in_one_call = runtime.refine_sequence(seq.keypoints_normalised(), pose, stride=3,
                                          batch_size=1000)
    assert np.abs(by_default - in_one_call).max() < 1e-6
    assert np.abs(by_default - refiner.refine_sequence(seq.keypoints_normalised(), pose,
                                                       stride=3)).max() < TOLERANCE_M


def test_bad_windows_are_refused_like_torch(small_model):
    runtime = OnnxRefiner.load(small_model)
    keypoints, pose = generated_windows(9, 2)
    with pytest.raises(ValueError, match=r"keypoints_2d must be \(B, 9, 17, 2\)"):
        runtime.refine_windows(keypoints[:, :5], pose[:, :5])
    pose[0, 3, 4, 1] = np.nan
    with pytest.raises(ValueError, match="finite"):
        runtime.refine_windows(keypoints, pose)


def test_file_is_self_contained(small_model, tmp_path):
    path = export_model_dir(small_model, steps=2, path=tmp_path / "alone.onnx")
    runtime = OnnxRefiner.load(onnx_file=path)
    refiner = D3PRefiner.load(small_model)
    np.testing.assert_allclose(runtime.joint_uncertainty, refiner.joint_uncertainty, rtol=1e-6)
    assert runtime.window == 9 and runtime.steps == 2 and runtime.providers == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="runs 2 DDIM steps, not 3"):
        OnnxRefiner.load(onnx_file=path, steps=3)


def test_missing_and_stale_exports_go_to_the_cache(small_model, tmp_path, monkeypatch):
    monkeypatch.setenv("D3P_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    warnings = []
    first = OnnxRefiner.load(model, steps=1, warn=warnings.append)
    assert first.onnx_file.parent.parent == tmp_path / "cache" / "onnx"
    assert any("does not exist: exporting" in w for w in warnings)
    # the file in the model directory is used once it matches the weights
    export_model_dir(model, steps=1)
    warnings.clear()
    assert OnnxRefiner.load(model, steps=1, warn=warnings.append).onnx_file == model / onnx_file_name(1)
    assert not warnings
    # new weights: the directory's file is stale, a fresh export from the new weights is used
    retrained = D3PRefiner.load(model)
    with torch.no_grad():
        retrained.denoiser.head.bias.add_(0.5)
    retrained.save(model)
    stale = OnnxRefiner.load(model, steps=1, warn=warnings.append)
    assert any("exported from other weights" in w for w in warnings)
    assert stale.onnx_file != model / onnx_file_name(1)
    keypoints, pose = generated_windows(9, 2)
    expected = D3PRefiner.load(model).refine_windows(keypoints, pose, steps=1)
    assert np.abs(stale.refine_windows(keypoints, pose) - expected).max() < TOLERANCE_M


def test_source_digest_is_recorded(small_model, tmp_path):
    path = export_model_dir(small_model, steps=1, path=tmp_path / "r.onnx")
    keys = {p.key for p in onnx.load(str(path)).metadata_props}
    assert META_SOURCE in keys


def test_not_a_model(tmp_path):
    with pytest.raises(D3PModelError, match="model directory does not exist"):
        OnnxRefiner.load(tmp_path / "nothing")
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(D3PModelError, match="not a readable ONNX model"):
        OnnxRefiner.load(onnx_file=tmp_path / "junk.onnx")


def test_node_backend(small_model):
    warnings = []
    backend = create_backend("onnx", small_model, device="cuda", fp16=True, steps=1,
                             num_threads=1, warn=warnings.append)
    torch_backend = create_backend("torch", small_model, steps=1, num_threads=1)
    assert backend.name == "onnx" and backend.steps == 1 and backend.window == 9
    import onnxruntime
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert backend.device == "cpu" and backend.precision == "fp32"
        assert any("no CUDA provider" in w for w in warnings)
    np.testing.assert_allclose(backend.joint_uncertainty, torch_backend.joint_uncertainty)
    keypoints, pose = generated_windows(9, 3)
    assert np.abs(backend.refine(keypoints, pose) - torch_backend.refine(keypoints, pose)).max() < TOLERANCE_M
    backend.close()
    with pytest.raises(ValueError, match="device must be"):
        create_backend("onnx", small_model, device="tpu")


def test_export_and_refine_cli(small_model, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(small_model, model)
    assert d3p(["export", "--model", str(model), "--steps", "1", "2"]) == 0
    out = capsys.readouterr().out
    assert "max difference to PyTorch" in out
    assert (model / "refiner_k1.onnx").is_file() and (model / "refiner_k2.onnx").is_file()
    assert d3p(["export", "--model", str(model), "--steps", "1", "2", "-o", str(tmp_path / "x.onnx")]) == 2
    assert d3p(["export", "--model", str(tmp_path / "missing")]) == 2

    predictions = make_synthetic_predictions(num_sequences=2, num_frames=23, seed=4)
    save_predictions(tmp_path / "in.npz", predictions)
    for backend in ("torch", "onnx"):
        assert d3p(["refine", str(tmp_path / "in.npz"), "-o", str(tmp_path / f"{backend}.npz"),
                    "--model", str(model), "--backend", backend, "--threads", "1",
                    "--no-progress"]) == 0
    # two worker processes: the same sequences, the same numbers, in the file's order
    assert d3p(["refine", str(tmp_path / "in.npz"), "-o", str(tmp_path / "jobs.npz"),
                "--model", str(model), "--backend", "onnx", "--jobs", "2", "--no-progress"]) == 0
    by_torch = load_predictions(tmp_path / "torch.npz")
    by_onnx = load_predictions(tmp_path / "onnx.npz")
    by_jobs = load_predictions(tmp_path / "jobs.npz")
    assert by_onnx.meta["refined_by"]["backend"] == "onnx"
    assert list(by_jobs.sequences) == list(by_onnx.sequences)
    for key, seq in by_torch.items():
        assert np.abs(by_onnx.sequences[key].pose_3d - seq.pose_3d).max() < TOLERANCE_M
        np.testing.assert_allclose(by_jobs.sequences[key].pose_3d, by_onnx.sequences[key].pose_3d,
                                   atol=1e-6)
    assert d3p(["refine", str(tmp_path / "in.npz"), "-o", str(tmp_path / "x.npz"),
                "--model", str(model), "--jobs", "0"]) == 2


def test_shipped_exports_are_current():
    """The committed refiner_k2.onnx files were exported from the committed weights; the
    default model carries one."""
    from d3p_model.refiner import DEFAULT_MODEL
    shipped = sorted(default_model_dir().parent.parent.glob("*/model/refiner_k*.onnx"))
    names = {path.parent.parent.name for path in shipped}
    assert DEFAULT_MODEL in names, names
    for name in names:
        model = default_model_dir().parent.parent / name / "model"
        warnings = []
        runtime = OnnxRefiner.load(model, warn=warnings.append)
        assert runtime.onnx_file == model / onnx_file_name(2) and not warnings, warnings


def test_the_onnx_runtime_path_runs_without_torch(tmp_path):
    """`d3p refine --backend onnx` and the node's onnx backend need numpy and onnxruntime
    only: importing torch would cost each process about 1.4 s and 250 MB for nothing."""
    import subprocess
    import sys
    data = tmp_path / "in.npz"
    save_predictions(data, make_synthetic_predictions(num_sequences=2, num_frames=40, seed=2))
    script = (
        "import sys\n"
        "from d3p_model.cli import main\n"
        f"assert main(['refine', {str(data)!r}, '-o', {str(tmp_path / 'out.npz')!r}, "
        "'--backend', 'onnx', '--no-progress']) == 0\n"
        "import numpy as np\n"
        "from d3p_ros.inference import create_backend\n"
        "from d3p_model.model_files import default_model_dir\n"
        "backend = create_backend('onnx', default_model_dir(), num_threads=1)\n"
        "window = np.zeros((1, backend.window, 17, 2), np.float32)\n"
        "assert np.all(np.isfinite(backend.refine(window, np.zeros((1, backend.window, 17, 3), "
        "np.float32))))\n"
        # the causal mode's default: the node's streams over the stream graph
        "from d3p_model.causal_stream import CausalStreams\n"
        "causal = create_backend('onnx', default_model_dir(causal=True), num_threads=1)\n"
        "streams = CausalStreams(causal.stream_step, causal.history_shape)\n"
        "for seq in range(3):\n"
        "    (out,) = streams.refine([(1, [(seq, np.zeros((17, 2), np.float32), "
        "np.zeros((17, 3), np.float32), 0)])])\n"
        "    assert out.shape == (17, 3) and np.all(np.isfinite(out))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert load_predictions(tmp_path / "out.npz").meta["refined_by"]["backend"] == "onnx"
