"""The example plugin package (examples/plugin_example, distribution ``mmfuse-film``).

It is installed with pip into a temporary folder exactly as a user would install it (no
network, no build isolation, no dependencies), then used only through mmfuse's public entry
points in child Pythons: ``build_model`` finds its preset through the entry point, the model
trains, and ``mmfuse list`` names the plugin. The FiLM block itself is checked against an
independent computation, and docs/plugins.md is checked to quote the package's real files.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from importlib.metadata import distributions
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, subprocess_env

from mmfuse import ConfigError
from mmfuse.core.config import validate_config

EXAMPLE = REPO_ROOT / "examples" / "plugin_example"
PLUGIN_DOC = REPO_ROOT / "docs" / "plugins.md"
QUOTED_FILES = ("pyproject.toml", "src/mmfuse_film/plugin.py", "src/mmfuse_film/film.py")


@pytest.fixture(scope="module")
def film_site(tmp_path_factory) -> Path:
    """A folder into which pip installed the example (a copy, so the checkout gets no build/)."""
    tmp = tmp_path_factory.mktemp("film")
    source = tmp / "plugin_example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp / "site"
    env = subprocess_env()
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(site), str(source)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return site


@pytest.fixture
def film(film_site, monkeypatch):
    """The installed ``mmfuse_film`` package, imported in-process (the registry is not touched)."""
    monkeypatch.syspath_prepend(str(film_site))
    import mmfuse_film

    yield mmfuse_film
    for name in [m for m in sys.modules if m == "mmfuse_film" or m.startswith("mmfuse_film.")]:
        del sys.modules[name]


def run_python(code: str, site: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=subprocess_env([str(site)]), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_pip_installed_a_distribution_with_an_mmfuse_entry_point(film_site):
    (dist,) = [d for d in distributions(path=[str(film_site)]) if d.metadata["Name"] == "mmfuse-film"]
    (ep,) = [ep for ep in dist.entry_points if ep.group == "mmfuse"]
    assert (ep.name, ep.value) == ("mmfuse-film", "mmfuse_film.plugin")


TRAIN = r"""
import json
import torch
from torch.utils.data import DataLoader

import mmfuse
from mmfuse.data import ClassificationCollator, SyntheticDataset

torch.set_num_threads(1)
torch.manual_seed(0)
preset = mmfuse.get_component("preset", "radm-tiny-film")
model = mmfuse.build_model("radm-tiny-film")
collate = ClassificationCollator(model.get_processor(train=False))
data = SyntheticDataset("train", size=32, seed=0)
batches = list(DataLoader(data, batch_size=16, shuffle=False, collate_fn=collate))


def mean_loss():
    model.eval()
    with torch.no_grad():
        return sum(model(b).loss.item() for b in batches) / len(batches)


