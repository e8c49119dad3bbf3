"""Speed, cost and memory of the backbones: forward and an L1/AdamW training step.

    PYTHONPATH=. python bench/models.py                      # DDColor-T 256 bs 1, 4; demo 64 bs 16
    PYTHONPATH=. python bench/models.py --only ddcolor_tiny:256:1 --steps 5
    PYTHONPATH=. python bench/models.py --official_src /path/to/DDColor   # + PyTorch reference

Every configuration runs in its own process, so that its peak resident memory (max RSS) is its
own. Reported per configuration and mode (forward in evaluation mode; training step = forward
in training mode, L1 loss on ab, gradients, AdamW with the official DDColor settings, updated
BatchNorm/spectral-norm state): compile time, images/s from the median step time and from the
fastest step (`best`), GFLOP per image from XLA's cost analysis of the compiled program, XLA's
own memory estimate (arguments + outputs + temporaries) and the process max RSS. Variables are
random, not initialised (speed does not depend on the values, and it spares the compile of
every initialiser). The load average is printed because other processes on the machine change
the figures.

With --official_src, the official PyTorch DDColor (T for ddcolor_tiny, L for ddcolor_large) is
timed the same way (forward under no_grad in eval mode; training step with L1 + AdamW), on the
same inputs and threads. With --interleaved as well, both run in one process, one step each in
turn (marked `*`; the RSS is then the pair's), so that both see the same load on a shared
machine.

The Flax children start as train.py does, with `host_memory.retain()` (docs/runs.md, "Host
memory on the CPU"; `--host_memory release` for glibc's and JAX's defaults). Its malloc settings
hold for the whole process: PyTorch timed alone keeps glibc's defaults, interleaved it shares
them.

Options for accelerators (docs/accelerators.md; bench/accelerator.sh runs them on a fresh GPU
machine). Their columns appear only when used:

    PYTHONPATH=. python bench/models.py --only ddcolor_tiny:256:32 --dtype float32 bfloat16 \
        --overrides remat=true --json runs/accelerator/results.jsonl --keep_going

--dtype bfloat16 is mixed precision: float32 parameters and optimiser state, the step casts the
floating parameters and gray_l to bfloat16 before `apply` and ab back to float32 before the loss
(PyTorch: autocast). --overrides k=v are passed to `get_backbone`. On a GPU or TPU the table adds
the device's peak memory, XLA's count of the model's FLOPs and the MFU (see `_PEAK_FLOPS`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_CONFIGS = ("ddcolor_tiny:256:1", "ddcolor_tiny:256:4", "ddcolor_demo:64:16")
DTYPES = ("float32", "bfloat16")

# The official DDColor's `encoder_name` for each registered size that has an official model.
OFFICIAL_ENCODERS = {"ddcolor_tiny": "convnext-t", "ddcolor_large": "convnext-l"}

# Dense peak FLOP/s of one chip: (regex over `device_kind`, bfloat16, float32 as XLA computes it
# by default). First match wins, so the H100 NVL and PCIe come before the SXM one, whose
# device_kind is "NVIDIA H100 80GB HBM3". Sources, the vendors' datasheets:
# - NVIDIA H100, H200 and A100 Tensor Core GPU datasheets. The H100/H200 sheets give tensor-core
#   figures with 2:4 sparsity only, so dense is half of them (H100 SXM: BF16 1,979 and TF32 989
#   TFLOP/s with sparsity); the A100 sheet gives both (BF16 312, TF32 156 dense). float32 is TF32
#   here: XLA runs float32 matmuls and convolutions on the tensor cores in TF32 by default on
#   Ampere and later (jax_default_matmul_precision=highest would not), and the PyTorch side is set
#   to do the same.
# - Google Cloud TPU system architecture pages, bf16 per chip (v4 275, v5e 197, v5p 459, v6e 918
#   TFLOP/s). At default precision a float32 matmul on the MXU is one bfloat16 pass, hence the
#   same figure for float32.
_PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    (r"\bH100 NVL\b", 1671e12 / 2, 835e12 / 2),
    (r"\bH100\b.*\bPCIe\b", 1513e12 / 2, 756e12 / 2),
    (r"\bH100\b", 1979e12 / 2, 989e12 / 2),
    (r"\bH200 NVL\b", 1671e12 / 2, 835e12 / 2),
    (r"\bH200\b", 1979e12 / 2, 989e12 / 2),
    (r"\bA100\b", 312e12, 156e12),
    (r"^TPU v4$", 275e12, 275e12),
    (r"^TPU v5( lite|e)$", 197e12, 197e12),
    (r"^TPU v5p?$", 459e12, 459e12),
    (r"^TPU v6( lite|e)$", 918e12, 918e12),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Dense peak FLOP/s of the chip named `device_kind` (jax's) at `dtype`; None if unknown."""
    for pattern, bfloat16, float32 in _PEAK_FLOPS:
        if re.search(pattern, device_kind):
            return bfloat16 if dtype == "bfloat16" else float32
    return None


