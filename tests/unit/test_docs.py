"""The README, Makefile and Dockerfile agree with the code."""

import re
from pathlib import Path

from config import ENV_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_readme_lists_every_setting():
    used = set(ENV_SETTINGS) | set(re.findall(r"AIVONX_[A-Z_]+", (ROOT / "gunicorn.conf.py").read_text()))
    documented = set(re.findall(r"^\| `(AIVONX_[A-Z_]+)`", README, re.MULTILINE))
    assert used - documented == set()


def test_dockerfile_and_make_serve_run_the_same_commands():
    commands = ["flask --app aivonx init", "gunicorn -c gunicorn.conf.py wsgi:app"]
    serve = (ROOT / "Makefile").read_text().split("serve:", 1)[1].split("\n\n", 1)[0]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for command in commands:
        assert command in serve.replace("$(BIN)/", "")
        assert command in dockerfile
        assert command in README


def test_ci_runs_the_readme_test_command():
    assert "make test" in README
    assert "\nmake test\n" in (ROOT / ".ci" / "run").read_text()
