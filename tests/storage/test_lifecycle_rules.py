"""The gateway's bucket lifecycle rules on both S3s: reconciled beside rules
it does not own (kept as they were), idempotent, stale owned rules removed
when the settings change; written by a gateway started with
manage_lifecycle; and the expiry S3 then reports through Stat."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from blobgate.server.app import start_gateway
from blobgate.server.core.lifecycle import PrefixRule, expiry_rule_id
from blobgate.server.core.tags import EXPIRY_TAG
from blobgate.server.storage.s3.lifecycle import current_rules, owned_rules, reconcile
from blobgate.v1 import storage_pb2, storage_pb2_grpc
from tests.support.gateways import gateway_settings, stop_gateway
from tests.support.helpers import eventually, upload

pytestmark = pytest.mark.both_s3s

FOREIGN = {
    "ID": "team-logs",
    "Status": "Enabled",
    "Filter": {"Prefix": "logs/"},
    "Expiration": {"Days": 3},
}


async def ids(s3: Any, bucket: str) -> set[str]:
    return {rule["ID"] for rule in await current_rules(s3, bucket)}


async def test_reconcile_keeps_foreign_rules_and_is_idempotent(s3: Any, bucket: str) -> None:
    await s3.create_bucket(Bucket=bucket)
    await s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [FOREIGN]}
    )
    wanted = owned_rules(bucket, [7, 30], [])
    assert await reconcile(s3, bucket, wanted) is True
    assert await ids(s3, bucket) == {"team-logs", expiry_rule_id(7), expiry_rule_id(30)}
    foreign = [rule for rule in await current_rules(s3, bucket) if rule["ID"] == "team-logs"]
    assert foreign == [FOREIGN]
    assert await reconcile(s3, bucket, wanted) is False  # nothing to write the second time
    assert await ids(s3, bucket) == {"team-logs", expiry_rule_id(7), expiry_rule_id(30)}


async def test_a_changed_allowed_list_removes_stale_owned_rules(s3: Any, bucket: str) -> None:
    await s3.create_bucket(Bucket=bucket)
    await s3.put_bucket_lifecycle_configuration(
        Bucket=bucket, LifecycleConfiguration={"Rules": [FOREIGN]}
    )
    await reconcile(s3, bucket, owned_rules(bucket, [1, 7], []))
    assert await reconcile(s3, bucket, owned_rules(bucket, [7, 90], [])) is True
    assert await ids(s3, bucket) == {"team-logs", expiry_rule_id(7), expiry_rule_id(90)}
    # No owned rule left: only the foreign one stays.
    await reconcile(s3, bucket, [])
    assert await ids(s3, bucket) == {"team-logs"}


async def test_no_rules_at_all_leaves_no_configuration(s3: Any, bucket: str) -> None:
    await s3.create_bucket(Bucket=bucket)
    assert await current_rules(s3, bucket) == []  # NoSuchLifecycleConfiguration: none
    assert await reconcile(s3, bucket, []) is False
    await reconcile(s3, bucket, owned_rules(bucket, [30], []))
    await reconcile(s3, bucket, [])
    assert await current_rules(s3, bucket) == []


async def test_prefix_rules_from_the_settings(s3: Any, bucket: str) -> None:
    await s3.create_bucket(Bucket=bucket)
    rules = [
        PrefixRule(prefix="tmp/", expire_days=2, abort_multipart_days=1),
        PrefixRule(prefix="old/", transition_days=30, transition_class="glacier"),
        PrefixRule(prefix="v/", noncurrent_expire_days=10),
        PrefixRule(prefix="x/", bucket="another-bucket", expire_days=1),
    ]
    wanted = owned_rules(bucket, [], rules)
    assert len(wanted) == 3  # the last one is another bucket's
    await reconcile(s3, bucket, wanted)
    stored = {rule["ID"]: rule for rule in await current_rules(s3, bucket)}
    tmp = stored[rules[0].rule_id]
    assert tmp["Filter"] == {"Prefix": "tmp/"}
    assert tmp["Expiration"] == {"Days": 2}
    assert tmp["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    old = stored[rules[1].rule_id]
    assert old["Transitions"][0]["StorageClass"] == "GLACIER"
    assert stored[rules[2].rule_id]["NoncurrentVersionExpiration"]["NoncurrentDays"] == 10
    # The same rules get the same IDs: nothing to write again.
    assert await reconcile(s3, bucket, owned_rules(bucket, [], rules)) is False


async def test_a_gateway_with_manage_lifecycle_writes_its_rules(
    store_kind: str, s3: Any, s3_endpoint: str, bucket: str
) -> None:
    settings = gateway_settings(
        s3_endpoint,
        bucket,
        manage_lifecycle=True,
        expiry_days_allowed=[30],
        lifecycle_rules=[{"prefix": "tmp/", "expire_days": 5}],
    )
    gw = await start_gateway(settings)
    try:

        async def written() -> None:
            assert await ids(s3, bucket) == {
                expiry_rule_id(30),
                PrefixRule(prefix="tmp/", expire_days=5).rule_id,
            }

        await eventually(written)
        await upload(gw, "doomed", b"x", expire_days=30)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gw.port}") as channel:
            stub = storage_pb2_grpc.StorageServiceStub(channel)
            got = await stub.Stat(
                storage_pb2.StatRequest(key="doomed", include_tags=True), timeout=30
            )
    finally:
        await stop_gateway(gw)
    assert dict(got.object.tags) == {EXPIRY_TAG: "30"}
    if store_kind == "moto":
        pytest.skip("moto answers HEAD without S3's Expiration header: no expires_at to check")
    expires = got.object.expires_at.ToDatetime()
    written_at = got.object.last_modified.ToDatetime()
    assert 29 <= (expires - written_at).days <= 31  # S3 rounds up to the next midnight UTC
