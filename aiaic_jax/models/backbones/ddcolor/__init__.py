"""DDColor (Kang et al., ICCV 2023): a ConvNeXt encoder, a pixel decoder and a multi-scale colour
decoder of learned colour queries (`model.py`, `convnext.py`, `decoder.py`); its PatchGAN-style
discriminator (`discriminator.py`); the converter from the official PyTorch checkpoints
(`convert.py`). Registered in `aiaic_jax.models.backbones` as ddcolor_tiny, ddcolor_large and
ddcolor_demo."""
