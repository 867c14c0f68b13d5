"""The d3p_ros messages: they import, every field has a test value, and they cross from one
process to another over DDS on loopback with every field intact.

The same file is the publisher and the subscriber: `python test_messages_dds.py publish` or
`... subscribe`, each started by the test as a separate process in the test's own domain.
"""

import array
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from d3p_ros.msg import Skeleton2D, Skeleton2DArray, Skeleton3D, Skeleton3DArray

HERE = Path(__file__).resolve()
REPO = HERE.parent.parent
N_JOINTS = 17
TOPICS = {"skeletons_2d": Skeleton2DArray, "skeletons_3d": Skeleton3DArray}


def _float32s(rng, n, low, high):
    # Values a float32 holds exactly, so they must come back equal, not just close.
    return [float(x) for x in rng.uniform(low, high, n).astype(np.float32)]


def sample_messages():
    """One Skeleton2DArray and one Skeleton3DArray with every field set to a value that is
    not its default, nested arrays of several people, the limits of the integer types."""
    rng = np.random.default_rng(7)
    people_2d, people_3d = [], []
    track_ids = [7, 42, 2**64 - 1]  # uint64 full range: a Python float would lose the last
    for person, track_id in enumerate(track_ids):
        p2 = Skeleton2D()
        p2.header.stamp.sec = 1_700_000_000 + person
        p2.header.stamp.nanosec = 999_999_999 - person
        p2.header.frame_id = "camera_color_optical_frame"
        p2.track_id = track_id
        p2.layout = Skeleton2D.LAYOUT_H36M17
        p2.image_width = 1920
        p2.image_height = 1080
        p2.u = _float32s(rng, N_JOINTS, 0, 1920)
        p2.v = _float32s(rng, N_JOINTS, 0, 1080)
        p2.confidence = _float32s(rng, N_JOINTS, 0, 1)
        people_2d.append(p2)

        p3 = Skeleton3D()
        p3.header = p2.header
        p3.track_id = track_id
        p3.layout = Skeleton3D.LAYOUT_H36M17
        p3.root_relative = person % 2 == 0
        p3.positions = _float32s(rng, 3 * N_JOINTS, -1.5, 1.5)
        p3.confidence = _float32s(rng, N_JOINTS, 0, 1)
        p3.uncertainty = _float32s(rng, N_JOINTS, 0.001, 0.2)
        people_3d.append(p3)
    frame_2d = Skeleton2DArray(header=people_2d[0].header, skeletons=people_2d)
    frame_3d = Skeleton3DArray(header=people_3d[0].header, skeletons=people_3d)
    return {"skeletons_2d": frame_2d, "skeletons_3d": frame_3d}


