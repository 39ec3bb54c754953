"""Credentials and TLS for every dependency, as settings and as the clients' arguments: secrets
read from files (mounted Secrets), settings that must fit together refused at start with one
readable message, and secret values never shown."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ingestor.config import KafkaSettings, MilvusSettings, RedisSettings, load_settings
from ingestor.errors import ConfigError
from ingestor.kafka_common import TokenProvider, client_kwargs

SECRET = "s3cr3t-ü-value"


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return path


def _refused(overrides: dict, *needles: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides=overrides)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    assert SECRET not in message
    assert "Value error" not in message and "Traceback" not in message
    return message


# -- secrets from files ---------------------------------------------------------------------------


def test_a_secret_comes_from_its_file_without_the_trailing_newline(tmp_path):
    (tmp_path / "pw").write_text(SECRET + "\n")
    k = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="u",
        sasl_password_file=tmp_path / "pw",
    )
    assert k.sasl_password is not None and k.sasl_password.get_secret_value() == SECRET
    assert SECRET not in repr(k) and SECRET not in str(k.model_dump())


@pytest.mark.parametrize(
    "section, field",
    [
        ("kafka", "ssl_password"),
        ("redis", "url"),
        ("redis", "password"),
        ("milvus", "token"),
        ("milvus", "password"),
    ],
)
def test_every_secret_has_a_file_beside_it(section, field, tmp_path):
    from ingestor.config import Settings

    model = Settings.model_fields[section].annotation
    assert f"{field}_file" in model.model_fields


def test_a_secret_and_its_file_together_are_refused(tmp_path):
    (tmp_path / "tok").write_text(SECRET)
    _refused({"milvus": {"token": SECRET, "token_file": str(tmp_path / "tok")}}, "set token or token_file, not both")


def test_a_missing_or_empty_secret_file_is_refused_naming_the_setting(tmp_path):
    _refused({"milvus": {"token_file": str(tmp_path / "absent")}}, "token_file: cannot read", "absent")
    (tmp_path / "empty").write_text("\n")
    _refused({"milvus": {"token_file": str(tmp_path / "empty")}}, "token_file:", "is empty")


# -- Kafka ----------------------------------------------------------------------------------------


def test_sasl_ssl_with_scram_and_mutual_tls_reaches_every_kafka_client(pem):
    k = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_username="ingest",
        sasl_password=SECRET,
        ssl_cafile=pem,
        ssl_certfile=pem,
        ssl_keyfile=pem,
        ssl_password=SECRET,
    )
    kwargs = client_kwargs(k)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert kwargs["sasl_plain_username"] == "ingest" and kwargs["sasl_plain_password"] == SECRET
    assert kwargs["ssl_cafile"] == str(pem) and kwargs["ssl_certfile"] == str(pem) and kwargs["ssl_keyfile"] == str(pem)
    assert kwargs["ssl_password"] == SECRET and kwargs["ssl_check_hostname"] is True


def test_plaintext_stays_plaintext():
    kwargs = client_kwargs(KafkaSettings())
    assert kwargs["security_protocol"] == "PLAINTEXT"
    assert not [k for k in kwargs if k.startswith(("ssl_", "sasl_"))]


def test_a_client_waits_for_its_first_broker_as_long_as_for_any_answer():
    """kafka-python's own bootstrap timeout (30 s) would hold an unreachable Kafka past a shorter
    request timeout: `produce` and the start-up retries would wait it out."""
    kwargs = client_kwargs(KafkaSettings(request_timeout_ms=3_000))
    assert kwargs["bootstrap_timeout_ms"] == kwargs["request_timeout_ms"] == 3_000


@pytest.mark.parametrize(
    "kafka, needles",
    [
        ({"security_protocol": "SASL_SSL"}, ["SASL_SSL needs sasl_mechanism"]),
        (
            {"sasl_mechanism": "PLAIN", "sasl_username": "u", "sasl_password": SECRET},
            ["security_protocol is PLAINTEXT"],
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512", "sasl_username": "u"},
            ["SCRAM-SHA-512 needs sasl_username and sasl_password"],
        ),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"}, ["OAUTHBEARER needs one of"]),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "GSSAPI",
                "sasl_username": "u",
                "sasl_password": SECRET,
            },
            ["kafka.sasl_mechanism"],
        ),
        ({"ssl_password": SECRET}, ["ssl_password set but security_protocol is PLAINTEXT"]),
        (
            {"security_protocol": "SSL", "ssl_cafile": "/no/such/ca.pem"},
            ["ssl_cafile: file not found: /no/such/ca.pem"],
        ),
    ],
)
def test_kafka_security_that_does_not_fit_together_is_refused(kafka, needles):
    _refused({"kafka": kafka}, *needles)


def test_mutual_tls_needs_both_the_certificate_and_the_key(pem):
    _refused({"kafka": {"security_protocol": "SSL", "ssl_certfile": str(pem)}}, "both ssl_certfile and ssl_keyfile")


def test_an_oauth_token_file_is_read_again_at_every_login(tmp_path):
    path = tmp_path / "token"
    path.write_text("first\n")
    provider = TokenProvider(path, None)
    assert provider.token() == "first"
    path.write_text("rotated")
    assert provider.token() == "rotated"


def test_an_oauth_token_command_runs_once_a_minute_and_its_failure_shows_no_output(tmp_path):
    counter = tmp_path / "runs"
    script = tmp_path / "token.py"
    script.write_text(
        f"import pathlib; p = pathlib.Path({str(counter)!r}); p.write_text(p.read_text() + 'x' "
        "if p.exists() else 'x'); print('tok-' + str(len(p.read_text())))\n"
    )
    provider = TokenProvider(None, f"{sys.executable} {script}")
    assert provider.token() == "tok-1" and provider.token() == "tok-1"
    assert counter.read_text() == "x"
    failing = tmp_path / "fail.py"
    failing.write_text(f"print({SECRET!r}); import sys; sys.stderr.write('issuer down'); sys.exit(3)\n")
    with pytest.raises(RuntimeError) as caught:
        TokenProvider(None, f"{sys.executable} {failing}").token()
    assert "exited 3: issuer down" in str(caught.value) and SECRET not in str(caught.value)


def test_oauthbearer_hands_kafka_python_a_token_provider(tmp_path):
    (tmp_path / "t").write_text("tok")
    k = KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauth_token_file=tmp_path / "t")
    provider = client_kwargs(k)["sasl_oauth_token_provider"]
    assert provider.token() == "tok"


# -- Redis ----------------------------------------------------------------------------------------


def test_rediss_with_a_ca_client_certificate_and_an_acl_user(pem):
    from ingestor.cache import connect

    settings = RedisSettings(
        url="rediss://127.0.0.1:6380/0",
        username="ingestor",
        password=SECRET,
        ssl_ca_file=pem,
        ssl_certfile=pem,
        ssl_keyfile=pem,
    )
    client = connect(settings, timeout_s=1)
    got = client.connection_pool.connection_kwargs
    assert got["ssl_ca_certs"] == str(pem) and got["ssl_certfile"] == str(pem) and got["ssl_keyfile"] == str(pem)
    assert got["username"] == "ingestor" and got["password"] == SECRET and got["ssl_check_hostname"] is True
    client.close()


def test_redis_tls_files_without_rediss_are_refused(pem):
    _refused(
        {"redis": {"url": f"redis://u:{SECRET}@h:6379/0", "ssl_ca_file": str(pem)}},
        "ssl_ca_file set but the url is not rediss://",
    )


# -- Milvus ---------------------------------------------------------------------------------------


def test_milvus_over_tls_with_a_user_and_one_way_or_mutual_tls(pem):
    from ingestor.sink import client_kwargs as milvus_kwargs

    one_way = MilvusSettings(
        uri="https://milvus:19530",
        user="root",
        password=SECRET,
        ca_file=pem,
        server_name="milvus.internal",
        db_name="search",
    )
    kwargs = milvus_kwargs(one_way, one_way.uri)
    assert kwargs["secure"] is True and kwargs["server_pem_path"] == str(pem)
    assert kwargs["server_name"] == "milvus.internal" and kwargs["db_name"] == "search"
    assert kwargs["user"] == "root" and kwargs["password"] == SECRET
    mutual = MilvusSettings(uri="https://milvus:19530", token=SECRET, ca_file=pem, certfile=pem, keyfile=pem)
    kwargs = milvus_kwargs(mutual, mutual.uri)
    assert kwargs["ca_pem_path"] == kwargs["client_pem_path"] == kwargs["client_key_path"] == str(pem)
    assert kwargs["token"] == SECRET and "server_pem_path" not in kwargs


@pytest.mark.parametrize(
    "milvus, needle",
    [
        ({"uri": "http://m:19530", "user": "root"}, "a Milvus user needs its password"),
        ({"uri": "http://m:19530", "user": "root", "password": SECRET, "token": SECRET}, "not both"),
        ({"uri": "http://m:19530", "ca_file": "PEM"}, "ca_file set but the uri is not https://"),
        ({"uri": "https://m:19530", "certfile": "PEM", "keyfile": "PEM"}, "mutual TLS needs ca_file too"),
    ],
)
def test_milvus_security_that_does_not_fit_together_is_refused(milvus, needle, pem):
    _refused({"milvus": {k: (str(pem) if v == "PEM" else v) for k, v in milvus.items()}}, needle)


def test_a_redis_refusal_that_retrying_cannot_heal_is_told_from_an_outage():
    import ssl

    import redis

    from ingestor.cache import refusal

    assert "redis.username and redis.password" in refusal(redis.AuthenticationError("invalid password"))
    assert "redis.password" in refusal(redis.ResponseError("WRONGPASS invalid username-password pair"))
    untrusted = redis.ConnectionError("Error 1 connecting")
    untrusted.__context__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.__context__.verify_message = "self-signed certificate in certificate chain"
    assert "not trusted (self-signed certificate in certificate chain): check redis.ssl_ca_file" in refusal(untrusted)
    assert refusal(redis.ConnectionError("Connection refused")) is None
    assert refusal(redis.TimeoutError("Timeout reading")) is None
    assert refusal(redis.ResponseError("OOM command not allowed")) is None


def test_a_kafka_refusal_is_found_in_what_kafka_python_logged_before_its_timeout():
    import logging
    import ssl

    from kafka.errors import KafkaConnectionError, KafkaTimeoutError, SaslAuthenticationFailedError

    from ingestor.errors import RetriableError, StartupError
    from ingestor.kafka_common import kafka_errors, refusal

    assert "check kafka.sasl_mechanism, kafka.sasl_username" in refusal(SaslAuthenticationFailedError("bad"))
    assert refusal(KafkaConnectionError("socket disconnected")) is None
    alert = ssl.SSLError(1, "[SSL: SSLV3_ALERT_BAD_CERTIFICATE] sslv3 alert bad certificate")
    alert.reason = "SSLV3_ALERT_BAD_CERTIFICATE"
    assert "check kafka.ssl_certfile and kafka.ssl_keyfile" in refusal(KafkaConnectionError(alert))
    untrusted = ssl.SSLCertVerificationError(1, "certificate verify failed")
    untrusted.verify_message = "unable to get local issuer certificate"
    with pytest.raises(StartupError, match="certificate is not trusted .* check kafka.ssl_cafile"):
        with kafka_errors("kafka", "cannot reach b:9094", at_start=True):
            logging.getLogger("kafka.net.manager").error("Connection failed: %s", untrusted)
            raise KafkaTimeoutError("Unable to bootstrap")
    with pytest.raises(RetriableError) as later:  # after the start, a refusal is retried, and named
        with kafka_errors("dlq", "cannot create the dead-letter producer"):
            logging.getLogger("kafka.net.manager").error("Connection failed: %s", untrusted)
            raise KafkaTimeoutError("Unable to bootstrap")
    assert "not trusted" in str(later.value)
    with pytest.raises(StartupError, match="brokers refused the login: check kafka.sasl_mechanism"):
        with kafka_errors("kafka", "cannot reach b:9094", at_start=True):  # as kafka-python 3.0 logs it
            logging.getLogger("kafka.net.manager").warning(
                "Bootstrap connection to %s failed: %s (backoff %.2f secs)",
                "bootstrap-0",
                SaslAuthenticationFailedError("invalid credentials with SASL mechanism SCRAM-SHA-512"),
                1.6,
            )
            logging.getLogger("kafka.net.manager").warning(
                "Bootstrap connection to %s failed: %s (backoff %.2f secs)",
                "bootstrap-0",
                KafkaConnectionError("socket disconnected"),
                1.6,
            )  # an outage after it keeps the refusal
            raise KafkaTimeoutError("Unable to bootstrap")
    with pytest.raises(RetriableError) as plain:  # a failure logged by an earlier attempt does not count
        with kafka_errors("kafka", "cannot reach b:9094", at_start=True):
            raise KafkaTimeoutError("Unable to bootstrap")
    assert "not trusted" not in str(plain.value)


class _Rpc:
    """What grpc raises: an RpcError with a status code (grpc's own classes need a live call)."""

    @staticmethod
    def error(code_name: str, details: str) -> BaseException:
        import grpc

        class Failed(grpc.RpcError):
            def code(self) -> grpc.StatusCode:
                return getattr(grpc.StatusCode, code_name)

            def __str__(self) -> str:
                return details

        return Failed()


def _wrapped(cause: BaseException) -> BaseException:
    """pymilvus's generic connect failure, raised from the gRPC error, as on a real server."""
    from pymilvus.exceptions import MilvusException

    error = MilvusException(
        code=2, message="Fail connecting to server on 127.0.0.1:19535, illegal connection params or server unavailable"
    )
    error.__cause__ = cause
    return error


def test_a_milvus_refusal_is_told_from_an_outage_under_pymilvus_generic_error():
    from ingestor.errors import RetriableError
    from ingestor.milvus_schema import classify, refusal

    login = _wrapped(_Rpc.error("UNAUTHENTICATED", "auth check failure, please check username and password"))
    assert "check milvus.user and milvus.password (or milvus.password_file)" in refusal(login)
    assert "milvus.token" in refusal(_wrapped(_Rpc.error("UNAUTHENTICATED", "missing authorization in header")))
    untrusted = _wrapped(
        _Rpc.error(
            "UNAVAILABLE",
            "Tls handshake failed (TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: "
            "error:1000007d:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED",
        )
    )
    assert "certificate is not trusted: check milvus.ca_file" in refusal(untrusted)
    assert "grant the milvus.user a role" in refusal(_wrapped(_Rpc.error("PERMISSION_DENIED", "no privilege")))
    assert refusal(_wrapped(_Rpc.error("UNAVAILABLE", "failed to connect to all addresses; Socket closed"))) is None
    assert refusal(_wrapped(_Rpc.error("UNAVAILABLE", "Connection refused"))) is None
    # Once running, a refusal is retried like an outage, and says what to fix (what /readyz shows).
    running = classify(login)
    assert isinstance(running, RetriableError) and str(running).startswith("milvus: refused the login: check")


def test_the_milvus_watch_keeps_the_reason_of_the_last_failed_ping():
    from ingestor.health import MilvusWatch

    answers = iter(["milvus: refused the login: check milvus.user", ""])
    watch = MilvusWatch(lambda: next(answers))
    ok_before = watch.last_ok
    watch.check_once()
    assert watch.last_error == "milvus: refused the login: check milvus.user" and watch.last_ok == ok_before
    watch.check_once()
    assert watch.last_error == "" and watch.last_ok > ok_before


def test_a_broker_refusal_seen_while_running_is_recent_for_a_minute(monkeypatch):
    import logging

    from kafka.errors import KafkaConnectionError, SaslAuthenticationFailedError

    from ingestor import kafka_common

    clock = [1000.0]
    monkeypatch.setattr(kafka_common.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(kafka_common._FAILURES, "last_at", float("-inf"))
    manager = logging.getLogger("kafka.net.manager")
    manager.warning("Bootstrap connection to %s failed: %s", "0", KafkaConnectionError("socket disconnected"))
    assert kafka_common.recent_refusal() is None, "an outage is not a refusal"
    manager.warning("Bootstrap connection to %s failed: %s", "0", SaslAuthenticationFailedError("invalid credentials"))
    clock[0] += 59
    assert "brokers refused the login" in kafka_common.recent_refusal()
    clock[0] += 2
    assert kafka_common.recent_refusal() is None


def test_a_redis_refusal_while_running_is_kept_until_redis_answers():
    import redis

    from ingestor.cache import Cache
    from ingestor.config import RedisSettings

    class Refusing:
        def __init__(self) -> None:
            self.refuse = True

        def mget(self, keys):
            if self.refuse:
                raise redis.AuthenticationError("invalid username-password pair")
            return [None] * len(keys)

    cache = Cache(RedisSettings(url="redis://127.0.0.1:1/0"), "model", "ns", 4)
    cache._client = fake = Refusing()
    cache.lookup(["id"], ["sha"])
    assert "redis refused the login: check redis.username and redis.password" in cache.refused
    fake.refuse = False
    cache._down_until = 0.0  # the bypass window (redis.retry_after_ms) is over
    assert cache.lookup(["id"], ["sha"]) == ([None], [None]) and cache.refused == ""


def test_a_refusal_search_ends_on_a_chain_that_loops():
    from ingestor import kafka_common, milvus_schema
    from ingestor.errors import chain

    a, b = ConnectionError("a"), OSError("b")
    a.__context__, b.__context__ = b, a
    assert [str(e) for e in chain(a)] == ["a", "b"]
    assert milvus_schema.refusal(a) is None and kafka_common.refusal(a) is None


# -- every Kafka client takes the shared settings -------------------------------------------------

_KAFKA_CLIENTS = {"KafkaConsumer", "KafkaProducer", "KafkaAdminClient"}


def _kafka_constructions_without_client_kwargs(source: str, filename: str) -> tuple[int, list[str]]:
    """(how many kafka-python clients `source` constructs, those that do not take `**` of
    kafka_common.client_kwargs: directly, `**client_kwargs(...)`, or through a name assigned from it
    in the same function). Aliased imports (`from kafka import KafkaConsumer as C`) count too."""
    import ast

    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name -> kafka-python class
    shared: set[str] = set()  # local names bound to kafka_common.client_kwargs
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kafka":
            for a in node.names:
                if a.name in _KAFKA_CLIENTS:
                    aliases[a.asname or a.name] = a.name
        if isinstance(node, ast.ImportFrom) and (
            node.module == "ingestor.kafka_common" or (node.level > 0 and node.module == "kafka_common")
        ):
            shared |= {a.asname or a.name for a in node.names if a.name == "client_kwargs"}

    def is_shared_call(expr: ast.AST) -> bool:
        return isinstance(expr, ast.Call) and (
            (isinstance(expr.func, ast.Name) and expr.func.id in shared)
            or (
                isinstance(expr.func, ast.Attribute)
                and expr.func.attr == "client_kwargs"
                and isinstance(expr.func.value, ast.Name)
                and expr.func.value.id == "kafka_common"
            )
        )

    def bound_to_shared(scope: ast.AST) -> set[str]:
        return {
            t.id
            for node in ast.walk(scope)
            if isinstance(node, ast.Assign) and is_shared_call(node.value)
            for t in node.targets
            if isinstance(t, ast.Name)
        }

    found, bad = 0, []
    scopes = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] + [tree]
    seen: set[int] = set()
    for scope in scopes:  # a call is judged once, in the first function that holds it
        names = bound_to_shared(scope)
        for node in ast.walk(scope):
            if not isinstance(node, ast.Call) or id(node) in seen:
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None
            cls = aliases.get(name) if isinstance(func, ast.Name) else (name if name in _KAFKA_CLIENTS else None)
            if cls is None:
                continue
            seen.add(id(node))
            found += 1
            spread = [k.value for k in node.keywords if k.arg is None]
            if not any(is_shared_call(v) or (isinstance(v, ast.Name) and v.id in names) for v in spread):
                bad.append(f"{filename}:{node.lineno} {cls}(...) without **client_kwargs(...)")
    return found, bad


def test_every_kafka_client_in_ingestor_takes_the_shared_client_settings():
    """A client built without `client_kwargs` would connect in plaintext, without the login or the
    CA, to a secured broker: one forgotten constructor is a client that cannot reach it."""
    import ingestor

    root = Path(ingestor.__file__).parent
    bench = Path(__file__).resolve().parents[2] / "bench"
    files = [(p, p.relative_to(root)) for p in sorted(root.rglob("*.py"))]
    files += [(p, p.relative_to(bench.parent)) for p in sorted(bench.glob("*.py"))]  # the bench builds clients too
    total, bad = 0, []
    for path, name in files:
        found, wrong = _kafka_constructions_without_client_kwargs(path.read_text(), str(name))
        total += found
        bad += wrong
    assert not bad, "\n".join(bad)
    # The consumer, the DLQ producer, produce, dlq replay (2), check, stats, the supervisor's probe and
    # the bench's clients: the scan must see them, or it checks nothing.
    assert total >= 10, total


def test_the_client_settings_scan_flags_a_client_without_them():
    ok = (
        "from kafka import KafkaConsumer\nfrom ingestor.kafka_common import client_kwargs\n"
        "def f(s):\n    kw = client_kwargs(s)\n    return KafkaConsumer(**kw, group_id='g')\n"
    )
    assert _kafka_constructions_without_client_kwargs(ok, "ok.py") == (1, [])
    plain = (
        "from kafka import KafkaProducer as P\nimport kafka\n"
        "def f(s):\n    a = P(bootstrap_servers=s.bootstrap_servers)\n"
        "    b = kafka.KafkaConsumer(**{'bootstrap_servers': 'x'})\n    return a, b\n"
    )
    found, bad = _kafka_constructions_without_client_kwargs(plain, "plain.py")
    assert found == 2 and len(bad) == 2, bad
    other = (
        "from kafka.admin import KafkaAdminClient\nfrom ingestor.sink import client_kwargs\n"
        "def f(s):\n    return KafkaAdminClient(**client_kwargs(s, 'u'))\n"
    )  # Milvus's, not Kafka's
    assert _kafka_constructions_without_client_kwargs(other, "other.py")[1], "the Milvus client_kwargs passed"
