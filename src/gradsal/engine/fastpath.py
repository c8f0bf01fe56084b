"""The folded fast path: an equivalent graph for many gradient passes (appendix on performance).

SmoothGrad and Integrated Gradients spend all their time in forward and backward
passes through the model. This module holds what makes those passes cheaper
without changing what they compute; :mod:`gradsal.engine.runner` decides when to
use it (the ``precision`` argument of :func:`gradsal.smoothgrad`). The appendix
on performance ("Making SmoothGrad fast") measures each piece.

* :func:`fold_for_gradients` rewrites a convolutional network into an equivalent
  graph for gradients taken in eval mode: every batch norm that follows a
  convolution is folded into that convolution's weights and bias, and every
  symmetric zero padding in front of a convolution becomes the convolution's own
  padding. The rewritten graph computes the same function (up to float rounding)
  with fewer passes over memory, forward and backward. The model itself is never
  modified: the new convolutions are private copies whose weights are recomputed
  from the model's live parameters on every call, so later edits to the model
  (for example the weight randomisation of chapter 05) are always seen.
* :func:`native_bfloat16` tells whether this CPU computes in bfloat16 natively
  (AVX512-BF16 or AMX); without it bfloat16 is emulated and many times slower.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = [
    "FoldedGraph",
    "fold_for_gradients",
    "has_conv2d",
    "native_bfloat16",
]

# torch.conv2d and torch.nn.functional.conv2d are the same builtin; list both anyway.
_CONV2D_FUNCTIONS = {F.conv2d, torch.conv2d}
_CONV2D_ARGS = (
    "input",
    "weight",
    "bias",
    "stride",
    "padding",
    "dilation",
    "groups",
)
_CONV2D_DEFAULTS = {
    "bias": None,
    "stride": 1,
    "padding": 0,
    "dilation": 1,
    "groups": 1,
}


def native_bfloat16() -> bool:
    """True when this CPU has native bfloat16 arithmetic (AVX512-BF16 or AMX tiles).

    Only then does bfloat16 autocast make convolutions faster on the CPU; on
    other CPUs (for example AVX2-only ones) oneDNN emulates it and is many times
    slower than float32.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)
        if (
            probe is None
        ):  # an older torch without this probe: not known to be there
            continue
        try:
            if bool(probe()):
                return True
        except (
            RuntimeError
        ):  # torch built without the check for this CPU family
            continue
    return False


