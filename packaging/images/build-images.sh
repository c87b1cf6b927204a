#!/usr/bin/env bash
# Build the local container images that tests and examples use, without Docker and
# without a registry:
#
#   registry.k8s.io/pause:3.6        the sandbox ("pause") image containerd's CRI expects
#   docker.io/library/busybox:local  a general-purpose image for test and example containers
#   docker.io/library/busybox:other  the same files under another image id (image changes)
#   docker.io/library/gc-victim:1    likewise, for the image garbage collection test
#
# Each image is written as an OCI image-layout tarball (oci-layout, index.json, blobs/sha256/...)
# that `ctr -n k8s.io images import FILE` accepts and names from the index annotations.
# All images share one gzip layer: the static busybox binary at /bin/busybox, a symlink for
# every applet (in /bin, and also at its conventional place such as /sbin/ip or /usr/bin/wget),
# /etc/passwd and /etc/group (root and nobody), /root, /tmp (1777), /var/www.
#
# The build is reproducible: fixed mtimes, owners and ordering, so the same busybox binary
# always gives the same digests.
#
# Usage: build-images.sh [OUT_DIR]      (default /var/tmp/rkubelet-images)
# Output: OUT_DIR/{pause-3.6,busybox-local,busybox-other,gc-victim}.tar
# Environment: BUSYBOX=/path/to/static/busybox (default /bin/busybox)
set -euo pipefail

out_dir="${1:-/var/tmp/rkubelet-images}"
busybox="${BUSYBOX:-/bin/busybox}"

# Prefer Debian's interpreter: under sudo the PATH may not hold any other python3.
python=/usr/bin/python3
[[ -x "$python" ]] || python="$(command -v python3 || true)"
if [[ -z "$python" ]]; then
    echo "build-images: python3 is required (apt-get install -y python3)" >&2
    exit 1
fi
if [[ ! -x "$busybox" ]]; then
    echo "build-images: $busybox not found (apt-get install -y busybox-static)" >&2
    exit 1
fi
# A dynamically linked busybox would not run inside an image that has no libc.
if ! "$busybox" --list-full >/dev/null 2>&1; then
    echo "build-images: $busybox does not support --list-full; a full busybox-static is needed" >&2
    exit 1
fi

mkdir -p "$out_dir"
echo "build-images: building images from $busybox into $out_dir"

"$python" - "$busybox" "$out_dir" <<'PY'
"""Write OCI image-layout tarballs for the pause and busybox images (stdlib only)."""
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile

BUSYBOX, OUT_DIR = sys.argv[1], sys.argv[2]
# 2000-01-01T00:00:00Z: a fixed timestamp keeps every digest stable between builds.
EPOCH = 946684800
CREATED = "2000-01-01T00:00:00Z"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The pause process: sleep forever, exit 0 at once on SIGTERM or SIGINT. `wait` returns as
# soon as a trapped signal arrives, so the trap runs without waiting for the sleep to end.
PAUSE_SCRIPT = 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done'

IMAGES = [
    {
        "file": "pause-3.6.tar",
        "name": "registry.k8s.io/pause:3.6",
        "tag": "3.6",
        "config": {"Entrypoint": ["/bin/sh", "-c", PAUSE_SCRIPT], "WorkingDir": "/"},
    },
    {
        "file": "busybox-local.tar",
        "name": "docker.io/library/busybox:local",
        "tag": "local",
        "config": {"Cmd": ["sh"]},
    },
    # Same root filesystem, different config: a distinct image id for tests that need a
    # second image (changing a container's image, image garbage collection).
    {
        "file": "busybox-other.tar",
        "name": "docker.io/library/busybox:other",
        "tag": "other",
        "config": {"Cmd": ["sh"], "Labels": {"io.rkubelet.variant": "other"}},
    },
    {
        "file": "gc-victim.tar",
        "name": "docker.io/library/gc-victim:1",
        "tag": "1",
        "config": {"Cmd": ["sh"], "Labels": {"io.rkubelet.variant": "gc-victim"}},
    },
]

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
GROUP = "root:x:0:\nnobody:x:65534:\n"
INDEX_HTML = "<html><body><h1>rkubelet example</h1><p>served by busybox httpd</p></body></html>\n"


