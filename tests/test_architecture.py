"""The package's floors (docs/architecture.md): a module imports only from its own floor or
below, figures read tables and never load models, and the config builds without torch."""

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; a module's floor is that of its longest matching prefix
FLOORS = {
    # 0: names and utilities
    "mtm": 0, "mtm.vocabulary": 0, "mtm.seeds": 0, "mtm.io": 0, "mtm.logs": 0, "mtm.stats": 0, "mtm.metrics": 0,
    "mtm.binning": 0, "mtm.splits": 0, "mtm.runtime": 0, "mtm.code_hash": 0, "mtm.schedules": 0,
    "mtm.distributed": 0, "mtm.device": 0, "mtm.results_table": 0,
    # 1: the config and the data (IBL, the demo, the binned format, tensors of a session)
    "mtm.config": 1, "mtm.cost": 1, "mtm.ibl": 1, "mtm.demo": 1, "mtm.session": 1, "mtm.data": 1,
    # 2: models, masks and how they are scored on held-out data
    "mtm.models": 2, "mtm.masking": 2, "mtm.heldout": 2, "mtm.decoding": 2, "mtm.checkpoint": 2,
    # 3: the stages: training, validation, evaluation, heads, the GLM, the authors' models
    "mtm.train": 3, "mtm.stack": 3, "mtm.validation": 3, "mtm.resumable": 3, "mtm.evaluate": 3, "mtm.supervised": 3,
    "mtm.glm": 3, "mtm.authors": 3,
    # 4: entry points (jobs, the command line) and the figures
    "mtm.jobs": 4, "mtm.cli": 4, "mtm.figures": 4,
}  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "mtm").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The mtm modules `path` imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mtm":
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "mtm"}
    return found


def floor(module: str) -> int:
    prefixes = [p for p in FLOORS if module == p or module.startswith(p + ".")]
    assert prefixes, f"{module} has no floor: add it to FLOORS and docs/architecture.md"
    return FLOORS[max(prefixes, key=len)]


def test_every_module_imports_only_its_floor_or_below():
    known = modules()
    upward = [
        f"{module} (floor {floor(module)}) imports {other} (floor {floor(other)})"
        for module, path in sorted(known.items())
        for other in sorted(imports(path, known))
        if floor(other) > floor(module)
    ]
    assert not upward, "\n".join(upward)


def test_figures_read_tables_and_load_no_model():
    known = modules()
    heavy = [
        f"{module} imports {other}"
        for module, path in known.items()
        if module.startswith("mtm.figures")
        for other in imports(path, known)
        if floor(other) in (2, 3)
    ]
    assert not heavy, heavy


def test_the_floors_hold_on_a_module_that_breaks_them(tmp_path):
    """The check can fail: a floor-0 module importing the trainer is caught."""
    fake = tmp_path / "mtm" / "vocabulary.py"
    fake.parent.mkdir()
    fake.write_text("from mtm.train import train\n")
    assert any(floor(other) > floor("mtm.vocabulary") for other in imports(fake, modules()))


def test_the_workflow_config_builds_without_torch():
    """The rules build every stage's config at parse time, in every job: without torch."""
    code = (
        "import sys; from mtm.config.validate import load_config; from mtm.config import stages; "
        "c = load_config('config.yaml'); stages.train_config(c, stage='single', backbone='ndt1', scheme='mtm', seed=0); "
        "stages.eval_config(c, setting='single'); stages.head_config(c, seed=0); stages.glm_scoring(c); stages.glm_config(c); "
        "stages.qc_config(c); stages.binning_config(c); print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=SRC.parent, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
