"""Start the D3PRefiner node with config/refiner.yaml from the d3p_ros share directory.

    ros2 launch d3p_ros refiner.launch.py
    ros2 launch d3p_ros refiner.launch.py model_dir:=/path/to/model device:=cuda mode:=lagged
    ros2 launch d3p_ros refiner.launch.py namespace:=/cam1   # topics /cam1/human_pose2d ...

Launch arguments override the parameter file; an argument left empty keeps the file's
value. The node configures and activates itself (parameter `autostart`); with
autostart:=false a lifecycle manager drives it through /d3p_refiner/change_state.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

PACKAGE = "d3p_ros"
EXECUTABLE = "refiner_node"
NODE_NAME = "d3p_refiner"
PARAMS_FILE = os.path.join("config", "refiner.yaml")

# launch argument (= parameter name) -> (type, description)
OVERRIDES = {
    "model_dir": (str, "D3PRefiner model directory (empty: the shipped model)"),
    "backend": (str, "inference backend: onnx (ONNX Runtime) | torch"),
    "device": (str, "cpu | cuda | cuda:N"),
    "input_2d_topic": (str, "Skeleton2DArray input topic"),
    "input_3d_topic": (str, "Skeleton3DArray input topic (the lifter's)"),
    "output_topic": (str, "refined Skeleton3DArray topic"),
    "mode": (str, "causal | lagged"),
    "lag_frames": (int, "lagged mode look-ahead in frames (0: half the window)"),
    "stride": (int, "lagged mode: frames between one person's windows (0: the model's)"),
    "autostart": (bool, "configure and activate without a lifecycle manager"),
}


def _typed(value: str, value_type):
    if value_type is bool:
        if value.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"expected true or false, got {value!r}")
        return value.lower() in ("true", "1")
    return value_type(value)


def parameter_overrides(launch_configurations: dict) -> dict:
    """The node parameters given as launch arguments (empty ones keep the file's value)."""
    overrides = {}
    for name, (value_type, _) in OVERRIDES.items():
        value = launch_configurations.get(name, "")
        if value != "":
            overrides[name] = _typed(value, value_type)
    return overrides


def _refiner_node(context, *args, **kwargs):
    configs = context.launch_configurations
    # None, not "": launch_ros would pass an empty __ns:= remapping
    namespace = configs.get("namespace", "") or None
    return [Node(package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME, namespace=namespace,
                 output="screen", parameters=[configs["params_file"], parameter_overrides(configs)])]


def generate_launch_description() -> LaunchDescription:
    default_params = os.path.join(get_package_share_directory(PACKAGE), PARAMS_FILE)
    arguments = [DeclareLaunchArgument("params_file", default_value=default_params,
                                       description="the node's parameter file"),
                 DeclareLaunchArgument("namespace", default_value="",
                                       description="the node's namespace; its topics follow it")]
    arguments += [DeclareLaunchArgument(name, default_value="", description=description)
                  for name, (_, description) in OVERRIDES.items()]
    # Resolved at launch time so that unset arguments do not override the file with "".
    return LaunchDescription(arguments + [OpaqueFunction(function=_refiner_node)])
