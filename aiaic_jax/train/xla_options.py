"""XLA compile options for the train step and for one-off programs.

A module of its own, with nothing but JAX beneath it, so that the benches can compile a step
as the training loop does on a machine that has the models' dependencies and not the data
pipeline's (bench/accelerator.sh on a GPU machine without internet).
"""

from __future__ import annotations

from typing import Any

import jax

# XLA options for compiling one-off initialisers: their run time does not matter, their compile
# time does (the demo model's init: 48 s with the defaults, 11 s with these, on a 2-core CPU).
FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}
# XLA:CPU options for the train step (bench/compile_options.py, DDColor-T on a 2-core AVX-512
# CPU):
# - LLVM may use 512-bit vectors in XLA's own loops (the elementwise fusions and reductions
#   around the matrix products; the optimiser update), where the CPU has AVX-512, and ignores
#   the preference where it does not: the step 4-7% faster.
# - Copy insertion with region analysis, as XLA's GPU compiler does it. Without it XLA:CPU
#   cannot tell that a parameter's last reads come before the optimiser overwrites it in its
#   donated buffer, and copies the parameter first: DDColor-T's train step copied 300 parameters
#   and optimiser moments, 203 MiB, in every step, none with this (it decides where values
#   live, not what is computed). The step's median 0-3% faster, its best within the noise.
CPU_STEP_OPTIONS = {
    "xla_cpu_prefer_vector_width": 512,
    "xla_cpu_copy_insertion_use_region_analysis": True,
}


def step_compiler_options(fast: bool = False) -> dict[str, Any] | None:
    """XLA options for compiling a train step: `FAST_COMPILE` when asked for compile speed,
    else `CPU_STEP_OPTIONS` on the CPU backend, else XLA's defaults."""
    if fast:
        return dict(FAST_COMPILE)
    return dict(CPU_STEP_OPTIONS) if jax.default_backend() == "cpu" else None
