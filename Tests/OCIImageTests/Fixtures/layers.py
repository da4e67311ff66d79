#!/usr/bin/env python3
"""Writes layer tar archives for the image pipeline's tests.

    layers.py rich OUTDIR             four layers exercising every entry type
    layers.py malicious OUTDIR OUTSIDE  layers that try to escape the target

Archives are PAX tars with fixed times, so the same archive is written
every time.
"""
import io
import struct
import sys
import tarfile

MTIME = 1_600_000_000


def entry(name, kind=tarfile.REGTYPE, mode=0o644, uid=0, gid=0, data=b"", link="", xattrs=None, dev=(0, 0)):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid = uid
    info.gid = gid
    info.mtime = MTIME
    info.linkname = link
    info.devmajor, info.devminor = dev
    if xattrs:
        info.pax_headers = {
            "SCHILY.xattr." + key: value.decode("utf-8", "surrogateescape") for key, value in xattrs.items()
        }
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, io.BytesIO(data)
    return info, None


def directory(name, mode=0o755, **kwargs):
    return entry(name, tarfile.DIRTYPE, mode=mode, **kwargs)


def symlink(name, target):
    return entry(name, tarfile.SYMTYPE, mode=0o777, link=target)


def hardlink(name, target):
    return entry(name, tarfile.LNKTYPE, link=target)


def write(path, entries):
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
        for info, data in entries:
            archive.addfile(info, data)


# security.capability granting cap_net_raw (13), effective, revision 2.
CAPABILITY = struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
LONG_DIRECTORY = "usr/share/" + "/".join(["deeply-nested-directory-%02d" % i for i in range(6)])
LONG_NAME = "n" * 200


def rich(out):
    write(f"{out}/layer1.tar", [
        directory("etc"),
        entry("etc/hostname", data=b"base\n"),
        symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        directory("tmp", mode=0o1777),
        directory("usr"),
        directory("usr/bin"),
        entry("usr/bin/tool", mode=0o755, data=b"#!/bin/sh\necho tool\n"),
        hardlink("usr/bin/tool-hardlink", "usr/bin/tool"),
        entry("usr/bin/setuid", mode=0o4755, data=b"suid"),
        entry("usr/bin/setgid", mode=0o2755, uid=0, gid=50, data=b"sgid"),
        entry("usr/bin/ping", mode=0o755, data=b"ping", xattrs={"security.capability": CAPABILITY}),
        directory("usr/lib", mode=0o750, uid=3, gid=4),
        entry("usr/lib/libbase.so", data=b"base library"),
        symlink("lib", "usr/lib"),
        directory("usr/share"),
        directory("usr/share/doc"),
        entry("usr/share/doc/na\u00efve-\u6587\u5b57.txt", data="non-ASCII \u2713\n".encode()),
        *[directory("/".join(LONG_DIRECTORY.split("/")[: i + 1])) for i in range(2, len(LONG_DIRECTORY.split("/")))],
        entry(f"{LONG_DIRECTORY}/{LONG_NAME}", data=b"long name\n"),
        directory("opt"),
        directory("opt/app", mode=0o700, uid=1000, gid=1000),
        entry("opt/app/owned", mode=0o600, uid=1000, gid=1000, data=b"owned",
              xattrs={"user.comment": b"hello", "trusted.gantry": b"\x00\x01binary\xff"}),
        directory("var"),
        directory("var/lib"),
        entry("var/lib/fifo", tarfile.FIFOTYPE, mode=0o640),
        directory("dev"),
        entry("dev/null-copy", tarfile.CHRTYPE, mode=0o666, dev=(1, 3)),
        entry("dev/loop-copy", tarfile.BLKTYPE, mode=0o660, gid=6, dev=(7, 0)),
        directory("dir-to-remove"),
        entry("dir-to-remove/inner", data=b"gone soon"),
        directory("dir-opaque"),
        entry("dir-opaque/a", data=b"a"),
        directory("dir-opaque/sub"),
        entry("dir-opaque/sub/c", data=b"c"),
        entry("file-to-remove", data=b"bye"),
        symlink("symlink-becomes-file", "etc/hostname"),
        entry("file-becomes-symlink", data=b"a file first"),
        entry("file-with-hardlink-above", data=b"linked from layer 2"),
    ])
    write(f"{out}/layer2.tar", [
        entry(".wh.file-to-remove"),
        entry(".wh.dir-to-remove"),
        directory("dir-opaque", mode=0o711),
        entry("dir-opaque/.wh..wh..opq"),
        entry("dir-opaque/new", data=b"new"),
        entry("etc/hostname", data=b"changed\n"),
        entry("symlink-becomes-file", data=b"now a file"),
        symlink("file-becomes-symlink", "usr/bin/tool"),
        # No entry for the parent: it must keep the lower layer's metadata.
        entry("usr/lib/libnew.so", data=b"new library"),
        # Through the lower layer's relative symlink lib -> usr/lib.
        entry("lib/libthrough.so", data=b"through a symlink"),
        hardlink("hardlink-to-lower", "file-with-hardlink-above"),
    ])
    write(f"{out}/layer3.tar", [
        symlink("symlink-becomes-file", "etc/hostname"),
        entry("file-becomes-symlink", data=b"a file again"),
        directory("dir-to-remove", mode=0o700),
        entry("dir-to-remove/reborn", data=b"back"),
    ])


