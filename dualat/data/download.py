"""Downloads of the datasets that have a public source, into data/raw/ (docs/data.md).

CIFAR-10, CIFAR-100 and SVHN come from the URLs and MD5 digests of their torchvision dataset
classes, Tiny-ImageNet-200 (the 32x32 p_ood stand-in; torchvision has no class for it) from
CS231n's zip with its published MD5, Outlier Exposure's 300K Random Images (a p_ood choice,
fetched only when `data.ood` names it) from its author's URL with the MD5 that pytorch-ood
gives (catalog.py). torchvision's own download helper shows a
progress bar and checks every archive's MD5; a failed check is an error, the file is removed and
nothing is extracted. Archives are extracted into a hidden folder and renamed into place, so an
interrupted download never leaves a half-filled dataset folder.

Before any download the host is probed with a short connect timeout (CONNECT_TIMEOUT_S, which also
bounds the DNS lookup): an offline machine gives up in seconds, never hangs. `DUALAT_DOWNLOAD=0`
turns downloads off. 80M Tiny Images and ImageNet have no public download: put them in place.

The pipeline's first stage (`preflight`, dualat/preflight.py) calls `fetch_missing`;
by hand: `python -m dualat.data.download NAME [NAME ...] [--root DIR]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tarfile
import threading
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from dualat.data.catalog import (
    CIFAR,
    DOWNLOADABLE,
    SVHN_URL,
    TINY_300K_FILE,
    TINY_300K_MD5,
    TINY_300K_URL,
    TINYIMAGENET_FOLDER,
    TINYIMAGENET_MD5,
    TINYIMAGENET_URL,
    describe,
    svhn_file,
)
from dualat.data.paths import DataMissingError, Roots, data_roots, download_root, roots_text

DOWNLOAD_ENV = "DUALAT_DOWNLOAD"  # "0" (or false/no/off) turns downloads off
CONNECT_TIMEOUT_S = 5.0  # probe of the host (connect and DNS) before a download
READ_TIMEOUT_S = 60.0  # a transfer that stalls this long fails
SVHN_SPLITS = ("test",)  # SVHN is only an OOD test set (Tables 10-12): no profile trains on it
# The splits a pipeline reads, checked for presence before fetching (CIFAR / Tiny-ImageNet
# archives hold both).
NEEDED_SPLITS = {"cifar10": ("train", "test"), "cifar100": ("train", "test"), "svhn": SVHN_SPLITS}
NEEDED_SPLITS["tinyimagenet32"] = ("train", "val")
NEEDED_SPLITS["tiny_images_300k"] = ("train",)  # one file

_probed: dict[tuple[str, int], str | None] = {}  # (host, port) -> None (reachable) or why not


class DownloadFailed(RuntimeError):
    """A download that did not complete (offline, refused, stalled, or a wrong checksum)."""


def downloads_enabled() -> bool:
    """False when $DUALAT_DOWNLOAD is 0/false/no/off."""
    return os.environ.get(DOWNLOAD_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def missing(names: Sequence[str], root: Roots = None) -> list[str]:
    """The downloadable datasets among `names` that no folder of data_roots(root) holds."""
    wanted = [n for n in dict.fromkeys(names) if n in DOWNLOADABLE]
    return [n for n in wanted if any(describe(n, s, root).startswith("not found") for s in NEEDED_SPLITS[n])]


def fetch(name: str, root: Roots = None, splits: Sequence[str] | None = None) -> Path:
    """Download dataset `name` (one of catalog.DOWNLOADABLE) into download_root(root) and return
    that folder; SVHN: the `splits` files (default SVHN_SPLITS). Raises DownloadFailed."""
    if name not in DOWNLOADABLE:
        raise ValueError(f"{name} has no download; downloadable: {', '.join(DOWNLOADABLE)}")
    splits = splits or SVHN_SPLITS
    why = probe(_url(name, splits[0]))  # before importing torchvision: offline ends in seconds
    if why is not None:
        raise DownloadFailed(why)
    target = download_root(root)
    target.mkdir(parents=True, exist_ok=True)
    for url, step in _steps(name, target, splits):
        try:
            with socket_timeout(READ_TIMEOUT_S):
                step()
        except (OSError, RuntimeError, ValueError, tarfile.TarError, zipfile.BadZipFile) as err:  # MD5, timeouts
            raise DownloadFailed(f"{url}: {type(err).__name__}: {err}") from err
    return target


def fetch_or_raise(name: str, target: Path, splits: Sequence[str] | None = None) -> None:
    """fetch into `target` for a loader's download=True; a failure is DataMissingError."""
    try:
        fetch(name, [target], splits)
    except DownloadFailed as err:
        raise DataMissingError(name, [target], f"the download into {target} failed ({err})") from err


