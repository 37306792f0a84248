"""The model zoo: each trainable GAN's name, loss, architecture and default hyper-parameters.

Plain data and no torch, so the config, the CLI's --help and the leaderboard can read it cheaply. The losses
live in ganbench/train/losses.py, the networks in ganbench/train/models.py; baselines/zoo.md says why each
choice was made. As in Lucic et al. 2018 ("Are GANs Created Equal?"), minimax, lsgan, wgan-gp and hinge keep
the specified MLP and change only the loss (and, for wgan-gp, the recipe its paper trains that loss with);
dcgan is the convolutional network Lucic et al. used for 28x28 images, with the baseline's loss.
"""

from __future__ import annotations

from dataclasses import dataclass

SPEC_BETAS = (0.9, 0.999)  # PyTorch's Adam default, as the specification has it

# Architectures: "mlp" is the specified MLP GAN (D ends in a Sigmoid: it outputs a probability), "mlp-critic" the
# same networks without D's final Sigmoid (a real-valued score), "dcgan" the InfoGAN-style conv nets (D ends in a
# Sigmoid, and BatchNorm in both networks).
PROBABILITY_ARCHITECTURES = ("mlp", "dcgan")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    loss: str  # a key of ganbench.train.losses.LOSSES
    architecture: str  # mlp | mlp-critic | dcgan
    lr: float
    betas: tuple[float, float]
    n_critic: int = 1  # discriminator steps per generator step
    gp_weight: float = 0.0  # the gradient penalty's lambda (WGAN-GP); 0: none
    summary: str = ""

    @property
    def outputs_probability(self) -> bool:
        return self.architecture in PROBABILITY_ARCHITECTURES


_MLP = ("G 100-256-512-1024-784 (ReLU, Tanh), D 784-1024-512-256-1 (LeakyReLU 0.2, Dropout 0.3")
MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("baseline", "nonsaturating", "mlp", 2e-4, SPEC_BETAS,
                  summary=f"the specified MLP GAN (baselines/mnist-mlp-gan.md): {_MLP}, Sigmoid); BCE with the "
                  "non-saturating G loss -log D(G(z)); Adam lr 2e-4, betas 0.9,0.999"),
        ModelSpec("minimax", "minimax", "mlp", 2e-4, SPEC_BETAS,
                  summary=f"the baseline with the original minimax G loss log(1 - D(G(z))) (saturating): {_MLP}, "
                  "Sigmoid); Adam lr 2e-4, betas 0.9,0.999"),
        ModelSpec("lsgan", "least-squares", "mlp-critic", 2e-4, SPEC_BETAS,
                  summary=f"least squares GAN (Mao et al. 2017, a=0, b=1, c=1): {_MLP}, no Sigmoid); "
                  "D 1/2 E(D(x)-1)^2 + 1/2 E D(G(z))^2, G 1/2 E(D(G(z))-1)^2; Adam lr 2e-4, betas 0.9,0.999"),
        ModelSpec("wgan-gp", "wasserstein-gp", "mlp-critic", 1e-4, (0.5, 0.9), n_critic=5, gp_weight=10.0,
                  summary=f"WGAN-GP (Gulrajani et al. 2017): {_MLP}, no Sigmoid); critic E D(G(z)) - E D(x) + "
                  "10 E(||grad D(x^)|| - 1)^2, G -E D(G(z)); 5 critic steps per G step; Adam lr 1e-4, betas 0.5,0.9 "
                  "as in the paper"),
        ModelSpec("hinge", "hinge", "mlp-critic", 2e-4, SPEC_BETAS,
                  summary=f"hinge loss (Lim & Ye 2017, Miyato et al. 2018): {_MLP}, no Sigmoid); "
                  "D E relu(1-D(x)) + E relu(1+D(G(z))), G -E D(G(z)); Adam lr 2e-4, betas 0.9,0.999"),
        ModelSpec("dcgan", "nonsaturating", "dcgan", 2e-4, (0.5, 0.999),
                  summary="the InfoGAN/DCGAN-style conv GAN of Lucic et al. for 28x28: G FC1024-BN-ReLU, "
                  "FC 7x7x128-BN-ReLU, deconv 64 4x4 s2-BN-ReLU, deconv 1 4x4 s2-Tanh; D conv 64 4x4 s2-lReLU, "
                  "conv 128 4x4 s2-BN-lReLU, FC1024-BN-lReLU, FC1, Sigmoid; the baseline's non-saturating BCE; "
                  "Adam lr 2e-4, betas 0.5,0.999 (Radford et al.)"),
    )
}
MODEL_NAMES = tuple(MODELS)
