"""The task registry (the CLI's extension point) and the classification task's hooks."""

from __future__ import annotations

import pytest
import torch
from train_support import synthetic

from mmfuse.core.config import ConfigError
from mmfuse.core.outputs import ClassificationOutput
from mmfuse.train import TASKS, TrainTask, get_task, register_task
from mmfuse.tasks.classification import CLASSIFICATION, configure_classification_model


@pytest.fixture
def restore_tasks():
    saved = dict(TASKS)
    yield
    TASKS.clear()
    TASKS.update(saved)


def test_lazy_registration_resolves_on_first_use(restore_tasks):
    register_task("mmfuse.tasks.classification:CLASSIFICATION", name="lazy-classification")
    assert isinstance(TASKS["lazy-classification"], str)
    assert get_task("lazy-classification") is CLASSIFICATION
    assert TASKS["lazy-classification"] is CLASSIFICATION  # cached after the import
    register_task("mmfuse.tasks.classification:TASKS", name="not-a-task")
    with pytest.raises(TypeError, match="is not a mmfuse.train.TrainTask"):
        get_task("not-a-task")


def test_registry_errors(restore_tasks):
    with pytest.raises(ConfigError, match="unknown task 'clasification' \\(did you mean 'classification'\\?\\)"):
        get_task("clasification")
    other = TrainTask(**{**CLASSIFICATION.__dict__, "name": "classification"})
    with pytest.raises(ValueError, match="already registered"):
        register_task(other)
    register_task(other, replace=True)
    assert get_task("classification") is other
    with pytest.raises(ValueError, match="register_task\\('module:attribute', name\\)"):
        register_task("mmfuse.tasks.classification:CLASSIFICATION")


def test_classification_hooks():
    dev = synthetic("dev", 4, tasks=["sentiment", "match"])
    schema = CLASSIFICATION.label_schema(dev)
    assert schema == {"tasks": {"sentiment": ["negative", "neutral", "positive"], "match": ["no", "yes"]}}
    config = {"model": "radm", "heads": {"name": "classification", "tasks": {"sentiment": 3}},
              "task_weights": {"sentiment": 2.0}}
    adapted = configure_classification_model(config, schema)
    assert adapted["heads"]["tasks"] == {"sentiment": 3, "match": 2} and config["heads"]["tasks"] == {"sentiment": 3}
    assert adapted["task_weights"] == {"sentiment": 2.0}
    assert configure_classification_model({"model": "other"}, schema) == {"model": "other"}

    logits = {"sentiment": torch.tensor([[0.0, 0.0, 5.0], [3.0, 0.0, 0.0]]), "match": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    batch = {"ids": ["a", "b"], "labels": {"sentiment": torch.tensor([2, 1]), "match": torch.tensor([0, 0])}}
    rows = CLASSIFICATION.format_predictions(batch, ClassificationOutput(logits=logits), schema)
    assert [r["prediction"] for r in rows] == [{"sentiment": "positive", "match": "no"},
                                              {"sentiment": "negative", "match": "yes"}]
    assert rows[1]["label"] == {"sentiment": "neutral", "match": "no"}
    assert rows[0]["probabilities"]["match"]["no"] == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item(), abs=1e-6)
    evaluator = CLASSIFICATION.build_evaluator(schema)
    evaluator.update(batch, ClassificationOutput(logits=logits))
    metrics = evaluator.compute()
    assert metrics["sentiment/accuracy"] == 0.5 and metrics["match/accuracy"] == 0.5 and metrics["accuracy"] == 0.5
