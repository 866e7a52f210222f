"""Which readings the broker has acknowledged, and which must be sent (again).

Telemetry is delivered at least once: a reading counts as delivered when the broker
acknowledges its QoS 1 publish. Per device the tracker keeps a *watermark* (every reading
at or before it is acknowledged) and, above it, the state of each reading it was handed.
Payloads are held in memory only in a bounded queue; when the queue is full the oldest
payload is dropped from memory, the reading stays in the edge store, and the device is
marked for a replay from the store starting at that reading. The watermark never passes a
reading that is not acknowledged, and it is saved so a restarted gateway replays what the
previous run made but never got acknowledged.
"""

from __future__ import annotations

import json
import logging
import os
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

log = logging.getLogger(__name__)


class State(Enum):
    QUEUED = "queued"  # payload in memory, not yet handed to the client
    SENT = "sent"  # handed to the client, waiting for the broker's acknowledgement
    DROPPED = "dropped"  # payload dropped from memory; only the edge store has it
    ACKED = "acked"


@dataclass
class _Device:
    watermark: int | None = None  # microseconds since the epoch
    open: dict[int, State] = field(default_factory=dict)  # readings above the watermark
    replay_from: int | None = None  # store readings at or after this may still need sending


@dataclass(frozen=True)
class Item:
    device_id: str
    ts_us: int
    payload: str


class Delivery:
    """Not thread-safe by itself: the link calls it from its one sender thread, under its lock."""

    def __init__(self, queue_size: int, watermarks: dict[str, int | None] | None = None, can_replay: bool = True) -> None:
        self.queue: deque[Item] = deque()
        self.queue_size = queue_size
        self.can_replay = can_replay
        self.devices: dict[str, _Device] = {}
        self.mids: dict[int, tuple[str, int]] = {}
        for device_id, mark in (watermarks or {}).items():
            if mark is not None:
                # A previous run may have made readings it never got acknowledged: look them up.
                self.devices[device_id] = _Device(mark, {}, mark + 1 if can_replay else None)

    def _device(self, device_id: str) -> _Device:
        return self.devices.setdefault(device_id, _Device())

    def enqueue(self, item: Item) -> None:
        self._device(item.device_id).open[item.ts_us] = State.QUEUED
        self.queue.append(item)
        while len(self.queue) > self.queue_size:
            self._drop(self.queue.popleft())

    def _drop(self, item: Item) -> None:
        device = self._device(item.device_id)
        if not self.can_replay:
            log.warning("%s: reading %d dropped from the MQTT queue and there is no edge store to resend it from", item.device_id, item.ts_us)
            device.open.pop(item.ts_us, None)
            return
        device.open[item.ts_us] = State.DROPPED
        device.replay_from = item.ts_us if device.replay_from is None else min(device.replay_from, item.ts_us)

    def next_queued(self) -> Item | None:
        return self.queue.popleft() if self.queue else None

    def requeue_front(self, item: Item) -> None:
        self.queue.appendleft(item)

    def sent(self, item: Item, mid: int) -> None:
        self._device(item.device_id).open[item.ts_us] = State.SENT
        self.mids[mid] = (item.device_id, item.ts_us)

    def acked(self, mid: int) -> None:
        key = self.mids.pop(mid, None)
        if key is None:
            return  # a status or discovery publish
        device = self._device(key[0])
        if key[1] in device.open:
            device.open[key[1]] = State.ACKED
        self._advance(device)

    def _advance(self, device: _Device) -> None:
        for ts in sorted(device.open):
            if device.replay_from is not None and ts >= device.replay_from:
                break  # the store may hold unsent readings from here on
            if device.open[ts] is not State.ACKED:
                break
            device.watermark = ts
            del device.open[ts]

    def needs_send(self, device_id: str, ts_us: int) -> bool:
        """During a replay: is this stored reading one nobody has sent or is sending?"""
        device = self._device(device_id)
        if device.watermark is not None and ts_us <= device.watermark:
            return False
        return device.open.get(ts_us) in (None, State.DROPPED)

    def replay_done(self, device_id: str, upto_us: int | None) -> None:
        """The store was read up to ``upto_us`` (inclusive); None means to its end."""
        device = self._device(device_id)
        device.replay_from = None if upto_us is None else upto_us + 1
        self._advance(device)

    def replays_due(self) -> list[tuple[str, int]]:
        return [(d, dev.replay_from) for d, dev in self.devices.items() if dev.replay_from is not None]

    def in_flight(self) -> int:
        return len(self.mids)

    def forget_in_flight(self) -> None:
        """After a restart of the client, old message ids mean nothing: replay what they carried."""
        for device_id, ts in self.mids.values():
            self._drop(Item(device_id, ts, ""))
        self.mids.clear()

    def settled(self) -> bool:
        return not self.queue and not self.mids and not self.replays_due()

    def watermarks(self) -> dict[str, int | None]:
        """What to save: a device never acknowledged yet counts from just before its first reading,
        so a restart resends that reading and everything after it from the store."""
        marks = {}
        for device_id, dev in self.devices.items():
            if dev.watermark is None and dev.open:
                marks[device_id] = min(dev.open) - 1
            else:
                marks[device_id] = dev.watermark
        return marks


class WatermarkFile:
    """The watermarks as JSON, replaced atomically (like the gateway's battery state)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._last: dict | None = None

    def load(self) -> dict[str, int | None]:
        try:
            data = json.loads(self.path.read_text())
            return {str(k): (int(v) if v is not None else None) for k, v in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as error:
            log.warning("ignoring unreadable MQTT watermarks %s (%s); only new readings will be published", self.path, error)
            return {}

    def save(self, marks: dict[str, int | None]) -> None:
        if marks == self._last:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(marks, sort_keys=True))
        os.replace(tmp, self.path)
        self._last = dict(marks)
