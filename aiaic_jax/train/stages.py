"""The training stages (DESIGN.md section 2) and how a config describes each of them.

A stage is data: `config.stages.<name>` says how long it runs, what trains (regexes over
parameter paths, `aiaic_jax.train.optim.trainable_mask`), which loss weights and optimizer
settings differ from the run's defaults, and where it starts from. What a stage computes is
fixed by its name:

    baseline  colour loss, mode "baseline" (the backbone alone)
    stage1    colour loss, mode "visual" (guidance from the colour image; a fraction of the
              samples masked to r = 0 when use_relevance)
    stage2    L_s between f_a^s and the frozen f_v^s (Eq. 7)
    rnet      RNet's balanced BCE (Eq. 11), encoders frozen
    stage3    colour loss, mode "audio", r from RNet (r = 1 without use_relevance)
    e2e       colour loss, mode "audio", r = 1: the "w/o multi-step" ablation
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import ml_collections

from aiaic_jax.train import optim

STAGE_NAMES = ("baseline", "stage1", "stage2", "rnet", "stage3", "e2e")
# `--stage` values; "all" runs ALL_ORDER (without rnet when use_relevance is False).
STAGE_ARGS = ("baseline", "1", "2", "rnet", "3", "e2e", "all")
ALL_ORDER = ("baseline", "stage1", "stage2", "rnet", "stage3")

COLOUR, SEMANTIC, RELEVANCE = "colour", "semantic", "relevance"
_KIND = {
    "baseline": COLOUR,
    "stage1": COLOUR,
    "stage2": SEMANTIC,
    "rnet": RELEVANCE,
    "stage3": COLOUR,
    "e2e": COLOUR,
}
_MODE = {"baseline": "baseline", "stage1": "visual", "stage3": "audio", "e2e": "audio"}


def stage_name(arg: str) -> str:
    """'1' -> 'stage1', 'rnet' -> 'rnet' (names and `--stage` values both accepted)."""
    mapped = {"1": "stage1", "2": "stage2", "3": "stage3"}.get(arg, arg)
    if mapped not in STAGE_NAMES:
        raise ValueError(f"unknown stage {arg!r}; choose one of {', '.join(STAGE_ARGS)}")
    return mapped


def stages_to_run(arg: str, use_relevance: bool) -> list[str]:
    """The stage names `--stage arg` runs, in order."""
    if arg == "all":
        return [s for s in ALL_ORDER if use_relevance or s != "rnet"]
    name = stage_name(arg)
    if name == "rnet" and not use_relevance:
        raise ValueError("use_relevance=False trains no RNet; drop --stage rnet or set it True")
    return [name]


def previous_stage(name: str, use_relevance: bool) -> str | None:
    """The stage whose `final` this one starts from (docs/runs.md)."""
    return {
        "baseline": None,
        "stage1": "baseline",
        "stage2": "stage1",
        "rnet": "stage2",
        "stage3": "rnet" if use_relevance else "stage2",
        "e2e": "baseline",
    }[name]


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage, resolved against the run's config and the size of the training split."""

    name: str
    kind: str  # COLOUR, SEMANTIC or RELEVANCE
    mode: str | None  # the model mode of a colour stage
    num_steps: int
    batch_size: int  # global
    trainable: tuple[str, ...]
    frozen: tuple[str, ...]
    loss: ml_collections.ConfigDict  # the run's loss weights with the stage's overrides
    optimizer: ml_collections.ConfigDict  # generator optimizer with the stage's overrides
    init_from: str  # a `save_variables` directory laid over the start, or ""
    previous: str | None
    mask_fraction: float = 0.0  # stage1: share of samples with r = 0
    freeze_backbone_stats: bool = False  # backbone in evaluation mode while its weights train
    force_relevance: float | None = None  # stage3/e2e: None = r from RNet
    copy_audio_encoder: bool = False  # rnet: E_a -> relevance/audio_encoder


def stage_config(
    *,
    trainable: Sequence[str],
    frozen: Sequence[str] = (),
    num_steps: int = 0,
    num_epochs: float = 0.0,
    batch_size: int = 0,
    **specifics,
) -> ml_collections.ConfigDict:
    """The fields of `config.stages.<name>`.

    num_steps > 0 wins over num_epochs (converted with the training split's size);
    batch_size 0 means `config.data.batch_size`; `loss` and `optimizer` hold only what differs
    from `config.loss` and `config.optimizer`; `init_from` is a variables directory merged over
    the stage's start (e.g. VGGSound audio weights for stage2).
    """
    config = ml_collections.ConfigDict(
        {
            "num_steps": int(num_steps),
            "num_epochs": float(num_epochs),
            "batch_size": int(batch_size),
            "trainable": tuple(trainable),
            "frozen": tuple(frozen),
            "loss": ml_collections.ConfigDict(),
            "optimizer": ml_collections.ConfigDict(),
            "init_from": "",
            # The backbone runs in evaluation mode (BatchNorm on its running statistics, stored
            # spectral-norm vectors) while its weights train; meaningful where the backbone trains.
            "freeze_backbone_stats": False,
        }
    )
    config.update(specifics)
    return config


