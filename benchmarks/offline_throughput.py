#!/usr/bin/env python3
"""Offline throughput: `d3p refine`-style refinement of every sequence of a predictions file.

For each model (T = 81: common.T81_MODEL, h36m_sh2d_t81_reproj; T = 27: the shipped default,
d3p_model.refiner.DEFAULT_MODEL; a model not trained yet is skipped, with the reason printed
and in the results), K = 2, each stride
(non-overlapping, stride = T; the model's own inference stride, model.json, 21 for the
shipped model: the one behind the published accuracy; and stride T / 3, 9, the one before
it) and each backend (torch, onnx) with 2 threads and
the backend's batch size (as `d3p refine`): total frames, windows, wall seconds, frames per
second and times real time per camera stream (Human3.6M is 50 Hz: fps / 50). Target of
issue 15: >= 200x real time at the published accuracy.

Timed per configuration: what `d3p refine` does per sequence (normalise the 2D keypoints,
make the pose root-relative, `refine_sequence`), over all sequences, after one warm-up batch.
Loading the file is not timed. Each backend runs in a fresh interpreter (thread settings do
not leak). `--processes P` refines every P-th sequence in each of P processes at once (each
with --threads threads; the wall time runs from the first start to the last end): on a
small CPU, P single-thread processes may beat one P-thread process, whose small kernels
spend their time synchronising threads.

    .venv/bin/python benchmarks/offline_throughput.py     # cache/predictions/sh2d/test.npz
    .venv/bin/python benchmarks/offline_throughput.py --processes 2 --threads 1
    .venv/bin/python benchmarks/offline_throughput.py --predictions FILE [--quick]
Writes benchmarks/results/offline_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import common

NAME = "offline_throughput"
BACKENDS = ("torch", "onnx")
DEFAULT_PREDICTIONS = common.REPO / "cache" / "predictions" / "sh2d" / "test.npz"
TARGET_X_REALTIME = 200.0


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", default=str(DEFAULT_PREDICTIONS),
                        help="predictions .npz to refine (default: the cached Human3.6M test "
                             "set, cache/predictions/sh2d/test.npz, made by `d3p predict`)")
    parser.add_argument("--windows", type=int, nargs="+", default=[81, 27],
                        help="models by window T (27: the shipped default, 81: "
                             "h36m_sh2d_t81_reproj)")
    parser.add_argument("--steps", type=int, default=2, help="DDIM steps K")
    parser.add_argument("--overlap-divisor", type=int, default=3,
                        help="also run overlapping windows with stride T / this (0: only "
                             "non-overlapping windows)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    parser.add_argument("--processes", type=int, default=1,
                        help="refine in P processes at once, each on every P-th sequence "
                             "(default 1: one process, as `d3p refine` runs)")
    parser.add_argument("--batch-size", type=int, default=0,
                        help="windows per batch (0: the backend's default, as `d3p refine`: "
                             "16 for onnx on the CPU, 256 otherwise)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--max-sequences", type=int, default=0,
                        help="only the first N sequences (sorted keys; 0: all, the benchmark)")
    parser.add_argument("--fps", type=float, default=common.H36M_FPS,
                        help="camera frame rate for 'times real time' (Human3.6M: 50)")
    common.add_common_arguments(parser)
    parser.add_argument("--worker-result", help=argparse.SUPPRESS)
    parser.add_argument("--worker-backend", help=argparse.SUPPRESS)
    parser.add_argument("--worker-shard", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--worker-barrier", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        # one thread: a smoke run must not stall on a busy machine's OpenMP barriers
        args.windows, args.threads = [27], 1
        args.max_sequences = args.max_sequences or 4
    if min(args.windows) < 1 or min(args.steps, args.threads, args.processes) < 1:
        parser.error("--windows, --steps, --threads and --processes must be >= 1")
    if args.batch_size < 0:
        parser.error("--batch-size must be >= 0 (0: the backend's default)")
    if args.overlap_divisor < 0 or args.max_sequences < 0:
        parser.error("--overlap-divisor and --max-sequences must be >= 0")
    return args


def strides_for(window: int, model_stride: int, overlap_divisor: int) -> list[int]:
    """Non-overlapping windows, the model's own stride, and T / overlap_divisor (if > 1),
    coarsest first, each once."""
    strides = {window, model_stride}
    if overlap_divisor > 1 and window // overlap_divisor >= 1:
        strides.add(window // overlap_divisor)
    return sorted(strides, reverse=True)


def selected_sequences(predictions, max_sequences: int) -> list:
    keys = sorted(key for key, _ in predictions.items())
    if max_sequences:
        keys = keys[:max_sequences]
    return [predictions.sequences[key] for key in keys]


def wait_for_all(barrier: Path, name: str, shard: int, shards: int, timeout_s=900.0) -> None:
    """Start a configuration in all P worker processes together: each marks itself ready
    and waits for the others (one process: returns at once)."""
    if shards == 1:
        return
    (barrier / f"{name}.{shard}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(barrier.glob(f"{name}.*"))) < shards:
        if time.monotonic() > deadline:
            raise RuntimeError(f"worker {shard}: the other workers did not reach {name}")
        time.sleep(0.005)


def run_backend(args) -> dict:
    """Worker: every (model, stride) configuration with one backend, on this worker's share
    of the sequences (every P-th, from the shard index)."""
    import numpy as np
    from tqdm import tqdm

    from d3p_model.data.predictions import load_predictions
    from d3p_model.data.windows import window_starts

    predictions = load_predictions(args.predictions)   # not timed
    sequences = selected_sequences(predictions, args.max_sequences)
    sequences = sequences[args.worker_shard::args.processes]
    barrier = Path(args.worker_barrier) if args.worker_barrier else None
    runs = []
    with tempfile.TemporaryDirectory(prefix="d3p-bench-") as scratch:
        for window in args.windows:
            model_dir, weights = common.model_for_window(window, Path(scratch))
            refiner, providers = common.load_refiner(args.worker_backend, model_dir, args.steps,
                                                     args.device, args.threads)
            batch_size = args.batch_size or refiner.default_batch_size
            # warm-up: first-call allocation and graph set-up are not throughput
            first = sequences[0]
            refiner.refine_sequence(first.keypoints_normalised()[:window],
                                    (first.pose_3d - first.pose_3d[:, :1])[:window])
            for stride in strides_for(window, int(refiner.stride), args.overlap_divisor):
                windows = sum(len(window_starts(seq.num_frames, window, stride))
                              for seq in sequences)
                wait_for_all(barrier, f"t{window}_s{stride}", args.worker_shard, args.processes)
                # wall clock: the parent compares the processes' start and end times
                start = time.time()
                for seq in tqdm(sequences, desc=f"{args.worker_backend} T={window} "
                                f"stride={stride}", dynamic_ncols=True,
                                disable=args.worker_shard > 0):
                    refined = refiner.refine_sequence(seq.keypoints_normalised(),
                                                      seq.pose_3d - seq.pose_3d[:, :1],
                                                      stride=stride, batch_size=batch_size)
                end = time.time()
                if not np.all(np.isfinite(refined)):
                    raise RuntimeError(f"{args.worker_backend} T={window}: non-finite output")
                runs.append({"backend": args.worker_backend, "device": args.device,
                             "providers": providers, "threads": args.threads,
                             "window": window, "steps": args.steps, "stride": stride,
                             "model_stride": int(refiner.stride),
                             "batch_size": batch_size, "weights": weights,
                             "sequences": len(sequences),
                             "frames": sum(seq.num_frames for seq in sequences),
                             "windows": windows, "start": start, "end": end})
    return {"runs": runs}


def merge_shards(shard_runs: list[list[dict]], processes: int, fps_camera: float) -> list[dict]:
    """One row per configuration from the P workers' rows: frames and windows add up, the
    wall time runs from the first start to the last end."""
    merged = []
    for rows in zip(*shard_runs):
        first = rows[0]
        assert all((r["window"], r["stride"]) == (first["window"], first["stride"])
                   for r in rows)
        wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
        frames = sum(r["frames"] for r in rows)
        windows = sum(r["windows"] for r in rows)
        fps = frames / wall
        run = {k: v for k, v in first.items() if k not in ("start", "end")}
        run.update({"processes": processes, "sequences": sum(r["sequences"] for r in rows),
                    "frames": frames, "windows": windows, "wall_s": wall,
                    "frames_per_s": fps, "windows_per_s": windows / wall,
                    "x_realtime_per_stream": fps / fps_camera,
                    "meets_target": fps / fps_camera >= TARGET_X_REALTIME})
        merged.append(run)
    return merged


def run_processes(args, backend: str, predictions: Path, scratch: Path) -> list[dict]:
    """The P workers of one backend, started together; a failing one stops the others."""
    barrier = scratch / f"barrier_{backend}"
    barrier.mkdir()
    arguments = ["--predictions", str(predictions), "--windows", *[str(w) for w in args.windows],
                 "--steps", str(args.steps), "--max-sequences", str(args.max_sequences),
                 "--overlap-divisor", str(args.overlap_divisor), "--threads", str(args.threads),
                 "--processes", str(args.processes), "--batch-size", str(args.batch_size),
                 "--device", args.device, "--fps", str(args.fps), "--worker-backend", backend,
                 "--worker-barrier", str(barrier)]
    started = [common.start_worker(Path(__file__), arguments + ["--worker-shard", str(shard)],
                                   args.threads, scratch / f"{backend}_{shard}.json")
               for shard in range(args.processes)]
    try:
        results = [common.finish_worker(worker)["runs"] for worker in started]
    finally:
        for process, _, _ in started:
            if process.poll() is None:
                process.terminate()
                process.wait()
    return merge_shards(results, args.processes, args.fps)


def procs_threads(settings: dict) -> str:
    threads = f"{settings['threads']} thread{'s' if settings['threads'] > 1 else ''}"
    if settings.get("processes", 1) == 1:
        return threads
    return (f"{settings['processes']} processes at once (every P-th sequence each) with "
            f"{threads} each")


def batch_text(payload: dict) -> str:
    """The batch sizes the runs used (0 on the command line: each backend's default)."""
    sizes = sorted({(r["backend"], r["batch_size"]) for r in payload["runs"]})
    return ", ".join(f"{size} ({backend})" for backend, size in sizes) or "-"


def markdown(payload: dict) -> str:
    settings = payload["settings"]
    rows = [[r["window"], f"{r['stride']} (the model's)" if r["stride"] == r.get("model_stride")
             else r["stride"], r["backend"], r["windows"], r["frames"],
             f"{r['wall_s']:.1f}", f"{r['frames_per_s']:.0f}",
             f"{r['x_realtime_per_stream']:.0f}x", "yes" if r["meets_target"] else "no"]
            for r in payload["runs"]]
    lines = [f"# Offline throughput ({NAME})", "", common.machine_line(payload["machine"]), "",
             f"`d3p refine`-style refinement of {payload['sequences']} of the "
             f"{payload['sequences_in_file']} sequences of "
             f"`{settings['predictions']}` ({payload['frames']} frames), K = "
             f"{settings['steps']}, {procs_threads(settings)}, batches of "
             f"{batch_text(payload)} windows, file loading not timed. Times real time = "
             f"frames/s / {settings['fps']:g} Hz (one camera stream); target >= "
             f"{TARGET_X_REALTIME:g}x.", "",
             common.markdown_table(["T", "stride", "backend", "windows", "frames", "wall s",
                                    "frames/s", "x real time", f">= {TARGET_X_REALTIME:g}x"], rows)]
    for skipped in payload["skipped"]:
        lines += ["", f"Skipped: {skipped['backend']} on {skipped['device']}: "
                      f"{skipped['reason']}."]
    for skipped in payload.get("skipped_windows", []):
        lines += ["", f"Skipped: {skipped['reason']}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    if args.worker_result:
        Path(args.worker_result).write_text(json.dumps(run_backend(args)))
        return 0
    predictions = Path(args.predictions)
    if not predictions.is_file():
        print(f"offline_throughput: error: {predictions} does not exist. The default is the "
              "Human3.6M test set as the base lifter predicts it: make it with `d3p predict` "
              "(docs/lifter.md; needs the data in D3P_DATA), or pass --predictions FILE (any "
              "file in the predictions format, docs/predictions-format.md).", file=sys.stderr)
        return 2
    from d3p_model.data.predictions import PredictionsFormatError, load_predictions
    try:   # checked here, so a bad file is one clear error rather than a worker's traceback
        loaded = load_predictions(predictions)
    except PredictionsFormatError as err:
        print(f"offline_throughput: error: {err}", file=sys.stderr)
        return 2
    selected = selected_sequences(loaded, args.max_sequences)
    sequences, frames = len(selected), sum(seq.num_frames for seq in selected)
    total_sequences = len(loaded)
    if args.processes > sequences:
        print(f"offline_throughput: error: --processes {args.processes} is more than the "
              f"{sequences} sequences to refine", file=sys.stderr)
        return 2
    del loaded, selected
    machine = common.machine_description()
    runs, skipped = [], []
    requested = list(args.windows)
    args.windows, skipped_windows = common.available_windows(requested)
    with tempfile.TemporaryDirectory(prefix="d3p-bench-") as scratch:
        for backend in (args.backends if args.windows else []):
            reason = common.device_missing(args.device, backend)
            if reason:
                print(f"skipping {backend} on {args.device}: {reason}", file=sys.stderr)
                skipped.append({"device": args.device, "backend": backend, "reason": reason})
                continue
            runs += run_processes(args, backend, predictions, Path(scratch))
    payload = {"benchmark": NAME, "machine": machine,
               "settings": {"predictions": str(predictions), "windows": requested,
                            "steps": args.steps, "overlap_divisor": args.overlap_divisor,
                            "backends": args.backends, "threads": args.threads,
                            "processes": args.processes, "batch_size": args.batch_size,
                            "device": args.device, "fps": args.fps, "quick": args.quick,
                            "max_sequences": args.max_sequences,
                            "target_x_realtime": TARGET_X_REALTIME},
               "sequences": sequences, "sequences_in_file": total_sequences, "frames": frames,
               "runs": runs, "skipped": skipped, "skipped_windows": skipped_windows}
    common.write_results(args.output_dir, NAME, payload, markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
