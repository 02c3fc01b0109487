"""A Hugging Face hub-cache view of a local model folder, for servers that read models from the hub cache only.

`transformers serve` (5.19) lists, in `GET /v1/models`, the models of the hub cache (`HF_HUB_CACHE`), not the model
it is pinned to, and answers 500 when that cache does not exist; and it loads a pinned model by hub id. So the
launcher lays the local folder out as the cache's layout for the id `repo_id`:

    <root>/models--<org>--<name>/refs/main            holds "local"
    <root>/models--<org>--<name>/snapshots/local/<f>  a symlink to <model_dir>/<f>, one per file

With `HF_HUB_OFFLINE=1` the server then loads `repo_id` from the local folder (no copy, no network), and lists it.
"""

from __future__ import annotations

import os
from pathlib import Path

REVISION = "local"


def repo_folder(root: Path, repo_id: str) -> Path:
    """The cache folder of `repo_id` under `root` (`models--org--name`)."""
    return root / ("models--" + repo_id.replace("/", "--"))


def ensure_hub_view(model_dir: Path, repo_id: str, root: Path) -> Path:
    """Create or refresh the hub-cache view of `model_dir` as `repo_id` under `root`; return the snapshot folder.

    Links are replaced when they point elsewhere, and links to files no longer in `model_dir` are removed, so the
    view always shows the folder as it is now."""
    repo = repo_folder(root, repo_id)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    wanted = {f.name: f.resolve() for f in model_dir.iterdir() if f.is_file()}
    for link in snapshot.iterdir():
        if link.name not in wanted or not link.is_symlink() or Path(os.readlink(link)) != wanted[link.name]:
            link.unlink()
    for name, target in wanted.items():
        if not (snapshot / name).is_symlink():
            (snapshot / name).symlink_to(target)
    return snapshot
