"""`python -m service ...` as real subprocesses against a fresh database of their own."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from service.db.migrations import MIGRATIONS_DIR
from tests.support.cli import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    alive,
    children_of,
    cli_env,
    get_coupons,
    http_get,
    query,
    run_cli,
    serving,
)
from tests.support.common import SECRET
from tests.support.databases import CONTRACT_COLUMNS
from tests.support.processes import REPO, free_port, service_command

SEED_IDS = {155: 5, 150: 5, 146: 3, 135: 3, 134: 3, 12: 4}  # member coupon id -> coupon id


# --- migrate --------------------------------------------------------------------------------------


def test_migrate_twice_in_parallel(fresh_url: str, env: dict[str, str], tmp_path: Path) -> None:
    procs = []
    logs = [tmp_path / f"migrate-{i}.log" for i in range(2)]
    for log in logs:
        with log.open("w") as out:
            procs.append(subprocess.Popen(service_command("migrate"), cwd=REPO, env=env,
                                          stdout=out, stderr=subprocess.STDOUT))
    try:
        codes = [proc.wait(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert codes == [0, 0], [log.read_text() for log in logs]

    versions = [p.stem for p in sorted(MIGRATIONS_DIR.glob("*.sql"))]
    rows = query(fresh_url, "SELECT version, count(*) AS n FROM schema_migrations GROUP BY 1")
    assert {r["version"]: r["n"] for r in rows} == dict.fromkeys(versions, 1)
    tables = query(fresh_url, "SELECT tablename::text AS t FROM pg_tables "
                              "WHERE schemaname = 'public'")
    assert set(CONTRACT_COLUMNS) <= {r["t"] for r in tables}

    # And once more, sequentially: nothing to do, still exit 0.
    again = run_cli("migrate", env=env)
    assert again.returncode == 0, again.stderr
    rows = query(fresh_url, "SELECT count(*) AS n FROM schema_migrations")
    assert rows[0]["n"] == len(versions)


# --- demo-data ------------------------------------------------------------------------------------


def snapshot(url: str) -> dict[str, Any]:
    member_1 = query(url, "SELECT id FROM yz_member_coupon WHERE uniacid = 1 AND uid = 1")
    counts = {
        table: query(url, f"SELECT count(*) AS n FROM {table}")[0]["n"]
        for table in ("yz_member_coupon", "yz_coupon", "yz_member", "yz_store", "yz_goods",
                      "yz_hotel", "yz_coupon_hotel", "yz_tenant_setting")
    }
    return {"member_1": sorted(r["id"] for r in member_1), "counts": counts}


def test_demo_data_twice(fresh_url: str, env: dict[str, str]) -> None:
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr

    first = run_cli("demo-data", env=env)
    assert first.returncode == 0, first.stderr
    after_first = snapshot(fresh_url)
    second = run_cli("demo-data", env=env)
    assert second.returncode == 0, second.stderr
    after_second = snapshot(fresh_url)

    assert after_second == after_first
    # Member 1: the seed's six rows (and no other below the demo's own id ranges), plus others.
    ids = after_second["member_1"]
    assert {i for i in ids if i < 1000} == set(SEED_IDS)
    assert len(ids) > len(SEED_IDS)
    rows = query(
        fresh_url,
        "SELECT id, count(*) OVER (PARTITION BY id) AS n, uniacid, uid, coupon_id, used, "
        "is_member_deleted FROM yz_member_coupon WHERE id = ANY($1::bigint[])",
        list(SEED_IDS),
    )
    assert sorted(r["id"] for r in rows) == sorted(SEED_IDS)
    for r in rows:
        assert r["n"] == 1
        assert (r["uniacid"], r["uid"], r["coupon_id"], r["used"], r["is_member_deleted"]) == (
            1, 1, SEED_IDS[r["id"]], 0, 0
        )
    # Other members and the second tenant are there too.
    members = query(fresh_url, "SELECT uniacid, count(*) AS n FROM yz_member GROUP BY 1")
    assert {r["uniacid"]: r["n"] for r in members} == {1: 20, 2: 2}


def test_demo_data_without_migrations_fails(env: dict[str, str]) -> None:
    result = run_cli("demo-data", env=env)
    assert result.returncode != 0
    assert "yz_member_coupon" in result.stderr or "does not exist" in result.stderr


# --- token ----------------------------------------------------------------------------------------


def test_token_decodes_with_the_same_secret(env: dict[str, str]) -> None:
    before = int(time.time())
    result = run_cli("token", "--uniacid", "3", "--member", "7", env=env)
    after = int(time.time())
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert token.count(".") == 2 and "\n" not in token

    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    claims = jwt.decode(token, SECRET, algorithms=["HS256"],
                        options={"require": ["exp", "sub", "uniacid", "member_id"]})
    assert claims["uniacid"] == 3 and claims["member_id"] == 7
    assert isinstance(claims["sub"], str) and claims["sub"]
    assert before < claims["exp"] <= after + 86_400 + 1
    assert claims["exp"] >= before + 86_400

    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, SECRET[::-1], algorithms=["HS256"])


def test_token_staff_and_ttl(env: dict[str, str]) -> None:
    result = run_cli("token", "--uniacid", "1", "--member", "2", "--staff", "wx-staff-9",
                     "--ttl", "60", env=env)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "wx-staff-9" and claims["member_id"] == 2
    assert claims["exp"] - claims["iat"] == 60


def test_token_needs_its_arguments(env: dict[str, str]) -> None:
    result = run_cli("token", "--member", "3", env=env)
    assert result.returncode == 2
    assert "--uniacid" in result.stderr and result.stdout == ""


def test_token_without_member_is_a_staff_token(env: dict[str, str]) -> None:
    """For the sidebar's contact flow: the request then names `user_id`."""
    result = run_cli("token", "--uniacid", "1", env=env)
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["uniacid"] == 1 and claims["sub"] == "demo-staff"
    assert "member_id" not in claims


