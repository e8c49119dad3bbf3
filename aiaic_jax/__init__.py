"""aiaic_jax: Audio-Infused Automatic Image Colorization (arXiv 2401.13270) in JAX/Flax."""

__version__ = "0.1.0"
