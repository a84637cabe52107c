"""Whole models under ``torch.compile`` and ``torch.export`` (the fused op inside them).

* radm-tiny, jml-tiny and jml-relation-tiny: forward + loss compile with ``fullgraph=True``
  into exactly one graph (what ``torch._dynamo.explain`` reports as 1 graph, 0 graph breaks:
  fullgraph raises on any break, and the counting backend sees every graph), and the compiled
  forward + backward equals eager mode (loss and every parameter's gradient); radm-tiny also
  with inductor (the slowest test here: whole-model C++ code generation).
* radm-tiny and jml-tiny export in eval mode with a dynamic batch dimension (and dynamic
  sequence / word lengths); the program runs on another batch size, matches eager, keeps the
  fused op as one node, and survives ``torch.export.save`` / ``load``.
* Eager models still reject bad batch values with the same clear errors (the value checks
  are skipped only while compiling).
"""

from __future__ import annotations

import pytest
import torch
from jml_support import TWEETS, make_span_batch
from radm_support import make_batch, one_thread  # noqa: F401  (fixture)

import mmfuse
from mmfuse.core.batch import BatchError
from mmfuse.ops import fused_kernel_available

MODELS = ["radm-tiny", "jml-tiny", "jml-relation-tiny"]


def _model_and_batch(name: str, n: int = 4, labels: bool = True, offset: int = 0):
    torch.manual_seed(0)
    model = mmfuse.build_model(name)
    if name == "radm-tiny":
        batch = make_batch(model, n=n, labels=labels)
    elif name == "jml-relation-tiny":
        batch = dict(model.get_processor().tokenize([" ".join(TWEETS[(i + offset) % len(TWEETS)][0]) for i in range(n)]))
        batch["pixel_values"] = torch.randn(n, 3, 64, 64, generator=torch.Generator().manual_seed(offset))
        if labels:
            batch["labels"] = {"image_adds": torch.arange(n) % 2}
    else:
        tweets = [TWEETS[(i + offset) % len(TWEETS)] for i in range(n)]
        batch = make_span_batch(model.tokenizer, tweets, image_size=64, labels=labels, seed=offset)
        batch.pop("words")
    return model, batch


class _GraphCounter:
    """A torch.compile backend that counts Dynamo's graphs and hands each to ``backend``."""

    def __init__(self, backend: str):
        self.backend, self.graphs = backend, 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return torch._dynamo.lookup_backend(self.backend)(gm, example_inputs)


def _loss_and_grads(model, fn, batch):
    model.zero_grad(set_to_none=True)
    loss = fn(batch).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("name", MODELS)
def test_model_compiles_into_one_graph_and_matches_eager(name, backend, one_thread):
    if backend == "inductor" and name != "radm-tiny":
        pytest.skip("inductor on the whole model: radm-tiny covers it (the jml models: aot_eager, for time)")
    model, batch = _model_and_batch(name)
    model.train()
    for m in model.modules():  # dropout off, so that eager and compiled runs see the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    torch._dynamo.reset()
    counter = _GraphCounter(backend)
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    got_loss, got_grads = _loss_and_grads(model, compiled, batch)
    want_loss, want_grads = _loss_and_grads(model, model, batch)
    assert counter.graphs == 1
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-4, atol=1e-5)
    assert got_grads.keys() == want_grads.keys() and len(got_grads) > 10
    for key in want_grads:
        torch.testing.assert_close(got_grads[key], want_grads[key], rtol=1e-3, atol=1e-5, msg=key)


def _export(name: str):
    from torch.export import Dim

    model, batch = _model_and_batch(name, labels=False)
    model.eval()
    batch_dim = Dim("batch", min=1, max=4096)
    dims = {key: ({0: batch_dim, 1: Dim.AUTO} if value.dim() == 2 else {0: batch_dim}) for key, value in batch.items()}
    kwargs, shapes = {"batch": batch}, {"batch": dims}
    if name.startswith("jml"):
        kwargs["decode"], shapes["decode"] = False, None
    return model, torch.export.export(model, (), kwargs, dynamic_shapes=shapes)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["radm-tiny", "jml-tiny"])
def test_export_with_dynamic_batch_matches_eager(name, tmp_path, one_thread):
    model, program = _export(name)
    if fused_kernel_available("cpu", torch.float32):
        nodes = [n for n in program.graph.nodes if n.target == torch.ops.mmfuse.gated_residual_attention.default]
        assert nodes, "the fused op is not in the exported graph"
    torch.export.save(program, tmp_path / "model.pt2")
    loaded = torch.export.load(tmp_path / "model.pt2")
    for n, offset in ((3, 1), (6, 2)):
        _, batch = _model_and_batch(name, n=n, labels=False, offset=offset)
        with torch.no_grad():
            want = model(batch, **({"decode": False} if name.startswith("jml") else {}))
            for runner in (program.module(), loaded.module()):
                got = runner(batch=batch, **({"decode": False} if name.startswith("jml") else {}))
                if name == "radm-tiny":
                    pairs = [(got.logits[t], want.logits[t]) for t in want.logits] + [(got.fused, want.fused)]
                else:
                    pairs = [(got.start_logits, want.start_logits), (got.end_logits, want.end_logits),
                             (got.word_states, want.word_states)]
                for a, e in pairs:
                    assert a.shape[0] == n
                    torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5)


def test_eager_models_still_reject_bad_values():
    model, batch = _model_and_batch("radm-tiny")
    bad = dict(batch, input_ids=batch["input_ids"].clone())
    bad["input_ids"][0, 0] = 10**6
    with pytest.raises(BatchError, match="input_ids: token id 1000000 is outside the text encoder's vocabulary"):
        model(bad)
    bad = dict(batch, labels={t: torch.full_like(y, 7) for t, y in batch["labels"].items()})
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 2\]"):
        model(bad)
    model, batch = _model_and_batch("jml-tiny")
    bad = dict(batch, span_polarity=batch["span_polarity"].clone())
    bad["span_polarity"][0, 0] = 9
    with pytest.raises(BatchError, match="span_polarity: real spans need a class index"):
        model(bad)


def test_losses_without_labels_are_zero_in_the_graph():
    """The branch-free losses: a task whose labels are all ignored adds 0 and keeps the graph."""
    model, batch = _model_and_batch("radm-tiny")
    ignored = dict(batch, labels={t: torch.full_like(y, -100) for t, y in batch["labels"].items()})
    output = model(ignored)
    assert output.loss.item() == 0 and output.loss.requires_grad
    output.loss.backward()
    model, batch = _model_and_batch("jml-relation-tiny")
    output = model(dict(batch, labels={"image_adds": torch.full((4,), -100)}))
    assert output.loss.item() == 0 and output.loss.requires_grad
