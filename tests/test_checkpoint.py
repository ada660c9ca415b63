import os

import pytest
import torch

from models import load_checkpoint, read_checkpoint
from models.checkpoint import model_from_checkpoint, save_checkpoint
from utils.errors import UserError


class NotPlainData:
    def __init__(self):
        self.payload = 1


def test_checkpoint_loads_with_weights_only_and_round_trips(tiny_checkpoint, tmp_path):
    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)
    assert payload["spec"]["image-model"] == "resnet18"
    model, spec, tokenizer = model_from_checkpoint(payload)
    with torch.no_grad():
        model.logit_scale.fill_(3.0)
        model.image_projection.weight.mul_(2)
    copy = tmp_path / "copy.pt"
    save_checkpoint(str(copy), model, spec, tokenizer.to_files())
    again, _, tokenizer_again = load_checkpoint(str(copy))
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name
    assert torch.equal(tokenizer(["a red circle"]), tokenizer_again(["a red circle"]))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.encode_image(images), again.encode_image(images))
    assert [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")] == []


def test_pickle_checkpoint_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "contrastive-checkpoint/1", "object": NotPlainData()}, path)
    with pytest.raises(UserError, match="refusing to load"):
        read_checkpoint(str(path))


def test_missing_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_checkpoint(str(tmp_path / "none.pt"))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a Contrastive checkpoint"):
        read_checkpoint(str(tmp_path / "other.pt"))
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(UserError, match="refusing to load"):
        read_checkpoint(str(tmp_path / "text.pt"))


def test_atomic_write_fsyncs_the_file_then_its_folder(tmp_path, monkeypatch):
    import json
    import stat

    from utils.atomic_file import atomic_write_json

    synced, real_fsync = [], os.fsync

    def spy(fd):
        synced.append("folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    atomic_write_json(str(tmp_path / "a.json"), {"x": 1})
    assert synced == ["file", "folder"]  # the data, then the rename
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}
