"""The ``jmasa`` task: evaluator counts, truncated gold aspects, formatted predictions, the CLI route."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import subprocess_env
from jml_support import TWEETS
from radm_support import one_thread  # noqa: F401  (fixture)

import mmfuse
from mmfuse.metrics.span import span_metrics
from mmfuse.tasks.jmasa import JMASA, JMASAEvaluator, gold_aspects
from mmfuse.models.jml.outputs import AspectPrediction
from mmfuse.tasks import get_task

pytestmark = pytest.mark.usefixtures("one_thread")
SCHEMA = {"polarities": ["negative", "neutral", "positive"]}


def _aspect(start: int, end: int, polarity: int) -> AspectPrediction:
    return AspectPrediction(start, end, polarity, SCHEMA["polarities"][polarity], score=1.0, probability=0.9)


def test_task_is_registered_by_name():
    assert get_task("jmasa") is JMASA and JMASA.default_metric == "joint_f1"


def test_evaluator_sums_batches_like_span_metrics():
    gold = [[(0, 1, 2), (3, 3, 1)], [(2, 4, 0)], [(1, 1, 1)]]
    predicted = [[(0, 1, 2), (3, 3, 0)], [(2, 3, 0)], [(1, 1, 1), (4, 4, 2)]]
    evaluator = JMASAEvaluator(SCHEMA)
    for rows in ([0, 1], [2]):  # two batches
        output = SimpleNamespace(predictions=[[_aspect(*a) for a in predicted[i]] for i in rows])
        evaluator.update({"gold_aspects": [gold[i] for i in rows]}, output)
    metrics = evaluator.compute()
    assert metrics == span_metrics(predicted, gold)
    assert (metrics["n_joint_correct"], metrics["n_span_correct"], metrics["n_pred"], metrics["n_gold"]) == (2, 3, 5, 4)
    assert metrics["joint_f1"] == pytest.approx(2 * (2 / 5) * (2 / 4) / (2 / 5 + 2 / 4))
    with pytest.raises(TypeError, match="has no `predictions`"):
        evaluator.update({"gold_aspects": gold}, SimpleNamespace(predictions=None))


def test_aspects_cut_by_truncation_still_count_as_gold():
    model = mmfuse.build_model("jml-tiny-text")
    collate = JMASA.build_collator(model.get_processor(), SCHEMA, False)
    collate.collator.max_length = 6  # [CLS] + 4 sub-tokens + [SEP]: the last words are cut
    words, aspects = TWEETS[0]
    with pytest.warns(UserWarning, match="cut by max_length"):
        batch = collate([{"words": words, "aspects": aspects}])
    assert batch["span_mask"].sum() < len(aspects)  # the model never sees the cut aspect
    assert gold_aspects(batch) == [list(aspects)]  # ... but evaluation counts it as missed
    assert "pixel_values" not in batch  # text-only model: the collator reads no images


def test_predictions_are_formatted_with_tagged_text():
    torch.manual_seed(0)
    model = mmfuse.build_model("jml-tiny-text").eval()
    collate = JMASA.build_collator(model.get_processor(), SCHEMA, True)
    batch = collate([{"id": "t1", "text": " ".join(TWEETS[5][0])}])  # a --inputs line: text only
    with torch.no_grad():
        rows = JMASA.format_predictions(batch, model(batch), SCHEMA)
    assert rows[0]["id"] == "t1" and "gold" not in rows[0]
    tagged = rows[0]["text"]
    for aspect in rows[0]["aspects"]:
        assert f"({aspect['polarity']})" in tagged and aspect["term"] in tagged.replace("[", "").replace("]", " ")


@pytest.mark.slow
@pytest.mark.data
def test_cli_trains_evaluates_and_predicts_jmasa(shared_data, tmp_path):
    data = tmp_path / "twitter"
    data.mkdir()
    for split in ("train", "dev", "test"):  # a few dozen rows of each split
        lines = (shared_data / "twitter2015" / f"{split}.tsv").read_text(encoding="utf-8").split("\n")
        (data / f"{split}.tsv").write_text("\n".join(lines[:41]) + "\n", encoding="utf-8")
    env = subprocess_env()
    run = [sys.executable, "-m", "mmfuse"]
    train = subprocess.run(
        [*run, "train", "jml-tiny-text", "--task", "jmasa", "--dataset", "twitter2015", "--data-dir", str(data),
         "--output-dir", str(tmp_path / "run"), "--max-steps", "4", "--batch-size", "8", "--learning-rate", "3e-3",
         "--metric-for-best-model", "joint_f1", "--set", "decode_threshold=0.0"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert train.returncode == 0, train.stderr[-2000:]
    metrics = json.loads(train.stdout[train.stdout.index("{"):])["metrics"]
    assert {"joint_f1", "mate_f1", "masc_acc", "n_gold"} <= set(metrics)
    assert metrics["n_gold"] == sum(len(a) for a in _dev_aspects(data))
    predict = subprocess.run([*run, "predict", str(tmp_path / "run"), "--split", "test"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert predict.returncode == 0, predict.stderr[-2000:]
    rows = [json.loads(line) for line in predict.stdout.splitlines()]
    assert len(rows) == len(mmfuse.data.build_dataset("twitter2015", "test", data))
    assert {"id", "text", "aspects", "gold"} <= set(rows[0])


def _dev_aspects(data):
    return [t.aspects for t in mmfuse.data.build_dataset("twitter2015", "dev", data).iter_tweets()]
