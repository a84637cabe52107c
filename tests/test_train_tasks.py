"""The task registry (the CLI's extension point) and the classification task's hooks."""

from __future__ import annotations

import pytest
import torch
from train_support import synthetic

from mmfuse.core.config import ConfigError
from mmfuse.core.outputs import ClassificationOutput
import mmfuse
from mmfuse.tasks import TrainTask, get_task, list_tasks
from mmfuse.tasks.classification import CLASSIFICATION, configure_classification_model


class TaskPlugin:
    """A plugin adding one task eagerly and one lazily (a zero-argument callable)."""

    def __init__(self, task: TrainTask) -> None:
        self.task = task

    @mmfuse.hookimpl
    def mmfuse_tasks(self):
        return {"accuracy-only": self.task, "lazy-classification": lambda: CLASSIFICATION, "not-a-task": dict}


@pytest.fixture
def task_plugin():
    task = TrainTask(**{**CLASSIFICATION.__dict__, "name": "accuracy-only", "default_metric": "accuracy"})
    plugin = TaskPlugin(task)
    mmfuse.register_plugin(plugin, name="test-tasks")
    yield task
    mmfuse.unregister_plugin("test-tasks")


def test_plugins_add_tasks_eagerly_and_lazily(task_plugin):
    assert {"accuracy-only", "classification", "jmasa", "lazy-classification"} <= set(list_tasks())
    assert get_task("accuracy-only") is task_plugin
    assert get_task("lazy-classification") is CLASSIFICATION
    assert mmfuse.get_component("task", "accuracy-only").plugin == "test-tasks"
    with pytest.raises(TypeError, match="'not-a-task' .*is not a mmfuse.tasks.TrainTask"):
        get_task("not-a-task")


def test_registry_errors():
    with pytest.raises(ConfigError, match="unknown task 'clasification' \\(did you mean 'classification'\\?\\)"):
        get_task("clasification")
    with pytest.raises(ConfigError, match="unknown task 'JMASA' \\(did you mean 'jmasa'\\?\\)"):
        get_task("JMASA")

    class Clash:
        @mmfuse.hookimpl
        def mmfuse_tasks(self):
            return {"classification": CLASSIFICATION}

    with pytest.raises(mmfuse.DuplicateComponentError, match="task 'classification' is registered by two plugins"):
        mmfuse.register_plugin(Clash(), name="clash")
    assert "clash" not in mmfuse.get_registry().plugins()


def test_classification_hooks():
    dev = synthetic("dev", 4, tasks=["sentiment", "match"])
    schema = CLASSIFICATION.label_schema(dev)
    assert schema == {"tasks": {"sentiment": ["negative", "neutral", "positive"], "match": ["no", "yes"]}}
    config = {"model": "radm", "heads": {"name": "classifier", "tasks": {"sentiment": 3}},
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
