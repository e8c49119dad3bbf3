"""Settings every configuration shares; backbone and demo configs start from `get_config()`.

Not run on its own: see configs/demo.py and the backbone configs.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.name = "synthetic"  # a builder of aiaic_jax.data.builders.BUILDERS
    config.data.config_name = "default"  # the builder config the dataset was built with
    config.data.data_dir = "runs/data"
    config.data.train_split = "train"
    config.data.eval_splits = ("val",)
    config.data.image_size = 256  # the model resolution, square
    config.data.audio_seconds = 10.0  # audio tiled or cropped to this length (16 kHz)
    config.data.batch_size = 16  # global batch, split over every device of every process
    config.data.eval_batch_size = 16
    config.data.num_workers = 0  # grain worker processes; 0 reads in the main process
    return config
