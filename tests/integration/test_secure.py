"""Against the secured services of `services.sh up --secure` (Redis over TLS only, with an ACL user
and the default user off), configured only from the secure.env it writes: ingestion works through
the TLS cache; a wrong password or an untrusted certificate stops the start with exit 2 naming the
setting, before anything is consumed; no secret appears in any output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.support import harness

pytestmark = pytest.mark.services


def _secure_dir() -> Path:
    state = Path(os.environ.get("INGESTOR_STATE_DIR", harness.REPO / ".state" / "services"))
    return state / "secure"


@pytest.fixture(scope="module")
def secure_env(services) -> dict[str, str]:
    result = harness.services("start", "rediss", timeout=120)
    if result.returncode != 0:
        pytest.fail(f"services.sh start rediss failed:\n{result.stdout}\n{result.stderr}")
    env = {}
    for line in (_secure_dir() / "secure.env").read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            env[name] = value
    assert env["INGESTOR_REDIS__URL"].startswith("rediss://")
    return env


def _password() -> str:
    return (_secure_dir() / "redis-password").read_text().strip()


def _run(secure_env: dict[str, str], tmp_path: Path, topic: str, group: str, **extra: str) -> harness.Run:
    env = harness.ingestor_env(topic, group, str(tmp_path / "secure.db"), redis=False)
    env.update(secure_env)
    env["INGESTOR_REDIS__KEY_PREFIX"] = f"secure-{topic}"
    env.update(extra)
    result = harness.run_ingestor(env, timeout=300)
    assert _password() not in result.output, "the Redis password appeared in the output"
    return result


def test_records_land_through_the_tls_cache_and_a_replay_skips_them(secure_env, tmp_path):
    topic = harness.unique("secure")
    harness.create_topic(topic, partitions=2)
    harness.produce(topic, [harness.json_record(r) for r in harness.sample_records(30)])
    first = _run(secure_env, tmp_path, topic, harness.unique("g"))
    assert first.returncode == 0, first.output[-4000:]
    assert first.summary()["upserted"] == 30
    assert "redis is not reachable" not in first.output, first.output[-4000:]
    # A second group replays the topic: the markers written over TLS are read back over TLS.
    again = _run(secure_env, tmp_path, topic, harness.unique("g"))
    assert again.returncode == 0, again.output[-4000:]
    assert again.summary()["skipped"] == 30, again.summary()


def _refused_at_start(secure_env, tmp_path, **extra: str) -> str:
    topic, group = harness.unique("refused"), harness.unique("g")
    harness.create_topic(topic, partitions=1)
    harness.produce(topic, [harness.json_record(r) for r in harness.sample_records(3)])
    result = _run(secure_env, tmp_path, topic, group, **extra)
    assert result.returncode == 2, result.output[-4000:]
    assert "Traceback" not in result.output, result.output[-4000:]
    committed, _ = harness.offsets(group, topic)
    assert all(c is None for c in committed.values()), "nothing may be consumed"
    return " ".join(result.output.split())


def test_a_wrong_password_exits_2_naming_the_setting(secure_env, tmp_path):
    wrong = tmp_path / "wrong-password"
    wrong.write_text("not-the-password\n")
    message = _refused_at_start(secure_env, tmp_path, INGESTOR_REDIS__PASSWORD_FILE=str(wrong))
    assert "redis refused the login" in message and "redis.password" in message, message[-2000:]
    assert "not-the-password" not in message


def test_an_untrusted_server_certificate_exits_2_naming_the_setting(secure_env, tmp_path):
    other_ca = tmp_path / "other-ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=other",
                    "-keyout", str(tmp_path / "other-ca.key"), "-out", str(other_ca)],
                   check=True, capture_output=True)
    message = _refused_at_start(secure_env, tmp_path, INGESTOR_REDIS__SSL_CA_FILE=str(other_ca))
    assert "certificate is not trusted" in message and "redis.ssl_ca_file" in message, message[-2000:]


def test_check_names_the_refusal(secure_env, tmp_path):
    wrong = tmp_path / "wrong-password"
    wrong.write_text("nope")
    env = harness.ingestor_env("unused", "unused", str(tmp_path / "check.db"), redis=False)
    env.update(secure_env, INGESTOR_REDIS__PASSWORD_FILE=str(wrong))
    import sys

    proc = subprocess.run([sys.executable, "-m", "ingestor", "check"], env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    output = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0, output
    assert "redis refused the login" in output, output[-2000:]
    assert _password() not in output
