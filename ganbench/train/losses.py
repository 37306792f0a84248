"""The GAN losses of the zoo, as pure functions of the discriminator's outputs (and, for WGAN-GP, of the critic).

`d_real`, `d_fake`: D's outputs (B, 1) on real and on generated images. The "nonsaturating" and "minimax" losses
take probabilities (D ends in a Sigmoid, as specified); the others take D's real-valued score (no Sigmoid).
Each loss is a pair (D loss, G loss); LOSSES maps the names of ganbench/train/zoo.py to them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F


def bce_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """The specification's D loss: BCE(D(x), 1) + BCE(D(G(z)), 0), each a mean over its half."""
    return F.binary_cross_entropy(d_real, torch.ones_like(d_real)) + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))


def nonsaturating_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """-E log D(G(z)) = BCE(D(G(z)), 1): the specification's G loss (Goodfellow et al.'s practical variant)."""
    return F.binary_cross_entropy(d_fake, torch.ones_like(d_fake))


def minimax_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """E log(1 - D(G(z))) = -BCE(D(G(z)), 0): the original minimax formula, which saturates when D wins."""
    return -F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake))


def least_squares_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor, a: float = 0.0, b: float = 1.0) -> torch.Tensor:
    """LSGAN (Mao et al. 2017): 1/2 E (D(x) - b)^2 + 1/2 E (D(G(z)) - a)^2."""
    return 0.5 * (d_real - b).square().mean() + 0.5 * (d_fake - a).square().mean()


def least_squares_g_loss(d_fake: torch.Tensor, c: float = 1.0) -> torch.Tensor:
    """LSGAN: 1/2 E (D(G(z)) - c)^2."""
    return 0.5 * (d_fake - c).square().mean()


def hinge_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """E relu(1 - D(x)) + E relu(1 + D(G(z)))."""
    return F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()


def wasserstein_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """The critic's side of the Wasserstein loss, E D(G(z)) - E D(x) (the gradient penalty is added separately)."""
    return d_fake.mean() - d_real.mean()


def critic_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """-E D(G(z)): the generator loss of WGAN(-GP) and of the hinge GAN."""
    return -d_fake.mean()


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """WGAN-GP's E (||grad_x^ D(x^)||_2 - 1)^2 at x^ = eps x + (1 - eps) x~ (Gulrajani et al. 2017, eq. 3).

    real, fake: (B, ...) without gradients; eps: (B, 1) uniform in [0, 1]. The result keeps the graph of the
    gradient (create_graph), so its backward reaches the critic's weights.
    """
    mixed = (eps * real + (1.0 - eps) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1.0).square().mean()


class Loss(NamedTuple):
    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (d_real, d_fake) -> D's loss
    g_loss: Callable[[torch.Tensor], torch.Tensor]  # d_fake -> G's loss


LOSSES = {
    "nonsaturating": Loss(bce_d_loss, nonsaturating_g_loss),
    "minimax": Loss(bce_d_loss, minimax_g_loss),
    "least-squares": Loss(least_squares_d_loss, least_squares_g_loss),
    "wasserstein-gp": Loss(wasserstein_d_loss, critic_g_loss),
    "hinge": Loss(hinge_d_loss, critic_g_loss),
}
