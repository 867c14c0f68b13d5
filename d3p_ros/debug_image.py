"""Optional debug output: refined skeletons drawn over the camera image.

Images convert with `cv_bridge` where it is installed and with numpy otherwise (rgb8, bgr8,
mono8, rgba8, bgra8). Absolute skeletons are projected with the camera_info's K;
root-relative ones are first placed by the translation that best fits their input 2D
keypoints (linear least squares on the pinhole equations), which is what the lifter's
output means in the image.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from d3p_model.skeleton import H36M17_BONES

CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def _cv_bridge():
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


def cv_bridge_available() -> bool:
    # cv_bridge is optional (not a package.xml dependency): only the debug image uses it
    return _cv_bridge() is not None


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB copy; ValueError for what it cannot read."""
    bridge = _cv_bridge()
    if bridge is not None:
        return np.array(bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    encoding = msg.encoding.lower()
    if encoding not in CHANNELS:
        raise ValueError(f"image encoding {msg.encoding!r} needs cv_bridge, which is not "
                         f"installed (install ros-$ROS_DISTRO-cv-bridge, or publish one of "
                         f"{sorted(CHANNELS)})")
    channels = CHANNELS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if step < width * channels or data.size < step * height:
        raise ValueError(f"image data ({data.size} bytes, step {step}) too short for "
                         f"{width}x{height} {encoding}")
    pixels = data[: step * height].reshape(height, step)[:, : width * channels]
    pixels = pixels.reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    rgb = pixels[..., :3]
    return np.ascontiguousarray(rgb[..., ::-1] if encoding.startswith("bgr") else rgb)


def rgb_to_image(rgb: np.ndarray, header):
    from sensor_msgs.msg import Image
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    return Image(header=header, height=rgb.shape[0], width=rgb.shape[1], encoding="rgb8",
                 is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.tobytes())


def project(points: np.ndarray, k: np.ndarray):
    """(N, 3) camera-frame metres -> (N, 2) pixels and a mask of points in front (z > 5 cm)."""
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    points = np.asarray(points, dtype=np.float64)
    in_front = points[:, 2] > 0.05
    z = np.where(in_front, points[:, 2], 1.0)
    pixels = np.stack([k[0, 0] * points[:, 0] / z + k[0, 2], k[1, 1] * points[:, 1] / z + k[1, 2]], -1)
    return pixels, in_front


def fit_translation(relative: np.ndarray, pixels: np.ndarray, k: np.ndarray) -> np.ndarray | None:
    """Translation t with project(relative + t) closest to `pixels` (NaN rows ignored).

    Pinhole: fx (X + tx) = (u - cx)(Z + tz), fy (Y + ty) = (v - cy)(Z + tz): linear in t.
    """
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    ok = np.all(np.isfinite(pixels), axis=1)
    if ok.sum() < 2 or fx <= 0 or fy <= 0:
        return None
    rel, px = np.asarray(relative, np.float64)[ok], np.asarray(pixels, np.float64)[ok]
    du, dv = px[:, 0] - cx, px[:, 1] - cy
    zeros = np.zeros_like(du)
    a = np.concatenate([np.stack([np.full_like(du, fx), zeros, -du], 1),
                        np.stack([zeros, np.full_like(dv, fy), -dv], 1)])
    b = np.concatenate([du * rel[:, 2] - fx * rel[:, 0], dv * rel[:, 2] - fy * rel[:, 1]])
    t, *_ = np.linalg.lstsq(a, b, rcond=None)
    return t if np.all(np.isfinite(t)) and t[2] > 0 else None


def _draw_disc(img, centre, radius, color):
    h, w = img.shape[:2]
    x0, y0 = int(round(centre[0])), int(round(centre[1]))
    ys, xs = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    keep = xs ** 2 + ys ** 2 <= radius ** 2
    xs, ys = xs[keep] + x0, ys[keep] + y0
    inside = (xs >= 0) & (xs < w) & (ys >= 0) & (ys < h)
    img[ys[inside], xs[inside]] = color


def _draw_line(img, p0, p1, color, width):
    length = float(np.hypot(*(np.asarray(p1) - np.asarray(p0))))
    if not np.isfinite(length) or length > 10 * max(img.shape):
        return
    for s in np.linspace(0.0, 1.0, max(2, int(length) + 1)):
        _draw_disc(img, (1 - s) * np.asarray(p0) + s * np.asarray(p1), width // 2, color)


def draw_skeleton(img: np.ndarray, pixels: np.ndarray, valid: np.ndarray, color, width: int = 3) -> None:
    """Bones and joints into `img` (H, W, 3) in place; color is an RGB triple 0-255."""
    color = np.asarray(color, dtype=np.uint8)
    for parent, child in H36M17_BONES:
        if valid[parent] and valid[child]:
            _draw_line(img, pixels[parent], pixels[child], color, width)
    for j in np.flatnonzero(valid):
        _draw_disc(img, pixels[j], width, color)


class DebugImageRenderer:
    """Keeps the latest camera_info and the last few images; draws people on the image with
    the output's stamp (or the nearest within `slop` seconds)."""

    def __init__(self, buffer: int = 10, slop: float = 0.01):
        self.images: deque = deque(maxlen=buffer)     # (stamp_ns, Image msg)
        self.k = None
        self.slop_ns = int(slop * 1e9)

    def add_image(self, stamp_ns: int, msg) -> None:
        self.images.append((stamp_ns, msg))

    def set_camera_info(self, msg) -> None:
        k = np.asarray(msg.k, dtype=np.float64)
        self.k = k if k.shape == (9,) and k[0] > 0 and k[4] > 0 else None

    def render(self, header, stamp_ns: int, people):
        """people: (track_id, positions (17, 3), root_relative, pixels_2d (17, 2), rgb).
        Returns an rgb8 Image, or None without a matching image or camera_info."""
        if self.k is None or not self.images:
            return None
        best = min(self.images, key=lambda item: abs(item[0] - stamp_ns))
        if abs(best[0] - stamp_ns) > self.slop_ns:
            return None
        img = image_to_rgb(best[1]).copy()
        for _, positions, root_relative, pixels_2d, rgb in people:
            points = np.asarray(positions, np.float64)
            if root_relative:
                t = fit_translation(points, pixels_2d, self.k)
                if t is None:
                    continue
                points = points + t
            pixels, valid = project(points, self.k)
            draw_skeleton(img, pixels, valid, rgb)
        return rgb_to_image(img, header)
