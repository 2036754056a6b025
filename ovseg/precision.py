"""Numeric precision of the image network, chosen for the hardware it runs on.

``fp32`` is the exact path (the official outputs). The fast paths trade a little agreement for
speed, and only pay where the hardware has them natively:

- ``bf16`` / ``fp16``: autocast of the image network (the pixel decoder stays fp32). Native on
  GPUs and on CPUs with AMX or AVX512-BF16 (fp16: AVX512-FP16 / AMX-FP16); elsewhere a CPU
  emulates them and is several times *slower* than fp32. Asked for on a CPU, they are
  measured against fp32 (once, cached) and warn when not native or slower.
- ``int8``: dynamic quantization of the frozen ConvNeXt's MLP layers (~80% of the backbone's
  work) and of the pixel decoder's projections and feed-forward layers (weights int8 per
  output channel, activations int8 per call), CPU only.
- ``auto`` (the front ends' default): on a GPU bf16 (fp16 where bf16 is not supported); on a
  CPU the fastest of fp32 and the fast paths the CPU has natively, measured once on the
  model's own dominant layer shape and cached, and fp32 unless a fast path is clearly faster.
  The measurement runs on one thread, in rounds until its answer is stable, and is shared by
  every later run (any thread count, every torchrun process): one decision per machine and
  model, not one per run's load.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import platform
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ovseg.fileio import cache_root, write_text_atomic

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# A fast path must beat fp32 by this factor on the probe for ``auto`` to take it.
MIN_SPEEDUP = 1.15


@dataclass(frozen=True)
class Hardware:
    """What the precision choice depends on. ``name``: CPU model or GPU name; ``isa``: the
    CPU instruction set torch dispatches to (e.g. AVX2, AVX512) or the GPU's compute
    capability (e.g. sm_90)."""

    device: str
    name: str
    isa: str
    native_bf16: bool
    native_fp16: bool
    int8: bool

    def describe(self) -> str:
        natives = [n for n, ok in (("bf16", self.native_bf16), ("fp16", self.native_fp16)) if ok]
        return (
            f"{self.name} ({self.device}, {self.isa}; native {', '.join(natives) or 'fp32 only'}"
            f"{'; int8 kernels' if self.int8 else ''})"
        )


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first CPU's fields in /proc/cpuinfo; empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, ARM ``Features``); empty where unknown."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def _cpu_name() -> str:
    info = _cpuinfo()
    name = info.get("model name") or info.get("Model") or info.get("Hardware")
    return name or platform.processor() or platform.machine()


def _int8_engine() -> bool:
    engines = torch.backends.quantized.supported_engines
    return any(e in engines for e in ("x86", "fbgemm", "qnnpack"))


def detect_hardware(device: str | torch.device = "cpu") -> Hardware:
    """The :class:`Hardware` of a torch device (cpu or cuda[:N])."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return Hardware(
            device=f"cuda:{index}",
            name=torch.cuda.get_device_name(index),
            isa=f"sm_{major}{minor}",
            native_bf16=torch.cuda.is_bf16_supported(),
            native_fp16=True,
            int8=False,
        )
    flags = cpu_flags()
    return Hardware(
        device="cpu",
        name=_cpu_name(),
        isa=torch.backends.cpu.get_cpu_capability(),
        native_bf16=bool(flags & {"amx_bf16", "avx512_bf16", "bf16"}),
        native_fp16=bool(flags & {"amx_fp16", "avx512_fp16", "fphp"}),
        int8=_int8_engine(),
    )


@dataclass
class PrecisionChoice:
    """The precision in use and why. ``probe``: seconds of one pass of the probe layer per
    precision measured (empty when nothing was measured)."""

    requested: str
    precision: str
    reason: str
    hardware: Hardware
    probe: dict[str, float] = field(default_factory=dict)
    warning: str | None = None
    # int8 only: the precision of the layers it does not quantize (bf16 where native and
    # measured faster than fp32, else fp32).
    others: str = "fp32"

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES.get(self.others if self.precision == "int8" else self.precision)

    def as_record(self) -> dict:
        record = asdict(self)
        record["hardware"] = asdict(self.hardware)
        return record


