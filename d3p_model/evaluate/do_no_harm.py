"""Do no harm: feed the refiner 3D inputs whose error is known and measure what comes out.

A refiner must bring a noisy skeleton closer to the truth and leave a correct one alone.
Each case builds its input from the ground truth (root-relative, metres):
  clean        the ground truth itself
  iid_10mm     + i.i.d. Gaussian noise, sigma 10 mm per coordinate, every non-root joint
  iid_20mm     + the same with sigma 20 mm
  offset_30mm  + a constant 30 mm offset on the right foot and both wrists (a fixed random
               direction per joint and sequence: a bias no temporal smoothing can remove)
The root stays exact in every case (poses are root-relative, the root error is 0 by
definition). The 2D input is the sequence's own keypoints, unchanged.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..skeleton import NUM_JOINTS, ROOT

OFFSET_JOINTS = (3, 13, 16)   # right foot, left wrist, right wrist (Human3.6M-17)
CASES = ("clean", "iid_10mm", "iid_20mm", "offset_30mm")


def corrupt(truth: np.ndarray, case: str, seed: int) -> np.ndarray:
    """(F, 17, 3) root-relative ground truth -> the input of `case` (deterministic in seed)."""
    truth = np.asarray(truth, np.float64)
    rng = np.random.default_rng(seed)
    error = np.zeros_like(truth)
    if case == "clean":
        pass
    elif case in ("iid_10mm", "iid_20mm"):
        sigma = 0.010 if case == "iid_10mm" else 0.020
        error = rng.normal(0.0, sigma, truth.shape)
    elif case == "offset_30mm":
        directions = rng.normal(size=(len(OFFSET_JOINTS), 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        error[:, OFFSET_JOINTS] = 0.030 * directions
    else:
        raise ValueError(f"unknown do-no-harm case {case!r}; known: {CASES}")
    error[:, ROOT] = 0
    return truth + error


def _seed(key: str, case: str, seed: int) -> int:
    return zlib.crc32(f"{seed}/{key}/{case}".encode())


def mean_joint_error_mm(pose: np.ndarray, truth: np.ndarray) -> float:
    return 1000 * float(np.mean(np.linalg.norm(pose - truth, axis=-1)))


def evaluate_do_no_harm(refine, sequences, cases=CASES, seed: int = 0) -> dict:
    """refine(keypoints_2d, pose_3d) -> refined pose; sequences: iterable of
    (key, keypoints_2d normalised (F, 17, 2), root-relative truth (F, 17, 3)).

    Returns {case: {"input_mm", "refined_mm", "frames", "worse_sequences"}}: frame-weighted
    MPJPE of input and output against the truth, and how many sequences got worse.
    """
    totals = {case: {"input": 0.0, "refined": 0.0, "frames": 0, "worse": 0, "sequences": 0}
              for case in cases}
    # what the refiner adds to a correct skeleton: per joint, and the part of it that stays
    # the same over a sequence (a pull towards some pose) rather than changing (jitter)
    joint_sum = np.zeros(NUM_JOINTS)
    constant_sum = 0.0
    # the offset case split: how far the offset joints end from the truth, and the others
    offset_sum = np.zeros(NUM_JOINTS)
    for key, keypoints, truth in sequences:
        truth = np.asarray(truth, np.float64)
        truth = truth - truth[:, ROOT:ROOT + 1]
        for case in cases:
            # scored as fed (float32), so an identity refiner scores exactly its input
            noisy = corrupt(truth, case, _seed(key, case, seed)).astype(np.float32)
            refined = np.asarray(refine(keypoints, noisy), np.float64)
            frames = truth.shape[0]
            before = mean_joint_error_mm(noisy.astype(np.float64), truth)
            after = mean_joint_error_mm(refined, truth)
            entry = totals[case]
            entry["input"] += before * frames
            entry["refined"] += after * frames
            entry["frames"] += frames
            entry["sequences"] += 1
            entry["worse"] += int(after > before) if case != "clean" else 0
            if case == "offset_30mm":
                offset_sum += np.linalg.norm(refined - truth, axis=-1).sum(axis=0)
            if case == "clean":
                moved = refined - truth
                joint_sum += np.linalg.norm(moved, axis=-1).sum(axis=0)
                constant_sum += np.linalg.norm(moved.mean(axis=0), axis=-1).mean() * frames
    results = {}
    for case, entry in totals.items():
        frames = max(entry["frames"], 1)
        results[case] = {"input_mm": entry["input"] / frames,
                         "refined_mm": entry["refined"] / frames,
                         "frames": entry["frames"], "sequences": entry["sequences"],
                         "worse_sequences": entry["worse"]}
    if "clean" in results:
        frames = max(totals["clean"]["frames"], 1)
        results["clean"]["per_joint_mm"] = (1000 * joint_sum / frames).tolist()
        # MPJPE of each sequence's mean displacement: 0 when all it adds is jitter
        results["clean"]["constant_mm"] = 1000 * constant_sum / frames
    if "offset_30mm" in results:
        frames = max(totals["offset_30mm"]["frames"], 1)
        others = [j for j in range(NUM_JOINTS) if j not in OFFSET_JOINTS and j != ROOT]
        results["offset_30mm"]["offset_joints_mm"] = float(
            1000 * offset_sum[list(OFFSET_JOINTS)].mean() / frames)
        results["offset_30mm"]["other_joints_mm"] = float(1000 * offset_sum[others].mean() / frames)
    return results


# an improvement smaller than this is float32 rounding, not refinement (an identity refiner
# must not pass by a micrometre)
MIN_GAIN_MM = 0.01


def harm_failures(results: dict, margin_mm: float = MIN_GAIN_MM) -> list[str]:
    """The noisy cases the refiner did not improve by more than `margin_mm` (empty: it did
    no harm). A margin above the rounding one asks validation for room that the test
    subjects' own difference from it cannot take away."""
    margin_mm = max(margin_mm, MIN_GAIN_MM)
    return [case for case, r in results.items()
            if case != "clean" and not r["refined_mm"] < r["input_mm"] - margin_mm]
