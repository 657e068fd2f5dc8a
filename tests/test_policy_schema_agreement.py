"""The one policy reader and the JSON Schema agree on every file of a mutated corpus.

The corpus is built from the golden files in tests/data/ (and a per-class variant of the Nested
WAIT one): every key deleted, an unknown key added to every object, every value replaced by values
of other types and at the edges of its range (0, −1, 0.5, 1, 1.5, an integral float), every list
emptied, shortened and lengthened. For each file:
- the schema refuses it ⇒ the reader refuses it (the reader enforces everything the schema says);
- the reader accepts it ⇒ the schema accepts it;
- the schema accepts and the reader refuses only for a rule the schema cannot state (the threshold
  conditions, the segment chain, θ_k solving its equation, unique class names), and the test
  checks the reader's message names that rule.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import jsonschema
import pytest

from fluid.errors import InputError
from thresholds.policy import SCHEMA_PATH
from thresholds.policy_parse import parse_policy

DATA = Path(__file__).parent / "data"
VALIDATOR = jsonschema.Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))

# what only the reader checks, as its messages say it
SEMANTIC_RULES = (
    "violate their conditions",  # the WAIT / Nested WAIT threshold conditions, re-evaluated
    "segment 1 starts at the prefill",  # contiguous segments from stage 0
    "thresholds must be non-increasing",
    "(first_stage, and ≥ 1)",  # last_stage ≥ first_stage
    "does not solve exp",  # θ_k is the root of its equation
    "class names must be unique",
    "must be the chosen bound's",  # capped.memory.required_tokens is the chosen bound's value
    "the theorem bound was chosen but",
)
REPLACEMENTS = (None, True, "", -1, 0, 0.5, 1, 1.5, 2.0, [], {})


def _golden() -> dict[str, dict]:
    names = ("golden_policy_wait.json", "golden_policy_nested.json", "golden_policy_wait_capped.json",
             "golden_policy_nested_capped.json")
    docs = {name: json.loads((DATA / name).read_text()) for name in names}
    # a free-form record of the segment search; the schema and the reader both ignore its content
    docs["golden_policy_nested.json"]["options"].pop("segments_curve", None)
    per_class = copy.deepcopy(docs["golden_policy_nested.json"])
    per_class["prefill_mode"] = "per_class"
    per_class["instances"] = [{"prefill_tokens": per_class["representative_prefill_tokens"],
                               "type_names": list(per_class["workload"]["rates_per_s"]),
                               "segments": copy.deepcopy(per_class["segments"]),
                               "memory_required_tokens": per_class["memory_required_tokens"]}]
    docs["per_class"] = per_class
    return docs


def _nodes(obj, path=()):
    yield path, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i in sorted({0, 1, len(obj) - 1} & set(range(len(obj)))):  # the first two and the last
            yield from _nodes(obj[i], path + (i,))


def _at(doc, path):
    for p in path:
        doc = doc[p]
    return doc


# the capped goldens repeat the common sections the others already cover: mutate what they add
FOCUS = {"golden_policy_wait_capped.json": ("service_rule", "capped", "classes"),
         "golden_policy_nested_capped.json": ("service_rule", "capped", "segments")}


def _mutations(doc, focus=None):
    """(label, mutated document) for every mutation of every node (under `focus` keys, if given)."""
    for path, value in list(_nodes(doc)):
        if focus is not None and path and path[0] not in focus:
            continue
        where = "/".join(map(str, path)) or "<root>"
        if path:
            for new in REPLACEMENTS + ((value + 1, -value) if isinstance(value, (int, float)) and not isinstance(value, bool) else ()):
                if type(new) is type(value) and new == value:
                    continue
                m = copy.deepcopy(doc)
                _at(m, path[:-1])[path[-1]] = new
                yield f"{where} = {new!r}", m
            if isinstance(path[-1], str):
                m = copy.deepcopy(doc)
                del _at(m, path[:-1])[path[-1]]
                yield f"del {where}", m
        if isinstance(value, dict):
            m = copy.deepcopy(doc)
            _at(m, path)["zz_unknown"] = 1
            yield f"{where} + unknown key", m
        if isinstance(value, list) and value:
            for label, new in (("without its first item", value[1:]), ("with its last item twice", value + value[-1:])):
                m = copy.deepcopy(doc)
                if path:
                    _at(m, path[:-1])[path[-1]] = copy.deepcopy(new)
                yield f"{where} {label}", m


def _corpus():
    out = []
    for name, doc in _golden().items():
        out.append((name, "unchanged", doc))
        out += [(name, label, m) for label, m in _mutations(doc, FOCUS.get(name))]
    return out


CORPUS = _corpus()
SCHEMA_OK = [VALIDATOR.is_valid(doc) for _, _, doc in CORPUS]


def _reader_verdict(doc) -> str | None:
    """None when the reader accepts the document, else its message."""
    try:
        parse_policy(json.loads(json.dumps(doc)), source="corpus.json")
    except InputError as err:
        return str(err)
    return None


def test_the_corpus_is_large_and_mixed():
    schema_ok = sum(SCHEMA_OK)
    assert len(CORPUS) > 2000 and 100 < schema_ok < len(CORPUS) - 500, (len(CORPUS), schema_ok)


@pytest.mark.parametrize("name", ["golden_policy_wait.json", "golden_policy_nested.json", "per_class",
                                  "golden_policy_wait_capped.json", "golden_policy_nested_capped.json"])
def test_reader_and_schema_agree_on_every_mutation(name):
    disagreements, semantic = [], 0
    for (source, label, doc), schema_ok in zip(CORPUS, SCHEMA_OK):
        if source != name:
            continue
        message = _reader_verdict(doc)
        if schema_ok and message is None:
            continue
        if not schema_ok and message is not None:
            continue
        if schema_ok and any(rule in message for rule in SEMANTIC_RULES):
            semantic += 1
            continue
        first = next(iter(VALIDATOR.iter_errors(doc)), None)
        disagreements.append(f"{label}: schema {'accepts' if schema_ok else 'refuses (' + first.message[:80] + ')'}, "
                             f"reader {'accepts' if message is None else 'refuses: ' + message[:160]}")
    assert not disagreements, f"{len(disagreements)} disagreements:\n" + "\n".join(disagreements[:40])
    assert semantic > 0  # the reader's own rules were exercised, not only the schema's


def test_integral_floats_read_as_integers_like_the_schema_says():
    doc = _golden()["golden_policy_wait.json"]
    doc["kv_capacity_tokens"] = float(doc["kv_capacity_tokens"])
    assert VALIDATOR.is_valid(doc)
    policy = parse_policy(doc)
    assert type(policy.kv_capacity_tokens) is int and policy.kv_capacity_tokens == 4800
    assert not math.isnan(policy.fluid.load_factor)
