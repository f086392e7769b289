"""The README's "Two instances on one machine" block, run as it stands (bash), on free
ports, its own database and Redis prefix: two gunicorn instances sharing PostgreSQL and
Redis, both answering, a node added through one used by both, then everything stopped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from tests.conftest import BIN, POSTGRES_URL, REDIS_URL, ROOT, free_port

INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q -r requirements.txt"


def readme_recipe() -> str:
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- two-instances:start -->", 1)[1].split("<!-- two-instances:end -->", 1)[0]
    return block.strip().removeprefix("```sh").removesuffix("```")


# Needs PostgreSQL and Redis whatever the backend: run it once, in the postgres run.
@pytest.mark.postgres_only
def test_readme_two_instance_recipe(tmp_path: Path):
    script = readme_recipe()
    assert INSTALL in script
    postgres = sa.engine.make_url(POSTGRES_URL)
    assert "-h 127.0.0.1 -U postgres" in script and postgres.host == "127.0.0.1" and postgres.username == "postgres"
    database = f"aivonx_recipe_{uuid.uuid4().hex[:8]}"
    prefix = f"aivonx-recipe-{uuid.uuid4().hex[:8]}:"
    replacements = {
        INSTALL: ":  # the test's own environment is installed already",
        ".venv/bin/": f"{BIN}/",
        "aivonx_recipe": database,
        "aivonx-recipe:": prefix,
        "instance-a.log": str(tmp_path / "a.log"),
        "instance-b.log": str(tmp_path / "b.log"),
        "redis://127.0.0.1:6379/0": REDIS_URL,
        **{port: str(free_port()) for port in ("11434", "11435", "11500", "11501")},
    }
    for text, replacement in replacements.items():
        assert text in script, text
        script = script.replace(text, replacement)

    process = subprocess.Popen(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=ROOT,
        env={key: value for key, value in os.environ.items() if not key.startswith("AIVONX_")},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # one process group: all of it can be stopped if it hangs
    )
    try:
        output, _ = process.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
        pytest.fail("the recipe hung:\n" + output)
    finally:
        admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            exists = connection.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": database})
            left_behind = exists.scalar() is not None
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()

    logs = "\n".join(path.read_text() for path in tmp_path.glob("*.log"))
    assert process.returncode == 0, output + logs
    ready = re.findall(r'\{"active_nodes":(\d),"database":"ok","status":"ready"\}', output)
    assert ready == ["1", "1", "2", "2"], output
    assert output.count('"response":"Hello, world!"') == 2, output
    assert re.search(r'^aivonx_node_pool\{node="node2",pool="active"\} 1\.0$', output, re.MULTILINE), output
    assert not left_behind and not keys  # the recipe's own clean-up worked
