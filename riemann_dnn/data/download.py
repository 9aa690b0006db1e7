"""Download MNIST's four gzipped IDX files into the per-user cache (or any directory), from
the first mirror that answers, each checked against its published md5 and written atomically
(a kill leaves no partial file)."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from tqdm.auto import tqdm

from .idx import MNISTError, PathLike, make_temp, unlink_quietly
from .sources import DATA_ENV_VAR, MNIST_FILES, MNIST_GZ_MD5, MNIST_MIRRORS, mnist_cache_dir

__all__ = ["download_mnist"]


class _DownloadError(Exception):
    """One mirror failed for one file (collected into the MNISTError the user sees)."""


def _fetch(url: str, timeout: float) -> Any:
    """Open ``url`` for reading (a response with ``.read(n)`` and ``.headers``)."""
    return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (http(s)/file mirrors)


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _copy_with_md5(response: BinaryIO, out: BinaryIO, bar: Any) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    while chunk := response.read(1 << 16):
        out.write(chunk)
        digest.update(chunk)
        bar.update(len(chunk))
    return digest.hexdigest()


def _download_one(url: str, dest: Path, md5: str, *, progress: bool, timeout: float) -> None:
    """Fetch ``url`` into ``dest`` atomically, checking its md5; raise _DownloadError."""
    fd, tmp = make_temp(dest)
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with _fetch(url, timeout) as response:
                    length = response.headers.get("Content-Length")
                    total = int(length) if length and length.isdigit() else None
                    with tqdm(
                        total=total,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=dest.name,
                        disable=not progress,
                        leave=False,
                    ) as bar:
                        got = _copy_with_md5(response, out, bar)
            except (OSError, http.client.HTTPException, ValueError) as err:
                raise _DownloadError(f"{type(err).__name__}: {err}") from None
            out.flush()
            os.fsync(out.fileno())
        if got != md5.lower():
            raise _DownloadError(
                f"md5 {got} does not match the published {md5} (corrupt or different file)"
            )
        os.replace(tmp, dest)
    except BaseException:
        unlink_quietly(tmp)
        raise


def download_mnist(
    cache_dir: PathLike | None = None,
    *,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    md5: Mapping[str, str] = MNIST_GZ_MD5,
    force: bool = False,
    progress: bool = True,
    timeout: float = 60.0,
) -> Path:
    """Download the four gzipped MNIST files into ``cache_dir`` and return that directory.

    Each ``NAME.gz`` comes from the first mirror that serves it with the expected md5. It is
    written to a temporary file beside its destination and renamed into place only once its
    md5 matches, so an interrupted or corrupt download never leaves a file under the final name.
    Files already present with the right md5 are kept unless ``force``.

    Args:
        cache_dir: destination; default :func:`mnist_cache_dir`, where lookup finds it.
        mirrors: base URLs tried in order (``NAME.gz`` is appended); ``file://`` works too.
        md5: expected md5 of each ``NAME.gz`` (default: the mirrors' published sums).
        force: download again even when a file is already there and valid.
        progress: show a tqdm progress bar per file.
        timeout: seconds to wait on the network before a mirror counts as failed.

    Raises:
        MNISTError: no mirror delivered a file (each mirror's error is listed), or the
            destination cannot be created.

    Example:
        >>> download_mnist()  # doctest: +SKIP
        PosixPath('/home/me/.cache/riemann_dnn/mnist')
    """
    if isinstance(mirrors, str):
        mirrors = (mirrors,)
    if not mirrors:
        raise ValueError("mirrors=(): give at least one base URL, e.g. MNIST_MIRRORS.")
    absent = [name for name in MNIST_FILES if name not in md5]
    if absent:
        raise ValueError(f"md5: no checksum for {', '.join(absent)}; give one per MNIST file.")
    target = Path(cache_dir).expanduser() if cache_dir is not None else mnist_cache_dir()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MNISTError(
            f"cannot create the download directory {target} ({err.strerror or err}); "
            "pass cache_dir=DIR, a writable directory."
        ) from None
    for name in MNIST_FILES:
        dest = target / f"{name}.gz"
        if not force and dest.is_file() and _md5_file(dest) == md5[name].lower():
            continue
        failures: list[str] = []
        for mirror in mirrors:
            url = mirror if mirror.endswith("/") else mirror + "/"
            url += dest.name
            try:
                _download_one(url, dest, md5[name], progress=progress, timeout=timeout)
                break
            except _DownloadError as err:
                failures.append(f"  - {url}: {err}")
        else:
            raise MNISTError(
                f"could not download {dest.name} into {target}:\n"
                + "\n".join(failures)
                + "\nCheck the network connection (and proxy settings), or fetch the four "
                f"NAME.gz files by hand from one of the mirrors into {target} (or any directory, "
                f"then pass --data-dir DIR or set {DATA_ENV_VAR})."
            )
    return target.resolve()
