"""The demo's default input: GENERATED motion, lifted by the shipped base lifter.

Never Human3.6M data: the motion, cameras and 2D keypoints come from
`d3p_model.data.synthetic`; the 3D estimate is the shipped base lifter's output on those
keypoints, so its errors are a real lifter's errors (what the shipped refiner learned to
remove), not the generator's hand-made ones.
"""

from __future__ import annotations

from pathlib import Path

from .predictions import Predictions, Sequence
from .synthetic import make_synthetic_predictions

DEFAULT_LIFTER = Path(__file__).resolve().parents[1] / "models" / "lifter" / "sh2d" / "all"


def make_demo_sample(num_people: int = 2, num_frames: int = 300, seed: int = 0,
                     keypoint_noise_px: float = 3.0, lifter_dir=DEFAULT_LIFTER) -> Predictions:
    from ..lifter.train import load_lifter

    generated = make_synthetic_predictions(num_sequences=num_people, num_frames=num_frames,
                                           seed=seed, keypoint_noise_px=keypoint_noise_px)
    lifter = load_lifter(Path(lifter_dir))
    sequences = {}
    for key, seq in generated.items():
        pose = lifter.lift(seq.keypoints_normalised())
        sequences[key] = Sequence(keypoints_2d=seq.keypoints_2d, image_size=seq.image_size,
                                  pose_3d=pose, ground_truth_3d=seq.ground_truth_3d)
    meta = {**generated.meta, "estimator": f"d3p base lifter ({Path(lifter_dir).parent.name}/"
                                           f"{Path(lifter_dir).name})",
            "note": "GENERATED demo sample (synthetic motion), not Human3.6M"}
    return Predictions(sequences, meta)
