"""One step per kind of stage, over the shared parts of `aiaic_jax.train.state`:

    colour.py     baseline, stage 1, stage 3, e2e: the backbone's own objective
    semantic.py   stage 2: L_s (Eq. 7)
    relevance.py  RNet: the balanced BCE (Eq. 11)

`make_step(config, stage, model, params)` gives the stage's `Step`.
"""

from __future__ import annotations

import ml_collections

from aiaic_jax.models.aiaic import AIAIC
from aiaic_jax.train.stages import COLOUR, SEMANTIC, Stage
from aiaic_jax.train.state import Step, Tree
from aiaic_jax.train.steps.colour import ColourStep
from aiaic_jax.train.steps.relevance import RelevanceStep
from aiaic_jax.train.steps.semantic import SemanticStep


def make_step(config: ml_collections.ConfigDict, stage: Stage, model: AIAIC, params: Tree) -> Step:
    """The step of `stage`; params: the model's params tree or its shapes."""
    kind = {COLOUR: ColourStep, SEMANTIC: SemanticStep}.get(stage.kind, RelevanceStep)
    return kind(config, stage, model, params)
