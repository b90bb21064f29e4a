"""Every subcommand, with valid and with invalid input, against a real redis-server and a
supervisor process: the documented exit code (0 ok, 1 failed, 2 usage, 3 Redis
unreachable), an error is one line on stderr and never a traceback, and ``--json``
output parses and names the board. Inspect output is being reshaped elsewhere, so its
shape is checked loosely."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blackboard.supervisor import Deployment
from click.testing import CliRunner, Result

from blackboard import BoardStore, connect
from blackboard.cli import main
from blackboard.keys import GlobalKeys

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from examples import loan  # noqa: E402

pytestmark = [pytest.mark.real_redis]

APP = "examples.loan:app"


def _no_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "BLACKBOARD_REDIS_URL")}


@pytest.fixture(scope="module")
def deployed(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Loan boards (two done, one after an audit rollback; two held at the gate), a
    dead letter, and a supervisor process started from the repository folder without
    PYTHONPATH (``--app`` imports from the current folder)."""

    async def setup() -> None:
        store = BoardStore(connect(redis_server.url))
        await store.redis.flushdb()
        async with Deployment(loan.app, store) as d:
            await loan.run_case(d, "clean")
            await loan.run_case(d, "income-slip")  # an audit rollback: an incident
            for board in ("held-1", "held-2"):
                await d.start(board, {"application": loan.CASES["aml-hit"]})
                await d.settle(board)
        gk = GlobalKeys(store.settings.key_prefix)
        await store.redis.xadd(gk.dead_letters, {"dl_stream": gk.queue("risk"), "x": "1"})
        await store.close()

    asyncio.run(setup())
    log = tmp_path_factory.mktemp("sup") / "supervisor.log"
    with log.open("w") as err:
        command = ["blackboard", "--redis", redis_server.url, "supervisor", "--app", APP]
        sup = subprocess.Popen(
            [sys.executable, "-m", *command],
            cwd=ROOT,
            env=_no_pythonpath(),
            stderr=err,
        )
    try:
        _wait_for(lambda: "running app" in log.read_text(), "the supervisor to start")
        yield str(redis_server.url)
    finally:
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(30) == 0
        said = log.read_text().splitlines()
        assert said[-2].startswith("SIGTERM: stopping; finishing the batch in hand"), said
        assert said[-1].startswith("supervisor ") and " stopped at " in said[-1], said


