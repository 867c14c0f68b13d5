"""Evaluation: pose metrics, per-action reports over prediction files, and the classical
reference refiner (Savitzky-Golay smoothing) that D3PRefiner is compared against."""

from .metrics import (acceleration_error, acceleration_error_per_frame, mpjpe, mpjpe_per_frame,
                      p_mpjpe, p_mpjpe_per_frame, procrustes_align)

__all__ = ["acceleration_error", "acceleration_error_per_frame", "mpjpe", "mpjpe_per_frame",
           "p_mpjpe", "p_mpjpe_per_frame", "procrustes_align"]
