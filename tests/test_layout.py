"""The repository's entry scripts and copies stay what the package owns: the scripts in demo/
and tools/ are the ``ovseg`` sub-commands, configs/ is a copy of ovseg/configs/, and the core
never imports the synthetic world or the front ends."""

import ast
import filecmp
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ovseg"


def test_configs_folder_is_a_copy_of_the_package_presets():
    packaged = sorted(
        p.relative_to(PACKAGE / "configs") for p in (PACKAGE / "configs").rglob("*.*")
    )
    copied = sorted(
        p.relative_to(ROOT / "configs")
        for p in (ROOT / "configs").rglob("*.*")
        if p.name != "README.md"
    )
    assert packaged == copied
    for relative in packaged:
        assert filecmp.cmp(
            PACKAGE / "configs" / relative, ROOT / "configs" / relative, shallow=False
        )


SCRIPTS = {
    "demo/predict.py": "predict",
    "demo/app.py": "app",
    "tools/train.py": "train",
    "tools/eval.py": "eval",
    "tools/benchmark.py": "bench",
    "tools/convert_fcclip.py": "convert",
    "tools/bench_train.py": "bench-train",
    "tools/bench_pq.py": "bench-pq",
    "tools/bench_gpu.py": "bench-gpu",
    "tools/bench_demo.py": "bench-demo",
    "tools/bench_matmul.py": "bench-matmul",
    "tools/train_prompt_head.py": "train-prompt-head",
    "tools/bench_prompts.py": "bench-prompts",
    "tools/synthetic_world.py": "synthetic-world",
    "tools/task_agreement.py": "agreement",
    "tools/text_ablation.py": "text-ablation",
    "tools/fields.py": "fields",
    "tools/bench_fields.py": "bench-fields",
    "tools/bench_fields4d.py": "bench-fields4d",
    "tools/bench_lift.py": "bench-lift",
    "tools/export.py": "export",
}


def test_every_script_is_an_ovseg_command():
    from ovseg.apps.main import COMMANDS

    assert sorted(SCRIPTS.values()) == sorted(COMMANDS)
    assert sorted(str(p.relative_to(ROOT)) for p in (ROOT / "demo").glob("*.py")) + sorted(
        str(p.relative_to(ROOT)) for p in (ROOT / "tools").glob("*.py")
    ) == sorted(SCRIPTS)
    for script, command in SCRIPTS.items():
        module = f"ovseg.apps.{COMMANDS[command][0]}"
        assert f"from {module} import main" in (ROOT / script).read_text(), script


@pytest.mark.parametrize("script", ["demo/predict.py", "tools/train.py"])
def test_a_script_and_its_command_print_the_same_help(script):
    """``python demo/predict.py --help`` and ``ovseg predict --help``: one parser (the usage
    paragraph differs only by the program's name, and wraps with it)."""
    env = dict(os.environ, COLUMNS="100")

    def help_text(*command: str) -> str:
        done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
        usage, _, rest = done.stdout.partition("\n\n")
        return usage, rest

    script_usage, by_script = help_text(sys.executable, str(ROOT / script), "--help")
    command_usage, by_command = help_text(sys.executable, "-m", "ovseg", SCRIPTS[script], "--help")
    assert script_usage.startswith(f"usage: {Path(script).name} ")
    assert command_usage.startswith(f"usage: ovseg {SCRIPTS[script]} ")
    assert by_script == by_command and "--help" in by_command


def _imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_the_core_imports_neither_the_synthetic_world_nor_the_front_ends():
    rooms = ("ovseg.synthetic", "ovseg.apps")
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("synthetic", "apps") or relative.name == "__main__.py":
            continue
        bad = [m for m in _imports(path) if m.startswith(rooms)]
        assert not bad, f"{relative} imports {bad}"


def test_the_unknown_command_is_one_line_and_exit_2(capsys):
    from ovseg.apps.main import main

    assert main(["segment"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown command 'segment'") and "\n" not in err
    assert main([]) == 0 and "predict" in capsys.readouterr().out


def _modules_under(room: str):
    for path in sorted((PACKAGE / room).rglob("*.py")):
        yield path.relative_to(PACKAGE), _imports(path)


def test_the_model_imports_neither_sam_nor_fields_nor_export_nor_the_predictor():
    """``modeling/`` is tensors in, tensors out: the rooms above it build on it, not it on them
    (the prompt head is a model part, in ``modeling/prompt_head.py``)."""
    above = ("ovseg.sam", "ovseg.fields", "ovseg.export", "ovseg.predictor")
    for relative, modules in _modules_under("modeling"):
        bad = sorted(m for m in modules if m.startswith(above))
        assert not bad, f"{relative} imports {bad}"


def test_the_synthetic_world_imports_no_front_end():
    """The synthetic worlds' reports draw with the core (``visualize``), not with a command."""
    for relative, modules in _modules_under("synthetic"):
        bad = sorted(m for m in modules if m.startswith("ovseg.apps"))
        assert not bad, f"{relative} imports {bad}"


def test_no_module_imports_another_modules_private_names():
    """A name another module needs is public: ``from ovseg.x import _y`` hides a dependency
    behind a name that says nothing outside ``x`` relies on it."""
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            module = "." * node.level + (node.module or "")
            if not (node.level or module.startswith("ovseg")):
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    bad.append(f"{path.relative_to(PACKAGE)}: from {module} import {alias.name}")
    assert not bad, "\n".join(bad)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_import_cycles_between_ovseg_modules():
    """Imports inside functions count too: ovseg.apps.web and ovseg.apps.web_heatmap imported
    each other (for the shared image input), a circle that works only while one side imports
    lazily."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    imports = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        tree = ast.parse(path.read_text())
        typing_only = {  # imports for type hints only (if TYPE_CHECKING:) never run
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                found.add(base)
                found.update(f"{base}.{alias.name}" for alias in node.names)
        imports[name] = {m for m in found if m in modules and m != name}

    def cycle_from(start: str) -> list[str] | None:
        path, seen = [start], set()

        def walk(module: str) -> list[str] | None:
            for child in sorted(imports[module]):
                if child == start:
                    return [*path, start]
                if child not in seen:
                    seen.add(child)
                    path.append(child)
                    if found := walk(child):
                        return found
                    path.pop()
            return None

        return walk(start)

    cycles = [" -> ".join(c) for name in sorted(modules) if (c := cycle_from(name))]
    assert not cycles, cycles[0]


def test_the_kinds_of_field_share_their_fit_stages_from_one_module():
    """The 3D, 4D and lifted fields are each a sequence of the public stages of
    ``ovseg.fields.stages`` and read their folders through ``ovseg.fields.folders``: none
    takes a stage or a helper from another kind's module (4D and lifting took theirs from
    the 3D field's, and the 4D stages were private)."""
    from ovseg.fields import stages

    kinds = {"field": "fit_field", "field4d": "fit_field4d", "lift": "lift_field"}

    for kind, fit in kinds.items():
        path = PACKAGE / "fields" / f"{kind}.py"
        others = {f"ovseg.fields.{other}" for other in kinds if other != kind}
        assert not _imports(path) & others, kind
        tree = ast.parse(path.read_text())
        body = next(n for n in tree.body if getattr(n, "name", None) == fit)
        called = {
            n.func.id
            for n in ast.walk(body)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert {"resume_meta", "run_stage", "view_features"} <= called, kind
        assert all(not name.startswith("_") for name in called), kind
    for stage in ("fit_colour", "view_features", "scene_autoencoder", "fit_language"):
        assert callable(getattr(stages, stage))
    assert callable(stages.fit_status) and callable(stages.deformation_field)
