"""Raw ShareGPT conversations (JSON) as a length trace, tokenized with a local tokenizer.

The file is a JSON list of conversations `{"id": ..., "conversations": [{"from": "human",
"value": TEXT}, {"from": "gpt", "value": TEXT}, ...]}` (the ShareGPT_V3 dumps). As vLLM's
benchmark does with this dataset, each conversation gives one request: its first turn is the
prompt and its second the output; conversations with fewer than two turns, or whose first two
turns tokenize to nothing, are skipped (the count is kept on the trace). Lengths are counted by the
tokenizer of a local Hugging Face folder (its `tokenizer.json`), so that they are the lengths
your model would see; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from fluid.errors import InputError, MissingDependencyError
from fluid.traces import LengthTrace


@dataclass(frozen=True, eq=False)
class ShareGptTrace(LengthTrace):
    skipped_conversations: int = 0


def load_tokenizer(folder: str | Path):
    """A `tokenizers.Tokenizer` from a Hugging Face folder's tokenizer.json (or that file itself)."""
    try:
        from tokenizers import Tokenizer
    except ModuleNotFoundError:
        raise MissingDependencyError(
            "tokenizing ShareGPT needs the tokenizers package: pip install tokenizers (it comes with pip install -e \".[gpu]\")"
        ) from None
    path = Path(folder).expanduser()
    file = path / "tokenizer.json" if path.is_dir() else path
    if not file.is_file():
        raise InputError(
            f"no tokenizer.json at {file}; point tokenizer at a local Hugging Face model folder saved with a fast "
            f"tokenizer (tokenizer.save_pretrained(folder))",
            field="tokenizer",
        )
    try:
        return Tokenizer.from_file(str(file))
    except Exception as err:  # noqa: BLE001 - the library raises its own exception types
        raise InputError(f"not a tokenizer file this tokenizers version can read ({err}); re-save it", source=str(file)) from None


def _turn_text(turn, *, source: str, where: str) -> str:
    if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
        raise InputError(f"a turn must be an object with a string 'value', got {turn!r:.60}", source=source, field=where)
    return turn["value"]


@lru_cache(maxsize=4)
def _load(path_str: str, mtime_ns: int, tokenizer_dir: str) -> ShareGptTrace:
    del mtime_ns  # cache key only
    from fluid.file_input import read_json

    data = read_json(path_str, what="ShareGPT file")
    if not isinstance(data, list):
        raise InputError(f"a ShareGPT file is a JSON list of conversations, got {type(data).__name__}", source=path_str)
    tokenizer = load_tokenizer(tokenizer_dir)
    prompts: list[str] = []
    outputs: list[str] = []
    skipped = 0
    for i, conv in enumerate(data):
        turns = conv.get("conversations") if isinstance(conv, dict) else None
        if not isinstance(turns, list):
            raise InputError(f"conversation {i} has no 'conversations' list; is this a ShareGPT dump?", source=path_str, field=f"[{i}]")
        if len(turns) < 2:
            skipped += 1
            continue
        prompts.append(_turn_text(turns[0], source=path_str, where=f"[{i}].conversations[0]"))
        outputs.append(_turn_text(turns[1], source=path_str, where=f"[{i}].conversations[1]"))
    if not prompts:
        raise InputError("no conversation has two turns; nothing to replay", source=path_str)
    p_len = [len(e.ids) for e in tokenizer.encode_batch(prompts, add_special_tokens=False)]
    o_len = [len(e.ids) for e in tokenizer.encode_batch(outputs, add_special_tokens=False)]
    keep = [k for k in range(len(p_len)) if p_len[k] > 0 and o_len[k] > 0]
    skipped += len(p_len) - len(keep)
    if not keep:
        raise InputError("every conversation tokenizes to an empty prompt or output", source=path_str)
    prompt = np.asarray([p_len[k] for k in keep], np.int64)
    output = np.asarray([o_len[k] for k in keep], np.int64)
    prompt.setflags(write=False)
    output.setflags(write=False)
    return ShareGptTrace(path_str, prompt, output, skipped)


def load_sharegpt(path: str | Path, tokenizer_dir: str | Path) -> ShareGptTrace:
    p = Path(path)
    try:
        mtime = p.stat().st_mtime_ns
    except OSError as err:
        raise InputError(f"cannot read the ShareGPT file: {err.strerror or err}; check the path", source=str(p)) from None
    return _load(str(p), mtime, str(tokenizer_dir))