def parse_override(text: str) -> tuple[str, bool | int | float | str]:
    """`key=value` -> (key, value): true/false as booleans, then an int, a float, else the text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    if value.lower() in ("true", "false"):
        return key, value.lower() == "true"
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def _random_variables(shapes, seed: int = 0):
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['var']"):
            return np.ones(leaf.shape, leaf.dtype)
        values = rng.standard_normal(leaf.shape).astype(leaf.dtype)
        if name.endswith(("['u']", "['v']")):
            return values / np.linalg.norm(values)
        return 0.02 * values

    return jax.tree_util.tree_map_with_path(fill, shapes)


def _model_flops(step, args) -> float:
    """XLA's FLOP count of `step(*args)` before optimisation, by the CPU backend's rules (a
    multiply-add is 2 FLOPs, an elementwise op 1 per element): the model's FLOPs, the same on
    every device. A GPU's compiled program is not used for this: its cost analysis prices
    elementwise ops in clock cycles per element. Lowering for the CPU compiles nothing."""
    import jax
    from jax.sharding import SingleDeviceSharding

    on_cpu = SingleDeviceSharding(jax.devices("cpu")[0])
    specs = jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=on_cpu), args
    )
    return float(step.lower(*specs).cost_analysis()["flops"])


_CALLERS = object()


@contextlib.contextmanager
def recorded_compiles(compiler_options=_CALLERS):
    """The programs compiled within, in a list that fills as they are (`jax.stages.Lowered.compile`
    wrapped for the duration); with `compiler_options` given, those replace the caller's."""
    import jax

    compile_ = jax.stages.Lowered.compile
    programs = []

    def compile_and_keep(self, *args, **kwargs):
        if compiler_options is not _CALLERS:
            args, kwargs = (), {"compiler_options": compiler_options or None}
        programs.append(compile_(self, *args, **kwargs))
        return programs[-1]

    jax.stages.Lowered.compile = compile_and_keep
    try:
        yield programs
    finally:
        jax.stages.Lowered.compile = compile_


