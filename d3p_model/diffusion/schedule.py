"""Cosine noise schedule (improved DDPM): abar(t) = f(t) / f(0), t = 0 .. T."""

import math

import torch

DEFAULT_TIMESTEPS = 50
DEFAULT_OFFSET = 0.008


def cosine_alpha_bar(timesteps: int = DEFAULT_TIMESTEPS, offset: float = DEFAULT_OFFSET,
                     dtype=torch.float64) -> torch.Tensor:
    """(timesteps + 1,) tensor: abar[0] = 1, decreasing, abar[timesteps] ~ 0.

    Computed in float64: at t = T the value is ~1e-33 and the DDIM step divides by
    sqrt(abar) + sqrt(1 - abar), which must stay exact for the oracle test.
    """
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    t = torch.arange(timesteps + 1, dtype=torch.float64)
    f = torch.cos(((t / timesteps + offset) / (1 + offset)) * math.pi / 2) ** 2
    abar = (f / f[0]).clamp(0.0, 1.0)
    return abar.to(dtype)
