"""Training: the specified baseline GAN (models.py), its loop (loop.py) and the safe checkpoint format."""
