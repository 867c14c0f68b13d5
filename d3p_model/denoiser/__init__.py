"""PoseDenoiser: the network of the reverse process, f(y_t, x, t) -> normalised error."""

from .model import DenoiserConfig, PoseDenoiser

__all__ = ["PoseDenoiser", "DenoiserConfig"]
