"""Flow matching samplers reach the data distribution under the exact velocity field."""
import math

import pytest
import torch

from worldstream.diffusion.flow import (SAMPLERS, guided, interpolate, sample_t_logit_normal, shift_time,
                                        time_grid, velocity_target, x0_from_velocity)

MU, S = 2.0, 0.5  # data ~ N(MU, S^2)


def exact_velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """E[eps - x0 | x_t] for Gaussian data: the field a perfect model would learn."""
    t = t.view(-1, *([1] * (x.ndim - 1)))
    var = (1 - t) ** 2 * S**2 + t**2
    cov = t - (1 - t) * S**2
    return -MU + cov / var * (x - (1 - t) * MU)


@pytest.mark.parametrize("name,steps,tol", [("euler", 100, 0.03), ("heun", 20, 0.01)])
def test_many_step_samplers_reach_the_data_distribution(name, steps, tol):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20000, 1, generator=g)
    out = SAMPLERS[name](exact_velocity, x, time_grid(steps))
    assert abs(out.mean().item() - MU) < tol and abs(out.std().item() - S) < tol + 0.01


def test_one_step_x0_sampler_gives_the_posterior_mean():
    x = torch.randn(5000, 1)
    out = SAMPLERS["x0"](exact_velocity, x, time_grid(1))
    torch.testing.assert_close(out, torch.full_like(out, MU), rtol=0, atol=1e-4)  # E[x0 | pure noise] = MU


def test_endpoints_and_time_helpers():
    x0, eps = torch.randn(4, 3), torch.randn(4, 3)
    t = torch.tensor(0.3)
    xt = interpolate(x0, eps, t)
    torch.testing.assert_close(x0_from_velocity(xt, velocity_target(x0, eps), t), x0)
    grid = time_grid(8, shift=3.0)
    assert grid[0] == 1 and grid[-1] == 0 and torch.all(grid[1:] < grid[:-1])
    assert math.isclose(shift_time(0.5, 3.0), 0.75)
    t = sample_t_logit_normal((10000,))
    assert 0 < t.min() and t.max() < 1 and abs(t.mean().item() - 0.5) < 0.02


def test_guidance_combines_text_and_action_scales():
    u = lambda x, t: torch.zeros_like(x)  # noqa: E731
    te = lambda x, t: torch.ones_like(x)  # noqa: E731
    both = lambda x, t: 3 * torch.ones_like(x)  # noqa: E731
    x, t = torch.zeros(2, 1), torch.zeros(2)
    assert guided(u, te, both, 1.0, 1.0)(x, t).eq(3).all()  # scales 1, 1: fully conditional
    assert guided(u, te, both, 2.0, 0.0)(x, t).eq(2).all()
    assert guided(u, te, both, 0.0, 1.5)(x, t).eq(3).all()  # 0 + 0 + 1.5 * (3 - 1)


def test_velocity_around_the_previous_frame_is_preconditioned():
    """A zero output copies the previous frame in one step; the clean guess is the best linear one
    for a change of the given std; the velocity stays finite near t = 0 and is zero at t = 0."""
    from worldstream.diffusion.flow import velocity_around

    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(200_000, generator=g)
    prev = x0 + 0.2 * torch.randn(200_000, generator=g)
    zero = torch.zeros_like(x0)
    eps = torch.randn(200_000, generator=g)
    one = torch.tensor(1.0)
    torch.testing.assert_close(eps - velocity_around(zero, eps, prev, one, 0.2), prev)  # x0 = x_1 - v = prev
    for t in (0.3, 0.6, 0.9):
        tt = torch.tensor(t)
        xt = (1 - t) * x0 + t * eps
        x0_hat = xt - t * velocity_around(zero, xt, prev, tt, 0.2)
        err, var = ((x0_hat - x0) ** 2).mean().item(), 0.04 * t**2 / ((1 - t) ** 2 * 0.04 + t**2)
        assert abs(err - var) < 0.05 * var  # the Wiener estimate's error
    tiny = torch.tensor(1e-6)
    assert velocity_around(torch.randn(10), x0[:10], prev[:10], tiny, 0.2).abs().max() < 10
    assert velocity_around(torch.randn(10), x0[:10], prev[:10], torch.tensor(0.0), 0.2).abs().max() < 1e-3


def test_change_loss_weight_puts_the_same_weight_on_the_output_at_every_level():
    """The weighted velocity loss of ``velocity_around`` is a loss on the network's output g with one
    weight at every level: an error e in g costs the same at t = 0.05 and at t = 1."""
    from worldstream.diffusion.flow import change_loss_weight, velocity_around

    g = torch.Generator().manual_seed(1)
    x, prev, out, e = (torch.randn(1000, generator=g) for _ in range(4))
    costs = []
    for t in (0.05, 0.3, 0.7, 1.0):
        tt = torch.tensor(t)
        dv = velocity_around(out + 0.01 * e, x, prev, tt, 0.15) - velocity_around(out, x, prev, tt, 0.15)
        costs.append(float(change_loss_weight(tt, 0.15) * (dv**2).mean()))
    assert max(costs) / min(costs) < 1.01
