"""Speed of one PoseDenoiser call on this machine: PyTorch eager vs ONNX Runtime (CPU).

For every window T, batch B (people) and thread count it times the denoiser of the refiner:
at T = 27 the shipped default (d3p_model.refiner.DEFAULT_MODEL), at T = 81 the detected-2D
refiner h36m_sh2d_t81_reproj (common.trained_models; a window whose model is not trained yet is
skipped, with the reason printed and in the results), at any other T the shipped default's
architecture with seeded random weights (speed does not depend on the values).
Calls alternate the two steps of a K=2 DDIM refinement (t = 50, 25), so besides the median
and p99 per call it reports the time of one K=2 window (two calls back to back; the DDIM
arithmetic between them is a few microseconds and not included).

The ONNX model is exported here with the legacy exporter (dynamo=False, opset 18, dynamic
batch) and run with the CPUExecutionProvider; its output is checked against PyTorch.

    .venv/bin/python benchmarks/denoiser_speed.py                 # everything (~10 min idle)
    .venv/bin/python benchmarks/denoiser_speed.py --windows 81 --batches 1 --seconds 5
    .venv/bin/python benchmarks/denoiser_speed.py --quick         # checks the script only

Writes benchmarks/results/denoiser_speed.json and .md (or --output-dir). The CPU may be
shared: the load average before and after is recorded, and medians are what to compare.
Threads are switched inside one process (torch.set_num_threads, ORT intra_op_num_threads).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile
import time

import numpy as np

import common   # benchmarks/common.py: puts this checkout first on sys.path

REPO = common.REPO
STEPS = (50, 25)   # the two steps of the default K=2 refinement


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[27, 81, 243])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx"],
                        choices=["torch", "onnx"])
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="time budget per configuration (at least --min-calls calls)")
    parser.add_argument("--min-calls", type=int, default=20)
    parser.add_argument("--max-calls", type=int, default=2000)
    parser.add_argument("--output-dir", type=pathlib.Path, default=common.DEFAULT_OUTPUT_DIR)
    parser.add_argument("--name", default="denoiser_speed", help="output file stem")
    parser.add_argument("--quick", action="store_true",
                        help="T=27, batch 1, 1 thread, a few calls: checks the script works; "
                             "its numbers mean nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.windows, args.batches, args.threads = [27], [1], [1]
        args.seconds, args.min_calls = 0.0, 2
    return args


def load_denoiser(window: int):
    """(denoiser, where it is from) for this window: its trained model (common.trained_models)
    or, at another T, the shipped default's architecture with seeded random weights."""
    import dataclasses

    import torch

    from d3p_model.denoiser import PoseDenoiser
    from d3p_model.refiner import D3PRefiner, default_model_dir
    trained = common.trained_models()
    if window in trained:
        name, model_dir = trained[window]
        return D3PRefiner.load(model_dir).denoiser.eval(), f"trained {name}"
    torch.manual_seed(0)
    source = D3PRefiner.load(default_model_dir()).denoiser.config
    config = dataclasses.replace(source, window=window)
    return PoseDenoiser(config).eval(), (f"random weights, the shipped default's architecture "
                                         f"(depth {config.depth}, width {config.width}, "
                                         f"{config.heads} heads)")


