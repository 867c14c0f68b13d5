"""Refined skeletons as a visualization_msgs/MarkerArray for RViz.

Per person two markers: a LINE_LIST of bones and a SPHERE_LIST of joints, colour chosen
from the track id. A short lifetime makes people who leave disappear without a delete.
Track ids are 64-bit and Marker.id is 32-bit, so marker ids come from `MarkerIds`: the
track id where it fits and is free, always distinct among the people drawn most recently.
Root-relative skeletons are drawn with the pelvis at `root_offset` (in front of the camera)
so they are visible; absolute ones where they are.
"""

from __future__ import annotations

import colorsys
from collections import OrderedDict

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from d3p_model.skeleton import H36M17_BONES

NAMESPACE_BONES = "d3p_bones"
NAMESPACE_JOINTS = "d3p_joints"


def track_color(track_id: int) -> ColorRGBA:
    # golden-ratio hue steps keep neighbouring ids apart
    hue = (int(track_id) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 0.95)
    return ColorRGBA(r=r, g=g, b=b, a=1.0)


INT32_MAX = 2 ** 31 - 1


class MarkerIds:
    """track id -> marker id, distinct among the `capacity` most recently drawn tracks.

    A track keeps its own id as marker id when that fits Marker.id (int32) and no other
    of those tracks has it; otherwise it gets the smallest free id. The least recently
    drawn track gives its id up when a new one needs room (its markers have expired by
    then, or the new person's replace them).
    """

    def __init__(self, capacity: int = 64):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._ids: OrderedDict[int, int] = OrderedDict()    # least recently drawn first
        self._used: set[int] = set()

    def __call__(self, track_id: int) -> int:
        track_id = int(track_id)
        if track_id in self._ids:
            self._ids.move_to_end(track_id)
            return self._ids[track_id]
        if len(self._ids) >= self.capacity:
            _, freed = self._ids.popitem(last=False)
            self._used.discard(freed)
        marker_id = track_id
        if not 0 <= marker_id <= INT32_MAX or marker_id in self._used:
            marker_id = next(i for i in range(len(self._used) + 1) if i not in self._used)
        self._ids[track_id] = marker_id
        self._used.add(marker_id)
        return marker_id


def skeleton_markers(header, people, marker_ids: MarkerIds | None = None,
                     lifetime_sec: float = 0.25, root_offset=(0.0, 0.0, 3.0),
                     line_width: float = 0.02, joint_size: float = 0.04) -> MarkerArray:
    """people: iterable of (track_id, positions (17, 3) metres, root_relative).
    `marker_ids`: the caller's MarkerIds, kept across calls (one just for this call if None)."""
    people = list(people)
    marker_ids = marker_ids if marker_ids is not None else MarkerIds(max(1, len(people)))
    lifetime = Duration(sec=int(lifetime_sec), nanosec=int((lifetime_sec % 1) * 1e9))
    out = MarkerArray()
    for track_id, positions, root_relative in people:
        marker_id = marker_ids(track_id)
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        if root_relative:
            positions = positions + np.asarray(root_offset, dtype=np.float64)
        points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in positions]
        color = track_color(track_id)
        bones = Marker(header=header, ns=NAMESPACE_BONES, id=marker_id,
                       type=Marker.LINE_LIST, action=Marker.ADD, lifetime=lifetime)
        bones.pose.orientation.w = 1.0
        bones.scale.x = line_width
        bones.color = color
        bones.points = [points[i] for bone in H36M17_BONES for i in bone]
        joints = Marker(header=header, ns=NAMESPACE_JOINTS, id=marker_id,
                        type=Marker.SPHERE_LIST, action=Marker.ADD, lifetime=lifetime)
        joints.pose.orientation.w = 1.0
        joints.scale.x = joints.scale.y = joints.scale.z = joint_size
        joints.color = color
        joints.points = points
        out.markers += [bones, joints]
    return out
