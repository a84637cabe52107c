"""aux_losses on any protocol model: build_model config, joint loss, modes, errors, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from aux_toy_models import ToyModelsPlugin, make_batch
from torch import nn

import mmfuse
from mmfuse.models.checkpoint import load_pretrained, save_pretrained
from mmfuse.core.config import ConfigError
from mmfuse.losses.auxiliary import AuxiliaryLosses, attach_aux_losses

AUX = [{"name": "itc", "weight": 0.1}, {"name": "itm", "weight": 0.1}]


class NotAnAuxLoss(nn.Module):
    """A plain loss module."""

    def __init__(self, text_dim: int) -> None:
        super().__init__()


class LossPlugin:
    @mmfuse.hookimpl
    def mmfuse_losses(self):
        return {"test-plain-loss": NotAnAuxLoss}


@pytest.fixture(autouse=True)
def toy_plugins():
    mmfuse.register_plugin(ToyModelsPlugin(), name="test-aux-toy-plugin")
    mmfuse.register_plugin(LossPlugin(), name="test-aux-loss-plugin")
    yield
    mmfuse.unregister_plugin("test-aux-toy-plugin")
    mmfuse.unregister_plugin("test-aux-loss-plugin")


def build(aux=AUX, **model_options):
    torch.manual_seed(0)
    return mmfuse.build_model({"model": "test-aux-toy", "aux_losses": aux, **model_options})


def test_itc_and_itm_are_registered_losses():
    assert {"itc", "itm"} <= set(mmfuse.list_components("loss"))


def test_aux_losses_join_the_loss_unweighted_in_losses():
    model = build().train()
    assert isinstance(model.aux_losses, AuxiliaryLosses)
    assert model.mmfuse_config["aux_losses"] == AUX  # checkpoints rebuild them
    out = model(make_batch(6))
    assert set(out.losses) == {"sentiment", "itc", "itm"}
    expected = out.losses["sentiment"] + 0.1 * out.losses["itc"] + 0.1 * out.losses["itm"]
    torch.testing.assert_close(out.loss, expected)
    assert out.losses["itc"].item() > 0 and out.losses["itm"].item() > 0
    # ITM drew 2B negatives from ITC's similarities and reused the forward's fused positives
    assert model.calls["fuse_rows"] == 6 + 12


def test_weight_changes_the_loss_by_weight_times_value():
    batch = make_batch(5)
    plain = build(aux=[]).train()
    assert not hasattr(plain, "aux_losses")  # an empty list attaches nothing
    base = plain(batch).loss
    weighted = build(aux=[{"name": "itc", "weight": 0.7}]).train()(batch)
    torch.testing.assert_close(weighted.loss, base + 0.7 * weighted.losses["itc"])
    default = build(aux=["itc"]).train()(batch)  # weight defaults to 1
    torch.testing.assert_close(default.loss, base + default.losses["itc"])


def test_eval_mode_and_unlabelled_batches():
    model = build()
    model.eval()
    out = model(make_batch(4))
    assert set(out.losses) == {"sentiment"} and out.loss is out.losses["sentiment"]
    model.train()
    unlabelled = model(make_batch(4, labels=False))  # aux losses alone form the loss
    torch.testing.assert_close(unlabelled.loss, 0.1 * unlabelled.losses["itc"] + 0.1 * unlabelled.losses["itm"])


def test_aux_parameters_train_and_round_trip_through_checkpoints(tmp_path):
    model = build().train()
    names = {n for n, _ in model.named_parameters()}
    assert {"aux_losses.itc.logit_scale", "aux_losses.itc.text_proj.weight", "aux_losses.itm.head.weight"} <= names
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(make_batch(6)).loss.backward()
    optimizer.step()
    for name in ("aux_losses.itc.logit_scale", "aux_losses.itc.image_proj.weight", "aux_losses.itm.head.bias"):
        assert not torch.equal(before[name], dict(model.named_parameters())[name]), name
    save_pretrained(model, tmp_path / "ckpt")
    loaded = load_pretrained(tmp_path / "ckpt")  # strict: aux_losses.* keys must match
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert loaded.train()(make_batch(3)).losses.keys() == {"sentiment", "itc", "itm"}


def test_features_are_reused_or_recomputed():
    model = build().train()
    model(make_batch(4))
    assert model.calls["encode_text"] == model.calls["encode_image"] == 1
    bare = build(report_features=False).train()
    out = bare(make_batch(4))
    assert bare.calls["encode_text"] == bare.calls["encode_image"] == 2  # forward + aux losses
    assert bare.calls["fuse_rows"] == 4 + 3 * 4  # positives fused again with the negatives
    assert set(out.losses) == {"sentiment", "itc", "itm"}


def test_deepcopy_runs_the_copys_own_aux_losses():
    model = build().train()
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.aux_losses.itc.logit_scale.fill_(0.0)
    batch = make_batch(4)
    assert twin(batch).losses["itc"].item() != pytest.approx(model(batch).losses["itc"].item())


def test_placeholder_images_are_left_out():
    model = build(aux=[{"name": "itc", "weight": 1.0}]).train()
    batch = make_batch(4)
    batch["image_mask"] = torch.tensor([True, False, True, True])
    rows = torch.tensor([0, 2, 3])
    real = {k: v[rows] for k, v in batch.items() if k not in ("labels", "image_mask")}
    text, image = model.encode_text(real), model.encode_image(real)
    want = model.aux_losses.itc.contrastive(text.pooled, image.pooled).loss
    torch.testing.assert_close(model(batch).losses["itc"], want)


def test_model_without_protocol_fails_naming_the_missing_methods():
    with pytest.raises(ConfigError) as err:
        mmfuse.build_model({"model": "test-no-protocol", "aux_losses": AUX})
    msg = str(err.value)
    assert "NoProtocolModel" in msg and "missing methods: encode_image, fuse" in msg and "SupportsFusion" in msg
    assert mmfuse.build_model({"model": "test-no-protocol"})  # fine without aux losses
    with pytest.raises(ConfigError, match="missing methods: encode_text, encode_image, fuse"):
        attach_aux_losses(nn.Linear(2, 2), ["itc"])


@pytest.mark.parametrize(("aux", "message"), [
    ("itc", "aux_losses: expected a list"),
    ([{"weight": 0.1}], r"aux_losses\[0\].name: missing required key"),
    ([{"name": "itc", "weight": "0.1"}], r"aux_losses\[0\].weight: expected float, got str"),
    ([{"name": "itc", "weight": -1.0}], r"aux_losses\[0\].weight: expected a non-negative float"),
    ([{"name": "itc"}, {"name": "itm", "temprature": 0.1}], r"aux_losses\[1\].temprature: unknown key \(did you mean 'temperature'\?\)"),
    ([{"name": "itc", "text_dim": 8}], r"aux_losses\[0\].text_dim: is set by the enclosing component"),
    (["itc", "itc"], "repeated: \\['itc'\\]"),
    (["test-plain-loss"], r"aux_losses\[0\]: loss 'test-plain-loss' is not an auxiliary loss"),
])
def test_bad_specs_are_named(aux, message):
    with pytest.raises(ConfigError, match=message):
        build(aux=aux)


def test_unknown_loss_names_the_entry_and_suggests():
    with pytest.raises(mmfuse.UnknownComponentError, match=r"aux_losses\[1\].name: unknown loss 'itcc' \(did you mean 'itc'\?\)"):
        build(aux=["itm", {"name": "itcc"}])


def test_widths_come_from_the_spec_when_the_model_declares_none():
    with pytest.raises(ConfigError, match=r"aux_losses\[0\].text_dim: missing required key; ToyFusionModel declares no `feature_dims`"):
        build(aux=["itc"], declare_dims=False)
    model = build(aux=[{"name": "itc", "text_dim": 8, "image_dim": 8}, {"name": "itm", "fused_dim": 16}],
                  declare_dims=False).train()
    assert set(model(make_batch(3)).losses) == {"sentiment", "itc", "itm"}


def test_itm_without_itc_needs_equal_pooled_widths():
    with pytest.raises(ConfigError, match=r"aux_losses\[0\]: ITM hard negatives need similarities.*text 8, image 5"):
        build(aux=["itm"], image_dim=5)
    assert build(aux=[{"name": "itm", "negatives": "random"}], image_dim=5)
    model = build(aux=["itm"]).train()  # equal widths: cosine of the pooled vectors
    assert "itm" in model(make_batch(4)).losses
