"""The rules of tags, storage classes, lifetimes and the lifecycle settings,
pure: what S3 accepts is accepted, what it refuses is refused with a message
that says what to fix; S3's Expiration header read as a time; session records
with and without tags."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import botocore.session
import pytest

from blobgate.server.core.errors import InvalidArgument
from blobgate.server.core.lifecycle import PrefixRule
from blobgate.server.core.storage_classes import STORAGE_CLASSES, validate_storage_class
from blobgate.server.core.tags import (
    EXPIRY_TAG,
    parse_tagging_header,
    stored_tags,
    tagging_header,
    validate_expire_days,
    validate_tags,
)
from blobgate.server.settings_loading import SettingsError, load_settings
from blobgate.server.storage.s3.checkpoint import Checkpoint
from blobgate.server.storage.s3.metadata import expiration_time


@pytest.mark.parametrize(
    "tags",
    [
        {"k": ""},
        {"Größe": "東京 2/3"},
        {"a_b.c:d/e=f+g-h@i": "٣ ½"},  # Arabic-Indic digit, a vulgar fraction: \p{N}
        {"k" * 128: "v" * 256},
        {f"k{i}": "v" for i in range(10)},
    ],
)
def test_tags_s3_accepts(tags: dict[str, str]) -> None:
    assert validate_tags(tags) == tags


@pytest.mark.parametrize(
    ("tags", "fragment"),
    [
        ({"": "v"}, "1 to 128"),
        ({"k" * 129: "v"}, "1 to 128"),
        ({"k": "v" * 257}, "limit is 256"),
        ({"k;": "v"}, "character"),
        ({"k": "a&b"}, "character"),
        ({"k": "line\nbreak"}, "character"),
        ({"AWS:x": "v"}, "aws:"),
        ({EXPIRY_TAG: "7"}, "expire_days"),
        ({f"k{i}": "v" for i in range(11)}, "at most 10"),
    ],
)
def test_tags_s3_refuses(tags: dict[str, str], fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        validate_tags(tags)


def test_the_expiry_tag_takes_one_of_the_ten() -> None:
    nine = {f"k{i}": "v" for i in range(9)}
    assert stored_tags(nine, 30) == {**nine, EXPIRY_TAG: "30"}
    with pytest.raises(InvalidArgument, match="at most 10"):
        stored_tags({**nine, "k9": "v"}, 30)
    with pytest.raises(InvalidArgument, match="at most 9"):
        validate_tags({**nine, "k9": "v"}, expiring=True)


def test_tagging_header_round_trip() -> None:
    tags = {"a b": "c&d=e", "ü": "+/"}
    assert parse_tagging_header(tagging_header(tags)) == tags


def test_expire_days() -> None:
    assert validate_expire_days(0, []) == 0
    assert validate_expire_days(30, [7, 30]) == 30
    with pytest.raises(InvalidArgument, match="use 0 \\(none\\) or one of 7, 30"):
        validate_expire_days(8, [30, 7])
    with pytest.raises(InvalidArgument, match="no lifetime"):
        validate_expire_days(8, [])


def test_storage_classes_are_botocores() -> None:
    model = botocore.session.get_session().get_service_model("s3")
    assert set(STORAGE_CLASSES) == set(model.shape_for("StorageClass").enum)
    assert validate_storage_class("glacier_ir") == "GLACIER_IR"
    assert validate_storage_class("") == ""
    with pytest.raises(InvalidArgument, match="not an S3 storage class: use one of STANDARD"):
        validate_storage_class("COLD")


def test_s3s_expiration_header() -> None:
    header = 'expiry-date="Wed, 06 Jan 2027 00:00:00 GMT", rule-id="blobgate:expire-30d"'
    assert expiration_time({"Expiration": header}) == datetime(2027, 1, 6, tzinfo=UTC)
    assert expiration_time({}) is None
    assert expiration_time({"Expiration": 'expiry-date="not a date"'}) is None


def test_session_records_keep_tags_and_older_ones_still_parse() -> None:
    record = Checkpoint(
        key="k",
        upload_id="u",
        part_size=5,
        content_type="t/t",
        metadata={},
        if_none_match=False,
        if_match="",
        size=None,
        expected_sha256="",
        expected_crc32c=None,
        parts=0,
        sha256_state="",
        crc32c=0,
        tags={"a": "b"},
        storage_class="GLACIER_IR",
        expire_days=7,
    )
    options = Checkpoint.from_json(record.to_json()).spec("bucket").options
    assert (dict(options.tags), options.storage_class, options.expire_days) == (
        {"a": "b"},
        "GLACIER_IR",
        7,
    )
    older = record.to_json().replace(b',"tags":{"a":"b"},"storage_class":"GLACIER_IR"', b"")
    older = older.replace(b',"expire_days":7', b"")
    options = Checkpoint.from_json(older).spec("bucket").options
    assert (dict(options.tags), options.storage_class, options.expire_days) == ({}, "", 0)


@pytest.mark.parametrize(
    ("toml", "fragment"),
    [
        ('[[lifecycle_rules]]\nprefix = "a/"\n', "has no action"),
        ("[[lifecycle_rules]]\ntransition_days = 3\n", "go together"),
        ('[[lifecycle_rules]]\ntransition_days = 3\ntransition_class = "X"\n', "storage class"),
        ('[[lifecycle_rules]]\nprefix = ".blobgate/x"\nexpire_days = 1\n', "gateway's records"),
        ("[[lifecycle_rules]]\nexpire_days = 0\n", "lifecycle_rules"),
        ("expiry_days_allowed = [0]\n", "between 1 and 36500"),
    ],
)
def test_bad_lifecycle_settings_stop_start_up(tmp_path: Path, toml: str, fragment: str) -> None:
    path = tmp_path / "settings.toml"
    path.write_text(toml)
    with pytest.raises(SettingsError, match=fragment):
        load_settings(["--config", str(path)])


def test_lifecycle_rules_have_no_flag_and_stable_ids() -> None:
    with pytest.raises(SystemExit):
        load_settings(["--lifecycle-rules", "x"])
    rule = PrefixRule(prefix="tmp/", expire_days=2)
    assert rule.rule_id == PrefixRule(prefix="tmp/", expire_days=2).rule_id
    assert rule.rule_id != PrefixRule(prefix="tmp/", expire_days=3).rule_id
    assert rule.rule_id.startswith("blobgate:prefix-")
