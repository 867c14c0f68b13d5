"""Network building blocks shared by the base lifter and the PoseDenoiser."""

from .stc import MLP, STCAttention, STCBlock

__all__ = ["MLP", "STCAttention", "STCBlock"]
