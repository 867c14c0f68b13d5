"""Cosine schedule, CND forward process and deterministic DDIM."""

import math

import pytest
import torch

from d3p_model.diffusion import (cosine_alpha_bar, ddim_refine, ddim_timesteps,
                                 forward_noisy_pose, predict_clean)


def test_schedule_endpoints_and_monotone():
    abar = cosine_alpha_bar(50, 0.008)
    assert abar.shape == (51,)
    assert abar[0].item() == 1.0
    assert abar[-1].item() < 1e-10
    assert torch.all(abar[1:] < abar[:-1])
    # one value against the formula written out by hand
    f = lambda t: math.cos(((t / 50 + 0.008) / 1.008) * math.pi / 2) ** 2  # noqa: E731
    assert abar[17].item() == pytest.approx(f(17) / f(0), rel=1e-12)
    with pytest.raises(ValueError):
        cosine_alpha_bar(0)


def test_ddim_grid():
    assert ddim_timesteps(50, 2) == [50, 25, 0]
    assert ddim_timesteps(50, 1) == [50, 0]
    grid = ddim_timesteps(50, 5)
    assert grid == [50, 40, 30, 20, 10, 0]
    with pytest.raises(ValueError):
        ddim_timesteps(50, 0)
    with pytest.raises(ValueError):
        ddim_timesteps(50, 51)


def test_forward_and_inverse():
    abar = cosine_alpha_bar()
    gen = torch.Generator().manual_seed(0)
    y0 = torch.randn(6, 9, 17, 3, generator=gen, dtype=torch.float64)
    error = 0.05 * torch.randn(6, 9, 17, 3, generator=gen, dtype=torch.float64)
    t = torch.tensor([0, 1, 10, 25, 49, 50])
    y_t = forward_noisy_pose(y0, error, t, abar)
    # t = 0 is the clean pose, t = T the noisy pose y0 + e
    torch.testing.assert_close(y_t[0], y0[0])
    torch.testing.assert_close(y_t[5], y0[5] + error[5])
    torch.testing.assert_close(predict_clean(y_t, error, t, abar), y0)


@pytest.mark.parametrize("steps", [1, 2, 5])
def test_oracle_predictor_recovers_ground_truth(steps):
    abar = cosine_alpha_bar()
    gen = torch.Generator().manual_seed(steps)
    y0 = torch.randn(4, 27, 17, 3, generator=gen, dtype=torch.float64)
    error = 0.05 * torch.randn(4, 27, 17, 3, generator=gen, dtype=torch.float64)
    y_hat = y0 + error
    calls = []

    def oracle(y_t, t):
        calls.append(t.clone())
        return error                       # the true error, whatever the step

    refined = ddim_refine(y_hat, oracle, abar, steps)
    assert len(calls) == steps
    torch.testing.assert_close(refined, y0, atol=1e-12, rtol=0)

    # an oracle that infers e from y_t and y0 at every step gives the same
    def implicit_oracle(y_t, t):
        a = abar[t].sqrt().reshape(-1, 1, 1, 1)
        b = (1 - abar[t]).sqrt().reshape(-1, 1, 1, 1)
        return (y_t - (a + b) * y0) / b
    torch.testing.assert_close(ddim_refine(y_hat, implicit_oracle, abar, steps), y0,
                               atol=1e-9, rtol=0)


def test_oracle_in_float32():
    abar = cosine_alpha_bar()
    y0 = torch.randn(2, 9, 17, 3)
    error = 0.05 * torch.randn(2, 9, 17, 3)
    refined = ddim_refine(y0 + error, lambda y_t, t: error, abar, 2)
    torch.testing.assert_close(refined, y0, atol=1e-5, rtol=0)


def test_ddim_is_deterministic():
    abar = cosine_alpha_bar()
    y_hat = torch.randn(3, 9, 17, 3)
    predictor = lambda y_t, t: 0.1 * torch.tanh(y_t) * (t.float() / 50).reshape(-1, 1, 1, 1)  # noqa
    first = ddim_refine(y_hat, predictor, abar, 2)
    second = ddim_refine(y_hat.clone(), predictor, abar, 2)
    assert torch.equal(first, second)
    assert not torch.equal(first, y_hat)
