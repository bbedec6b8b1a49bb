import re

import pytest

from monitor.config import MongoSettings
from monitor.reconcile.mongo import MongoGateway, MongoQueryError, describe_url, redact, resolve_url


def test_redact_hides_passwords_only():
    assert redact("mongodb://ta:s3cr%40t@db:27017/x?authSource=admin") == "mongodb://ta:***@db:27017/x?authSource=admin"
    assert redact("failed: mongodb+srv://u:p@cluster/db") == "failed: mongodb+srv://u:***@cluster/db"
    assert redact("mongodb://db:27017") == "mongodb://db:27017"


def test_url_precedence_flag_config_env_file(tmp_path):
    secret = tmp_path / "mongodb-url"
    secret.write_text("mongodb://from-file:27017\n")
    environ = {"MONGODB_URL_FILE": str(secret)}
    assert resolve_url(MongoSettings(), environ=environ) == "mongodb://from-file:27017"
    environ["MONGODB_URL"] = "mongodb://from-env"
    assert resolve_url(MongoSettings(), environ=environ) == "mongodb://from-env"
    assert resolve_url(MongoSettings(url="mongodb://from-config"), environ=environ) == "mongodb://from-config"
    assert resolve_url(MongoSettings(url="mongodb://from-config"), "mongodb://flag", environ) == "mongodb://flag"
    assert resolve_url(MongoSettings(), environ={}) == ""


def test_unreadable_url_file_is_explained(tmp_path):
    with pytest.raises(MongoQueryError, match=r"cannot read the MongoDB URL file .*absent"):
        resolve_url(MongoSettings(url_file=str(tmp_path / "absent")), environ={})


def test_invalid_url_never_shows_the_password():
    with pytest.raises(MongoQueryError) as info:
        MongoGateway(MongoSettings(), "mongodb://user:hunter2@host:notaport")
    assert "hunter2" not in str(info.value)
    assert "(a MongoDB URL that does not parse; not shown)" in str(info.value)
    assert "password must be escaped" in str(info.value)  # the driver's reason stays


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("mongodb://127.0.0.1:1/x?tlsCertificateKeyFilePassword=s3cretPW&tls=true", "mongodb://127.0.0.1:1/x"),
        (
            "mongodb://u:s3cretPW@db1,db2:27018/tradingagents?authSource=admin",
            "mongodb://db1:27017,db2:27018/tradingagents",
        ),
        (
            "mongodb+srv://u:s3cretPW@cluster0.example.net/tradingagents",
            "mongodb+srv://cluster0.example.net/tradingagents",
        ),
        ("mongodb://u:s3cret/TAILPW@host/x", "(a MongoDB URL that does not parse; not shown)"),
        ("mongodb://u:s3cret@TAILPW@host/x", "(a MongoDB URL that does not parse; not shown)"),
        ("http://u:s3cretPW@host/x", "(not a mongodb:// or mongodb+srv:// URL; not shown)"),
    ],
)
def test_only_scheme_hosts_and_database_of_a_url_are_ever_shown(url, shown):
    assert describe_url(url) == shown
    secrets = ["s3cretPW"] if "s3cretPW" in url else ["s3cret", "TAILPW"]
    message = f"connection to {url} failed: {url.partition('://')[2]} (" + " ".join(secrets) + ")"
    assert not re.search("|".join(secrets), redact(message, url))


def test_queries_project_status_fields_only(mongo):
    url, name, db = mongo
    analysis = db.analyses.insert_one(
        {"status": "completed", "result_data": {"big": "x" * 1000}, "user_id": "u1"}
    ).inserted_id
    gateway = MongoGateway(MongoSettings(database=name), url)
    found = gateway.find_statuses([str(analysis)])
    assert set(found[str(analysis)]) == {"_id", "status"}
    assert gateway.ping() is True
    assert gateway.stats.up is True
    gateway.close()