before = mean_loss()
optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
for epoch in range(4):
    model.train()
    for batch in batches:
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
after = mean_loss()
swapped = mmfuse.build_model("radm-tiny", fusion={"name": "film", "bidirectional": True})
print(json.dumps({
    "plugin": preset.plugin,
    "fusion": type(model.fusion).__module__ + "." + type(model.fusion).__name__,
    "config_fusion": model.mmfuse_config["fusion"],
    "self_fusion": model.mmfuse_config["self_fusion"]["name"],
    "swapped": [type(swapped.fusion).__name__, swapped.fusion.image_to_text is not None],
    "film_trained": model.fusion.text_to_image.mlp[-1].weight.abs().sum().item() > 0,  # zero at init
    "before": before,
    "after": after,
}))
"""


def test_build_model_finds_the_preset_and_it_trains(film_site):
    result = json.loads(run_python(TRAIN, film_site).stdout.strip().splitlines()[-1])
    assert result["plugin"] == "mmfuse-film"
    assert result["fusion"] == "mmfuse_film.film.FiLMFusion"
    assert result["config_fusion"] == {"name": "film", "hidden_dim": 64, "dropout": 0.1}
    assert result["self_fusion"] == "self-fusion"  # the rest is radm-tiny's
    assert result["swapped"] == ["FiLMFusion", True]  # an override swaps the block of any preset
    assert result["film_trained"]  # gradients reached the block through RADM's fusion stage
    # 8 AdamW steps on 32 samples: the training loss falls well below chance level (ln 3 ≈ 1.10)
    assert result["after"] < result["before"] - 0.1, result


def test_mmfuse_list_shows_the_plugin(film_site):
    proc = subprocess.run([sys.executable, "-m", "mmfuse", "list"], capture_output=True, text=True,
                          env=subprocess_env([str(film_site)]), timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [re.split(r"\s*│\s*", line.strip("│ ")) for line in proc.stdout.splitlines() if "│" in line]
    assert ["fusion", "film", "mmfuse-film"] in [row[:3] for row in rows], proc.stdout
    assert ["preset", "radm-tiny-film", "mmfuse-film"] in [row[:3] for row in rows], proc.stdout


# -- the FiLM block ----------------------------------------------------------------------------
def randomise(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)


def reference_film(condition_tokens, condition_mask, tokens, mlp):
    """(1 + γ) x + β with γ, β from the mean of the real conditioning tokens, one sample at a time."""
    out = []
    for c, m, x in zip(condition_tokens, condition_mask, tokens):
        context = c[m].mean(0) if m.any() else torch.zeros_like(c[0])
        w1, b1, w2, b2 = mlp[0].weight, mlp[0].bias, mlp[2].weight, mlp[2].bias
        gamma_beta = w2 @ torch.nn.functional.gelu(w1 @ context + b1) + b2
        gamma, beta = gamma_beta[: x.shape[-1]], gamma_beta[x.shape[-1]:]
        out.append((1 + gamma) * x + beta)
    return torch.stack(out)


def inputs(d: int = 8):
    g = torch.Generator().manual_seed(0)
    text, image = torch.randn(3, 5, d, generator=g), torch.randn(3, 4, d, generator=g)
    text_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    image_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    return text, text_mask, image, image_mask


def test_film_starts_as_identity_and_reports_no_attention(film):
    block = film.FiLMFusion(d_model=8, bidirectional=True)
    text, text_mask, image, image_mask = inputs()
    out = block(text, text_mask, image, image_mask, return_attentions=True)
    torch.testing.assert_close(out.text, text)
    torch.testing.assert_close(out.image, image)
    assert out.attentions == {}
    assert block(text, text_mask, image, image_mask).attentions is None


@pytest.mark.parametrize("bidirectional", [False, True])
def test_film_matches_an_independent_computation(film, bidirectional):
    block = film.FiLMFusion(d_model=8, hidden_dim=6, bidirectional=bidirectional).eval()
    randomise(block)
    text, text_mask, image, image_mask = inputs()
    out = block(text, text_mask, image, image_mask)
    expected_image = reference_film(text, text_mask, image, block.text_to_image.mlp)
    torch.testing.assert_close(out.image, expected_image)
    expected_text = reference_film(image, image_mask, text, block.image_to_text.mlp) if bidirectional else text
    torch.testing.assert_close(out.text, expected_text)


def test_padded_tokens_do_not_reach_real_ones(film):
    block = film.FiLMFusion(d_model=8, bidirectional=True).eval()
    randomise(block)
    text, text_mask, image, image_mask = inputs()
    out = block(text, text_mask, image, image_mask)
    noisy = block(torch.where(text_mask[..., None], text, 1e3), text_mask,
                  torch.where(image_mask[..., None], image, -1e3), image_mask)
    torch.testing.assert_close(noisy.text[text_mask], out.text[text_mask])
    torch.testing.assert_close(noisy.image[image_mask], out.image[image_mask])


def test_film_config_and_input_errors_name_the_argument(film):
    with pytest.raises(ConfigError, match=r"hidden_dim: expected a positive int"):
        film.FiLMFusion(d_model=8, hidden_dim=0)
    with pytest.raises(ConfigError, match=r"dropout: expected a probability"):
        film.FiLMFusion(d_model=8, dropout=1.0)
    # the signature is the config schema
    with pytest.raises(ConfigError, match=r"fusion\.hidden_dim: expected int \| None, got str '64'"):
        validate_config(film.FiLMFusion, {"hidden_dim": "64"}, "fusion", provided=("d_model",))
    with pytest.raises(ConfigError, match=r"fusion\.d_model: is set by the enclosing component"):
        validate_config(film.FiLMFusion, {"d_model": 8}, "fusion", provided=("d_model",))
    text, text_mask, image, image_mask = inputs()
    block = film.FiLMFusion(d_model=8)
    with pytest.raises(TypeError, match=r"film: text_mask must be a bool tensor"):
        block(text, text_mask.long(), image, image_mask)
    with pytest.raises(ValueError, match=r"film: image must be \[B, L, d_model=8\]"):
        block(text, text_mask, image[..., :4], image_mask)


# -- the tutorial quotes the real files ------------------------------------------------------------
QUOTE = re.compile(r'^```\w+ title="(?P<path>[^"]+)"[^\n]*\n(?P<code>.*?)^```\s*$', re.M | re.S)


def test_plugins_doc_quotes_the_example_verbatim():
    quotes = [(m["path"], m["code"]) for m in QUOTE.finditer(PLUGIN_DOC.read_text(encoding="utf-8"))]
    assert {path for path, _ in quotes} >= set(QUOTED_FILES), "docs/plugins.md must show every file of the example"
    for path, code in quotes:
        source = (EXAMPLE / path).read_text(encoding="utf-8")
        assert code in source, f"docs/plugins.md quotes {path} but the block differs from the file; copy it again"


SAVE = r"""
import json, sys
import torch
import mmfuse
from mmfuse.data import ClassificationCollator, SyntheticDataset

