"""The export pipeline: torch -> ONNX (exporter strategies) -> verified simplification -> fp16 -> artifacts.

The package is also the Python entry point: `deploykit.export(model, inputs=...)` calls deploykit.api.export
(a package cannot be shadowed by a function of the same name, so the package itself is callable).
"""

import sys as _sys
import types as _types


class _CallablePackage(_types.ModuleType):
    def __call__(self, model, inputs, **kwargs):
        from deploykit.api import export

        return export(model, inputs, **kwargs)

    @property
    def __doc__(self):  # help(deploykit.export) shows the function's documentation
        from deploykit.api import export

        return export.__doc__


_sys.modules[__name__].__class__ = _CallablePackage
