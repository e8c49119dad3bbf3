"""Where a backbone's compiled step spends its time on the CPU: one XLA profiler trace of a few
steps, its operations (XLA's thunks) grouped by what they compute and by the module they belong
to, and how much of the step ran no, one or two operations at once.

    PYTHONPATH=. python bench/step_profile.py                          # DDColor-T 256, batch 1
    PYTHONPATH=. python bench/step_profile.py --only ddcolor_tiny:256:4 --steps 3 --top 25

The step is bench/models.py's (L1/AdamW training step or evaluation forward, random variables,
compiled with the training loop's options, started as train.py starts). Each thunk of the trace
is an instruction of the compiled program: a fusion, a library call (`ynn_fusion`: a call into
YNNPACK, to which XLA:CPU gives the matrix products and convolutions), a loop or a copy. Per
step:

- kinds: a thunk's kind is the costliest operation inside it (convolution, dot, reduce-window,
  scatter, ..., reduce, transpose, copy, slices, else elementwise);
- modules: the Flax module path in the instruction's metadata, `fwd` or `bwd` for the forward
  pass or its transpose (the gradient), `outside` for what is neither (the optimiser, the loss),
  `unattributed` for instructions that XLA left without metadata (copies, some small products);
- at once: the wall time during which no thunk, one, or two or more ran. XLA:CPU runs
  independent thunks at the same time on its threads, and a library call can itself use every
  core;
- work: the arithmetic of the products (dots and convolutions, a multiply-add counted as two,
  from the shapes in the compiled program; a convolution's taps on its padding count, XLA's
  cost analysis leaves them out) and the bytes every other thunk reads and writes
  (its operands and result; a fusion that reads its input several times moves more), summed
  per step and over each thunk's time from start to end: the products' GFLOP/s against the
  core's peak, the rest's GB/s against the memory's. Each row of the thunk table has its rate.

Each kind, module and thunk has two figures. Its share of the wall time splits every moment
evenly among the thunks running then: the shares add up to the time during which anything ran,
and a thunk that waited for a core beside a product is charged half of that wait. Its time from
start to end is what it took whether or not it had the cores alone; these sum to more than the
step by what ran at once.

A thunk's end is its completion, not the return of its call: some thunks only start their work
and return (the products XLA leaves to Eigen, copies and loops split across the threads), and
the trace then has the call's event and, later, the executor's `end: <name>` event. Each call is
paired with its end in order; where the counts differ, the call's own event is used.

The per-thunk times are those of the trace: profiling adds a little to each (compare the step
time printed before and while tracing).

On two threads a thunk's time includes its waits for a core held by a product running beside it.
For the work each thunk does, run the step on one core and one thread, where thunks run one
after another: `XLA_FLAGS=--xla_cpu_multi_thread_eigen=false taskset -c 0 PYTHONPATH=. python
bench/step_profile.py ...` (the step then takes about the CPU time of the two-thread step).
"""

from __future__ import annotations

import argparse
import bisect
import collections
import gzip
import json
import math
import os
import re
import statistics
import tempfile
import time
from pathlib import Path

import jax

from bench import models

# From the costliest: the first of these inside a thunk names its kind.
KINDS = (
    "convolution",
    "dot",
    "reduce-window",
    "select-and-scatter",
    "scatter",
    "gather",
    "sort",
    "reduce",
    "transpose",
    "copy",
    "dynamic-update-slice",
    "dynamic-slice",
    "concatenate",
    "pad",
    "slice",
)
# Thunks that run other thunks: their time is their body's.
_CONTAINERS = ("while", "call", "conditional")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][a-z\-]*)\(")
_TYPED = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][a-z\-]*)\(([^)]*)\)")
_ARRAY = re.compile(r"([a-z]+\d*)\[([\d,]*)\]")
# Bytes per element of the HLO types that are not 4 bytes wide.
_BYTES = {
    **dict.fromkeys(("pred", "s8", "u8"), 1),
    **dict.fromkeys(("bf16", "f16", "s16", "u16"), 2),
    **dict.fromkeys(("f64", "s64", "u64", "c64"), 8),
    "c128": 16,
}


