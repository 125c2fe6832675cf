"""The kernel-tier kit: a Debian kernel that has IPVS, booted under qemu, running one command.

This machine's kernel (and CI's) is built without IPVS, so the applier's kernel tests run in a VM:

* ``build()`` ``apt-get download``s Debian's kernel image (the one ``linux-image-amd64`` depends
  on) and kmod into a cache directory, unpacks them with ``dpkg -x`` (no system install), runs
  depmod on the unpacked modules, and writes a busybox initramfs holding the few modules needed to
  reach the host's root (virtio, 9p, overlay) and an ``/init`` script.
* ``run(command)`` boots that kernel (``-kernel vmlinuz``, TCG, one CPU): ``/init`` mounts the
  host's ``/`` read-only over 9p under a tmpfs overlay, shares one writable host directory at
  ``/mnt/out``, brings ``lo`` up (with no interface up, IPVS refuses every real server address as
  "not unicast"), points ``/proc/sys/kernel/modprobe`` at the kit's modprobe (so ``ip_vs`` and its
  schedulers auto-load), chroots and runs the command as a child of PID 1, writes its exit status
  to ``/mnt/out/rc`` and powers off.

CLI: ``python -m tests.kernel.kit build`` / ``python -m tests.kernel.kit run -- CMD...``.
The cache defaults to ``/var/cache/lvsbus-kit`` (``LVSBUS_KIT_DIR`` overrides it). Needs root
(apt-get download, dpkg -x) and the packages qemu-system-x86, busybox-static, kmod, cpio.
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


def run(kit: Kit, command: str, out_dir: str, cwd: str = "/", env: dict[str, str] | None = None,
        timeout: float = 1800, memory_mb: int = 1024, console_path: str | None = None) -> Result:
    """Boot the VM, run ``command`` (a /bin/sh script text) in ``cwd`` inside it, return its status.

    ``out_dir`` (host) is ``/mnt/out`` in the VM, writable: put results there.
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
    full_env = {"PATH": path, "HOME": "/root",
                "LANG": "C.UTF-8", "LVSBUS_IN_VM": "1", "LVSBUS_VM_CWD": cwd,
                "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    with open(os.path.join(out_dir, "env"), "w") as f:
        for k, v in full_env.items():
            f.write(f"export {k}={shlex.quote(v)}\n")
    with open(os.path.join(out_dir, "cmd"), "w") as f:
        f.write(command + "\n")
    console_path = console_path or os.path.join(out_dir, "console.log")
    args = [
        qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", str(memory_mb),
        "-kernel", kit.kernel, "-initrd", kit.initrd,
        "-append", "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init net.ifnames=0 mitigations=off",
        "-serial", f"file:{console_path}",
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=out,path={out_dir},security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=out,mount_tag=out",
    ]
    t0 = time.monotonic()
    try:
        p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        qerr = p.stderr
    except subprocess.TimeoutExpired:
        qerr = f"qemu killed after {timeout}s"
    seconds = time.monotonic() - t0
    try:
        console = open(console_path, errors="replace").read()
    except OSError:
        console = ""
    if qerr.strip():
        console += "\n[qemu] " + qerr.strip()
    try:
        rc: int | None = int(open(os.path.join(out_dir, "rc")).read().strip())
    except (OSError, ValueError):
        rc = None
    return Result(rc, console, seconds)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.kernel.kit")
    ap.add_argument("--dir", default=DEFAULT_DIR)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build")
    r = sub.add_parser("run")
    r.add_argument("--out", default=None)
    r.add_argument("--cwd", default=os.getcwd())
    r.add_argument("command", nargs=argparse.REMAINDER)
    a = ap.parse_args(argv)
    kit = build(a.dir, log=lambda m: print(m, file=sys.stderr))
    if a.cmd == "build":
        print(kit.root)
        return 0
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    out = a.out or tempfile.mkdtemp(prefix="lvsbus-vm-")
    res = run(kit, shlex.join(cmd), out, cwd=a.cwd)
    sys.stdout.write(res.console)
    print(f"\n[kit] rc={res.rc} in {res.seconds:.1f}s (out: {out})", file=sys.stderr)
    return 1 if res.rc is None else res.rc


if __name__ == "__main__":
    sys.exit(main())