def _wait_for(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def invoke(url: str, *args: str, late: bool = False, stdin: str | None = None) -> Result:
    """The CLI in-process; ``late`` gives --redis after the command instead of before."""
    argv = [*args, "--redis", url] if late else ["--redis", url, *args]
    return CliRunner().invoke(main, argv, input=stdin)


def check(result: Result, code: int, *, json_board: str | None = None) -> Any:
    """The exit code; an error is one line on stderr; no traceback; --json parses."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        result.exception,
        result.output,
    )
    assert "Traceback" not in result.output
    assert result.exit_code == code, (result.exit_code, result.output)
    if code != 0:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    if json_board is not None:
        data = json.loads(result.stdout)
        assert json_board in json.dumps(data), data
        return data
    return None


INSPECT_VALID = [
    (["boards", "--json"], "loan-clean"),
    (["show", "loan-clean", "--json"], "loan-clean"),
    (["show", "loan-clean", "--at", "1", "--key", "tax_id", "--json"], "loan-clean"),
    (["history", "loan-clean", "--json"], "document_analysis"),
    (["diff", "loan-clean", "0", "2", "--json"], "/"),
    (["trace", "loan-clean", "--json"], "loan-clean"),
    (["incidents", "--json"], "loan-income-slip"),
    (["escalations", "--json"], "held-1"),
    (["dlq", "--json"], "queue:risk"),
    (["stats", "--json"], "loan-clean"),
    (["stats", "loan-clean", "--json"], "loan-clean"),
    (["agents", "--json"], "document_analysis"),
]

INVALID = [
    (["show", "loan-clen"], 1),
    (["show", "loan-clean", "--at", "99"], 1),
    (["show", "loan-clean", "--key", "nokey"], 1),
    (["show"], 2),
    (["history", "nope"], 1),
    (["history", "loan-clean", "--limit", "x"], 2),
    (["diff", "loan-clean", "0", "99"], 1),
    (["diff", "loan-clean", "0"], 2),
    (["watch", "loan-clean", "--bogus"], 2),
    (["trace", "nope"], 1),
    (["incidents", "--bogus"], 2),
    (["escalations", "--bogus"], 2),
    (["dlq", "--bogus"], 2),
    (["stats", "nope"], 1),
    (["agents", "--bogus"], 2),
    (["boards", "--bogus"], 2),
    (["approve", "loan-clean"], 1),
    (["reject", "held-2"], 2),
    (["rollback", "loan-clean"], 2),
    (["rollback", "loan-clean", "--to", "99"], 1),
    (["flag", "loan-clean"], 2),
    (["pause", "nope"], 1),
    (["resume", "loan-clean"], 1),
    (["set", "loan-clean", "application={bad json"], 2),
    (["set", "loan-clean", "credit_score=700"], 1),
    (["set", "loan-clean", "verdict"], 2),
    (["retry", "9-9"], 2),
    (["start", "--app", APP, "--board", "loan-clean"], 1),
    (["start", "--app", "no_such_module:app", "--board", "x"], 2),
    (["start", "--app", APP], 2),
    (["run", "--app", "no_such_module:app"], 2),
    (["supervisor", "--app", "examples.loan"], 2),
    (["agent", "risk", "--app", "examples.loan:nothing"], 2),
    (["delete", "nope", "--yes"], 1),
    (["archive", "nope", "--to", "/tmp/never-written.json"], 1),
    (["import", "/nonexistent/export.json"], 2),
    (["fork", "nope", "--at", "1", "--board", "f"], 1),
    (["fork", "loan-clean", "--at", "99", "--board", "f"], 1),
    (["fork", "loan-clean", "--at", "1", "--board", "f", "--rerun", "nobody"], 2),
    (["fork", "loan-clean", "--board", "f"], 2),
    (["demo", "--bogus"], 2),
    (["compact", "nope", "--below", "1", "--yes"], 1),
    (["compact", "loan-clean", "--below", "x"], 2),
    (["acl", "--app", "no_such_module:app"], 2),
    (["acl"], 2),
    (["no-such-command"], 2),
]


def test_every_subcommand_is_walked_with_invalid_input() -> None:
    walked = {args[0] for args, _ in INVALID}
    assert sorted(set(main.commands) - walked) == []


@pytest.mark.parametrize(
    ("args", "board"), INSPECT_VALID, ids=[" ".join(a) for a, _ in INSPECT_VALID]
)
def test_inspect_commands_answer_json(deployed: str, args: list[str], board: str) -> None:
    check(invoke(deployed, *args), 0, json_board=board)
    check(invoke(deployed, *args, late=True), 0, json_board=board)  # --redis after it
    check(invoke(deployed, *args[:-1]), 0)  # the table


@pytest.mark.parametrize(("args", "code"), INVALID, ids=[" ".join(a) for a, _ in INVALID])
def test_invalid_input_is_one_line_with_its_exit_code(
    deployed: str, args: list[str], code: int
) -> None:
    check(invoke(deployed, *args), code)


def test_unreachable_redis_is_exit_3_for_every_command(tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/none.sock"
    for args in (
        ["boards"],
        ["delete", "b1", "--yes"],
        ["fork", "b1", "--at", "0", "--board", "b2"],
    ):
        check(CliRunner().invoke(main, ["--redis", url, *args]), 3)
    export = tmp_path / "b1.json"
    check(CliRunner().invoke(main, ["--redis", url, "archive", "b1", "--to", str(export)]), 3)
    assert not export.exists()


def test_act_commands_through_the_supervisor(deployed: str) -> None:
    check(invoke(deployed, "approve", "held-1", "--note", "cleared", "--as", "officer"), 0)
    check(invoke(deployed, "reject", "held-2", "--note", "no", "--as", "officer"), 0)
    check(invoke(deployed, "pause", "held-2"), 0)
    check(invoke(deployed, "resume", "held-2", late=True), 0)
    check(invoke(deployed, "flag", "loan-clean", "--reason", "recheck"), 0)
    check(invoke(deployed, "rollback", "loan-clean", "--to", "1", "--reason", "again"), 0)
    wrote = invoke(deployed, "set", "loan-clean", 'application={"name": "Ada"}')
    check(wrote, 0)
    assert "set loan-clean: committed" in wrote.stdout
    history = check(invoke(deployed, "history", "loan-clean", "--json"), 0, json_board="Ada")
    assert history[-1]["keys"] == ["application"]


def test_set_with_no_time_to_wait_says_what_became_of_the_command(deployed: str) -> None:
    quick = invoke(deployed, "set", "loan-clean", "application={}", "--wait", "0")
    if quick.exit_code == 0:  # the supervisor was faster than the one look
        return
    check(quick, 1)
    assert "is running: it will run it" in quick.stderr and "blackboard history" in quick.stderr
    store = BoardStore(connect(deployed))

    async def landed() -> bool:
        try:
            return (await store.read("loan-clean")).data["application"] == {}
        finally:
            await store.close()

    _wait_for(lambda: asyncio.run(landed()), "the queued set to land")


def test_start_agent_and_run_refuse_another_deployed_app(deployed: str, tmp_path: Path) -> None:
    (tmp_path / "other.py").write_text(OTHER_APP)
    env = {**_no_pythonpath(), "BLACKBOARD_REDIS_URL": deployed}
    for args in (
        ["start", "--app", "other:app", "--board", "o1"],
        ["agent", "a", "--app", "other:app", "--wait-for-redis", "0"],
        ["run", "--app", "other:app", "--wait-for-redis", "0"],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "blackboard", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith("error: Redis runs app "), line
        assert "no supervisor here would serve it" in line


def test_start_and_run_take_input_files(deployed: str, tmp_path: Path) -> None:
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"application": loan.CASES["clean"]}))
    started = invoke(deployed, "start", "--app", APP, "--board", "new-1", "--input", str(case))
    check(started, 0)
    assert "started new-1" in started.stdout
    ran = invoke(deployed, "run", "--app", APP, "--input", str(case), "--board", "r1", "--json")
    check(ran, 1 if json.loads(ran.stdout)["status"] != "done" else 0, json_board="r1")
    for content, problem in (("[1, 2]", "holds a JSON list"), ("{bad", "is not valid JSON")):
        case.write_text(content)
        for cmd in (["start", "--board", "new-2"], ["run"]):
            bad = invoke(deployed, cmd[0], "--app", APP, "--input", str(case), *cmd[1:])
            check(bad, 2)
            assert problem in bad.stderr


def test_delete_archive_import_and_fork(deployed: str, tmp_path: Path) -> None:
    export = tmp_path / "clean.json"
    check(invoke(deployed, "fork", "loan-clean", "--at", "1", "--board", "copy"), 0)
    before = check(invoke(deployed, "history", "copy", "--json"), 0, json_board="tax_id")
    archived = invoke(deployed, "archive", "copy", "--to", str(export))
    check(archived, 0)
    assert "removed from Redis" in archived.stdout
    check(invoke(deployed, "show", "copy"), 1)
    check(invoke(deployed, "archive", "loan-clean", "--to", str(export)), 2)  # exists
    kept = invoke(deployed, "archive", "loan-clean", "--to", str(tmp_path / "kept.json"), "--keep")
    check(kept, 0)
    assert "kept in Redis" in kept.stdout
    assert json.loads((tmp_path / "kept.json").read_text())["board"] == "loan-clean"
    check(invoke(deployed, "show", "loan-clean"), 0)
    check(invoke(deployed, "import", str(export)), 0)
    after = check(invoke(deployed, "history", "copy", "--json"), 0, json_board="tax_id")
    assert [{**e, "ts_ms": 0} for e in after] == [{**e, "ts_ms": 0} for e in before]
    check(invoke(deployed, "import", str(export)), 1)  # the id is taken
    check(invoke(deployed, "import", str(export), "--board", "copy-2", late=True), 0)
    (tmp_path / "bad.json").write_text("[1]")
    check(invoke(deployed, "import", str(tmp_path / "bad.json")), 2)
    refused = invoke(deployed, "delete", "copy-2", stdin="n\n")
    assert refused.exit_code == 1 and "gone for good" in refused.stderr  # the question
    assert refused.stderr.splitlines()[-1] == (
        "error: board copy-2 not deleted (pass --yes not to be asked)."
    )
    deleted = invoke(deployed, "delete", "copy-2", stdin="y\n")
    assert deleted.exit_code == 0 and "gone for good" in deleted.stdout
    check(invoke(deployed, "delete", "copy", "--yes"), 0)
    check(invoke(deployed, "show", "copy"), 1)
    forked = invoke(deployed, "fork", "held-1", "--at", "2", "--board", "f1", "--rerun", "risk")
    check(forked, 0)
    assert "forked held-1@2 as f1" in forked.stdout and "re-run as asked" in forked.stdout


def test_run_retry_and_demo(deployed: str) -> None:
    store = BoardStore(connect(deployed))

    async def dead_letter() -> str:
        try:
            rows = await store.redis.xrange(GlobalKeys("bb").dead_letters)
            return str(rows[0][0])
        finally:
            await store.close()

    check(invoke(deployed, "retry", asyncio.run(dead_letter())), 0)
    demo = CliRunner().invoke(main, ["demo", "--fast"])
    check(demo, 0)


def test_app_from_the_current_folder_and_its_errors(tmp_path: Path) -> None:
    (tmp_path / "myapp.py").write_text(OTHER_APP)
    (tmp_path / "broken.py").write_text("def oops(:\n")
    (tmp_path / "raises.py").write_text("raise RuntimeError('no config')\n")
    env = _no_pythonpath()

    def run(spec: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "blackboard", "run", "--app", spec, "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = run("myapp:app")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "done"
    for spec, said in (
        ("broken:app", "syntax error in"),
        ("raises:app", "importing it raised RuntimeError: no config"),
    ):
        failed = run(spec)
        assert failed.returncode == 2
        (line,) = failed.stderr.splitlines()
        assert line.startswith("error: ") and said in line, line


def test_run_stops_on_sigterm_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "slow.py").write_text(SLOW_APP)
    proc = subprocess.Popen(
        [sys.executable, "-m", "blackboard", "run", "--app", "slow:app", "--board", "s1"],
        cwd=tmp_path,
        env=_no_pythonpath(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    flag = tmp_path / "working"
    _wait_for(flag.exists, "the slow agent to start")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0] == "SIGTERM: stopping; finishing the activations in hand on board s1..."
    assert lines[1].startswith("run (board s1 at version ") and " stopped at " in lines[1]


OTHER_APP = """
from typing import Annotated
from pydantic import BaseModel
from blackboard import App, Key
from blackboard.agents import Context, Output, agent


class Note(BaseModel):
    text: Annotated[str | None, Key("a")] = None


@agent("a")
async def a(ctx: Context) -> Output:
    return Output(updates={"text": "hello"})


app = App(board=Note, agents=[a], start=["a"], done=lambda b: b.get("text") is not None,
          done_reads=["text"])
"""

SLOW_APP = """
import asyncio
from pathlib import Path
from typing import Annotated
from pydantic import BaseModel
from blackboard import App, Key
from blackboard.agents import Context, Output, agent


class Note(BaseModel):
    text: Annotated[str | None, Key("a")] = None


@agent("a")
async def a(ctx: Context) -> Output:
    Path("working").touch()
    await asyncio.sleep(1)
    return Output(updates={"text": "slow"})


app = App(board=Note, agents=[a], start=["a"], done=lambda b: False, done_reads=["text"])
"""


def test_readme_lists_every_command() -> None:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## The `blackboard` command line") : text.index("## Examples")]
    missing = [name for name in main.commands if f"`{name}" not in section]
    assert missing == [], f"README's command line section does not mention {missing}"
    assert "PYTHONPATH" not in text  # --app imports from the current folder


def test_start_says_when_no_supervisor_runs(redis_servers: Any) -> None:
    url = redis_servers().url
    started = invoke(url, "start", "--app", APP, "--board", "alone")
    assert started.exit_code == 0, started.output
    assert started.stderr == (
        "note: no supervisor is running; board alone waits until one starts "
        f"(`blackboard supervisor --app {APP}`).\n"
    )


def test_act_and_lifecycle_commands_answer_json(deployed: str, tmp_path: Path) -> None:
    """--json on every command that changes a board: its outcome, one object."""

    def answer(*args: str, code: int = 0) -> dict[str, Any]:
        data = check(invoke(deployed, *args, "--json"), code, json_board='"board"')
        assert isinstance(data, dict) and data["board"] in ("j1", "j2"), data
        return data

    forked = answer("fork", "loan-clean", "--at", "2", "--board", "j1")
    assert (forked["command"], forked["status"], forked["version"]) == ("fork", "forked", 3)
    assert forked["forked_from"] == "loan-clean@2" and forked["resume"]["status"] == "committed"
    assert answer("pause", "j1")["status"] == "committed"
    assert "already paused" in answer("pause", "j1")["message"]
    assert answer("resume", "j1")["command"] == "resume"
    rolled = answer("rollback", "j1", "--to", "1")
    assert (rolled["status"], rolled["version"]) == ("committed", 4)
    assert answer("flag", "j1", "--reason", "check")["status"] == "committed"
    refused = answer("approve", "j1", code=1)  # nothing held
    assert (refused["status"], refused["reason"]) == ("rejected", "ValidationFailed")
    assert answer("reject", "j1", "--note", "no", code=1)["status"] == "rejected"
    wrote = answer("set", "j1", 'application={"name": "Ada"}')
    assert (wrote["status"], wrote["keys"]) == ("committed", ["application"])
    export = tmp_path / "j1.json"
    archived = answer("archive", "j1", "--to", str(export), "--keep")
    assert (archived["status"], archived["version"], archived["kept"]) == (
        "archived",
        wrote["version"],
        True,
    )
    imported = answer("import", str(export), "--board", "j2")
    assert (imported["board"], imported["version"]) == ("j2", wrote["version"])
    assert answer("delete", "j2", "--yes")["status"] == "deleted"
    assert answer("delete", "j1", "--yes")["command"] == "delete"
