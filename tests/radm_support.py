"""Helpers shared by the RADM tests (encoders, fusion, model, viz, benchmark)."""

from __future__ import annotations

import socket

import pytest
import torch
from PIL import Image, ImageDraw

TINY_BERT = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
             "max_position_embeddings": 32}
TINY_VIT = {"model_name": "vit_tiny_patch16_224", "img_size": 32, "patch_size": 8, "embed_dim": 32, "depth": 1,
            "num_heads": 2}
CAPTIONS = ["look at this lovely triangle today", "awful circle", "here is this plain square again now",
            "i saw this great circle"]
COLOURS = [(220, 40, 40), (30, 160, 60), (40, 80, 220), (235, 195, 20)]


@pytest.fixture
def one_thread():
    """Run with one torch thread: on a shared 2-core machine two threads are several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def shape_image(colour: tuple[int, int, int], size: tuple[int, int] = (80, 64), shape: str = "circle") -> Image.Image:
    image = Image.new("RGB", size, (235, 235, 225))
    draw = ImageDraw.Draw(image)
    box = (size[0] // 5, size[1] // 5, 4 * size[0] // 5, 4 * size[1] // 5)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    return image


def make_batch(model, n: int = 4, labels: bool = True) -> dict:
    """A real processed batch for ``model`` (texts of different lengths, so with padding)."""
    processor = model.get_processor()
    batch = processor([CAPTIONS[i % len(CAPTIONS)] for i in range(n)],
                      [shape_image(COLOURS[i % len(COLOURS)]) for i in range(n)])
    if labels:
        batch["labels"] = {task: torch.arange(n) % classes for task, classes in model.heads.tasks.items()}
    return batch


def _reference_kernels():
    """Python CPU kernels for the two ops, computed with the eager reference (and its autograd)."""
    from mmfuse.ops import gated_residual_attention_reference as reference

    # defaults as in the schema: the dispatcher leaves out trailing arguments equal to them
    def forward(q, k, v, prev=None, key_mask=None, gate_weight=None, gate_bias=None, mode="gated", scale=None):
        out, scores = reference(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale)
        return out.clone(), scores.clone()  # outputs of an op must not alias each other or the inputs

    def backward(grad_out, grad_scores, q, k, v, prev, key_mask, gate_weight, gate_bias, scores, mode, scale=None):
        gated = mode == "gated" and prev is not None
        with torch.enable_grad():
            q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
            inputs = [q, k, v]
            if prev is not None:
                prev = prev.detach().requires_grad_()
                inputs.append(prev)
            if gated:
                gate_weight, gate_bias = gate_weight.detach().requires_grad_(), gate_bias.detach().requires_grad_()
                inputs += [gate_weight, gate_bias]
            out, scores = reference(q, k, v, prev, key_mask, gate_weight, gate_bias, mode, scale)
            grads = torch.autograd.grad([out, scores], inputs, [grad_out, grad_scores], allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, inputs)]
        empty = q.new_empty(0)
        grad_prev = grads[3] if prev is not None else empty
        grad_w, grad_b = (grads[-2], grads[-1]) if gated else (empty, empty)
        return grads[0], grads[1], grads[2], grad_prev, grad_w, grad_b

    return forward, backward


@pytest.fixture
def fused_cpu_op():
    """Make ``impl="fused"`` run on CPU float32 through ``torch.ops.mmfuse.*`` and the autograd
    formula registered in :mod:`mmfuse.ops.attention`.

    With the compiled CPU kernel this is the kernel itself (yields ``"kernel"``); until it is
    built, Python stand-in kernels computed with the eager reference are registered for the test
    (yields ``"stand-in"``): they exercise the op's dispatch, the autograd formula and the
    backward op's contract with a whole model around them.
    """
    from mmfuse.ops import extension_available, fused_kernel_available

    if not extension_available():
        pytest.skip("the mmfuse extension (torch.ops.mmfuse) is not built")
    if fused_kernel_available("cpu", torch.float32):
        yield "kernel"
        return
    library = torch.library.Library("mmfuse", "IMPL")
    forward, backward = _reference_kernels()
    library.impl("gated_residual_attention", forward, "CPU")
    library.impl("gated_residual_attention_backward", backward, "CPU")
    try:
        assert fused_kernel_available("cpu", torch.float32)
        yield "stand-in"
    finally:
        library._destroy()
    assert not fused_kernel_available("cpu", torch.float32)
