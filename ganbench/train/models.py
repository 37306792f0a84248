"""The zoo's networks: the specified MLP GAN, layer for layer (see baselines/mnist-mlp-gan.md), and the
InfoGAN/DCGAN-style conv GAN that Lucic et al. 2018 used for 28x28 images (see baselines/zoo.md).

MLP generator 1,486,352 parameters, discriminator 1,460,225. The modules are plain `nn.Sequential`s so
their layer order can be checked against the specification and their `state_dict` keys are stable.
Every network takes and gives flattened images (B, 784), so the loop, the sample grids and eval treat all
models alike; the conv networks reshape inside.
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


def make_discriminator(sigmoid: bool = True) -> nn.Sequential:
    """Flattened image (B, 784) in [-1, 1] -> probability (B, 1) that it is real (without `sigmoid`: a real score,
    the critic of the lsgan, wgan-gp and hinge losses)."""
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
        *([nn.Sigmoid()] if sigmoid else []),
    )


def make_dcgan_generator(latent_dim: int = LATENT_DIM) -> nn.Sequential:
    """z (B, latent) -> flattened image (B, 784): FC 1024 BN ReLU, FC 7x7x128 BN ReLU, deconv 64 4x4 s2 BN ReLU,
    deconv 1 4x4 s2 Tanh (Lucic et al. 2018, from InfoGAN's MNIST networks)."""
    return nn.Sequential(
        nn.Linear(latent_dim, 1024),
        nn.BatchNorm1d(1024),
        nn.ReLU(),
        nn.Linear(1024, 128 * 7 * 7),
        nn.BatchNorm1d(128 * 7 * 7),
        nn.ReLU(),
        nn.Unflatten(1, (128, 7, 7)),
        nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1),  # 7 -> 14
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.ConvTranspose2d(64, 1, 4, stride=2, padding=1),  # 14 -> 28
        nn.Tanh(),
        nn.Flatten(),
    )


def make_dcgan_discriminator() -> nn.Sequential:
    """Flattened image (B, 784) -> probability (B, 1): conv 64 4x4 s2 lReLU, conv 128 4x4 s2 BN lReLU, FC 1024 BN
    lReLU, FC 1, Sigmoid (Lucic et al. 2018; leaky slope 0.2; the Sigmoid lets it share the baseline's BCE)."""
    return nn.Sequential(
        nn.Unflatten(1, IMAGE_SHAPE),
        nn.Conv2d(1, 64, 4, stride=2, padding=1),  # 28 -> 14
        nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, stride=2, padding=1),  # 14 -> 7
        nn.BatchNorm2d(128),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(128 * 7 * 7, 1024),
        nn.BatchNorm1d(1024),
        nn.LeakyReLU(0.2),
        nn.Linear(1024, 1),
        nn.Sigmoid(),
    )


def make_networks(architecture: str, latent_dim: int = LATENT_DIM) -> tuple[nn.Sequential, nn.Sequential]:
    """(generator, discriminator) of an architecture of ganbench/train/zoo.py, built in that order (the global RNG
    draws G's initial weights first, so the baseline's initial weights are the specification's)."""
    if architecture == "dcgan":
        generator = make_dcgan_generator(latent_dim)
        return generator, make_dcgan_discriminator()
    generator = make_generator(latent_dim)
    return generator, make_discriminator(sigmoid=architecture == "mlp")


def make_model_generator(architecture: str, latent_dim: int = LATENT_DIM) -> nn.Sequential:
    """The generator alone (eval needs no discriminator)."""
    return make_dcgan_generator(latent_dim) if architecture == "dcgan" else make_generator(latent_dim)


def images_to_model(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 1, 28, 28) in 0..255 -> float32 (B, 784) in [-1, 1], matching the Tanh output."""
    return images.reshape(images.shape[0], -1).to(torch.float32).div_(127.5).sub_(1.0)


def model_to_images(flat: torch.Tensor) -> torch.Tensor:
    """Generator output (B, 784) in [-1, 1] -> uint8 (B, 1, 28, 28) in 0..255 (the extractor contract)."""
    scaled = (flat.detach().float().reshape(-1, *IMAGE_SHAPE) + 1.0) * 127.5
    return scaled.round_().clamp_(0, 255).to(torch.uint8)
