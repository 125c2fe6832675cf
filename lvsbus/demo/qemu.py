"""The qemu kit: a Debian kernel that has IPVS, booted under qemu, running one command.

This machine's kernel (and CI's) is built without IPVS, so the applier's kernel tests
(tests/kernel) and ``lvsbus demo`` (when the host kernel has no IPVS) run in a VM:

* ``build()`` ``apt-get download``s Debian's kernel image (the one ``linux-image-amd64`` depends
  on) and kmod into a cache directory, unpacks them with ``dpkg -x`` (no system install), runs
  depmod on the unpacked modules, and writes a busybox initramfs holding the few modules needed to
  reach the host's root (virtio, 9p, overlay) and an ``/init`` script.
* ``boot(kit, command, out_dir)`` starts that kernel under qemu and returns at once (a ``Vm``:
  ``wait()``, ``stop()``); ``run(...)`` boots and waits. ``/init`` mounts the host's ``/``
  read-only over 9p under a tmpfs overlay (writes inside the VM, bytecode caches included, vanish
  with it), shares one writable host directory at ``/mnt/out``, brings ``lo`` up (with no
  interface up, IPVS refuses every real server address as "not unicast"), points
  ``/proc/sys/kernel/modprobe`` at the kit's modprobe (so ``ip_vs`` and its schedulers auto-load),
  chroots and runs the command as a child of PID 1, writes its exit status to ``/mnt/out/rc`` and
  powers off. The VM's ``/tmp`` is its own tmpfs; host paths the command needs under
  ``/tmp`` (a checkout cloned there) are bound back over it first (``hidden_by_vm_tmp``).
* Acceleration: KVM where ``/dev/kvm`` is usable and a KVM guest actually boots (probed once per
  host kernel, the verdict cached in the kit directory: on this machine, itself a Firecracker
  guest, ``/dev/kvm`` opens but a KVM guest never prints a byte), else TCG (software emulation,
  ~12x slower than the host for Python). ``LVSBUS_KIT_ACCEL=tcg|kvm`` forces one. With
  ``cpus > 1`` TCG runs one host thread per virtual CPU (MTTCG).

CLI: ``python -m lvsbus.demo.qemu build`` / ``python -m lvsbus.demo.qemu run -- CMD...``.
The cache defaults to ``/var/cache/lvsbus-kit`` (``LVSBUS_KIT_DIR`` overrides it). Needs root
(apt-get download, dpkg -x) and the packages qemu-system-x86, busybox-static, kmod.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import io
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

DEFAULT_DIR = os.environ.get("LVSBUS_KIT_DIR", "/var/cache/lvsbus-kit")
KIT_VERSION = "5"  # bump when the layout or the init script changes
#: modules the initramfs loads itself (everything else auto-loads through modprobe once chrooted)
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay")


class KitError(RuntimeError):
    pass


@dataclass(frozen=True)
class Kit:
    root: str
    kver: str

    @property
    def kernel(self) -> str:
        return os.path.join(self.root, "kernel", "boot", f"vmlinuz-{self.kver}")

    @property
    def initrd(self) -> str:
        return os.path.join(self.root, "initramfs.cpio.gz")

    @property
    def modules(self) -> str:
        return os.path.join(self.root, "kernel", "lib", "modules", self.kver)

    @property
    def modprobe(self) -> str:
        return os.path.join(self.root, "sbin", "modprobe")


def _sh(cmd: list[str], cwd: str | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise KitError(f"{shlex.join(cmd)} failed ({p.returncode}): {p.stderr.strip()[-2000:]}")
    return p.stdout


def _kernel_package() -> str:
    out = _sh(["apt-cache", "depends", "linux-image-amd64"])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split()[-1]
    raise KitError("apt-cache depends linux-image-amd64 names no linux-image package (run apt-get update)")


def _download(pkg: str, dest: str) -> str:
    have = glob.glob(os.path.join(dest, f"{pkg}_*.deb"))
    if have:
        return have[0]
    _sh(["apt-get", "download", "-q", pkg], cwd=dest)
    have = glob.glob(os.path.join(dest, f"{pkg}_*.deb"))
    if not have:
        raise KitError(f"apt-get download {pkg} left no .deb in {dest}")
    return have[0]


def find(root: str = DEFAULT_DIR) -> Kit | None:
    stamp = os.path.join(root, "kit.stamp")
    try:
        version, kver = open(stamp).read().split()
    except (OSError, ValueError):
        return None
    kit = Kit(root, kver)
    if version != KIT_VERSION or not all(os.path.exists(p) for p in (kit.kernel, kit.initrd, kit.modprobe)):
        return None
    return kit


def build(root: str = DEFAULT_DIR, log=print) -> Kit:
    kit = find(root)
    if kit is not None:
        return kit
    os.makedirs(root, exist_ok=True)
    debs = os.path.join(root, "debs")
    os.makedirs(debs, exist_ok=True)
    pkg = _kernel_package()
    kver = pkg.removeprefix("linux-image-")
    log(f"kit: apt-get download {pkg} kmod")
    kdeb = _download(pkg, debs)
    kmdeb = _download("kmod", debs)
    kdir = os.path.join(root, "kernel")
    shutil.rmtree(kdir, ignore_errors=True)
    _sh(["dpkg", "-x", kdeb, kdir])
    kmdir = os.path.join(root, "kmod")
    shutil.rmtree(kmdir, ignore_errors=True)
    _sh(["dpkg", "-x", kmdeb, kmdir])
    kmod = os.path.join(kmdir, "usr", "bin", "kmod")
    if not os.path.exists(kmod):
        kmod = os.path.join(kmdir, "bin", "kmod")
    sbin = os.path.join(root, "sbin")
    os.makedirs(sbin, exist_ok=True)
    for name in ("modprobe", "depmod", "insmod", "lsmod", "rmmod", "modinfo"):
        link = os.path.join(sbin, name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(kmod, link)
    kit = Kit(root, kver)
    log(f"kit: depmod {kver}")
    _sh([os.path.join(sbin, "depmod"), "-b", kdir, kver])
    # the modules the initramfs insmods itself, in dependency order
    order: list[str] = []
    for m in BOOT_MODULES:
        out = _sh([os.path.join(sbin, "modprobe"), "-d", kdir, "-S", kver, "--show-depends", m])
        for line in out.splitlines():
            parts = line.split()
            if parts and parts[0] == "insmod" and parts[1] not in order:
                order.append(parts[1])
    _write_initramfs(kit, order)
    with open(os.path.join(root, "kit.stamp"), "w") as f:
        f.write(f"{KIT_VERSION} {kver}\n")
    log(f"kit: ready in {root} (kernel {kver})")
    return kit


INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs dev /dev
for m in MODULES; do insmod "/m/$(basename "$m")" 2>/dev/null; done
mkdir -p /host /rw /new
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /host || { echo "init: 9p mount failed"; poweroff -f; }
mount -t tmpfs -o size=70% rw /rw
mkdir -p /rw/upper /rw/work
mount -t overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work overlay /new || { echo "init: overlay failed"; poweroff -f; }
mkdir -p /new/mnt/out
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out /new/mnt/out || { echo "init: out mount failed"; poweroff -f; }
for d in proc sys dev; do mount --move /$d /new/$d 2>/dev/null || mount --bind /$d /new/$d; done
mount -t tmpfs tmpfs /new/tmp
mount -t tmpfs tmpfs /new/run
mkdir -p /new/dev/pts /new/dev/shm /new/run/netns
mount -t devpts devpts /new/dev/pts
mount -t tmpfs tmpfs /new/dev/shm
KVER=$(uname -r)
rm -rf /new/lib/modules/$KVER; mkdir -p /new/lib/modules
ln -s KITDIR/kernel/lib/modules/$KVER /new/lib/modules/$KVER
echo KITDIR/sbin/modprobe > /new/proc/sys/kernel/modprobe
hostname lvsbus-vm
# stage 2 runs as PID 1 inside the new root, so the kernel's usermode helpers (modprobe) see it too
mkdir -p /new/.lvsbus-kit
cp /bin/busybox /new/.lvsbus-kit/busybox
cat > /new/.lvsbus-kit/init2 <<'EOS'
/.lvsbus-kit/busybox ip link set lo up
/.lvsbus-kit/busybox sh -c '. /mnt/out/env; cd "$LVSBUS_VM_CWD" && exec /bin/sh /mnt/out/cmd'
echo $? > /mnt/out/rc
/.lvsbus-kit/busybox sync
/.lvsbus-kit/busybox umount /mnt/out
/.lvsbus-kit/busybox poweroff -f
EOS
exec switch_root /new /.lvsbus-kit/busybox sh /.lvsbus-kit/init2
"""


