#!/usr/bin/env python3
"""Distance to the hardware limit: the model's FLOPs per window next to the machine's
measured fp32 matrix-multiply peak.

1. Peak: torch.matmul of large square fp32 matrices with 1 and 2 threads, best of several
   calls, and ONNX Runtime on a MatMul-only graph; the machine's peak per thread count is the
   better of the two.
2. FLOPs of one K-step refinement of one window (`d3p_model.denoiser.flops.count_flops`:
   matrix products and attention; element-wise work is not counted) for T = 27/81/243,
   K = 1/2/5, and the ideal time per window at the peak.
3. Measured time per window per person: from the refine_latency results (--latency-json,
   default <output-dir>/refine_latency.json) if present, else measured now for T = 81
   (--profile-window), K = 2, 1 and 10 people. Fraction of peak = ideal / measured.
   With the stream results of the causal model (--stream-json, default
   <output-dir>/refine_latency_stream.json: refine_latency.py --causal), the same for its
   one-frame stream step (`count_stream_flops`).
4. What bounds it: the top entries of a torch.profiler and an ONNX Runtime profile of one
   T = 81 (--profile-window), K = 2, one-person refinement on 1 thread.

The models are those of common.model_for_window (T = 81: h36m_sh2d_t81_reproj; T = 27: the
shipped default; others: its architecture with random weights); a window whose model is not
trained yet is skipped (FLOPs row and profile), with the reason printed and in the results.

    .venv/bin/python benchmarks/hardware_limit.py          # after refine_latency.py
    .venv/bin/python benchmarks/hardware_limit.py --quick  # smoke run
Writes benchmarks/results/hardware_limit.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

import common

NAME = "hardware_limit"
PROFILE_WINDOW, PROFILE_STEPS = 81, 2     # the default window of the profiles


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048],
                        help="square matrix sizes for the matmul peak")
    parser.add_argument("--matmul-reps", type=int, default=5, help="calls per size (best kept)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--windows", type=int, nargs="+", default=[27, 81, 243])
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5])
    parser.add_argument("--latency-json", default=None,
                        help="refine_latency results to read (default: "
                             "<output-dir>/refine_latency.json; measured now if absent)")
    parser.add_argument("--stream-json", default=None,
                        help="refine_latency --causal results (default: <output-dir>/"
                             "refine_latency_stream.json; the section is left out if absent)")
    parser.add_argument("--profile-runs", type=int, default=10,
                        help="refinements in each profile (after warm-up)")
    parser.add_argument("--top", type=int, default=10, help="profile entries to publish")
    parser.add_argument("--profile-window", type=int, default=PROFILE_WINDOW,
                        help="T of the profiles and of a latency measured now")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.matmul_reps, args.profile_runs = [256], 2, 2
        args.windows, args.steps = [27, 81], [1, 2]
    if min(args.sizes + args.threads + args.windows + args.steps) < 1 or args.matmul_reps < 1 \
            or args.profile_runs < 1:
        parser.error("sizes, reps, threads, windows, steps and profile runs must be >= 1")
    return args


# ---------------------------------------------------------------- peak
def torch_matmul_gflops(size: int, threads: int, reps: int) -> float:
    import torch
    common.set_torch_threads(threads)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    torch.matmul(a, b)   # warm-up
    best = min(_duration(lambda: torch.matmul(a, b)) for _ in range(reps))
    return 2 * size ** 3 / best / 1e9


def ort_matmul_gflops(size: int, threads: int, reps: int) -> float:
    import numpy as np
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in "ab"]
    output = helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
                              inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = min(model.ir_version, 10)   # readable by older runtimes too
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {n: rng.standard_normal((size, size), dtype=np.float32) for n in "ab"}
    session.run(None, feed)
    best = min(_duration(lambda: session.run(None, feed)) for _ in range(reps))
    return 2 * size ** 3 / best / 1e9


def _duration(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure_peak(args) -> dict:
    """GFLOP/s per thread count: torch, ORT and the machine's (the better of the two)."""
    peak = {}
    for threads in args.threads:
        torch_best = {size: torch_matmul_gflops(size, threads, args.matmul_reps)
                      for size in args.sizes}
        ort_best = {size: ort_matmul_gflops(size, threads, args.matmul_reps)
                    for size in args.sizes}
        peak[str(threads)] = {
            "torch_gflops": max(torch_best.values()),
            "torch_size": max(torch_best, key=torch_best.get),
            "onnxruntime_gflops": max(ort_best.values()),
            "onnxruntime_size": max(ort_best, key=ort_best.get),
            "torch_gflops_by_size": {str(k): v for k, v in torch_best.items()},
            "onnxruntime_gflops_by_size": {str(k): v for k, v in ort_best.items()},
            "peak_gflops": max(*torch_best.values(), *ort_best.values())}
    return peak


