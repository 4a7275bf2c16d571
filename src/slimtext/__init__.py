"""slimtext: train, shrink and compare compact text classifiers, and serve the result.

The Python API (docs/api.md) is imported on first use, so `import slimtext` stays cheap (no torch):
`slimtext.train`, `slimtext.distill`, `slimtext.load`, `slimtext.evaluate`, `slimtext.Run`,
`slimtext.datasets`.

`slimtext.train` is also the name of the training-pieces package (slimtext/train/: loop, losses,
...). Python stores a subpackage as an attribute of its parent, so that attribute is the package;
the package object is made callable here, and calling it is `slimtext.api.train(**config)`. Both
`slimtext.train(data=...)` and `from slimtext.train.loop import fit` work.
"""

from __future__ import annotations

import sys
import types

__version__ = "0.1.0"

_API = ("distill", "load", "evaluate", "Run")
__all__ = ["__version__", "train", *_API, "datasets"]


class _TrainPackage(types.ModuleType):
    """slimtext/train/, callable as the API's `train(**config) -> Run`."""

    def __call__(self, *args, **kwargs):
        import slimtext.api  # noqa: F401, PLC0415

        return sys.modules["slimtext.api"].train(*args, **kwargs)


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        if name == "train" and type(value) is types.ModuleType:  # the import system binding slimtext/train/
            value.__class__ = _TrainPackage
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in _API:
        import slimtext.api  # noqa: F401, PLC0415  (the package is the API facade, layer 8)

        return getattr(sys.modules["slimtext.api"], name)
    if name == "train":
        import slimtext.train  # noqa: F401, PLC0415  (cheap: its __init__ imports nothing)

        return sys.modules["slimtext.train"]
    if name == "datasets":
        import slimtext.datasets  # noqa: F401, PLC0415

        return sys.modules["slimtext.datasets"]
    raise AttributeError(f"module 'slimtext' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
