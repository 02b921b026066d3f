"""The README's three common jobs run as shown, from the top-level names, on tiny settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# the same code at tiny sizes: smaller crops, a short DIP, one photo for the ablation
TINY = {"size=128": "size=32", "iterations=1800": "iterations=4",
        'init="dip")': 'init="dip", dip={"iterations": 4, "channels": 8})',
        '("astronaut", "chelsea", "coffee")': '("astronaut", "coffee")'}


def _jobs() -> list[str]:
    text = README.read_text()
    quickstart = text[text.index("## Quickstart"):]
    return re.findall(r"```python\n(.*?)```", quickstart, re.S)[:3]


def test_the_three_jobs_are_at_most_five_lines_from_the_top_level():
    jobs = _jobs()
    assert len(jobs) == 3
    for code in jobs:
        lines = [line for line in code.splitlines() if line.strip()]
        assert len(lines) <= 5 and lines[0] == "import dipprior as dp", code
        assert not re.search(r"^from |^import (?!dipprior as dp)", code, re.M), code


@pytest.mark.slow
@pytest.mark.parametrize("job", range(3))
def test_a_job_runs(job, tmp_path, monkeypatch, capsys):
    code = _jobs()[job]
    for shown, tiny in TINY.items():
        code = code.replace(shown, tiny)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, f"README job {job + 1}", "exec"), {})
    out = capsys.readouterr().out
    printed = [lambda: "psnr" in out and out.split()[-1] == "100",  # the default's 4 x 25 NFE
               lambda: float(out.split()[0]) > 5,  # the DIP start's PSNR
               lambda: "DIP 64" in out and "DIP 16" in out and "Delta E" in out]
    assert printed[job](), out