def arrays(type_text: str) -> list[tuple[str, list[int]]]:
    """(dtype, dims) of each array in an HLO type, e.g. '(f32[4,8]{1,0}, s32[])'."""
    return [(d, [int(x) for x in dims.split(",") if x]) for d, dims in _ARRAY.findall(type_text)]


def nbytes(type_text: str) -> int:
    return sum(_BYTES.get(d, 4) * math.prod(dims) for d, dims in arrays(type_text))


def flop_of(op: str, line: str, out: str, operands: list[str], types: dict[str, str]) -> int:
    """Floating-point operations of one dot or convolution (a multiply-add is two)."""
    if op not in ("dot", "convolution") or len(operands) < 2:
        return 0
    (_, out_dims), *_ = arrays(out) or [("", [])]
    lhs, rhs = (arrays(types.get(name, ""))[:1] for name in operands[:2])
    if not lhs or not rhs:
        return 0
    if op == "dot":
        match = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
        contracted = [int(i) for i in match.group(1).split(",") if i] if match else []
        return 2 * math.prod(out_dims) * math.prod(lhs[0][1][i] for i in contracted)
    # Each output element sums over the kernel's window and input features: every kernel
    # dimension but its output features ('o' in dim_labels=..._01io->...). An input dilated by
    # d (the input gradient of a strided convolution) has one tap in d per dimension that is
    # not a zero; the count leaves those out, exactly where the window is a multiple of d.
    labels = re.search(r"dim_labels=\w+_(\w+)->", line)
    kernel = rhs[0][1]
    o = labels.group(1).index("o") if labels else len(kernel) - 1
    dilation = re.search(r"lhs_dilate=([\dx]+)", line)
    zeros = math.prod(int(d) for d in dilation.group(1).split("x")) if dilation else 1
    return 2 * math.prod(out_dims) * math.prod(kernel) // max(kernel[o], 1) // zeros


_COMPUTATION = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")


def parse_program(hlo_text: str) -> dict[str, dict]:
    """{instruction name: {"kind", "module", "flop", "bytes"}} for every instruction of a
    compiled program's text (`Compiled.as_text()`): "flop" counts the products inside it (its
    called computation's dots and convolutions), "bytes" what it reads and writes as one thunk
    (its operands and its result)."""
    computations: dict[str, list[tuple[str, str]]] = {}
    lines: dict[str, str] = {}
    opcode: dict[str, str] = {}
    types: dict[str, str] = {}
    operands: dict[str, list[str]] = {}
    current = entry = None
    for line in hlo_text.splitlines():
        if not line.startswith(" "):
            match = _COMPUTATION.match(line)
            current = match.group(1) if match else None
            if line.startswith("ENTRY"):
                entry = current
            if current:
                computations[current] = []
            continue
        match = _INSTRUCTION.match(line)
        if match and current:
            computations[current].append((match.group(1), match.group(2)))
            lines[match.group(1)] = line
            opcode[match.group(1)] = match.group(2)
            typed = _TYPED.match(line)
            if typed:
                types[match.group(1)] = typed.group(2)
                operands[match.group(1)] = re.findall(r"%([\w.\-]+)", typed.group(4))

    def flop(name: str) -> int:
        return flop_of(
            opcode[name], lines[name], types.get(name, ""), operands.get(name, []), types
        )

    def op_name(line: str) -> str:
        match = re.search(r'op_name="([^"]*)"', line)
        return match.group(1) if match else ""

    program = {}
    for name, line in lines.items():
        called = re.search(r"calls=%([\w.\-]+)", line)
        inner = computations.get(called.group(1), []) if called else []
        ops = {op for _, op in inner} or {opcode[name]}
        kind = next((k for k in KINDS if k in ops), "elementwise")
        # A fusion's own line may have no metadata; then the first of its instructions that is
        # part of the model names the module.
        modules = [module_of(op_name(x)) for x in [line] + [lines[i] for i, _ in inner]]
        module = next((m for m in modules if m.startswith(("fwd", "bwd"))), None)
        module = module or next((m for m in modules if m != "unattributed"), "unattributed")
        program[name] = {
            "kind": kind,
            "module": module,
            "flop": sum(flop(i) for i, _ in inner) if inner else flop(name),
            "bytes": nbytes(types.get(name, ""))
            + sum(nbytes(types.get(o, "")) for o in operands.get(name, [])),
        }
    # An instruction with no metadata at all (some in loop bodies): its computation's module.
    for computation, instructions in computations.items():
        if computation == entry:
            continue
        known = collections.Counter(
            program[i]["module"]
            for i, _ in instructions
            if program[i]["module"].startswith(("fwd", "bwd"))
        )
        if known:
            for i, _ in instructions:
                if program[i]["module"] == "unattributed":
                    program[i]["module"] = known.most_common(1)[0][0]
    return program


