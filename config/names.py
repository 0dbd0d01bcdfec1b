"""Name rules shared by settings and the message contract."""

from __future__ import annotations

import re

__all__ = ["COLLECTION_NAME", "COLLECTION_RULE", "MODEL_NAME"]

#: What Milvus accepts as a collection name.
COLLECTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
COLLECTION_RULE = "use a letter or _ followed by letters, digits or _ (at most 255 characters)"

#: Model names end up in queue names and collection properties.
MODEL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
