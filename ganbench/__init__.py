"""ganbench: train, evaluate and report GANs with metrics that match the reference implementations."""

__version__ = "0.1.0"