def _write_initramfs(kit: Kit, modules: list[str]) -> None:
    busybox = shutil.which("busybox")
    if busybox is None:
        raise KitError("busybox not found: apt-get install busybox-static")
    with tempfile.TemporaryDirectory() as tmp:
        for d in ("bin", "proc", "sys", "dev", "m", "etc"):
            os.makedirs(os.path.join(tmp, d))
        shutil.copy(busybox, os.path.join(tmp, "bin", "busybox"))
        for m in modules:
            src = m
            if m.endswith(".xz") or m.endswith(".zst"):
                raise KitError(f"compressed module {m}: the initramfs's busybox insmod cannot load it")
            shutil.copy(src, os.path.join(tmp, "m", os.path.basename(m)))
        init = INIT.replace("MODULES", " ".join(os.path.basename(m) for m in modules)).replace("KITDIR", kit.root)
        with open(os.path.join(tmp, "init"), "w") as f:
            f.write(init)
        os.chmod(os.path.join(tmp, "init"), 0o755)
        cpio = _newc(tmp)
    with gzip.open(kit.initrd, "wb", compresslevel=1) as f:
        f.write(cpio)


def _newc(top: str) -> bytes:
    """A cpio archive (newc, the initramfs format) of the tree under ``top``; no cpio binary needed."""
    out = io.BytesIO()
    ino = 1

    def entry(name: str, mode: int, data: bytes) -> None:
        nonlocal ino
        nb = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(nb), 0)
        out.write(b"070701" + b"".join(b"%08X" % v for v in fields) + nb)
        out.write(b"\0" * (-(110 + len(nb)) % 4))
        out.write(data)
        out.write(b"\0" * (-len(data) % 4))
        ino += 1

    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        rel = os.path.relpath(dirpath, top)
        if rel != ".":
            entry(rel, 0o040755, b"")
        for fn in sorted(filenames):
            path = os.path.join(dirpath, fn)
            st = os.stat(path)
            entry(os.path.normpath(os.path.join(rel, fn)), 0o100000 | (st.st_mode & 0o7777), open(path, "rb").read())
    entry("TRAILER!!!", 0, b"")
    return out.getvalue()


