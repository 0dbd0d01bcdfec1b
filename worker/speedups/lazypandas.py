"""pandas for pymilvus in a worker, loaded only if something uses it.

pymilvus imports pandas at module level (its ORM accepts DataFrames): 34 MB in every worker
process, which never hands it a DataFrame (workers send lists of rows or, by default, requests
built by column, :mod:`embedq.worker.speedups.upsert`). Before the worker imports pymilvus,
:func:`install` puts stand-ins for ``pandas``, ``pandas.api`` and ``pandas.api.types`` in
``sys.modules``. ``EMBEDQ_WORKER__LAZY_PANDAS=false`` turns this off. Whatever pymilvus binds
at import stays a stand-in; any real use loads pandas and forwards to it:

- a function pymilvus imports (``from pandas.api.types import is_scalar``) loads pandas when
  called;
- ``DataFrame``, ``Series`` and ``SparseDtype`` are stand-in classes: called or looked into,
  they load pandas; ``isinstance(x, pd.DataFrame)`` is False while pandas is not loaded (no
  object can be a DataFrame then) and pandas' own answer once it is; pickled, they are
  ``pandas.DataFrame`` and so on;
- any other attribute (``__version__`` included), and importing any other pandas module
  (``import pandas.core.frame``), loads pandas.

Memory is saved for as long as nothing needs pandas.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any

__all__ = ["install", "loaded"]

_MODULES = ("pandas", "pandas.api", "pandas.api.types")
_CLASSES = ("DataFrame", "Series", "SparseDtype")
# Functions of pandas.api.types that may be imported from a stand-in (pymilvus's and kin).
_FUNCTIONS = frozenset(
    {"infer_dtype", "is_array_like", "is_bool", "is_dict_like", "is_float", "is_integer"}
    | {"is_list_like", "is_number", "is_scalar"}
)
# Dunders asked of modules by the import system, typing, pickle or inspect: no use of pandas.
_PROBED = frozenset({"__path__", "__spec__", "__loader__", "__file__", "__wrapped__"})
_real: dict[str, ModuleType] = {}
_lock = threading.RLock()
_loading = threading.local()


def loaded() -> bool:
    """Whether the real pandas has been loaded through a stand-in."""
    return bool(_real)


def _load(name: str) -> ModuleType:
    with _lock:
        if not _real:
            stand_ins = {n: sys.modules.pop(n) for n in _MODULES if n in sys.modules}
            _loading.active = True
            try:
                found = {n: importlib.import_module(n) for n in _MODULES}
            except BaseException:
                sys.modules.update(stand_ins)
                raise
            finally:
                _loading.active = False
            _real.update(found)
    return _real[name]


class _Present(importlib.abc.Loader):
    """Hands the import system a module that loading pandas has already imported."""

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return self._module

    def exec_module(self, module: ModuleType) -> None:
        pass


class _RealPandasFinder(importlib.abc.MetaPathFinder):
    """Importing a pandas module the stand-ins do not cover loads the real pandas first."""

    def find_spec(
        self, fullname: str, path: Any = None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if (
            _real
            or getattr(_loading, "active", False)  # pandas importing its own modules
            or not fullname.startswith("pandas.")
            or fullname in _MODULES
        ):
            return None
        _load("pandas")
        module = sys.modules.get(fullname)
        if module is not None:
            return importlib.util.spec_from_loader(fullname, _Present(module))
        return importlib.util.find_spec(fullname)


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


# Named as pandas names them, so that pickle refers to pandas' classes.
_STAND_IN_CLASSES = {
    name: _StandInClass(name, (), {"__module__": "pandas", "__qualname__": name})
    for name in _CLASSES
}


def _forwarder(module: str, name: str) -> Any:
    def forward(*args: Any, **kwargs: Any) -> Any:
        return getattr(_load(module), name)(*args, **kwargs)

    forward.__name__ = forward.__qualname__ = name
    return forward


class _StandInModule(ModuleType):
    def __getattr__(self, name: str) -> Any:
        if not _real:
            if name in _PROBED:
                raise AttributeError(name)
            if self.__name__ == "pandas" and name in _STAND_IN_CLASSES:
                return _STAND_IN_CLASSES[name]
            if self.__name__ == "pandas.api.types" and name in _FUNCTIONS:
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
    sys.meta_path.insert(0, _RealPandasFinder())
    return True
