"""The debug image: image conversion without cv_bridge, projection, placement, drawing.

(The node publishing it over DDS is tested in test_node_refine.py.)
"""

from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("sensor_msgs")

from d3p_ros.debug_image import (DebugImageRenderer, draw_skeleton, fit_translation,  # noqa: E402
                                 image_to_rgb, project, rgb_to_image)

K = np.array([200.0, 0, 100, 0, 210.0, 90, 0, 0, 1])


def image_msg(rgb: np.ndarray, encoding: str, pad: int = 0):
    if encoding == "bgr8":
        data = rgb[..., ::-1]
    elif encoding == "mono8":
        data = rgb[..., :1]
    elif encoding == "rgba8":
        data = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    else:
        data = rgb
    h, w, c = data.shape
    rows = np.concatenate([data.reshape(h, w * c), np.zeros((h, pad), np.uint8)], axis=1)
    return SimpleNamespace(encoding=encoding, height=h, width=w, step=w * c + pad, data=rows.tobytes())


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8"])
def test_image_to_rgb_colour_encodings(encoding):
    rgb = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(image_msg(rgb, encoding, pad=3)), rgb)


def test_image_to_rgb_mono_and_errors():
    grey = np.random.default_rng(1).integers(0, 255, (4, 6, 1), dtype=np.uint8).repeat(3, axis=2)
    np.testing.assert_array_equal(image_to_rgb(image_msg(grey, "mono8")), grey)
    with pytest.raises(ValueError, match="needs cv_bridge"):
        image_to_rgb(SimpleNamespace(encoding="16UC1", height=2, width=2, step=4, data=b"\0" * 8))
    with pytest.raises(ValueError, match="too short"):
        image_to_rgb(SimpleNamespace(encoding="rgb8", height=2, width=2, step=6, data=b"\0" * 6))


def test_rgb_to_image_round_trip():
    from std_msgs.msg import Header
    rgb = np.random.default_rng(2).integers(0, 255, (3, 4, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb, Header(frame_id="cam"))
    assert msg.encoding == "rgb8" and msg.header.frame_id == "cam"
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)


def test_fit_translation_recovers_the_root():
    rng = np.random.default_rng(3)
    relative = rng.normal(0, 0.3, (17, 3))
    relative -= relative[0]
    root = np.array([0.4, -0.2, 4.5])
    pixels, valid = project(relative + root, K)
    assert valid.all()
    pixels[[2, 5]] = np.nan                          # undetected joints are ignored
    np.testing.assert_allclose(fit_translation(relative, pixels, K), root, atol=1e-6)
    assert fit_translation(relative, np.full((17, 2), np.nan), K) is None


def test_draw_skeleton_and_renderer():
    from std_msgs.msg import Header
    rng = np.random.default_rng(4)
    relative = rng.normal(0, 0.25, (17, 3))
    relative -= relative[0]
    root = np.array([0.0, 0.0, 4.0])
    pixels, valid = project(relative + root, K)
    blank = np.zeros((180, 200, 3), np.uint8)
    drawn = blank.copy()
    draw_skeleton(drawn, pixels, valid, (255, 0, 0))
    assert (drawn[..., 0] == 255).sum() > 100 and drawn[..., 1].max() == 0
    x, y = np.round(pixels[0]).astype(int)
    assert drawn[y, x, 0] == 255                     # a joint is where it projects

    renderer = DebugImageRenderer(slop=0.01)
    assert renderer.render(Header(), 0, []) is None  # nothing to draw on yet
    renderer.set_camera_info(SimpleNamespace(k=K.tolist()))
    renderer.add_image(1_000_000_000, image_msg(blank, "bgr8"))
    people = [(1, relative, True, pixels.astype(np.float32), (0, 255, 0))]
    assert renderer.render(Header(), 2_000_000_000, people) is None   # no image at that stamp
    out = renderer.render(Header(frame_id="cam"), 1_005_000_000, people)
    img = image_to_rgb(out)
    assert img.shape == blank.shape and (img[..., 1] == 255).sum() > 100
    np.testing.assert_array_equal(img[..., 1] == 255, drawn[..., 0] == 255)   # same place
