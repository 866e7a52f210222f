"""A real Modbus TCP server on localhost holding a SunSpec map, for the modbus-sunspec tests.

The map is built here from the SunSpec model definitions (``json/model_<id>.json``: each
model's length and its points' offsets, written out independently of the gateway's table):
common 1, inverter 103, storage 124, battery 802 and meter 203.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

BASE = 40000
LENGTHS = {1: 66, 103: 50, 124: 24, 802: 62, 203: 105}

# point offsets from the model's ID register, as the model definitions give them
INVERTER = {"W": 14, "W_SF": 15, "DCW": 31, "DCW_SF": 32}
STORAGE = {"WChaMax": 2, "StorCtl_Mod": 5, "MinRsvPct": 7, "ChaState": 8, "OutWRte": 12, "InWRte": 13,
           "InOutWRte_WinTms": 14, "InOutWRte_RvrtTms": 15, "WChaMax_SF": 18, "MinRsvPct_SF": 21,
           "ChaState_SF": 22, "InOutWRte_SF": 25}
BATTERY = {"SoC": 11, "W": 47, "SoC_SF": 56, "W_SF": 63}
METER = {"W": 18, "WphA": 19, "WphB": 20, "WphC": 21, "W_SF": 22}


def u16(value: int) -> int:
    """A signed value as its register (two's complement)."""
    return value & 0xFFFF


def sunspec_map(models: tuple[int, ...] = (1, 103, 124, 802, 203)) -> tuple[list[int], dict[int, int]]:
    """The registers from ``BASE`` on ("SunS", the models, the end marker) and each model's address.
    Points this map does not set hold 0."""
    registers, where = [0x5375, 0x6E53], {}
    for model in models:
        where[model] = BASE + len(registers)
        registers += [model, LENGTHS[model]] + [0] * LENGTHS[model]
    registers += [0xFFFF, 0]
    return registers, where


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SunSpecServer:
    """A pymodbus TCP server in a thread of its own. ``set(model, point, value)`` changes the
    device's registers; ``on_read`` (when set) may change them before each read is answered;
    ``stop()`` and ``start()`` make the device disappear and return with the same registers."""

    def __init__(self, models: tuple[int, ...] = (1, 103, 124, 802, 203), base: int = BASE) -> None:
        self.registers, self.where = sunspec_map(models)
        self.base, self.port = base, free_port()
        self.on_read: Callable[[list[int], int], None] | None = None
        #: When set, answers each write (address, values): an ExcCodes member refuses it.
        self.on_write: Callable[[int, list[int]], ExcCodes | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._live: list[int] | None = None

    def address_of(self, model: int, offset: int) -> int:
        return self.where[model] - BASE + self.base + offset

    def set(self, model: int, offset: int, value: int) -> None:
        """Set a register of ``model`` (nothing when the map lacks the model)."""
        if model not in self.where:
            return
        index = self.where[model] - BASE + offset
        self.registers[index] = u16(value)
        if self._live is not None:
            self._live[index] = u16(value)

    def get(self, model: int, offset: int) -> int:
        index = self.where[model] - BASE + offset
        return (self._live if self._live is not None else self.registers)[index]

    async def _action(self, func_code, start_address, address, count, registers, values) -> ExcCodes | None:
        if values is None and self.on_read is not None:
            self.on_read(registers, start_address)
        if values is not None and self.on_write is not None:
            return self.on_write(address, list(values))
        return None

    def start(self) -> SunSpecServer:
        ready = threading.Event()

        async def serve() -> None:
            device = SimDevice(0, simdata=SimData(self.base, values=list(self.registers), datatype=DataType.REGISTERS),
                               action=self._action)
            self._server = ModbusTcpServer(device, address=("127.0.0.1", self.port))
            self._live = self._server.context.devices[0].block["x"][2]
            await self._server.serve_forever(background=True)
            ready.set()
            await self._server.serving

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(serve())
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the Modbus server did not start"
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self.registers = list(self._live[: len(self.registers)])  # what the device holds survives a restart
        asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop).result(10)
        self._thread.join(10)
        self._server = self._live = None
