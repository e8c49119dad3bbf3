"""The embedded default: the synthetic audio-visual world, a small DDColor, small images.

python -m aiaic_jax.data.build synthetic --data_dir runs/demo/data
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
    config = common.get_config()
    config.data.name = "synthetic"
    config.data.data_dir = "runs/demo/data"
    config.data.eval_splits = ("val", "ave_like", "ood")
    config.data.image_size = 64
    config.data.audio_seconds = 1.0
    return config
