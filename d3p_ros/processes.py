"""Starting the d3p nodes as separate processes: environment, commands, the demo model.

Shared by the demo and the node tests so both start the node exactly as the launch file
does: the `refiner_node` executable (or `python -m d3p_ros.refiner_node` from a checkout)
with `config/refiner.yaml`, plus `-p name:=value` overrides.
"""

from __future__ import annotations

import fcntl
import os
import random
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TINY_CONFIG = "synthetic_tiny.yaml"


def ros_environment(domain_id: int | None = None, log_dir: str | None = None) -> dict:
    """The network rule: loopback-only discovery, a domain of our own, logs in a temp dir."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_DOMAIN_ID"] = str(domain_id if domain_id is not None else random.randint(1, 101))
    env["ROS_LOG_DIR"] = log_dir or tempfile.mkdtemp(prefix="d3p_roslog_")
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("RCUTILS_COLORIZED_OUTPUT", "0")
    return env


def config_file() -> Path:
    """config/refiner.yaml: the checkout's, else the installed package's share dir."""
    local = REPO_ROOT / "config" / "refiner.yaml"
    if local.is_file():
        return local
    from ament_index_python.packages import get_package_share_directory
    return Path(get_package_share_directory("d3p_ros")) / "config" / "refiner.yaml"


def _executable(name: str, module: str) -> list[str]:
    # The installed launcher runs the installed package; from a checkout the source modules
    # are the ones under test, so prefer `python -m` when the checkout is importable.
    if (REPO_ROOT / "d3p_ros" / f"{module.rsplit('.', 1)[-1]}.py").is_file():
        return [sys.executable, "-m", module]
    installed = Path(sys.prefix) / "lib" / "d3p_ros" / name
    if installed.is_file():
        return [str(installed)]
    return [sys.executable, "-m", module]


def node_command(overrides: dict | None = None, params_file: Path | None = None,
                 namespace: str = "") -> list[str]:
    """The refiner node's command line, as launch/refiner.launch.py starts it."""
    cmd = _executable("refiner_node", "d3p_ros.refiner_node")
    cmd += ["--ros-args", "--params-file", str(params_file or config_file())]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for name, value in (overrides or {}).items():
        if isinstance(value, bool):
            value = str(value).lower()
        cmd += ["-p", f"{name}:={value}"]
    return cmd


def replay_command(args: list[str]) -> list[str]:
    return _executable("replay", "d3p_ros.replay") + list(args)


def evaluator_command(args: list[str]) -> list[str]:
    return _executable("evaluator", "d3p_ros.evaluator_node") + list(args)


def cache_dir() -> Path:
    return Path(os.environ.get("D3P_CACHE", REPO_ROOT / "cache"))


def ensure_demo_model(log=print) -> Path:
    """A tiny refiner trained on GENERATED data (configs/synthetic_tiny.yaml), trained once
    into the cache (about a minute on one core) and reused while it loads."""
    from d3p_model.refiner import D3PModelError, D3PRefiner

    root = cache_dir() / "demo_model"
    model_dir = root / "model"
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / "demo_model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # parallel tests/demos: one trains, the others wait
        try:
            D3PRefiner.load(model_dir)
            return model_dir
        except D3PModelError:
            pass
        import shutil

        from d3p_model.train.loop import train_from_config
        log(f"training the tiny demo model on GENERATED data into {root} (once, about a minute)")
        shutil.rmtree(root, ignore_errors=True)
        config = REPO_ROOT / "d3p_model" / "configs" / TINY_CONFIG
        trained = train_from_config(str(config), root, progress=False)
        return Path(trained)
