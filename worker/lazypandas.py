"""pandas for pymilvus in a worker, loaded only if something uses it.

pymilvus imports pandas at module level (its ORM accepts DataFrames): 34 MB in every worker
process, which never hands it a DataFrame (workers build their requests by column,
:mod:`worker.milvus`). Before the worker imports pymilvus, :func:`install` puts stand-ins for
``pandas``, ``pandas.api`` and ``pandas.api.types`` in ``sys.modules``. Whatever pymilvus binds
at import stays a stand-in; any real use loads pandas and forwards to it:

- a function (``from pandas.api.types import is_scalar``) loads pandas when called;
- ``DataFrame``, ``Series`` and ``SparseDtype`` are stand-in classes: called or looked into,
  they load pandas; ``isinstance(x, pd.DataFrame)`` is False while pandas is not loaded (no
  object can be a DataFrame then) and pandas' own answer once it is;
- any other attribute loads pandas.

So nothing behaves differently; memory is saved for as long as nothing needs pandas.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

__all__ = ["install", "loaded"]

_MODULES = ("pandas", "pandas.api", "pandas.api.types")
_CLASSES = ("DataFrame", "Series", "SparseDtype")
_real: dict[str, ModuleType] = {}
_lock = threading.Lock()


def loaded() -> bool:
    """Whether the real pandas has been loaded through a stand-in."""
    return bool(_real)


def _load(name: str) -> ModuleType:
    with _lock:
        if not _real:
            stand_ins = {n: sys.modules.pop(n) for n in _MODULES if n in sys.modules}
            try:
                found = {n: importlib.import_module(n) for n in _MODULES}
            except BaseException:
                sys.modules.update(stand_ins)
                raise
            _real.update(found)
    return _real[name]


class _StandInClass(type):
    def __instancecheck__(cls, obj: object) -> bool:
        return bool(_real) and isinstance(obj, getattr(_real["pandas"], cls.__name__))

    def __subclasscheck__(cls, sub: type) -> bool:
        return bool(_real) and issubclass(sub, getattr(_real["pandas"], cls.__name__))

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return getattr(_load("pandas"), cls.__name__)(*args, **kwargs)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):  # typing and copy probe dunders: not a use of pandas
            raise AttributeError(name)
        return getattr(getattr(_load("pandas"), cls.__name__), name)


_STAND_IN_CLASSES = {name: _StandInClass(name, (), {}) for name in _CLASSES}


def _forwarder(module: str, name: str) -> Any:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return getattr(_load(module), name)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = name
    return forward


class _StandInModule(ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if not _real:
            if self.__name__ == "pandas" and name in _STAND_IN_CLASSES:
                return _STAND_IN_CLASSES[name]
            if self.__name__ == "pandas.api.types":
                return _forwarder(self.__name__, name)  # bound at import, called later
        return getattr(_load(self.__name__), name)


def install() -> bool:
    """Put the stand-ins in place, unless pandas is already loaded or not installed. Returns
    whether they were installed."""
    if "pandas" in sys.modules:
        return False
    spec = importlib.util.find_spec("pandas")
    if spec is None:
        return False
    modules = {}
    for name in _MODULES:
        module = _StandInModule(name)
        # Packages (so that submodules import), with a spec (so that find_spec answers).
        module.__path__ = []
        module.__spec__ = spec if name == "pandas" else importlib.machinery.ModuleSpec(name, None)
        modules[name] = module
    setattr(modules["pandas"], "api", modules["pandas.api"])  # noqa: B010 (as import would)
    setattr(modules["pandas.api"], "types", modules["pandas.api.types"])  # noqa: B010
    sys.modules.update(modules)
    return True
