"""The training loop: CND forward process, PoseDenoiser, Adam, checkpoints, DDP, calibration.

Run layout (out_dir, default runs/<name>/):
  config.yaml      the full config with defaults filled in
  checkpoint.pt    latest state (model, optimizer, scheduler, RNG, progress): --resume
  log.json         per-epoch losses and validation MPJPE, final calibration, provenance
  loss.png         the loss curves
  model/           the trained model directory (D3PRefiner.load)
Multi-process: under torchrun (WORLD_SIZE > 1) the model is wrapped in DDP (gloo on CPU,
nccl on CUDA), windows are split by a DistributedSampler and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from ..cnd.gaussian import ConditionalNoiseModel
from ..denoiser.model import DenoiserConfig, PoseDenoiser
from ..diffusion.process import forward_noisy_pose
from ..model_files import MODEL_FILE
from ..refiner import D3PRefiner, error_scale_per_joint
from ..skeleton import NUM_JOINTS, ROOT
from .config import REPO_ROOT, ConfigError, load_config, resolve_data_path
from .dataset import (WindowSet, load_training_predictions, split_validation,
                      split_validation_subjects)

CHECKPOINT = "checkpoint.pt"
NON_ROOT = [j for j in range(NUM_JOINTS) if j != ROOT]


class _IndexSet(torch.utils.data.Dataset):
    """Window indices 0..n-1: what the (distributed) sampler shuffles and splits."""

    def __init__(self, size):
        self.size = size

    def __len__(self):
        return self.size

    def __getitem__(self, index):
        return index


def _batch_seed(seed: int, rank: int, epoch: int, batch: int) -> int:
    # The noise and t of every batch depend only on (seed, rank, epoch, batch), so a resumed
    # run draws exactly what the uninterrupted run would have drawn.
    return zlib.crc32(f"{seed}/{rank}/{epoch}/{batch}".encode())


def _select_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def _setup_distributed(device: torch.device) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _git_commit() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True,
                                  text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    return {"commit": git("rev-parse", "HEAD") or None,
            "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def _loss(model, batch, tcnd, scale, alpha_bar, config, generator):
    keypoints, pose, truth = batch
    if config["noise"] == "cnd":
        error = tcnd.sample(keypoints, pose, generator)
    else:
        error = pose - truth
    size = pose.shape[0]
    per_window = (size,) + (1,) * (error.dim() - 1)
    low, high = config["noise_level"]
    if (low, high) != (1, 1):
        level = torch.rand(per_window, generator=generator, device=pose.device) * (high - low)
        error = error * (low + level).to(error.dtype)
    if config["clean_fraction"]:
        keep = torch.rand(per_window, generator=generator, device=pose.device) \
            >= config["clean_fraction"]
        error = error * keep.to(error.dtype)
    if config["white_noise_mm"]:
        # independent of the structured error: jitter on a correct skeleton is an input too
        sigma = torch.rand(per_window, generator=generator, device=pose.device) \
            * (config["white_noise_mm"] / 1000)
        if config["white_noise_fraction"] < 1:
            sigma = sigma * (torch.rand(per_window, generator=generator, device=pose.device)
                             < config["white_noise_fraction"]).to(sigma.dtype)
        white = torch.randn(error.shape, generator=generator, device=pose.device) * sigma
        white[:, :, ROOT] = 0   # root-relative poses: the root carries no error
        error = error + white.to(error.dtype)
    if config["offset_fraction"]:
        error = error + _sparse_offsets(error, config, generator)
    if config["identity_fraction"]:
        keep = torch.rand(per_window, generator=generator, device=pose.device) \
            >= config["identity_fraction"]
        error = error * keep.to(error.dtype)
    timesteps = config["timesteps"]
    if config["diffusion"]:
        t = torch.randint(1, timesteps + 1, (size,), generator=generator, device=pose.device)
    else:
        t = torch.full((size,), timesteps, dtype=torch.long, device=pose.device)
    noisy = forward_noisy_pose(truth, error, t, alpha_bar)
    predicted = model(noisy, keypoints, t)
    squared = (predicted - error / scale) ** 2
    if config["loss"] == "clean":
        # the error of the recovered clean pose, (y_t - b e_pred) - y0 = b (e - e_pred): at
        # small t only a sliver b_t e of a smooth error is left in y_t, and asking for all
        # of e there asks the impossible
        squared = squared * (1 - alpha_bar.to(pose.device)[t]).to(squared.dtype).reshape(
            (size,) + (1,) * (squared.dim() - 1))
    return squared[:, :, NON_ROOT].mean()


def _sparse_offsets(error, config, generator):
    """(B, T, 17, 3) constant-in-time offsets on 1..offset_joints random non-root joints of
    an offset_fraction of the windows; length ~ U[0, offset_mm], direction uniform."""
    size, device = error.shape[0], error.device
    chosen = torch.rand(size, generator=generator, device=device) < config["offset_fraction"]
    count = torch.randint(1, config["offset_joints"] + 1, (size, 1), generator=generator,
                          device=device)
    rank = torch.rand(size, NUM_JOINTS, generator=generator, device=device) \
        .argsort(dim=1).argsort(dim=1)           # a random permutation rank per joint
    rank[:, ROOT] = NUM_JOINTS                   # never the root
    mask = (rank < count) & chosen[:, None]
    direction = torch.randn(size, NUM_JOINTS, 3, generator=generator, device=device)
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-9)
    length = torch.rand(size, NUM_JOINTS, 1, generator=generator, device=device) \
        * (config["offset_mm"] / 1000)
    offset = direction * length * mask[..., None]
    return offset[:, None].to(error.dtype)


# Model settings a run continued from another model (init_from) may switch on, never off.
ADDABLE_SETTINGS = ("reprojection_inputs", "bone_length_inputs", "output_gate", "causal")


def _refuse_a_source_that_saw(model_dir, val_keys) -> None:
    """A held-out subject must be held out of the whole chain of continued runs: the source
    model's own validation keys must cover this run's."""
    # model.json alone: the weights are loaded once, by _init_weights
    info = json.loads((resolve_data_path(model_dir) / MODEL_FILE).read_text())["info"]
    source_val = set(info.get("training", {}).get("validation_keys") or [])
    seen = sorted(set(val_keys) - source_val)
    if seen:
        raise ConfigError(f"init_from {model_dir}: that model trained on {len(seen)} of this "
                          f"run's validation sequences (e.g. {seen[0]}); a held-out subject "
                          "must be held out of its source too")


def _init_weights(model: PoseDenoiser, model_dir) -> None:
    """Start from another run's trained denoiser (a continued training). The architectures
    must match, except that this run may switch on a setting of ADDABLE_SETTINGS: add the
    reprojection or bone-length inputs (their embedding columns start at zero, so the
    continued model starts as exactly the source model) or the output gate (a factor of 1 at
    the start), or make a windowed model causal (its frame embedding is dropped; the offset
    biases start at zero, and the network then has to learn to work from the past alone);
    and it may give a windowed model a longer window (its frame embedding is stretched
    linearly over the new window: the network starts as the source model seeing the motion
    slowed down, and learns the longer context from there; a window of 81 from scratch did
    not reach its input's accuracy in the session budget)."""
    source = D3PRefiner.load(resolve_data_path(model_dir))
    source_config = source.denoiser.config
    longer = (not model.config.causal and not source_config.causal
              and model.config.window > source_config.window)
    switched = {name: getattr(model.config, name) for name in ADDABLE_SETTINGS}
    widened = dataclasses.replace(source_config, **switched,
                                  window=model.config.window if longer else source_config.window)
    dropped = any(getattr(source_config, name) and not on for name, on in switched.items())
    if widened != model.config or dropped \
            or (source_config.bone_length_inputs   # new columns are appended, after these
                and model.config.reprojection_inputs and not source_config.reprojection_inputs):
        raise ConfigError(f"init_from {model_dir}: its denoiser {source_config} differs "
                          f"from this run's {model.config}")
    state = source.denoiser.state_dict()
    if model.config.causal and not source_config.causal:
        state.pop("frame_embedding")
        state.update({name: value for name, value in model.state_dict().items()
                      if name.endswith("offset_bias")})
    if longer:
        embedding = state["frame_embedding"][:, :, 0, :].transpose(1, 2)   # (1, d, T)
        stretched = torch.nn.functional.interpolate(embedding, size=model.config.window,
                                                    mode="linear", align_corners=True)
        state["frame_embedding"] = stretched.transpose(1, 2).unsqueeze(2).contiguous()
    if model.config.output_gate and not source_config.output_gate:   # a factor of 1
        state.update({name: value for name, value in model.state_dict().items()
                      if name.startswith("gate.")})
    weight = state["embed.weight"]
    missing = model.embed.weight.shape[1] - weight.shape[1]
    if missing:
        state["embed.weight"] = torch.cat([weight, weight.new_zeros(weight.shape[0], missing)],
                                          dim=1)
    model.load_state_dict(state)


def _source_stride(model_dir, window: int) -> int | None:
    """A continued training keeps the inference stride (model.json) of the model it starts
    from, as the same share of a window that is longer: the setting was validated for that
    model; None (no overlap) from scratch."""
    if not model_dir:
        return None
    from ..model_files import read_model_spec
    spec = read_model_spec(resolve_data_path(model_dir))
    stride = spec.get("stride")
    source_window = spec["denoiser"]["window"]
    if stride is None or window == source_window:
        return stride
    return max(1, min(window, round(stride * window / source_window)))


def _save_atomic(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _plot_losses(history: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = history["batch_losses"]
    if steps:
        per_epoch = max(1, history["batches_per_epoch"])
        x = np.arange(1, len(steps) + 1) / per_epoch
        ax.plot(x, steps, lw=0.5, alpha=0.4, label="train (batch)")
    epochs = history["epochs"]
    if epochs:
        ax.plot([e["epoch"] for e in epochs], [e["train_loss"] for e in epochs], "o-",
                label="train (epoch mean)")
        if epochs[0].get("val_loss") is not None:
            ax.plot([e["epoch"] for e in epochs], [e["val_loss"] for e in epochs], "s-",
                    label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE of normalised error")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def _validate(refiner, val_set, tcnd, scale, alpha_bar, config, device, seed):
    """Validation loss (fixed noise) and MPJPE in/out on non-overlapping windows, in mm."""
    refiner.denoiser.eval()
    count = len(val_set)
    cap = config["validation_batches"]
    batch = config["optim"]["batch_size"]
    losses, before, after, frames = [], 0.0, 0.0, 0
    generator = torch.Generator(device=device)
    for number, first in enumerate(range(0, count, batch)):
        if cap is not None and number >= cap:
            break
        index = torch.arange(first, min(first + batch, count))
        data = val_set.gather(index, device)
        generator.manual_seed(_batch_seed(seed, -1, 0, number))
        losses.append(float(_loss(refiner.denoiser, data, tcnd, scale, alpha_bar, config,
                                  generator)))
        keypoints, pose, truth = data
        refined = refiner.refine_tensor(keypoints, pose)
        before += float(torch.linalg.norm(pose - truth, dim=-1).mean(dim=-1).sum())
        after += float(torch.linalg.norm(refined - truth, dim=-1).mean(dim=-1).sum())
        frames += pose.shape[0] * pose.shape[1]
    return {"val_loss": float(np.mean(losses)), "val_mpjpe_in_mm": 1000 * before / frames,
            "val_mpjpe_out_mm": 1000 * after / frames}


def calibrate(refiner: D3PRefiner, window_set: WindowSet, keys) -> dict:
    """Per-joint RMS error (m) of the refined output, with default windows and steps."""
    squared = np.zeros(NUM_JOINTS)
    before = after = 0.0
    frames = 0
    for key in keys:
        keypoints, pose, truth = window_set.frames_of(key)
        refined = refiner.refine_sequence(keypoints, pose)
        distance = np.linalg.norm(refined - truth, axis=-1)
        squared += (distance ** 2).sum(axis=0)
        after += distance.mean(axis=1).sum()
        before += np.linalg.norm(pose - truth, axis=-1).mean(axis=1).sum()
        frames += pose.shape[0]
    return {"joint_uncertainty": np.sqrt(squared / frames).tolist(), "frames": frames,
            "mpjpe_in_mm": float(1000 * before / frames),
            "mpjpe_out_mm": float(1000 * after / frames)}


def train_from_config(config, out_dir=None, resume: bool = False, *,
                      stop_after_epochs: int | None = None, command: str | None = None,
                      progress: bool = True) -> Path | None:
    """Train one experiment; returns the model directory (None if stopped early).

    `stop_after_epochs` ends this call after that many epochs (the run stays resumable):
    for interrupted-run tests and for splitting a long training into sessions.
    """
    config = load_config(config)
    name = config["name"] or "run"
    out_dir = Path(out_dir) if out_dir is not None else REPO_ROOT / "runs" / name
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _select_device(config["device"], local_rank)
    rank, world = _setup_distributed(device)
    is_main = rank == 0
    if config["threads"]:
        torch.set_num_threads(int(config["threads"]))
    checkpoint_path = out_dir / CHECKPOINT
    if checkpoint_path.exists() and not resume:
        raise FileExistsError(f"{checkpoint_path} exists: pass --resume to continue that run "
                              f"or choose another --out")
    if resume and not checkpoint_path.exists():
        raise FileNotFoundError(f"--resume: {checkpoint_path} does not exist")

    seed = int(config["seed"])
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)

    predictions = load_training_predictions(config["data"])
    if config["data"]["validation_subjects"]:
        train_keys, val_keys = split_validation_subjects(predictions.sequences,
                                                         config["data"]["validation_subjects"])
        if config["init_from"]:
            _refuse_a_source_that_saw(config["init_from"], val_keys)
    else:
        train_keys, val_keys = split_validation(predictions.sequences, config["data"]
                                                ["validation_fraction"], seed)
    subsample = config["data"]["frame_subsample"]
    frames = config["train_frames"] or config["window"]
    train_set = WindowSet(predictions, train_keys, frames, config["stride"], subsample)
    val_set = WindowSet(predictions, val_keys, frames, frames, subsample) if val_keys else None
    del predictions
    cnd = ConditionalNoiseModel.fit_sequences(
        (train_set.frames_of(k) for k in train_keys), ridge=config["cnd_ridge"])
    if config["cnd_temporal"]:
        cnd = cnd.with_temporal_correlation((train_set.frames_of(k) for k in train_keys),
                                            lags=frames)
    tcnd = cnd.to_torch(device)
    scale = error_scale_per_joint(cnd).to(device, torch.float32)

    model_config = DenoiserConfig(window=config["window"], timesteps=config["timesteps"],
                                  **config["model"])
    model = PoseDenoiser(model_config).to(device)
    if config["init_from"] and not resume:
        _init_weights(model, config["init_from"])
    refiner = D3PRefiner(model, cnd, steps=config["steps"], diffusion=config["diffusion"],
                         timesteps=config["timesteps"], offset=config["schedule_offset"],
                         device=device, stride=_source_stride(config["init_from"],
                                                               config["window"]))
    alpha_bar = refiner.alpha_bar
    if world > 1:
        trained = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        trained = model
    optimizer = torch.optim.Adam(model.parameters(), lr=config["optim"]["lr"])
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, config["optim"]["lr_decay"])

    sampler = DistributedSampler(_IndexSet(len(train_set)), num_replicas=world, rank=rank,
                                 shuffle=True, seed=seed)
    per_rank = len(sampler)
    if config["windows_per_epoch"]:
        per_rank = min(per_rank, -(-config["windows_per_epoch"] // world))

    def epoch_batches(epoch):
        # the sampler's permutation depends on (seed, epoch) only: resumable
        sampler.set_epoch(epoch)
        return BatchSampler(list(sampler)[:per_rank], config["optim"]["batch_size"],
                            drop_last=False)

    batches = epoch_batches(0)
    history = {"epochs": [], "batch_losses": [], "batches_per_epoch": len(batches)}
    start_epoch, start_batch = 0, 0
    if resume:
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"].cpu())
        history = json.loads(state["history"])
        start_epoch, start_batch = int(state["epoch"]), int(state["batch"])
        saved = json.loads(state["config"])
        if {k: v for k, v in saved.items() if k != "optim"} != \
                {k: v for k, v in config.items() if k != "optim"}:
            raise ValueError(f"{checkpoint_path}: the run was started with a different config; "
                             f"only optim settings may change on --resume")

    started = time.time()
    provenance = {"command": command or shlex.join(sys.argv), "argv": list(sys.argv), "world_size": world, "device": str(device),
                  "torch": torch.__version__, **_git_commit(),
                  "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        print(f"[d3p train] {name}: {len(train_set)} training windows from {len(train_keys)} "
              f"sequences, {len(val_keys)} validation sequences, world size {world}, "
              f"device {device}; CND explains {100 * cnd.explained_fraction():.1f}% of the "
              f"error variance", flush=True)

    def save_checkpoint(epoch, batch):
        _save_atomic({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "torch_rng": torch.get_rng_state(),
                      "epoch": epoch, "batch": batch, "history": json.dumps(history),
                      "config": json.dumps(config)}, checkpoint_path)

    generator = torch.Generator(device=device)
    last_save = time.time()
    epochs = config["optim"]["epochs"]
    done_this_call = 0
    for epoch in range(start_epoch, epochs):
        model.train()
        batches = epoch_batches(epoch)
        skip = start_batch if epoch == start_epoch else 0
        epoch_losses = history.pop("_partial", []) if skip else []
        bar = tqdm(desc=f"epoch {epoch + 1}/{epochs}", disable=not (is_main and progress),
                   initial=skip, total=len(batches), leave=False, dynamic_ncols=True)
        for number, indices in enumerate(batches):
            if number < skip:
                continue
            generator.manual_seed(_batch_seed(seed, rank, epoch, number))
            data = train_set.gather(torch.as_tensor(indices), device)
            loss = _loss(trained, data, tcnd, scale, alpha_bar, config, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            epoch_losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{epoch_losses[-1]:.4f}")
            minutes = config["checkpoint_minutes"]
            if is_main and minutes and time.time() - last_save > 60 * minutes:
                history["_partial"] = epoch_losses
                save_checkpoint(epoch, number + 1)
                history.pop("_partial")
                last_save = time.time()
        bar.close()
        scheduler.step()
        history["batch_losses"].extend(epoch_losses)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(epoch_losses)),
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.time() - started}
        if is_main:
            if val_set is not None:
                record.update(_validate(refiner, val_set, tcnd, scale, alpha_bar, config,
                                        device, seed))
            history["epochs"].append(record)
            save_checkpoint(epoch + 1, 0)
            last_save = time.time()
            (out_dir / "log.json").write_text(json.dumps(
                {"config": config, "provenance": provenance, **history}, indent=1))
            _plot_losses(history, out_dir / "loss.png")
            text = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")
            print(f"[d3p train] epoch {epoch + 1}/{epochs}: {text}", flush=True)
        done_this_call += 1
        if stop_after_epochs is not None and done_this_call >= stop_after_epochs \
                and epoch + 1 < epochs:
            return None

    in_sync = True
    if world > 1:
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).to(device)
        gathered = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(gathered, checksum)
        in_sync = all(torch.equal(gathered[0], g) for g in gathered)
    model_dir = _finish(refiner, cnd, config, provenance, history, name, out_dir, in_sync,
                        val_set, val_keys, train_set, train_keys) if is_main else None
    if world > 1:
        # Keep every rank alive until rank 0 has calibrated and saved: a rank that tears down
        # its process group while a peer still works can abort the gloo transport.
        dist.barrier()
    return model_dir


def _finish(refiner, cnd, config, provenance, history, name, out_dir, in_sync,
            val_set, val_keys, train_set, train_keys) -> Path:
    """Rank 0: per-joint uncertainty calibration, then the model directory and final log."""
    if val_keys:
        calibration = calibrate(refiner, val_set, val_keys)
        calibration["on"] = "validation"
    else:  # no held-out part: calibrate on training data (optimistic; said in the log)
        calibration = calibrate(refiner, train_set, train_keys)
        calibration["on"] = "training (no validation split; optimistic)"
    refiner.joint_uncertainty = np.asarray(calibration["joint_uncertainty"], dtype=np.float32)
    provenance["finished_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    refiner.info = {"name": name, "noise": config["noise"], "config": config,
                    "calibration": calibration, "provenance": provenance,
                    "cnd": {"frames": cnd.num_frames,
                            "explained_fraction": cnd.explained_fraction()},
                    "training": {"windows": len(train_set), "validation_keys": val_keys}}
    model_dir = out_dir / "model"
    refiner.save(model_dir)
    (model_dir / "train_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out_dir / "log.json").write_text(json.dumps(
        {"config": config, "provenance": provenance, "calibration": calibration,
         "ranks_in_sync": in_sync, **history}, indent=1))
    print(f"[d3p train] {name}: validation MPJPE {calibration['mpjpe_in_mm']:.2f} -> "
          f"{calibration['mpjpe_out_mm']:.2f} mm; model in {model_dir}", flush=True)
    return model_dir
