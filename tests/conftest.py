"""Test-wide setup: every test process keeps its DDS traffic on loopback, in a domain of its
own, with ROS logs in a temporary directory (the network rule of ../shared/design/ros.md).

At import time, before any test can start rclpy, this sets in os.environ:
  ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST  discovery never leaves loopback
  ROS_DOMAIN_ID=<reserved id in 1..101>    a domain no other pytest run on this machine uses
  ROS_LOG_DIR=<temporary directory>        not ~/.ros/log
Node tests that start processes use the `ros_env` fixture below.
"""

import atexit
import fcntl
import itertools
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# DDS domain ids that are safe on Linux with default ports; 0 is left to people's own use.
DOMAIN_IDS = range(1, 102)
_LOCK_DIR = Path(tempfile.gettempdir()) / "d3p-ros-domain-ids"
_held_locks = {}  # domain id -> open lock file, held for as long as the id is in use
_next_start = itertools.count()


def reserve_domain_id() -> int:
    """A ROS_DOMAIN_ID that no other process using this function holds.

    An id is held through an exclusive flock on a file per id, so parallel pytest runs (and
    tests within one run) never share a domain; the kernel releases the lock when the
    process ends, however it ends. The search starts at an offset derived from the pid to
    keep contention low.
    """
    _LOCK_DIR.mkdir(parents=True, exist_ok=True)
    start = os.getpid() + 37 * next(_next_start)
    for i in range(len(DOMAIN_IDS)):
        domain_id = DOMAIN_IDS[(start + i) % len(DOMAIN_IDS)]
        if domain_id in _held_locks:
            continue
        lock = open(_LOCK_DIR / f"{domain_id}.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        _held_locks[domain_id] = lock
        return domain_id
    raise RuntimeError(f"all ROS domain ids {DOMAIN_IDS.start}..{DOMAIN_IDS.stop - 1} are in use "
                       f"by other test processes (locks in {_LOCK_DIR})")


def release_domain_id(domain_id: int) -> None:
    lock = _held_locks.pop(domain_id, None)
    if lock is not None:
        lock.close()


def _isolate_this_process() -> None:
    log_dir = tempfile.mkdtemp(prefix="d3p-ros-log-")
    atexit.register(shutil.rmtree, log_dir, ignore_errors=True)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(reserve_domain_id())
    os.environ["ROS_LOG_DIR"] = log_dir
    # Jazzy prefers ROS_AUTOMATIC_DISCOVERY_RANGE; a stale ROS_LOCALHOST_ONLY=0 or a peer
    # list from the user's shell would contradict it.
    os.environ.pop("ROS_LOCALHOST_ONLY", None)
    os.environ.pop("ROS_STATIC_PEERS", None)


_isolate_this_process()


def _add_installed_messages_to_checkout() -> None:
    """Let the checkout's d3p_ros find the generated d3p_ros.msg when it lacks its copy.

    scripts/setup.sh copies the generated modules into the checkout's d3p_ros/ (see
    docs/install.md). A checkout built another way (colcon, a bare cmake install) has
    none, and, being first on sys.path, would hide the installed d3p_ros.msg: append the
    installed package directory to the checkout package's search path instead.
    """
    checkout = REPO / "d3p_ros"
    if (checkout / "msg" / "__init__.py").is_file():
        return
    for entry in sys.path:
        installed = Path(entry or ".").resolve() / "d3p_ros"
        if installed != checkout and (installed / "msg" / "__init__.py").is_file():
            import d3p_ros
            if str(installed) not in d3p_ros.__path__:
                d3p_ros.__path__.append(str(installed))
            return


_add_installed_messages_to_checkout()


@pytest.fixture
def ros_env(tmp_path):
    """Environment (a dict) for a process a test starts that uses ROS 2 (a node, a replay).

    A copy of os.environ with:
      ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST  DDS discovery stays on loopback;
      ROS_DOMAIN_ID                             an id reserved for this test alone (1..101,
                                                released when the test ends), so the test
                                                sees neither other tests' nor other runs'
                                                nodes, nor leftovers of an earlier test;
      ROS_LOG_DIR                               a directory under the test's tmp_path.
    Every process of one test that must talk to the others gets the same dict:

        def test_node(ros_env):
            node = subprocess.Popen([...], env=ros_env)
            listener = subprocess.run([...], env=ros_env, timeout=30)

    A test that uses rclpy inside the pytest process itself runs in the process-wide
    domain set at conftest import (os.environ); pass
    `rclpy.init(domain_id=int(ros_env["ROS_DOMAIN_ID"]))` to share this test's domain.
    """
    domain_id = reserve_domain_id()
    log_dir = tmp_path / "ros_log"
    log_dir.mkdir()
    env = dict(os.environ)
    env.update({
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": str(domain_id),
        "ROS_LOG_DIR": str(log_dir),
        "PYTHONUNBUFFERED": "1",  # a child's output arrives as it prints, not at exit
    })
    yield env
    release_domain_id(domain_id)
