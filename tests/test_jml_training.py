"""JML learns: the tiny model memorises tweets (joint F1 = 1), the relation module trains and loads into JML."""

from __future__ import annotations

import pytest
import torch
from jml_support import TWEETS, make_span_batch
from radm_support import one_thread  # noqa: F401  (fixture)

import mmfuse
from mmfuse.models.checkpoint import save_pretrained
from mmfuse.metrics.span import span_metrics
from mmfuse.models.jml.model import render_aspects

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", ["jml-tiny", "jml-tiny-text"])
def test_tiny_model_memorises_tweets_to_joint_f1_one(name):
    torch.manual_seed(0)
    model = mmfuse.build_model(name)
    batch = make_span_batch(model.tokenizer, TWEETS, image_size=64 if model.has_image else None)
    gold = [sorted(aspects) for _, aspects in TWEETS]

    def f1() -> float:
        return span_metrics(model.predict(batch, threshold=0.0), gold)["joint_f1"]

    before = f1()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        optimizer.zero_grad()
        output = model(batch)
        output.loss.backward()
        optimizer.step()
    assert before < 0.5
    assert f1() == 1.0
    predictions = model.predict(batch, threshold=0.0)
    assert [a.term for a in predictions[0]] == ["Chuck Bass", "# MCM"]
    assert [a.polarity_name for a in predictions[0]] == ["positive", "neutral"]
    assert render_aspects(batch["words"][0], predictions[0]) == \
        "RT @ ltsChuckBass : [Chuck Bass](positive) is everything [# MCM](neutral)"


def _relation_batch(model, n: int = 8) -> dict:
    """Texts paired with images whose class is visible (bright = 'adds', dark = 'does not add')."""
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([i % 2 for i in range(n)])
    pixels = torch.randn(n, 3, 64, 64, generator=generator) * 0.3 + (labels.float() * 2 - 1)[:, None, None, None]
    texts = [" ".join(TWEETS[i % len(TWEETS)][0]) for i in range(n)]
    batch = dict(model.get_processor().tokenize(texts))
    batch.update(pixel_values=pixels, labels={"image_adds": labels})
    return batch


def test_relation_module_trains_and_loads_into_jml(tmp_path):
    torch.manual_seed(0)
    relation = mmfuse.build_model("jml-relation-tiny")
    batch = _relation_batch(relation)
    optimizer = torch.optim.Adam(relation.parameters(), lr=3e-3)
    relation.train()
    first = None
    for _ in range(30):
        optimizer.zero_grad()
        output = relation(batch)
        output.loss.backward()
        optimizer.step()
        first = float(output.loss) if first is None else first
    relation.eval()
    with torch.no_grad():
        output = relation(batch)
    assert set(output.logits) == {"image_adds"} and output.logits["image_adds"].shape == (8, 2)
    assert float(output.loss) < 0.5 * first
    assert torch.equal(output.logits["image_adds"].argmax(-1), batch["labels"]["image_adds"])

    save_pretrained(relation, tmp_path / "relation")
    jml = mmfuse.build_model("jml-tiny-hard", relation=None, relation_checkpoint=str(tmp_path / "relation"),
                             freeze_relation=True).train()
    assert not jml.relation.training and all(not p.requires_grad for p in jml.relation.parameters())
    span_batch = make_span_batch(jml.tokenizer, TWEETS[:4], image_size=64)
    span_batch["pixel_values"] = batch["pixel_values"][:4]
    with torch.no_grad():
        gate = jml(span_batch).relation_gate
        expected = relation.probability({k: v for k, v in span_batch.items() if k != "labels"})
    assert gate.tolist() == [0.0, 1.0, 0.0, 1.0]  # the trained relation, hard-gated
    torch.testing.assert_close((expected >= 0.5).float(), gate)


def test_relation_checkpoint_must_hold_a_relation_model(tmp_path):
    save_pretrained(mmfuse.build_model("jml-tiny-text"), tmp_path / "other")
    with pytest.raises(mmfuse.core.config.ConfigError, match="holds a 'jml' model, expected 'jml-relation'"):
        mmfuse.build_model("jml-tiny", relation=None, relation_checkpoint=str(tmp_path / "other"))
