"""CND forward process and deterministic DDIM reverse process (design: refiner.md).

The "noise" is not N(0, I) but the sampled noisy pose y~ = y0 + e~, so at t = T the
diffused pose is a plausible estimator output and inference starts from the real one:

    y_t = sqrt(abar_t) y0 + sqrt(1 - abar_t) (y0 + e~)
"""

from typing import Callable

import torch


def _coefficients(alpha_bar: torch.Tensor, t: torch.Tensor, like: torch.Tensor):
    """sqrt(abar_t), sqrt(1 - abar_t) for a batch of t, shaped to broadcast over `like`."""
    abar = alpha_bar.to(like.device)[t].to(like.dtype)
    shape = (-1,) + (1,) * (like.dim() - 1)
    return abar.sqrt().reshape(shape), (1 - abar).sqrt().reshape(shape)


def forward_noisy_pose(y0: torch.Tensor, error: torch.Tensor, t: torch.Tensor,
                       alpha_bar: torch.Tensor) -> torch.Tensor:
    """y_t for clean poses y0 (B, ...), errors e~ (B, ...), integer steps t (B,)."""
    a, b = _coefficients(alpha_bar, t, y0)
    return a * y0 + b * (y0 + error)


def predict_clean(y_t: torch.Tensor, error: torch.Tensor, t: torch.Tensor,
                  alpha_bar: torch.Tensor) -> torch.Tensor:
    """Invert the forward process given a (predicted) error: y0 = (y_t - b e) / (a + b)."""
    a, b = _coefficients(alpha_bar, t, y_t)
    return (y_t - b * error) / (a + b)


def ddim_timesteps(timesteps: int, steps: int) -> list[int]:
    """Evenly spaced grid T = t_0 > t_1 > ... > t_K = 0 (K = steps)."""
    if steps < 1:
        raise ValueError(f"the number of DDIM steps must be >= 1, got {steps}")
    if steps > timesteps:
        raise ValueError(f"{steps} DDIM steps exceed the {timesteps} diffusion steps")
    return [round(timesteps * (steps - k) / steps) for k in range(steps + 1)]


def ddim_refine(y_hat: torch.Tensor, predict_error: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                alpha_bar: torch.Tensor, steps: int = 2) -> torch.Tensor:
    """Deterministic K-step DDIM from y_T = y_hat; returns the last predicted clean pose.

    predict_error(y_t, t) -> e_pred, with t a (1,) long tensor of the current step: one step
    for the whole batch, broadcast, so the step embedding is computed once (and is a constant
    of an exported graph, independent of the batch size).
    """
    timesteps = int(alpha_bar.shape[0]) - 1
    grid = ddim_timesteps(timesteps, steps)
    y_t = y_hat
    y0_pred = y_hat
    for t_now, t_next in zip(grid[:-1], grid[1:]):
        t = torch.full((1,), t_now, dtype=torch.long, device=y_hat.device)
        error = predict_error(y_t, t)
        y0_pred = predict_clean(y_t, error, t, alpha_bar)
        t_prev = torch.full_like(t, t_next)
        y_t = forward_noisy_pose(y0_pred, error, t_prev, alpha_bar)
    return y0_pred