def has_conv2d(model: nn.Module) -> bool:
    """Whether ``model`` holds a 2-D convolution (the layers the fast path speeds up)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _pair(v) -> tuple[int, int] | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if (
        isinstance(v, (tuple, list))
        and len(v) == 2
        and all(isinstance(i, int) for i in v)
    ):
        return (int(v[0]), int(v[1]))
    if isinstance(v, (tuple, list)) and len(v) == 1 and isinstance(v[0], int):
        return (int(v[0]), int(v[0]))
    return None


def _fetch(root: nn.Module, target: str):
    obj = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass
class _Conv:
    """One convolution of the rewritten graph and where its weights come from."""

    name: str
    weight: torch.Tensor
    bias: torch.Tensor | None
    bn: nn.BatchNorm2d | None


def _conv_of(node: fx.Node, gm: fx.GraphModule):
    """``(input node, weight, bias, stride, padding, dilation, groups)`` of a plain
    zero-padded 2-D convolution node, or None for anything else."""
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if (
            type(mod) is not nn.Conv2d
            or mod.padding_mode != "zeros"
            or isinstance(mod.padding, str)
        ):
            return None
        if (
            len(node.args) != 1
            or node.kwargs
            or not isinstance(node.args[0], fx.Node)
        ):
            return None
        return (
            node.args[0],
            mod.weight,
            mod.bias,
            mod.stride,
            mod.padding,
            mod.dilation,
            mod.groups,
        )
    if node.op == "call_function" and node.target in _CONV2D_FUNCTIONS:
        if len(node.args) > len(_CONV2D_ARGS) or set(node.kwargs) - set(
            _CONV2D_ARGS
        ):
            return None
        a = dict(_CONV2D_DEFAULTS)
        a.update(zip(_CONV2D_ARGS, node.args))
        a.update(node.kwargs)
        if (
            "input" not in a
            or "weight" not in a
            or not isinstance(a["input"], fx.Node)
        ):
            return None
        tensors = []
        for key in ("weight", "bias"):
            v = a[key]
            if v is None and key == "bias":
                tensors.append(None)
            elif isinstance(v, fx.Node) and v.op == "get_attr":
                t = _fetch(gm, v.target)
                if not isinstance(t, torch.Tensor):
                    return None
                tensors.append(t)
            else:  # weights computed inside the forward: leave this convolution alone
                return None
        if a["padding"] == "valid":
            a["padding"] = 0
        geometry = [_pair(a[k]) for k in ("stride", "padding", "dilation")]
        if any(g is None for g in geometry) or not isinstance(
            a["groups"], int
        ):
            return None
        return a["input"], tensors[0], tensors[1], *geometry, a["groups"]
    return None


def _zero_pad_of(node: fx.Node, gm: fx.GraphModule):
    """``(input node, (left, right, top, bottom))`` of a constant-zero 2-D padding node."""
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if (
            type(mod) not in (nn.ZeroPad2d, nn.ConstantPad2d)
            or getattr(mod, "value", 0.0) != 0.0
        ):
            return None
        if (
            len(node.args) != 1
            or node.kwargs
            or not isinstance(node.args[0], fx.Node)
        ):
            return None
        return node.args[0], tuple(mod.padding)
    if node.op == "call_function" and node.target is F.pad:
        args = list(node.args) + [None] * (4 - len(node.args))
        inp, pad, mode, value = args[:4]
        pad = node.kwargs.get("pad", pad)
        mode = node.kwargs.get("mode", mode) or "constant"
        value = node.kwargs.get("value", value) or 0.0
        if not isinstance(inp, fx.Node) or mode != "constant" or value != 0.0:
            return None
        if (
            not isinstance(pad, (tuple, list))
            or len(pad) != 4
            or not all(isinstance(p, int) for p in pad)
        ):
            return None
        return inp, tuple(pad)
    return None


def _batch_norm_of(node: fx.Node, gm: fx.GraphModule) -> nn.BatchNorm2d | None:
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    mod = gm.get_submodule(node.target)
    if (
        type(mod) is not nn.BatchNorm2d
        or not mod.track_running_stats
        or mod.running_mean is None
    ):
        return None
    return mod


class FoldedGraph:
    """A traced copy of a model with batch norms and paddings folded into convolutions.

    Call :meth:`module` to get the rewritten ``nn.Module`` with weights computed
    from the model's current parameters. Valid only in eval mode (batch norm with
    running statistics), which is how :mod:`gradsal.engine.runner` runs every model.
    """

    def __init__(
        self,
        gm: fx.GraphModule,
        convs: list[_Conv],
        folded_bn: int,
        folded_pad: int,
    ) -> None:
        self.gm = gm
        self.convs = convs
        self.folded_bn = folded_bn
        self.folded_pad = folded_pad
        self.lock = threading.Lock()
        # Inputs (shape, dtype, device) on which the rewrite matched the model; a
        # fold is exact for any weights, so only a new kind of input is checked again.
        self.verified: list[tuple] = []

    @torch.no_grad()
    def module(self, channels_last: bool) -> fx.GraphModule:
        """The rewritten module with weights folded from the live parameters
        (always recomputed: a ``.data`` edit of a weight leaves no trace to detect)."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        for c in self.convs:
            w, b = (
                c.weight.detach(),
                None if c.bias is None else c.bias.detach(),
            )
            if c.bn is not None:
                bn = c.bn
                scale = torch.rsqrt(bn.running_var + bn.eps)
                if bn.weight is not None:
                    scale = scale * bn.weight.detach()
                shift = -bn.running_mean * scale
                if b is not None:
                    shift = shift + b * scale
                if bn.bias is not None:
                    shift = shift + bn.bias.detach()
                w = w * scale.to(w.dtype).view(-1, 1, 1, 1)
                b = shift.to(w.dtype)
            mod = self.gm.get_submodule(c.name)
            mod.weight = nn.Parameter(
                w.contiguous(memory_format=fmt), requires_grad=False
            )
            mod.bias = (
                None
                if b is None
                else nn.Parameter(b.contiguous(), requires_grad=False)
            )
        return self.gm

    def mark_verified(self, key: tuple) -> None:
        """Remember an input kind on which the check passed (the last few only)."""
        self.verified = [k for k in self.verified if k != key][-7:] + [key]


