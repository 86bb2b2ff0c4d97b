"""The gateway's bucket lifecycle rules on S3, reconciled: the bucket's
configuration is read, the rules whose ID starts with the gateway's prefix
(``core.lifecycle.RULE_ID_PREFIX``) are replaced by the ones the settings
call for, every other rule is kept as it was, and the union is written back
(PutBucketLifecycleConfiguration replaces the whole configuration). Nothing
is written when the owned rules are already the ones called for: each owned
rule's ID names its content (the days of an expiry rule, a hash of a prefix
rule), so comparing IDs is enough."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from blobgate.server.core.lifecycle import RULE_ID_PREFIX, PrefixRule, expiry_rule_id
from blobgate.server.core.tags import EXPIRY_TAG
from blobgate.server.storage.s3.errors import s3_errors

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = logging.getLogger(__name__)

Rule = dict[str, Any]


def owned_rules(
    bucket: str, expiry_days: Sequence[int], prefixes: Sequence[PrefixRule]
) -> list[Rule]:
    """The rules the gateway owns in ``bucket``: one per allowed lifetime,
    filtered by the expiry tag, then the operator's prefix rules."""
    rules: list[Rule] = [
        {
            "ID": expiry_rule_id(days),
            "Status": "Enabled",
            "Filter": {"Tag": {"Key": EXPIRY_TAG, "Value": str(days)}},
            "Expiration": {"Days": days},
        }
        for days in sorted(set(expiry_days))
    ]
    for rule in prefixes:
        if rule.applies_to(bucket):
            rules.append(_prefix_rule(rule))
    return rules


def _prefix_rule(rule: PrefixRule) -> Rule:
    body: Rule = {"ID": rule.rule_id, "Status": "Enabled", "Filter": {"Prefix": rule.prefix}}
    if rule.expire_days is not None:
        body["Expiration"] = {"Days": rule.expire_days}
    if rule.noncurrent_expire_days is not None:
        body["NoncurrentVersionExpiration"] = {"NoncurrentDays": rule.noncurrent_expire_days}
    if rule.transition_days is not None and rule.transition_class is not None:
        body["Transitions"] = [
            {"Days": rule.transition_days, "StorageClass": rule.transition_class}
        ]
    if rule.abort_multipart_days is not None:
        body["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": rule.abort_multipart_days}
    return body


def is_owned(rule: Rule) -> bool:
    return str(rule.get("ID", "")).startswith(RULE_ID_PREFIX)


async def current_rules(client: S3Client, bucket: str) -> list[Rule]:
    """The bucket's lifecycle rules; none when it has no configuration."""
    with s3_errors(bucket=bucket):
        try:
            response = await client.get_bucket_lifecycle_configuration(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
                return []
            raise
    return [dict(rule) for rule in response.get("Rules", [])]


async def reconcile(client: S3Client, bucket: str, wanted: list[Rule]) -> bool:
    """Make the owned rules of ``bucket`` exactly ``wanted``, keeping the
    others; whether the configuration was written."""
    rules = await current_rules(client, bucket)
    foreign = [rule for rule in rules if not is_owned(rule)]
    have = sorted(str(rule.get("ID")) for rule in rules if is_owned(rule))
    if have == sorted(rule["ID"] for rule in wanted):
        return False
    union = foreign + wanted
    with s3_errors(bucket=bucket):
        if union:
            await client.put_bucket_lifecycle_configuration(
                Bucket=bucket,
                LifecycleConfiguration={"Rules": union},  # type: ignore[typeddict-item]
            )
        else:
            await client.delete_bucket_lifecycle(Bucket=bucket)
    log.info(
        "bucket %s: lifecycle rules reconciled (%d of the gateway's, %d others kept)",
        bucket,
        len(wanted),
        len(foreign),
    )
    return True
