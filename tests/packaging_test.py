"""The package metadata: pyproject's ranges against requirements.txt's pins."""

import importlib
import importlib.metadata
import os
import re
import tomllib

import pytest
from packaging.requirements import Requirement

import sagan_tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _normalize(name):
    """PEP 503 project-name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins():
    pins = {}
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                requirement = Requirement(line)
                pins[_normalize(requirement.name)] = requirement
    return pins


def _declared():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    return {
        _normalize(requirement.name): requirement
        for requirement in map(Requirement, project["dependencies"])
    }


def test_pyproject_and_requirements_name_the_same_packages():
    pins, declared = _pins(), _declared()
    assert sorted(declared) == sorted(pins)
    for name, pin in pins.items():
        (spec,) = pin.specifier
        assert spec.operator == "==", f"{name}: not an exact pin"
        # Each pin lies in pyproject's range, which is a bounded one.
        assert declared[name].specifier.contains(spec.version), (name, spec)
        assert any(s.operator in ("~=", "<", "<=", "==")
                   for s in declared[name].specifier), name


def test_version():
    assert re.fullmatch(r"\d+\.\d+\.\d+", sagan_tf.__version__)


def test_the_tests_run_on_the_installed_package():
    # `make test` installs the checkout (`pip install -e .`); a bare
    # `python -m pytest` in another environment may not have.
    try:
        version = importlib.metadata.version("sagan_tf")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("sagan_tf is not installed in this environment")
    assert version == sagan_tf.__version__
    assert os.path.dirname(os.path.abspath(sagan_tf.__file__)) == (
        os.path.join(ROOT, "sagan_tf"))


def _pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_python_requirement_matches_what_is_tested():
    project = _pyproject()
    # tomllib (these tests) and ruff's target need 3.11.
    assert project["project"]["requires-python"] == ">=3.11"
    assert project["tool"]["ruff"]["target-version"] == "py311"
    assert "keras" in _declared()


# Console command -> the top-level script of a clone that runs the same
# program.
COMMANDS = {
    "sagan-train": "train_imagenet.py",
    "sagan-eval": "eval_imagenet.py",
    "sagan-convert": os.path.join("data", "convert_imagenet.py"),
    "sagan-import-tf1": os.path.join("sagan_tf", "import_tf1.py"),
}


def test_console_commands_run_the_scripts_programs():
    scripts = _pyproject()["project"]["scripts"]
    assert sorted(scripts) == sorted(COMMANDS)
    for command, target in scripts.items():
        module_name, function = target.split(":")
        module = importlib.import_module(module_name)
        assert function == "run" and callable(module.run), command
        # The clone's script calls the same module's run().
        with open(os.path.join(ROOT, COMMANDS[command])) as f:
            script = f.read()
        package, name = module_name.rsplit(".", 1)
        assert f"from {package} import {name}" in script, command
        assert f"{name}.run()" in script, command
