"""The folded fast path: an equivalent graph for many gradient passes (appendix on performance).

SmoothGrad and Integrated Gradients spend all their time in forward and backward
passes through the model. This module holds what makes those passes cheaper
without changing what they compute; :mod:`gradsal.engine.runner` decides when to
use it (the ``precision`` argument of :func:`gradsal.smoothgrad`). The appendix
on performance ("Making SmoothGrad fast") measures each piece.

* :func:`fold_for_gradients` rewrites a convolutional network into an equivalent
  graph for gradients taken in eval mode: every batch norm that follows a
  convolution is folded into that convolution's weights and bias, and every
  zero padding in front of a convolution becomes the convolution's own padding
  (an asymmetric one by growing the kernel with zero rows and columns), and every
  ReLU6 that follows a convolution is fused into it (:class:`GradConv`: oneDNN's
  convolution with bias and clamp in the forward, an input-only gradient in the
  backward). The rewritten graph computes the same function (up to float rounding)
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

from ..core import CONV2D_FUNCTIONS, conv2d_arguments, int_pair

__all__ = [
    "FoldedGraph",
    "GradConv",
    "fold_for_gradients",
    "has_conv2d",
    "native_bfloat16",
    "trace_and_fold",
]


def _onednn_pointwise():
    """oneDNN's fused convolution + bias + activation operator, or None where absent."""
    try:
        op = torch.ops.mkldnn._convolution_pointwise.default
    except (AttributeError, RuntimeError):
        return None
    return op if torch.backends.mkldnn.is_available() else None


_POINTWISE = _onednn_pointwise()


def cpu_autocast_enabled() -> bool:
    """Whether CPU autocast is on in this thread (on torch 2.3, whose
    ``is_autocast_enabled`` takes no device, through its CPU-only call)."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:
        return torch.is_autocast_cpu_enabled()


class _ConvInputGradient(torch.autograd.Function):
    """Convolution (+ ReLU6) whose backward computes the input gradient only.

    Forward: oneDNN's convolution with bias and clamp in one pass. Backward: the
    ReLU6 mask from the saved output (0 < y < 6 exactly where 0 < z < 6), then
    the input gradient of the convolution, as a matrix product for a 1 x 1
    convolution (which then saves no input at all). Weights get no gradient.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, conv: GradConv):
        attr, scalars = (
            ("hardtanh", [0.0, 6.0]) if conv.relu6 else ("none", [])
        )
        y = _POINTWISE(
            x,
            weight,
            bias,
            conv.padding,
            conv.stride,
            conv.dilation,
            conv.groups,
            attr,
            scalars,
            "",
        )
        ctx.conv = conv
        ctx.save_for_backward(
            None if conv.pointwise else x, weight, y if conv.relu6 else None
        )
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, weight, y = ctx.saved_tensors
        conv = ctx.conv
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        if y is not None:
            grad = torch.ops.aten.hardtanh_backward(grad, y, 0.0, 6.0)
        if conv.pointwise:
            # One matrix product over pixels: a view of a channels-last gradient,
            # one copy of any other (cheaper than a batched product on strided data).
            n, c, h, w = grad.shape
            rows = grad.permute(0, 2, 3, 1).reshape(-1, c)
            gx = torch.mm(rows, weight.reshape(c, -1))
            gx = gx.view(n, h, w, -1).permute(0, 3, 1, 2)
        else:
            gx = torch.ops.aten.convolution_backward(
                grad,
                x,
                weight,
                None,
                conv.stride,
                conv.padding,
                conv.dilation,
                False,
                [0, 0],
                conv.groups,
                [True, False, False],
            )[0]
        return gx, None, None, None


def _function_mode_active() -> bool:
    """Whether a ``TorchFunctionMode`` watches this thread's calls (Guided Backprop's
    rule does): then the ReLU6 must be called as a function for the mode to see it."""
    probe = getattr(torch._C, "_is_torch_function_mode_enabled", None)
    return True if probe is None else bool(probe())


