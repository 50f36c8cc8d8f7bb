# Runs INSIDE MicroPython (the official WebAssembly port, tests/mcu/micropython.py): the co-processor
# firmware's own files (board/mcu/protocol.py, core.py, loop.py) over tests/mcu/fake_hw.py, through the
# checks that matter on the real interpreter: every frame type is answered, each hard fault reaches the
# safe state within loop.SAFE_STATE_ITERATIONS, corrupted frames are never acted on. Prints one JSON line
# per check ({"check", "ok", "detail"}) and a last line with the interpreter and its memory use.
# MicroPython subset only.

import gc
import json
import struct
import sys

import loop
import protocol as P
from pi_side import Pi

RESULTS = []


def check(name, ok, detail=""):
    RESULTS.append(name)
    print(json.dumps({"check": name, "ok": bool(ok), "detail": detail}))


# --- every request type
REQUESTS = (
    (P.MSG_HELLO, bytes([P.PROTOCOL_VERSION])),
    (P.MSG_HEARTBEAT, b""),
    (P.MSG_READ_STATUS, b""),
    (P.MSG_SET_PILOT, struct.pack(P.SET_PILOT_FORMAT, P.PILOT_PWM, 533)),
    (P.MSG_SET_CONTACTOR, b"\x01"),
    (P.MSG_SET_LOCK, b"\x01"),
    (P.MSG_RCD_SELFTEST, b""),
    (P.MSG_CLEAR_ERRORS, b"\x00\x00"),
    (P.MSG_READ_PP, b""),
)
pi = Pi()
boot = pi.frames()
check("event_boot", len(boot) == 1 and boot[0][1] == P.MSG_EVENT_BOOT, str(boot))
for msg_type, payload in REQUESTS:
    kind, body = pi.request(msg_type, payload)
    size = {P.MSG_HELLO: P.HELLO_INFO_SIZE, P.MSG_READ_PP: 2}.get(msg_type, P.STATUS_SIZE)
    check(f"ack_{msg_type:02x}", kind == msg_type | P.REPLY_BIT and len(body) == size, str(kind))
kind, body = pi.request(0x3E)
check("nack_unknown", kind == P.MSG_NACK and body[1] == P.NACK_UNKNOWN_TYPE, str(body))
pi.step(ms=10, times=10)
check("event_status", any(k == P.MSG_EVENT_STATUS for _, k, _ in pi.frames()))


# --- each hard fault within the budget
def rcd(pi):
    pi.hw.residual_ma = 8.0


def unplug(pi):
    pi.hw.ev = "A"


def c_to_b(pi):
    pi.hw.ev = "B"


def diode(pi):
    pi.hw.diode_ok = False


def stuck_open(pi):
    pi.hw.stuck_open = True
    pi.step()
    pi.step(ms=P.FEEDBACK_SETTLE_MS - 1)


def lock_jam(pi):
    pi.request(P.MSG_SET_LOCK, b"\x00")
    pi.hw.lock_jammed = True
    pi.request(P.MSG_SET_LOCK, b"\x01")
    pi.step(ms=P.FEEDBACK_SETTLE_MS - 1)


def heartbeat_lost(pi):
    pi.step(ms=P.HEARTBEAT_TIMEOUT_MS - (pi.clock.ms - pi.loop.fw.last_heartbeat_ms))


for fault, pilot in (
    (rcd, P.PILOT_F),
    (unplug, P.PILOT_PWM),
    (c_to_b, P.PILOT_PWM),
    (diode, P.PILOT_PWM),
    (stuck_open, P.PILOT_PWM),
    (lock_jam, P.PILOT_PWM),
    (heartbeat_lost, P.PILOT_F),
):
    pi = Pi()
    pi.charging()
    on_before = pi.hw.coil_on
    fault(pi)
    still_on = pi.hw.coil_on
    pi.step(times=loop.SAFE_STATE_ITERATIONS)
    ok = on_before and still_on and not pi.hw.coil_on and pi.hw.mode == pilot
    check("safe_" + fault.__name__, ok, f"coil {pi.hw.coil_on} mode {pi.hw.mode} flags {pi.loop.fw.flags()}")

# --- corrupted frames are never acted on, the next good one is
pi = Pi()
pi.request(P.MSG_HELLO, bytes([P.PROTOCOL_VERSION]))
bad = bytearray(P.encode_frame(9, P.MSG_SET_LOCK, b"\x01"))
bad[5] ^= 0x40
pi.hw.rx += b"\x00\xa5\xff" + bytes(bad)
pi.step(ms=P.IDLE_ABANDON_MS)
pi.step()
check("corrupt_ignored", not pi.hw.lock_on and pi.loop.fw.decoder.bad_crc >= 1, str(pi.loop.fw.decoder.bad_crc))
kind, _ = pi.request(P.MSG_SET_LOCK, b"\x01")
check("resync", kind == P.MSG_SET_LOCK | P.REPLY_BIT and pi.hw.lock_on)

gc.collect()
print(
    json.dumps(
        {
            "implementation": sys.implementation.name,
            "version": list(sys.implementation.version[:3]),
            "checks": len(RESULTS),
            "mem_alloc": gc.mem_alloc(),
        }
    )
)
