"""The correction threshold (d3p_model/trust.py): each joint's correction soft-thresholded."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from d3p_model.trust import SPEC_KEY, limit_corrections, threshold_from_spec

poses = arrays(np.float64, (4, 17, 3), elements=st.floats(-1, 1))


def test_short_corrections_vanish_and_long_ones_shrink_by_the_threshold():
    pose = np.zeros((1, 3, 3))
    refined = np.array([[[0.003, 0, 0], [0, 0.010, 0], [0.030, 0.040, 0]]])  # 3, 10, 50 mm
    limited = limit_corrections(pose, refined, 0.005)
    np.testing.assert_allclose(limited[0, 0], 0, atol=1e-12)
    np.testing.assert_allclose(limited[0, 1], [0, 0.005, 0], atol=1e-12)
    np.testing.assert_allclose(limited[0, 2], [0.027, 0.036, 0], atol=1e-12)   # 45 mm, same way


def test_zero_threshold_changes_nothing_and_dtype_is_kept():
    refined = np.random.default_rng(0).normal(size=(2, 17, 3)).astype(np.float32)
    assert limit_corrections(np.zeros_like(refined), refined, 0.0) is refined
    assert limit_corrections(np.zeros_like(refined), refined, 0.01).dtype == np.float32


@settings(max_examples=60, deadline=None)
@given(poses, poses, st.floats(0, 0.5))
def test_the_limited_pose_lies_between_input_and_refined(pose, refined, threshold):
    limited = limit_corrections(pose, refined, threshold)
    raw = np.linalg.norm(refined - pose, axis=-1)
    kept = np.linalg.norm(limited - pose, axis=-1)
    np.testing.assert_allclose(kept, np.maximum(raw - threshold, 0), atol=1e-9)
    # never away from the refined pose's direction: on the segment input -> refined
    np.testing.assert_allclose(np.linalg.norm(refined - limited, axis=-1) + kept, raw, atol=1e-9)


def test_the_spec_entry():
    assert threshold_from_spec({}) == 0.0                 # models saved before it existed
    assert threshold_from_spec({SPEC_KEY: 4}) == pytest.approx(0.004)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=SPEC_KEY):
            threshold_from_spec({SPEC_KEY: bad})
