"""The embedded default: the synthetic audio-visual world, a small DDColor, small images.

make demo   # = python -m aiaic_jax.demo --workdir runs/demo --config configs/demo.py
python -m aiaic_jax.demo --workdir runs/small --config.data.builder_options.train_pairs=512
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    config = common.get_config()
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
            val_pairs=512,
            ave_like_videos=48,
            ood_pairs=512,
            seed=0,
        )
    )
    # The model sees the stored resolution and clip length: one value, two names.
    config.data.image_size = config.data.builder_options.get_ref("image_size")
    config.data.audio_seconds = config.data.builder_options.get_ref("audio_seconds")
    return config
