import json

import pytest
import torch

from conftest import tiny_unet
from dipprior.diffusion import Scheduler, available_pretrained, load, load_pretrained, save


def _model():
    net = tiny_unet()
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    return net.eval()


def test_roundtrip(tmp_path):
    net, sched = _model(), Scheduler(beta_schedule="cosine", prediction_type="v_prediction")
    save(net, sched, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "config.json", "model.safetensors"]  # no temporary files left behind
    net2, sched2 = load(tmp_path / "ckpt")
    assert net2.config == net.config and not net2.training
    assert sched2.to_config() == sched.to_config()
    x = torch.randn(1, 3, 10, 6)
    with torch.no_grad():
        torch.testing.assert_close(net2(x, 5), net(x, 5), rtol=0, atol=0)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["format"] == "dipprior.diffusion" and config["model_class"] == "UNet"


def test_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json is missing"):
        load(tmp_path / "empty")
    save(_model(), Scheduler(), tmp_path / "c")
    (tmp_path / "c" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="model.safetensors is missing"):
        load(tmp_path / "c")


def test_truncated_checkpoint(tmp_path):
    save(_model(), Scheduler(), tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    data = weights.read_bytes()
    for cut in (len(data) // 2, 100, 5):
        weights.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="truncated or corrupt"):
            load(tmp_path / "c")
    weights.write_bytes(data)
    cfg = tmp_path / "c" / "config.json"
    text = cfg.read_text()
    cfg.write_text(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not valid JSON"):
        load(tmp_path / "c")


def test_wrong_shape_checkpoint(tmp_path):
    save(_model(), Scheduler(), tmp_path / "c")
    cfg_path = tmp_path / "c" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model"]["base_channels"] = 16
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="wrong shapes"):
        load(tmp_path / "c")
    cfg["model"]["base_channels"] = 8
    cfg["model"]["num_res_blocks"] = 2
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="missing keys"):
        load(tmp_path / "c")


def test_not_a_checkpoint(tmp_path):
    save(_model(), Scheduler(), tmp_path / "c")
    cfg_path = tmp_path / "c" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "format": "something-else"}))
    with pytest.raises(ValueError, match="not a dipprior diffusion checkpoint"):
        load(tmp_path / "c")
    cfg_path.write_text(json.dumps({**cfg, "scheduler": {"beta_schedule": "nope"}}))
    with pytest.raises(ValueError, match="invalid scheduler config"):
        load(tmp_path / "c")
    cfg_path.write_text(json.dumps({**cfg, "model": {**cfg["model"], "depth": 3}}))
    with pytest.raises(ValueError, match="invalid model config"):
        load(tmp_path / "c")


def test_pickle_files_are_never_read(tmp_path):
    """A torch.save'd (pickled) file renamed to model.safetensors is rejected, not unpickled."""
    save(_model(), Scheduler(), tmp_path / "c")
    torch.save(_model().state_dict(), tmp_path / "c" / "model.safetensors")
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load(tmp_path / "c")


def test_save_rejects_bad_types(tmp_path):
    with pytest.raises(TypeError, match="model"):
        save(torch.nn.Linear(2, 2), Scheduler(), tmp_path / "c")
    with pytest.raises(TypeError, match="scheduler"):
        save(_model(), object(), tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_pretrained_registry(tmp_path):
    root = tmp_path / "weights"
    with pytest.raises(ValueError, match="none installed"):
        load_pretrained(root=root)
    root.mkdir()
    save(_model(), Scheduler(), root / "tiny")
    (root / "not-weights").mkdir()  # ignored: no config/model files
    assert available_pretrained(root) == ["tiny"]
    net, sched = load_pretrained(root=root, device="cpu")
    assert net.config["base_channels"] == 8 and isinstance(sched, Scheduler)
    net, _ = load_pretrained("tiny", root=root, device="cpu")
    with pytest.raises(ValueError, match=r"unknown pretrained prior 'big'.*tiny"):
        load_pretrained("big", root=root)
    save(_model(), Scheduler(), root / "second")
    with pytest.raises(ValueError, match="needs a name.*second.*tiny"):
        load_pretrained(root=root)


def test_shipped_registry_lists_names():
    names = available_pretrained()
    assert isinstance(names, list)
    if not names:
        with pytest.raises(ValueError, match="available"):
            load_pretrained()
    with pytest.raises(ValueError, match="unknown pretrained prior"):
        load_pretrained("no-such-prior")


# ----------------------------------------------------------------------------- reliability


def _other_model():
    return tiny_unet(base_channels=16)


def test_failed_save_over_another_architecture_keeps_the_old_checkpoint(tmp_path):
    save(_model(), Scheduler(), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError, match="metadata"):
        save(_other_model(), Scheduler(), tmp_path, metadata={"when": object()})
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    load(tmp_path, device="cpu")  # still loads


def test_interrupted_save_leaves_the_previous_checkpoint_and_cleans_up(tmp_path, monkeypatch):
    from dipprior import _atomic

    folder = tmp_path / "ck"
    save(_model(), Scheduler(), folder)

    def killed(tmp, target):
        raise KeyboardInterrupt  # as if the process died right before the swap

    monkeypatch.setattr(_atomic, "_swap", killed)
    with pytest.raises(KeyboardInterrupt):
        save(_other_model(), Scheduler(), folder)
    monkeypatch.undo()
    assert load(folder, device="cpu")[0].config == _model().config
    # what a SIGKILL leaves behind (a temp folder, a temp file) goes with the next write
    (tmp_path / ".ck.tmp-dead").mkdir()
    (folder / ".config.json.dead.tmp").write_text("{")
    save(_other_model(), Scheduler(), folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert load(folder, device="cpu")[0].config == _other_model().config


def test_save_keeps_other_files_and_writes_through_a_symlink(tmp_path):
    real = tmp_path / "real"
    save(_model(), Scheduler(), real)
    (real / "notes.txt").write_text("mine")
    link = tmp_path / "link"
    link.symlink_to(real)
    save(_other_model(), Scheduler(), link)
    assert link.is_symlink() and (real / "notes.txt").read_text() == "mine"
    assert load(link, device="cpu")[0].config == _other_model().config


def test_a_folder_left_aside_mid_swap_is_put_back(tmp_path):
    folder = tmp_path / "ck"
    save(_model(), Scheduler(), folder)
    folder.rename(tmp_path / ".ck.old-1234")  # the state between the two fallback renames
    model, _ = load(folder, device="cpu")  # a reader reads it where it is, moving nothing
    assert not folder.exists() and model.config == _model().config
    save(_other_model(), Scheduler(), folder)  # the next write puts it back first, then swaps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert load(folder, device="cpu")[0].config == _other_model().config


def _write_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))