# --- serve ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_then_exits_0_on_signal(
    demo_env: dict[str, str], tmp_path: Path, signum: signal.Signals
) -> None:
    with serving(demo_env, tmp_path / "server.log") as server:
        status, body = http_get(server.base + "/healthz")
        assert status == 200, body
        result = get_coupons(server)
        assert result["result"] == 1, result
        assert result["data"]["search_array"][-1] == "快过期"
        assert result["data"]["total"] >= 1 and result["data"]["data"]
        # Without a token: 401, the server keeps running.
        status, _ = http_get(server.base + "/api/v2/coupons?client=work&type=17")
        assert status == 401

        server.proc.send_signal(signum)
        assert server.wait_exit(STOP_TIMEOUT) == 0, server.output()


def test_serve_with_two_workers(demo_env: dict[str, str], tmp_path: Path) -> None:
    with serving(demo_env, tmp_path / "server.log", "--workers", "2") as server:
        deadline = time.monotonic() + START_TIMEOUT
        workers = children_of(server.proc.pid)
        while len(workers) < 2 and time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=0.1)
            workers = children_of(server.proc.pid)
        assert len(workers) == 2, (workers, server.output())
        # Forked is not started: wait until both workers have said they are listening (their
        # pools open, their listener flushed), or a stopped peer would leave a worker that is
        # still starting to answer alone, slowly, on a loaded machine.
        while server.output().count("listening") < 2 and time.monotonic() < deadline + 15:
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=0.1)
        assert server.output().count("listening") >= 2, server.output()

        # Each worker alone: stop the other one, so that only this one can accept.
        for worker in workers:
            others = [pid for pid in workers if pid != worker]
            for pid in others:
                os.kill(pid, signal.SIGSTOP)
            try:
                result = get_coupons(server)
                status, _ = http_get(server.base + "/healthz")
            finally:
                for pid in others:
                    os.kill(pid, signal.SIGCONT)
            assert result["result"] == 1, (worker, result)
            assert status == 200

        server.proc.send_signal(signal.SIGTERM)
        assert server.wait_exit(STOP_TIMEOUT) == 0, server.output()
        assert not any(alive(pid) for pid in workers)


