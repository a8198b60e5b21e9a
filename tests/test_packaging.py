"""Packaging basics: one version, and the files a distribution ships besides the code."""

import importlib.metadata
import re
from pathlib import Path

import fastgp

ROOT = Path(__file__).resolve().parent.parent


def test_installed_version_is_the_package_version():
    # pyproject.toml reads the version from fastgp/_version.py: the installed metadata and
    # fastgp.__version__ agree (a stale install, built before a version change, does not)
    assert importlib.metadata.version("fastgp") == fastgp.__version__


def test_version_is_written_once():
    text = (ROOT / "fastgp" / "_version.py").read_text()
    assert re.search(r'^__version__ = "[^"]+"$', text, re.MULTILINE), text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r"^version\s*=", pyproject, re.MULTILINE) is None
    assert 'dynamic = ["version"]' in pyproject


def test_license_changelog_and_typed_marker_exist():
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(r"^## \[Unreleased\]$", changelog, re.MULTILINE), "no [Unreleased] heading"
    assert (ROOT / "fastgp" / "py.typed").is_file()
