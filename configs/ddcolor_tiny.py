"""DDColor-T with AIAIC at 256x256: DDColor's official training recipe for the colour loss and
its optimizers, the paper's epochs and batches for the AIAIC stages (Sec. 4.1).

python train.py --config configs/ddcolor_tiny.py --workdir runs/ddc_t --stage all \
    --config.data.name=vggsound --config.data.data_dir=/data/tfds \
    --config.init_from=runs/converted/ddcolor_paper_tiny \
    --config.stages.stage2.init_from=runs/converted/vggsound_audio

`config.init_from` is the converted official DDColor-T (`python -m aiaic_jax.convert ddcolor`);
without it the backbone starts from a fresh init. The baseline stage runs the official 400k
iterations; the paper fine-tuned its baselines on VGGSound from the released weights, for which
a shorter run fits (e.g. `--config.stages.baseline.num_epochs=20`).
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    config = common.get_config()
    config.data.name = "vggsound"
    config.data.config_name = "default"
    config.data.eval_splits = ("val", "ood")  # VGGSound and VGGSound_OOD (AVE: its own dataset)
    config.data.image_size = 256
    config.data.audio_seconds = 10.0  # VGGSound clips, the audio network's input
    config.data.batch_size = 16  # official: 4 per GPU x 4 GPUs
    config.data.eval_batch_size = 16
    config.data.num_workers = 4

    config.model.backbone = "ddcolor_tiny"

    # DDColor (options/train/train_ddcolor.yml): L1 x0.1, perceptual x5.0, GAN x1.0,
    # colourfulness 0.5 x per-GPU sum == 2.0 x global mean, ground truth enhanced x1.2.
    config.loss.l1_weight = 0.1
    config.loss.perceptual_weight = 5.0
    config.loss.gan_weight = 1.0
    config.loss.colorfulness_weight = 2.0
    config.loss.color_enhance_factor = 1.2

    # Generator AdamW 1e-4, betas (0.9, 0.99), wd 0.01; discriminator Adam 1e-4; both halved
    # at 80k and every 40k after, up to 360k (MultiStepLR). No warmup, no clipping, no EMA.
    milestones = tuple(range(80_000, 360_001, 40_000))
    config.optimizer.update(
        name="adamw",
        lr=1e-4,
        b1=0.9,
        b2=0.99,
        eps=1e-8,
        weight_decay=0.01,
        lr_milestones=milestones,
        lr_gamma=0.5,
        grad_clip_norm=0.0,
    )
    config.discriminator.width = 64
    config.discriminator.num_blocks = 3
    config.discriminator.optimizer.update(
        name="adam",
        lr=1e-4,
        b1=0.9,
        b2=0.99,
        eps=1e-8,
        weight_decay=0.0,
        lr_milestones=milestones,
        lr_gamma=0.5,
    )

    stages = config.stages
    stages.baseline.num_steps = 400_000  # the official DDColor schedule
    stages.baseline.batch_size = 16
    stages.stage1.num_epochs = 20  # Sec. 4.1: steps 1 and 3 at batch 16, 20 and 10 epochs
    stages.stage1.batch_size = 16
    stages.stage2.num_epochs = 20  # Sec. 4.1: Adam 1e-3, batch 64, 20 epochs
    stages.stage2.batch_size = 64
    stages.stage2.optimizer = ml_collections.ConfigDict(
        {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "lr_milestones": ()}
    )
    stages.rnet.num_epochs = 10
    stages.rnet.batch_size = 64
    stages.rnet.optimizer = ml_collections.ConfigDict(
        {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "lr_milestones": ()}
    )
    stages.stage3.num_epochs = 10
    stages.stage3.batch_size = 16
    stages.e2e.num_epochs = 30
    stages.e2e.batch_size = 16

    config.train.log_every = 100
    config.train.checkpoint_every = 5000
    config.train.keep_checkpoints = 3
    config.train.grid_every = 5000
    return config
