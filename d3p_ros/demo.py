"""The demo: refiner node + replay + evaluator as three processes, before/after MPJPE.

    python -m d3p_ros.demo                   # GENERATED sample (never Human3.6M), tiny model
    python -m d3p_ros.demo FILE.npz          # replay a predictions file (shipped model)
    D3P_DATA=FILE.npz python -m d3p_ros.demo # the same through the environment
    D3P_DATA=.../h36m python -m d3p_ros.demo # S9/S11 lifter predictions from `d3p predict`

Every process gets the network rule (loopback discovery, its own ROS_DOMAIN_ID, a temporary
ROS_LOG_DIR). Exits 0 with the evaluator's summary when refined skeletons came back, 1
otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from d3p_ros.processes import (cache_dir, evaluator_command, node_command,
                               replay_command, ros_environment)


def find_predictions(arg: str | None, setting: str) -> str | None:
    """The file argument; else D3P_DATA: a predictions .npz, or the Human3.6M directory, in
    which case the test subjects' lifter predictions `d3p predict` wrote into the cache."""
    if arg:
        return arg
    data = os.environ.get("D3P_DATA")
    if not data:
        return None
    path = Path(data)
    if path.is_file():
        return str(path)
    if path.is_dir():
        test = cache_dir() / "predictions" / setting / "test.npz"
        if test.is_file():
            return str(test)
        raise SystemExit(f"demo: D3P_DATA={data} is set but {test} does not exist: run "
                         "`d3p predict` first (it reads D3P_DATA), or pass a predictions file")
    raise SystemExit(f"demo: D3P_DATA={data} does not exist")


def choose_model(model_arg: str, predictions: str | None, mode: str = "causal") -> str:
    """--model, else the node's shipped default for the mode (causal: the causal model).
    The generated sample is lifted by the shipped base lifter, so the shipped refiners
    (trained on that lifter's errors) apply to it too."""
    if model_arg:
        return model_arg
    from d3p_model.model_files import default_model_dir
    return str(default_model_dir(causal=mode == "causal"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="d3p_ros.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("predictions", nargs="?", help="predictions .npz (default: D3P_DATA, else a generated sample)")
    parser.add_argument("--model", default="", help="model directory (default: the shipped model)")
    parser.add_argument("--setting", default="sh2d", help="with D3P_DATA as the Human3.6M directory: "
                        "which cached predictions (sh2d: detected 2D, gt2d: ground-truth 2D)")
    parser.add_argument("--people", type=int, default=2, help="sequences replayed at once, one track each")
    parser.add_argument("--seconds", type=float, default=6.0, help="replayed duration at --rate")
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--mode", choices=("causal", "lagged"), default="causal")
    parser.add_argument("--backend", default="onnx", help="onnx (ONNX Runtime) or torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default="", help="write the evaluator's summary here")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    return parser


def _stop(process: subprocess.Popen, timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    predictions = find_predictions(args.predictions, args.setting)
    model = choose_model(args.model, predictions, args.mode)
    workdir = Path(tempfile.mkdtemp(prefix="d3p_demo_"))
    env = ros_environment(log_dir=str(workdir / "ros_log"))
    summary_path = Path(args.json) if args.json else workdir / "summary.json"
    frames = max(1, int(args.seconds * args.rate))
    print(f"demo: ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} (loopback only), logs in {workdir}", flush=True)
    print(f"demo: model {model}; data: {predictions or 'GENERATED sample (not Human3.6M)'}", flush=True)

    node_log = open(workdir / "refiner_node.log", "w")
    # Reliable, deep input queue: on a busy machine the demo's node falls behind rather than
    # dropping frames, so the summary covers the whole replay (the node's default is
    # best-effort input: a live robot wants the newest frame, not every frame).
    node = subprocess.Popen(node_command({"model_dir": model, "mode": args.mode, "backend": args.backend,
                                          "device": args.device, "input_qos": "reliable",
                                          "qos_depth": 1000}),
                            env=env, stdout=node_log, stderr=subprocess.STDOUT)
    evaluator = subprocess.Popen(evaluator_command(["--json", str(summary_path), "--print-every", "1",
                                                    "--idle-timeout", "3"]), env=env)
    replay_args = ["--people", str(args.people), "--frames", str(frames), "--rate", str(args.rate),
                   "--wait-subscribers", "2", "--wait-timeout", str(args.timeout)]
    if predictions:
        replay_args.insert(0, predictions)
    code = 1
    started = time.monotonic()
    try:
        replay = subprocess.run(replay_command(replay_args), env=env, timeout=args.timeout)
        if replay.returncode != 0:
            print(f"demo: replay failed ({replay.returncode}); node log: {workdir / 'refiner_node.log'}",
                  file=sys.stderr)
        # the evaluator ends by itself 3 s after the last refined frame arrived
        evaluator.wait(max(1.0, args.timeout - (time.monotonic() - started)))
    except subprocess.TimeoutExpired:
        print(f"demo: not finished after {args.timeout:.0f} s", file=sys.stderr)
    finally:
        _stop(evaluator)
        node_alive = node.poll() is None
        _stop(node)
        node_log.close()
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        ok = summary["matched_skeletons"] > 0 and summary["refined_non_finite"] == 0 and node_alive
        code = 0 if ok else 1
        if not node_alive:
            print(f"demo: the refiner node died; see {workdir / 'refiner_node.log'}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
