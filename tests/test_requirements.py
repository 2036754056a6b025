"""setup.py declares ranges, never exact PyTorch pins (a pin makes pip replace the user's torch),
the floors the README states are setup.py's, and CI's exact torch lies inside the range (so the
README's install keeps it). Reads the files only: no network, no install."""

import ast
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent


def setup_requirements(keyword: str = "install_requires"):
    """The list literal given to setup(keyword=...) in setup.py, parsed (nothing is run)."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == keyword:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py has no {keyword}")


def install_requires() -> dict[str, Requirement]:
    return {Requirement(r).name.lower(): Requirement(r) for r in setup_requirements()}


def floor(requirement: Requirement) -> str:
    (low,) = [s.version for s in requirement.specifier if s.operator == ">="]
    return low


@pytest.mark.parametrize("name", ["torch", "torchvision", "open_clip_torch", "timm"])
def test_the_core_dependencies_are_ranges_not_pins(name):
    specifiers = install_requires()[name].specifier
    assert not [s for s in specifiers if s.operator in ("==", "===", "~=")], specifiers
    assert any(s.operator == ">=" for s in specifiers), f"{name} has no floor"


@pytest.mark.parametrize("name", ["torch", "torchvision", "open_clip_torch", "timm"])
def test_the_readme_states_the_floors_of_setup_py(name):
    install = (ROOT / "README.md").read_text(encoding="utf-8").split("## Install", 1)[1]
    install = " ".join(install.split("\n## ", 1)[0].split())  # one section, lines joined
    stated = re.search(rf"{name} >= ([0-9][0-9.]*[0-9])", install)
    assert stated, f"the README's Install section does not state {name}'s floor"
    assert stated.group(1) == floor(install_requires()[name])


def test_ci_pins_an_exact_torch_inside_the_declared_range():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    pins = dict(re.findall(r'"(torch|torchvision)==([0-9.]+)"', ci))
    assert set(pins) == {"torch", "torchvision"}, "CI must install exact torch and torchvision"
    assert ci.index("torch==") < ci.index('-e ".[dev]"'), "the pin must come before ovseg"
    requires = install_requires()
    for name, version in pins.items():
        assert Version(version) in requires[name].specifier, (name, version)


@pytest.mark.parametrize("extra", ["export", "dev"])
def test_onnx_export_asks_for_a_torch_that_can_export_and_the_readme_says_which(extra):
    """ovseg.modeling.deformable_attention keeps int64 indices only where
    torch.compiler.is_exporting exists (torch >= 2.7); the exporter itself needs 2.12."""
    (torch,) = [
        Requirement(r)
        for r in setup_requirements("extras_require")[extra]
        if Requirement(r).name == "torch"
    ]
    assert Version(floor(torch)) >= Version("2.7")
    install = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"needs torch >= {floor(torch)}" in install
