"""gradsal.engine (the runner and its folded fast path): the rewritten graph computes the model's function, and the
fast SmoothGrad path stays exact, side-effect free and up to date with the model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gradsal
from gradsal.engine import fastpath


class PaddedConv(nn.Conv2d):
    """A convolution subclass that pads in its own forward (as EfficientNet-Lite's
    TensorFlow-style SAME convolutions do); fx traces through it to F.conv2d."""

    def __init__(
        self, *args, pad=(1, 1, 1, 1), functional_pad=False, **kwargs
    ):
        super().__init__(*args, bias=False, **kwargs)
        self.pad, self.functional_pad = pad, functional_pad
        self.static_padding = nn.ZeroPad2d(pad)

    def forward(self, x):
        x = (
            F.pad(x, self.pad)
            if self.functional_pad
            else self.static_padding(x)
        )
        return F.conv2d(
            x,
            self.weight,
            self.bias,
            self.stride,
            0,
            self.dilation,
            self.groups,
        )


class PadConvBN(nn.Module):
    """Convolutions behind explicit zero paddings (one symmetric, one asymmetric), then batch norms."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv1 = PaddedConv(3, 4, 3)
        self.conv2 = PaddedConv(
            4, 4, 3, stride=2, groups=4, pad=(0, 1, 0, 1), functional_pad=True
        )  # depthwise
        self.bn1, self.bn2 = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.conv1.weight.copy_(torch.randn(4, 3, 3, 3, generator=g) * 0.3)
            self.conv2.weight.copy_(torch.randn(4, 1, 3, 3, generator=g) * 0.3)
            for bn in (self.bn1, self.bn2):
                bn.running_mean.uniform_(-0.5, 0.5, generator=g)
                bn.running_var.uniform_(0.5, 2.0, generator=g)
                bn.weight.uniform_(0.5, 1.5, generator=g)
                bn.bias.uniform_(-0.2, 0.2, generator=g)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.clamp(
            self.bn2(self.conv2(x)), 0, 6
        )  # asymmetric padding: grown into the kernel
        return self.fc(x.mean((2, 3)))


def test_folded_graph_computes_the_same_logits_and_gradients(
    tiny_cnn, image_batch
):
    for model in (tiny_cnn.eval(), PadConvBN().eval()):
        folded = fastpath.fold_for_gradients(model)
        assert folded is not None and folded.folded_bn >= 1
        for channels_last in (False, True):
            fast = folded.module(channels_last=channels_last)
            x = image_batch.clone()
            torch.testing.assert_close(
                fast(x), model(x).detach(), atol=1e-5, rtol=1e-5
            )
            g_fast = gradsal.vanilla_gradient(fast, x, 1)
            torch.testing.assert_close(
                g_fast,
                gradsal.vanilla_gradient(model, x, 1),
                atol=1e-5,
                rtol=1e-4,
            )


def test_paddings_and_following_batch_norms_are_folded():
    folded = fastpath.fold_for_gradients(PadConvBN().eval())
    assert (folded.folded_bn, folded.folded_pad, len(folded.convs)) == (
        2,
        2,
        2,
    )
    kinds = [
        n.target for n in folded.gm.graph.nodes if n.op == "call_function"
    ]
    assert F.pad not in kinds  # the asymmetric one grew the kernel instead
    assert [c.grow for c in folded.convs] == [(0, 0, 0, 0), (1, 0, 1, 0)]
    kept = fastpath.trace_and_fold(PadConvBN().eval(), asymmetric_pads=False)
    assert kept.folded_pad == 1 and F.pad in [
        n.target for n in kept.gm.graph.nodes if n.op == "call_function"
    ]


def test_models_that_cannot_be_rewritten_are_left_alone(
    tiny_cnn, linear_model, image_batch
):
    assert fastpath.fold_for_gradients(linear_model) is None  # no convolution

    class Branchy(
        nn.Module
    ):  # data-dependent control flow: fx cannot trace it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.bn(self.conv(x))
            return (
                y.mean((2, 3))
                if float(y.detach().sum()) > -1e9
                else -y.mean((2, 3))
            )

    branchy = Branchy().eval()
    assert fastpath.fold_for_gradients(branchy) is None
    a = gradsal.smoothgrad(
        branchy, image_batch[0], n_samples=3, generator=0, precision="auto"
    )
    b = gradsal.smoothgrad(
        branchy, image_batch[0], n_samples=3, generator=0, precision="float32"
    )
    torch.testing.assert_close(a, b)

    handle = tiny_cnn.features[2].register_forward_hook(lambda m, i, o: None)
    try:
        assert (
            fastpath.fold_for_gradients(tiny_cnn) is None
        )  # hooks must keep firing
    finally:
        handle.remove()
    assert fastpath.fold_for_gradients(tiny_cnn) is not None