def fetch_missing(names: Sequence[str], root: Roots = None, log: Callable[[str], None] | None = None) -> dict[str, str]:
    """Download the datasets among `names` that are missing and downloadable (unless downloads
    are off). Never raises for a failed download: the dataset stays missing and its stages read
    "not computed". Returns {name: what happened}, each also passed to `log` (default: stderr)."""
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    outcome = {}
    roots = data_roots(root)
    for name in missing(names, root):
        if not downloads_enabled():
            outcome[name] = f"missing from {roots_text(roots)}; not downloaded ({DOWNLOAD_ENV}=0)"
        else:
            log(f"data: {name} missing from {roots_text(roots)}; trying a download into {roots[-1]}")
            try:
                outcome[name] = f"downloaded into {fetch(name, root)}"
            except DownloadFailed as err:
                outcome[name] = f"not downloaded ({err}); its stages read 'not computed'"
        log(f"data: {name} {outcome[name]}")
    return outcome


# --- what a download does ------------------------------------------------------------------------


def _url(name: str, split: str) -> str:
    """The URL of dataset `name` as catalog.py gives it (the host torchvision downloads from)."""
    if name in CIFAR:
        return CIFAR[name][2]
    if name == "tiny_images_300k":
        return TINY_300K_URL
    return SVHN_URL.format(file=svhn_file(split)) if name == "svhn" else TINYIMAGENET_URL


def _steps(name: str, target: Path, splits: Sequence[str]) -> list[tuple[str, Callable[[], None]]]:
    """(URL, download step) pairs of dataset `name`, URLs and MD5s from torchvision's classes."""
    import torchvision.datasets as tvd  # lazy: torchvision imports torch (~2 s), a download needs it

    if name in CIFAR:
        folder, tv_class, _ = CIFAR[name]
        cls = getattr(tvd, tv_class)

        def check(staging: Path) -> None:  # torchvision's MD5 check of every extracted file
            for train in (True, False):
                cls(str(staging), train=train)

        return [(cls.url, lambda: _archive(cls.url, cls.filename, cls.tgz_md5, target, folder, check))]
    if name == "svhn":
        return [(tvd.SVHN.split_list[s][0], lambda s=s: _file(*tvd.SVHN.split_list[s], target)) for s in splits]
    if name == "tiny_images_300k":
        return [(TINY_300K_URL, lambda: _file(TINY_300K_URL, TINY_300K_FILE, TINY_300K_MD5, target))]
    zip_name = TINYIMAGENET_URL.rsplit("/", 1)[1]
    return [
        (TINYIMAGENET_URL, lambda: _archive(TINYIMAGENET_URL, zip_name, TINYIMAGENET_MD5, target, TINYIMAGENET_FOLDER))
    ]


def _archive(
    url: str, filename: str, md5: str, target: Path, folder: str, check: Callable[[Path], None] | None = None
) -> None:
    """Download and MD5-check `filename`, extract it into a hidden folder, `check(that folder)`,
    rename its `folder` into target and delete the archive."""
    from torchvision.datasets.utils import download_and_extract_archive  # lazy: see _steps

    staging = target / f".{folder}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        download_and_extract_archive(url, str(target), str(staging), filename, md5, remove_finished=True)
        if check is not None:
            check(staging)
        (staging / folder).rename(target / folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        (target / filename).unlink(missing_ok=True)  # a corrupt or partial archive too


def _file(url: str, filename: str, md5: str, target: Path) -> None:
    """Download and MD5-check one file under a hidden name, then rename it into place."""
    from torchvision.datasets.utils import download_url  # lazy: see _steps

    partial = target / f".{filename}.partial"
    try:
        download_url(url, str(target), partial.name, md5)
        partial.rename(target / filename)
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """torchvision opens its URLs without a timeout: give every socket of the block one."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(before)


# --- is the host reachable? ----------------------------------------------------------------------


def probe(url: str, timeout: float | None = None) -> str | None:
    """None when a TCP connection to url's host (or to the HTTP(S) proxy urllib would use) opens
    within `timeout` s (default CONNECT_TIMEOUT_S, DNS lookup included), else why not. The answer
    is kept per host in this process."""
    host, port = _endpoint(url)
    if (host, port) not in _probed:
        _probed[(host, port)] = _connect(host, port, CONNECT_TIMEOUT_S if timeout is None else timeout)
    return _probed[(host, port)]


def _endpoint(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


def _connect(host: str, port: int, timeout: float) -> str | None:
    """Open and close one connection in a thread, waiting at most `timeout` s in all (a DNS
    lookup has no timeout of its own)."""
    result: list[str | None] = []

    def attempt() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(None)
        except OSError as err:
            result.append(f"cannot reach {host}:{port} ({err})")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else f"no answer from {host}:{port} within {timeout:g} s"


def main(argv: list[str] | None = None) -> int:
    """`python -m dualat.data.download NAME [NAME ...] [--root DIR]`: download the named datasets
    that are missing; exit status 1 when one could not be downloaded."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", choices=DOWNLOADABLE)
    parser.add_argument("--root", default=None, help="data folder (default: $DUALAT_DATA, then data/raw)")
    args = parser.parse_args(argv)
    outcome = fetch_missing(args.names, args.root)
    for name in args.names:
        if name not in outcome:
            print(f"data: {name} present in {roots_text(data_roots(args.root))}", file=sys.stderr)
    return 1 if any(not text.startswith("downloaded") for text in outcome.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
