"""The suite's small word-level tokenizer, built with the `tokenizers` library and loaded from a
local file or folder with `transformers.PreTrainedTokenizerFast` (never from the hub).

Layout (BERT-like, what ViLT's text embeddings expect): lower-casing normaliser, whitespace /
punctuation pre-tokenizer, a `WordLevel` model over the special tokens ``[PAD]`` (id 0),
``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]`` followed by `language.VOCABULARY` in sorted order,
and the post-processor ``[CLS] A [SEP]`` (pairs: ``[CLS] A [SEP] B [SEP]`` with token type 1
on B). Built by ``scripts/build_vl_tokenizer.py``; the bundled copy is
``vpeft/assets/vl_synth_tokenizer.json``.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from vpeft.atomic import atomic_write_text
from vpeft.errors import ConfigError, DatasetError

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
BUNDLED_TOKENIZER = "vl_synth_tokenizer.json"


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(
            f"the vision-language data needs the {module!r} package; install the extra: "
            "pip install 'vpeft[vl]' (transformers and tokenizers)"
        ) from None


def build_tokenizer_json(words: Sequence[str] | None = None) -> str:
    """The ``tokenizer.json`` text of a WordLevel tokenizer over ``words`` (default: the suite's
    `VOCABULARY`); deterministic, so rebuilding gives the same file."""
    tk = _require("tokenizers")
    from tokenizers import normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel

    if words is None:
        from .language import VOCABULARY as words
    ordered = list(SPECIAL_TOKENS) + sorted(set(words) - set(SPECIAL_TOKENS))
    vocab = {w: i for i, w in enumerate(ordered)}
    tok = tk.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    cls, sep = vocab["[CLS]"], vocab["[SEP]"]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    for token in SPECIAL_TOKENS:
        tok.add_special_tokens([token])  # marks them special; ids stay those of the vocab
    return tok.to_str(pretty=True) + "\n"


def write_tokenizer(path: str | Path, words: Sequence[str] | None = None) -> Path:
    """Write ``tokenizer.json`` (``path`` a file, or a folder that receives ``tokenizer.json``)
    atomically; returns the file written."""
    path = Path(path)
    target = path / "tokenizer.json" if path.suffix != ".json" else path
    atomic_write_text(target, build_tokenizer_json(words))
    return target


def bundled_tokenizer_path() -> Path:
    """The tokenizer file shipped with vpeft."""
    return Path(str(resources.files("vpeft") / "assets" / BUNDLED_TOKENIZER))


def load_tokenizer(path: str | Path | None = None) -> Any:
    """A `transformers.PreTrainedTokenizerFast` from a local ``tokenizer.json`` file, or a folder
    holding one (default: the bundled suite tokenizer), with BERT's special-token roles."""
    _require("transformers")
    from transformers import PreTrainedTokenizerFast

    file = bundled_tokenizer_path() if path is None else Path(path).expanduser()
    if file.is_dir():
        file = file / "tokenizer.json"
    if not file.is_file():
        raise DatasetError(
            f"tokenizer file {file} does not exist; pass a tokenizer.json file or a folder "
            "holding one (build the suite's with scripts/build_vl_tokenizer.py)"
        )
    try:
        return PreTrainedTokenizerFast(
            tokenizer_file=str(file),
            pad_token="[PAD]",
            unk_token="[UNK]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            mask_token="[MASK]",
        )
    except Exception as exc:  # the tokenizers parser raises plain Exceptions
        raise DatasetError(f"cannot read tokenizer file {file}: {exc}") from None


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> dict[str, Any]:
    """Tokenize ``texts`` padded / truncated to ``max_length``: int64 tensors ``input_ids``,
    ``attention_mask``, ``token_type_ids`` of shape ``(len(texts), max_length)``."""
    out = tokenizer(
        list(texts),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
        return_token_type_ids=True,
    )
    return {k: out[k].long() for k in ("input_ids", "attention_mask", "token_type_ids")}
