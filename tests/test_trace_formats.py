"""Real trace formats: Azure 2024 (timezone suffix), BurstGPT, Vidur's arrived_at, raw ShareGPT JSON
tokenized with a local tokenizer folder, and the non-finite times that must be refused."""

from __future__ import annotations

import json
import re

import pytest

from fluid.errors import InputError
from fluid.traces import load_length_trace, load_timestamp_trace
from fluid.workload import ArrivalSpec
from fluid.workload_io import load_workload
from runtime.arrivals import make_requests

AZURE_2024 = """TIMESTAMP,ContextTokens,GeneratedTokens
2024-05-10 00:00:00.009930+00:00,2162,5
2024-05-10 00:00:00.509930+00:00,1200,17
2024-05-10 02:00:01.009930+02:00,40,3
"""
BURSTGPT = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5,ChatGPT,472,18,490,Conversation log
45,ChatGPT,1087,230,1317,Conversation log
118,GPT-4,417,276,693,API log
"""
VIDUR = """arrived_at,num_prefill_tokens,num_decode_tokens
0.0,100,10
0.25,200,20
1.75,300,30
"""
WORKLOAD = """name: replay
kv_capacity_tokens: 50000
batch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}
types:
  - {name: a, prefill: 100, decode: 10, rate_per_s: 1.0}
