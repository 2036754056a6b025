"""The package installs and runs outside the repository: build the wheel, install it into a
fresh virtual environment, and from another directory run ``ovseg predict`` on the shipped
examples. Everything ovseg reads at run time must be package data.

It runs from a virtual environment as well as outside one: the test's own environment is made
to see the packages of the interpreter running the tests, wherever those are installed.
"""

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the sources, so that no build/ or egg-info lands in the checkout."""
    source = tmp_path_factory.mktemp("source")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copytree(ROOT / "ovseg", source / "ovseg", ignore=skip)
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheelhouse")
    offline = _can_build_offline()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--wheel-dir", str(out)]
        + ["--quiet"]
        + (["--no-build-isolation"] if offline else []),
        check=True,
        cwd=out,
        env=dict(os.environ, PIP_NO_INDEX="1") if offline else dict(os.environ),
    )
    (path,) = out.glob("ovseg-*.whl")
    return path


def _can_build_offline() -> bool:
    """Whether this interpreter builds the wheel itself: setuptools with bdist_wheel (70.1 or
    newer, or the wheel package). A fresh virtual environment of Python 3.12+ has no
    setuptools: pip then fetches it as pyproject.toml's build-system says."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    from importlib.metadata import version

    major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def make_venv(venv: Path) -> Path:
    """A virtual environment that sees the packages of the interpreter running the tests
    (torch ...), wherever they are installed: the system's, the user's or a virtual
    environment's own. (``--system-site-packages`` would not do: made from inside a virtual
    environment it sees the base interpreter's packages only.) Returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = site.getsitepackages() + ([site.getusersitepackages()] if site.ENABLE_USER_SITE else [])
    lines = [f"import site; site.addsitedir({d!r})" for d in ours if Path(d).is_dir()]
    # After the venv's own site-packages: the installed wheel comes first.
    (Path(purelib) / "_ovseg_test_parent_packages.pth").write_text("\n".join(lines) + "\n")
    return python


def test_make_venv_sees_the_packages_of_the_interpreter_running_the_tests(tmp_path):
    """torch where the tests' interpreter has it (in a virtual environment: inside it)."""
    python = make_venv(tmp_path / "venv")
    found = subprocess.run(
        [str(python), "-c", "import torch, numpy; print(torch.__file__)"],
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert found.returncode == 0, found.stderr
    import torch

    assert Path(found.stdout.strip()) == Path(torch.__file__)


def test_the_wheel_holds_the_run_time_files_and_nothing_of_the_repository(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "ovseg/configs/synthetic_tiny.yaml",
        "ovseg/configs/fcclip_convnext_large_coco.yaml",
        "ovseg/configs/clip/ovseg_synthetic_clip.json",
        "ovseg/assets/synthetic_tiny/synthetic_tiny.safetensors",
        "ovseg/assets/synthetic_tiny/report.md",
        "ovseg/assets/examples/synthetic_val_00000.png",
        "ovseg/assets/examples/chelsea.jpg",
        "ovseg/vocab/synthetic_world.txt",
        "ovseg/vocab/templates/vild.txt",
        "ovseg/apps/main.py",
        "ovseg/sam/prompt_head.py",
    ):
        assert needed in names, needed
    top = {name.split("/")[0] for name in names}
    assert top == {
        "ovseg",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ovseg = ovseg.apps.main:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_wheel_runs_the_main_job_from_another_directory(wheel, tmp_path):
    """A virtual environment that sees the installed dependencies (torch ...) but gets ovseg
    only from the wheel; run from a directory that is not the checkout."""
    venv = tmp_path / "venv"
    python = make_venv(venv)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)],
        check=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop("PYTHONPATH", None)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600
        )

    where = run(str(python), "-c", "import ovseg; print(ovseg.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout  # not the checkout
    ovseg = str(venv / "bin" / "ovseg")
    helped = run(ovseg, "predict", "--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: ovseg predict"), helped
    done = run(ovseg, "predict", "--examples", "--vocab", "synthetic_world", "--output", "out")
    assert done.returncode == 0, done.stderr
    assert "using synthetic_tiny" in done.stderr  # the real weights are absent: said plainly
    records = sorted((elsewhere / "out").glob("*.json"))
    assert [r.stem for r in records] == [
        "astronaut",
        "chelsea",
        "coffee",
        "synthetic_val_00000",
        "synthetic_val_00001",
        "synthetic_val_00002",
    ]
    scene = json.loads((elsewhere / "out" / "synthetic_val_00000.json").read_text())
    assert scene["model"] == "synthetic_tiny" and scene["segments"]
    assert (elsewhere / "out" / "synthetic_val_00000_overlay.png").stat().st_size > 1000
    # A click on a shipped scene works out of the box (the shipped prompt head).
    clicked = run(
        ovseg,
        "predict",
        "--examples",
        "--vocab",
        "synthetic_world",
        "--points",
        "91,16",
        "--output",
        "clicks",
    )
    assert clicked.returncode == 0, clicked.stderr
    record = json.loads((elsewhere / "clicks" / "synthetic_val_00000.json").read_text())
    assert record["task"] == "prompts" and record["prompts"][0]["top_classes"]
