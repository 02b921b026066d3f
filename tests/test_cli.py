import subprocess
import sys

import pytest
import torch

import dipprior
from dipprior.cli import main


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert dipprior.__version__ in capsys.readouterr().out


def test_no_command_prints_help_and_fails(capsys):
    assert main([]) == 2  # a command is required (it exited 0)
    assert "usage: dipprior" in capsys.readouterr().err


@pytest.mark.slow
def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "dipprior.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "dipprior" in out.stdout
    out = subprocess.run([sys.executable, "-m", "dipprior", "--version"], capture_output=True,
                         text=True, check=True)
    assert out.stdout.startswith("dipprior ")


def test_unknown_public_name_raises():
    import pytest

    with pytest.raises(AttributeError, match="no_such_name"):
        dipprior.no_such_name  # noqa: B018


# ----------------------------------------------------------------------------- user errors


def _photo_folder(tmp_path, n=2, size=24):
    from dipprior.io import sample_image, save_image

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["chelsea", "coffee", "astronaut"][:n]):
        save_image(sample_image(name, size), folder / f"{i}.png")
    return folder


def _one_line_error(capsys, code, expected_code=2):
    err = capsys.readouterr().err
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and lines[-1].startswith("dipprior ") and "error:" in lines[-1]
    return lines[-1]


TINY_TRAIN = ["--steps", "2", "--batch-size", "2", "--patch-size", "16", "--base-channels", "8",
              "--channel-mults", "1,2", "--num-res-blocks", "1", "--no-progress", "--threads", "1"]


def test_train_refuses_an_out_with_a_model_but_no_training_state(tmp_path, capsys):
    from dipprior.diffusion import Scheduler, save
    from dipprior.diffusion.unet import UNet

    data = _photo_folder(tmp_path)
    out = tmp_path / "model"
    save(UNet(base_channels=8, channel_mults=(1, 2), num_res_blocks=1), Scheduler(), out)
    before = (out / "model.safetensors").read_bytes()
    err = _one_line_error(capsys, main(["train", str(data), "--out", str(out), *TINY_TRAIN]))
    assert "--force" in err and (out / "model.safetensors").read_bytes() == before
    assert main(["train", str(data), "--out", str(out), "--force", *TINY_TRAIN]) == 0
    assert (out / "training_state.safetensors").is_file()


def test_train_checks_every_image_before_step_one(tmp_path, capsys):
    data = _photo_folder(tmp_path)
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "run"
    err = _one_line_error(capsys, main(["train", str(data), "--out", str(out), *TINY_TRAIN]))
    assert "broken.png" in err and not (out / "training_state.safetensors").exists()


def test_train_refuses_a_read_only_out_before_any_work(tmp_path, capsys, monkeypatch):
    """It failed at its first checkpoint with a raw Errno 13 on a temporary name (#30); a
    read-only folder as a user who is not root sees it (os.access says so)."""
    import os

    data = _photo_folder(tmp_path)
    read_only = tmp_path / "ro"
    read_only.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: os.fspath(path) != str(read_only)
                        and real_access(path, mode, **kw))
    err = _one_line_error(capsys, main(["train", str(data), "--out", str(read_only / "run"),
                                        *TINY_TRAIN]))
    assert f"--out: cannot write into '{read_only / 'run'}'" in err and "not a writable" in err
    assert "training UNet" not in err and not (read_only / "run").exists()