def _signature(model: nn.Module) -> tuple:
    """What the traced graph depends on: the module tree and the tensor objects in it."""
    mods = tuple((name, id(m), type(m)) for name, m in model.named_modules())
    tensors = tuple(
        (name, id(t)) for name, t in model.named_parameters()
    ) + tuple((name, id(t)) for name, t in model.named_buffers())
    return mods, tensors


def _has_hooks(model: nn.Module) -> bool:
    from torch.nn.modules import module as module_mod

    for glob in (
        "_global_forward_hooks",
        "_global_forward_pre_hooks",
        "_global_backward_hooks",
        "_global_backward_pre_hooks",
    ):
        if getattr(module_mod, glob, None):
            return True
    for m in model.modules():
        for attr in (
            "_forward_hooks",
            "_forward_pre_hooks",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            if getattr(m, attr, None):
                return True
    return False


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def fold_for_gradients(model: nn.Module) -> FoldedGraph | None:
    """Trace ``model`` and fold batch norms and symmetric zero paddings into its convolutions.

    Returns None when nothing can be gained or nothing is safe to do: no 2-D
    convolution, a hook registered on some module (hooks on folded layers would
    stop firing), or a forward that ``torch.fx`` cannot trace (data-dependent
    control flow). The traced structure is cached per model and traced again when
    a submodule, parameter or buffer object is replaced; the folded weights are
    recomputed on every :meth:`FoldedGraph.module` call. Callers should still
    compare the rewritten model's output with the original's (gradsal does, on
    the clean input, before every SmoothGrad run).
    """
    if (
        not isinstance(model, nn.Module)
        or not has_conv2d(model)
        or _has_hooks(model)
    ):
        return None
    sig = _signature(model)
    try:
        cached = _CACHE.get(model)
    except TypeError:
        cached = None
    if cached is not None and cached[0] == sig:
        return cached[1]
    try:
        folded = _trace_and_fold(model)
    except (
        Exception
    ):  # untraceable forward: the caller uses the model as it is
        folded = None
    try:
        _CACHE[model] = (sig, folded)
    except TypeError:
        pass
    return folded


def _trace_and_fold(model: nn.Module) -> FoldedGraph | None:
    gm = fx.symbolic_trace(model)
    graph = gm.graph
    convs: list[_Conv] = []
    folded_bn = folded_pad = 0
    for node in list(graph.nodes):
        spec = _conv_of(node, gm)
        if spec is None:
            continue
        inp, weight, bias, stride, padding, dilation, groups = spec
        if weight.ndim != 4:
            continue
        pad_node = None
        pad = _zero_pad_of(inp, gm)
        if pad is not None and len(inp.users) == 1:
            left, right, top, bottom = pad[1]
            if left == right and top == bottom and min(left, top) >= 0:
                pad_node, inp = inp, pad[0]
                padding = (padding[0] + top, padding[1] + left)
                folded_pad += 1
        bn_node, bn_mod = None, None
        users = list(node.users)
        if len(users) == 1:
            bn = _batch_norm_of(users[0], gm)
            if bn is not None and bn.num_features == weight.shape[0]:
                bn_node, bn_mod = users[0], bn
        out_channels, in_per_group, kh, kw = weight.shape
        conv = nn.Conv2d(
            in_per_group * groups,
            out_channels,
            (kh, kw),
            stride,
            padding,
            dilation,
            groups,
            bias=bias is not None or bn_node is not None,
            device=weight.device,
            dtype=weight.dtype,
        )
        conv.eval()
        conv.requires_grad_(False)
        name = f"gradsal_folded_conv{len(convs)}"
        gm.add_submodule(name, conv)
        with graph.inserting_before(node):
            new = graph.call_module(name, (inp,))
        last = bn_node if bn_node is not None else node
        last.replace_all_uses_with(new)
        if bn_node is not None:
            graph.erase_node(bn_node)
            folded_bn += 1
        graph.erase_node(node)
        if pad_node is not None:
            graph.erase_node(pad_node)
        convs.append(_Conv(name, weight, bias, bn_mod))
    if not convs:
        return None
    graph.eliminate_dead_code()
    graph.lint()
    gm.recompile()
    # Not gm.eval(): the traced graph shares its leaf modules with the caller's
    # model, whose train/eval flags are the caller's. The engine runs the graph
    # inside frozen(model), which puts those shared modules in eval mode for the
    # duration of a run only.
    gm.training = False
    return FoldedGraph(gm, convs, folded_bn, folded_pad)
