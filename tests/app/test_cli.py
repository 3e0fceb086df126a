"""The postern command: user create, enable and disable."""

import json

from tests.livesrv import clean_env, postern


def test_user_create_prints_json_and_refuses_bad_input(tmp_path):
    env = clean_env()
    ok = postern("user", "create", "dave", "--password", "eight chars", cwd=tmp_path, env=env)
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["UserID"] == 1
    again = postern("user", "create", "DAVE", "--password", "eight chars", cwd=tmp_path, env=env)
    assert again.returncode == 1 and "Username is already taken" in again.stderr
    short = postern("user", "create", "erin", "--password", "short", cwd=tmp_path, env=env)
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    bad_email = postern(
        "user",
        "create",
        "erin",
        "--password",
        "eight chars",
        "--email",
        "x@",
        cwd=tmp_path,
        env=env,
    )
    assert bad_email.returncode == 1 and "Invalid email address" in bad_email.stderr


def test_user_disable_and_enable(tmp_path):
    env = clean_env()
    postern("user", "create", "frank", "--password", "eight chars", cwd=tmp_path, env=env)
    off = postern("user", "disable", "frank", cwd=tmp_path, env=env)
    assert json.loads(off.stdout) == {"UserID": 1, "AccountStatus": "Disabled"}
    on = postern("user", "enable", "frank", cwd=tmp_path, env=env)
    assert json.loads(on.stdout)["AccountStatus"] == "Enabled"
    missing = postern("user", "disable", "nobody", cwd=tmp_path, env=env)
    assert missing.returncode == 1 and "no user named nobody" in missing.stderr


def test_user_quota(tmp_path):
    env = clean_env()
    postern("user", "create", "gina", "--password", "eight chars", cwd=tmp_path, env=env)
    set_ = postern("user", "quota", "gina", "500", cwd=tmp_path, env=env)
    assert json.loads(set_.stdout) == {"UserID": 1, "SendQuota": 500}
    back = postern("user", "quota", "gina", "default", cwd=tmp_path, env=env)
    assert json.loads(back.stdout) == {"UserID": 1, "SendQuota": None}
    bad = postern("user", "quota", "gina", "lots", cwd=tmp_path, env=env)
    assert bad.returncode == 1 and "whole number" in bad.stderr