def malicious(out, outside):
    escape = "../" * 12 + outside.lstrip("/")
    write(f"{out}/absolute.tar", [entry(f"{outside}/absolute-pwned", data=b"pwned")])
    write(f"{out}/dotdot.tar", [
        entry("fine", data=b"fine"),
        entry(f"{escape}/dotdot-pwned", data=b"pwned"),
        entry("a/../../dotdot-pwned-2", data=b"pwned"),
    ])
    write(f"{out}/symlink.tar", [
        symlink("escape", outside),
        entry("escape/symlink-pwned", data=b"pwned"),
    ])
    write(f"{out}/plant.tar", [
        symlink("planted-absolute", outside),
        symlink("planted-relative", escape),
    ])
    write(f"{out}/through.tar", [
        entry("planted-absolute/through-pwned", data=b"pwned"),
        entry("planted-relative/through-pwned", data=b"pwned"),
    ])
    write(f"{out}/hardlink.tar", [
        symlink("etc-link", outside),
        hardlink("hardlink-absolute", f"{outside}/victim"),
        hardlink("hardlink-dotdot", f"{escape}/victim"),
        hardlink("hardlink-through-symlink", "etc-link/victim"),
    ])
    write(f"{out}/overlay-xattr.tar", [
        entry("sneaky", data=b"x", xattrs={
            "trusted.overlay.opaque": b"y", "user.overlay.redirect": b"/etc", "user.ok": b"1",
        }),
    ])
    write(f"{out}/device.tar", [
        entry("fine", data=b"fine"),
        entry("evil-device", tarfile.CHRTYPE, mode=0o666, dev=(1, 1)),
    ])


def edge(out):
    """Layers that once tripped the unpacker up; each name says what it does."""
    write(f"{out}/replace-deep-directory.tar", [
        directory("a"), directory("a/b"), entry("a/b/inner", data=b"x"), entry("a/b", data=b"now a file"),
    ])
    write(f"{out}/lower-doc.tar", [
        directory("usr"), directory("usr/share"), directory("usr/share/doc"), entry("usr/share/doc/readme", data=b"r"),
        directory("d"), entry("d/old", data=b"old"),
        directory("etc", xattrs={"user.a": b"1"}),
        directory("ro", mode=0o555),
        directory("x"), entry("x/old", data=b"old"),
        symlink("lib", "usr/lib"), directory("usr/lib"),
        entry("bin-ping", mode=0o755, data=b"ping", xattrs={"user.note": b"n"}),
    ])
    write(f"{out}/upper-doc.tar", [
        entry("usr/share/.wh.doc"),
        entry("d/sub/new", data=b"new"),
        entry("d/.wh..wh..opq"),
        directory("etc", xattrs={"user.b": b"2"}),
        entry("ro/y", data=b"y"),
        entry(".wh.x"),
        entry("x/y", data=b"y"),
        directory("lib/plugins", mode=0o751),
        hardlink("bin-ping2", "bin-ping"),
    ])
    write(f"{out}/relink.tar", [
        directory("usr"), directory("usr/lib"), directory("x"), directory("y"),
        symlink("lib", "usr/lib"), entry("lib/a", data=b"a"),
        directory("lib"), entry("lib/b", data=b"b"),
        symlink("cur", "x"), entry("cur/1", data=b"1"),
        symlink("cur", "y"), entry("cur/2", data=b"2"),
    ])
    depth = 1500
    write(f"{out}/deep.tar", [
        *[directory("/".join(["a"] * level)) for level in range(1, depth + 1)],
        entry("/".join(["a"] * depth) + "/f", data=b"deep"),
        entry("a", data=b"flat again"),
    ])
    write(f"{out}/children-first.tar", [
        directory("p/q/r", mode=0o700), entry("p/q/r/f", data=b"f"), directory("p", mode=0o500), directory("p/q", mode=0o500),
    ])
    big = b"z" * (20 << 20)
    write(f"{out}/long-name-then-data.tar", [
        entry("n" * 300, data=b"too long"), entry("big", data=big),
    ])
    write(f"{out}/many-then-big.tar", [
        *[entry(f"small-{i}", data=b"s") for i in range(100)], entry("big", data=big),
    ])
    # A header whose checksum is damaged, hiding another header in its data.
    hidden = tarfile.TarInfo("hidden")
    hidden.size = 0
    hidden.mtime = MTIME
    cover_data = hidden.tobuf(format=tarfile.USTAR_FORMAT)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for info, data in [entry("visible", data=b"v"), entry("cover", data=cover_data)]:
            archive.addfile(info, data)
    raw = bytearray(buffer.getvalue())
    raw[1024 + 148:1024 + 156] = b"0000000\0"
    with open(f"{out}/damaged-header.tar", "wb") as output:
        output.write(raw)


if __name__ == "__main__":
    if sys.argv[1] == "rich":
        rich(sys.argv[2])
    elif sys.argv[1] == "edge":
        edge(sys.argv[2])
    elif sys.argv[1] == "malicious":
        malicious(sys.argv[2], sys.argv[3])
    else:
        sys.exit(f"unknown fixture set {sys.argv[1]}")