def make_inputs(batch: int, window: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    noisy = (0.3 * rng.normal(size=(batch, window, 17, 3))).astype(np.float32)
    keypoints = rng.uniform(-1, 1, (batch, window, 17, 2)).astype(np.float32)
    return noisy, keypoints


def export_onnx(denoiser, window: int, path: pathlib.Path) -> None:
    import torch
    noisy, keypoints = (torch.from_numpy(a) for a in make_inputs(2, window))
    t = torch.full((2,), STEPS[0], dtype=torch.long)
    batch_axis = {0: "batch"}
    torch.onnx.export(denoiser, (noisy, keypoints, t), str(path), dynamo=False,
                      opset_version=18, input_names=["noisy_pose", "keypoints_2d", "t"],
                      output_names=["error"],
                      dynamic_axes={"noisy_pose": batch_axis, "keypoints_2d": batch_axis,
                                    "t": batch_axis, "error": batch_axis})


def time_calls(call, args: argparse.Namespace) -> np.ndarray:
    """Seconds per call; calls alternate STEPS; an even count so pairs make K=2 windows."""
    for step in STEPS * 2:   # warm-up: allocator, kernel selection, ORT arenas
        call(step)
    times = []
    started = time.perf_counter()
    while len(times) < args.max_calls and (len(times) < args.min_calls
                                           or time.perf_counter() - started < args.seconds):
        for step in STEPS:
            begin = time.perf_counter()
            call(step)
            times.append(time.perf_counter() - begin)
    return np.asarray(times)


def summary(times: np.ndarray) -> dict:
    windows = times[0::2] + times[1::2]
    ms = lambda a, q: float(np.percentile(a, q) * 1e3)  # noqa: E731
    return {"calls": int(times.size), "call_median_ms": ms(times, 50),
            "call_p99_ms": ms(times, 99), "window_k2_median_ms": ms(windows, 50),
            "window_k2_p99_ms": ms(windows, 99)}


def bench_torch(denoiser, noisy, keypoints, threads, args) -> dict:
    import torch
    torch.set_num_threads(threads)
    noisy_t, keypoints_t = torch.from_numpy(noisy), torch.from_numpy(keypoints)
    steps = {s: torch.full((noisy.shape[0],), s, dtype=torch.long) for s in STEPS}

    def call(step):
        with torch.inference_mode():
            return denoiser(noisy_t, keypoints_t, steps[step])
    return summary(time_calls(call, args))


def bench_onnx(path, noisy, keypoints, threads, args) -> dict:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    steps = {s: np.full((noisy.shape[0],), s, dtype=np.int64) for s in STEPS}

    def call(step):
        return session.run(None, {"noisy_pose": noisy, "keypoints_2d": keypoints,
                                  "t": steps[step]})
    return summary(time_calls(call, args))


def onnx_parity(denoiser, path, window: int) -> float:
    """Max |ORT - torch| of the normalised error on a batch of 3 random windows."""
    import onnxruntime as ort
    import torch
    noisy, keypoints = make_inputs(3, window, seed=1)
    t = np.array([50, 25, 1], dtype=np.int64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_out,) = session.run(None, {"noisy_pose": noisy, "keypoints_2d": keypoints, "t": t})
    with torch.inference_mode():
        torch_out = denoiser(torch.from_numpy(noisy), torch.from_numpy(keypoints),
                             torch.from_numpy(t)).numpy()
    return float(np.abs(onnx_out - torch_out).max())


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = ["# PoseDenoiser speed (one call; K=2 window = two calls)", "",
             f"CPU {machine['cpu_model']} ({machine['usable_cpus']} usable), torch "
             f"{machine['versions']['torch']}, onnxruntime {machine['versions']['onnxruntime']}, "
             f"commit {machine['git_commit']}, {machine['date_utc']}; load average at start "
             f"{machine['load_average_at_start'][0]:.2f}, at end "
             f"{machine['load_average_at_end'][0]:.2f}.", "",
             "| backend | T | batch | threads | call median ms | call p99 ms "
             "| K=2 window median ms | K=2 window p99 ms | calls |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in result["rows"]:
        lines.append(f"| {row['backend']} | {row['window']} | {row['batch']} | {row['threads']} "
                     f"| {row['call_median_ms']:.2f} | {row['call_p99_ms']:.2f} "
                     f"| {row['window_k2_median_ms']:.2f} | {row['window_k2_p99_ms']:.2f} "
                     f"| {row['calls']} |")
    lines += ["", "Models: " + "; ".join(f"T={w}: {m}" for w, m in result["models"].items()),
              "ONNX vs torch max abs difference (normalised error): "
              + "; ".join(f"T={w}: {d:.1e}" for w, d in result["onnx_max_abs_diff"].items()),
              *[f"Skipped: {s['reason']}." for s in result.get("skipped_windows", [])],
              "", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch
    from tqdm import tqdm
    torch.manual_seed(0)
    result = {"machine": common.machine_description(), "command": " ".join(sys.argv),
              "settings": {k: (str(v) if isinstance(v, pathlib.Path) else v)
                           for k, v in vars(args).items()},
              "models": {}, "onnx_max_abs_diff": {}, "rows": []}
    args.windows, result["skipped_windows"] = common.available_windows(args.windows)
    configs = [(w, b, n, backend) for w in args.windows for b in args.batches
               for n in args.threads for backend in args.backends]
    with tempfile.TemporaryDirectory() as tmp, tqdm(total=len(configs), unit="config") as bar:
        for window in args.windows:
            denoiser, origin = load_denoiser(window)
            result["models"][window] = origin
            onnx_path = pathlib.Path(tmp) / f"denoiser_t{window}.onnx"
            if "onnx" in args.backends:
                export_onnx(denoiser, window, onnx_path)
                result["onnx_max_abs_diff"][window] = onnx_parity(denoiser, onnx_path, window)
            for batch in args.batches:
                noisy, keypoints = make_inputs(batch, window)
                for threads in args.threads:
                    for backend in args.backends:
                        bar.set_description(f"{backend} T={window} B={batch} x{threads}")
                        if backend == "torch":
                            stats = bench_torch(denoiser, noisy, keypoints, threads, args)
                        else:
                            stats = bench_onnx(onnx_path, noisy, keypoints, threads, args)
                        result["rows"].append({"backend": backend, "window": window,
                                               "batch": batch, "threads": threads, **stats})
                        bar.update()
    result["machine"]["load_average_at_end"] = [round(v, 2) for v in os.getloadavg()]
    if args.quick:
        result["quick"] = "a smoke run: the numbers mean nothing"
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (args.output_dir / f"{args.name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