# ---------------------------------------------------------------- FLOPs and measured time
def model_flops(windows, steps, scratch: Path) -> list[dict]:
    from d3p_model.denoiser.flops import count_flops
    from d3p_model.refiner import D3PRefiner
    rows = []
    for window in windows:
        model_dir, weights = common.model_for_window(window, scratch)
        config = D3PRefiner.load(model_dir).denoiser.config
        counted = count_flops(config, 1)    # a K-step refinement is K denoiser calls
        for k in steps:
            rows.append({"window": window, "steps": k, "weights": weights,
                         "config": config.to_dict(), "parameters": counted["parameters"],
                         "flops_per_call": counted["flops_per_call"],
                         "flops_per_refinement": counted["flops_per_call"] * k})
    return rows


def latency_cells(args, scratch: Path) -> tuple[list[dict], str]:
    """CPU cells of refine_latency: read from its results, or measured now."""
    path = Path(args.latency_json) if args.latency_json else \
        Path(args.output_dir) / "refine_latency.json"
    if path.is_file():
        cells = json.loads(path.read_text())["cells"]
        return [c for c in cells if c["device"] == "cpu"], str(path)
    import refine_latency
    print(f"{path} not found: measuring T = {args.profile_window}, K = {PROFILE_STEPS} now",
          file=sys.stderr)
    measured = scratch / "latency"
    arguments = ["--windows", str(args.profile_window), "--steps", str(PROFILE_STEPS),
                 "--threads", *[str(t) for t in args.threads], "--batches", "1", "10",
                 "--output-dir", str(measured)]
    if args.quick:
        arguments = ["--windows", str(args.profile_window), "--steps", str(PROFILE_STEPS),
                     "--threads", "1", "--batches", "1", "--seconds-per-cell", "0.2",
                     "--warmup", "1", "--output-dir", str(measured)]
    refine_latency.main(arguments)
    cells = json.loads((measured / "refine_latency.json").read_text())["cells"]
    return cells, "measured now (refine_latency.py " + " ".join(arguments[:-2]) + ")"


def fractions(cells, flops_rows, peak) -> list[dict]:
    flops = {(r["window"], r["steps"]): r["flops_per_refinement"] for r in flops_rows}
    rows = []
    for cell in cells:
        key = (cell["window"], cell["steps"])
        gflops = peak.get(str(cell["threads"]), {}).get("peak_gflops")
        if key not in flops or gflops is None:
            continue
        ideal_ms = flops[key] / (gflops * 1e9) * 1e3
        measured = cell["ms_per_window_per_person"]
        rows.append({"window": cell["window"], "steps": cell["steps"],
                     "backend": cell["backend"], "threads": cell["threads"],
                     "batch": cell["batch"], "flops_per_window": flops[key],
                     "peak_gflops": gflops, "ideal_ms_per_window": ideal_ms,
                     "measured_ms_per_window": measured,
                     "achieved_gflops": flops[key] / (measured / 1e3) / 1e9,
                     "fraction_of_peak": ideal_ms / measured})
    return rows


def stream_fractions(args, peak) -> dict | None:
    """The causal model's stream step: FLOPs per frame against its measured calls."""
    path = Path(args.stream_json) if args.stream_json else \
        Path(args.output_dir) / "refine_latency_stream.json"
    if not path.is_file():
        return None
    from d3p_model.denoiser.flops import count_stream_flops
    from d3p_model.model_files import DEFAULT_CAUSAL_MODEL, default_model_dir
    from d3p_model.refiner import D3PRefiner
    refiner = D3PRefiner.load(default_model_dir(causal=True))
    cells = [c for c in json.loads(path.read_text())["cells"] if c["device"] == "cpu"]
    rows = []
    for cell in cells:
        flops = count_stream_flops(refiner.denoiser.config, cell["steps"])
        gflops = peak.get(str(cell["threads"]), {}).get("peak_gflops")
        if gflops is None:
            continue
        measured = cell["ms_per_window_per_person"]
        ideal_ms = flops / (gflops * 1e9) * 1e3
        rows.append({"backend": cell["backend"], "threads": cell["threads"],
                     "batch": cell["batch"], "steps": cell["steps"], "flops_per_frame": flops,
                     "measured_ms_per_person": measured, "ideal_ms": ideal_ms,
                     "achieved_gflops": flops / (measured / 1e3) / 1e9,
                     "fraction_of_peak": ideal_ms / measured})
    return {"model": DEFAULT_CAUSAL_MODEL, "source": str(path), "rows": rows}


