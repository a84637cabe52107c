"""Model outputs: attribute and key access, ``to_tuple`` (as HF's ModelOutput), pytree / export / compile."""

from __future__ import annotations

import pytest
import torch
import torch.utils._pytree as pytree
from torch import nn

import mmfuse
from mmfuse.core.outputs import ClassificationOutput
from mmfuse.models.jml.outputs import JMLOutput
from mmfuse.core.features import Features


def test_key_and_attribute_access_skip_unset_fields():
    logits = {"sentiment": torch.randn(2, 3)}
    out = ClassificationOutput(loss=torch.tensor(0.5), logits=logits)
    assert out["logits"] is out.logits is logits
    assert "loss" in out and "fused" not in out
    assert out.keys() == ["loss", "losses", "logits"]  # declaration order, None fields left out
    assert out.to_tuple() == (out.loss, {}, logits) and out[0] is out.loss and out[-1] is logits
    assert dict(out.items()) == {"loss": out.loss, "losses": {}, "logits": logits}
    assert out.get("fused", "absent") == "absent"
    with pytest.raises(KeyError, match="'fused'.*set fields"):
        out["fused"]
    span = JMLOutput(start_logits=torch.zeros(1, 2))
    assert span.to_tuple()[-1] is span.start_logits


def test_outputs_are_pytrees_that_rebuild_themselves():
    features = Features(tokens=torch.randn(2, 3, 4), mask=torch.ones(2, 3, dtype=torch.bool), pooled=torch.randn(2, 4))
    out = ClassificationOutput(loss=torch.tensor(1.0), logits={"a": torch.randn(2, 3)}, text_features=features)
    leaves, spec = pytree.tree_flatten(out)
    tensors = [leaf for leaf in leaves if isinstance(leaf, torch.Tensor)]
    assert len(tensors) == 5  # loss, logits["a"], and the three feature tensors
    doubled = pytree.tree_map(lambda t: t * 2 if isinstance(t, torch.Tensor) else t, out)
    assert isinstance(doubled, ClassificationOutput) and isinstance(doubled.text_features, Features)
    torch.testing.assert_close(doubled.text_features.pooled, features.pooled * 2)


class _Head(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> ClassificationOutput:
        return ClassificationOutput(logits={"a": self.fc(x)}, fused=x + 1)


def test_export_and_compile_return_the_output_class():
    model = _Head()
    x = torch.randn(2, 4)
    exported = torch.export.export(model, (x,)).module()(x)
    assert isinstance(exported, ClassificationOutput)
    torch.testing.assert_close(exported["logits"]["a"], model(x).logits["a"])
    compiled = torch.compile(model, backend="eager")(x)
    assert isinstance(compiled, ClassificationOutput)
    torch.testing.assert_close(compiled.fused, x + 1)


def test_radm_output_supports_key_access():
    torch.manual_seed(0)
    model = mmfuse.build_model("radm-tiny").eval()
    from radm_support import make_batch

    out = model(make_batch(model, n=2))
    assert out["logits"]["sentiment"].shape == (2, 3)
    assert out.to_tuple()[0] is out.loss
