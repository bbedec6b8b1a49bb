from monitor.config import ClaimRule
from monitor.reconcile.claims import ClaimExtractor, is_object_id
from monitor.scan.matcher import Event


def event(rule: str, **captures: str) -> Event:
    return Event(rule, "info", "line", captures, (), 42.0)


def test_claims_follow_the_configured_rules_and_conditions():
    extractor = ClaimExtractor(
        [
            ClaimRule(
                name="finished_success", rule="analysis_finished", when={"success": "True"}, accept=["completed"]
            ),
            ClaimRule(name="finished_failure", rule="analysis_finished", when={"success": "False"}, accept=["failed"]),
            ClaimRule(name="written", rule="persisted", accept=["completed"]),
        ]
    )
    claims = extractor.claims(
        [
            event("analysis_finished", analysis_id="a" * 24, success="False"),
            event("persisted", analysis_id="b" * 24),
            event("other", analysis_id="c" * 24),
        ],
        "app",
    )
    assert [(c.analysis_id, c.claim, c.accept, c.logged_at, c.stream) for c in claims] == [
        ("a" * 24, "finished_failure", ("failed",), 42.0, "app"),
        ("b" * 24, "written", ("completed",), 42.0, "app"),
    ]


def test_only_24_hex_digits_are_object_ids():
    assert is_object_id("68f8741c3512a67997df93d2")
    assert not is_object_id("3f2b8c4e-1d2a-4b7f-9c3e-5a6b7c8d9e0f")  # the in-memory fallback's UUID
    assert not is_object_id('{"$ne": null}')
    assert not is_object_id("68f8741c3512a67997df93d2\n")
    assert not is_object_id("68F8741C3512A67997DF93D2Z")


def test_a_megabyte_id_is_kept_as_its_head_and_length_and_never_queried():
    extractor = ClaimExtractor([ClaimRule(name="written", rule="persisted", accept=["completed"])])
    uuid = "3f2b8c4e-1d2a-4b7f-9c3e-5a6b7c8d9e0f"
    claims = extractor.claims(
        [event("persisted", analysis_id=uuid), event("persisted", analysis_id="9" * 1_048_576)], "app"
    )
    assert [c.analysis_id for c in claims] == [uuid, "9" * 36 + "… (1048576 characters)"]
    assert not is_object_id(claims[1].analysis_id)
