"""The optional parts of embedq a command needs, checked before anything of them is imported.

``pip install embedq`` is the producer side only; the worker side, the dashboard and the local
development servers are extras. A command whose extra is missing says which one to install
instead of failing with an ImportError deep inside a library.
"""

from __future__ import annotations

from importlib.util import find_spec

from embedq.config.errors import ConfigError

__all__ = ["EXTRAS", "MissingExtraError", "require"]

#: The import names each extra brings (one missing is enough to need the extra).
EXTRAS: dict[str, tuple[str, ...]] = {
    "worker": ("model2vec", "tokenizers", "semchunk", "numpy", "pymilvus"),
    "monitor": ("flower", "prometheus_client"),
    "local": ("milvus_lite",),
}


class MissingExtraError(ConfigError):
    """A command needs an optional part of embedq that is not installed."""


def require(command: str, *extras: str) -> None:
    """Raise :class:`MissingExtraError` naming every extra ``command`` needs and lacks."""
    missing = [extra for extra in extras if any(find_spec(name) is None for name in EXTRAS[extra])]
    if missing:
        names = " and ".join(missing)
        plural = "s" if len(missing) > 1 else ""
        raise MissingExtraError(
            f"`embedq {command}` needs embedq's {names} extra{plural}, which this installation "
            f"lacks: pip install 'embedq[{','.join(missing)}]'"
        )