def check_precision(precision: str) -> str:
    """Raise ValueError naming the choices for an unknown precision."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision '{precision}': choose from {', '.join(PRECISIONS)}")
    return precision


def mlp_probe_shape(model: nn.Module, short_side: int = 640) -> tuple[int, int, int]:
    """(tokens, channels, hidden) of the backbone stage with the most MLP work on a
    ``short_side`` square image: the layer shape the precision probe times."""
    trunk = model.backbone.clip.visual.trunk
    best, best_work = (1, 1, 1), -1
    stride = 4
    for stage in trunk.stages:
        shapes = [shape for m in stage.modules() if (shape := _linear_shape(m))]
        if shapes:
            fc1 = max(shapes, key=lambda shape: shape[0] * shape[1])
            tokens = max(1, (short_side // stride) ** 2)
            work = tokens * fc1[0] * fc1[1] * len(shapes)
            if work > best_work:
                best, best_work = (tokens, *fc1), work
        stride *= 2
    return best


def _is_pointwise(module: nn.Module) -> bool:
    """A 1x1 convolution that is a linear layer over channels (ConvNeXt's conv_mlp)."""
    return (
        isinstance(module, nn.Conv2d)
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.padding == (0, 0)
        and module.groups == 1
        and module.dilation == (1, 1)
    )


def _linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in, out) features of a linear layer or a pointwise convolution, else None."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if _is_pointwise(module):
        return module.in_channels, module.out_channels
    return None


