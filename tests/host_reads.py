"""HostReads: a probe of what reads tensor values back to the host (on a GPU each such read
waits for the device), for tests that run on the CPU."""

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class HostReads(TorchDispatchMode):
    """Records what reads a tensor's values back to the host (on a GPU each read waits for
    the device): the ops that do (seen by this dispatch mode outside custom ops) and the
    Python calls that do (seen anywhere, also inside the charfast ops, by wrapping them)."""

    OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten._unique2", "aten.unique_dim", "aten.masked_select"}
    METHODS = ("tolist", "item", "__bool__", "__int__", "__float__", "__index__", "nonzero", "unique")

    def __init__(self, monkeypatch):
        super().__init__()
        self.seen: list[str] = []
        for name in self.METHODS:
            original = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._recording(f"Tensor.{name}", original))
        for name in ("nonzero", "unique", "masked_select"):
            monkeypatch.setattr(torch, name, self._recording(f"torch.{name}", getattr(torch, name)))

    def _recording(self, what, original):
        def call(*args, **kwargs):
            if self.active:
                self.seen.append(what)
            return original(*args, **kwargs)

        return call

    active = False

    def __enter__(self):
        self.seen.clear()
        self.active = True
        return super().__enter__()

    def __exit__(self, *exc):
        self.active = False
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func.overloadpacket) in self.OPS:
            self.seen.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))
