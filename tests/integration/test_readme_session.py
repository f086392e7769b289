"""The README's curl session, run as it stands against the proxy started the README's way."""

import json
import re
import subprocess

from tests.conftest import ROOT


def readme_session() -> str:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- api-session:start -->\s*```sh\n(.*?)```\s*<!-- api-session:end -->", readme, re.S)
    assert block, "README lost its api-session block"
    return block.group(1)


def test_readme_curl_session_works(start_gunicorn, fake_nodes):
    first, new_node = fake_nodes(), fake_nodes("phi3:mini")
    password = "readme-password-1"
    proxy = start_gunicorn(first, AIVONX_ADMIN_PASSWORD=password)
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_session()],
        env={
            "PATH": "/usr/bin:/bin",
            "AIVONX_URL": proxy.url,
            "AIVONX_ADMIN_PASSWORD": password,
            "NODE_URL": new_node.url,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    answers = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    node, config, state, key = answers
    assert node["name"] == "gpu3" and node["pool"] == "active"
    assert config["strategy"] == "lowest_latency"
    assert {n["name"] for n in state["nodes"]} == {first.url.removeprefix("http://"), "gpu3"}
    assert key["key"].startswith("aivonx_")
