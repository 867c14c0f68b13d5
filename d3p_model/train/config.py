"""Experiment configs: YAML files in d3p_model/configs/, one per experiment.

A config is a nested mapping; anything left out takes the default below, anything unknown
is an error (a typo must not silently train the wrong experiment).
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"

DEFAULTS = {
    "name": None,                 # run name; default: the config file's stem
    "data": {
        # a predictions file with ground_truth_3d (held-out lifter outputs on the training
        # subjects), or {"synthetic": {...make_synthetic_predictions arguments...}}
        "train": None,
        "validation_fraction": 0.1,   # sequence groups held out for validation/calibration
        # or whole subjects held out instead (e.g. [S8]): other takes of a training subject
        # share its proportions, so a take-level split can reward learning them (refiner.md)
        "validation_subjects": None,
        "frame_subsample": 1,         # keep every n-th frame (changes the frame rate!)
        "allow_test_subjects": False, # refuse S9/S11 and files named test.npz unless true
    },
    "window": 27,                 # T, frames per window (a causal model: its attention band)
    # frames per training window: the window (null), or longer for a causal model, whose
    # frames then also learn from history beyond one band, as a stream sees it
    "train_frames": None,
    "stride": 9,                  # frames between training window starts
    "windows_per_epoch": None,    # an epoch = this many windows drawn afresh (None: all)
    "model": {"depth": 4, "width": 32, "heads": 1, "mlp_ratio": 2.0, "pose_scale": 1.0,
              "bone_inputs": False, "reprojection_inputs": False, "bone_length_inputs": False,
              "output_gate": False, "causal": False},
    "noise": "cnd",               # cnd: sample e~ from the CND; real: use y_hat - y0
    # the error of each training window is scaled by lambda ~ U[low, high]: a range that
    # reaches 0 teaches the denoiser to judge how noisy its input is and to leave a clean
    # skeleton alone; high > 1 covers inputs worse than the held-out outputs
    "noise_level": [1.0, 1.0],
    "clean_fraction": 0.0,        # windows whose lifter-like error is exactly 0 (lambda = 0)
    "white_noise_mm": 0.0,        # plus i.i.d. noise per coordinate, sigma ~ U[0, this] per window
    # the share of windows that get that jitter: below 1, a skeleton that is correct but for
    # a few offset joints (rigid bones elsewhere) is shown too, not only jittered ones
    "white_noise_fraction": 1.0,
    # windows with no error of any kind (no lifter error, jitter or offset): with jitter on
    # every window, an exactly correct skeleton is almost never shown, and the refiner then
    # moves it (do no harm)
    "identity_fraction": 0.0,
    # a share of the windows also gets a constant offset (up to offset_mm, random direction)
    # on 1..offset_joints random joints: a bias that smoothing cannot remove, and that
    # bone lengths and the 2D keypoints reveal
    "offset_fraction": 0.0,
    "offset_mm": 50.0,
    "offset_joints": 4,
    "cnd_temporal": False,        # CND residual with its measured temporal autocorrelation
    "diffusion": True,            # false: one step from y_hat, t = T always
    "timesteps": 50,
    # error: MSE of the predicted error (the design); clean: MSE of the recovered clean pose,
    # i.e. the error MSE weighted by b_t^2 = 1 - abar_t
    "loss": "error",
    "schedule_offset": 0.008,
    "steps": 2,                   # DDIM steps at inference (and for validation)
    "cnd_ridge": 1.0e-6,
    "optim": {"lr": 1.0e-3, "lr_decay": 0.96, "epochs": 20, "batch_size": 256},
    # a trained model directory whose denoiser weights start this run (same architecture
    # and window; the CND is refitted on this run's split): continue a shorter training
    "init_from": None,
    "seed": 0,
    "checkpoint_minutes": 10.0,
    "threads": None,              # torch threads per process; None: torch's default
    "device": "auto",             # auto: cuda when available, else cpu
    "validation_batches": None,   # cap on validation windows per epoch (None: all)
}


class ConfigError(ValueError):
    pass


def _merge(defaults: dict, values: dict, where: str) -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in values.items():
        if key not in defaults:
            raise ConfigError(f"{where}: unknown setting '{key}'; known: {sorted(defaults)}")
        if isinstance(defaults[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: '{key}' must be a mapping")
            if key == "data":  # data.train may itself be a mapping: merge one level only
                unknown = set(value) - set(defaults[key])
                if unknown:
                    raise ConfigError(f"{where}.data: unknown settings {sorted(unknown)}; "
                                      f"known: {sorted(defaults[key])}")
                merged[key].update(copy.deepcopy(value))
            else:
                merged[key] = _merge(defaults[key], value, f"{where}.{key}")
        else:
            merged[key] = value
    return merged


def load_config(source) -> dict:
    """A YAML path (absolute, relative to the CWD, to the repo root or a name in
    d3p_model/configs/) or an already-parsed dict -> validated config with defaults."""
    where = "config"
    if isinstance(source, dict):
        values = source
    else:
        where = str(find_config(source))
        values = read_config_file(source)
    config = _merge(DEFAULTS, values, where)
    _validate(config, where)
    return config


def apply_overrides(config: dict, overrides) -> dict:
    """['optim.epochs=4', 'model.width=48'] -> a copy of the (raw) config with those set;
    values are parsed as YAML (numbers, true/false, null, lists)."""
    config = copy.deepcopy(config)
    for item in overrides or ():
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. optim.epochs=4")
        node = config
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a mapping")
        node[leaf] = yaml.safe_load(text)
    return config


def read_config_file(name) -> dict:
    path = find_config(name)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return {**values, "name": values.get("name") or path.stem}


def find_config(name) -> Path:
    name = Path(name)
    candidates = [name, REPO_ROOT / name, CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config {str(name)!r} not found (looked in the CWD, {REPO_ROOT} "
                      f"and {CONFIG_DIR})")


def _validate(config: dict, where: str) -> None:
    def need(ok, message):
        if not ok:
            raise ConfigError(f"{where}: {message}")
    need(config["data"]["train"] is not None, "data.train is required (a predictions file or "
                                              "{synthetic: {...}})")
    need(isinstance(config["window"], int) and config["window"] >= 1, "window must be an int >= 1")
    need(isinstance(config["stride"], int) and config["stride"] >= 1, "stride must be an int >= 1")
    need(config["train_frames"] is None or (isinstance(config["train_frames"], int)
                                            and config["train_frames"] >= config["window"]
                                            and config["model"].get("causal")),
         "train_frames must be null, or an int >= window for a causal model")
    need(config["noise"] in ("cnd", "real"), "noise must be 'cnd' or 'real'")
    need(config["loss"] in ("error", "clean"), "loss must be 'error' or 'clean'")
    need(isinstance(config["diffusion"], bool), "diffusion must be true or false")
    level = config["noise_level"]
    need(isinstance(level, (list, tuple)) and len(level) == 2
         and all(isinstance(v, (int, float)) for v in level) and 0 <= level[0] <= level[1],
         "noise_level must be [low, high] with 0 <= low <= high")
    need(isinstance(config["white_noise_mm"], (int, float)) and config["white_noise_mm"] >= 0,
         "white_noise_mm must be >= 0")
    need(isinstance(config["white_noise_fraction"], (int, float))
         and 0 <= config["white_noise_fraction"] <= 1, "white_noise_fraction must be in [0, 1]")
    need(isinstance(config["clean_fraction"], (int, float)) and 0 <= config["clean_fraction"] < 1,
         "clean_fraction must be in [0, 1)")
    need(isinstance(config["identity_fraction"], (int, float))
         and 0 <= config["identity_fraction"] < 1, "identity_fraction must be in [0, 1)")
    need(isinstance(config["offset_fraction"], (int, float))
         and 0 <= config["offset_fraction"] <= 1, "offset_fraction must be in [0, 1]")
    need(isinstance(config["offset_mm"], (int, float)) and config["offset_mm"] >= 0,
         "offset_mm must be >= 0")
    need(isinstance(config["offset_joints"], int) and 1 <= config["offset_joints"] <= 16,
         "offset_joints must be an int in 1..16")
    need(isinstance(config["cnd_temporal"], bool), "cnd_temporal must be true or false")
    need(isinstance(config["timesteps"], int) and config["timesteps"] >= 1, "timesteps must be >= 1")
    need(isinstance(config["steps"], int) and 1 <= config["steps"] <= config["timesteps"],
         "steps must be in 1..timesteps")
    need(0 <= config["data"]["validation_fraction"] < 1, "data.validation_fraction must be in [0, 1)")
    held = config["data"]["validation_subjects"]
    need(held is None or (isinstance(held, list) and held
                          and all(isinstance(x, str) and x for x in held)),
         "data.validation_subjects must be null or a non-empty list of subject names")
    need(not held or not set(held) & {"S9", "S11"},
         "data.validation_subjects: the test subjects S9/S11 are never a validation split")
    need(isinstance(config["data"]["frame_subsample"], int) and config["data"]["frame_subsample"] >= 1,
         "data.frame_subsample must be an int >= 1")
    optim = config["optim"]
    need(optim["lr"] > 0 and 0 < optim["lr_decay"] <= 1, "optim.lr > 0 and 0 < optim.lr_decay <= 1")
    need(isinstance(optim["epochs"], int) and optim["epochs"] >= 1, "optim.epochs must be >= 1")
    need(isinstance(optim["batch_size"], int) and optim["batch_size"] >= 1, "optim.batch_size >= 1")
    need(config["windows_per_epoch"] is None or (isinstance(config["windows_per_epoch"], int)
                                                 and config["windows_per_epoch"] >= 1),
         "windows_per_epoch must be a positive int or null")
    need(config["init_from"] is None or isinstance(config["init_from"], str),
         "init_from must be a model directory path or null")
    need(config["checkpoint_minutes"] is None or config["checkpoint_minutes"] > 0,
         "checkpoint_minutes must be positive or null")


def cache_dir() -> Path:
    """D3P_CACHE if set, else <repo>/cache."""
    return Path(os.environ.get("D3P_CACHE") or REPO_ROOT / "cache")


def resolve_data_path(path) -> Path:
    """A data path as written in a config: 'cache/...' goes through D3P_CACHE; otherwise
    absolute, or relative to the CWD, else to the repo root."""
    path = Path(path)
    if path.is_absolute():
        return path
    if path.parts and path.parts[0] == "cache" and os.environ.get("D3P_CACHE"):
        return cache_dir().joinpath(*path.parts[1:])
    if path.exists():
        return path.resolve()
    return REPO_ROOT / path


def validation_split(info: dict) -> tuple[Path, list[str]]:
    """A trained model's own validation split, from its model.json `info`: the predictions
    file it trained from and the sequence keys its training held out, sorted. Refuses keys
    of the test subjects (S9/S11): choices made on this split must never see them."""
    keys = sorted(info["training"]["validation_keys"])
    if any(key.split("/")[0] in ("S9", "S11") for key in keys):
        raise ValueError("validation keys contain test subjects (S9/S11): refusing")
    return resolve_data_path(info["config"]["data"]["train"]), keys
