"""A faster parser for the timestamps in S3's XML answers.

botocore parses every timestamp with dateutil (``botocore.utils.
parse_timestamp``): ~60 us each, so a ListParts page of 1000 parts (a direct
commit, QueryUploadStatus) or a ListObjects page of 1000 keys spends ~60 ms
on dates alone. S3 writes them in one ISO 8601 form (``2026-12-07T03:22:10.000Z``),
which ``datetime.fromisoformat`` reads in ~1 us; ``parse_timestamp`` takes
only that exact form (UTC, 0 to 6 digits of fraction) and hands anything
else to botocore's own parser, so every value parses to the same instant
botocore would give. It is set on the gateway's botocore session
(``use_for``), through botocore's documented ``set_parser_defaults``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from botocore.utils import parse_timestamp as botocore_parse_timestamp

_S3_ISO = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")


def parse_timestamp(value: Any) -> datetime:
    """``value`` as an aware datetime: S3's ISO 8601 form directly, anything
    else through botocore's parser."""
    if isinstance(value, str) and _S3_ISO.fullmatch(value):
        return datetime.fromisoformat(value)
    parsed: datetime = botocore_parse_timestamp(value)
    return parsed


def use_for(botocore_session: Any) -> None:
    """Make the clients that ``botocore_session`` creates parse timestamps
    with ``parse_timestamp``."""
    factory = botocore_session.get_component("response_parser_factory")
    factory.set_parser_defaults(timestamp_parser=parse_timestamp)


__all__ = ["parse_timestamp", "use_for"]