# ---------------------------------------------------------------- profiles
def profile_torch(window: int, runs: int, top: int, scratch: Path) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile
    from d3p_model.refiner import D3PRefiner
    model_dir, _ = common.model_for_window(window, scratch)
    common.set_torch_threads(1)
    refiner = D3PRefiner.load(model_dir)
    keypoints, poses = common.sample_windows(window, 1)
    for _ in range(3):
        refiner.refine_windows(keypoints, poses, steps=PROFILE_STEPS)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(runs):
            refiner.refine_windows(keypoints, poses, steps=PROFILE_STEPS)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    entries = [{"op": e.key, "percent": 100.0 * e.self_cpu_time_total / total,
                "calls_per_refinement": e.count / runs,
                "ms_per_refinement": e.self_cpu_time_total / 1e3 / runs}
               for e in events[:top]]
    return {"tool": f"torch.profiler {torch.__version__}, self CPU time, 1 thread",
            "runs": runs, "total_ms_per_refinement": total / 1e3 / runs, "entries": entries}


def profile_onnxruntime(window: int, runs: int, top: int, scratch: Path) -> dict:
    import onnxruntime as ort
    from d3p_model.export.runtime import OnnxRefiner
    model_dir, _ = common.model_for_window(window, scratch)
    onnx_file = OnnxRefiner.load(model_dir, steps=PROFILE_STEPS, num_threads=1,
                                 warn=lambda m: print(m, file=sys.stderr)).onnx_file
    # the session OnnxRefiner makes, with profiling on
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(scratch / "ort_profile")
    session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    keypoints, poses = common.sample_windows(window, 1)
    feed = {"keypoints_2d": keypoints, "pose_3d": poses}
    warmup = 3
    for _ in range(warmup + runs):
        session.run(None, feed)
    trace = json.loads(Path(session.end_profiling()).read_text())
    # warm-up runs are in the trace too: keep the node events of the last `runs` runs only
    run_starts = sorted(e["ts"] for e in trace if e.get("name") == "model_run")
    first_kept = run_starts[warmup] if len(run_starts) > warmup else 0
    per_op = collections.defaultdict(lambda: [0, 0])
    for event in trace:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time") \
                and event["ts"] >= first_kept:
            op = event.get("args", {}).get("op_name", event["name"])
            per_op[op][0] += event["dur"]
            per_op[op][1] += 1
    total = sum(v[0] for v in per_op.values())
    ranked = sorted(per_op.items(), key=lambda item: item[1][0], reverse=True)
    entries = [{"op": op, "percent": 100.0 * dur / total, "calls_per_refinement": calls / runs,
                "ms_per_refinement": dur / 1e3 / runs} for op, (dur, calls) in ranked[:top]]
    return {"tool": f"onnxruntime {ort.__version__} profiler, kernel time per op type, 1 thread",
            "onnx_file": str(onnx_file), "runs": runs,
            "total_ms_per_refinement": total / 1e3 / runs, "entries": entries}


# ---------------------------------------------------------------- report
def people(count: int) -> str:
    return "1 person" if count == 1 else f"{count} people"