@dataclass
class Result:
    rc: int | None  # the command's exit status; None when the VM never got to write it
    console: str
    seconds: float


def available() -> str | None:
    """None when a VM can be booted here (once the kit is built), else why not."""
    if os.geteuid() != 0:
        return "needs root (apt-get download, dpkg -x, qemu sharing / over 9p)"
    for binary, package in (("qemu-system-x86_64", "qemu-system-x86"), ("busybox", "busybox-static")):
        if shutil.which(binary) is None:
            return f"{binary} not found (apt-get install {package})"
    return None


def _kvm_boots(kit: Kit, seconds: float = 8.0) -> bool:
    """Does a KVM guest boot here? The bare kernel (no initrd) prints on its serial console within
    a second under a working KVM; under a broken nested one it spins and never prints a byte."""
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        console = os.path.join(tmp, "console")
        p = subprocess.Popen(
            [qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-accel", "kvm",
             "-cpu", "host", "-m", "256", "-kernel", kit.kernel, "-append", "console=ttyS0 panic=-1",
             "-serial", f"file:{console}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and p.poll() is None:
                if os.path.exists(console) and os.path.getsize(console) > 0:
                    return True
                time.sleep(0.1)
            return os.path.exists(console) and os.path.getsize(console) > 0
        finally:
            if p.poll() is None:
                p.kill()
            p.wait()


def accel(kit: Kit) -> str:
    """``kvm`` or ``tcg``: ``LVSBUS_KIT_ACCEL`` if set, else KVM if it works here (probed once per
    host kernel and cached in the kit directory)."""
    want = os.environ.get("LVSBUS_KIT_ACCEL", "")
    if want in ("kvm", "tcg"):
        return want
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    stamp = os.path.join(kit.root, f"accel-{os.uname().release}")
    try:
        verdict = open(stamp).read().strip()
        if verdict in ("kvm", "tcg"):
            return verdict
    except OSError:
        pass
    verdict = "kvm" if _kvm_boots(kit) else "tcg"
    try:
        with open(stamp, "w") as f:
            f.write(verdict + "\n")
    except OSError:
        pass
    return verdict


class Vm:
    """A booted VM running one command (see ``boot``)."""

    def __init__(self, proc: subprocess.Popen, out_dir: str, console_path: str, qerr, accel: str,
                 timeout: float) -> None:
        self.proc, self.out_dir, self.console_path, self._qerr = proc, out_dir, console_path, qerr
        self.accel = accel
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.note = ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        if self.proc.poll() is None and time.monotonic() > self.deadline:
            self.note = f"qemu killed after {self.deadline - self.started:.0f}s"
            self.stop()
        return self.proc.poll() is None

    def stop(self) -> None:
        """Power the VM off now (SIGTERM to qemu, by PID; SIGKILL if it lingers)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait(self) -> Result:
        """Wait for the command to finish and the VM to power off (or the timeout); stops the VM
        when interrupted (KeyboardInterrupt is re-raised)."""
        try:
            while self.running():
                try:
                    self.proc.wait(max(0.1, min(1.0, self.deadline - time.monotonic())))
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:
            self.stop()
            raise
        return self.result()

    def result(self) -> Result:
        seconds = time.monotonic() - self.started
        try:
            console = open(self.console_path, errors="replace").read()
        except OSError:
            console = ""
        self._qerr.seek(0)
        qerr = self._qerr.read().decode(errors="replace") + self.note
        if qerr.strip():
            console += "\n[qemu] " + qerr.strip()
        try:
            rc: int | None = int(open(os.path.join(self.out_dir, "rc")).read().strip())
        except (OSError, ValueError):
            rc = None
        return Result(rc, console, seconds)


def hidden_by_vm_tmp(paths: list[str]) -> list[str]:
    """The host paths among ``paths`` that the VM's own /tmp (a fresh tmpfs) would hide: a checkout
    cloned under /tmp, a kit or a virtualenv there. Real paths, the outermost of nested ones."""
    found: list[str] = []
    for p in paths:
        if not p:
            continue
        real = os.path.realpath(p)
        if real.startswith("/tmp/") and os.path.exists(real):
            found.append(real)
    out: list[str] = []
    for p in sorted(set(found)):
        if not any(p.startswith(q + "/") for q in out):
            out.append(p)
    return out


def _keep_prelude(keep: list[str], cwd: str) -> str:
    """Shell lines that put the host's ``keep`` paths back over the VM's /tmp tmpfs: a plain (not
    recursive) bind of / sees the overlay under that tmpfs (the host's /tmp, writable in the VM's
    upper layer only), and each path is bound from there to where it was. Then the command's cwd."""
    lines = ["# paths under /tmp on the host (lvsbus.demo.qemu.hidden_by_vm_tmp): the VM's /tmp tmpfs covers them",
             "mkdir -p /.lvsbus-under && mount --bind / /.lvsbus-under || exit 97"]
    for p in keep:
        q = shlex.quote(p)
        lines.append(f"mkdir -p {q} && mount --bind {shlex.quote('/.lvsbus-under' + p)} {q} || exit 97")
    lines.append(f"cd {shlex.quote(cwd)} || exit 97")
    return "\n".join(lines) + "\n"


def boot(kit: Kit, command: str, out_dir: str, cwd: str = "/", env: dict[str, str] | None = None,
         timeout: float = 1800, memory_mb: int = 1024, console_path: str | None = None, cpus: int = 1) -> Vm:
    """Boot the VM to run ``command`` (a /bin/sh script text) in ``cwd`` inside it; return at once.

    ``out_dir`` (host) is ``/mnt/out`` in the VM, writable: put results there. The kit writes its
    own files there too (``env``, ``cmd``, ``rc``, and ``console.log`` unless ``console_path``).
    qemu runs in its own session, so a Ctrl-C at the terminal reaches the caller, who stops it.
    """
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise KitError("qemu-system-x86_64 not found: apt-get install qemu-system-x86")
    os.makedirs(out_dir, exist_ok=True)
    for name in ("rc",):
        try:
            os.unlink(os.path.join(out_dir, name))
        except FileNotFoundError:
            pass
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    # bytecode is written inside the VM (to the tmpfs overlay, gone at power-off): without it every
    # process would compile the sources it imports again, seconds each under TCG
    full_env = {"PATH": path, "HOME": "/root", "LANG": "C.UTF-8", "LVSBUS_IN_VM": "1", "LVSBUS_VM_CWD": cwd,
                "PYTHONDONTWRITEBYTECODE": "", **(env or {})}
    keep = hidden_by_vm_tmp([cwd, kit.root, sys.prefix, *full_env.get("PYTHONPATH", "").split(":")])
    if keep:
        full_env["LVSBUS_VM_CWD"] = "/"  # stage 2 cds before the command; the command cds once the paths are back
    with open(os.path.join(out_dir, "env"), "w") as f:
        for k, v in full_env.items():
            f.write(f"export {k}={shlex.quote(v)}\n")
    with open(os.path.join(out_dir, "cmd"), "w") as f:
        if keep:
            f.write(_keep_prelude(keep, cwd))
        f.write(command + "\n")
    console_path = console_path or os.path.join(out_dir, "console.log")
    how = accel(kit)
    if how == "kvm":
        cpu = ["-accel", "kvm", "-cpu", "host"]
    else:
        cpu = ["-accel", "tcg,thread=multi" if cpus > 1 else "tcg", "-cpu", "max"]
    args = [
        qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        *cpu, "-smp", str(cpus), "-m", str(memory_mb),
        "-kernel", kit.kernel, "-initrd", kit.initrd,
        "-append", "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init net.ifnames=0 mitigations=off",
        "-serial", f"file:{console_path}",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=out,path={out_dir},security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=out,mount_tag=out",
    ]
    qerr = tempfile.TemporaryFile()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=qerr,
                            start_new_session=True)
    return Vm(proc, out_dir, console_path, qerr, how, timeout)


def run(kit: Kit, command: str, out_dir: str, cwd: str = "/", env: dict[str, str] | None = None,
        timeout: float = 1800, memory_mb: int = 1024, console_path: str | None = None, cpus: int = 1) -> Result:
    """Boot the VM, run ``command`` (a /bin/sh script text) in ``cwd`` inside it, return its status.

    ``out_dir`` (host) is ``/mnt/out`` in the VM, writable: put results there.
    """
    return boot(kit, command, out_dir, cwd=cwd, env=env, timeout=timeout, memory_mb=memory_mb,
                console_path=console_path, cpus=cpus).wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lvsbus.demo.qemu")
    ap.add_argument("--dir", default=DEFAULT_DIR)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    r = sub.add_parser("run")
    r.add_argument("--out", default=None)
    r.add_argument("--cwd", default=os.getcwd())
    r.add_argument("--cpus", type=int, default=1)
    r.add_argument("--memory", type=int, default=1024, help="MiB (default %(default)s)")
    r.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    kit = build(a.dir, log=lambda m: print(m, file=sys.stderr))
    if a.cmd == "build":
        print(kit.root)
        return 0
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    out = a.out or tempfile.mkdtemp(prefix="lvsbus-vm-")
    res = run(kit, shlex.join(cmd), out, cwd=a.cwd, cpus=a.cpus, memory_mb=a.memory)
    sys.stdout.write(res.console)
    print(f"\n[kit] rc={res.rc} in {res.seconds:.1f}s (out: {out})", file=sys.stderr)
    return 1 if res.rc is None else res.rc


if __name__ == "__main__":
    sys.exit(main())