def module_of(op_name: str) -> str:
    """'fwd a/b', 'bwd a/b' or 'outside ...' from an instruction's op_name metadata, e.g.
    'jit(train_step)/transpose(jvp(DDColor))/pixel_decoder/block2/conv/dot_general'."""
    path = re.sub(r"^jit\([^)]*\)/", "", op_name)
    # The model's name (a Flax module class) under jvp(...) in a training step, bare in a
    # forward pass; the optimiser's and the loss's operations are lower case.
    match = re.match(r"^(transpose\()?(?:jvp\()?([A-Z]\w*)\)*/(.*)$", path)
    if not path:
        return "unattributed"  # no metadata
    if not match:
        return "outside " + path.split("/")[0]
    parts = [
        part
        for part in match.group(3).split("/")
        if not part.startswith(
            ("jvp(", "transpose(", "checkpoint", "remat", "while", "body", "closed_call")
        )
    ]
    return ("bwd " if match.group(1) else "fwd ") + "/".join(parts)


def read_trace(directory: Path) -> list[dict]:
    """The complete ('X') events of the trace that `jax.profiler` wrote under `directory`."""
    found = sorted(directory.glob("plugins/profile/*/*.trace.json.gz"))
    if not found:
        raise SystemExit(f"{directory}: the profiler wrote no *.trace.json.gz")
    with gzip.open(found[-1]) as file:
        events = json.load(file)["traceEvents"]
    return [e for e in events if e.get("ph") == "X"]


def completed(thunks: list[dict], events: list[dict]) -> tuple[list[dict], int]:
    """`thunks`, sorted by start, each lasting until its completion: until its `end: <name>`
    event where that comes after the call's own event (see the module's docstring); and how
    many kept their own event's end, their name's calls and ends not being as many."""
    ends: dict[str, list[float]] = collections.defaultdict(list)
    for e in events:
        if e["name"].startswith("end: "):
            ends[e["name"][len("end: ") :]].append(e["ts"])
    calls: dict[str, list[dict]] = collections.defaultdict(list)
    for e in sorted(thunks, key=lambda e: e["ts"]):
        calls[e["name"]].append(e)
    out, unpaired = [], 0
    for name, started in calls.items():
        finished = sorted(ends.get(name, ()))
        if len(finished) != len(started):
            finished = [e["ts"] + e["dur"] for e in started]
            unpaired += len(started)
        for e, end in zip(started, finished):
            out.append({**e, "dur": max(e["dur"], end - e["ts"])})
    return sorted(out, key=lambda e: e["ts"]), unpaired


