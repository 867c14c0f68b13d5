"""The ROS-free install (setup.py): a wheel of the checkout, installed without dependencies
into a fresh venv that has no rclpy, gives a working `d3p --help` and `import d3p_model`.

Offline: the wheel is built here with this venv's setuptools and installed with --no-index.
"""

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What setup.py packages: copied aside so the build writes nothing into the checkout.
PACKAGING = ["setup.py", "pyproject.toml", "d3p_model"]


def _clean_env():
    """os.environ without what ties a process to the development venv (its library path
    from the ROS wheels' bootstrap, a PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "LD_LIBRARY_PATH", "_ROS_WHEELS_BOOTSTRAP_COMPLETE",
                        "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(args, cwd, timeout=120):
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=_clean_env(), timeout=timeout,
                            capture_output=True, text=True)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def ros_free_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("ros_free")
    source = root / "source"
    source.mkdir()
    for name in PACKAGING:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    wheels = root / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", wheels, source], cwd=root)
    (wheel,) = wheels.glob("d3p-*.whl")

    # The interpreter this venv was made from, not the venv (which has rclpy).
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # This process's pip installs into the new venv, which therefore needs no pip of its own.
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index",
          "-q", wheel], cwd=root)
    return env_dir


def _data_files(package_dir: Path) -> set[str]:
    """The package data setup.py must ship: configs/*.yaml and everything in models/."""
    files = set(package_dir.glob("configs/*.yaml")) | set(package_dir.glob("models/**/*"))
    return {str(f.relative_to(package_dir)) for f in files
            if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc"}


def test_wheel_holds_d3p_model_with_its_data_and_no_ros(ros_free_venv):
    site = next((ros_free_venv / "lib").glob("python3*/site-packages"))
    assert (site / "d3p_model" / "cli.py").is_file()
    shipped = _data_files(REPO / "d3p_model")
    assert any(name.startswith("configs/") for name in shipped)
    assert _data_files(site / "d3p_model") == shipped
    assert not (site / "d3p_ros").exists()


def test_d3p_help_runs_without_ros(ros_free_venv, tmp_path):
    result = _run([ros_free_venv / "bin" / "d3p", "--help"], cwd=tmp_path)
    assert result.stdout.startswith("usage: d3p")
    for command in ("train", "refine", "evaluate", "predict", "smooth"):
        assert f"\n  {command} " in result.stdout


def test_d3p_model_imports_and_rclpy_does_not(ros_free_venv, tmp_path):
    python = ros_free_venv / "bin" / "python"
    result = _run([python, "-c", "import d3p_model, sys; print(d3p_model.__file__); "
                   "print('torch' in sys.modules)"], cwd=tmp_path)
    module_file, torch_loaded = result.stdout.split()
    assert Path(module_file).is_relative_to(ros_free_venv)  # the installed copy, not the checkout
    assert torch_loaded == "False"
    missing = subprocess.run([str(python), "-c", "import rclpy"], cwd=tmp_path, env=_clean_env(),
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0
    assert "No module named 'rclpy'" in missing.stderr
