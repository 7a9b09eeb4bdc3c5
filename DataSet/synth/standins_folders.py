"""Rewriting a stand-in's folder in place: written into a temp folder next to it and renamed, never
left half-written; transformers folders keep their other files (preprocessor) and checkpoint layout."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


def replace_folder(dst: Path, write) -> Path:
    """`write(tmp)` fills a fresh temp folder next to `dst`, which then takes `dst`'s place."""
    dst = Path(dst)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    tmp.chmod(0o755)
    try:
        write(tmp)
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
        if dst.exists():
            dst.rename(old / dst.name)
        tmp.rename(dst)
        shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def _copy_files(src: Path, dst: Path) -> None:
    for f in src.iterdir():
        if f.is_file():
            shutil.copy2(f, dst / f.name)


def _save_transformers(model, src: Path, full_cls=None, **full_kwargs):
    """A writer for `replace_folder`: the folder's other files (preprocessor) copied, then the
    model saved over them. With `full_cls`, the folder's checkpoint as written (e.g. ViT with its
    pooler, which our wrapper does not build) is loaded and the trained weights put into it, so
    the file holds the same tensors as before."""
    def write(tmp: Path):
        _copy_files(src, tmp)
        out = model
        if full_cls is not None:
            from llama.encoders import quiet_progress

            with quiet_progress():
                out = full_cls.from_pretrained(src, local_files_only=True, **full_kwargs)
            missing, unexpected = out.load_state_dict(model.state_dict(), strict=False)
            if unexpected or any(not k.startswith("pooler.") for k in missing):
                raise RuntimeError(f"cannot put trained weights back: {missing[:3]} {unexpected[:3]}")
        from llama.encoders import quiet_progress

        with quiet_progress():
            out.save_pretrained(tmp)
    return write