def markdown(payload: dict) -> str:
    peak = payload["peak"]
    lines = [f"# Distance to the hardware limit ({NAME})", "",
             common.machine_line(payload["machine"]), "",
             "## Measured fp32 matrix-multiply peak (GFLOP/s, best of "
             f"{payload['settings']['matmul_reps']} calls)", "",
             common.markdown_table(
                 ["threads", "torch.matmul", "ORT MatMul", "peak used"],
                 [[t, f"{p['torch_gflops']:.1f} (n={p['torch_size']})",
                   f"{p['onnxruntime_gflops']:.1f} (n={p['onnxruntime_size']})",
                   f"{p['peak_gflops']:.1f}"] for t, p in peak.items()])]
    by_key = collections.defaultdict(list)
    for row in payload["fractions"]:
        by_key[(row["window"], row["steps"])].append(row)
    threads = list(peak)
    rows = []
    for flops in payload["flops"]:
        key = (flops["window"], flops["steps"])
        row = [flops["window"], flops["steps"], f"{flops['flops_per_refinement'] / 1e6:.0f}"]
        row += [f"{flops['flops_per_refinement'] / (peak[t]['peak_gflops'] * 1e9) * 1e3:.2f}"
                for t in threads]
        if by_key[key]:
            best = max(by_key[key], key=lambda r: r["fraction_of_peak"])
            row += [f"{best['measured_ms_per_window']:.2f} ({best['backend']}, "
                    f"{best['threads']} thr, {people(best['batch'])})",
                    f"{100 * best['fraction_of_peak']:.1f}%"]
        else:
            row += ["-", "-"]
        rows.append(row)
    lines += ["", "## FLOPs per window and fraction of peak", "",
              "FLOPs of one K-step refinement of one window (matrix products and attention; "
              "element-wise work not counted). Ideal = FLOPs / peak. Measured = median ms per "
              f"window per person, from {payload['latency_source']}; the best configuration "
              "is shown. Fraction of peak = ideal / measured: the distance to the hardware "
              "limit.", "",
              common.markdown_table(["T", "K", "MFLOPs"]
                                    + [f"ideal ms {t} thr" for t in threads]
                                    + ["best measured ms", "of peak"], rows)]
    profile_window = payload["settings"].get("profile_window", PROFILE_WINDOW)
    detail = [r for r in payload["fractions"]
              if (r["window"], r["steps"]) == (profile_window, PROFILE_STEPS)]
    if detail:
        lines += ["", f"## T = {profile_window}, K = {PROFILE_STEPS}, every configuration", "",
                  common.markdown_table(
                      ["backend", "threads", "people", "measured ms/window", "ideal ms",
                       "GFLOP/s reached", "of peak"],
                      [[r["backend"], r["threads"], r["batch"],
                        f"{r['measured_ms_per_window']:.2f}", f"{r['ideal_ms_per_window']:.2f}",
                        f"{r['achieved_gflops']:.2f}", f"{100 * r['fraction_of_peak']:.1f}%"]
                       for r in sorted(detail, key=lambda r: (r["backend"], r["threads"],
                                                              r["batch"]))])]
    stream = payload.get("stream")
    if stream and stream["rows"]:
        lines += ["", f"## Causal model {stream['model']}: one stream step (one new frame per "
                      "person)", "",
                  f"FLOPs of the one-frame K-step refinement from a full history (same "
                  f"counting); measured = median ms per call per person of `CausalStreams.refine`"
                  f" from {stream['source']} (the ring-buffer update included).", "",
                  common.markdown_table(
                      ["backend", "threads", "people", "K", "MFLOPs / frame",
                       "measured ms / person", "ideal ms", "GFLOP/s reached", "of peak"],
                      [[r["backend"], r["threads"], r["batch"], r["steps"],
                        f"{r['flops_per_frame'] / 1e6:.2f}",
                        f"{r['measured_ms_per_person']:.3f}", f"{r['ideal_ms']:.3f}",
                        f"{r['achieved_gflops']:.2f}", f"{100 * r['fraction_of_peak']:.1f}%"]
                       for r in sorted(stream["rows"], key=lambda r: (r["backend"],
                                                                      r["threads"],
                                                                      r["batch"]))])]
    for name, profile in payload["profiles"].items():
        lines += ["", f"## Profile: {name}, T = {profile_window}, K = {PROFILE_STEPS}, one "
                      f"person ({profile['tool']}; {profile['runs']} refinements, "
                      f"{profile['total_ms_per_refinement']:.1f} ms each)", "",
                  common.markdown_table(
                      ["op", "% time", "calls per refinement", "ms per refinement"],
                      [[e["op"], f"{e['percent']:.1f}", f"{e['calls_per_refinement']:g}",
                        f"{e['ms_per_refinement']:.2f}"] for e in profile["entries"]])]
    for skipped in payload.get("skipped_windows", []):
        lines += ["", f"Skipped: {skipped['reason']} (no FLOPs row"
                      + (", no profiles" if skipped["window"] == profile_window else "") + ")."]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    machine = common.machine_description()
    with tempfile.TemporaryDirectory(prefix="d3p-bench-") as scratch:
        scratch = Path(scratch)
        peak = measure_peak(args)
        windows = sorted(set(args.windows) | {args.profile_window})
        cells, source = latency_cells(args, scratch)
        steps = sorted(set(args.steps) | {c["steps"] for c in cells})
        windows = sorted(set(windows) | {c["window"] for c in cells})
        windows, skipped_windows = common.available_windows(windows)
        flops = model_flops(windows, steps, scratch)
        profiles = {}
        if args.profile_window in windows:
            profiles = {"torch": profile_torch(args.profile_window, args.profile_runs,
                                               args.top, scratch),
                        "onnxruntime": profile_onnxruntime(args.profile_window,
                                                           args.profile_runs, args.top,
                                                           scratch)}
    payload = {"benchmark": NAME, "machine": machine,
               "settings": {"sizes": args.sizes, "matmul_reps": args.matmul_reps,
                            "threads": args.threads, "windows": args.windows,
                            "steps": args.steps, "profile_runs": args.profile_runs,
                            "profile_window": args.profile_window, "quick": args.quick},
               "peak": peak, "flops": flops, "latency_source": source,
               "fractions": fractions(cells, flops, peak), "profiles": profiles,
               "stream": stream_fractions(args, peak),
               "skipped_windows": skipped_windows}
    common.write_results(args.output_dir, NAME, payload, markdown(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
