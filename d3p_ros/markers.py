"""Refined skeletons as a visualization_msgs/MarkerArray for RViz.

Per person two markers: a LINE_LIST of bones and a SPHERE_LIST of joints, colour chosen
from the track id. A short lifetime makes people who leave disappear without a delete.
Root-relative skeletons are drawn with the pelvis at `root_offset` (in front of the camera)
so they are visible; absolute ones where they are.
"""

from __future__ import annotations

import colorsys

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


def _marker_id(track_id: int) -> int:
    return int(track_id) % (2 ** 31 - 1)   # Marker.id is int32


def skeleton_markers(header, people, lifetime_sec: float = 0.25,
                     root_offset=(0.0, 0.0, 3.0), line_width: float = 0.02,
                     joint_size: float = 0.04) -> MarkerArray:
    """people: iterable of (track_id, positions (17, 3) metres, root_relative)."""
    lifetime = Duration(sec=int(lifetime_sec), nanosec=int((lifetime_sec % 1) * 1e9))
    out = MarkerArray()
    for track_id, positions, root_relative in people:
        positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        if root_relative:
            positions = positions + np.asarray(root_offset, dtype=np.float64)
        points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in positions]
        color = track_color(track_id)
        bones = Marker(header=header, ns=NAMESPACE_BONES, id=_marker_id(track_id),
                       type=Marker.LINE_LIST, action=Marker.ADD, lifetime=lifetime)
        bones.pose.orientation.w = 1.0
        bones.scale.x = line_width
        bones.color = color
        bones.points = [points[i] for bone in H36M17_BONES for i in bone]
        joints = Marker(header=header, ns=NAMESPACE_JOINTS, id=_marker_id(track_id),
                        type=Marker.SPHERE_LIST, action=Marker.ADD, lifetime=lifetime)
        joints.pose.orientation.w = 1.0
        joints.scale.x = joints.scale.y = joints.scale.z = joint_size
        joints.color = color
        joints.points = points
        out.markers += [bones, joints]
    return out
