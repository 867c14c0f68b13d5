"""Shared helpers of the benchmark scripts: machine description, timing, models, results.

Every benchmark writes `<output-dir>/<name>.json` (machine-readable: the machine, versions,
date and command line next to the numbers) and `<output-dir>/<name>.md` (a short table),
and prints the table.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Benchmark this checkout's d3p_model, whatever is installed in the environment.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_OUTPUT_DIR = REPO / "benchmarks" / "results"
# The trained refiners the benchmarks time: the shipped default (d3p_model.refiner.
# DEFAULT_MODEL) at its window, and at T = 81 this detected-2D model (retrained on the current
# lifter, issue 13). A window whose model is not trained yet is skipped, with the reason
# printed (missing_model). Any other window gets the shipped default's architecture and CND
# with random weights.
# D3P_BENCH_T81_MODEL names another model directory under d3p_model/models/refiner/ (the
# tests point it at one that does not exist to check the skip path)
T81_MODEL = os.environ.get("D3P_BENCH_T81_MODEL", "h36m_sh2d_t81_reproj")
RANDOM_WEIGHTS = "random weights (timing only)"
H36M_FPS = 50.0


# ---------------------------------------------------------------- the machine
def cpu_model() -> str:
    """The model name, with the family/model numbers and widest vector unit where the name
    hides them (a VM's "AMD EPYC" spans generations: with AVX-512 this project's small
    kernels ran twice as fast as without, docs/performance.md)."""
    try:
        fields = {}
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip():
                break       # the first processor is enough
    except OSError:
        return platform.processor() or platform.machine()
    name = fields.get("model name") or platform.processor() or platform.machine()
    flags = set(fields.get("flags", "").split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    extra = [f"family {fields['cpu family']} model {fields['model']}"
             if "cpu family" in fields and "model" in fields else None, vector]
    extra = [e for e in extra if e]
    return f"{name} ({', '.join(extra)})" if extra else name


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _git_commit() -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        return commit + ("-dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import numpy
    found = {"python": platform.python_version(), "numpy": numpy.__version__}
    for name in ("torch", "onnxruntime", "onnx"):
        try:
            found[name] = __import__(name).__version__
        except ImportError:
            found[name] = None
    return found


def gpu_description() -> dict:
    """What accelerators torch and ONNX Runtime can use here."""
    found = {"torch_cuda": False, "torch_cuda_devices": [], "onnxruntime_providers": []}
    try:
        import torch
        if torch.cuda.is_available():
            found["torch_cuda"] = True
            found["torch_cuda_devices"] = [torch.cuda.get_device_name(i)
                                           for i in range(torch.cuda.device_count())]
    except ImportError:
        pass
    try:
        import onnxruntime
        found["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except ImportError:
        pass
    return found


def machine_description() -> dict:
    """The machine, the software and the moment: stored with every result."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv),
        "git_commit": _git_commit(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "memory_gib": _memory_gib(),
        # other jobs on a shared machine make every number an upper bound: say how busy it was
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "platform": platform.platform(),
        "versions": versions(),
        "accelerators": gpu_description(),
    }


def onnx_providers_for(device: str) -> list[str] | None:
    """The ONNX Runtime providers for `device`, or None when none is present here."""
    import onnxruntime
    available = onnxruntime.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = [p for p in ("TensorrtExecutionProvider", "CUDAExecutionProvider") if p in available]
    return wanted + ["CPUExecutionProvider"] if wanted else None


def device_missing(device: str, backend: str) -> str | None:
    """Why `backend` cannot run on `device` here, or None when it can."""
    if device == "cpu":
        return None
    if backend == "torch":
        import torch
        return None if torch.cuda.is_available() else \
            "no CUDA device here (torch.cuda.is_available() is False)"
    if onnx_providers_for(device) is None:
        import onnxruntime
        return ("no CUDA or TensorRT provider in this onnxruntime (available: "
                f"{', '.join(onnxruntime.get_available_providers())})")
    return None


# ---------------------------------------------------------------- timing
def summarise_ms(samples_s: list[float]) -> dict:
    """Median, p99 and friends of durations given in seconds, in milliseconds."""
    import numpy as np
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    return {"reps": int(ms.size), "median_ms": float(np.median(ms)),
            # linear interpolation: with fewer than 100 reps p99 lies close to the maximum
            "p99_ms": float(np.percentile(ms, 99)), "mean_ms": float(ms.mean()),
            "min_ms": float(ms.min()), "max_ms": float(ms.max())}


