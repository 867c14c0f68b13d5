#!/usr/bin/env python3
"""Latency of one refinement: a batch of B windows (B people), T frames each, K DDIM steps.

The matrix: T = 27/81/243 x K = 1/2/5 x backend {torch, onnx} x threads {1, 2} x B {1, 10},
on the CPU (and on CUDA with --devices cpu cuda where there is one: a missing GPU is
reported and skipped). Each (device, backend, threads) group runs in a fresh interpreter so
thread settings cannot leak between groups. A cell calls the backend's public
`refine_windows` (input checks and numpy conversion included, as the node calls it) after
warm-up calls, repeated until --seconds-per-cell is spent (at least --min-reps times).

T = 27 uses the shipped default (d3p_model.refiner.DEFAULT_MODEL) and T = 81 the detected-2D
T = 81 refiner (common.T81_MODEL, h36m_sh2d_t81_reproj); a window whose model is not trained yet
is skipped, with the reason printed and in the results. T = 243 uses
the shipped default's architecture with random weights (timing only). Inputs are generated
windows.

    .venv/bin/python benchmarks/refine_latency.py             # the full matrix, ~10 min
    .venv/bin/python benchmarks/refine_latency.py --quick     # smoke run, seconds
    .venv/bin/python benchmarks/refine_latency.py --busy-cpus 1 --name refine_latency_busy
    .venv/bin/python benchmarks/refine_latency.py --pause-ms 20 --name refine_latency_paced
    .venv/bin/python benchmarks/refine_latency.py --causal --windows 27 --name refine_latency_stream
With --causal a cell times what the node's causal mode calls with a causal model (the
shipped DEFAULT_CAUSAL_MODEL): one new frame per person through `CausalStreams.refine`, from
the histories of the frames before (the model call plus the ring-buffer update), T being
the model's attention band.
Writes benchmarks/results/refine_latency.{json,md}.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import common

NAME = "refine_latency"
BACKENDS = ("torch", "onnx")


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, nargs="+", default=[27, 81, 243],
                        help="window lengths T (frames)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5], help="DDIM steps K")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="CPU threads (torch.set_num_threads / ORT intra_op_num_threads)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10],
                        help="windows per call (people)")
    parser.add_argument("--devices", nargs="+", choices=("cpu", "cuda"), default=["cpu"],
                        help="cuda: torch on CUDA, onnx with the CUDA/TensorRT providers; "
                             "skipped with a message where absent")
    parser.add_argument("--seconds-per-cell", type=float, default=4.0,
                        help="time budget of the repetitions of one cell")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up calls per cell")
    parser.add_argument("--min-reps", type=int, default=3)
    parser.add_argument("--max-reps", type=int, default=500)
    common.add_common_arguments(parser)
    # internal: one (device, backend, threads) group, run by the parent in a fresh process
    parser.add_argument("--busy-cpus", type=int, default=0,
                        help="keep N other CPUs busy (one pure-Python spinning process each) "
                             "while timing: what the call costs when the node's other threads, "
                             "DDS or another process use the second core")
    parser.add_argument("--pause-ms", type=float, default=0.0,
                        help="sleep between timed calls (0: back to back); 20 = one call per "
                             "frame at 50 Hz, as the node's causal mode calls it")
    parser.add_argument("--causal", action="store_true",
                        help="time the causal model's one-frame stream step (T = 27 only)")
    parser.add_argument("--name", default=NAME, help="results file name (default: %(default)s)")
    parser.add_argument("--worker-result", help=argparse.SUPPRESS)
    parser.add_argument("--worker-backend", help=argparse.SUPPRESS)
    parser.add_argument("--worker-device", help=argparse.SUPPRESS)
    parser.add_argument("--worker-scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.windows, args.steps, args.threads, args.batches = [27], [2], [1], [1, 2]
        args.seconds_per_cell, args.warmup, args.min_reps = 0.1, 1, 3
    for name in ("windows", "steps", "threads", "batches"):
        if min(getattr(args, name)) < 1:
            parser.error(f"--{name} must all be >= 1")
    if args.busy_cpus < 0 or args.pause_ms < 0:
        parser.error("--busy-cpus and --pause-ms must be >= 0")
    if args.causal and args.windows != [27]:
        parser.error("--causal: the causal model has T = 27 (--windows 27)")
    return args


def stream_call(refiner, keypoints, poses):
    """A call as the node's causal mode makes it with a causal model: each person's next
    frame through CausalStreams (histories filled by the calls before)."""
    from d3p_model.causal_stream import CausalStreams
    streams = CausalStreams(refiner.stream_step, refiner.history_shape())
    frames = keypoints.shape[1]
    seq = [0]

    def call():
        i = seq[0]
        streams.refine([(person, [(i, keypoints[person, i % frames],
                                   poses[person, i % frames], 0)])
                        for person in range(len(keypoints))])
        seq[0] += 1
    return call


@contextlib.contextmanager
def busy_cpus(count: int):
    """`count` processes spinning in pure Python for the duration (killed after)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(count)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def run_group(args) -> dict:
    """Worker: every (T, K, B) cell of one (device, backend, threads) group."""
    from tqdm import tqdm
    threads = args.threads[0]
    scratch = Path(args.worker_scratch)
    cells = []
    todo = [(t, k) for t in args.windows for k in args.steps]
    progress = tqdm(total=len(todo) * len(args.batches), dynamic_ncols=True,
                    desc=f"{args.worker_device} {args.worker_backend} {threads} thr")
    for window in args.windows:
        model_dir, weights = common.model_for_window(window, scratch)
        if args.causal:
            from d3p_model.model_files import DEFAULT_CAUSAL_MODEL, default_model_dir
            model_dir, weights = default_model_dir(causal=True), DEFAULT_CAUSAL_MODEL
        keypoints, poses = common.sample_windows(window, max(args.batches))
        for steps in args.steps:
            refiner, providers = common.load_refiner(args.worker_backend, model_dir, steps,
                                                     args.worker_device, threads)
            for batch in args.batches:
                kp, pose = keypoints[:batch], poses[:batch]
                call = (stream_call(refiner, kp, pose) if args.causal
                        else lambda: refiner.refine_windows(kp, pose))
                timing = common.time_call(call,
                                          budget_s=args.seconds_per_cell, warmup=args.warmup,
                                          min_reps=args.min_reps, max_reps=args.max_reps,
                                          pause_s=args.pause_ms / 1000.0)
                cells.append({"device": args.worker_device, "backend": args.worker_backend,
                              "threads": threads, "window": window, "steps": steps,
                              "batch": batch, "weights": weights, "providers": providers,
                              **timing,
                              "ms_per_window_per_person": timing["median_ms"] / batch,
                              # above the usable CPUs: other jobs competed, a noisy cell
                              "load_average_1min": round(os.getloadavg()[0], 2)})
                progress.update()
    progress.close()
    return {"cells": cells}