def applet_paths():
    """Every place an applet link goes: /bin/NAME for all, plus busybox's own idea of home."""
    out = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True).stdout
    paths = set()
    for line in out.split():
        line = line.strip("/")
        name = os.path.basename(line)
        if not name or name in ("busybox", "linuxrc"):
            continue
        paths.add("bin/" + name)
        if line != "bin/" + name:
            paths.add(line)
    return sorted(paths)


def info(name, kind, mode, size=0, link=""):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.size = size
    ti.linkname = link
    ti.mtime = EPOCH
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def layer_tar():
    """The one root filesystem layer, as an uncompressed tar (bytes)."""
    dirs = {
        "bin": 0o755, "sbin": 0o755, "usr": 0o755, "usr/bin": 0o755, "usr/sbin": 0o755,
        "etc": 0o755, "root": 0o700, "tmp": 0o1777, "var": 0o755, "var/www": 0o755,
        "home": 0o755, "dev": 0o755, "proc": 0o555, "sys": 0o555,
    }
    files = {"etc/passwd": PASSWD, "etc/group": GROUP, "var/www/index.html": INDEX_HTML}
    with open(BUSYBOX, "rb") as f:
        busybox = f.read()
    links = applet_paths()
    for link in links:
        parent = os.path.dirname(link)
        while parent and parent not in dirs:
            dirs[parent] = 0o755
            parent = os.path.dirname(parent)

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            tar.addfile(info(d + "/", tarfile.DIRTYPE, dirs[d]))
        tar.addfile(info("bin/busybox", tarfile.REGTYPE, 0o755, len(busybox)), io.BytesIO(busybox))
        for name in sorted(files):
            data = files[name].encode()
            tar.addfile(info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
        for link in links:
            tar.addfile(info(link, tarfile.SYMTYPE, 0o777, link="/bin/busybox"))
    return buf.getvalue(), len(links)


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def write_layout(path, blobs, index):
    """Write an OCI layout tarball holding `blobs` (digest -> bytes) and `index`."""
    tmp = path + ".tmp"
    entries = [("oci-layout", canonical({"imageLayoutVersion": "1.0.0"})),
               ("index.json", canonical(index))]
    with tarfile.open(tmp, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs/", "blobs/sha256/"):
            tar.addfile(info(d, tarfile.DIRTYPE, 0o755))
        for digest in sorted(blobs):
            entries.append(("blobs/sha256/" + digest.split(":", 1)[1], blobs[digest]))
        for name, data in entries:
            tar.addfile(info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    os.replace(tmp, path)


def main():
    raw, nlinks = layer_tar()
    gz = io.BytesIO()
    # mtime=0 and no file name in the gzip header: the compressed bytes are reproducible too.
    with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=6) as z:
        z.write(raw)
    layer = gz.getvalue()
    layer_digest, diff_id = sha(layer), sha(raw)

    for image in IMAGES:
        cfg = {"Env": [PATH_ENV]}
        cfg.update(image["config"])
        config = canonical({
            "architecture": "amd64",
            "os": "linux",
            "created": CREATED,
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": CREATED, "created_by": "rkubelet packaging/images/build-images.sh"}],
        })
        manifest = canonical({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest, "size": len(layer)}],
        })
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha(manifest),
                "size": len(manifest),
                "platform": {"architecture": "amd64", "os": "linux"},
                # containerd names the image from io.containerd.image.name; the OCI ref name
                # (a tag only, per the image-layout spec) is there for other tools.
                "annotations": {
                    "io.containerd.image.name": image["name"],
                    "org.opencontainers.image.ref.name": image["tag"],
                },
            }],
        }
        blobs = {layer_digest: layer, sha(config): config, sha(manifest): manifest}
        out = os.path.join(OUT_DIR, image["file"])
        write_layout(out, blobs, index)
        print("build-images: %s -> %s (manifest %s, %d applet links)"
              % (image["name"], out, sha(manifest), nlinks))


main()
PY
