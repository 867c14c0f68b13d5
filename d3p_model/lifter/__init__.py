"""The base 2D-to-3D lifter whose errors the refiner learns to remove."""

from .model import TemporalLifter

__all__ = ["TemporalLifter"]
