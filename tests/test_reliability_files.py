"""Readers and the CLI against hostile files: one clear line naming the file, or a
documented, counted skip; never a traceback, a silent wrong result or lost rows."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from train_support import tiny_model

from mmfuse.models.checkpoint import CheckpointError, load_pretrained
from mmfuse.cli import main
from mmfuse.core.config import ConfigError, load_config
from mmfuse.data import BadImageError, build_dataset
from mmfuse.data.images import check_image, load_image
from mmfuse.data.datasets.msed import read_msed_csv
from mmfuse.data.datasets.trc import read_trc
from mmfuse.data.datasets.twitter import read_tsv, read_txt
from mmfuse.train import checkpointing as ckpt
from mmfuse.train.inference import JsonlInputs, load_trained
from mmfuse.utils.io import TextDecodeError

def the_error(stderr: str) -> str:
    """The one error line of a failed command (progress / log lines on stderr are not errors)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("mmfuse ") and ": error: " in line]
    assert len(errors) == 1, stderr
    return errors[0]


TRC_HEADER = ("tweet_id,text_is_represented,image_adds,image_adds_text_repr,image_adds_text_notrepr,"
              "image_notadds_text_repr,image_notadds_text_notrepr,,,")


def png_bomb(path: Path, side: int = 30000) -> Path:
    """A ~100 KB 1-bit PNG declaring a side × side canvas (the issue's 30000 × 30000 bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (side // 8 + 1)
    data = zlib.compress(row * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def test_decompression_bombs_are_bad_images_named_and_skippable(tmp_path, monkeypatch):
    bomb = png_bomb(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    with pytest.raises(BadImageError, match=r"bomb\.png'?: .*(bomb|pixels)"):
        load_image(bomb)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # PIL's own guard switched off: mmfuse's still holds
    assert "more than the" in check_image(bomb)
    # through a data set: the skip policy leaves it out and names it; the error policy names it
    root = tmp_path / "mvsa"
    (root / "split").mkdir(parents=True)
    (root / "dataset_image").mkdir()
    (root / "split" / "train.json").write_text(json.dumps(
        [{"id": "1", "text": "ok", "emotion_label": 0}, {"id": "2", "text": "bomb", "emotion_label": 1}]))
    Image.new("RGB", (8, 8)).save(root / "dataset_image" / "1.jpg")
    (root / "dataset_image" / "2.jpg").write_bytes(bomb.read_bytes())
    with pytest.warns(UserWarning, match=r"skipping 1 item.*2\.jpg"):
        lenient = build_dataset("mvsa-json", "train", data_dir=str(root / "split"), on_bad_image="skip")
    assert len(lenient) == 1 and lenient.skipped[0].id == "2"
    strict = build_dataset("mvsa-json", "train", data_dir=str(root / "split"))
    with pytest.raises(BadImageError, match=r"2\.jpg"):
        strict[1]


def test_sixteen_bit_and_float_grey_images_are_scaled_not_saturated(tmp_path):
    values = (np.arange(64 * 16, dtype=np.uint32).reshape(16, 64) * 64).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = np.asarray(load_image(tmp_path / "g16.png"))
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert rgb.shape == (16, 64, 3) and np.array_equal(rgb[..., 0], expected) and np.array_equal(rgb[..., 2], expected)
    assert 0 < (rgb[..., 0] == 255).mean() < 0.05  # the top of the range only, not saturated white
    floats = np.linspace(0, 1, 32, dtype=np.float32).reshape(4, 8)
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tif")
    assert np.array_equal(np.asarray(load_image(tmp_path / "f.tif"))[..., 1], np.rint(floats * 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# text encodings, CSV and TSV
# ---------------------------------------------------------------------------------------------
def test_non_utf8_bytes_name_the_file_and_line(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_bytes(b"index\t#1 Label\t#2 ImageID\t#3 String\t#3 String\n1\t1\t1.jpg\t$T$ is \xff great\tX\n")
    with pytest.raises(TextDecodeError, match=r"train\.tsv: line 2, column \d+: not valid UTF-8 \(byte 0xff\)"):
        read_tsv(tsv)
    trc = tmp_path / "textimage.csv"
    trc.write_bytes((TRC_HEADER + "\r\n1,1,1,1,0,0,0,,,\r\n").encode() + b"2,\xc3(,1,1,1,0,0,0\r\n")
    with pytest.raises(TextDecodeError, match=r"textimage\.csv: line 3"):
        read_trc(trc)
    (tmp_path / "run.yaml").write_bytes(b"model: radm-tiny\nset: {x: \"\xe9\"}\n")
    with pytest.raises(ConfigError, match=r"run\.yaml: line 2"):
        load_config(tmp_path / "run.yaml")
    msed = tmp_path / "train.csv"
    msed.write_bytes(b"Title,Caption,Sentiment,Emotion,Desire\n\x80,b,positive,sad,none\n")
    with pytest.raises(TextDecodeError, match=r"train\.csv: line 2"):
        read_msed_csv(msed)
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_bytes(b'{"text": "a", "image": "x.png"}\n{"text": "\xfe", "image": "x.png"}\n')
    with pytest.raises(TextDecodeError, match=r"in\.jsonl: line 2"):
        JsonlInputs(jsonl)


def test_trc_unbalanced_quotes_duplicates_bad_labels_and_huge_fields_are_counted(tmp_path):
    good = [f"{100 + i},0,1,0,1,0,0,,," for i in range(230)]
    lines = [TRC_HEADER, "1,1,1,1,0,0,0,,,", '2,"1,1,1,0,0,0,,,', *good,
             "1,1,1,1,0,0,0,,,",  # exact duplicate
             "3,0,1,0,1,0,0,,,", "3,1,1,1,0,0,0,,,",  # same id, other labels
             "4,2,1,1,0,0,0,,,", "5,1,1,1,0,0,\u0661,,,", "6,1.0,1,1,0,0,0,,,",  # label values that are not 0/1
             "7,1,1,1,0,0,0," + "x" * 200_000 + ",,"]  # a field over the csv module's 128 KB limit
    path = tmp_path / "textimage.csv"
    path.write_text("\r\n".join(lines), encoding="utf-8")
    rows, report = read_trc(path)
    ids = [r.tweet_id for r in rows]
    assert len(set(ids) & {str(100 + i) for i in range(230)}) == 230  # nothing swallowed by the quote
    assert ids.count("1") == 1 and ids.count("3") == 1 and "2" in ids and "7" in ids
    assert report.flagged["unbalanced_quote"] == 2 and report.flagged["extra_fields"] == 1
    assert report.dropped == {"duplicate_id": 1, "conflicting_duplicate_id": 1, "invalid_label_value": 3}
    assert report.rows == len(lines) - 1 and report.kept == len(rows) == report.rows - 5
    with pytest.warns(UserWarning, match=r"dropped 3 \(invalid_label_value\)"):
        build_dataset("trc", "train", data_dir=str(path))


def test_twitter_carriage_returns_digits_and_image_ids(tmp_path):
    header = "index\t#1 Label\t#2 ImageID\t#3 String\t#3 String"
    rows = ["1\t2\t10.jpg\tgood\r$T$ day\tsun", "\u00b2\t1\t11.jpg\t$T$ here\tcat", "3\t0\t\t$T$ bad\tdog",
            "4\t0\t../..\t$T$ bad\tdog", "5\t1\t12.jpg\tfine $T$\tbird"]
    tsv = tmp_path / "dev.tsv"
    tsv.write_bytes(("\n".join([header, *rows]) + "\n").encode())
    parsed, report = read_tsv(tsv)
    assert [r.image_id for r in parsed] == ["10.jpg", "11.jpg", "12.jpg"]  # the \r did not split row 1
    assert parsed[0].words == ("good", "sun", "day") and parsed[0].start == 1
    assert report.flagged["carriage_return_in_line"] == 1 and report.flagged["bad_index"] == 1
    assert report.dropped["bad_image_id"] == 2
    txt = tmp_path / "dev.txt"
    txt.write_bytes(b"a $T$\nx\n1\n\n")
    assert read_txt(txt)[1].dropped["bad_image_id"] == 1


# ---------------------------------------------------------------------------------------------
# model folders
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def model_dir(tmp_path) -> Path:
    directory = tmp_path / "model"
    ckpt.save_model_folder(tiny_model(), directory, {
        "task": "classification", "labels": {"tasks": {"sentiment": ["negative", "neutral", "positive"]}},
        "dataset": {"name": "synthetic", "data_dir": None, "options": {"test_size": 4, "image_size": 32}}})
    return directory


def test_damaged_model_folders_give_one_line_naming_the_file(model_dir, capsys):
    weights = model_dir / "model.safetensors"
    good = weights.read_bytes()
    config = (model_dir / "config.json").read_text()
    task = (model_dir / "task.json").read_text()
    edited = json.loads(config)
    edited["d_model"] = 48
    cases = {
        "empty weights": ("model.safetensors", b"", r"model\.safetensors'?: not a readable safetensors"),
        "truncated weights": ("model.safetensors", good[: len(good) // 2], r"model\.safetensors'?: .*(truncated|corrupt)"),
        "garbled weights": ("model.safetensors", b"\x01\x02garbage" * 50, r"model\.safetensors'?: not a readable"),
        "truncated config": ("config.json", config[:40].encode(), r"config\.json'?: not valid JSON \(truncated\?\)"),
        "truncated task": ("task.json", task[:30].encode(), r"task\.json'?: not valid JSON \(truncated\?\)"),
        "edited d_model": ("config.json", json.dumps(edited).encode(), r"does not match config\.json .*shape"),
    }
    for name, (file, content, pattern) in cases.items():
        (model_dir / file).write_bytes(content)
        with pytest.raises((CheckpointError, ValueError), match=pattern):
            load_trained(model_dir)
        assert main(["eval", str(model_dir)]) == 2, name
        err = the_error(capsys.readouterr().err)
        assert file in err, (name, err)
        weights.write_bytes(good)
        (model_dir / "config.json").write_text(config)
        (model_dir / "task.json").write_text(task)
    load_pretrained(model_dir)  # restored: loads again


# ---------------------------------------------------------------------------------------------
# the command line: one line, exit 2, before doing the work
# ---------------------------------------------------------------------------------------------
def cli_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2, argv
    return the_error(capsys.readouterr().err)


def unwritable_dir(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: chmod 555 for a normal user; root ignores
    permission bits, so then a folder of /proc (which refuses new files to everyone)."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    return Path("/proc/self")


def test_cli_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys, model_dir):
    assert "trc: data_dir is required" in cli_error(capsys, ["train", "radm-tiny", "--dataset", "trc"])
    assert "split" in cli_error(capsys, ["eval", str(model_dir), "--split", "bogus"])
    assert "split" in cli_error(capsys, ["train", "radm-tiny", "--dataset", "synthetic", "--split", "bogus",
                                         "--output-dir", str(tmp_path / "r")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "image": "x.png"\n')
    assert "bad.jsonl:1: not valid JSON" in cli_error(capsys, ["predict", str(model_dir), "--inputs", str(bad)])
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    assert "deep.jsonl:1: JSON nested too deeply" in cli_error(capsys, ["predict", str(model_dir), "--inputs", str(deep)])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert "has no input lines" in cli_error(capsys, ["predict", str(model_dir), "--inputs", str(empty)])
    Image.new("RGB", (40, 40)).save(tmp_path / "ok.png")
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"text": "a", "image": "ok.png"}) + "\n" + json.dumps({"text": "b", "image": "no.png"}) + "\n")
    out = tmp_path / "pred.jsonl"
    assert "no.png" in cli_error(capsys, ["predict", str(model_dir), "--inputs", str(missing), "--output", str(out)])
    assert not out.exists()
    assert "holds a trained model" in cli_error(capsys, ["eval", str(tmp_path / "nowhere")])


def test_cli_checks_outputs_before_working(tmp_path, capsys, model_dir, monkeypatch):
    import mmfuse.train.trainer as trainer_module

    def no_work(*args, **kwargs):
        raise AssertionError("the command worked before checking its output")

    monkeypatch.setattr(trainer_module.Trainer, "evaluate", no_work)
    monkeypatch.setattr(trainer_module.Trainer, "predict", no_work)
    (tmp_path / "file").write_text("x")
    inputs = tmp_path / "in.jsonl"
    Image.new("RGB", (40, 40)).save(tmp_path / "ok.png")
    inputs.write_text(json.dumps({"text": "a", "image": "ok.png"}) + "\n")
    for output, expected in ((tmp_path, "is a folder"), (tmp_path / "file" / "out.json", "is a file"),
                             (unwritable_dir(tmp_path) / "out.json", "not writable")):
        assert expected in cli_error(capsys, ["eval", str(model_dir), "--output", str(output)])
        assert expected in cli_error(capsys, ["predict", str(model_dir), "--inputs", str(inputs), "--output",
                                              str(output)])
    err = cli_error(capsys, ["train", "radm-tiny", "--dataset", "synthetic", "--output-dir", str(tmp_path / "file")])
    assert "is a file" in err
    err = cli_error(capsys, ["train", "radm-tiny", "--dataset", "synthetic", "--output-dir",
                             str(unwritable_dir(tmp_path) / "run")])
    assert "output" in err
