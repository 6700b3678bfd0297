"""A small QEMU machine driver with the NixOS test driver's machine API.

The appliance scenarios (vm-tests/scenarios/) are written against the methods NixOS's test
driver gives a `machine` (start, wait_for_unit, wait_for_open_port, succeed, fail, execute,
wait_until_succeeds, systemctl, shutdown, crash, reboot, forward_port), so that the NixOS VM
tests run the same scenario code. This module implements that subset for the Debian appliance
image on machines without Nix:

- QEMU boots the image's kernel and initrd directly (TCG unless KVM works); the guest's only
  network is QEMU's user-mode stack with `restrict=on`: the host reaches forwarded loopback
  ports, the guest reaches nothing.
- Commands go to a root shell on the guest's second serial port (the image's
  `llorch-test-backdoor.service`, started only with `llorch.test_backdoor=1` on the kernel
  command line). Each command travels base64-encoded in one line and its reply comes back as
  one framed line (exit status, base64 output), so quoting and binary output cannot confuse
  the protocol.
- The first serial port is the console, written to `console.log` in the state directory.
"""

from __future__ import annotations

import base64
import ctypes
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

READY_MARK = b"llorch-backdoor-ready"
REPLY = re.compile(rb"@@LLORCH-OUT (\d+) ([A-Za-z0-9+/=]*) @@\n")


class MachineError(Exception):
    """A guest command failed, timed out, or the VM went away."""


