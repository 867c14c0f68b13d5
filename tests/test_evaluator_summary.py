"""The demo's evaluator (d3p_ros/evaluator_node.py) scores skeletons matched by stamp and
track, and counts skeletons, not messages: causal mode publishes one message per frame with
every person in it, lagged mode one per person and window."""

from types import SimpleNamespace

import numpy as np

from d3p_model.skeleton import ROOT
from d3p_ros.evaluator_node import Evaluator, format_summary


def message(frame, tracks, offset_m=0.0, frame_id="camera"):
    pose = np.zeros((17, 3))
    pose[np.arange(17) != ROOT] += offset_m      # scored root-relative: the root stays
    skeletons = [SimpleNamespace(track_id=t, positions=pose.ravel().tolist(),
                                 uncertainty=[0.01] * 17) for t in tracks]
    return SimpleNamespace(header=SimpleNamespace(stamp=SimpleNamespace(sec=frame, nanosec=0),
                                                  frame_id=frame_id), skeletons=skeletons)


def scores():
    evaluator = Evaluator.__new__(Evaluator)      # the scoring state only, no ROS node
    evaluator._init_scores(SimpleNamespace())
    return evaluator


def test_lagged_messages_one_person_each_count_as_skeletons():
    evaluator = scores()
    for frame in range(3):
        evaluator._on_message("input", message(frame, [1, 2], offset_m=0.02))
        evaluator._on_message("truth", message(frame, [1, 2]))
        for track in (1, 2):       # lagged mode: a message per person
            evaluator._on_message("refined", message(frame, [track], offset_m=0.01))
    s = evaluator.summary()
    assert s["received_skeletons"] == {"input": 6, "refined": 6, "truth": 6}
    assert s["received_messages"]["refined"] == 6 and s["received_messages"]["input"] == 3
    assert s["matched_skeletons"] == 6
    # every joint but the root 1 cm off in x, y and z: sqrt(3) cm, 16 of 17 joints
    assert np.isclose(s["mpjpe_refined_mm"], 10 * np.sqrt(3) * 16 / 17)
    assert "skeletons: 6 input, 6 refined (0 not refined" in format_summary(s)


def test_a_person_not_refined_is_counted_as_such():
    evaluator = scores()
    evaluator._on_message("input", message(0, [1, 2], offset_m=0.02))
    evaluator._on_message("truth", message(0, [1, 2]))
    evaluator._on_message("refined", message(0, [1], offset_m=0.01))
    s = evaluator.summary()
    assert s["matched_skeletons"] == 1
    assert "skeletons: 2 input, 1 refined (1 not refined" in format_summary(s)


def test_ground_truth_fed_as_input_is_reported_not_divided_by():
    evaluator = scores()
    evaluator._on_message("input", message(0, [1]))
    evaluator._on_message("truth", message(0, [1]))
    evaluator._on_message("refined", message(0, [1], offset_m=0.01))
    s = evaluator.summary()
    assert s["mpjpe_input_mm"] == 0.0 and np.isnan(s["improvement_percent"])
    assert "the input has no error to lower" in format_summary(s)
