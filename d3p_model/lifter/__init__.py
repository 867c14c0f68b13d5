"""The base 2D-to-3D lifter whose errors the refiner learns to remove."""

from .model import WindowMLPLifter

__all__ = ["WindowMLPLifter"]
