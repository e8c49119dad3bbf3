"""The embedded default: the synthetic audio-visual world, a small DDColor, small images.

make demo   # = python -m aiaic_jax.demo --workdir runs/demo --config configs/demo.py
python -m aiaic_jax.demo --workdir runs/small --config.data.builder_options.train_pairs=512
python -m aiaic_jax.demo --workdir runs/demo_chromagan --config configs/demo.py:chromagan_demo
python -m aiaic_jax.demo --workdir runs/demo_discolor --config configs/demo.py:discolor_demo
python train.py --config configs/demo.py --workdir runs/demo --stage all \
    --config.data.data_dir=runs/demo/data
"""

import ml_collections

from configs import common


def get_config(backbone: str = "ddcolor_demo") -> ml_collections.ConfigDict:
    """The demo with a small backbone: ddcolor_demo (default), chromagan_demo or discolor_demo."""
    config = common.get_config(backbone)
    config.data.name = "synthetic"
    config.data.data_dir = "runs/demo/data"  # the demo builds into <workdir>/data
    config.data.eval_splits = ("val", "ave_like", "ood")
    # Options of the synthetic builder (SyntheticConfig in aiaic_jax/data/builders/synthetic.py);
    # the dataset is built with them into <data_dir>/synthetic/<config_name>/.
    config.data.builder_options = ml_collections.ConfigDict(
        dict(
            image_size=64,
            audio_seconds=1.0,
            train_pairs=3072,
            val_pairs=256,
            ave_like_videos=24,
            ood_pairs=256,
            seed=0,
            # Training pairs that carry another class's audio (bench/orderings.py's study).
            train_noisy_audio_fraction=0.0,
        )
    )
    # The model sees the stored resolution and clip length: one value, two names.
    config.data.image_size = config.data.builder_options.get_ref("image_size")
    config.data.audio_seconds = config.data.builder_options.get_ref("audio_seconds")
    config.data.batch_size = 16
    config.data.eval_batch_size = 64

    # The DDColor demo backbone and small heads: the whole run fits a laptop CPU. E_a and RNet's
    # audio encoder share a width, so RNet can start from stage 2's E_a.
    model = config.model
    model.semantic_dim = 64
    model.semantic_channels = (16, 32, 64, 64)
    model.semantic_hidden = 128
    model.guidance_dim = 64
    model.guidance_hidden = 128
    model.audio_width = 16
    model.a2v_hidden = (128,)
    model.relevance_dim = 64
    model.relevance_hidden = 128
    model.relevance_audio_width = 16

    if backbone.startswith("ddcolor"):
        # No discriminator and no perceptual term: on a CPU, VGG16 on the 2 x 32 images of a
        # step makes a colour step 7x slower (3.0 s vs 0.41 s on 2 cores) and the GAN term
        # doubles it again. No colourfulness term either: it is there to push DDColor's
        # GAN-trained outputs away from sepia, and alone with L1 in a few hundred steps it
        # over-saturates (a baseline at colourfulness 85 against 28 in the ground truth, 3 dB
        # below the all-grey guess). What trains is L1 on ab, the term every PSNR in the table
        # measures.
        config.loss.gan_weight = 0.0
        config.loss.perceptual_weight = 0.0
        config.loss.colorfulness_weight = 0.0
    elif backbone.startswith("chromagan"):
        # ChromaGAN's class term needs the ImageNet VGG16 classifier at 224 x 224, which the
        # synthetic world at 64 x 64 cannot feed (and whose 1000 classes name nothing in it):
        # the class head gets no loss. MSE on ab and the WGAN-GP critic (demo widths) train.
        config.loss.class_weight = 0.0
        config.discriminator.size = "demo"
    elif backbone.startswith("discolor"):
        # The cross entropies over the 313 bins train as in the official recipe; the perceptual
        # term, the refinement net's only official loss, makes a step 14x slower here (VGG16 on
        # the 2 x 16 images: 2.2 s vs 0.16 s for the DDColor demo's, bench/train.py), so L1 on
        # ab (x0.1, DDColor's weight) stands in for it, as in the DDColor demo. Without its
        # pretrained file SpixelNet starts as the regular grid and stays frozen: one token per
        # 16 x 16 cell (a 4 x 4 grid at 64 x 64, 4 anchors).
        config.loss.perceptual_weight = 0.0
        config.loss.l1_weight = 0.1
    else:
        raise ValueError(f"configs/demo.py has no settings for backbone {backbone!r}")
    # A short run from scratch: a higher rate than DDColor's fine-tuning 1e-4 (no decay but
    # DisColor's own linear one, to 1% over each colour stage).
    config.optimizer.lr = 5e-4

    # Steps, not epochs: the whole demo (three pipelines and the evaluation) fits in minutes on
    # 2 CPU cores. Measured with bench/train.py at batch 16: a colour step takes 0.07-0.13 s,
    # a step through RNet's VGG16 about 0.2 s, and each stage compiles in 4-19 s.
    stages = config.stages
    # L1 alone settles on near-grey colours: val 18.9 dB after 200 steps, 19.1 after 600.
    stages.baseline.num_steps = 400
    stages.stage1.num_steps = 400  # guided l1 falls from about 15 to 7 by step 400
    stages.stage1.batch_size = 16
    stages.stage2.num_steps = 200  # L_s 1.4 at step 50, 0.11-0.17 at step 100
    stages.stage2.batch_size = 16
    # RNet's audio encoder trains too. The paper's is VGGSound-pretrained, with features of
    # every kind of scene; here it starts as stage 2's E_a, which learned the hue (what f_v^s
    # encodes) while a grey image shows only the scene, so frozen it leaves RNet at chance
    # (BCE 0.69 after 10 epochs); trained, BCE falls to about 0.3 in 120 steps.
    stages.rnet.trainable = (r"^relevance/(audio_head|image_head|fc|audio_encoder)/",)
    stages.rnet.frozen = (r"^relevance/image_encoder/",)
    stages.rnet.num_steps = 150
    stages.rnet.batch_size = 16
    stages.stage3.num_steps = 120
    stages.stage3.batch_size = 16
    stages.e2e.num_steps = 520  # the colourization steps of stages 1 and 3 together
    stages.e2e.batch_size = 16

    config.train.log_every = 50
    config.train.checkpoint_every = 1000  # the final checkpoints only
    config.train.grid_every = 0  # the evaluation writes the grids
    config.train.grid_images = 8
    return config