def to_plain(value):
    """A message as nested dicts/lists of Python scalars, field by field."""
    if hasattr(type(value), "get_fields_and_field_types"):
        return {name: to_plain(getattr(value, name))
                for name in type(value).get_fields_and_field_types()}
    if isinstance(value, (list, tuple, array.array, np.ndarray)):
        return [to_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _fields_at_default(message, default, path=""):
    """Paths of fields (recursing into messages and the first element of message arrays)
    whose value equals the freshly constructed message's."""
    found = []
    for name in type(message).get_fields_and_field_types():
        value, blank = getattr(message, name), getattr(default, name)
        if hasattr(type(value), "get_fields_and_field_types"):
            found += _fields_at_default(value, blank, f"{path}{name}.")
        elif to_plain(value) == to_plain(blank):
            found.append(path + name)
        elif isinstance(value, list) and value and hasattr(type(value[0]), "get_fields_and_field_types"):
            found += _fields_at_default(value[0], type(value[0])(), f"{path}{name}[0].")
    return found


# --- the two processes -----------------------------------------------------------------

def _reliable_qos():
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def publish(seconds: float) -> None:
    """Publish the sample messages every 50 ms until `seconds` have passed."""
    import rclpy
    rclpy.init()
    node = rclpy.create_node("d3p_test_publisher")
    messages = sample_messages()
    publishers = {topic: node.create_publisher(TOPICS[topic], topic, _reliable_qos())
                  for topic in messages}
    print("PUBLISHER_MODULE", Skeleton2D.__module__, sys.modules["d3p_ros.msg"].__file__,
          flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for topic, message in messages.items():
            publishers[topic].publish(message)
        time.sleep(0.05)
    node.destroy_node()
    rclpy.shutdown()


def subscribe(seconds: float) -> None:
    """Print the first message of each topic as JSON, then exit; exit 3 on time-out."""
    import rclpy
    rclpy.init()
    node = rclpy.create_node("d3p_test_subscriber")
    received = {}

    def keep(topic):
        return lambda message: received.setdefault(topic, to_plain(message))

    # held in a list so they stay alive while the node spins
    subscriptions = [node.create_subscription(TOPICS[topic], topic, keep(topic), _reliable_qos())
                     for topic in TOPICS]
    deadline = time.monotonic() + seconds
    while len(received) < len(TOPICS) and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    print("RECEIVED", json.dumps(received), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    sys.exit(0 if len(received) == len(TOPICS) else 3)


# --- the tests -------------------------------------------------------------------------

def test_messages_import_and_declare_the_layout():
    assert Skeleton2D.LAYOUT_H36M17 == Skeleton3D.LAYOUT_H36M17 == "h36m17"
    fields_2d = Skeleton2D.get_fields_and_field_types()
    fields_3d = Skeleton3D.get_fields_and_field_types()
    assert fields_2d["header"] == "std_msgs/Header"
    assert fields_2d["track_id"] == fields_3d["track_id"] == "uint64"
    assert fields_2d["u"] == fields_2d["v"] == fields_2d["confidence"] == "sequence<float>"
    assert fields_3d["positions"] == fields_3d["uncertainty"] == "sequence<float>"
    assert Skeleton2DArray.get_fields_and_field_types()["skeletons"] == "sequence<d3p_ros/Skeleton2D>"
    assert Skeleton3DArray.get_fields_and_field_types()["skeletons"] == "sequence<d3p_ros/Skeleton3D>"


def test_sample_sets_every_field():
    # Guards the round trip below: a field added to a .msg but not to sample_messages()
    # would travel as its default and prove nothing.
    for topic, message in sample_messages().items():
        assert _fields_at_default(message, type(message)()) == [], topic


def test_messages_travel_between_processes_with_every_field_intact(ros_env):
    expected = {topic: to_plain(message) for topic, message in sample_messages().items()}
    # Both start at once: the publisher repeats every 50 ms until the subscriber has both.
    subscriber = subprocess.Popen([sys.executable, str(HERE), "subscribe", "40"], env=ros_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    publisher = subprocess.Popen([sys.executable, str(HERE), "publish", "45"], env=ros_env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = subscriber.communicate(timeout=60)
    finally:
        subscriber.kill()
        publisher.terminate()
        pub_out, pub_err = publisher.communicate(timeout=20)
    assert subscriber.returncode == 0, f"subscriber exit {subscriber.returncode}:\n{out}\n{err}"
    received = json.loads(out.split("RECEIVED ", 1)[1])
    assert received == expected
    # The child processes ran this file as a script: their d3p_ros is the one installed in
    # the venv, while this process imported the checkout's (conftest, docs/install.md).
    assert "PUBLISHER_MODULE d3p_ros.msg" in pub_out, pub_out + pub_err
    assert str(REPO / "d3p_ros") not in pub_out, pub_out


def test_checkout_messages_match_the_installed_build():
    """The copy of the generated modules in the checkout (scripts/setup.sh) is the build's."""
    checkout = REPO / "d3p_ros"
    if not (checkout / "msg" / "__init__.py").is_file():
        pytest.skip("this checkout holds no copy of the generated messages (built without "
                    "scripts/setup.sh); conftest points d3p_ros at the installed ones")
    script = ("import d3p_ros.msg, pathlib; "
              "print(pathlib.Path(d3p_ros.msg.__file__).resolve().parent)")
    installed = Path(subprocess.run([sys.executable, "-c", script], cwd="/", check=True,
                                    capture_output=True, text=True).stdout.strip())
    assert installed != checkout / "msg", "the venv has no d3p_ros of its own installed"
    generated = sorted(p.name for p in installed.iterdir() if p.suffix in (".py", ".c"))
    assert generated == sorted(p.name for p in (checkout / "msg").iterdir()
                               if p.suffix in (".py", ".c"))
    for name in generated:
        assert (checkout / "msg" / name).read_bytes() == (installed / name).read_bytes(), name
    for library in installed.parent.glob("d3p_ros_s__*.so"):
        assert (checkout / library.name).read_bytes() == library.read_bytes(), library.name


if __name__ == "__main__":
    role, seconds = sys.argv[1], float(sys.argv[2])
    {"publish": publish, "subscribe": subscribe}[role](seconds)