def groups(args):
    for device in args.devices:
        for backend in args.backends:
            # threads matter for the CPU side only: one group on a GPU
            for threads in (args.threads if device == "cpu" else [max(args.threads)]):
                yield device, backend, threads


def group_arguments(args, device, backend, threads, scratch) -> list[str]:
    listed = lambda values: [str(v) for v in values]  # noqa: E731
    return ["--windows", *listed(args.windows), "--steps", *listed(args.steps),
            "--batches", *listed(args.batches), "--threads", str(threads),
            "--seconds-per-cell", str(args.seconds_per_cell), "--warmup", str(args.warmup),
            "--min-reps", str(args.min_reps), "--max-reps", str(args.max_reps),
            "--pause-ms", str(args.pause_ms), *(["--causal"] if args.causal else []),
            "--worker-backend", backend, "--worker-device", device,
            "--worker-scratch", str(scratch)]


def load_note(payload: dict) -> str:
    loads = [c["load_average_1min"] for c in payload["cells"] if "load_average_1min" in c]
    if not loads:
        return ""
    return (f" 1-minute load average during the cells: {min(loads):.1f} to {max(loads):.1f} "
            f"on {payload['machine']['usable_cpus']} usable CPUs (it counts the benchmark's "
            "own threads; above the usable CPUs other jobs competed for the cores and the "
            "cell is an upper bound).")


def busy_note(payload: dict) -> str:
    settings = payload["settings"]
    busy, pause = settings.get("busy_cpus", 0), settings.get("pause_ms", 0)
    return ((f" **{busy} other CPU(s) kept busy** by spinning processes during every cell "
             "(`--busy-cpus`)." if busy else "")
            + (f" **{pause:g} ms of sleep between calls** (`--pause-ms`: one call per frame, "
               "as the node's causal mode)." if pause else ""))


