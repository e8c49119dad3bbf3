"""Settings every configuration shares; backbone and demo configs start from `get_config()`.

Not run on its own: see configs/demo.py and the backbone configs.
"""

import ml_collections

from aiaic_jax import preprocess
from aiaic_jax.models import aiaic, backbones
from aiaic_jax.train import losses, optim, stages


def get_config(backbone: str = "ddcolor_tiny") -> ml_collections.ConfigDict:
    """The shared settings, with the loss and discriminator of `backbone`'s objective."""
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

    config.model = aiaic.default_model_config()
    config.model.backbone = backbone
    config.audio = preprocess.audio_config()

    # The "w/o r" variant trains no RNet: no masking in stage 1, r = 1 in stage 3. Run it in
    # its own workdir (docs/runs.md).
    config.use_relevance = True
    # Variables a run starts from when a stage has no previous stage's `final` in the workdir:
    # a directory written by `aiaic_jax.convert` (official weights) or another run's
    # `W/<stage>/final`. Empty: a fresh init.
    config.init_from = ""

    # The backbone's objective (its loss weights and its discriminator) with the paper's weights.
    objective = backbones.objective_class(config.model.backbone)
    config.loss = losses.loss_config(objective.loss_config())
    # The generator's optimizer (every stage unless config.stages.<name>.optimizer overrides).
    config.optimizer = optim.optimizer_config(**objective.optimizer_config())
    # The objective's adversary, used by colour stages with loss.gan_weight > 0.
    config.discriminator = objective.discriminator_config()
    config.discriminator.optimizer = optim.optimizer_config(
        **config.discriminator.optimizer.to_dict()
    )
    config.stages = stages.default_stages()

    config.train = ml_collections.ConfigDict()
    config.train.log_every = 50  # steps between metrics (the only per-step host sync)
    config.train.checkpoint_every = 1000
    config.train.keep_checkpoints = 3
    config.train.grid_every = 1000  # 0: no image grids
    config.train.grid_images = 8
    # Compile the train step for compile speed (XLA backend optimisation off): about half the
    # compile time and up to twice the step time on CPU; for tests and short CPU runs.
    config.train.fast_compile = False
    # Global batches made ahead of the train step by a background thread (host read, decode and
    # transfer overlap the step); 0: made on demand in the loop, no thread (for debugging).
    config.train.prefetch = 2
    config.train.inject_nan_at_step = 0  # > 0: that step's loss is NaN (tests the guard)
    return config
