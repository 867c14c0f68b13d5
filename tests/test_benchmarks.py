"""Smoke tests of the benchmark scripts (benchmarks/): each runs in its --quick mode and
writes a JSON with the expected keys and self-consistent numbers, plus its markdown table.
The numbers themselves are never checked against a speed (no timed unit tests); the
timing, statistics and fraction-of-peak arithmetic are.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
BENCHMARKS = REPO / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import common  # noqa: E402  (benchmarks/common.py)

MACHINE_KEYS = {"date_utc", "command", "git_commit", "cpu_model", "logical_cpus", "usable_cpus",
                "load_average_at_start", "versions", "accelerators"}


def run_script(name, *arguments, timeout=120, env=None):
    completed = subprocess.run([sys.executable, str(BENCHMARKS / name), *map(str, arguments)],
                               capture_output=True, text=True, timeout=timeout, cwd=REPO,
                               env=None if env is None else {**os.environ, **env})
    return completed


def check_written(output_dir, name, table=True):
    payload = json.loads((output_dir / f"{name}.json").read_text())
    markdown = (output_dir / f"{name}.md").read_text()
    assert payload["benchmark"] == name
    assert MACHINE_KEYS <= set(payload["machine"])
    assert {"torch", "onnxruntime", "numpy", "python"} <= set(payload["machine"]["versions"])
    assert name in payload["machine"]["command"]
    assert markdown.startswith("# ") and ("|---|" in markdown) == table
    return payload, markdown


# ---------------------------------------------------------------- helpers
def test_summary_statistics():
    samples = [0.001 * v for v in range(1, 101)]     # 1..100 ms
    summary = common.summarise_ms(samples)
    assert summary["reps"] == 100
    assert summary["median_ms"] == pytest.approx(50.5)
    assert summary["p99_ms"] == pytest.approx(np.percentile(np.arange(1, 101), 99))
    assert summary["min_ms"] == pytest.approx(1) and summary["max_ms"] == pytest.approx(100)


def test_time_call_respects_repetition_bounds():
    calls = []
    timing = common.time_call(lambda: calls.append(1), budget_s=0.05, warmup=2, min_reps=3,
                              max_reps=7)
    assert timing["warmup"] == 2 and timing["reps"] == 7 and len(calls) == 9
    slow = common.time_call(lambda: calls.append(1), budget_s=0.0, warmup=1, min_reps=4)
    assert slow["reps"] == 4                       # the minimum even with no budget left
    with pytest.raises(ValueError):
        common.time_call(lambda: None, min_reps=5, max_reps=2)


def test_markdown_table():
    assert common.markdown_table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---|\n| 1 | x |"


# ---------------------------------------------------------------- scripts
def test_refine_latency_quick(tmp_path):
    completed = run_script("refine_latency.py", "--quick", "--output-dir", tmp_path)
    assert completed.returncode == 0, completed.stderr
    payload, markdown = check_written(tmp_path, "refine_latency")
    cells = payload["cells"]
    assert {(c["backend"], c["batch"]) for c in cells} == {("torch", 1), ("torch", 2),
                                                          ("onnx", 1), ("onnx", 2)}
    for cell in cells:
        assert cell["device"] == "cpu" and cell["threads"] == 1
        assert (cell["window"], cell["steps"]) == (27, 2)
        assert cell["reps"] >= payload["settings"]["min_reps"]
        assert 0 < cell["min_ms"] <= cell["median_ms"] <= cell["p99_ms"] <= cell["max_ms"]
        assert cell["ms_per_window_per_person"] == pytest.approx(cell["median_ms"] / cell["batch"])
        assert cell["weights"].startswith("trained")
    assert "CPUExecutionProvider" in next(c for c in cells if c["backend"] == "onnx")["providers"]
    assert "torch 1 thr" in markdown and "onnx 1 thr" in markdown
    assert "Refinement latency" in completed.stdout   # the table is printed too


def test_refine_latency_of_the_causal_models_stream_step(tmp_path):
    """--causal: each cell is one CausalStreams.refine call of the shipped causal model."""
    completed = run_script("refine_latency.py", "--quick", "--causal", "--name", "stream",
                           "--output-dir", tmp_path)
    assert completed.returncode == 0, completed.stderr
    payload, markdown = check_written(tmp_path, "stream")
    assert payload["settings"]["causal"] is True
    from d3p_model.model_files import DEFAULT_CAUSAL_MODEL
    cells = payload["cells"]
    assert {(c["backend"], c["batch"]) for c in cells} == {("torch", 1), ("torch", 2),
                                                          ("onnx", 1), ("onnx", 2)}
    assert all(c["weights"] == DEFAULT_CAUSAL_MODEL and c["window"] == 27 for c in cells)
    assert "Causal model, streamed" in markdown
    assert run_script("refine_latency.py", "--causal", "--windows", 81).returncode == 2


def test_refine_latency_with_a_busy_cpu(tmp_path):
    """--busy-cpus: the spinners run during the cells and are gone afterwards."""
    import subprocess
    completed = run_script("refine_latency.py", "--quick", "--backends", "onnx", "--busy-cpus",
                           1, "--pause-ms", 5, "--name", "busy", "--output-dir", tmp_path)
    assert completed.returncode == 0, completed.stderr
    payload, markdown = check_written(tmp_path, "busy")
    assert payload["settings"]["busy_cpus"] == 1 and "1 other CPU(s) kept busy" in markdown
    assert payload["settings"]["pause_ms"] == 5 and "5 ms of sleep between calls" in markdown
    spinning = subprocess.run(["pgrep", "-f", "while True: pass"], capture_output=True)
    assert spinning.returncode == 1, spinning.stdout      # no spinner left behind


def test_refine_latency_without_gpu_says_so_and_skips(tmp_path):
    if common.device_missing("cuda", "torch") is None:
        pytest.skip("this machine has a CUDA device: the skip path does not apply")
    completed = run_script("refine_latency.py", "--devices", "cuda", "--windows", "27",
                           "--steps", "1", "--output-dir", tmp_path)
    assert completed.returncode == 0, completed.stderr
    assert "skipping torch on cuda" in completed.stderr
    payload, markdown = check_written(tmp_path, "refine_latency", table=False)
    assert payload["cells"] == []
    assert {s["backend"] for s in payload["skipped"]} == {"torch", "onnx"}
    assert "Skipped: torch on cuda" in markdown


def test_trained_models_are_the_default_and_the_t81_model():
    from d3p_model.refiner import DEFAULT_MODEL, default_model_dir
    trained = common.trained_models()
    window = json.loads((default_model_dir() / "model.json").read_text())["denoiser"]["window"]
    assert trained[window] == (DEFAULT_MODEL, default_model_dir())
    assert trained[81][0] == common.T81_MODEL == "h36m_sh2d_t81_reproj"
    assert common.missing_model(window) is None
    assert common.missing_model(243) is None          # random weights: never missing


def test_refine_latency_skips_a_window_whose_model_is_not_trained(tmp_path, monkeypatch):
    absent = "h36m_sh2d_t81_never_trained"
    monkeypatch.setattr(common, "T81_MODEL", absent)
    missing = common.missing_model(81)
    assert missing is not None and absent in missing
    completed = run_script("refine_latency.py", "--windows", "81", "--steps", "1",
                           "--threads", "1", "--batches", "1", "--output-dir", tmp_path,
                           env={"D3P_BENCH_T81_MODEL": absent})
    assert completed.returncode == 0, completed.stderr
    assert f"skipping {missing}" in completed.stderr
    payload, markdown = check_written(tmp_path, "refine_latency", table=False)
    assert payload["cells"] == [] and payload["settings"]["windows"] == [81]
    assert payload["skipped_windows"] == [{"window": 81, "reason": missing}]
    assert f"Skipped: {missing}." in markdown


@pytest.fixture
def small_predictions(tmp_path):
    from d3p_model.data.predictions import save_predictions
    from d3p_model.data.synthetic import make_synthetic_predictions
    path = tmp_path / "generated.npz"
    save_predictions(path, make_synthetic_predictions(num_sequences=2, num_frames=70,
                                                      num_cameras=2, seed=4))
    return path


def test_offline_throughput_quick(tmp_path, small_predictions):
    from d3p_model.data.predictions import load_predictions
    from d3p_model.data.windows import window_starts
    out = tmp_path / "results"
    # two processes at once, each on every other sequence: the rows must add up
    completed = run_script("offline_throughput.py", "--quick", "--processes", 2, "--predictions",
                           small_predictions, "--output-dir", out)
    assert completed.returncode == 0, completed.stderr
    payload, markdown = check_written(out, "offline_throughput")
    sequences = [s for _, s in sorted(load_predictions(small_predictions).items())]
    assert payload["sequences"] == len(sequences) == 4
    assert payload["frames"] == 4 * 70
    runs = payload["runs"]
    # no overlap, the model's own stride (model.json) and T / 3
    from d3p_model.refiner import D3PRefiner, default_model_dir
    model_stride = D3PRefiner.load(default_model_dir()).stride
    strides = {27, model_stride, 9}
    assert {(r["backend"], r["window"], r["stride"]) for r in runs} == {
        (b, 27, s) for b in ("torch", "onnx") for s in strides}
    assert all(r["model_stride"] == model_stride for r in runs)
    assert f"{model_stride} (the model's)" in markdown
    for run in runs:
        assert run["frames"] == payload["frames"] and run["threads"] == 1
        assert run["processes"] == 2 and run["sequences"] == 4
        assert run["windows"] == sum(len(window_starts(s.num_frames, 27, run["stride"]))
                                     for s in sequences)
        assert run["frames_per_s"] == pytest.approx(run["frames"] / run["wall_s"])
        assert run["x_realtime_per_stream"] == pytest.approx(run["frames_per_s"] / 50.0)
        assert run["meets_target"] == (run["x_realtime_per_stream"] >= 200.0)
        # no --batch-size: each backend's own default, as `d3p refine`
        assert run["batch_size"] == {"torch": 256, "onnx": 16}[run["backend"]]
    assert "x real time" in markdown and "16 (onnx)" in markdown


def test_offline_throughput_merges_processes():
    import offline_throughput
    shard = lambda start, end, frames: [{"window": 27, "stride": 27, "backend": "onnx",  # noqa
                                         "sequences": 1, "frames": frames, "windows": 2,
                                         "start": start, "end": end}]
    (run,) = offline_throughput.merge_shards([shard(10.0, 12.0, 100), shard(10.5, 14.0, 300)],
                                             2, 50.0)
    assert (run["frames"], run["windows"], run["sequences"]) == (400, 4, 2)
    assert run["wall_s"] == pytest.approx(4.0)          # first start to last end
    assert run["frames_per_s"] == pytest.approx(100.0)
    assert run["x_realtime_per_stream"] == pytest.approx(2.0) and not run["meets_target"]
    assert "start" not in run and run["processes"] == 2


def test_offline_throughput_missing_file_says_how_to_make_it(tmp_path):
    completed = run_script("offline_throughput.py", "--predictions", tmp_path / "absent.npz",
                           "--output-dir", tmp_path)
    assert completed.returncode == 2
    assert "absent.npz does not exist" in completed.stderr and "d3p predict" in completed.stderr
    assert not (tmp_path / "offline_throughput.json").exists()


def test_hardware_limit_quick(tmp_path):
    # a latency result with one known cell: the fraction of peak must follow from it. The
    # profiles run at T = 27 (the shipped default), which is always there; T = 81 is in the
    # quick windows too, and skipped with its reason while its model is not trained.
    latency = {"cells": [{"device": "cpu", "backend": "torch", "threads": 1, "window": 27,
                          "steps": 2, "batch": 10, "median_ms": 200.0,
                          "ms_per_window_per_person": 20.0}]}
    (tmp_path / "refine_latency.json").write_text(json.dumps(latency))
    stream = {"cells": [{"device": "cpu", "backend": "onnx", "threads": 1, "window": 27,
                         "steps": 2, "batch": 1, "median_ms": 1.5,
                         "ms_per_window_per_person": 1.5}]}
    (tmp_path / "refine_latency_stream.json").write_text(json.dumps(stream))
    completed = run_script("hardware_limit.py", "--quick", "--profile-window", 27,
                           "--output-dir", tmp_path)
    assert completed.returncode == 0, completed.stderr
    payload, markdown = check_written(tmp_path, "hardware_limit")
    for threads in ("1", "2"):
        peak = payload["peak"][threads]
        assert peak["peak_gflops"] == max(peak["torch_gflops"], peak["onnxruntime_gflops"]) > 0
    flops = {(r["window"], r["steps"]): r["flops_per_refinement"] for r in payload["flops"]}
    assert {(27, 1), (27, 2)} <= set(flops)
    assert flops[(27, 2)] == pytest.approx(2 * flops[(27, 1)])
    assert flops[(27, 2)] == pytest.approx(111.5e6, rel=0.05)   # `d3p flops` at T = 27, K = 2
    # the causal model's stream step: about 1/T of a window's FLOPs, against its 1.5 ms
    (row,) = payload["stream"]["rows"]
    assert row["flops_per_frame"] == pytest.approx(flops[(27, 2)] / 27, rel=0.25)
    assert row["fraction_of_peak"] == pytest.approx(
        row["flops_per_frame"] / (payload["peak"]["1"]["peak_gflops"] * 1e9) / 1.5e-3)
    assert "stream step" in markdown
    missing = common.missing_model(81)
    if missing:
        assert f"skipping {missing}" in completed.stderr
        assert (81, 2) not in flops and f"Skipped: {missing} (no FLOPs row)." in markdown
        assert payload["skipped_windows"] == [{"window": 81, "reason": missing}]
    else:
        assert flops[(81, 2)] == pytest.approx(410e6, rel=0.05)  # `d3p flops` of the T=81 model
    (row,) = payload["fractions"]
    ideal_ms = flops[(27, 2)] / (payload["peak"]["1"]["peak_gflops"] * 1e9) * 1e3
    assert row["ideal_ms_per_window"] == pytest.approx(ideal_ms)
    assert row["fraction_of_peak"] == pytest.approx(ideal_ms / 20.0)
    assert payload["latency_source"] == str(tmp_path / "refine_latency.json")
    for name in ("torch", "onnxruntime"):
        entries = payload["profiles"][name]["entries"]
        assert entries and all(0 < e["percent"] <= 100 and e["calls_per_refinement"] > 0
                               for e in entries)
        assert sum(e["percent"] for e in entries) <= 100.0 + 1e-6
    ort_ops = {e["op"] for e in payload["profiles"]["onnxruntime"]["entries"]}
    assert "MatMul" in ort_ops
    assert "Profile: torch" in markdown and "of peak" in markdown


def test_streaming_accuracy_quick(tmp_path, small_predictions):
    """The node's window logic against offline refinement on generated data: lagged mode at
    lag T - 1 equals offline on every frame it publishes; causal publishes every frame."""
    out = tmp_path / "results"
    completed = run_script("streaming_accuracy.py", "--quick", "--sequence-stride", 1,
                           "--modes", "causal", "lagged:26", "lagged:13:3", "stale:1", "stream",
                           "--backend", "torch", "--threads", 1,
                           "--predictions", small_predictions, "--output-dir", out)
    assert completed.returncode == 0, completed.stderr
    payload, markdown = check_written(out, "streaming_accuracy")
    rows = {r["mode"]: r for r in payload["results"]}
    from d3p_model.refiner import D3PRefiner, default_model_dir
    model_stride = D3PRefiner.load(default_model_dir()).stride     # lagged:26's stride
    causal, parity = rows["causal"], rows[f"lagged L=26 s={model_stride}"]
    # the causal model through the node's streams: every frame, 1/T of a window each, and
    # what the causal model gives offline (its stream equals it: test_causal_refiner.py)
    streamed = rows["causal, causal model (streamed)"]
    assert streamed["published_share"] == 1.0
    assert streamed["windows_per_frame"] == pytest.approx(1 / 27, abs=1e-4)
    assert np.isfinite(streamed["stream_mpjpe_mm"]) and streamed["latency_frames"] == [0, 0]
    strided = rows["lagged L=13 s=3"]
    assert causal["published_share"] == 1.0 and causal["windows_per_frame"] == 1.0
    assert causal["latency_frames"] == [0, 0]
    # 70 frames: lag 26 publishes only frames at least 26 before the end, away from the
    # end-aligned offline window, so stream and offline agree exactly there
    assert abs(parity["stream_minus_offline_mm"]) < 1e-3
    assert strided["latency_frames"] == [13, 15] and strided["published_share"] < 1.0
    assert all(r["frames_total"] == 140 for r in rows.values())
    # acceleration error: lagged at lag T - 1 equals offline there as well
    assert parity["stream_accel_error_mm"] == pytest.approx(parity["offline_accel_error_mm"],
                                                            abs=1e-3)
    assert causal["lifter_accel_error_mm"] > 0
    # the stale correction: every frame but the first, the lifter's frame plus the causal
    # correction of the frame before
    stale = rows["causal, correction 1 frame(s) old"]
    assert stale["frames_published"] == 2 * 69 and stale["latency_frames"] == [0, 0]
    assert stale["stream_mpjpe_mm"] != causal["stream_mpjpe_mm"]
    assert "stream - offline" in markdown and "accel: lifter / stream / offline" in markdown


def test_stale_correction_is_the_previous_frames_correction():
    import numpy as np
    import streaming_accuracy
    pose = np.arange(4 * 17 * 3, dtype=float).reshape(4, 17, 3)
    published = {i: pose[i] + 0.01 * (i + 1) for i in range(4)}
    stale = streaming_accuracy.with_stale_correction(published, pose, 1)
    assert sorted(stale) == [1, 2, 3]
    for frame in stale:
        np.testing.assert_allclose(stale[frame], pose[frame] + 0.01 * frame)
    truth = np.zeros((5, 2, 3))
    moving = truth.copy()
    moving[2, :, 0] = 0.001            # one frame 1 mm off: accelerations -1 -> +2 -> -1 mm
    total, count = streaming_accuracy.acceleration_error(moving, truth)
    assert count == 3 and total == pytest.approx(1 + 2 + 1)


def test_onnx_graph_calls_runs_a_graph(tmp_path):
    from d3p_model.refiner import default_model_dir
    graph = default_model_dir() / "refiner_k2.onnx"
    completed = run_script("onnx_graph_calls.py", graph, "--batch", 2, "--calls", 3)
    assert completed.returncode == 0, completed.stderr
    assert "3 calls of 2 window(s), median" in completed.stdout
    assert run_script("onnx_graph_calls.py", graph, "--calls", 0).returncode == 2