def markdown(payload: dict) -> str:
    cells = payload["cells"]
    columns = sorted({(c["device"], c["backend"], c["threads"]) for c in cells},
                     key=lambda g: (g[0], BACKENDS.index(g[1]), g[2]))
    keys = sorted({(c["window"], c["steps"], c["batch"]) for c in cells})
    lookup = {(c["device"], c["backend"], c["threads"], c["window"], c["steps"], c["batch"]): c
              for c in cells}
    names = [f"{b} {d} {t} thr" if d != "cpu" or len({g[0] for g in columns}) > 1
             else f"{b} {t} thr" for d, b, t in columns]

    def table(value):
        rows = []
        for window, steps, batch in keys:
            row = [window, steps, batch]
            for group in columns:
                cell = lookup.get((*group, window, steps, batch))
                row.append(value(cell) if cell else "-")
            rows.append(row)
        return common.markdown_table(["T", "K", "people"] + names, rows)

    lines = [f"# Refinement latency ({NAME})", "", common.machine_line(payload["machine"])]
    if cells and payload["settings"].get("causal"):
        lines += ["", "**Causal model, streamed** (`--causal`): each cell is one "
                  "`CausalStreams.refine` call, the next frame of each person refined alone "
                  "from its history, as the node's causal mode calls it; T is the model's "
                  "attention band."]
    if cells:
        reps = [c["reps"] for c in cells]
        lines += [
             "", "Latency of one `refine_windows` call on a batch of windows (one per person), "
             "median / p99 in ms. T = 243 uses random weights (timing only); T = 27/81 the "
             f"trained models. {min(reps)} to {max(reps)} repetitions per cell after warm-up "
             f"(time-bounded: {payload['settings']['seconds_per_cell']} s per cell; with fewer "
             "than 100 repetitions p99 is close to the maximum)." + load_note(payload)
             + busy_note(payload), "",
             table(lambda c: f"{c['median_ms']:.1f} / {c['p99_ms']:.1f}"), "",
             "Per window per person (median ms / people):", "",
             table(lambda c: f"{c['ms_per_window_per_person']:.2f}")]
    for skipped in payload["skipped"]:
        lines += ["", f"Skipped: {skipped['backend']} on {skipped['device']}: "
                      f"{skipped['reason']}."]
    for skipped in payload.get("skipped_windows", []):
        lines += ["", f"Skipped: {skipped['reason']}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    if args.worker_result:
        Path(args.worker_result).write_text(json.dumps(run_group(args)))
        return 0
    machine = common.machine_description()
    cells, skipped = [], []
    requested = list(args.windows)
    args.windows, skipped_windows = common.available_windows(requested)
    with tempfile.TemporaryDirectory(prefix="d3p-bench-") as scratch, \
            busy_cpus(args.busy_cpus):
        scratch = Path(scratch)
        for device, backend, threads in (groups(args) if args.windows else []):
            reason = common.device_missing(device, backend)
            if reason:
                if not any(s["device"] == device and s["backend"] == backend for s in skipped):
                    print(f"skipping {backend} on {device}: {reason}", file=sys.stderr)
                    skipped.append({"device": device, "backend": backend, "reason": reason})
                continue
            result = common.run_worker(Path(__file__), group_arguments(args, device, backend,
                                                                       threads, scratch),
                                       threads, scratch / f"{device}_{backend}_{threads}.json")
            cells += result["cells"]
    payload = {"benchmark": args.name, "machine": machine,
               "settings": {"windows": requested, "steps": args.steps,
                            "backends": args.backends, "threads": args.threads,
                            "batches": args.batches, "devices": args.devices,
                            "seconds_per_cell": args.seconds_per_cell, "warmup": args.warmup,
                            "min_reps": args.min_reps, "max_reps": args.max_reps,
                            "quick": args.quick, "busy_cpus": args.busy_cpus,
                            "pause_ms": args.pause_ms, "causal": args.causal,
                            "input": "generated windows (d3p_model.data.synthetic)"},
               "cells": cells, "skipped": skipped, "skipped_windows": skipped_windows}
    common.write_results(args.output_dir, args.name, payload, markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
