"""The documents' code runs as written."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHECK_ATTENTION = '''
import torch
from dt_attn import available_attentions, build_attention

assert "elu-linear" in available_attentions()
g = torch.Generator().manual_seed(0)
for window in (None, 1, 3, 7):
    attn = build_attention("elu-linear", window=window)
    q, k, v = (torch.randn(2, 2, 11, 4, generator=g, dtype=torch.float64) for _ in range(3))
    full = attn(q, k, v)
    state = attn.init_state(2, 2, 4, 4, dtype=torch.float64)
    steps = []
    for t in range(11):
        out, state = attn.step(q[:, :, t], k[:, :, t], v[:, :, t], state)
        steps.append(out)
    err = (torch.stack(steps, dim=2) - full).abs().max().item()
    assert err < 1e-12, (window, err)
print("ok")
'''


def python_blocks(doc: Path) -> list[str]:
    """The ```python blocks of a Markdown file."""
    return re.findall(r"```python\n(.*?)```", doc.read_text(), flags=re.DOTALL)


def test_the_attention_guide_example_registers_a_mechanism_whose_step_equals_its_parallel_form():
    (block,) = python_blocks(ROOT / "docs" / "attention.md")
    out = subprocess.run([sys.executable, "-c", block + CHECK_ATTENTION], cwd=ROOT, capture_output=True,
                         check=False, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_every_entry_module_answers_help(capsys):
    """Every `dt-attn` subcommand (and the maintainer tool beside them) runs from the repository root and
    prints its options; the GPU check script parses."""
    import importlib

    import pytest

    from experiments.cli import COMMAND_MODULES

    for module in (*COMMAND_MODULES, "experiments.commands.make_embedded_dataset"):
        with pytest.raises(SystemExit) as exit_info:
            importlib.import_module(module).COMMAND.main(["--help"])
        assert exit_info.value.code == 0, module
        assert "usage:" in capsys.readouterr().out, module
    check = subprocess.run(["bash", "-n", str(ROOT / "experiments" / "gpu_check.sh")], capture_output=True,
                           text=True, check=False)
    assert check.returncode == 0, check.stderr
