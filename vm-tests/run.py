#!/usr/bin/env python3
"""Boots the appliance image once and runs the scenarios of scenarios/appliance.py in order,
printing a summary table (scenario, result, seconds). `cargo xtask vm-test` builds the image
and calls this; it can also be run by hand on a built image:

    vm-tests/run.py --image-dir ~/.cache/llama-orch/images/appliance-<key> [--only NAME ...]

Exit status 0 only when every selected scenario passed.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "driver"))
sys.path.insert(0, str(HERE / "scenarios"))

from appliance import SCENARIOS, Env  # noqa: E402
from llorch_vm import Machine, MachineError, log  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    # SIGTERM (a CI timeout, a Ctrl-C'd xtask) unwinds through `finally`: the VM is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-dir", required=True, type=Path)
    ap.add_argument("--state-dir", type=Path, default=Path("target/vm-test"))
    ap.add_argument("--share-image", type=Path, help="raw disk with files for the guest (/dev/vdb)")
    ap.add_argument("--upgrade-deb", help="file name of the rebuilt package on the share disk")
    ap.add_argument("--only", nargs="*", help="run only these scenarios (names as in the table)")
    ap.add_argument("--summary-json", type=Path)
    args = ap.parse_args()

    args.state_dir.mkdir(parents=True, exist_ok=True)
    (args.state_dir / "console.log").unlink(missing_ok=True)
    api, prom = free_port(), free_port()
    machine = Machine("appliance", args.image_dir, args.state_dir, {8080: api, 9090: prom},
                      share_image=args.share_image)
    env = Env(base_url=f"http://127.0.0.1:{api}", prom_url=f"http://127.0.0.1:{prom}")
    selected = [(n, f) for n, f in SCENARIOS if not args.only or n in args.only]
    rows: list[tuple[str, str, float, str]] = []
    total = time.monotonic()
    try:
        t0 = time.monotonic()
        machine.start()
        rows.append(("boot", "ok", time.monotonic() - t0, ""))
        if args.share_image is not None:
            machine.succeed("mkdir -p /mnt/host && mount -o ro /dev/vdb /mnt/host")
            if args.upgrade_deb:
                env.upgrade_deb = f"/mnt/host/{args.upgrade_deb}"
        for name, scenario in selected:
            log(f"── scenario: {name}")
            t0 = time.monotonic()
            try:
                scenario(machine, env)
                rows.append((name, "passed", time.monotonic() - t0, ""))
            except Exception as e:  # every scenario reports; the run fails at the end
                traceback.print_exc()
                rows.append((name, "FAILED", time.monotonic() - t0, str(e).splitlines()[0][:90]))
                try:
                    _, journal = machine.execute("journalctl --no-pager -n 60 -p info", timeout=60)
                    print("---- guest journal (last 60 lines) ----\n" + journal)
                except MachineError as me:
                    print(f"(guest journal unavailable: {me})")
    except MachineError as e:
        traceback.print_exc()
        rows.append(("boot", "FAILED", time.monotonic() - total, str(e).splitlines()[0][:90]))
        console = args.state_dir / "console.log"
        if console.exists():
            print("---- console.log (tail) ----")
            print(console.read_text(errors="replace")[-4000:])
    finally:
        machine.crash()

    print("\nVM scenarios (QEMU, appliance image)")
    print(f"  {'scenario':<28} {'result':<7} {'seconds':>8}  detail")
    for name, result, secs, detail in rows:
        print(f"  {name:<28} {result:<7} {secs:>8.1f}  {detail}")
    print(f"  {'total':<28} {'':<7} {time.monotonic() - total:>8.1f}")
    if machine.boot_seconds:
        print(f"  boots (s): {', '.join(f'{b:.0f}' for b in machine.boot_seconds)}")
    print("  measurements:")
    for k, v in env.notes.items():
        print(f"    {k}: {json.dumps(v) if not isinstance(v, str) else v}")
    if args.summary_json:
        args.summary_json.write_text(json.dumps(
            {"rows": rows, "notes": env.notes, "boots": machine.boot_seconds}, indent=1, default=str))
    ran = {r[0] for r in rows}
    missing = [n for n, _ in selected if n not in ran]
    ok = not missing and all(r[1] != "FAILED" for r in rows)
    if missing:
        print(f"  NOT RUN: {', '.join(missing)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
