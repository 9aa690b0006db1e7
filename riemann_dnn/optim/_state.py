"""The per-parameter state of a :class:`~riemann_dnn.optim.RiemannianOptimizer`: a dict
that counts its changes, so that a prepared kernel laid out over the state's tensors knows
when they were replaced (``optimizer.state.clear()``, a new ``momentum_buffer``, a loaded
state dict) without a per-step look at every entry."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

__all__: list[str] = []


class _Entry(dict):
    """One parameter's state: a dict that bumps its owner's :attr:`TrackedState.version`
    on every change."""

    __slots__ = ("_owner",)

    def __init__(self, owner: TrackedState, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._owner = owner

    def _changed(self) -> None:
        self._owner.version += 1

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self._changed()

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self._changed()

    def clear(self) -> None:
        super().clear()
        self._changed()

    def pop(self, *args):
        self._changed()
        return super().pop(*args)

    def popitem(self):
        self._changed()
        return super().popitem()

    def setdefault(self, key, default=None):
        if key not in self:
            self._changed()
        return super().setdefault(key, default)

    def update(self, *args, **kwargs) -> None:
        super().update(*args, **kwargs)
        self._changed()

    def __ior__(self, other):
        self.update(other)
        return self

    def __reduce__(self):  # pickled (and deep-copied) as a plain dict
        return (dict, (dict(self),))


class TrackedState(defaultdict):
    """``Optimizer.state`` (a ``defaultdict(dict)``) whose :attr:`version` changes whenever
    an entry, or an entry's key, is set, replaced or removed. In-place changes of the
    tensors themselves are not changes of the state."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(dict)
        self.version = 0
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __missing__(self, key):
        entry = _Entry(self)
        super().__setitem__(key, entry)
        self.version += 1
        return entry

    def __setitem__(self, key, value) -> None:
        if not isinstance(value, _Entry) or value._owner is not self:
            value = _Entry(self, value)
        super().__setitem__(key, value)
        self.version += 1

    def __delitem__(self, key) -> None:
        super().__delitem__(key)
        self.version += 1

    def clear(self) -> None:
        super().clear()
        self.version += 1

    def pop(self, *args):
        self.version += 1
        return super().pop(*args)

    def popitem(self):
        self.version += 1
        return super().popitem()

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = {} if default is None else default
        return self[key]

    def update(self, *args, **kwargs) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other):
        self.update(other)
        return self

    def __reduce__(self):  # pickled (and deep-copied) as a plain defaultdict(dict)
        return (_plain, (list((k, dict(v)) for k, v in self.items()),))


def _plain(items: list) -> defaultdict:
    state: defaultdict = defaultdict(dict)
    state.update(items)
    return state