def _paper_adam() -> ml_collections.ConfigDict:
    """Adam 1e-3 for the paper's own stages (2 and RNet), complete, so that they do not inherit
    the backbone's generator optimizer (ChromaGAN's beta1 is 0.5): betas (0.9, 0.99) and eps
    1e-8, what these stages had from DDColor's defaults before backbones were plug-ins."""
    return ml_collections.ConfigDict(
        {
            "name": "adam",
            "lr": 1e-3,
            "b1": 0.9,
            "b2": 0.99,
            "eps": 1e-8,
            "lr_milestones": (),
            "lr_end_factor": 1.0,
        }
    )


def default_stages() -> ml_collections.ConfigDict:
    """`config.stages` with the paper's choices where it gives them (Sec. 3, 4.1)."""
    stages = ml_collections.ConfigDict()
    # The visual baseline, fine-tuned alone; the DSG exists in the tree but never runs here.
    stages.baseline = stage_config(trainable=[r"^backbone/"], frozen=[r"/dsg/"], num_epochs=20)
    # "we mask some ground truth inputs" (Sec. 3.5) without saying how many: 30% of the
    # samples see r = 0, so the backbone stays a good colourizer on its own.
    # `freeze_backbone_stats=True` keeps the baseline's BatchNorm statistics (docs/training.md,
    # "Backbone statistics in stage 1"); off by default, as the official recipe trains them.
    stages.stage1 = stage_config(
        trainable=[r"^backbone/", r"^semantic/", r"^guidance/"],
        num_epochs=20,
        batch_size=16,
        mask_fraction=0.3,
    )
    # E_s frozen; Adam 1e-3, batch 64, 20 epochs (Sec. 4.1). Freeze E_a by adding r"^audio/"
    # to `frozen` when it is VGGSound-pretrained and should stay as it is.
    stages.stage2 = stage_config(trainable=[r"^audio/", r"^a2v/"], num_epochs=20, batch_size=64)
    stages.stage2.optimizer = _paper_adam()
    # RNet: heads and FC on frozen encoders. The paper gives no schedule; Adam 1e-3 as for the
    # other small heads of stage 2, 10 epochs.
    stages.rnet = stage_config(
        trainable=[r"^relevance/(audio_head|image_head|fc)/"],
        frozen=[r"^relevance/(audio|image)_encoder/"],
        num_epochs=10,
        batch_size=64,
        # Stage 2's E_a becomes RNet's audio encoder unless init_from gives one.
        copy_audio_encoder=True,
    )
    stages.rnet.optimizer = _paper_adam()
    # A2V fine-tuned in the whole network, the backbone fixed (Sec. 3.4); 10 epochs, batch 16.
    stages.stage3 = stage_config(trainable=[r"^a2v/"], num_epochs=10, batch_size=16)
    # "w/o multi-step": backbone, E_a, A2V and the guidance MLP from the baseline, end to end,
    # for the colourization epochs of stages 1 and 3 together.
    stages.e2e = stage_config(
        trainable=[r"^backbone/", r"^audio/", r"^a2v/", r"^guidance/"],
        num_epochs=30,
        batch_size=16,
    )
    return stages


def resolve(config: ml_collections.ConfigDict, name: str, train_size: int) -> Stage:
    """The `Stage` `name` of a run's config; train_size: pairs in the training split."""
    name = stage_name(name)
    if name not in config.stages:
        raise ValueError(f"config.stages has no {name!r} entry; it has {sorted(config.stages)}")
    spec = config.stages[name]
    batch_size = int(spec.get("batch_size", 0)) or int(config.data.batch_size)
    num_steps = int(spec.get("num_steps", 0))
    if num_steps <= 0:
        epochs = float(spec.get("num_epochs", 0.0))
        if epochs <= 0:
            raise ValueError(f"config.stages.{name}: set num_steps or num_epochs above 0")
        num_steps = math.ceil(epochs * train_size / batch_size)
    loss = ml_collections.ConfigDict(config.loss.to_dict())
    loss.update(spec.get("loss", ml_collections.ConfigDict()).to_dict())
    optimizer = optim.optimizer_config(**config.optimizer.to_dict())
    optimizer.update(spec.get("optimizer", ml_collections.ConfigDict()).to_dict())
    if float(optimizer.lr_end_factor) != 1.0 and int(optimizer.lr_decay_steps) <= 0:
        optimizer.lr_decay_steps = num_steps  # a decay over the whole stage
    use_relevance = bool(config.use_relevance)
    force_relevance = None
    if name == "e2e" or (name == "stage3" and not use_relevance):
        force_relevance = 1.0
    return Stage(
        name=name,
        kind=_KIND[name],
        mode=_MODE.get(name),
        num_steps=num_steps,
        batch_size=batch_size,
        trainable=tuple(spec.trainable),
        frozen=tuple(spec.get("frozen", ())),
        loss=loss,
        optimizer=optimizer,
        init_from=str(spec.get("init_from", "") or ""),
        previous=previous_stage(name, use_relevance),
        mask_fraction=float(spec.get("mask_fraction", 0.0)) if use_relevance else 0.0,
        freeze_backbone_stats=bool(spec.get("freeze_backbone_stats", False)),
        force_relevance=force_relevance,
        copy_audio_encoder=bool(spec.get("copy_audio_encoder", False)),
    )
