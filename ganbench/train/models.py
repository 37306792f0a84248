"""The specified MLP GAN, layer for layer (see baselines/mnist-mlp-gan.md).

Generator 1,486,352 parameters, discriminator 1,460,225. The modules are plain `nn.Sequential`s so
their layer order can be checked against the specification and their `state_dict` keys are stable.
"""

from __future__ import annotations

import torch
from torch import nn

LATENT_DIM = 100
IMAGE_SHAPE = (1, 28, 28)
IMAGE_DIM = 28 * 28


def make_generator(latent_dim: int = LATENT_DIM) -> nn.Sequential:
    """z (B, 100) ~ N(0, I) -> flattened image (B, 784) in [-1, 1]."""
    return nn.Sequential(
        nn.Linear(latent_dim, 256),
        nn.ReLU(),
        nn.Linear(256, 512),
        nn.ReLU(),
        nn.Linear(512, 1024),
        nn.ReLU(),
        nn.Linear(1024, IMAGE_DIM),
        nn.Tanh(),
    )


def make_discriminator() -> nn.Sequential:
    """Flattened image (B, 784) in [-1, 1] -> probability (B, 1) that it is real."""
    return nn.Sequential(
        nn.Linear(IMAGE_DIM, 1024),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(1024, 512),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(512, 256),
        nn.LeakyReLU(0.2),
        nn.Dropout(0.3),
        nn.Linear(256, 1),
        nn.Sigmoid(),
    )


def images_to_model(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, 28, 28) in 0..255 -> float32 (B, 784) in [-1, 1], matching the Tanh output."""
    return images.reshape(images.shape[0], -1).to(torch.float32).div_(127.5).sub_(1.0)


def model_to_images(flat: torch.Tensor) -> torch.Tensor:
    """Generator output (B, 784) in [-1, 1] -> uint8 (B, 1, 28, 28) in 0..255 (the extractor contract)."""
    scaled = (flat.detach().float().reshape(-1, *IMAGE_SHAPE) + 1.0) * 127.5
    return scaled.round_().clamp_(0, 255).to(torch.uint8)
