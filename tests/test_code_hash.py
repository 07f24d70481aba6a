"""The code hash in the rules' params: which modules it covers, and which edits change it."""

import shutil
from pathlib import Path

import pytest

import mtm
from mtm.code_hash import code_hash, reachable_modules

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of the mtm package to edit, and a script importing training from it."""
    copy = tmp_path / "mtm"
    shutil.copytree(Path(mtm.__file__).parent, copy, ignore=shutil.ignore_patterns("data", "__pycache__"))
    (tmp_path / "train.py").write_text("from mtm.jobs import train_session\n")
    return copy


def test_modules_are_followed_through_imports():
    training = reachable_modules(SCRIPTS / "train_single.py")
    # train -> models -> ndt1/ndt2 -> layers, through absolute and relative imports
    assert {"mtm", "mtm.train", "mtm.models", "mtm.models.ndt1", "mtm.models.ndt2", "mtm.models.layers", "mtm.masking"} <= training
    assert not any(m.startswith(("mtm.ibl", "mtm.figures", "mtm.demo")) for m in training)
    fetching = reachable_modules(SCRIPTS / "fetch.py")
    assert "mtm.ibl.fetch" in fetching and not any(m.startswith(("mtm.models", "mtm.train")) for m in fetching)


def test_every_rule_script_has_a_hash():
    hashes = {script.name: code_hash(script) for script in SCRIPTS.glob("*.py") if not script.name.startswith("_")}
    assert all(len(h) == 16 for h in hashes.values())
    assert len(set(hashes.values())) == len(hashes)  # every script differs from the others
    assert hashes == {script: code_hash(SCRIPTS / script) for script in hashes}  # stable


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def test_code_edits_change_the_hash_and_cosmetic_edits_do_not(package):
    script = package.parent / "train.py"
    original = code_hash(script, package)
    ndt1 = package / "models" / "ndt1.py"
    # a comment, a docstring and the layout
    edit(ndt1, "import torch\n", "import torch  # a comment\n\n\n")
    edit(ndt1, '"""', '"""Reworded. ', )
    assert code_hash(script, package) == original
    # a module training never imports
    edit(package / "ibl" / "fetch.py", "def ", "def unused_helper():\n    return 1\n\n\ndef ")
    assert code_hash(script, package) == original
    # the code training runs, deep in the import graph
    edit(package / "models" / "layers.py", "def ", "def extra():\n    return 2\n\n\ndef ")
    changed = code_hash(script, package)
    assert changed != original
    # the package version (mtm/__init__.py is run by every import of mtm)
    edit(package / "__init__.py", '__version__ = "', '__version__ = "9')
    assert code_hash(script, package) not in (original, changed)
