"""``lvsbus demo`` inside the qemu kernel, where this machine's kernel has no IPVS.

The whole demo cluster (namespaces, both routers, real servers, client) runs inside one VM: the
kit's Debian kernel (``lvsbus/demo/qemu.py``, the one the kernel test tier boots), with this machine's
``/`` mounted read-only under a tmpfs overlay. Inside, the kernel has IPVS, so the same
``lvsbus demo cluster`` runs with the real datapath (``lvsbus/demo/cluster.py``, with its ``VM``
pace). This side:

* builds the kit the first time (``apt-get download`` of Debian's kernel and kmod, ~5 s once the
  .debs are cached in /var/cache/lvsbus-kit), boots the VM and says how long the boot took;
* streams the demo's lines to this terminal as they are written (the VM writes them to
  ``OUT/demo.log`` over 9p; ``/mnt/out`` in the VM is ``OUT`` here, and is written so);
* on Ctrl-C (or SIGTERM) powers the VM off (qemu, by PID): nothing else is left on this
  machine, as everything the demo built lived in the VM;
* leaves in ``OUT``: ``timeline.html``, ``demo.log``, ``logs/`` (both routers' logs and stderr).
"""
from __future__ import annotations

import os
import shlex
import signal
import sys
import time
from pathlib import Path

from lvsbus.demo import qemu as kitmod

ROOT = Path(__file__).resolve().parents[2]  # the checkout (lvsbus/demo/vm.py -> ../..): where ``python -m lvsbus.cli`` is found without an install
KIT_FILES = ("env", "cmd", "rc")


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def run_in_vm(args, host_ipvs: bool = False) -> tuple[int | None, str]:
    """Run the cluster demo inside the VM. (exit status, "") once it ran; (None, why) when the VM
    could not be started, and nothing was changed on this machine."""
    why = kitmod.available()
    if why:
        say(f"the qemu VM cannot run here: {why}")
        return None, why
    kit = kitmod.find()
    if kit is None:
        say("building the qemu kit once (apt-get download of Debian's kernel and kmod, "
            f"unpacked into {kitmod.DEFAULT_DIR}; no system install)")
        try:
            kit = kitmod.build(log=lambda m: say("  " + m))
        except kitmod.KitError as exc:
            say(f"the qemu kit could not be built: {exc}")
            return None, f"the kit could not be built: {exc}"
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("demo.log", "timeline.html", "vm-console.log", *KIT_FILES):
        (out / name).unlink(missing_ok=True)
    accel = kitmod.accel(kit)
    cpus = getattr(args, "vm_cpus", 0) or (2 if (os.cpu_count() or 1) >= 2 else 1)
    if host_ipvs:
        say("--vm: running the demo inside the qemu VM although this kernel has IPVS")
    else:
        say(f"this kernel ({os.uname().release}) has no IPVS (CONFIG_IP_VS not set): the whole cluster "
            f"(namespaces, both routers, real servers, client) runs inside a qemu VM booting Debian's kernel "
            f"{kit.kver}, which has IPVS (the kernel test tier's VM), so the client's requests really go "
            "through IPVS. `--no-vm` shows the table lvsd desires here instead.")
    if accel == "kvm":
        say(f"the VM: KVM, {cpus} CPUs, 2 GiB; this machine's files read-only, writes only to {out}")
    else:
        say(f"the VM: software emulation (TCG: no usable KVM here), {cpus} virtual CPUs, 2 GiB: everything "
            "runs ~12x slower than on this machine, so the demo stretches its timers (heartbeat 0.5 s, "
            f"deadtime 2.5 s, checks every 1 s) and takes a few minutes; this machine's files are read-only "
            f"in it, it writes only to {out}")
    inner = [sys.executable, "-m", "lvsbus.cli", "demo", "cluster", "--no-vm", "--out", "/mnt/out"]
    if getattr(args, "quick", False):
        inner.append("--quick")
    command = shlex.join(inner) + " > /mnt/out/demo.log 2>&1"
    log = out / "demo.log"
    vm = kitmod.boot(kit, command, str(out), cwd=str(ROOT), timeout=getattr(args, "vm_timeout", 1200),
                     env={"PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}, memory_mb=2048, cpus=cpus,
                     console_path=str(out / "vm-console.log"))
    old = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    booted = None
    pos, partial = 0, ""
    try:
        while True:
            alive = vm.running()
            if booted is None and log.exists():
                booted = time.monotonic() - vm.started
                say(f"the VM booted in {booted:.1f}s; the demo runs in it now (its lines follow as they come)")
            if log.exists():
                with open(log, "rb") as f:
                    f.seek(pos)
                    data = f.read()
                pos += len(data)
                partial += data.decode(errors="replace")
                *lines, partial = partial.split("\n")
                for line in lines:
                    print(line.replace("/mnt/out", str(out)), flush=True)
            if not alive:
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        vm.stop()
        (out / "vm-console.log").unlink(missing_ok=True)
        if partial:
            print(partial.replace("/mnt/out", str(out)))
        say(f"interrupted: the VM is powered off (qemu pid {vm.pid}), and everything the demo built went with it; "
            f"its output so far is in {log}")
        return 130, ""
    finally:
        signal.signal(signal.SIGTERM, old)
        vm.stop()
        res = vm.result()
        for name in KIT_FILES:
            (out / name).unlink(missing_ok=True)
    if partial:
        print(partial.replace("/mnt/out", str(out)))
    if res.rc is None:
        say(f"the VM stopped without finishing the demo after {res.seconds:.0f}s; its console:")
        for line in res.console.strip().splitlines()[-20:]:
            print("     " + line)
        return 1, ""
    if res.rc == 0:
        (out / "vm-console.log").unlink(missing_ok=True)
    say(f"the VM ran {res.seconds:.0f}s in all (boot {booted or 0:.1f}s), exit {res.rc}; on this machine: "
        f"{out}/timeline.html, {out}/demo.log, {out}/logs/ (both routers' logs: `lvsbus replay "
        f"{out}/logs/r1/log --verify` runs here too)")
    return res.rc, ""
