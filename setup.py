"""ROS-free install of d3p_model (training, evaluation, export) with the `d3p` command.

    pip install .            # library + `d3p` entry point
    pip install .[onnx]      # + ONNX export / ONNX Runtime inference on the CPU
    pip install .[gpu]       # + ONNX Runtime for CUDA

The ROS 2 package (d3p_ros, its messages and nodes) is built with CMakeLists.txt instead:
see docs/install.md.
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
# One version for the library and the ROS package: read it, don't import the package.
VERSION = re.search(r'^__version__ = "([^"]+)"',
                    (HERE / "d3p_model" / "__init__.py").read_text(), re.M).group(1)

setup(
    name="d3p",
    version=VERSION,
    description="D3PRefiner: refine monocular 3D human poses with a diffusion model",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["d3p_model", "d3p_model.*"]),
    package_data={"d3p_model": ["configs/*.yaml", "models/**/*"]},
    # Ranges, not pins: requirements/ holds the exact, tested versions (torch 2.13.0, ...),
    # which satisfy these.
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "torch>=2.1",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "matplotlib>=3.7",
    ],
    extras_require={
        "onnx": ["onnx>=1.15", "onnxruntime>=1.17"],
        "gpu": ["onnx>=1.15", "onnxruntime-gpu>=1.17"],
    },
    entry_points={"console_scripts": ["d3p = d3p_model.cli:main"]},
)
