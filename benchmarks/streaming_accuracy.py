#!/usr/bin/env python3
"""What streaming costs in accuracy: the node's window modes against offline `d3p refine`.

For every --sequence-stride-th sequence of a predictions file with ground truth (default: the
cached Human3.6M test set, S9/S11, detected 2D, `d3p predict`), each mode streams the
sequence through the node's own window logic (`d3p_ros.windows.WindowManager`, one person,
50 Hz stamps, a worker that keeps up: every due window refined, in the order the node would)
and the same model refines it offline (`refine_sequence`, the model's stride). Modes:
  causal             lag 0: every frame refined in the window that ends at it;
  lagged:L[:S]       lag L, a window every S frames (default: the model's stride), blended;
  stale:N            a design measured and not built: the newest frame published at once
                     with the causal correction of the frame N before it (the call hidden
                     behind the next frame);
  stream             causal mode with a causal model (--causal-model, default the node's
                     causal default): each frame refined alone from its stream's history,
                     through the node's own CausalStreams; its "offline" column is still
                     --model's offline refinement, the published results.
Reported per mode, over the frames it published: MPJPE of the lifter, of the stream and of
offline refinement on the same frames (mm, frame mean), the paired difference stream -
offline, the acceleration error of each (mm / frame^2, mean over joints and over frames
whose neighbours were published too: what a controller learning from the motion sees as
jerk), the share of frames published (a stream does not publish a sequence's last L..L+S-1
frames: the node counts them when the track ends), windows refined per frame, and the latency
in frames. No timing here: node_latency.py measures milliseconds.

    .venv/bin/python benchmarks/streaming_accuracy.py                  # causal, lagged:13, lagged:26
    .venv/bin/python benchmarks/streaming_accuracy.py --modes causal lagged:26:9 --sequence-stride 4
Writes benchmarks/results/streaming_accuracy.{json,md}.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import common  # also puts this checkout first on sys.path

NAME = "streaming_accuracy"
DEFAULT_PREDICTIONS = common.REPO / "cache" / "predictions" / "sh2d" / "test.npz"
PERIOD_NS = 20_000_000      # Human3.6M: 50 Hz


def parse_mode(text: str, window: int, model_stride: int) -> dict:
    parts = text.split(":")
    if parts[0] == "causal" and len(parts) == 1:
        return {"name": "causal", "lag": 0, "stride": 1, "stale": 0}
    if parts[0] == "stream" and len(parts) == 1:
        return {"name": "causal, causal model (streamed)", "lag": 0, "stride": 1, "stale": 0,
                "stream": True}
    if parts[0] == "stale" and len(parts) == 2 and int(parts[1]) >= 1:
        frames = int(parts[1])
        return {"name": f"causal, correction {frames} frame(s) old", "lag": 0, "stride": 1,
                "stale": frames}
    if parts[0] == "lagged" and len(parts) in (2, 3):
        lag = int(parts[1])
        stride = int(parts[2]) if len(parts) == 3 else model_stride
        if not 1 <= lag < window or not 1 <= stride <= window:
            raise ValueError(f"mode {text!r}: lag must be in 1..{window - 1}, stride in 1..{window}")
        return {"name": f"lagged L={lag} s={stride}", "lag": lag, "stride": stride, "stale": 0}
    raise ValueError(f"mode {text!r}: expected causal, lagged:LAG[:STRIDE], stale:N or stream")


def parse_arguments(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", default=str(DEFAULT_PREDICTIONS),
                        help="predictions .npz with ground_truth_3d (default: the cached "
                             "Human3.6M test set, made by `d3p predict`)")
    parser.add_argument("--model", default=None, help="model directory (default: the shipped one)")
    parser.add_argument("--causal-model", default=None,
                        help="causal model for the stream mode (default: the node's causal-mode "
                             "default, d3p_model.model_files.DEFAULT_CAUSAL_MODEL)")
    parser.add_argument("--modes", nargs="+", default=["causal", "lagged:13", "lagged:26"],
                        help="causal, lagged:LAG[:STRIDE] (stride default: the model's), "
                             "stale:N (causal correction N frames old), stream (causal model)")
    parser.add_argument("--validation", action="store_true",
                        help="the model's own validation split instead of --predictions "
                             "(model.json info.training.validation_keys, from its training "
                             "file: takes of the training subjects, never S9/S11): for "
                             "choosing between designs without the test set")
    parser.add_argument("--sequence-stride", type=int, default=8, metavar="K",
                        help="every K-th sequence (sorted by key); 1 = all")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="onnx")
    parser.add_argument("--name", default=NAME, help="results file stem (default %(default)s)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    common.add_common_arguments(parser)      # --output-dir, --quick
    args = parser.parse_args(argv)
    if args.sequence_stride < 1:
        parser.error("--sequence-stride must be >= 1")
    return args


def stream(refine_windows, keypoints, pose, window: int, lag: int, stride: int,
           batch_size: int, correction_threshold: float = 0.0) -> tuple[dict, int]:
    """Push a sequence through WindowManager as the node does (each joint's blended correction
    soft-thresholded by the model's `correction_threshold`, metres, as the node passes it);
    returns {frame: refined pose} and the number of windows refined."""
    import numpy as np

    from d3p_ros.windows import WindowManager
    manager = WindowManager(window, lag, track_timeout=3600.0, max_gap=3600.0, stride=stride)
    visible = np.ones(keypoints.shape[1], bool)
    taken = []
    for i in range(len(pose)):
        manager.push(1, i * PERIOD_NS, keypoints[i], visible, pose[i], payload=i)
        ready, skipped = manager.take_ready()
        if skipped:
            raise AssertionError(f"a worker that keeps up skipped {skipped} frame(s)")
        taken += ready
    published = {}
    for first in range(0, len(taken), batch_size):
        chunk = taken[first:first + batch_size]
        refined = refine_windows(np.stack([w.keypoints_2d for w in chunk]),
                                 np.stack([w.pose_3d for w in chunk]))
        for w, out in zip(chunk, refined):       # in the order they were taken
            frames, uncovered = manager.complete(w, out, correction_threshold)
            if uncovered:
                raise AssertionError(f"{uncovered} frame(s) published without a window")
            published.update({frame.payload: value for frame, value in frames})
    return published, len(taken)


def stream_causal_model(refiner, keypoints, pose) -> tuple[dict, int]:
    """A causal model through the node's CausalStreams, one frame per call, each frame's
    correction soft-thresholded as the node does; returns {frame: refined pose}, calls."""
    from d3p_model.causal_stream import CausalStreams
    from d3p_model.trust import limit_corrections
    streams = CausalStreams(refiner.stream_step, refiner.history_shape())
    published = {}
    for i in range(len(pose)):
        (out,) = streams.refine([(1, [(i, keypoints[i], pose[i], 0)])])
        published[i] = limit_corrections(pose[i], out, refiner.correction_threshold)
    return published, len(pose)


def with_stale_correction(published: dict, pose, frames_old: int) -> dict:
    """{frame: pose(t) + the correction published for frame t - frames_old}."""
    return {i + frames_old: pose[i + frames_old] + (out - pose[i])
            for i, out in published.items() if i + frames_old < len(pose)}


def acceleration_error(estimate, truth) -> tuple[float, int]:
    """Summed per-frame acceleration error (mm / frame^2, joint mean; the metric of
    `d3p evaluate`) and its frame count, over contiguous frames."""
    from d3p_model.evaluate.metrics import acceleration_error_per_frame
    if len(estimate) < 3:
        return 0.0, 0
    error = acceleration_error_per_frame(estimate, truth)
    return 1000 * float(error.sum()), len(error)


def main(argv=None) -> int:
    args = parse_arguments(argv)
    import numpy as np

    from d3p_model.data.predictions import PredictionsFormatError, load_predictions
    from d3p_model.refiner import default_model_dir
    model_dir = Path(args.model) if args.model else default_model_dir()
    validation_keys = None
    if args.validation:
        from d3p_model.model_files import read_model_spec
        from d3p_model.train.config import validation_split
        try:
            path, keys = validation_split(read_model_spec(model_dir)["info"])
        except ValueError as err:
            print(f"streaming_accuracy: {err}", file=sys.stderr)
            return 2
        args.predictions, validation_keys = str(path), set(keys)
    try:
        predictions = load_predictions(args.predictions)
    except PredictionsFormatError as err:
        print(f"streaming_accuracy: {err} (the test set: `d3p predict --setting sh2d --split "
              "test`)", file=sys.stderr)
        return 2
    keys = sorted(k for k, s in predictions.items() if s.ground_truth_3d is not None
                  and (validation_keys is None or k in validation_keys))
    keys = keys[::args.sequence_stride][:2 if args.quick else None]
    if not keys:
        print("streaming_accuracy: no sequence with ground_truth_3d", file=sys.stderr)
        return 2
    from d3p_model.model_files import read_model_spec
    steps = int(read_model_spec(model_dir)["steps"])         # the model's K
    refiner, providers = common.load_refiner(args.backend, model_dir, steps=steps,
                                             device="cpu", threads=args.threads)
    window, model_stride = int(refiner.window), int(refiner.stride)
    modes = [parse_mode(m, window, model_stride) for m in args.modes]
    causal_dir = causal_refiner = None
    if any(m.get("stream") for m in modes):
        causal_dir = Path(args.causal_model) if args.causal_model else default_model_dir(causal=True)
        causal_refiner, _ = common.load_refiner(args.backend, causal_dir,
                                                steps=int(read_model_spec(causal_dir)["steps"]),
                                                device="cpu", threads=args.threads)

    sums = {m["name"]: {"frames": 0, "lifter": 0.0, "stream": 0.0, "offline": 0.0,
                        "windows": 0, "published": 0, "accel_frames": 0, "accel_lifter": 0.0,
                        "accel_stream": 0.0, "accel_offline": 0.0} for m in modes}
    total_frames, started = 0, time.perf_counter()
    for n, key in enumerate(keys):
        seq = predictions.sequences[key]
        keypoints = seq.keypoints_normalised()
        pose = seq.pose_3d - seq.pose_3d[:, :1]
        truth = seq.ground_truth_3d - seq.ground_truth_3d[:, :1]
        offline = refiner.refine_sequence(keypoints, pose)
        total_frames += len(pose)
        streams = {}     # (lag, stride) -> stream: a stale mode reuses the causal one
        for mode in modes:
            key_ = (mode["lag"], mode["stride"], bool(mode.get("stream")))
            if mode.get("stream") and key_ not in streams:
                streams[key_] = stream_causal_model(causal_refiner, keypoints, pose)
            elif key_ not in streams:
                streams[key_] = stream(refiner.refine_windows, keypoints, pose, window,
                                       mode["lag"], mode["stride"], args.batch_size,
                                       refiner.correction_threshold)
            published, windows = streams[key_]
            if mode["stale"]:
                published = with_stale_correction(published, pose, mode["stale"])
            frames = np.array(sorted(published))
            if len(frames) and frames[-1] - frames[0] + 1 != len(frames):
                raise AssertionError("published frames are not contiguous")
            streamed = np.stack([published[i] for i in frames])
            def error(estimate):     # summed per-frame MPJPE, mm
                return 1000 * float(np.linalg.norm(estimate - truth[frames], axis=-1)
                                    .mean(axis=-1).sum())
            s = sums[mode["name"]]
            s["frames"] += len(frames)
            s["lifter"] += error(pose[frames])
            s["stream"] += error(streamed)
            s["offline"] += error(offline[frames])
            s["windows"] += windows
            s["published"] += len(frames)
            for name, estimate in (("lifter", pose[frames]), ("stream", streamed),
                                   ("offline", offline[frames])):
                total, count = acceleration_error(estimate, truth[frames])
                s[f"accel_{name}"] += total
            s["accel_frames"] += count          # the same frames for all three
        print(f"[{n + 1}/{len(keys)}] {key}: {len(pose)} frames, "
              f"{time.perf_counter() - started:.0f} s", flush=True)

    rows = []
    for mode in modes:
        s = sums[mode["name"]]
        frames = max(s["frames"], 1)
        rows.append({
            "mode": mode["name"], "lag_frames": mode["lag"], "stride": mode["stride"],
            "latency_frames": [mode["lag"], mode["lag"] + mode["stride"] - 1],
            "frames_published": s["published"], "frames_total": total_frames,
            "published_share": round(s["published"] / total_frames, 4),
            # a causal model's call refines one frame: 1 / T of a window's tokens
            "windows_per_frame": round(s["windows"] / total_frames
                                       / (window if mode.get("stream") else 1), 4),
            "lifter_mpjpe_mm": round(s["lifter"] / frames, 3),
            "stream_mpjpe_mm": round(s["stream"] / frames, 3),
            "offline_mpjpe_mm": round(s["offline"] / frames, 3),
            "stream_minus_offline_mm": round((s["stream"] - s["offline"]) / frames, 3),
            **{f"{name}_accel_error_mm": round(s[f"accel_{name}"] / max(s["accel_frames"], 1), 3)
               for name in ("lifter", "stream", "offline")},
        })
    payload = {
        "benchmark": args.name,
        "settings": {"predictions": str(args.predictions), "model": str(model_dir),
                     "split": "validation" if args.validation else "file",
                     "causal_model": str(causal_dir) if causal_dir else None,
                     "window": window, "model_stride": model_stride, "steps": steps,
                     "backend": args.backend, "providers": providers,
                     "sequences": len(keys), "sequence_stride": args.sequence_stride,
                     "quick": bool(args.quick)},
        "machine": common.machine_description(),
        "results": rows,
    }
    table = common.markdown_table(
        ["mode", "latency (frames)", "windows / frame", "published", "lifter", "stream",
         "offline (same frames)", "stream - offline", "accel: lifter / stream / offline"],
        [[r["mode"], f"{r['latency_frames'][0]}-{r['latency_frames'][1]}"
          if r["latency_frames"][0] != r["latency_frames"][1] else str(r["latency_frames"][0]),
          f"{r['windows_per_frame']:.3f}", f"{100 * r['published_share']:.1f}%",
          f"{r['lifter_mpjpe_mm']:.2f}", f"{r['stream_mpjpe_mm']:.2f}",
          f"{r['offline_mpjpe_mm']:.2f}", f"{r['stream_minus_offline_mm']:+.2f}",
          f"{r['lifter_accel_error_mm']:.2f} / {r['stream_accel_error_mm']:.2f} / "
          f"{r['offline_accel_error_mm']:.2f}"] for r in rows])
    markdown = (f"# Streaming against offline refinement (streaming_accuracy.py)\n\n"
                f"Model {model_dir.name if model_dir.name != 'model' else model_dir.parent.name} "
                f"(T = {window}, K = {steps}, offline stride {model_stride}), "
                f"{len(keys)} sequences (every {args.sequence_stride}th of "
                + ("the model's validation split of " if args.validation else "")
                + f"{Path(args.predictions).name}), {total_frames} frames. MPJPE in mm, frame "
                "mean over the frames each mode published; offline = `refine_sequence` on the "
                "same frames. Latency: frames between a frame's arrival and its output. "
                + (f"The stream row is the causal model {causal_dir.parent.name}, one frame per "
                   "call (windows / frame: its tokens per frame as a share of a window's). "
                   if causal_dir else "") +
                "Acceleration error in mm / frame^2 (joint mean) over the same frames.\n\n"
                f"{table}\n\n{common.machine_line(payload['machine'])}\n")
    common.write_results(args.output_dir, args.name, payload, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