def log(msg: str) -> None:
    print(f"[vm {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _die_with_parent() -> None:
    """QEMU gets SIGKILL when the driver dies, however it dies: no VM outlives a test run."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, 9)


def kvm_usable() -> bool:
    """KVM only when /dev/kvm opens and the operator asked for it (LLORCH_VM_KVM=1): on these
    machines /dev/kvm exists but nested virtualization breaks (ENVIRONMENT.md), so TCG is the
    default."""
    return os.environ.get("LLORCH_VM_KVM") == "1" and os.access("/dev/kvm", os.R_OK | os.W_OK)


class Machine:
    def __init__(
        self,
        name: str,
        image_dir: Path,
        state_dir: Path,
        forwards: dict[int, int],
        share_image: Path | None = None,
        memory_mb: int = 3072,
        cpus: int = 2,
    ) -> None:
        self.name = name
        self.image_dir = Path(image_dir)
        self.state_dir = Path(state_dir)
        self.forwards = dict(forwards)  # guest port -> host port
        self.share_image = share_image
        self.memory_mb = memory_mb
        self.cpus = cpus
        self.process: subprocess.Popen | None = None
        self.shell: socket.socket | None = None
        self.buffer = b""
        self.boot_seconds: list[float] = []

    # ---- lifecycle -----------------------------------------------------------------------

    def _qemu_args(self) -> list[str]:
        s = self.state_dir
        fwd = "".join(
            f",hostfwd=tcp:127.0.0.1:{host}-:{guest}" for guest, host in self.forwards.items()
        )
        accel = ["-accel", "kvm", "-cpu", "host"] if kvm_usable() else ["-accel", "tcg", "-cpu", "max"]
        args = [
            "qemu-system-x86_64",
            *accel,
            "-machine", "q35",
            "-smp", str(self.cpus),
            "-m", str(self.memory_mb),
            "-nographic",
            "-nodefaults",
            "-kernel", str(self.image_dir / "vmlinuz"),
            "-initrd", str(self.image_dir / "initrd.img"),
            "-append",
            "console=ttyS0 root=/dev/vda rw quiet llorch.test_backdoor=1 systemd.show_status=1",
            # snapshot=on: the guest's writes go to a temporary overlay that lives as long as
            # this QEMU process (so they survive a guest reboot); the cached image stays
            # pristine for the next run.
            "-drive", f"file={self.image_dir / 'disk.img'},format=raw,if=virtio,snapshot=on",
            "-nic", f"user,model=virtio-net-pci,restrict=on{fwd}",
            "-chardev", f"file,id=console,path={s / 'console.log'}",
            "-serial", "chardev:console",
            "-chardev", f"socket,id=shell,path={s / 'shell.sock'},server=on,wait=off",
            "-serial", "chardev:shell",
            "-monitor", f"unix:{s / 'monitor.sock'},server=on,wait=off",
        ]
        if self.share_image is not None:
            args += ["-drive", f"file={self.share_image},format=raw,if=virtio,readonly=on"]
        return args

    def start(self, boot_timeout: float = 1200) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for sock in ("shell.sock", "monitor.sock"):
            (self.state_dir / sock).unlink(missing_ok=True)
        log(f"{self.name}: starting QEMU ({'KVM' if kvm_usable() else 'TCG'})")
        started = time.monotonic()
        self.process = subprocess.Popen(
            self._qemu_args(), stdin=subprocess.DEVNULL,
            stdout=open(self.state_dir / "qemu.log", "ab"), stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + 30
        while not (self.state_dir / "shell.sock").exists():
            self._check_alive()
            if time.monotonic() > deadline:
                raise MachineError("QEMU did not create its sockets")
            time.sleep(0.1)
        self.shell = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.shell.connect(str(self.state_dir / "shell.sock"))
        self.buffer = b""
        self._wait_ready(boot_timeout)
        took = time.monotonic() - started
        self.boot_seconds.append(took)
        log(f"{self.name}: booted, shell ready after {took:.0f} s")

    def _check_alive(self) -> None:
        if self.process is None or self.process.poll() is not None:
            raise MachineError(
                f"QEMU is not running (exit {self.process.returncode if self.process else None}); "
                f"see {self.state_dir / 'qemu.log'} and console.log"
            )

    def _read_more(self, deadline: float) -> None:
        assert self.shell is not None
        self._check_alive()
        self.shell.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
        try:
            chunk = self.shell.recv(65536)
        except socket.timeout:
            return
        if not chunk:
            raise MachineError("the guest shell's socket closed")
        self.buffer += chunk

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while READY_MARK not in self.buffer:
            if time.monotonic() > deadline:
                raise MachineError(f"no guest shell within {timeout:.0f} s; see console.log")
            self._read_more(deadline)
        self.buffer = self.buffer.split(READY_MARK, 1)[1]

    def shutdown(self, timeout: float = 300) -> None:
        """Clean power-off from inside; waits for QEMU to exit."""
        if self.process is None:
            return
        self._send("systemctl poweroff")
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.crash()
        self._closed()

    def crash(self) -> None:
        """Pulls the plug (QEMU quits at once)."""
        if self.process is not None and self.process.poll() is None:
            self._monitor("quit")
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._closed()

    def _closed(self) -> None:
        if self.shell is not None:
            self.shell.close()
        self.shell = None
        self.process = None

    def reboot(self, boot_timeout: float = 1200) -> None:
        """`systemctl reboot` in the guest; returns once its shell is back."""
        started = time.monotonic()
        self.buffer = b""
        self._send("systemctl reboot")
        self._wait_ready(boot_timeout)
        took = time.monotonic() - started
        self.boot_seconds.append(took)
        log(f"{self.name}: rebooted, shell ready after {took:.0f} s")

    def forward_port(self, host_port: int, guest_port: int) -> None:
        self._monitor(f"hostfwd_add tcp:127.0.0.1:{host_port}-:{guest_port}")

    def _monitor(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as m:
            m.connect(str(self.state_dir / "monitor.sock"))
            m.settimeout(5)
            m.sendall(command.encode() + b"\n")
            out = b""
            try:
                while True:
                    chunk = m.recv(4096)
                    if not chunk:
                        break
                    out += chunk
            except socket.timeout:
                pass
            return out.decode(errors="replace")

    # ---- commands ------------------------------------------------------------------------

    def _send(self, command: str) -> None:
        assert self.shell is not None, "machine not started"
        self.shell.sendall(command.encode() + b"\n")

    def execute(self, command: str, timeout: float = 900) -> tuple[int, str]:
        """Runs `command` with bash in the guest; returns (exit status, stdout+stderr). The
        command is killed after `timeout` seconds (exit 124)."""
        self.start()
        encoded = base64.b64encode(command.encode()).decode()
        t = max(1, int(timeout))
        self._send(
            f"__o=\"$(timeout -k 5 {t} bash -c \"$(echo {encoded} | base64 -d)\" 2>&1 </dev/null)\"; "
            "__r=$?; echo \"@@LLORCH-OUT $__r $(printf %s \"$__o\" | base64 -w0) @@\""
        )
        deadline = time.monotonic() + t + 30
        while True:
            m = REPLY.search(self.buffer)
            if m:
                self.buffer = self.buffer[m.end():]
                return int(m.group(1)), base64.b64decode(m.group(2)).decode(errors="replace")
            if time.monotonic() > deadline:
                raise MachineError(f"no reply to {command!r} within {t + 30} s")
            self._read_more(deadline)

    def succeed(self, *commands: str, timeout: float = 900) -> str:
        out = ""
        for command in commands:
            rc, text = self.execute(command, timeout)
            if rc != 0:
                raise MachineError(f"command failed (exit {rc}): {command}\n{text}")
            out += text
        return out

    def fail(self, *commands: str, timeout: float = 900) -> str:
        out = ""
        for command in commands:
            rc, text = self.execute(command, timeout)
            if rc == 0:
                raise MachineError(f"command unexpectedly succeeded: {command}\n{text}")
            out += text
        return out

    def wait_until_succeeds(self, command: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while True:
            rc, text = self.execute(command, max(1, deadline - time.monotonic()))
            if rc == 0:
                return text
            if time.monotonic() > deadline:
                raise MachineError(f"timed out ({timeout:.0f} s) waiting for: {command}\n{text}")
            time.sleep(1)

    def wait_until_fails(self, command: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        while True:
            rc, text = self.execute(command, max(1, deadline - time.monotonic()))
            if rc != 0:
                return text
            if time.monotonic() > deadline:
                raise MachineError(f"timed out ({timeout:.0f} s) waiting for failure of: {command}")
            time.sleep(1)

    def systemctl(self, q: str) -> tuple[int, str]:
        return self.execute(f"systemctl {q}")

    def get_unit_info(self, unit: str) -> dict[str, str]:
        rc, out = self.execute(f"systemctl --no-pager show {shlex.quote(unit)}")
        if rc != 0:
            raise MachineError(f"systemctl show {unit}: {out}")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for_unit(self, unit: str, timeout: float = 900) -> None:
        """Until the unit is active; fails at once when it failed."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.get_unit_info(unit)
            state = info.get("ActiveState")
            if state == "active":
                return
            if state == "failed":
                _, journal = self.execute(f"journalctl -u {shlex.quote(unit)} -n 40 --no-pager")
                raise MachineError(f"unit {unit} failed:\n{journal}")
            if time.monotonic() > deadline:
                raise MachineError(f"unit {unit} not active within {timeout:.0f} s (state {state})")
            time.sleep(1)

    def wait_for_open_port(self, port: int, addr: str = "localhost", timeout: float = 900) -> None:
        self.wait_until_succeeds(f"ss -Htln | grep -qE '[:.]{port}\\b'", timeout)