class GradConv(nn.Conv2d):
    """A folded convolution of the rewritten graph, with the ReLU6 after it fused in
    when ``relu6`` (appendix on performance, "What paid off").

    On the CPU in float32 it runs :class:`_ConvInputGradient`; elsewhere (another
    device, autocast, a ``TorchFunctionMode`` such as Guided Backprop's, or
    ``input_only=False``) it runs ``F.conv2d`` and ``F.hardtanh`` as the model
    did. Its weights never require gradients.
    """

    def __init__(
        self, *args, relu6: bool = False, input_only: bool = True, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.relu6 = relu6
        self.input_only = input_only
        self.pointwise = (
            self.kernel_size == (1, 1)
            and self.stride == (1, 1)
            and self.padding == (0, 0)
            and self.groups == 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.input_only
            and _POINTWISE is not None
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and not cpu_autocast_enabled()
            and not _function_mode_active()
        ):
            return _ConvInputGradient.apply(x, self.weight, self.bias, self)
        y = self._conv_forward(x, self.weight, self.bias)
        return F.hardtanh(y, 0.0, 6.0) if self.relu6 else y


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
    # Zero columns and rows added to the kernel (left, right, top, bottom): they turn
    # an asymmetric zero padding into a symmetric one (see _fold_padding).
    grow: tuple[int, int, int, int] = (0, 0, 0, 0)


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
    if node.op == "call_function" and node.target in CONV2D_FUNCTIONS:
        a = conv2d_arguments(node.args, node.kwargs)
        if a is None or not isinstance(a["input"], fx.Node):
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
        geometry = [int_pair(a[k]) for k in ("stride", "padding", "dilation")]
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


def _is_relu6(node: fx.Node, gm: fx.GraphModule) -> bool:
    """Whether ``node`` applies ReLU6 (clamp to [0, 6]) to its one tensor input."""
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        return (
            isinstance(mod, nn.Hardtanh)
            and (mod.min_val, mod.max_val) == (0.0, 6.0)
            and len(node.args) == 1
            and not node.kwargs
        )
    if node.op != "call_function" or not node.args:
        return False
    rest, kw = node.args[1:], dict(node.kwargs)
    if node.target is F.relu6:
        return not rest and set(kw) <= {"inplace"}
    if node.target is F.hardtanh:
        bounds = dict(zip(("min_val", "max_val", "inplace"), rest), **kw)
        return (bounds.get("min_val", -1.0), bounds.get("max_val", 1.0)) == (
            0.0,
            6.0,
        )
    return False


def _fold_padding(pad, padding, dilation):
    """The convolution's symmetric padding and its kernel's growth ``(left, right,
    top, bottom)`` that replace a zero padding ``pad`` in front of it, or None.

    A side padded by ``d`` more than the other becomes symmetric padding of the
    larger amount with ``d`` zero rows (columns) added to the kernel on the side
    opposite the extra padding: every output sees the same inputs with the same
    weights, and there are as many outputs.
    """
    left, right, top, bottom = pad
    if min(pad) < 0:
        return None
    if (left != right or top != bottom) and tuple(dilation) != (1, 1):
        return None
    grow = (
        max(right - left, 0),
        max(left - right, 0),
        max(bottom - top, 0),
        max(top - bottom, 0),
    )
    return (padding[0] + max(top, bottom), padding[1] + max(left, right)), grow


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
    """A traced copy of a model with batch norms, paddings and ReLU6s folded into convolutions.

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
        fused_relu6: int = 0,
    ) -> None:
        self.gm = gm
        self.convs = convs
        self.folded_bn = folded_bn
        self.folded_pad = folded_pad
        self.fused_relu6 = fused_relu6
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
            if any(c.grow):
                w = F.pad(w, c.grow)
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
    """Trace ``model`` and fold batch norms, zero paddings and ReLU6s into its convolutions.

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
        folded = trace_and_fold(model)
    except (
        Exception
    ):  # untraceable forward: the caller uses the model as it is
        folded = None
    try:
        _CACHE[model] = (sig, folded)
    except TypeError:
        pass
    return folded


def trace_and_fold(
    model: nn.Module,
    *,
    asymmetric_pads: bool = True,
    relu6: bool = True,
    input_only: bool = True,
) -> FoldedGraph | None:
    """The rewrite behind :func:`fold_for_gradients`, uncached; it raises where
    ``torch.fx`` cannot trace ``model``. The keywords switch its parts off one by
    one, for the benchmark's ablation (appendix on performance): asymmetric zero
    paddings grown into the kernel, ReLU6 fused into the convolution before it,
    and :class:`GradConv`'s input-only pass."""
    gm = fx.symbolic_trace(model)
    graph = gm.graph
    convs: list[_Conv] = []
    folded_bn = folded_pad = fused_relu6 = 0
    for node in list(graph.nodes):
        spec = _conv_of(node, gm)
        if spec is None:
            continue
        inp, weight, bias, stride, padding, dilation, groups = spec
        if weight.ndim != 4:
            continue
        pad_node, grow = None, (0, 0, 0, 0)
        pad = _zero_pad_of(inp, gm)
        if pad is not None and len(inp.users) == 1:
            left, right, top, bottom = pad[1]
            symmetric = left == right and top == bottom
            fold = (
                _fold_padding(pad[1], padding, dilation)
                if symmetric or asymmetric_pads
                else None
            )
            if fold is not None:
                pad_node, inp = inp, pad[0]
                padding, grow = fold
                folded_pad += 1
        bn_node, bn_mod = None, None
        users = list(node.users)
        if len(users) == 1:
            bn = _batch_norm_of(users[0], gm)
            if bn is not None and bn.num_features == weight.shape[0]:
                bn_node, bn_mod = users[0], bn
        last = bn_node if bn_node is not None else node
        act_node = None
        if (
            relu6
            and len(last.users) == 1
            and _is_relu6(next(iter(last.users)), gm)
        ):
            act_node = next(iter(last.users))
        out_channels, in_per_group, kh, kw = weight.shape
        conv = GradConv(
            in_per_group * groups,
            out_channels,
            (kh + grow[2] + grow[3], kw + grow[0] + grow[1]),
            stride,
            padding,
            dilation,
            groups,
            bias=bias is not None or bn_node is not None,
            device=weight.device,
            dtype=weight.dtype,
            relu6=act_node is not None,
            input_only=input_only,
        )
        conv.eval()
        conv.requires_grad_(False)
        name = f"gradsal_folded_conv{len(convs)}"
        gm.add_submodule(name, conv)
        with graph.inserting_before(node):
            new = graph.call_module(name, (inp,))
        (act_node or last).replace_all_uses_with(new)
        if act_node is not None:
            graph.erase_node(act_node)
            fused_relu6 += 1
        if bn_node is not None:
            graph.erase_node(bn_node)
            folded_bn += 1
        graph.erase_node(node)
        if pad_node is not None:
            graph.erase_node(pad_node)
        convs.append(_Conv(name, weight, bias, bn_mod, grow))
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
    return FoldedGraph(gm, convs, folded_bn, folded_pad, fused_relu6)
