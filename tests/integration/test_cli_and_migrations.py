"""`flask --app aivonx init`, the `nodes` CLI group, and migrations from empty."""

import pytest
import sqlalchemy as sa
from flask_migrate import downgrade, upgrade

from aivonx import store
from aivonx.extensions import db


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def test_init_seeds_nodes_idempotently(make_app):
    app = make_app(AIVONX_NODES=["http://127.0.0.1:11434", "http://10.0.0.5:11434/"])
    runner = app.test_cli_runner()
    first = runner.invoke(args=["init"])
    assert first.exit_code == 0, first.output
    assert first.output.count("added node") == 2
    second = runner.invoke(args=["init"])
    assert second.exit_code == 0 and "added node" not in second.output
    listed = runner.invoke(args=["nodes", "list"]).output
    assert "http://127.0.0.1:11434" in listed and "http://10.0.0.5:11434\t" in listed


def test_nodes_add_list_disable_enable_remove(app, runner):
    result = runner.invoke(args=["nodes", "add", "http://gpu1:11434", "--name", "gpu1", "--priority", "1"])
    assert result.exit_code == 0, result.output
    assert "gpu1\thttp://gpu1:11434\tenabled\tpriority=1" in runner.invoke(args=["nodes", "list"]).output
    assert runner.invoke(args=["nodes", "disable", "gpu1"]).exit_code == 0
    assert "disabled" in runner.invoke(args=["nodes", "list"]).output
    assert runner.invoke(args=["nodes", "enable", "http://gpu1:11434/"]).exit_code == 0
    assert "\tenabled" in runner.invoke(args=["nodes", "list"]).output
    assert runner.invoke(args=["nodes", "remove", "1"]).exit_code == 0
    assert runner.invoke(args=["nodes", "list"]).output.strip() == "no nodes"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nodes", "add", "gpu1:11434"], "must be an http:// or https:// URL with a host"),
        (["nodes", "add", "http://h:99999"], "is not a valid URL"),
        (["nodes", "add", "http://user:pw@h:1"], "must not carry credentials"),
        (["nodes", "add", "http://h:1", "--weight", "0"], "0 is not in the range x>=1"),
        (["nodes", "remove", "ghost"], "no node 'ghost'"),
    ],
)
def test_bad_node_input_is_refused_clearly(runner, args, message):
    result = runner.invoke(args=args)
    assert result.exit_code != 0
    assert message in result.output


def test_duplicate_name_or_url_names_the_field(app, runner):
    runner.invoke(args=["nodes", "add", "http://h:1", "--name", "a"])
    assert "a node named 'a' exists already" in runner.invoke(args=["nodes", "add", "http://h:2", "--name", "a"]).output
    assert "base_url" in runner.invoke(args=["nodes", "add", "http://h:1/", "--name", "b"]).output


def test_every_change_bumps_the_version_other_processes_poll(app):
    with app.app_context():
        before = store.current_version()
        node = store.add_node("http://h:1")
        store.set_enabled(node, False)
        store.remove_node(node)
        assert store.current_version() == before + 3


def test_a_second_app_on_the_same_database_sees_cli_changes(make_app, fake_nodes):
    first, second = make_app(), make_app()
    node = fake_nodes()
    first.test_cli_runner().invoke(args=["nodes", "add", node.url, "--name", "n1"])
    from aivonx.runtime import get_runtime

    runtime = get_runtime(second)
    assert runtime.sync() is True
    assert [n.name for n in runtime.manager.nodes] == ["n1"]
    assert runtime.sync() is False  # version unchanged: nothing reloaded


def test_migrations_downgrade_to_empty_and_upgrade_again(app):
    with app.app_context():
        downgrade(revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        assert {"node", "proxy_config"} <= set(sa.inspect(db.engine).get_table_names())


def test_node_ids_are_never_reused(app):
    """Counters and statuses in Redis are keyed by node id: a new node must not inherit them."""
    with app.app_context():
        store.add_node("http://h:1")
        second = store.add_node("http://h:2")
        store.remove_node(second)
        assert store.add_node("http://h:3").id == 3
