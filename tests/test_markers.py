"""Marker ids of the RViz skeletons (issue 14, defect 6: ids were track_id % (2^31 - 1), so
tracks 1 and 2^31 drew over each other)."""

import numpy as np
import pytest

pytest.importorskip("visualization_msgs")

from d3p_ros.markers import INT32_MAX, MarkerIds, skeleton_markers  # noqa: E402


def ids_of(markers, namespace="d3p_bones"):
    return [m.id for m in markers.markers if m.ns == namespace]


def test_tracks_whose_ids_collide_modulo_int32_get_distinct_marker_ids():
    from std_msgs.msg import Header
    pose = np.zeros((17, 3))
    tracks = [1, 2 ** 31, 2 ** 32 + 1, 2 ** 64 - 1, 2 ** 31 - 1]
    markers = skeleton_markers(Header(), [(t, pose, True) for t in tracks], MarkerIds(64))
    ids = ids_of(markers)
    assert len(set(ids)) == len(tracks) and ids_of(markers, "d3p_joints") == ids
    assert all(0 <= i <= INT32_MAX for i in ids)
    assert ids[0] == 1 and ids[-1] == 2 ** 31 - 1       # ids that fit keep the track id


def test_ids_stay_put_and_are_reused_only_when_a_track_leaves():
    ids = MarkerIds(capacity=3)
    assert [ids(7), ids(8), ids(2 ** 40)] == [7, 8, 0]
    assert ids(7) == 7 and ids(2 ** 40) == 0            # stable per track
    assert ids(9) == 9                                  # 8, least recently drawn, gave way
    assert ids(2 ** 41) == 1                            # 7 gave way; the smallest free id
    assert sorted(ids(t) for t in (2 ** 40, 9, 2 ** 41)) == [0, 1, 9]
