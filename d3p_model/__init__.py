"""d3p_model: ROS-free library for D3PRefiner (data, lifter, CND, diffusion, denoiser,
training, evaluation, export). The pipeline reads in that order: see the sub-packages."""

__version__ = "0.1.0"
