"""Conditional noisy-pose distribution (CND): a Gaussian model of a lifter's errors."""

from .gaussian import (CONDITION_DIM, ERROR_DIM, ConditionalNoiseModel, TorchCND,
                       condition_vectors, error_vectors)

__all__ = ["ConditionalNoiseModel", "TorchCND", "condition_vectors", "error_vectors",
           "ERROR_DIM", "CONDITION_DIM"]
