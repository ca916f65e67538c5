"""The one result protocol every geoaudit result type follows.

A result is a ``@dataclass(frozen=True)`` that inherits :class:`Result` and

- holds only immutable values: tuples, :func:`frozen_mapping` for dicts and
  :class:`FrozenFrame` for tables (``result.groups`` returns a fresh DataFrame each time);
- gives ``to_dict()`` (JSON-safe Python scalars, lists and dicts; NaN/inf become None);
- gives ``summary() -> str`` (plain text) and ``_repr_html_`` (notebooks), both from it;
- names its statistics as statsmodels and scipy do (``pvalue``, ``fvalue``, ``bse``,
  ``statistic``, ``df``); older names stay one release as :func:`deprecated_alias`.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from html import escape
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

__all__ = ["Result", "json_safe", "frozen_mapping", "FrozenFrame", "deprecated_alias"]


def json_safe(value: Any) -> Any:
    """``value`` as JSON-safe Python data: floats (None for NaN/inf), ints, bools, str, lists, dicts.

    Parameters
    ----------
    value : object
        Scalars (Python or numpy), sequences, mappings, numpy arrays, pandas objects,
        :class:`FrozenFrame`, or anything with ``to_dict()``.

    Returns
    -------
    object
        The same data built from JSON types only.
    """
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, FrozenFrame):
        return value.records()
    if hasattr(value, "to_dict") and not isinstance(value, Mapping):
        try:
            import pandas as pd

            if isinstance(value, pd.DataFrame):
                return [json_safe(r) for r in value.to_dict("records")]
            if isinstance(value, pd.Series):
                return json_safe(value.to_dict())
        except ImportError:  # pragma: no cover - pandas is a dependency
            pass
        return json_safe(value.to_dict())
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    return str(value)


def frozen_mapping(d: Mapping | None) -> Mapping:
    """A read-only view of a copy of ``d`` (nested dicts frozen too, lists become tuples)."""
    def freeze(v):
        if isinstance(v, Mapping):
            return MappingProxyType({k: freeze(x) for k, x in v.items()})
        if isinstance(v, list):
            return tuple(freeze(x) for x in v)
        return v

    return freeze(dict(d or {}))


class FrozenFrame:
    """An immutable table: the rows of a DataFrame, handed out as a fresh DataFrame on demand.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table to hold; it is copied, so later changes to ``frame`` do not reach the result.
    """

    __slots__ = ("_columns", "_data", "_dtypes")

    def __init__(self, frame):
        import pandas as pd

        frame = pd.DataFrame(frame)
        object.__setattr__(self, "_columns", tuple(frame.columns))
        object.__setattr__(self, "_dtypes", tuple(str(t) for t in frame.dtypes))
        arrays = []
        for c in frame.columns:
            a = frame[c].to_numpy(copy=True)
            a.setflags(write=False)
            arrays.append(a)
        object.__setattr__(self, "_data", tuple(arrays))

    def __setattr__(self, name, value):
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def to_frame(self):
        """A new, writable pandas DataFrame with the table's rows."""
        import pandas as pd

        return pd.DataFrame({c: a.copy() for c, a in zip(self._columns, self._data)},
                            columns=list(self._columns))

    def records(self) -> list[dict]:
        """The rows as JSON-safe dicts."""
        return json_safe(self.to_frame())

    def __len__(self) -> int:
        return len(self._data[0]) if self._data else 0

    def __eq__(self, other):
        if not isinstance(other, FrozenFrame):
            return NotImplemented
        return self.to_frame().equals(other.to_frame())

    def __hash__(self):
        return hash((self._columns, len(self)))

    def __repr__(self):
        return f"FrozenFrame({len(self)} rows x {len(self._columns)} columns)"


class Result:
    """Base of geoaudit's result types (use with ``@dataclass(frozen=True)``).

    Subclasses implement :meth:`summary`; :meth:`to_dict` defaults to the dataclass fields
    made JSON-safe, and ``_repr_html_`` renders the summary.
    """

    def to_dict(self) -> dict:
        """The result as JSON-safe Python data (floats, ints, bools, str, lists, dicts)."""
        return {f.name: json_safe(getattr(self, f.name))
                for f in dataclasses.fields(self) if not f.name.startswith("_")}

    def summary(self) -> str:  # pragma: no cover - every subclass overrides it
        """A short plain-text report of the result."""
        raise NotImplementedError

    def _repr_html_(self) -> str:
        return f"<pre>{escape(self.summary())}</pre>"

    def __str__(self) -> str:
        return self.summary()


def deprecated_alias(new: str, old: str, *, since: str = "0.2") -> property:
    """A read-only property ``old`` that returns ``self.<new>`` with a DeprecationWarning.

    Kept for one release after a rename, e.g. ``p_value = deprecated_alias("pvalue", "p_value")``.
    """
    def getter(self):
        warnings.warn(f"{type(self).__name__}.{old} is deprecated since geoaudit {since}; "
                      f"use .{new}", DeprecationWarning, stacklevel=2)
        return getattr(self, new)

    return property(getter, doc=f"Deprecated alias of :attr:`{new}`.")
