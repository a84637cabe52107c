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
