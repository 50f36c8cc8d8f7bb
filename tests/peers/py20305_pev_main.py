"""The PEV of the J3072 interop, run INSIDE the py20305 venv (tests/peers/py20305_peer.py).

A PEV with an onboard inverter, as our J3072 profile of IEEE 2030.5 expects it (docs/j3072.md), built
on py20305's own client: its mutual-TLS transport (`Sep2Client`), its discovery walk (`discover`), its
models generated from the 2030.5 XSDs for everything it reads (a schema-invalid answer from our server
fails here) and writes (serialised by py20305). Steps:

1. register (POST EndDevice with the certificate's sFDI/lFDI) unless the server already lists it;
2. discover the tree; PUT DeviceInformation (``mfModel`` = the ISM number) and DERCapability;
3. read the site parameters (DefaultDERControl, the required DERSettings) and PUT the DERSettings it
   applied (``--misbehave wrong-readback``: a discharge maximum above the site's; ``no-settings``: none);
4. every second, read the active DERControl: print its target, answer it with a Response (started).

py20305 clamps its own poll loop to 10 s at least; the frequency-regulation use case moves the setpoint
every 2 s, so this PEV polls the active control itself every second (the server asks for 1 s).

Each step prints one JSON line on stdout; errors go to stderr. It ends after ``--duration`` or on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

from py20305.client.discovery import discover
from py20305.client.http import Sep2Client
from py20305.client.state import DiscoveredState
from py20305.client.tls import TlsConfig
from py20305.models import sep
from py20305.security import compute_lfdi, compute_sfdi

POLL_S = 1.0
#: IEEE 2030.5 Response.status 2: "event started" (the PEV follows the setpoint).
STARTED = 2
#: DERType 81: electric vehicle (sep.xsd DERType).
ELECTRIC_VEHICLE = 81


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, "t": time.time(), **data}), flush=True)


def watts(value: Any) -> float | None:
    return None if value is None else value.value * 10.0**value.multiplier.value


def active_power(w: float) -> Any:
    multiplier = 0
    while abs(round(w / 10**multiplier)) > 32767:
        multiplier += 1
    return sep.ActivePower(multiplier=sep.PowerOfTenMultiplierType(value=multiplier), value=round(w / 10**multiplier))


def volts(v: float) -> Any:
    return sep.VoltageRms(multiplier=sep.PowerOfTenMultiplierType(value=-1), value=round(v * 10))


async def run(args: argparse.Namespace, stop: asyncio.Event) -> None:
    tls = TlsConfig(client_cert=Path(args.cert), client_key=Path(args.key), ca_cert=Path(args.ca))
    lfdi = compute_lfdi(Path(args.cert).read_text())
    base = args.url.rsplit("/dcap", 1)[0]
    async with Sep2Client(base, tls=tls) as client:
        listed = await client.get("/edev", sep.EndDeviceList)
        if not any((d.l_fdi or b"").hex().upper() == lfdi.upper() for d in listed.end_device):
            device = sep.EndDevice(
                s_fdi=sep.Sfditype(value=compute_sfdi(lfdi)),
                l_fdi=bytes.fromhex(lfdi),
                changed_time=sep.TimeType(value=int(time.time())),
            )
            location = await client.post("/edev", device)
            emit("registered", location=location)
        state = DiscoveredState()
        await discover(client, state)
        edev = next(iter(state.end_devices.values()))
        emit("discovered", end_devices=list(state.end_devices), programs=list(state.der_programs))
        di_href = edev.device.device_information_link.href
        now = sep.TimeType(value=int(time.time()))
        await client.put(
            di_href,
            sep.DeviceInformation(
                l_fdi=bytes.fromhex(lfdi),
                mf_date=now,
                mf_hw_ver="OBC-2",
                mf_id=sep.Pentype(value=40732),
                mf_model=args.ism,
                mf_ser_num="PEV-0001",
                primary_power=sep.PowerSourceType(value=1),
                secondary_power=sep.PowerSourceType(value=0),
                sw_act_time=now,
                sw_ver="7.2.0",
            ),
        )
        emit("device_information", ism=args.ism)
        modes = (1 << 27) - 1  # every DERControlType function up to opModWattVar (sep.xsd)
        await client.put(
            edev.der_capability_href,
            sep.Dercapability(
                modes_supported=sep.DercontrolType(value=modes.to_bytes(4, "big")),
                rtg_max_charge_rate_w=active_power(args.rating_w),
                rtg_max_discharge_rate_w=active_power(args.rating_w),
                rtg_max_w=active_power(args.rating_w),
                type_value=sep.Dertype(value=ELECTRIC_VEHICLE),
            ),
        )
        emit("capability", rating_w=args.rating_w)
        program = next(iter(state.der_programs.values()))
        # Read the parameters after the capability: the limit is relative to the declared rating.
        default = await client.get(program.program.default_dercontrol_link.href, sep.DefaultDercontrol)
        required = await client.get(edev.der_settings_href, sep.Dersettings)
        limit_pct = default.dercontrol_base.op_mod_max_lim_w.value if default.dercontrol_base.op_mod_max_lim_w else 0
        site_max = watts(required.set_max_discharge_rate_w) or 0.0
        applied_max = min(site_max, args.rating_w * limit_pct / 10000)
        if args.misbehave == "wrong-readback":
            applied_max = args.rating_w  # ignores the site's maximum
        settings = sep.Dersettings(
            modes_enabled=required.modes_enabled,
            set_esdelay=default.set_esdelay,
            set_eshigh_freq=default.set_eshigh_freq,
            set_eshigh_volt=default.set_eshigh_volt,
            set_eslow_freq=default.set_eslow_freq,
            set_eslow_volt=default.set_eslow_volt,
            set_esramp_tms=default.set_esramp_tms,
            set_esrandom_delay=default.set_esrandom_delay,
            set_grad_w=default.set_grad_w or 0,
            set_max_discharge_rate_w=active_power(applied_max),
            set_max_w=active_power(applied_max),
            set_soft_grad_w=default.set_soft_grad_w,
            set_vref=required.set_vref,
            updated_time=sep.TimeType(value=int(time.time())),
        )
        values = {"setMaxDischargeRateW": applied_max, "setVRef": watts(required.set_vref)}
        if args.misbehave != "no-settings":
            await client.put(edev.der_settings_href, settings)
            emit("settings", **values)
        answered: set[bytes] = set()
        active_href = program.program.active_dercontrol_list_link.href
        while not stop.is_set():
            controls = await client.get(active_href, sep.DercontrolList)
            for control in controls.dercontrol:
                target = watts(control.dercontrol_base.op_mod_target_w)
                mrid = control.m_rid.value
                if mrid in answered:
                    continue
                answered.add(mrid)
                emit("control", mrid=mrid.hex().upper(), target_w=target)
                if control.reply_to:
                    response = sep.Response(
                        created_date_time=sep.TimeType(value=int(time.time())),
                        end_device_lfdi=bytes.fromhex(lfdi),
                        status=STARTED,
                        subject=control.m_rid,
                    )
                    await client.post(control.reply_to, response)
                    emit("response", mrid=mrid.hex().upper(), status=STARTED)
            try:
                await asyncio.wait_for(stop.wait(), POLL_S)
            except TimeoutError:
                pass


async def main_async(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.call_later(args.duration, stop.set)
    try:
        await run(args, stop)
    except Exception as exc:  # reported for the test, which judges it
        emit("error", error=f"{type(exc).__name__}: {exc}")
        return 1
    emit("done")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server's DeviceCapability URL, https://host:port/dcap")
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--ism", default="ACME/OBI/7K6A/J3072_202406")
    parser.add_argument("--rating-w", type=float, default=7600.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--misbehave", choices=("none", "wrong-readback", "no-settings"), default="none")
    sys.exit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