def test_an_unwritable_folder_is_named_not_the_temporary_file(tmp_path, monkeypatch):
    import tempfile

    from dipprior._atomic import atomic_folder, atomic_write_bytes

    def denied(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", f"{dir}/.x.tmp-abc")

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    with pytest.raises(PermissionError, match=r"path: cannot write '.*out.bin' \(permission "
                                              r"denied in"):
        atomic_write_bytes(tmp_path / "out.bin", b"x")
    with pytest.raises(PermissionError, match=r"path: cannot write '.*run' \(permission"):
        with atomic_folder(tmp_path / "run"):
            pass


@pytest.mark.parametrize("argv, needle", [
    (["train", "{data}", "--out", "{tmp}/r", "--lr", "1e30"], "lr"),
    (["train", "{data}", "--out", "{tmp}/r", "--threads", "0"], "threads"),
    (["demo", "--task", "sr", "--factor", "0", "--out", "{tmp}/d"], "factor"),
    (["restore", "{data}/0.png", "--task", "denoise", "--out", "{tmp}/missing/x.png"], "--out"),
    (["restore", "{data}/0.png", "--task", "denoise", "--out", "{tmp}/x.gif"], "--out"),
    (["restore", "{tmp}/nope.png", "--task", "denoise", "--out", "{tmp}/x.png"], "nope.png"),
    (["restore", "{data}/0.png", "--task", "denoise", "--out", "{tmp}/x.png", "--device",
      "cuda:7"], "device"),
    (["train", "{data}", "--out", "{tmp}/r", "--device", "cuda"], "device"),
    (["restore", "{data}/0.png", "--task", "denoise", "--out", "{data}/0.png"], "input"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, argv, needle):
    if needle == "device" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    data = _photo_folder(tmp_path)
    argv = [a.format(data=data, tmp=tmp_path) for a in argv]
    err = _one_line_error(capsys, main(argv))
    assert needle in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="threads"):
        main(["--debug", "train", str(tmp_path), "--out", str(tmp_path / "r"), "--threads", "0"])


@pytest.mark.slow
def test_killed_train_leaves_a_loadable_checkpoint_and_no_temp_files(tmp_path):
    import json
    import signal
    import time

    from dipprior.diffusion import load

    data = _photo_folder(tmp_path)
    out = tmp_path / "run"
    args = [sys.executable, "-m", "dipprior.cli", "train", str(data), "--out", str(out),
            "--checkpoint-every", "1", *TINY_TRAIN]
    args[args.index("--steps") + 1] = "100000"
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not (out / "training_state.safetensors").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # let it be in the middle of later checkpoints
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    load(out, device="cpu")  # loadable whatever moment it died
    step = json.loads((out / "config.json").read_text())["step"]
    resumed = args.copy()
    resumed[resumed.index("--steps") + 1] = str(step + 2)
    subprocess.run(resumed, check=True, capture_output=True)
    assert json.loads((out / "config.json").read_text())["step"] == step + 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "run"]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_runtime_failures_exit_1_without_traceback(tmp_path, capsys, monkeypatch):
    from dipprior.cli import restore

    def out_of_memory(args):
        raise MemoryError

    monkeypatch.setattr(restore, "run", out_of_memory)
    data = _photo_folder(tmp_path)
    code = main(["restore", str(data / "0.png"), "--task", "denoise", "--out",
                 str(tmp_path / "x.png")])
    assert "out of memory" in _one_line_error(capsys, code, expected_code=1)


def test_restore_refuses_a_folder_as_out(tmp_path, capsys):
    data = _photo_folder(tmp_path)
    (tmp_path / "x.png").mkdir()
    code = main(["restore", str(data / "0.png"), "--task", "denoise", "--out",
                 str(tmp_path / "x.png")])
    assert "folder" in _one_line_error(capsys, code)


def test_model_takes_a_guided_diffusion_pt_file(tmp_path, capsys, monkeypatch):
    from dipprior.diffusion import ADM_PRESETS, ADMUNet
    from dipprior.io import load_image

    tiny = dict(model_channels=32, num_res_blocks=1, channel_mult=(1, 2), attention_ds=(2,),
                num_head_channels=16, out_channels=6)
    torch.save(ADMUNet(**tiny).state_dict(), tmp_path / "tiny.pt")
    data = _photo_folder(tmp_path, n=1)
    args = ["restore", str(data / "0.png"), "--task", "denoise", "--sigma", "25",
            "--model", str(tmp_path / "tiny.pt"), "--out", str(tmp_path / "x.png")]
    # its shapes match no published preset: the heads are asked for, nothing is written
    assert "num_head_channels" in _one_line_error(capsys, main(args))
    assert not (tmp_path / "x.png").exists()
    # recognised as a preset, it restores end to end
    monkeypatch.setitem(ADM_PRESETS, "adm-tiny", {"file": "tiny.pt", "source": "a test",
                                                  "parameters": 0, "model": tiny})
    assert main(args) == 0, capsys.readouterr().err
    assert load_image(tmp_path / "x.png").shape == (3, 24, 24)


def test_a_bug_is_not_a_usage_error(monkeypatch, capsys):
    """A TypeError that names no argument is ours: exit 1 and a request to report it."""
    from dipprior.cli import restore

    def broken(args):
        return None + 1  # what a bug looks like

    monkeypatch.setattr(restore, "run", broken)
    assert main(["restore", "x.png", "--task", "denoise", "--out", "y.png"]) == 1
    err = capsys.readouterr().err
    assert "internal error (TypeError: unsupported operand" in err and "--debug" in err

    def refuses(args):
        raise TypeError("sigma: expected a number, got 'x'")  # our checks name the argument

    monkeypatch.setattr(restore, "run", refuses)
    assert main(["restore", "x.png", "--task", "denoise", "--out", "y.png"]) == 2


def test_an_option_of_another_task_is_refused(capsys):
    """Was silently ignored: --keep with denoising, --factor with inpainting."""
    assert main(["restore", "x.png", "--task", "denoise", "--keep", "0.3", "--out", "y.png"]) == 2
    assert "--keep: not an option of --task denoise" in capsys.readouterr().err
    assert main(["compare", ".", "--task", "inpaint", "--factor", "2"]) == 2
    assert "--factor: not an option of --task inpaint" in capsys.readouterr().err
