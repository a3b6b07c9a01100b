"""Resumable downloads with size and checksum checks (HTTP(S) with Range, FTP with REST)."""

from __future__ import annotations

import ftplib
import hashlib
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

Progress = Callable[[int, int | None], None]


class DownloadError(RuntimeError):
    """A download failed or its result does not match the published size or checksum."""


def download(
    url: str,
    dest: Path,
    *,
    size: int | None = None,
    md5: str | None = None,
    progress: Progress | None = None,
    timeout_s: float = 60.0,
) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an earlier attempt.

    When ``size`` or ``md5`` is given the result is checked; a file that fails the check is
    moved aside to ``dest.bad`` (kept for inspection, never used) and :class:`DownloadError`
    says what differed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and _matches(dest, size, md5) is None:
        return dest
    part = dest.with_name(dest.name + ".part")
    if size is not None and part.is_file() and part.stat().st_size > size:
        part.unlink()  # longer than the published size: it cannot be a prefix of the right file
    scheme = urllib.parse.urlparse(url).scheme
    if scheme in ("http", "https"):
        _http_fetch(url, part, progress, timeout_s)
    elif scheme == "ftp":
        _ftp_fetch(url, part, progress, timeout_s)
    elif scheme == "file" or scheme == "":
        src = Path(urllib.parse.urlparse(url).path if scheme else url)
        shutil.copyfile(src, part)
    else:
        raise DownloadError(f"unsupported URL scheme {scheme!r} in {url}")
    problem = _matches(part, size, md5)
    if problem:
        bad = dest.with_name(dest.name + ".bad")
        part.replace(bad)
        raise DownloadError(f"{url}: {problem}; the file is kept aside at {bad} and not used")
    part.replace(dest)
    return dest


def md5_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _matches(path: Path, size: int | None, md5: str | None) -> str | None:
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size {actual} bytes, expected {size}"
    if md5 is not None:
        got = md5_file(path)
        if got != md5.lower():
            return f"MD5 {got}, expected {md5.lower()}"
    return None


def _http_fetch(url: str, part: Path, progress: Progress | None, timeout_s: float) -> None:
    have = part.stat().st_size if part.is_file() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout_s)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part file is already complete
            return
        raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"{url}: {e}") from None
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored the Range header: start over
        length = resp.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with part.open("ab" if have else "wb") as f:
            done = have
            while block := resp.read(1 << 20):
                f.write(block)
                done += len(block)
                if progress:
                    progress(done, total)


def _ftp_fetch(url: str, part: Path, progress: Progress | None, timeout_s: float) -> None:
    u = urllib.parse.urlparse(url)
    have = part.stat().st_size if part.is_file() else 0
    try:
        with ftplib.FTP(timeout=timeout_s) as ftp:
            ftp.connect(u.hostname or "", u.port or 21)
            ftp.login(u.username or "anonymous", u.password or "anonymous@")
            ftp.voidcmd("TYPE I")
            total = ftp.size(u.path)
            with part.open("ab" if have else "wb") as f:
                done = have

                def write(block: bytes) -> None:
                    nonlocal done
                    f.write(block)
                    done += len(block)
                    if progress:
                        progress(done, total)

                ftp.retrbinary(f"RETR {u.path}", write, blocksize=1 << 20, rest=have or None)
    except (ftplib.all_errors) as e:  # type: ignore[misc]
        raise DownloadError(f"{url}: {e}") from None
