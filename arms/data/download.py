"""Checked downloads of dataset archives: the one downloader of :mod:`arms.data`.

An archive is streamed to a temporary file inside the target folder while it is hashed; only when
its size and digests match is it unpacked, and its folder is then renamed into place in one step
(so a concurrent reader never sees half a folder). Nothing is left behind on failure.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import urllib.request
import zipfile
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def download_zip(url: str, target: Path, *, folder: str, sha256: str, md5: str | None = None,
                 size: int | None = None, members: Sequence[str] | None = None) -> Path:
    """Download a zip archive, check it, and unpack its ``folder`` into ``target``.

    Parameters
    ----------
    url : str
        ``https://``, ``http://`` or ``file://`` URL of a zip file.
    target : Path
        Folder to unpack into (created if needed).
    folder : str
        Top folder of the archive; ``target / folder`` is returned.
    sha256 : str
        Expected hex digest of the archive (case-insensitive).
    md5 : str, optional
        Also expected (as published beside some archives).
    size : int, optional
        Expected size in bytes.
    members : sequence of str, optional
        Only these files of ``folder`` are extracted (default: all of it).

    Returns
    -------
    pathlib.Path
        ``target / folder``.

    Raises
    ------
    ValueError
        A size or digest differs (nothing is unpacked), or the archive has no ``folder``.
    OSError, urllib.error.URLError, zipfile.BadZipFile
        The download or the archive failed.
    """
    target.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s into %s", url, target)
    with tempfile.TemporaryDirectory(dir=target) as tmp:
        archive = Path(tmp) / "archive.zip"
        sha, md, got_size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
        with urllib.request.urlopen(url, timeout=60) as response, archive.open("wb") as out:
            while chunk := response.read(_CHUNK):
                sha.update(chunk)
                md.update(chunk)
                got_size += len(chunk)
                out.write(chunk)
        got = (got_size, sha.hexdigest(), md.hexdigest())
        want = (got_size if size is None else size, sha256.lower(),
                got[2] if md5 is None else md5.lower())
        if got != want:
            raise ValueError(f"checksum mismatch for {url}: got {got[0]} bytes, sha256 {got[1]}, "
                             f"md5 {got[2]}; want {want[0]} bytes, sha256 {want[1]}, "
                             f"md5 {want[2]}")
        unpacked = Path(tmp) / "unpacked"
        with zipfile.ZipFile(archive) as zf:
            if members is None:
                zf.extractall(unpacked)  # zipfile drops absolute paths and ".." components
            else:  # only what the loader reads (MovieLens 25M's genome alone is 400 MB)
                for name in members:
                    zf.extract(f"{folder}/{name}", unpacked)
        if not (unpacked / folder).is_dir():
            raise ValueError(f"{url} holds no {folder}/ folder")
        final = target / folder
        if final.exists():
            shutil.rmtree(final)
        # Rename inside one filesystem so a concurrent reader never sees half a folder.
        (unpacked / folder).rename(final)
    return final


__all__ = ["download_zip"]