def sweep(thunks: list[dict], start: float, end: float) -> tuple[dict[int, float], list[float]]:
    """Over [start, end]: {number of thunks running, 2 for two or more: microseconds}, and each
    thunk's share of the wall time, every moment split evenly among the thunks running then
    (the shares add up to the time during which anything ran)."""
    # At equal times starts come first, so that a thunk of no duration also ends.
    edges = sorted(
        [(e["ts"], 0, i) for i, e in enumerate(thunks)]
        + [(e["ts"] + e["dur"], 1, i) for i, e in enumerate(thunks)]
    )
    time_at: collections.Counter = collections.Counter()
    shares = [0.0] * len(thunks)
    running: set[int] = set()
    last = start
    for moment, ends, index in edges:
        moment = min(max(moment, start), end)
        if moment > last:
            time_at[min(len(running), 2)] += moment - last
            for i in running:
                shares[i] += (moment - last) / len(running)
        last = moment
        (running.discard if ends else running.add)(index)
    time_at[0] += end - last
    return dict(time_at), shares


def summarise(events: list[dict], program: dict[str, dict], steps: int, depth: int) -> dict:
    """Per-step figures from the trace's events (see the module's docstring)."""
    # One call per step; the trace may nest a second event of the same call inside it.
    outer: list[dict] = []
    calls = (e for e in events if e["name"].startswith("PjitFunction"))
    for call in sorted(calls, key=lambda e: (e["ts"], -e["dur"])):
        if not outer or call["ts"] >= outer[-1]["ts"] + outer[-1]["dur"]:
            outer.append(call)
    thunks, unpaired = completed(
        [e for e in events if e["name"] in program and not e["name"].startswith(_CONTAINERS)],
        events,
    )
    wall = {0: 0.0, 1: 0.0, 2: 0.0}
    starts = [e["ts"] for e in thunks]
    shares = [0.0] * len(thunks)
    for call in outer:
        a, b = call["ts"], call["ts"] + call["dur"]
        first, last = bisect.bisect_left(starts, a), bisect.bisect_left(starts, b)
        time_at, call_shares = sweep(thunks[first:last], a, b)
        for count, micros in time_at.items():
            wall[count] += micros
        shares[first:last] = call_shares
    # Per kind, module and thunk: (wall share, time from start to end), summed.
    kinds: dict = collections.defaultdict(lambda: [0.0, 0.0])
    modules: dict = collections.defaultdict(lambda: [0.0, 0.0])
    by_name: dict = collections.defaultdict(lambda: [0.0, 0.0])
    count: collections.Counter = collections.Counter()
    for e, share in zip(thunks, shares):
        facts = program[e["name"]]
        module = facts["module"]
        if module.startswith(("fwd", "bwd")):
            head, _, path = module.partition(" ")
            module = head + " " + "/".join(path.split("/")[:depth])
        for table, key in ((kinds, facts["kind"]), (modules, module), (by_name, e["name"])):
            table[key][0] += share
            table[key][1] += e["dur"]
        count[e["name"]] += 1
    ms = 1e-3 / steps

    def is_product(name: str) -> bool:
        return program[name]["flop"] > 0

    def ranked(table: dict) -> dict:
        rows = sorted(table.items(), key=lambda row: -row[1][0])
        return {key: (share * ms, span * ms) for key, (share, span) in rows}

    return {
        "step_ms": statistics.median(c["dur"] for c in outer) / 1e3 if outer else None,
        "thunks": len(thunks) / steps,
        "unpaired": unpaired / steps,
        "thunk_ms": sum(b for _, b in kinds.values()) * ms,
        "at_once_ms": {k: v * ms for k, v in wall.items()},
        "kinds_ms": ranked(kinds),
        "modules_ms": ranked(modules),
        "thunks_ms": [
            (name, a, b, count[name] / steps, program[name]["kind"], program[name]["module"])
            for name, (a, b) in ranked(by_name).items()
        ],
        # Per step: (GFLOP or GB, ms start to end) of the products and of the rest.
        "work": {
            group: (
                sum(program[n][unit] * count[n] for n in by_name if is_product(n) == product)
                / steps
                / 1e9,
                sum(span for n, (_, span) in by_name.items() if is_product(n) == product) * ms,
            )
            for group, unit, product in (("products", "flop", True), ("rest", "bytes", False))
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="ddcolor_tiny:256:1", help="NAME:SIZE:BATCH")
    parser.add_argument("--mode", default="train", choices=("forward", "train"))
    parser.add_argument("--steps", type=int, default=3, help="traced steps, after 3 untraced")
    parser.add_argument("--depth", type=int, default=2, help="module path components shown")
    parser.add_argument("--top", type=int, default=15, help="rows of the module and thunk tables")
    parser.add_argument("--trace_dir", help="keep the trace here (default: a temporary folder)")
    args = parser.parse_args()
    name, size, batch = args.only.split(":")

    from aiaic_jax import host_memory

    applied = host_memory.retain()  # as train.py starts
    with models.recorded_compiles() as compiled:
        run, facts, _ = models._flax_setup(name, int(size), int(batch), args.mode)
    program = parse_program(compiled[-1].as_text())
    untraced = []
    for _ in range(3):
        start = time.perf_counter()
        run()
        untraced.append(time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args.trace_dir or scratch)
        jax.profiler.start_trace(str(directory))
        for _ in range(args.steps):
            run()
        jax.profiler.stop_trace()
        summary = summarise(read_trace(directory), program, args.steps, args.depth)

    print(
        f"{name} {size} bs {batch} {args.mode}, jax {jax.__version__}, {os.cpu_count()} CPUs, "
        f"host memory: {applied}, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"step {min(untraced[1:]) * 1e3:.0f} ms untraced (best of 2), "
        f"{summary['step_ms']:.0f} ms traced (median of {args.steps}); "
        f"{facts['gflop_per_image'] * int(batch):.1f} GFLOP (XLA's count)"
    )
    if summary["unpaired"]:
        print(f"{summary['unpaired']:.0f} thunks per step timed to their return, not their end")
    at = summary["at_once_ms"]
    print(
        f"{summary['thunks']:.0f} thunks per step, {summary['thunk_ms']:.0f} ms of thunk time; "
        f"wall time with no thunk running {at[0]:.0f} ms, one {at[1]:.0f} ms, "
        f"two or more {at[2]:.0f} ms"
    )
    print("\nby kind (ms per step: share of the wall time, time from start to end)")
    for kind, (share, span) in summary["kinds_ms"].items():
        print(f"  {share:8.1f} {span:8.1f}  {kind}")
    print(f"\nby module, top {args.top} (ms per step: share, start to end)")
    for module, (share, span) in list(summary["modules_ms"].items())[: args.top]:
        print(f"  {share:8.1f} {span:8.1f}  {module}")
    (flop, flop_ms), (moved, moved_ms) = summary["work"]["products"], summary["work"]["rest"]
    print(
        f"\nproducts (dots, convolutions) {flop:.1f} GFLOP in {flop_ms:.0f} ms "
        f"({rate(flop, flop_ms):.1f} GFLOP/s); the rest moves {moved:.1f} GB in {moved_ms:.0f} ms "
        f"({rate(moved, moved_ms):.1f} GB/s), start to end"
    )
    print(
        f"\nthunks, top {args.top} (ms per step: share, start to end; times per step, "
        "GFLOP/s for a product or GB/s read and written, kind, module)"
    )
    for thunk, share, span, times, kind, module in summary["thunks_ms"][: args.top]:
        facts = program[thunk]
        work = (facts["flop"] or facts["bytes"]) * times / 1e9
        print(
            f"  {share:8.1f} {span:8.1f}  x{times:<4.0f} {rate(work, span):6.1f} "
            f"{thunk:32s} {kind:14s} {module}"
        )


def rate(giga: float, ms: float) -> float:
    """Per second, from a count in 1e9 and milliseconds."""
    return giga / ms * 1e3 if ms else float("nan")


if __name__ == "__main__":
    main()