def test_fast_path_sees_weights_changed_in_place_and_replaced_layers(
    tiny_cnn, image_batch
):
    x = image_batch[1]
    kw = dict(
        target=2, n_samples=5, noise_level=0.2, generator=4, mode="signed"
    )
    first = gradsal.smoothgrad(tiny_cnn, x, **kw)
    with (
        torch.no_grad()
    ):  # .data edits bump no version counter: weights must be re-read anyway
        tiny_cnn.features[0].weight.data.mul_(-2.0)
        tiny_cnn.features[1].running_var.data.mul_(3.0)
    changed = gradsal.smoothgrad(tiny_cnn, x, **kw)
    torch.testing.assert_close(
        changed,
        gradsal.smoothgrad(tiny_cnn, x, precision="float32", **kw),
        atol=1e-6,
        rtol=1e-4,
    )
    assert not torch.allclose(first, changed)
    tiny_cnn.features[2] = nn.Tanh()  # a new module tree: traced again
    swapped = gradsal.smoothgrad(tiny_cnn, x, **kw)
    torch.testing.assert_close(
        swapped,
        gradsal.smoothgrad(tiny_cnn, x, precision="float32", **kw),
        atol=1e-6,
        rtol=1e-4,
    )


def test_precision_is_checked_and_threads_are_restored(tiny_cnn, image_batch):
    with pytest.raises(ValueError, match="precision must be one of"):
        gradsal.smoothgrad(
            tiny_cnn, image_batch[0], n_samples=2, precision="fp16"
        )
    with pytest.raises(ValueError, match="precision must be one of"):
        gradsal.noisy_attributions(
            tiny_cnn, image_batch[0], n_samples=2, precision="half"
        )
    before = torch.get_num_threads()
    gradsal.smoothgrad(
        tiny_cnn, image_batch, n_samples=12, batch_size=2, generator=0
    )
    assert torch.get_num_threads() == before


