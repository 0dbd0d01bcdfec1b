"""Name rules shared by settings and the message contract, and the marker embedq's Milvus Lite
server puts in its version."""

from __future__ import annotations

import re

__all__ = ["COLLECTION_NAME", "COLLECTION_RULE", "MODEL_NAME", "SERIALIZED", "model_name"]

#: What Milvus accepts as a collection name.
COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
COLLECTION_RULE = "use a letter or _ followed by letters, digits or _ (at most 255 characters)"

#: Suffix of the version embedq's Milvus Lite server reports (embedq/stack/lite_server.py): it
#: writes each call to its log before answering, so workers need not flush after writing.
SERIALIZED = "+embedq-serialized-writes"

#: Model names end up in queue names and collection properties.
MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def model_name(value: object) -> str:
    """A checked model name, in lower case: names are case-insensitive."""
    if not isinstance(value, str) or not MODEL_NAME.match(value.strip()):
        raise ValueError(f"{value!r} is not a valid model name; use 1-64 letters, digits, - or _")
    return value.strip().lower()
