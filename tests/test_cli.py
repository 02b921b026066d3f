import subprocess
import sys

import pytest

import dipprior
from dipprior.cli import main


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert dipprior.__version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: dipprior" in capsys.readouterr().out


@pytest.mark.slow
def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "dipprior.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "dipprior" in out.stdout


def test_unknown_public_name_raises():
    import pytest

    with pytest.raises(AttributeError, match="no_such_name"):
        dipprior.no_such_name  # noqa: B018