"""


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_azure_2024_timezone_suffix_is_read_as_an_instant(tmp_path):
    t = load_timestamp_trace(_write(tmp_path, "az24.csv", AZURE_2024))
    # the third row is 02:00:01 at +02:00 = 00:00:01 UTC: 1.0 s after the first row
    assert t.arrival_s.tolist() == pytest.approx([0.0, 0.5, 1.0])
    assert t.prompt_tokens.tolist() == [2162, 1200, 40] and t.output_tokens.tolist() == [5, 17, 3]


def test_azure_2023_without_suffix_still_reads_as_utc(tmp_path):
    t = load_timestamp_trace(_write(tmp_path, "az23.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                    "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n"))
    assert t.arrival_s[1] == pytest.approx(4.314579, abs=1e-6)


def test_burstgpt_columns_by_name(tmp_path):
    t = load_timestamp_trace(_write(tmp_path, "burst.csv", BURSTGPT))
    assert t.arrival_s.tolist() == [0.0, 40.0, 113.0]
    assert t.prompt_tokens.tolist() == [472, 1087, 417] and t.output_tokens.tolist() == [18, 230, 276]


def test_burstgpt_failed_request_row_is_refused_with_advice(tmp_path):
    path = _write(tmp_path, "burst.csv", BURSTGPT.replace("1087,230,1317", "1087,0,1087"))
    with pytest.raises(InputError, match=r"burst\.csv:3: .*Response tokens is 0.*without_fails"):
        load_length_trace(path)


def test_vidur_arrived_at_is_replayed(tmp_path):
    path = _write(tmp_path, "vidur.csv", VIDUR)
    t = load_timestamp_trace(path)
    assert t.arrival_s.tolist() == [0.0, 0.25, 1.75]
    workload = load_workload(_write(tmp_path, "w.yaml", WORKLOAD))
    reqs = make_requests(workload, 3, arrivals=ArrivalSpec("trace", trace=path))
    assert [r.arrival_s for r in reqs] == [0.0, 0.25, 1.75]
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(100, 10), (200, 20), (300, 30)]


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "NaN"])
@pytest.mark.parametrize("layout", ["azure", "vidur", "burstgpt"])
def test_non_finite_times_are_refused_naming_the_row(tmp_path, layout, bad):
    text = {"azure": AZURE_2024.replace("2024-05-10 00:00:00.509930+00:00", bad),
            "vidur": VIDUR.replace("0.25,", f"{bad},"),
            "burstgpt": BURSTGPT.replace("45,ChatGPT", f"{bad},ChatGPT")}[layout]
    path = _write(tmp_path, f"{layout}.csv", text)
    with pytest.raises(InputError, match=rf"{layout}\.csv:3: .*finite"):
        load_length_trace(path)


def test_unknown_columns_list_every_layout(tmp_path):
    with pytest.raises(InputError, match=r"x\.csv:1: unknown trace columns.*BurstGPT.*arrived_at"):
        load_length_trace(_write(tmp_path, "x.csv", "when,in,out\n1,2,3\n"))


# --- raw ShareGPT with a tokenizer built here -----------------------------------------------------
@pytest.fixture
def tokenizer_dir(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"[UNK]": 0, "hello": 1, "world": 2, "how": 3, "are": 4, "you": 5, "fine": 6, "thanks": 7, "?": 8}
    tok = tokenizers.Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    folder = tmp_path / "tok"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


SHAREGPT = [
    {"id": "a", "conversations": [{"from": "human", "value": "hello world how are you ?"},
                                  {"from": "gpt", "value": "fine thanks"}, {"from": "human", "value": "x"}]},
    {"id": "b", "conversations": [{"from": "human", "value": "hello"}]},  # one turn: skipped
    {"id": "c", "conversations": [{"from": "human", "value": "how are you"},
                                  {"from": "gpt", "value": "fine fine fine thanks zebra"}]},
]


def test_sharegpt_is_tokenized_with_the_local_tokenizer(tmp_path, tokenizer_dir):
    from fluid.sharegpt import load_sharegpt

    path = tmp_path / "sg.json"
    path.write_text(json.dumps(SHAREGPT), encoding="utf-8")
    t = load_sharegpt(path, tokenizer_dir)
    # whitespace words (unknown ones count as one [UNK] token); the second turn is the output
    assert t.prompt_tokens.tolist() == [6, 3] and t.output_tokens.tolist() == [2, 5]
    assert t.skipped_conversations == 1


def test_sharegpt_lengths_leave_out_the_tokenizers_special_tokens(tmp_path, tokenizer_dir):
    # a Llama-style tokenizer adds a BOS to every encoding: the lengths are the text's, without it
    import tokenizers
    from tokenizers.processors import TemplateProcessing

    from fluid.sharegpt import load_sharegpt

    tok = tokenizers.Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    tok.add_special_tokens(["<s>"])
    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    assert len(tok.encode("hello world").ids) == 3  # the BOS is there by default
    bos_dir = tmp_path / "bos"
    bos_dir.mkdir()
    tok.save(str(bos_dir / "tokenizer.json"))
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(SHAREGPT), encoding="utf-8")
    t = load_sharegpt(path, bos_dir)
    assert t.prompt_tokens.tolist() == [6, 3] and t.output_tokens.tolist() == [2, 5]


def test_sharegpt_in_a_workload_bins_its_lengths(tmp_path, tokenizer_dir):
    (tmp_path / "sg.json").write_text(json.dumps(SHAREGPT), encoding="utf-8")
    doc = ("name: sg\nkv_capacity_tokens: 10000\nbatch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}\n"
           "types_from_trace: {path: sg.json, tokenizer: tok, bins: 2, total_rate_per_s: 3.0}\n")
    w = load_workload(_write(tmp_path, "w.yaml", doc))
    assert [(t.prefill, t.decode) for t in w.types] == [(6, 2), (3, 5)]
    assert sum(t.rate_per_s for t in w.types) == pytest.approx(3.0)


def test_sharegpt_without_tokenizer_says_what_to_give(tmp_path):
    (tmp_path / "sg.json").write_text(json.dumps(SHAREGPT), encoding="utf-8")
    doc = ("name: sg\nkv_capacity_tokens: 10000\nbatch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}\n"
           "types_from_trace: {path: sg.json, bins: 2, total_rate_per_s: 3.0}\n")
    with pytest.raises(InputError, match=r"w\.yaml, field 'types_from_trace\.tokenizer': .*tokenizer\.json"):
        load_workload(_write(tmp_path, "w.yaml", doc))
    doc2 = doc.replace("bins: 2", "tokenizer: nowhere, bins: 2")
    with pytest.raises(InputError, match=r"no tokenizer\.json at .*nowhere"):
        load_workload(_write(tmp_path, "w2.yaml", doc2))


def test_sharegpt_not_a_list_of_conversations(tmp_path, tokenizer_dir):
    from fluid.sharegpt import load_sharegpt

    path = tmp_path / "sg.json"
    path.write_text(json.dumps([{"id": "a", "turns": []}]), encoding="utf-8")
    with pytest.raises(InputError, match=r"conversation 0 has no 'conversations' list"):
        load_sharegpt(path, tokenizer_dir)


def test_sharegpt_turns_that_tokenize_to_nothing_are_skipped_and_counted(tmp_path, tokenizer_dir):
    # an empty prompt, then an empty (whitespace-only) output: zero tokens each, so no request;
    # a one-token prompt and output is the shortest one kept
    from fluid.sharegpt import load_sharegpt

    convs = [
        {"id": "p0", "conversations": [{"from": "human", "value": ""}, {"from": "gpt", "value": "fine"}]},
        {"id": "o0", "conversations": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "  "}]},
        {"id": "one", "conversations": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "fine"}]},
        {"id": "short", "conversations": [{"from": "human", "value": "hello"}]},
    ]
    path = tmp_path / "sg.json"
    path.write_text(json.dumps(convs), encoding="utf-8")
    t = load_sharegpt(path, tokenizer_dir)
    assert t.prompt_tokens.tolist() == [1] and t.output_tokens.tolist() == [1]
    assert t.skipped_conversations == 3
    path2 = tmp_path / "empty.json"
    path2.write_text(json.dumps(convs[:2]), encoding="utf-8")
    with pytest.raises(InputError, match="every conversation tokenizes to an empty prompt or output"):
        load_sharegpt(path2, tokenizer_dir)


def test_token_counts_take_the_largest_int32_and_refuse_one_more(tmp_path):
    from fluid.traces import MAX_TOKENS_PER_REQUEST, load_length_trace

    assert MAX_TOKENS_PER_REQUEST == 2_147_483_647
    ok = _write(tmp_path, "ok.csv", "num_prefill_tokens,num_decode_tokens\n2147483647,1\n1,2147483647\n")
    t = load_length_trace(ok)
    assert t.prompt_tokens.tolist() == [2_147_483_647, 1] and t.output_tokens.tolist() == [1, 2_147_483_647]
    bad = _write(tmp_path, "bad.csv", "num_prefill_tokens,num_decode_tokens\n1,1\n1,2147483648\n")
    with pytest.raises(InputError, match="column num_decode_tokens has 2147483648 tokens, more than any model's context") as info:
        load_length_trace(bad)
    assert info.value.source == f"{bad}:3"


def test_sharegpt_files_turns_and_tokenizers_that_are_not_what_they_should_be(tmp_path, tokenizer_dir):
    from fluid.sharegpt import load_sharegpt, load_tokenizer

    two = [{"conversations": [{"value": "hello"}, {"value": "fine thanks"}]}]
    good = _write(tmp_path, "good.json", json.dumps(two))
    # the tokenizer.json file itself does as well as its folder
    assert load_sharegpt(good, tokenizer_dir / "tokenizer.json").output_tokens.tolist() == [2]
    cases = [
        (_write(tmp_path, "turn.json", json.dumps([{"conversations": [{"value": "hello"}, "hi"]}])), tokenizer_dir,
         "a turn must be an object with a string 'value', got 'hi'", "[0].conversations[1]"),
        (_write(tmp_path, "value.json", json.dumps([{"conversations": [{"value": 3}, {"value": "x"}]}])), tokenizer_dir,
         "a turn must be an object with a string 'value'", "[0].conversations[0]"),
        (_write(tmp_path, "dict.json", json.dumps({"x": 1})), tokenizer_dir, "a ShareGPT file is a JSON list of conversations, got dict", None),
        (_write(tmp_path, "one.json", json.dumps([{"conversations": [{"value": "hello"}]}])), tokenizer_dir,
         "no conversation has two turns; nothing to replay", None),
        (str(tmp_path / "missing.json"), tokenizer_dir, "cannot read the ShareGPT file", None),
        (good, tmp_path / "nowhere", "no tokenizer.json at", "tokenizer"),
    ]
    for path, tok, fragment, field in cases:
        with pytest.raises(InputError, match=re.escape(fragment)) as info:
            load_sharegpt(path, tok)
        assert info.value.field == field
    with pytest.raises(InputError, match="not a tokenizer file this tokenizers version can read"):
        load_tokenizer(_write(tmp_path, "bad.json", "{}"))