def _flax_setup(
    name: str,
    size: int,
    batch: int,
    mode: str,
    dtype: str = "float32",
    overrides: dict | None = None,
    count_model_flops: bool = False,
):
    """Compiles the step; returns (step() -> None, facts about the compiled program,
    () -> the device's peak memory in bytes, None where the device keeps no count)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from aiaic_jax.host_memory import release_free
    from aiaic_jax.models.backbones import get_backbone
    from aiaic_jax.models.precision import cast_floating
    from aiaic_jax.train.xla_options import step_compiler_options

    model = get_backbone(name, **(overrides or {}))
    # Mixed precision as jmp does it: the parameters (and AdamW's state) stay float32, the step
    # computes on bfloat16 copies (the gradients flow back through the cast to the float32
    # parameters) and the loss is taken in float32. In float32 every cast is the identity.
    compute = None if dtype == "float32" else jnp.dtype(dtype)

    def to_compute(tree):
        return tree if compute is None else cast_floating(tree, compute)

    def to_float32(tree):
        return tree if compute is None else cast_floating(tree, jnp.float32)

    rng = np.random.default_rng(0)
    gray_l = jnp.asarray(rng.uniform(0, 100, (batch, size, size, 1)), jnp.float32)
    target_ab = jnp.asarray(rng.uniform(-60, 60, (batch, size, size, 2)), jnp.float32)
    shapes = jax.eval_shape(model.init, jax.random.key(0), gray_l)
    variables = jax.tree_util.tree_map(jnp.asarray, _random_variables(shapes))

    if mode == "forward":

        def forward(variables, gray_l):
            variables = {**variables, "params": to_compute(variables["params"])}
            return to_float32(model.apply(variables, to_compute(gray_l))[0])

        step = jax.jit(forward)
        args = [variables, gray_l]
    else:
        # The official DDColor optimiser: AdamW lr 1e-4, weight decay 0.01, betas (0.9, 0.99).
        optimizer = optax.adamw(1e-4, b1=0.9, b2=0.99, weight_decay=0.01)

        def train_step(state, gray_l, target_ab):
            params, batch_stats, opt_state = state

            def loss_fn(params):
                (ab, _), updates = model.apply(
                    {"params": to_compute(params), "batch_stats": batch_stats},
                    to_compute(gray_l),
                    train=True,
                    target_ab=target_ab,  # DisColor's training anchors; the others ignore it
                    mutable=["batch_stats"],
                    rngs={"dropout": jax.random.key(0), "anchors": jax.random.key(1)},
                )
                return jnp.mean(jnp.abs(to_float32(ab) - target_ab)), updates["batch_stats"]

            (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            if compute is not None:  # the state keeps its dtypes from step to step
                new_stats = jax.tree_util.tree_map(
                    lambda new, old: new.astype(old.dtype), new_stats, batch_stats
                )
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), new_stats, opt_state), loss

        # keep_unused as the training loop (loop.lower_train_step): donated buffers paired with
        # their own outputs.
        step = jax.jit(train_step, donate_argnums=0, keep_unused=True)
        state = (variables["params"], variables["batch_stats"], optimizer.init(variables["params"]))
        args = [state, gray_l, target_ab]

    start = time.perf_counter()
    # The training step is compiled as the training loop compiles it; the forward as jax.jit.
    options = step_compiler_options() if mode == "train" else None
    compiled = step.lower(*args).compile(compiler_options=options)
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    memory = compiled.memory_analysis()
    xla_bytes = None
    if memory is not None:
        xla_bytes = (
            memory.argument_size_in_bytes
            + memory.output_size_in_bytes
            + memory.temp_size_in_bytes
            - memory.alias_size_in_bytes
        )

    def run() -> None:
        out = compiled(*args)
        jax.block_until_ready(out)
        if mode == "train":
            args[0] = out[0]  # the state was donated

    facts = {
        "compile_s": compile_s,
        "gflop_per_image": float(cost.get("flops", float("nan"))) / batch / 1e9,
        "xla_bytes": xla_bytes,
    }
    if count_model_flops:
        facts["model_flops"] = _model_flops(step, args)

    def peak_bytes() -> int | None:
        stats = jax.devices()[0].memory_stats()  # None on the CPU
        return stats.get("peak_bytes_in_use") if stats else None

    release_free()  # as the training loop does once it has compiled
    return run, facts, peak_bytes


def _torch_setup(
    src: str,
    name: str,
    size: int,
    batch: int,
    mode: str,
    dtype: str = "float32",
    device: str = "cpu",
):
    """The official PyTorch DDColor step of the size `name` names (basicsr's registry stubbed),
    eager, on `device` ("cpu" or "cuda"); bfloat16 through autocast. Returns what
    `_flax_setup` returns."""
    import torch

    from bench.parity_ddcolor import import_official

    if device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit(
                f"bench/models.py: JAX runs on a GPU but torch {torch.__version__} sees no CUDA "
                "device; install a CUDA build of torch (bench/accelerator.sh does)"
            )
        # XLA picks its convolution algorithms by autotuning and computes float32 matmuls and
        # convolutions in TF32; PyTorch does the same only when asked.
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    DDColor = import_official(Path(src))
    model = DDColor(
        encoder_name=OFFICIAL_ENCODERS[name],
        decoder_name="MultiScaleColorDecoder",
        input_size=(size, size),
        num_output_channels=2,
        last_norm="Spectral",
        do_normalize=False,
        num_queries=100,
        num_scales=3,
        dec_layers=9,
    ).to(device)
    image = torch.rand(batch, 3, size, size, device=device)
    target = torch.rand(batch, 2, size, size, device=device)
    on_gpu = device == "cuda"

    def autocast():
        return torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    if mode == "forward":
        model.eval()

        def run() -> None:
            with torch.no_grad(), autocast():
                model(image)
            if on_gpu:
                torch.cuda.synchronize()

    else:
        model.train()
        optimizer = torch.optim.AdamW(
            model.parameters(), 1e-4, betas=(0.9, 0.99), weight_decay=0.01
        )

        def run() -> None:
            optimizer.zero_grad()
            with autocast():
                ab = model(image)
            torch.nn.functional.l1_loss(ab.float(), target).backward()
            optimizer.step()
            if on_gpu:
                torch.cuda.synchronize()

    def peak_bytes() -> int | None:
        return torch.cuda.max_memory_allocated() if on_gpu else None

    return run, {"compile_s": 0.0, "threads": torch.get_num_threads()}, peak_bytes


def _timings(times: list[float]) -> dict:
    # Every step's time too (the JSON lines): a median of a few steps hides how they spread.
    return {
        "step_s": statistics.median(times),
        "best_s": min(times),
        "times_s": [round(t, 4) for t in times],
    }


def _child(spec: dict) -> None:
    """Times one configuration; with "interleaved", both frameworks, one step each in turn."""
    name, size, batch, mode = spec["name"], spec["size"], spec["batch"], spec["mode"]
    dtype = spec.get("dtype", "float32")
    if spec["framework"] == "torch":
        spec = {**spec, "host_memory": "defaults"}
    elif spec.get("host_memory", "retain") == "retain":
        # As train.py and eval.py start (docs/runs.md, "Host memory on the CPU"). The malloc
        # settings are process-wide: interleaved, PyTorch gets them too; alone, it keeps glibc's.
        from aiaic_jax import host_memory

        spec = {**spec, "host_memory": host_memory.retain()}  # what applied, in the results
    runs = {}
    if spec["framework"] in ("flax", "interleaved"):
        runs["flax"] = _flax_setup(
            name, size, batch, mode, dtype, spec.get("overrides"), spec.get("accelerator", False)
        )
    if spec["framework"] in ("torch", "interleaved"):
        device = spec.get("torch_device", "cpu")
        runs["torch"] = _torch_setup(spec["src"], name, size, batch, mode, dtype, device)
    times = {framework: [] for framework in runs}
    for step in range(spec["steps"] + 1):  # the first round warms up
        for framework, (run, *_) in runs.items():
            start = time.perf_counter()
            run()
            if step:
                times[framework].append(time.perf_counter() - start)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for framework, (_, facts, peak_bytes) in runs.items():
        result = {**spec, **facts, **_timings(times[framework]), "max_rss_bytes": rss}
        result["framework"] = framework + ("*" if spec["framework"] == "interleaved" else "")
        if (device_peak := peak_bytes()) is not None:
            result["device_peak_bytes"] = device_peak
        print("RESULT " + json.dumps(result))


def _run(spec: dict, env: dict) -> list[dict]:
    """Times `spec` in a child process with the environment `env`."""
    if spec["framework"] != "flax":
        # JAX would otherwise take 75% of a GPU's memory at its first use, leaving PyTorch short.
        env = {**env, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    load_before = os.getloadavg()[0]
    root = str(Path(__file__).resolve().parents[1])
    process = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        # The source tree first, then what the caller's path had (wheels installed aside, say).
        env={**env, "PYTHONPATH": os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))},
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("RESULT ")]
    if process.returncode or not lines:
        raise RuntimeError(f"{spec} failed:\n{process.stderr[-3000:]}")
    results = [json.loads(line[len("RESULT ") :]) for line in lines]
    for result in results:
        result["load"] = (load_before, os.getloadavg()[0])
    return results


def _columns(show_dtype: bool, accelerator: bool, overrides: dict) -> str:
    """The table's header; dtype, device and override columns only where they say something."""
    header = f"{'framework':10s} {'model':14s} {'size':>4s} {'bs':>3s} {'mode':8s} "
    if show_dtype:
        header += f"{'dtype':8s} "
    header += (
        f"{'compile s':>9s} {'step s':>8s} {'img/s':>7s} {'best':>7s} {'GFLOP/img':>9s} "
        f"{'XLA MiB':>8s} {'RSS MiB':>8s} "
    )
    if accelerator:
        header += f"{'dev MiB':>8s} {'model GF':>8s} {'MFU %':>6s} "
    return header + "load" + ("  overrides" if overrides else "")


def _row(r: dict, show_dtype: bool, accelerator: bool, overrides: dict) -> str:
    """One result as a line of the table `_columns` heads."""
    xla = f"{r['xla_bytes'] / 2**20:8.0f}" if r.get("xla_bytes") else f"{'-':>8s}"
    flops = f"{r['gflop_per_image']:9.1f}" if "gflop_per_image" in r else f"{'-':>9s}"
    row = f"{r['framework']:10s} {r['name']:14s} {r['size']:4d} {r['batch']:3d} {r['mode']:8s} "
    if show_dtype:
        row += f"{r['dtype']:8s} "
    row += (
        f"{r['compile_s']:9.1f} {r['step_s']:8.3f} "
        f"{r['batch'] / r['step_s']:7.2f} {r['batch'] / r['best_s']:7.2f} {flops} "
        f"{xla} {r['max_rss_bytes'] / 2**20:8.0f} "
    )
    if accelerator:
        peak = r.get("device_peak_bytes")
        model = r.get("model_flops")
        row += f"{peak / 2**20:8.0f} " if peak is not None else f"{'-':>8s} "
        row += f"{model / r['batch'] / 1e9:8.1f} " if model else f"{'-':>8s} "
        row += f"{100 * r['mfu']:6.1f} " if r.get("mfu") is not None else f"{'-':>6s} "
    row += f"{r['load'][0]:.1f}->{r['load'][1]:.1f}"
    if overrides and not r["framework"].startswith("torch"):
        row += "  " + " ".join(f"{k}={v}" for k, v in overrides.items())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=list(DEFAULT_CONFIGS), help="NAME:SIZE:BATCH")
    parser.add_argument("--modes", nargs="*", default=["forward", "train"])
    parser.add_argument("--steps", type=int, default=5, help="timed steps after one warm-up")
    parser.add_argument(
        "--official_src",
        default=None,
        help="time the official PyTorch DDColor too (ddcolor_tiny and ddcolor_large)",
    )
    parser.add_argument(
        "--interleaved",
        action="store_true",
        help="with --official_src: time both in one process, one step each in turn",
    )
    parser.add_argument(
        "--dtype",
        nargs="+",
        choices=DTYPES,
        default=None,
        help="compute dtypes, each a row (default float32, without a dtype column); bfloat16 is "
        "mixed precision with float32 parameters and optimiser state",
    )
    parser.add_argument(
        "--overrides",
        nargs="+",
        type=parse_override,
        default=[],
        metavar="KEY=VALUE",
        help="backbone fields for get_backbone (true/false, numbers, text), e.g. remat=true",
    )
    parser.add_argument(
        "--host_memory",
        choices=("retain", "release"),
        default="retain",
        help="retain: host_memory.retain() in each child that runs the Flax model, as train.py "
        "does (with --interleaved PyTorch shares its malloc settings); release: the defaults",
    )
    parser.add_argument("--json", default=None, help="append each result to this file, a line")
    parser.add_argument(
        "--keep_going", action="store_true", help="report a failed configuration and go on"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(json.loads(args.child))
        return

    overrides = dict(args.overrides)
    if overrides:  # a wrong field fails here, not in every child after its imports
        from aiaic_jax.models.backbones import get_backbone

        for name in dict.fromkeys(config.split(":")[0] for config in args.only):
            try:
                get_backbone(name, **overrides)
            except (TypeError, ValueError) as e:
                parser.error(f"--overrides: {e}")

    child_env = dict(os.environ)
    # This process only asks which device there is; without this JAX would hold 75% of a GPU's
    # memory here for the whole run.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    import jax

    device = jax.devices()[0]
    accelerator = device.platform != "cpu"
    show_dtype = args.dtype is not None
    print(f"jax {jax.__version__} on {device.device_kind}, {os.cpu_count()} CPUs")
    if accelerator:
        peaks = {dtype: peak_flops(device.device_kind, dtype) for dtype in DTYPES}
        if None in peaks.values():
            print(f"no peak FLOP/s known for {device.device_kind!r}: MFU '-'")
        else:
            print(
                f"dense peak: bfloat16 {peaks['bfloat16'] / 1e12:.0f} TFLOP/s, float32 "
                f"{peaks['float32'] / 1e12:.0f} TFLOP/s (as XLA computes it by default)"
            )
    torch_device = {"cpu": "cpu", "gpu": "cuda"}.get(device.platform)
    if args.official_src and torch_device is None:
        print(f"the official PyTorch DDColor is not timed on {device.platform}")
    print(_columns(show_dtype, accelerator, overrides), flush=True)
    specs = []
    for config in args.only:
        name, size, batch = config.split(":")
        official = args.official_src and torch_device and name in OFFICIAL_ENCODERS
        for mode in args.modes:
            for dtype in args.dtype or ["float32"]:
                base = {"name": name, "size": int(size), "batch": int(batch), "mode": mode}
                base |= {"steps": args.steps, "src": args.official_src, "dtype": dtype}
                base |= {"overrides": overrides, "accelerator": accelerator}
                base |= {"torch_device": torch_device, "host_memory": args.host_memory}
                if official and args.interleaved:
                    specs.append({"framework": "interleaved", **base})
                    continue
                specs.append({"framework": "flax", **base})
                if official:
                    specs.append({"framework": "torch", **base})
    for spec in specs:
        try:
            results = _run(spec, child_env)
        except RuntimeError as e:
            if not args.keep_going:
                raise
            lines = str(e).strip().splitlines()
            errors = [line for line in lines if re.match(r"[\w.]*(Error|Exception)\b", line)]
            reason = (errors or lines)[-1]
            print(
                f"{spec['framework']:10s} {spec['name']:14s} {spec['size']:4d} "
                f"{spec['batch']:3d} {spec['mode']:8s} {spec['dtype']}: FAILED: {reason}",
                flush=True,
            )
            results = [{**spec, "error": str(e)[-3000:]}]
        for r in results:
            r |= {"device_kind": device.device_kind, "jax_version": jax.__version__}
            if "error" not in r:
                peak = peak_flops(device.device_kind, r["dtype"])
                if accelerator and r.get("model_flops") and peak:
                    r["mfu"] = r["model_flops"] / r["step_s"] / peak  # MFU = FLOP/s / peak
                print(_row(r, show_dtype, accelerator, overrides), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
