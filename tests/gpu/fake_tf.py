"""A fake `tensorflow` module for the GPU configuration calls fitplan makes.

Records what was configured: logical-device memory limits, memory growth, and resets of
the allocator's statistics, in call order (`events`). Devices can be marked initialised,
as after TensorFlow's first op (then configuring them raises, as TensorFlow does).
"""

from __future__ import annotations

from types import SimpleNamespace


class FakeTF:
    __name__ = "fake_tensorflow"

    def __init__(self, gpus: int = 1, cc: tuple[int, int] | None = (8, 0), initialised=False):
        self.gpus = [SimpleNamespace(name=f"/physical_device:GPU:{i}") for i in range(gpus)]
        self.cc = cc
        self.devices_initialised = initialised
        self.limits: dict[str, int] = {}
        self.growth: dict[str, bool] = {}
        self.events: list[str] = []
        experimental = SimpleNamespace(
            set_memory_growth=self._growth,
            reset_memory_stats=self._reset,
            get_device_details=self._details,
        )
        self.config = SimpleNamespace(
            list_physical_devices=self._list,
            LogicalDeviceConfiguration=lambda memory_limit=None: SimpleNamespace(
                memory_limit=memory_limit
            ),
            set_logical_device_configuration=self._logical,
            experimental=experimental,
        )

    def _list(self, kind=None):
        return list(self.gpus) if kind in (None, "GPU") else []

    def _check(self):
        if self.devices_initialised:
            raise RuntimeError("Virtual devices cannot be modified after being initialized")

    def _logical(self, gpu, configs):
        self._check()
        self.limits[gpu.name] = configs[0].memory_limit

    def _growth(self, gpu, on):
        self._check()
        self.growth[gpu.name] = on

    def _reset(self, device):
        self.events.append(f"reset {device}")

    def _details(self, gpu):
        return {} if self.cc is None else {"compute_capability": self.cc}
