"""How overlapping windows are blended back into one sequence (d3p_model/data/windows.py),
offline and in the node's lagged mode alike."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from d3p_model.data.windows import blend_weights, stitch_windows, window_starts, extract_windows


@pytest.mark.parametrize("window", [1, 2, 5, 27, 81])
def test_weights_peak_at_the_centre_and_never_vanish(window):
    w = blend_weights(window)
    assert w.shape == (window,) and np.all(w > 0) and w.max() <= 1.0
    np.testing.assert_allclose(w, w[::-1])                        # symmetric
    assert np.all(np.diff(w[: (window + 1) // 2]) > 0)           # rising to the centre
    assert w[0] == pytest.approx(1.0 / window)


@settings(max_examples=60, deadline=None)
@given(frames=st.integers(1, 60), window=st.integers(1, 12), data=st.data())
def test_windows_that_agree_give_back_the_sequence(frames, window, data):
    """Whatever the weights, a blend of windows that agree is that sequence (normalised)."""
    stride = data.draw(st.integers(1, window))
    sequence = np.random.default_rng(frames).standard_normal((frames, 3, 2))
    starts = window_starts(frames, window, stride)
    windows = extract_windows(sequence, starts, window)
    for weights in (None, np.ones(window)):
        out = stitch_windows(windows, starts, frames, weights=weights)
        if frames >= window:
            np.testing.assert_allclose(out, sequence, atol=1e-12)
        assert out.shape == sequence.shape and np.all(np.isfinite(out))


def test_a_frame_follows_the_window_it_is_central_in():
    """Two windows of 9 overlapping by 3: at the overlap's first frame the earlier window is
    near its end, the later one at its start; the blend leans to neither more than their
    weights say, and the plain mean is the midpoint."""
    window, starts = 9, np.array([0, 6])
    windows = np.stack([np.zeros((window, 1)), np.ones((window, 1))])
    blended = stitch_windows(windows, starts, 15)[:, 0]
    plain = stitch_windows(windows, starts, 15, weights=np.ones(window))[:, 0]
    w = blend_weights(window)
    np.testing.assert_allclose(blended[6:9], w[:3] / (w[6:] + w[:3]))
    np.testing.assert_allclose(plain[6:9], 0.5)
    assert np.all(np.diff(blended[5:10]) > 0)        # no step where a window starts or ends
    np.testing.assert_array_equal(blended[:6], 0.0)
    np.testing.assert_array_equal(blended[9:], 1.0)


def test_bad_weights_are_refused():
    windows = np.zeros((2, 4, 1))
    with pytest.raises(ValueError, match="weights"):
        stitch_windows(windows, np.array([0, 2]), 6, weights=np.ones(3))
    with pytest.raises(ValueError, match="weights"):
        stitch_windows(windows, np.array([0, 2]), 6, weights=np.array([1.0, 0.0, 1.0, 1.0]))