def time_call(fn, budget_s: float = 4.0, warmup: int = 2, min_reps: int = 3,
              max_reps: int = 500, pause_s: float = 0.0) -> dict:
    """Time `fn()` after warm-up calls; repeats until `budget_s` is spent (bounded by
    min_reps..max_reps). Warm-up stops early once it has used a quarter of the budget.
    `pause_s`: sleep between calls (not timed), as a node called once per frame idles."""
    if min_reps < 1 or max_reps < min_reps:
        raise ValueError(f"need 1 <= min_reps <= max_reps, got {min_reps}, {max_reps}")
    start = time.perf_counter()
    done = 0
    while done < max(1, warmup):
        fn()
        done += 1
        if time.perf_counter() - start > budget_s / 4:
            break
    samples = []
    start = time.perf_counter()
    while len(samples) < max_reps and (len(samples) < min_reps
                                       or time.perf_counter() - start < budget_s):
        begin = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - begin)
        if pause_s:
            time.sleep(pause_s)
    return {**summarise_ms(samples), "warmup": done}


def thread_environment(threads: int) -> dict:
    """Environment for a child process limited to `threads` CPU threads (OpenMP/MKL pools
    size themselves at start-up, so this must be set before the child imports torch)."""
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    return env


def start_worker(script: Path, arguments: list[str], threads: int, result_file: Path):
    """Start `script ... --worker-result FILE` in a fresh interpreter (thread settings do not
    leak from one configuration into the next); returns what `finish_worker` takes."""
    command = [sys.executable, str(script), *arguments, "--worker-result", str(result_file)]
    return subprocess.Popen(command, env=thread_environment(threads), cwd=REPO), command, \
        result_file


def finish_worker(started) -> dict:
    """Wait for a started worker and return the JSON it wrote."""
    process, command, result_file = started
    if process.wait() != 0:
        raise RuntimeError(f"worker failed with exit status {process.returncode}: "
                           f"{' '.join(shlex.quote(c) for c in command)}")
    return json.loads(Path(result_file).read_text())


def run_worker(script: Path, arguments: list[str], threads: int, result_file: Path) -> dict:
    """Run one worker (see start_worker) to its end and return its JSON."""
    return finish_worker(start_worker(script, arguments, threads, result_file))


def set_torch_threads(threads: int) -> None:
    import torch
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (interop threads can only be set before first use)
        pass


# ---------------------------------------------------------------- models
def trained_models() -> dict[int, tuple[str, Path]]:
    """Window -> (name, model directory) of the trained refiners the benchmarks use: the
    shipped default (d3p_model.refiner.DEFAULT_MODEL) at its own window, T81_MODEL at 81."""
    from d3p_model.refiner import DEFAULT_MODEL, default_model_dir
    default = default_model_dir()
    window = int(json.loads((default / "model.json").read_text())["denoiser"]["window"])
    found = {81: (T81_MODEL, default.parent.parent / T81_MODEL / "model")}
    found[window] = (DEFAULT_MODEL, default)
    return found


def missing_model(window: int) -> str | None:
    """Why a window cannot be timed: its trained model is not there (yet); None otherwise
    (a trained model, or a window timed with random weights)."""
    entry = trained_models().get(window)
    if entry is None:
        return None
    name, model_dir = entry
    if (model_dir / "model.json").is_file() and (model_dir / "weights.pt").is_file():
        return None
    return f"T = {window}: its model {name} is not trained yet ({model_dir} missing)"


def available_windows(windows) -> tuple[list[int], list[dict]]:
    """(the windows that can be timed, [{"window", "reason"}] for those skipped); each skip
    is printed to stderr with its reason."""
    kept, skipped = [], []
    for window in windows:
        reason = missing_model(window)
        if reason is None:
            kept.append(window)
        else:
            print(f"skipping {reason}", file=sys.stderr)
            skipped.append({"window": window, "reason": reason})
    return kept, skipped


