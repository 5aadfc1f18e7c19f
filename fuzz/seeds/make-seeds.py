#!/usr/bin/env python3
"""Writes the seed inputs of the fuzz targets into seeds/<target>/ (committed; rerun after
changing a target's input format). Seeds are small valid inputs, so that the fuzzer starts
from tars and layouts that reach deep instead of from nothing."""

import gzip
import hashlib
import io
import json
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tar_of(entries, fmt=tarfile.GNU_FORMAT):
    """entries: (name, type, data_or_linkname, mode, pax)"""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, kind, payload, mode, pax in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.mtime = 1700000000
            if pax:
                info.pax_headers = pax
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                info.linkname = payload
                t.addfile(info)
            elif kind == tarfile.REGTYPE:
                info.size = len(payload)
                t.addfile(info, io.BytesIO(payload))
            else:
                if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                    info.devmajor, info.devminor = 0, 0
                t.addfile(info)
    # tarfile pads to 10 KiB records; the end-of-archive blocks are enough
    return buf.getvalue().rstrip(b"\0") + b"\0" * 1536


R, D, S, L = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE

# the agent's PushTar unpack
put("agent_push_tar", "tree.tar", tar_of([
    ("d", D, b"", 0o755, None),
    ("d/f", R, b"hello\n", 0o644, None),
    ("d/s", S, "f", 0o777, None),
    ("d/h", L, "d/f", 0o644, None),
    ("fifo", tarfile.FIFOTYPE, b"", 0o644, None),
    ("wh", tarfile.CHRTYPE, b"", 0o000, None),
]))
put("agent_push_tar", "pax.tar", tar_of([
    ("x/" + "long" * 40, R, b"data", 0o4755,
     {"SCHILY.xattr.user.k": "v", "SCHILY.xattr.trusted.overlay.opaque": "y"}),
    ("up", S, "../x", 0o777, None),
], fmt=tarfile.PAX_FORMAT))

# the host's volume sync-back (entries ./..., against the pushed tree f, d/g, l, out)
put("volume_sync_back", "changes.tar", tar_of([
    (".", D, b"", 0o755, None),
    ("./f", R, b"changed\n", 0o644, None),
    ("./d", D, b"", 0o700, None),
    ("./d/g", R, b"inner\n", 0o6755, None),
    ("./l", S, "d/g", 0o777, None),
    ("./new", D, b"", 0o755, None),
    ("./new/n", R, b"n\n", 0o600, None),
    ("./new/h", L, "./f", 0o644, None),
]))
put("volume_sync_back", "planted.tar", tar_of([
    ("./a", S, "/etc/hostname", 0o777, None),
    ("./b", L, "./a", 0o777, None),
    ("./out/x", R, b"x", 0o644, None),
    ("./f", D, b"", 0o755, None),
]))

# the OCI layout reader: the blobs oci_layout.rs writes, byte for byte
CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"not really a layer"
MANIFEST_T = "application/vnd.oci.image.manifest.v1+json"


def digest(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


def desc(media, data_digest, size):
    return '{"mediaType":"%s","digest":"%s","size":%d}' % (media, data_digest, size)


manifest = ('{"schemaVersion":2,"mediaType":"%s","config":%s,"layers":[%s]}' % (
    MANIFEST_T,
    desc("application/vnd.oci.image.config.v1+json", digest(CONFIG), len(CONFIG)),
    desc("application/vnd.oci.image.layer.v1.tar", digest(LAYER), len(LAYER)))).encode()
mdesc = json.loads(desc(MANIFEST_T, digest(manifest), len(manifest)))
index = {"schemaVersion": 2, "manifests": [dict(mdesc, platform={"architecture": "amd64", "os": "linux"}),
                                           dict(mdesc, platform={"architecture": "arm64", "os": "linux", "variant": "v8"})]}
put("oci_layout", "index", b"\x00" + json.dumps(index).encode())
put("oci_layout", "manifest", b"\x01" + manifest)
put("oci_layout", "nested", b"\x02" + json.dumps({"schemaVersion": 2, "manifests": [mdesc]}).encode())

layout = [
    ("oci-layout", R, b'{"imageLayoutVersion":"1.0.0"}', 0o644, None),
    ("index.json", R, json.dumps({"schemaVersion": 2, "manifests": [mdesc]}).encode(), 0o644, None),
    ("blobs", D, b"", 0o755, None),
    ("blobs/sha256", D, b"", 0o755, None),
] + [("blobs/sha256/" + digest(b)[7:], R, b, 0o644, None) for b in (CONFIG, LAYER, manifest)]
oci_tar = tar_of(layout)
put("oci_layout", "oci-archive", b"\x03" + oci_tar)
put("oci_layout", "oci-archive-gz", b"\x03" + gzip.compress(oci_tar, mtime=0))
docker = tar_of([
    ("manifest.json", R, json.dumps([{"Config": "c.json", "RepoTags": ["a:b"], "Layers": ["l.tar"]}]).encode(), 0o644, None),
    ("c.json", R, CONFIG, 0o644, None),
    ("l.tar", R, LAYER, 0o644, None),
])
put("oci_layout", "docker-archive", b"\x03" + docker)

# the argv planner: byte 0 picks docker (even) or podman (odd), arguments split at NUL
for i, argv in enumerate([
    ["run", "--rm", "-it", "-v", "/src:/data:ro", "-p", "127.0.0.1:8080:80/tcp", "-e", "A=1", "alpine", "ls", "-t"],
    ["--log-level=debug", "cp", "./f", "ctr:/tmp/f"],
    ["save", "-o", "out.tar", "alpine:latest"],
    ["load", "-i", "in.tar"],
    ["image", "build", "-f", "Dockerfile", "--build-arg", "X=1", "-t", "t:1", "."],
    ["compose", "up", "-d"],
    ["run", "--mount", "type=bind,src=/a,dst=/b", "--env-file", "e.env", "--volume=/x:/y", "busybox"],
]):
    for dialect in (0, 1):
        put("argv_plan", "argv%d-%d" % (i, dialect), bytes([dialect]) + b"\x00".join(a.encode() for a in argv))
