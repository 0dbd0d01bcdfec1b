"""The worker's pandas stand-ins: pymilvus imports and works without loading pandas, and any
real use of pandas loads it and gets pandas' own answers. Each case runs in a fresh
interpreter, since this one may have loaded pandas already."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.support.environment import ROOT


def _run(code: str) -> None:
    prelude = (
        "import sys\nfrom embedq.worker.speedups import lazypandas\nassert lazypandas.install()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_pymilvus_and_the_workers_store_import_without_pandas() -> None:
    _run(
        """
        import pymilvus
        from pymilvus import MilvusClient
        from embedq.worker import milvus, application
        import pandas as pd
        assert not lazypandas.loaded() and "pandas.core" not in sys.modules
        # No object can be a DataFrame while pandas is not loaded: pymilvus's checks say so.
        from pymilvus.orm.schema import is_valid_insert_data
        assert is_valid_insert_data([{"id": 1}]) and not isinstance([], pd.DataFrame)
        assert not lazypandas.loaded()
        """
    )


def test_a_real_use_loads_pandas_and_gets_its_answers() -> None:
    _run(
        """
        from pymilvus.orm.types import infer_dtype_bydata
        from pymilvus import DataType
        import pandas as stand_in
        # A function pymilvus bound at import loads pandas when called.
        assert infer_dtype_bydata([1.0, 2.0]) == DataType.FLOAT_VECTOR
        assert lazypandas.loaded() and "pandas.core" in sys.modules
        real = sys.modules["pandas"]
        assert real is not stand_in and real.DataFrame.__module__.startswith("pandas")
        frame = real.DataFrame({"a": [1]})
        assert isinstance(frame, stand_in.DataFrame) and stand_in.DataFrame is real.DataFrame
        """
    )


def test_stand_in_classes_load_pandas_when_called() -> None:
    _run(
        """
        import pandas as pd
        from pymilvus.orm.schema import is_valid_insert_data
        DataFrame = pd.DataFrame  # bound while pandas is not loaded, as pymilvus does
        frame = DataFrame({"a": [1, 2]})
        assert lazypandas.loaded() and list(frame["a"]) == [1, 2]
        assert isinstance(frame, DataFrame) and is_valid_insert_data(frame)
        """
    )


def test_install_leaves_a_loaded_pandas_alone() -> None:
    code = (
        "import pandas\n"
        "from embedq.worker.speedups import lazypandas\n"
        "assert not lazypandas.install()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_other_pandas_modules_and_names_load_pandas() -> None:
    _run(
        """
        import pickle
        import pandas as stand_in
        from pandas.core.frame import DataFrame  # a module the stand-ins do not cover
        assert lazypandas.loaded() and DataFrame is sys.modules["pandas"].DataFrame
        assert stand_in.__version__ == sys.modules["pandas"].__version__
        """
    )
    _run(
        """
        import pickle
        import pandas as pd
        # Pickled, a stand-in class is pandas' own (pickle looks it up by name).
        assert b"pandas" in pickle.dumps(pd.DataFrame) and not lazypandas.loaded()
        try:
            from pandas.api.types import no_such_function  # noqa: F401
        except ImportError:
            pass
        else:
            raise AssertionError("a missing name was imported")
        from pandas.api.types import CategoricalDtype
        assert isinstance(CategoricalDtype(), CategoricalDtype)
        """
    )