def test_nan_weights_and_missing_scheduler_are_refused(tmp_path):
    net = _model()
    with torch.no_grad():
        net.conv_out.weight[0, 0, 0, 0] = float("nan")
    save(net, Scheduler(), tmp_path / "nan")
    with pytest.raises(ValueError, match="NaN"):
        load(tmp_path / "nan", device="cpu")
    save(_model(), Scheduler(), tmp_path / "nosched")
    _write_config(tmp_path / "nosched", scheduler=None)
    with pytest.raises(ValueError, match="scheduler"):
        load(tmp_path / "nosched", device="cpu")


@pytest.mark.parametrize("model_change", [
    {"base_channels": 10**9}, {"base_channels": 2048}, {"num_res_blocks": 20000},
    {"channel_mults": [1] * 100}])
def test_absurd_or_mismatched_configs_fail_before_allocating(tmp_path, model_change):
    save(_model(), Scheduler(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    _write_config(tmp_path, model={**config["model"], **model_change})
    with pytest.raises(ValueError, match="model config"):
        load(tmp_path, device="cpu")


def test_absurd_schedule_fails_before_allocating(tmp_path):
    save(_model(), Scheduler(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    _write_config(tmp_path, scheduler={**config["scheduler"], "num_train_timesteps": 10**9})
    with pytest.raises(ValueError, match="num_train_timesteps"):
        load(tmp_path, device="cpu")


def test_integer_weights_are_cast_and_complex_ones_refused(tmp_path):
    """int32 tensors loaded as float32 once; then "Only Tensors of floating point ... can
    require gradients" (#30)."""
    from safetensors.torch import load_file, save_file

    net = _model()
    save(net, Scheduler(), tmp_path / "c")
    weights = tmp_path / "c" / "model.safetensors"
    ints = {k: (100 * v).round().to(torch.int32) for k, v in load_file(weights).items()}
    save_file(ints, weights)
    loaded, _ = load(tmp_path / "c", device="cpu")
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == torch.float32 and torch.equal(tensor, ints[name].float())
    save_file({**ints, "conv_out.bias": ints["conv_out.bias"].to(torch.complex64)}, weights)
    with pytest.raises(ValueError, match=r"model.safetensors hold complex tensors \(conv_out"):
        load(tmp_path / "c", device="cpu")


def test_a_config_with_a_dropout_of_the_wrong_type_names_the_file(tmp_path):
    save(_model(), Scheduler(), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    _write_config(tmp_path, model={**config["model"], "dropout": "x"})
    with pytest.raises(ValueError, match=r"config.json has an invalid model config: dropout must "
                                         r"be a number in \[0, 1\), got 'x'"):
        load(tmp_path, device="cpu")


def test_an_unreadable_checkpoint_file_is_named(tmp_path, monkeypatch):
    """A mode-000 config.json (for a user who is not root) gave a raw PermissionError (#30)."""
    from pathlib import Path

    save(_model(), Scheduler(), tmp_path / "c")

    def denied(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(PermissionError, match=r"checkpoint file .*config.json is not readable "
                                              r"\(permission denied\)"):
        load(tmp_path / "c", device="cpu")
