"""The diffusion side of D3PRefiner: cosine schedule, CND forward process, DDIM sampling."""

from .process import ddim_refine, ddim_timesteps, forward_noisy_pose, predict_clean
from .schedule import DEFAULT_OFFSET, DEFAULT_TIMESTEPS, cosine_alpha_bar

__all__ = ["cosine_alpha_bar", "DEFAULT_TIMESTEPS", "DEFAULT_OFFSET", "forward_noisy_pose",
           "predict_clean", "ddim_timesteps", "ddim_refine"]