torch.manual_seed(0)
model = mmfuse.build_model("radm-tiny-film").eval()
batch = ClassificationCollator(model.get_processor(train=False))([SyntheticDataset("dev", size=4, seed=1)[i] for i in range(4)])
torch.save(batch, sys.argv[1] + "/batch.pt")
model.save_pretrained(sys.argv[1] + "/model")
with torch.no_grad():
    torch.save(model(batch).logits["sentiment"], sys.argv[1] + "/expected.pt")
"""

LOAD = r"""
import sys
import torch
import mmfuse

model = mmfuse.from_pretrained(sys.argv[1] + "/model").eval()
batch = torch.load(sys.argv[1] + "/batch.pt")
with torch.no_grad():
    got = model(batch).logits["sentiment"]
torch.testing.assert_close(got, torch.load(sys.argv[1] + "/expected.pt"), rtol=0, atol=0)
print(type(model.fusion).__name__)
"""


def test_plugin_model_round_trips_and_names_the_missing_plugin(film_site, tmp_path):
    """A plugin model saved and loaded in fresh interpreters; without the plugin, loading names it.
    (The test's own tensors go through torch.save / torch.load; the model folder has no pickle.)"""

    def child(code: str, site: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                              env=subprocess_env(site), timeout=300)

    saved = child(SAVE, [str(film_site)])
    assert saved.returncode == 0, saved.stderr
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert {"kind": "fusion", "name": "film", "plugin": "mmfuse-film", "distribution": "mmfuse-film"} \
        in config["_mmfuse"]["plugins"]
    loaded = child(LOAD, [str(film_site)])
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.strip().splitlines()[-1] == "FiLMFusion"
    missing = child(LOAD, [])
    assert missing.returncode != 0
    assert "fusion 'film' from plugin 'mmfuse-film' (pip package 'mmfuse-film'), which is not installed" \
        in missing.stderr, missing.stderr