class PointwiseAsLinear(nn.Module):
    """A 1x1 convolution run as a linear layer over the channels of (B, C, H, W) maps, so that
    it can be quantized like one (same values: a 1x1 convolution is that linear layer)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.linear = nn.Linear(conv.in_channels, conv.out_channels, bias=conv.bias is not None)
        with torch.no_grad():
            self.linear.weight.copy_(conv.weight.flatten(1))
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def quantize_int8(model: nn.Module) -> nn.Module:
    """The int8 path, in place: dynamically quantized int8 linear layers (per-output-channel
    weights) for the frozen ConvNeXt trunk's stage MLPs (linear layers, or the 1x1
    convolutions of a conv_mlp ConvNeXt) and for the pixel decoder encoder's value / output
    projections and feed-forward layers. The deformable attention's sampling offsets and
    weights stay fp32 (they place the samples). Raises RuntimeError where torch has no
    quantized engine."""
    if not _int8_engine():
        raise RuntimeError("this torch build has no int8 engine: use --precision fp32 or bf16")
    trunk = model.backbone.clip.visual.trunk
    _replace_pointwise(trunk.stages)
    for index, stage in enumerate(trunk.stages):  # a stage at a time: one stage's copy at once
        trunk.stages[index] = quantize_linears(stage)
    for layer in model.pixel_decoder.transformer.encoder.layers:
        attention = layer.self_attn
        for owner, name in (
            (attention, "value_proj"),
            (attention, "output_proj"),
            (layer, "linear1"),
            (layer, "linear2"),
        ):
            setattr(owner, name, quantize_linears(nn.Sequential(getattr(owner, name)))[0])
    _wrap_quantized(model)
    return model


class Float32Input(nn.Module):
    """Runs a dynamically quantized int8 layer on a float32 copy of its input: under bf16
    autocast (the int8 path's other layers where bf16 is native) its input may be bf16,
    which the int8 kernels do not take."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.float())


def _wrap_quantized(module: nn.Module) -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    for name, child in module.named_children():
        if isinstance(child, DynamicInt8Linear):
            setattr(module, name, Float32Input(child))
        else:
            _wrap_quantized(child)


def _replace_pointwise(module: nn.Module) -> None:
    for name, child in module.named_children():
        if _is_pointwise(child):
            setattr(module, name, PointwiseAsLinear(child))
        else:
            _replace_pointwise(child)


def quantize_linears(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every nn.Linear dynamically quantized to int8
    (per-output-channel weights). A copy, not in place: the fp32 weights are then freed in
    one piece and their pages go back to the system (in place, swapped one by one, they
    stayed in the heap: 185 MB more peak memory on ConvNeXt-L at short side 800)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch.ao's deprecation notes; the API works in 2.14
        warnings.simplefilter("ignore")
        return quantize_dynamic(module, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def probe_speeds(
    shape: tuple[int, int, int],
    precisions: list[str],
    *,
    repeats: int = 5,
    min_seconds: float = 0.02,
) -> dict[str, float]:
    """Seconds of one ConvNeXt MLP (linear, GELU, linear) of ``shape`` (tokens, channels,
    hidden) on the CPU in each precision, with random weights, at the current thread count:
    the best of ``repeats`` rounds, each timing every precision in turn for at least
    ``min_seconds`` (small layers run many times a round, so that timer noise does not
    decide)."""
    x, nets, calls = _probe_nets(shape, precisions, min_seconds)
    best = dict.fromkeys(precisions, float("inf"))
    for _ in range(repeats):
        for precision, seconds in _probe_round(x, nets, calls).items():
            best[precision] = min(best[precision], seconds)
    return best


def _probe_nets(shape, precisions, min_seconds):
    """(input, {precision: (net, autocast dtype or None)}, calls per timed loop), warmed up."""
    tokens, channels, hidden = shape
    generator = torch.Generator().manual_seed(0)
    mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
    x = torch.randn(tokens, channels, generator=generator)
    with torch.no_grad():
        mlp(x)
        start = time.perf_counter()
        mlp(x)
        calls = max(1, math.ceil(min_seconds / max(time.perf_counter() - start, 1e-6)))
    nets = {
        p: (quantize_linears(copy.deepcopy(mlp)) if p == "int8" else mlp, AUTOCAST_DTYPES.get(p))
        for p in precisions
    }
    _probe_round(x, nets, 1)  # warm-up: first-call allocation and kernel selection
    return x, nets, calls


def _probe_round(x, nets: dict, calls: int) -> dict[str, float]:
    """Seconds per call of each net, timed one after the other (one round)."""
    seconds = {}
    for precision, (net, dtype) in nets.items():
        autocast = torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            start = time.perf_counter()
            for _ in range(calls):
                net(x)
            seconds[precision] = (time.perf_counter() - start) / calls
    return seconds


def stable_probe(
    shape: tuple[int, int, int],
    precisions: list[str],
    *,
    min_rounds: int = 3,
    stable_rounds: int = 3,
    max_rounds: int = 20,
    min_seconds: float = 0.02,
) -> tuple[dict[str, float], int]:
    """:func:`probe_speeds` on one thread, in rounds until the decision it leads to (see
    :func:`decide_auto`, the candidates being ``precisions`` other than fp32) is the same
    for ``stable_rounds`` rounds in a row. Each precision keeps its fastest time: load only
    ever adds time, so a round slowed by other work cannot make a path look fast, and the
    one thread does not wait at barriers for threads the machine has descheduled.
    Returns (seconds per precision, rounds measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, nets, calls = _probe_nets(shape, precisions, min_seconds)
        best = dict.fromkeys(precisions, float("inf"))
        candidates = [p for p in precisions if p != "fp32"]
        decisions = []
        while len(decisions) < max_rounds:
            for precision, seconds in _probe_round(x, nets, calls).items():
                best[precision] = min(best[precision], seconds)
            decisions.append(decide_auto(best, candidates)[0] if candidates else None)
            recent = decisions[-stable_rounds:]
            if len(decisions) >= min_rounds and len(recent) == stable_rounds:
                if len(set(recent)) == 1:
                    break
    finally:
        torch.set_num_threads(threads)
    return best, len(decisions)


def cached_probe(
    hardware: Hardware, shape: tuple[int, int, int], precisions: list[str]
) -> dict[str, float]:
    """:func:`stable_probe`, measured once per CPU, torch version and layer shape (not per
    thread count: the choice must not change with it) and kept in
    ``$OVSEG_CACHE/precision_probe.json``. Processes that start together (torchrun) take
    turns on a lock, so that the first measures and the others read its numbers. An
    unwritable cache only costs the re-measure."""
    key = f"stable|{hardware.name}|{hardware.isa}|torch {torch.__version__}"
    key += f"|{'x'.join(map(str, shape))}"
    path = cache_root() / "precision_probe.json"
    with _locked(path.with_name(path.name + ".lock")):
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}
        known = cache.get(key, {}).get("seconds", {})
        if any(p not in known for p in precisions):  # all measured in one go, one decision
            known, rounds = stable_probe(shape, precisions)
            cache[key] = {"seconds": known, "rounds": rounds, "threads": 1}
            try:
                write_text_atomic(path, json.dumps(cache, indent=1))
            except OSError:
                pass
    return {p: known[p] for p in precisions}


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path`` (POSIX); without one (no fcntl, an unwritable folder)
    the block runs unlocked."""
    handle = None
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # held across the yield, closed below
        fcntl.flock(handle, fcntl.LOCK_EX)
    except (ImportError, OSError):
        pass
    try:
        yield
    finally:
        if handle is not None:
            handle.close()


def decide_auto(probe: dict[str, float], candidates: list[str]) -> tuple[str, str]:
    """(precision, reason) for ``auto`` on a CPU from probe seconds: the fastest candidate
    if it beats fp32 by :data:`MIN_SPEEDUP`, else fp32."""
    fastest = min(candidates, key=probe.__getitem__)
    speedup = probe["fp32"] / probe[fastest]
    if speedup < MIN_SPEEDUP:
        return "fp32", (
            f"no fast path beats fp32 by {MIN_SPEEDUP}x here (best: {fastest} {speedup:.2f}x)"
        )
    return fastest, (
        f"measured fastest on this CPU: {speedup:.2f}x fp32 on the backbone's main layer "
        "(one thread, once per machine and model)"
    )


def choose_precision(
    requested: str, device: str | torch.device, *, probe_shape: tuple[int, int, int]
) -> PrecisionChoice:
    """Resolve ``requested`` (one of :data:`PRECISIONS`) on ``device``.

    Raises ValueError for an unknown precision, int8 on a GPU, or int8 without an int8 engine.
    A bf16 / fp16 request on a CPU is honoured, but carries a ``warning`` with its measured
    cost where the CPU has no native support or it measures slower than fp32.
    """
    check_precision(requested)
    hardware = detect_hardware(device)
    on_gpu = hardware.device.startswith("cuda")
    if requested == "int8":
        if on_gpu:
            raise ValueError("--precision int8 runs on the CPU only: use bf16 or fp16 on a GPU")
        if not hardware.int8:
            raise ValueError("this torch build has no int8 engine: use --precision fp32")
    if requested == "int8":
        return _with_others(PrecisionChoice("int8", "int8", "asked for", hardware), probe_shape)
    if requested != "auto":
        choice = PrecisionChoice(requested, requested, "asked for", hardware)
        if not on_gpu and requested in AUTOCAST_DTYPES:
            # Measured even where the flags say native: a limited oneDNN build or a VM that
            # hides the instructions makes bf16 several times slower than fp32.
            choice.probe = cached_probe(hardware, probe_shape, ["fp32", requested])
            ratio = choice.probe[requested] / choice.probe["fp32"]
            native = hardware.native_bf16 if requested == "bf16" else hardware.native_fp16
            if not native:
                choice.warning = (
                    f"ovseg: {requested} is not native on this CPU ({hardware.name}, no AMX / "
                    f"AVX512-{requested.upper()}): measured {ratio:.1f}x the fp32 time on the "
                    "backbone's main layer; --precision auto picks the fastest path here"
                )
            elif ratio > 1.0:
                choice.warning = (
                    f"ovseg: {requested} measured {ratio:.1f}x the fp32 time on the backbone's "
                    f"main layer on this CPU ({hardware.name}); --precision auto picks the "
                    "fastest path here"
                )
        return choice
    if on_gpu:
        precision = "bf16" if hardware.native_bf16 else "fp16"
        return PrecisionChoice("auto", precision, f"GPU with native {precision}", hardware)
    candidates = [p for p, ok in (("int8", hardware.int8), ("bf16", hardware.native_bf16)) if ok]
    if not candidates:
        return PrecisionChoice("auto", "fp32", "no native fast path on this CPU", hardware)
    probe = cached_probe(hardware, probe_shape, ["fp32", *candidates])
    precision, reason = decide_auto(probe, candidates)
    choice = PrecisionChoice("auto", precision, reason, hardware, probe)
    return _with_others(choice, probe_shape) if precision == "int8" else choice


def _with_others(choice: PrecisionChoice, probe_shape) -> PrecisionChoice:
    """The int8 path's other layers (the convolutions, the decoders' attention, the pixel
    decoder's 3x3 convolution) in bf16 where the CPU has it natively and the probe measures
    it clearly faster than fp32; the quantized layers take its bf16 activations as fp32."""
    if not choice.hardware.native_bf16:
        return choice
    probe = choice.probe or cached_probe(choice.hardware, probe_shape, ["fp32", "int8", "bf16"])
    choice.probe = probe
    if probe.get("bf16", math.inf) * MIN_SPEEDUP <= probe["fp32"]:
        choice.others = "bf16"
        choice.reason += "; its other layers in bf16 (native, measured faster than fp32)"
    return choice