def test_serve_refuses_zero_workers(demo_env: dict[str, str]) -> None:
    result = run_cli("serve", "--port", str(free_port()), "--workers", "0", env=demo_env,
                     timeout=30)
    assert result.returncode != 0
    assert "--workers" in result.stderr


# --- bad settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("migrate",), ("demo-data",), ("token", "--uniacid", "1",
                                  "--member", "1"), ("serve", "--port", "1")])
def test_bad_response_shape_exits_2_with_message(
    env: dict[str, str], args: tuple[str, ...]
) -> None:
    env = {**env, "RESPONSE_SHAPE": "bogus"}
    result = run_cli(*args, env=env, timeout=30)
    assert result.returncode == 2
    assert "RESPONSE_SHAPE" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_short_secret_exits_2_without_leaking_it(env: dict[str, str]) -> None:
    env = {**env, "AUTH_JWT_SECRET": "tiny-secret-xyz"}
    result = run_cli("migrate", env=env, timeout=30)
    assert result.returncode == 2
    assert "AUTH_JWT_SECRET" in result.stderr
    assert "tiny-secret-xyz" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_bad_int_setting_exits_2(env: dict[str, str]) -> None:
    result = run_cli("migrate", env={**env, "DB_POOL_MAX_SIZE": "ten"}, timeout=30)
    assert result.returncode == 2
    assert "DB_POOL_MAX_SIZE" in result.stderr and "Traceback" not in result.stderr


# --- dev (make run) -------------------------------------------------------------------------------


def test_dev_on_a_bare_machine_prints_a_short_first_screen_and_a_true_curl(tmp_path: Path):
    """`make run` as a newcomer gets it: no DATABASE_URL or REDIS_URL (embedded servers under
    DATA_DIR), the first screen short lines of text, then the banner; its curl, run as printed,
    answers member 1's expired tab with the seed's six coupons in the mall profile."""
    port = free_port()
    env = cli_env(DATA_DIR=str(tmp_path / "data"))
    del env["AUTH_JWT_SECRET"]  # the development default, as `make run` has it
    log = tmp_path / "dev.log"
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            service_command("dev", "--host", "127.0.0.1", "--port", str(port)),
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "Request lines follow" not in log.read_text(encoding="utf-8"):
            assert proc.poll() is None, log.read_text(encoding="utf-8")
            assert time.monotonic() < deadline, log.read_text(encoding="utf-8")
            time.sleep(0.1)
        screen = log.read_text(encoding="utf-8")
        lines = screen.splitlines()
        # One line per embedded server, nothing of pgserver's own commands, no JSON.
        assert sum("embedded PostgreSQL" in line for line in lines) == 1, screen
        assert sum("embedded Redis" in line for line in lines) == 1, screen
        assert not any(line.lstrip().startswith("{") for line in lines), screen
        assert "initdb" not in screen and "pgserver" not in screen
        for line in lines:
            if "eyJ" not in line:  # the token and the curl carrying it are long by nature
                assert len(line) <= 110, line
        assert f"http://127.0.0.1:{port}/demo/" in screen
        assert "RESPONSE_SHAPE=paginator, ERROR_STYLE=mall" in screen
        [curl] = [line.strip() for line in lines if line.strip().startswith("curl ")]
        result = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30,
                                check=True, env={"PATH": os.environ["PATH"]})
        body = json.loads(result.stdout)
        assert body["result"] == 1
        ids = [item["id"] for item in body["data"]["data"]["data"]]  # the paginator shape
        assert [i for i in ids if i in SEED_IDS] == list(SEED_IDS)
        status, page = http_get(f"http://127.0.0.1:{port}/demo/")
        assert status == 200 and b"sidebar.js" in page
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, log.read_text(encoding="utf-8")
