"""Triton kernels of the fused char-LSTM (installed as charfast.kernels).

This folder sits at the top of the checkout, so wherever the checkout root is on sys.path
(`python -m pytest`, `python -c`, a notebook or interpreter started there) it is also found
as a top-level package named `kernels`: a name that belongs to another distribution
(Hugging Face's `kernels`, which transformers imports). Imported under that name, the folder
steps aside: the import resolves to the environment's own `kernels`, or fails as it would
anywhere else.
"""

if __name__ == "kernels":
    import importlib.machinery
    import importlib.util
    import os
    import sys

    def _environment_kernels_spec():
        """The spec of the `kernels` that the environment would import without the checkout root."""
        this_file = os.path.realpath(__file__)
        checkout_root = os.path.dirname(os.path.dirname(this_file))
        other_entries = [
            entry for entry in sys.path if isinstance(entry, str) and os.path.realpath(entry or ".") != checkout_root
        ]
        for finder in sys.meta_path:
            if finder is importlib.machinery.PathFinder:
                spec = finder.find_spec("kernels", other_entries)
            elif hasattr(finder, "find_spec"):
                spec = finder.find_spec("kernels", None)
            else:
                continue
            if spec is not None and (spec.origin is None or os.path.realpath(spec.origin) != this_file):
                return spec
        return None

    _spec = _environment_kernels_spec()
    if _spec is None:
        raise ModuleNotFoundError("No module named 'kernels'", name="kernels")
    _module = importlib.util.module_from_spec(_spec)
    # The import statement returns what sys.modules holds once this file has run.
    sys.modules["kernels"] = _module
    _spec.loader.exec_module(_module)
