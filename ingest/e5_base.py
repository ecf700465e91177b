"""What the modules that build kb's embedders share: the default embedder's name, the error for a missing
build dependency, how the folder's JSON files are written and hashed, its build record (kb-build.json:
`write_build_record`, `finished_build`), and the crash-safe build itself (`build_once`: build beside, rename
into place, one builder at a time; `build_from_package` around it, with its progress lines).

A leaf (it imports only kb.errors; filelock when a build runs), so that e5_build, e5_tokenizer, e5_onnx and
minilm_build all import it at the top level and none of them has to import another to reach these. The
builds themselves are kb.ingest.e5_build (multilingual-e5-small) and kb.ingest.minilm_build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kb.errors import ModelError

NAME = "multilingual-e5-small"


def missing(package: str, what: str) -> ModelError:
    """The error for a dependency of kb's embedders that is not installed (a broken install)."""
    return ModelError(f"{what} needs the package '{package}', a dependency of kb that is not installed: "
                      f"pip install '{package}' (or reinstall kb), or set embedding.model to another model")


def write_json(path: Path, data: Any) -> None:
    """`data` as UTF-8 JSON at `path`, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=1), encoding="utf-8")


def sha256_of(path: Path) -> str:
    """The file's sha256, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_digests(folder: Path) -> dict[str, str]:
    """{path relative to `folder`: sha256} of every file under it (for a build's kb-build.json)."""
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    return {f: sha256_of(folder / f) for f in files}


def finished_build(folder: Path, build_format: int) -> dict[str, Any] | None:
    """The folder's kb-build.json record when it is of this format and every file it lists is there, else None."""
    try:
        record = json.loads((folder / "kb-build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("format") != build_format:
        return None
    return record if all((folder / f).is_file() for f in record.get("files", {})) else None


def write_build_record(out: Path, build_format: int, model: str, source: dict[str, Any]) -> None:
    """`out`/kb-build.json, written last: the build's format, the model, where it was built from, and the
    sha256 of every file in `out` (what finished_build checks)."""
    write_json(out / "kb-build.json", {
        "format": build_format, "model": model, "source": source, "files": file_digests(out), "built_at": time.time(),
    })


def say_on_stderr(message: str) -> None:
    """The default progress report of a build: a line on stderr."""
    print(message, file=sys.stderr, flush=True)


def build_once(folder: Path, is_built: Callable[[Path], bool], build: Callable[[Path], None], size: str) -> Path:
    """`folder`, first built by `build(tmp)` unless `is_built(folder)`.

    `build` writes into a new folder beside `folder`, which then replaces it by a rename: a crash leaves no
    half-built model, only a hidden folder that the next build's rename does not see. A file lock keeps two
    processes from building at once; the second finds the first one's build. `size` (the disk a build
    needs, "540 MB") goes into the message for a failed write."""
    from filelock import FileLock

    if is_built(folder):
        return folder
    models_dir = folder.parent
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / f".{folder.name}.lock")):
        if is_built(folder):  # another process built it while we waited
            return folder
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=models_dir))
        try:
            build(tmp)
            if folder.exists():
                shutil.rmtree(folder)  # an incomplete or older build
            os.replace(tmp, folder)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(f"cannot build the embedder '{folder.name}' in {models_dir} ({e}); it needs about "
                             f"{size} of disk: free space there, or set embedding.cache_dir to another folder") from e
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder


def build_from_package(folder: Path, is_built: Callable[[Path], bool], find_source: Callable[[], Path],
                       build: Callable[[Path, Path, Callable[[str], None]], None], size: str, what: str,
                       progress: Callable[[str], None] | None = None) -> Path:
    """`folder`, built once (build_once) by `build(source, tmp, say)` from `find_source()`, the installed
    package's model, with a line to `progress` (default: stderr) when the build starts, naming `what`, and one
    with the time it took."""
    say = progress or say_on_stderr

    def build_into(tmp: Path) -> None:
        source = find_source()
        start = time.perf_counter()
        say(f"kb: building {what} from {source} into {folder} (once; no network) ...")
        build(source, tmp, say)
        say(f"kb: built '{folder.name}' in {time.perf_counter() - start:.0f} s")

    return build_once(folder, is_built, build_into, size)
