"""A missing or corrupt model fails the node's configure with a message naming the file.

With autostart (the default, as the launch file starts it) a failed configure ends the
process with status 1, so a launch or a supervisor sees it at once.
"""

import os
import shutil
import subprocess

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("d3p_ros.msg", reason="messages not built (run scripts/setup.sh)")

from d3p_ros.processes import ensure_demo_model, node_command  # noqa: E402

pytestmark = pytest.mark.timeout(600)  # the first test may train the demo model


def run_node(env, overrides) -> subprocess.CompletedProcess:
    return subprocess.run(node_command(overrides), env=env, capture_output=True, text=True, timeout=120)


def test_missing_model_dir_fails_configure(tmp_path, ros_env):
    missing = tmp_path / "no_such_model"
    result = run_node(ros_env, {"model_dir": str(missing)})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "configure failed" in output and str(missing) in output and "does not exist" in output


def test_corrupt_weights_fail_configure(tmp_path, ros_env):
    model = tmp_path / "model"
    shutil.copytree(ensure_demo_model(), model)
    weights = sorted(p for p in model.iterdir() if p.suffix in (".pt", ".pth"))
    assert weights, f"no weights file in {list(model.iterdir())}"
    weights[0].write_bytes(b"not a torch file")
    result = run_node(ros_env, {"model_dir": str(model)})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "configure failed" in output and weights[0].name in output


def test_bad_mode_fails_configure(ros_env):
    result = run_node(ros_env, {"model_dir": str(ensure_demo_model()), "mode": "sideways"})
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "parameter 'mode'" in output, output


def test_backend_choice_and_cuda_fallback():
    import numpy as np
    import torch
    from d3p_ros.inference import create_backend
    model = ensure_demo_model()
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'"):
        create_backend("tensorrt", model)
    warnings = []
    backend = create_backend("torch", model, device="cuda", fp16=True, steps=1, warn=warnings.append)
    if torch.cuda.is_available():
        assert backend.device.startswith("cuda") and backend.precision == "fp16"
    else:
        assert backend.device == "cpu" and backend.precision == "fp32"
        assert any("CUDA is not available" in w for w in warnings)
        assert any("fp16" in w for w in warnings)
    assert backend.steps == 1 and backend.joint_uncertainty.shape == (17,)
    windows = np.zeros((3, backend.window, 17, 2), np.float32), np.zeros((3, backend.window, 17, 3), np.float32)
    assert backend.refine(*windows).shape == (3, backend.window, 17, 3)
    backend.close()
    with pytest.raises(ValueError, match="device must be"):
        create_backend("torch", model, device="tpu")


def test_missing_onnxruntime_fails_configure_saying_how_to_install_it(tmp_path, ros_env):
    # Issue 14, defect 9: on a robot nothing in the rosdep/colcon path installs ONNX Runtime,
    # which the default backend needs; the error must say what to do.
    blocker = tmp_path / "no_onnxruntime" / "onnxruntime"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'onnxruntime'\", name='onnxruntime')\n")
    env = {**ros_env, "PYTHONPATH": os.pathsep.join(
        [str(blocker.parent)] + [p for p in [ros_env.get("PYTHONPATH")] if p])}
    result = run_node(env, {"model_dir": str(ensure_demo_model()), "backend": "onnx"})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "configure failed" in output and "pip install onnxruntime" in output, output
    assert "python3-onnxruntime-pip" in output and "backend:=torch" in output, output