def model_for_window(window: int, scratch: Path) -> tuple[Path, str]:
    """(model directory, what its weights are) for a window of `window` frames.

    A window of trained_models(): that refiner (FileNotFoundError, with missing_model's
    reason, if it is not trained yet: filter with available_windows first). Any other T: the
    shipped default's architecture and CND with random weights, saved once under `scratch`
    (timing does not depend on the weights).
    """
    from d3p_model.refiner import D3PRefiner, default_model_dir
    trained = trained_models()
    if window in trained:
        reason = missing_model(window)
        if reason:
            raise FileNotFoundError(reason)
        name, model_dir = trained[window]
        return model_dir, f"trained ({name})"
    target = Path(scratch) / f"random_t{window}"
    if not (target / "model.json").is_file():
        import torch

        from d3p_model.denoiser.model import PoseDenoiser
        source = D3PRefiner.load(default_model_dir())
        config = dataclasses.replace(source.denoiser.config, window=window)
        torch.manual_seed(0)
        refiner = D3PRefiner(PoseDenoiser(config), source.cnd, steps=source.steps,
                             info={"name": f"random_t{window}", "note": RANDOM_WEIGHTS})
        refiner.save(target)
    return target, RANDOM_WEIGHTS


def load_refiner(backend: str, model_dir: Path, steps: int, device: str, threads: int):
    """A D3PRefiner (torch) or OnnxRefiner (onnx) with `refine_windows(kp, pose)` running
    K = `steps` DDIM steps, and the execution providers it uses (None for torch)."""
    if backend == "torch":
        from d3p_model.refiner import D3PRefiner
        set_torch_threads(threads)
        refiner = D3PRefiner.load(model_dir, device=device)
        # the default K of refine_windows/refine_sequence, as K is fixed in an ONNX graph
        refiner.steps = steps if refiner.diffusion else 1
        return refiner, None
    if backend == "onnx":
        from d3p_model.export.runtime import OnnxRefiner
        # the model's refiner_k{K}.onnx, or an export cached under cache/onnx (made once,
        # before any timing starts)
        refiner = OnnxRefiner.load(model_dir, steps=steps, device=device, num_threads=threads,
                                   warn=lambda message: print(message, file=sys.stderr))
        return refiner, list(refiner.providers)
    raise ValueError(f"unknown backend {backend!r} (torch or onnx)")


def sample_windows(window: int, people: int, seed: int = 0):
    """GENERATED input (never Human3.6M): `people` windows of `window` frames, as the node and
    `d3p refine` feed them: normalised 2D keypoints (B, T, 17, 2) and root-relative lifter
    output (B, T, 17, 3), float32."""
    import numpy as np

    from d3p_model.data.synthetic import make_synthetic_predictions
    predictions = make_synthetic_predictions(num_sequences=people, num_frames=window, seed=seed)
    keypoints, poses = [], []
    for _, sequence in predictions.items():
        keypoints.append(sequence.keypoints_normalised())
        poses.append(sequence.pose_3d - sequence.pose_3d[:, :1])
    return (np.stack(keypoints).astype(np.float32), np.stack(poses).astype(np.float32))


# ---------------------------------------------------------------- results
def markdown_table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_line(machine: dict) -> str:
    return (f"{machine['cpu_model']}, {machine['usable_cpus']} usable CPUs, load average "
            f"{machine['load_average_at_start'][0]} at start; torch "
            f"{machine['versions'].get('torch')}, onnxruntime "
            f"{machine['versions'].get('onnxruntime')}; {machine['date_utc']}; "
            f"commit {machine['git_commit']}")


def write_results(output_dir, name: str, payload: dict, markdown: str) -> tuple[Path, Path]:
    """Write `<name>.json` and `<name>.md` into `output_dir` and print the markdown."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    json_path = output_dir / f"{name}.json"
    md_path = output_dir / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    md_path.write_text(markdown.rstrip() + "\n")
    print(markdown.rstrip())
    print(f"\nwrote {json_path} and {md_path}")
    return json_path, md_path


def add_common_arguments(parser) -> None:
    parser.add_argument("--output-dir", default=str(DEFAULT_OUTPUT_DIR),
                        help="where <name>.json and <name>.md go (default: benchmarks/results)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run that checks the script works (smoke tests); its "
                             "numbers mean nothing")
