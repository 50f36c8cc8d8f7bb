"""A simulated SCPI electronic load on the far end of a pty, for the tests of :mod:`hil.bench.scpi_load`.

:meth:`ScpiLoadSim.open_pty` creates an ``os.openpty()`` pair and returns the slave path; the driver
opens it with pyserial (``hal.buses.open_serial``) exactly as it opens ``/dev/ttyUSB0`` on the rig.
(pyserial's ``loop://`` would echo the driver's own commands back, so it cannot play an instrument.)
A thread reads ``\\n``-terminated lines on the master side and answers as a load does: the commands
listed in :mod:`hil.bench.scpi_load`, long or short forms, any case; an unknown command or a bad
parameter puts an SCPI-1999 error in the queue (-113 Undefined header, -104 Data type error, -109
Missing parameter, -222 Data out of range; -350 Queue overflow past :data:`ERROR_QUEUE_SIZE`).

The input draws the setpoint while on (``voltage_v`` is what the "grid" applies); measurements are
answered in NR3 form (``1.60000E+01``).

Observations: :attr:`received` (every line, in order), :attr:`raw` (every byte).
Fault injection: :attr:`silent` (hears and acts, answers nothing), :meth:`garbage` (answer a query
with given bytes instead), :meth:`push_error` (an entry in the error queue), :meth:`delay_next_answer`
(the next answer comes late), :attr:`nan_readings` (measurements answer 9.91E37).
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time

from hal.sim.pty import PtyPeer, open_raw_pty

ERROR_QUEUE_SIZE = 10
DEFAULT_IDN = "EVSE-FIRMWARE,SIM-LOAD-1,0001,1.0"
_POLL_S = 0.005
# Long SCPI mnemonics -> the short forms the command table uses.
_SHORT = {
    "SYSTEM": "SYST",
    "ERROR": "ERR",
    "REMOTE": "REM",
    "CURRENT": "CURR",
    "INPUT": "INP",
    "MEASURE": "MEAS",
    "VOLTAGE": "VOLT",
    "POWER": "POW",
}


class ScpiLoadSim(PtyPeer):
    _thread_name = "scpi-load-sim"

    """The instrument's behaviour, speaking line-based SCPI on ``fd`` (a pty master)."""

    def __init__(
        self,
        fd: int,
        *,
        keep_fd: int | None = None,
        idn: str = DEFAULT_IDN,
        max_current_a: float = 40.0,
        voltage_v: float = 230.0,
    ) -> None:
        super().__init__(fd, keep_fd)
        self.idn = idn
        self.max_current_a = max_current_a
        self.voltage_v = voltage_v
        self._lock = threading.RLock()
        self._pending = bytearray()
        # --- instrument state
        self.remote = False
        self.input_on = False
        self.current_setpoint_a = 0.0
        self.errors: collections.deque[tuple[int, str]] = collections.deque()
        # --- fault knobs
        self.silent = False
        self.nan_readings = False
        self._garbage: dict[str | None, bytes] = {}
        self._delay_next_s = 0.0
        # --- observations
        self.received: list[str] = []
        self.raw = bytearray()

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def open_pty(cls, **kwargs: object) -> tuple[ScpiLoadSim, str]:
        master, slave, path = open_raw_pty()
        sim = cls(master, keep_fd=slave, **kwargs)  # type: ignore[arg-type]
        sim.start()
        return sim, path

    # ------------------------------------------------------------------ fault injection
    def garbage(self, data: bytes | None, query: str | None = None) -> None:
        """Answer ``query`` (every query when None) with ``data`` instead of the real answer; ``None``
        ends it. ``data`` is sent as is: leave out the ``\\n`` to send a line that never ends."""
        with self._lock:
            if data is None:
                self._garbage.pop(query, None)
            else:
                self._garbage[query] = data

    def push_error(self, code: int, text: str) -> None:
        with self._lock:
            self._queue_error(code, text)

    def delay_next_answer(self, seconds: float) -> None:
        with self._lock:
            self._delay_next_s = seconds

    @property
    def commands(self) -> list[str]:
        """What was received, without the ``SYST:ERR?`` checks in between."""
        with self._lock:
            return [line for line in self.received if line != "SYST:ERR?"]

    # ------------------------------------------------------------------ the instrument
    def measured_current_a(self) -> float:
        return self.current_setpoint_a if self.input_on else 0.0

    def _queue_error(self, code: int, text: str) -> None:
        if len(self.errors) >= ERROR_QUEUE_SIZE:
            self.errors[-1] = (-350, "Queue overflow")
        else:
            self.errors.append((code, text))

    def handle(self, line: str) -> str | None:
        """One command line -> its answer (None for commands without one)."""
        header, _, argument = line.strip().partition(" ")
        argument = argument.strip()
        query = header.endswith("?")
        mnemonics = [_SHORT.get(m, m) for m in header.upper().lstrip(":").rstrip("?").split(":")]
        key = ":".join(mnemonics) + ("?" if query else "")
        if key == "*IDN?":
            return self.idn
        if key == "*RST":
            self.input_on, self.current_setpoint_a = False, 0.0
            return None
        if key == "*CLS":
            self.errors.clear()
            return None
        if key == "SYST:ERR?" or key == "SYST:ERR:NEXT?":
            code, text = self.errors.popleft() if self.errors else (0, "No error")
            return f'{code:+d},"{text}"' if code else '0,"No error"'
        if key == "SYST:REM":
            self.remote = True
            return None
        if key == "CURR":
            self._set_current(argument)
            return None
        if key == "INP":
            state = argument.upper()
            if state in ("ON", "1"):
                self.input_on = True
            elif state in ("OFF", "0"):
                self.input_on = False
            elif not state:
                self._queue_error(-109, "Missing parameter")
            else:
                self._queue_error(-104, "Data type error")
            return None
        if key in ("MEAS:CURR?", "MEAS:VOLT?", "MEAS:POW?"):
            if self.nan_readings:
                return "9.91E+37"
            amps = self.measured_current_a()
            value = {"MEAS:CURR?": amps, "MEAS:VOLT?": self.voltage_v, "MEAS:POW?": amps * self.voltage_v}[key]
            return f"{value:.5E}"
        self._queue_error(-113, "Undefined header")
        return None

    def _set_current(self, argument: str) -> None:
        if not argument:
            self._queue_error(-109, "Missing parameter")
            return
        try:
            amps = float(argument)
        except ValueError:
            self._queue_error(-104, "Data type error")
            return
        if not 0.0 <= amps <= self.max_current_a:
            self._queue_error(-222, "Data out of range")
            return
        self.current_setpoint_a = amps

    # ------------------------------------------------------------------ the line
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._fd], [], [], _POLL_S)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                continue
            except OSError:
                return  # the slave side went away (EIO)
            if not data:
                continue
            self._on_bytes(data)

    def _on_bytes(self, data: bytes) -> None:
        with self._lock:
            self.raw += data
            self._pending += data
            lines: list[str] = []
            while (end := self._pending.find(b"\n")) >= 0:
                lines.append(self._pending[:end].decode("ascii", errors="replace"))
                del self._pending[: end + 1]
        for line in lines:
            self._answer(line)

    def _answer(self, line: str) -> None:
        with self._lock:
            self.received.append(line)
            answer = self.handle(line)
            if answer is None or self.silent:
                return
            garbage = self._garbage.get(line.strip(), self._garbage.get(None))
            out = garbage if garbage is not None else answer.encode("ascii") + b"\n"
            delay, self._delay_next_s = self._delay_next_s, 0.0
        if delay:
            time.sleep(delay)  # the instrument is busy: it answers late, and hears nothing meanwhile
        self._send(out)

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 1.0
        while view and time.monotonic() < deadline:
            try:
                written = os.write(self._fd, view)
                view = view[written:]
            except BlockingIOError:
                time.sleep(_POLL_S)
            except OSError:
                return