def test_worker_threads_do_not_change_the_sums(tiny_cnn, image_batch):
    kw = dict(
        target=None, n_samples=11, noise_level=0.3, generator=5, mode="var"
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(
            1
        )  # one worker: chunks run in the calling thread
        serial = gradsal.smoothgrad(tiny_cnn, image_batch, batch_size=3, **kw)
        torch.set_num_threads(2)  # two workers
        parallel = gradsal.smoothgrad(
            tiny_cnn, image_batch, batch_size=3, **kw
        )
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(parallel, serial, atol=1e-7, rtol=1e-5)


def test_bfloat16_on_a_tiny_convnet_keeps_the_ranking(tiny_cnn, image_batch):
    x = image_batch[0]
    ref = gradsal.smoothgrad(
        tiny_cnn, x, 1, n_samples=6, generator=2, precision="float32"
    )
    low = gradsal.smoothgrad(
        tiny_cnn, x, 1, n_samples=6, generator=2, precision="bfloat16"
    )
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert gradsal.rank_correlation(low, ref) > 0.95


def test_native_bfloat16_follows_the_cpu_probes(monkeypatch):
    def probe(value):
        def answer():
            if isinstance(value, Exception):
                raise value
            return value

        return answer

    for avx, amx, expected in [
        (False, False, False),
        (True, False, True),
        (False, True, True),
    ]:
        monkeypatch.setattr(
            torch.cpu, "_is_avx512_bf16_supported", probe(avx), raising=False
        )
        monkeypatch.setattr(
            torch.cpu, "_is_amx_tile_supported", probe(amx), raising=False
        )
        assert fastpath.native_bfloat16() is expected
    # a probe torch cannot answer on this CPU family counts as "not there"; the other still decides
    monkeypatch.setattr(
        torch.cpu,
        "_is_avx512_bf16_supported",
        probe(RuntimeError("unsupported")),
        raising=False,
    )
    assert fastpath.native_bfloat16() is True
    monkeypatch.setattr(
        torch.cpu, "_is_amx_tile_supported", probe(False), raising=False
    )
    assert fastpath.native_bfloat16() is False
    # any other failure is a bug and surfaces
    monkeypatch.setattr(
        torch.cpu,
        "_is_amx_tile_supported",
        probe(TypeError("bug")),
        raising=False,
    )
    with pytest.raises(TypeError):
        fastpath.native_bfloat16()


def test_folding_leaves_the_callers_train_mode_alone(tiny_cnn):
    # fx shares leaf modules (dropout, batch norm, ReLU) with the traced graph.
    model = tiny_cnn.train()
    assert fastpath.fold_for_gradients(model) is not None
    assert all(m.training for m in model.modules())
    model.head.eval()
    fastpath.fold_for_gradients(model)
    assert (
        model.training and model.features.training and not model.head.training
    )


def test_chunks_are_at_most_the_batch_size_and_shared_evenly():
    from gradsal.engine import chunk_sizes

    for n, bs, workers in [
        (50, 3, 2),
        (7, 3, 1),
        (5, 8, 2),
        (1, 3, 2),
        (13, 4, 2),
    ]:
        sizes = chunk_sizes(n, bs, workers)
        assert (
            sum(sizes) == n
            and max(sizes) <= bs
            and max(sizes) - min(sizes) <= 1
        )
        if workers > 1 and n >= workers:
            assert len(sizes) % workers == 0


def test_an_error_in_a_worker_reaches_the_caller_and_leaves_no_trace():
    class Flaky(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin, self.calls = nn.Linear(6, 3), 0

        def forward(self, x):
            self.calls += 1
            if self.calls >= 4:
                raise RuntimeError("boom in a worker")
            return self.lin(x)

    model = Flaky().train()
    flags = [p.requires_grad for p in model.parameters()]
    threads = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom in a worker"):
        gradsal.smoothgrad(
            model, torch.randn(6), n_samples=12, batch_size=2, generator=0
        )
    assert [
        p.requires_grad for p in model.parameters()
    ] == flags and model.training
    assert torch.get_num_threads() == threads
    model.calls = -100  # and the next call works
    assert gradsal.smoothgrad(
        model, torch.randn(6), n_samples=12, batch_size=2, generator=0
    ).shape == (6,)


def test_the_check_is_made_once_per_kind_of_example(tiny_cnn, image_batch):
    kw = dict(target=1, n_samples=4, noise_level=0.2, generator=2)
    first = gradsal.smoothgrad(tiny_cnn, image_batch[0], **kw)
    folded = fastpath.fold_for_gradients(tiny_cnn)
    kind = (
        tuple(image_batch.shape[1:]),
        image_batch.dtype,
        image_batch.device,
    )
    assert folded.verified == [kind]
    torch.testing.assert_close(
        gradsal.smoothgrad(tiny_cnn, image_batch[0], **kw),
        first,
        atol=0,
        rtol=0,
    )
    gradsal.smoothgrad(tiny_cnn, image_batch, **kw)  # a batch: same examples
    assert folded.verified == [kind]
    gradsal.smoothgrad(
        tiny_cnn, image_batch[..., :6, :6], **kw
    )  # examples of another size are checked on their own
    assert len(folded.verified) == 2


def test_memory_is_bounded_by_the_batch_size_not_by_n(
    tiny_cnn, image_batch, monkeypatch
):
    """At most a few chunks of noisy copies are alive at once, however large N is."""
    import weakref

    from gradsal.engine import MAX_CPU_WORKERS
    from gradsal.methods import smoothing as sg_module

    draw = sg_module._noisy_batches
    most_alive = []

    def tracked(*args, **kwargs):
        alive = weakref.WeakSet()
        for b, chunk, targets in draw(*args, **kwargs):
            alive.add(chunk)
            most_alive[-1] = max(most_alive[-1], len(alive))
            yield b, chunk, targets

    monkeypatch.setattr(sg_module, "_noisy_batches", tracked)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(
            2
        )  # two workers, the CPU arrangement of this machine
        for n in (8, 80):
            most_alive.append(0)
            gradsal.smoothgrad(
                tiny_cnn,
                image_batch[0],
                n_samples=n,
                batch_size=2,
                generator=0,
            )
    finally:
        torch.set_num_threads(threads)
    # 4 chunks or 40: never more than the workers' chunks, one queued, one being drawn,
    # and one whose pass has just ended (a worker drops its reference to the input a
    # moment after handing back the result). The bound does not grow with N.
    assert max(most_alive) <= MAX_CPU_WORKERS + 3
    assert most_alive[1] <= MAX_CPU_WORKERS + 3


def test_reuse_freed_memory_is_applied_on_linux_glibc_only(monkeypatch):
    import platform
    import sys

    from gradsal.engine import allocator

    on_glibc = (
        sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    )
    assert allocator.reuse_freed_memory() is on_glibc
    assert allocator.reuse_freed_memory() is on_glibc  # idempotent
    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    assert allocator.reuse_freed_memory() is False


def test_no_gradsal_function_changes_the_allocator():
    # a process-wide setting is the program's choice: only its own module names it
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "src" / "gradsal"
    users = sorted(
        p.relative_to(src).as_posix()
        for p in src.rglob("*.py")
        if "reuse_freed_memory" in p.read_text() or "mallopt" in p.read_text()
    )
    assert users == ["engine/__init__.py", "engine/allocator.py"]
