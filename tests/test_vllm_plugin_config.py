"""The vLLM plugin's settings, policy mapping and version gate (integrations/vllm/config.py, compat.py).

These parts need no vllm, so they run everywhere; the scheduler itself is tested in vLLM's venv
(tests/test_vllm_plugin_harness.py, tests/test_vllm_plugin_engine.py).
"""

from __future__ import annotations

import ast
import json

from pathlib import Path

import pytest

from fluid.errors import InputError
from integrations.vllm.compat import check_supported, parse_version
from integrations.vllm.config import POLICY_ENV, plan_from_settings, settings_from_additional_config
from runtime.policy_file import RuntimeClass, RuntimePolicy, RuntimeSegment, load_policy
from thresholds.capped import cap_of

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


@pytest.mark.parametrize("version", ["0.32.0", "0.32.1+cpu", "0.32.3rc1", "v0.32.0"])
def test_supported_versions_pass(version):
    check_supported(version)


@pytest.mark.parametrize("version", ["0.31.9", "0.33.0", "1.0.0", "0.4"])
def test_other_versions_are_refused_with_the_range_and_what_to_do(version):
    with pytest.raises(InputError, match=rf"vLLM {version} is not supported .*>=0\.32\.0,<0\.33.*install vllm==0\.32\.\*"):
        check_supported(version)


def test_an_unreadable_version_is_an_input_error():
    with pytest.raises(InputError, match="cannot read the vLLM version 'dev'"):
        parse_version("dev")


def test_settings_come_from_additional_config_or_the_environment(monkeypatch):
    assert settings_from_additional_config({"fluidsched": {"policy": "p.json"}}) == {"policy": "p.json"}
    assert settings_from_additional_config({"fluidsched": '{"policy": "q.json"}'}) == {"policy": "q.json"}
    monkeypatch.delenv(POLICY_ENV, raising=False)
    with pytest.raises(InputError, match=rf"--additional-config.*no policy given.*{POLICY_ENV}"):
        settings_from_additional_config({})
    monkeypatch.setenv(POLICY_ENV, "env.json")
    assert settings_from_additional_config({}) == {"policy": "env.json"}


def test_unknown_and_missing_options_are_named():
    with pytest.raises(InputError, match=r"fluidsched\.resident_caps.*did you mean 'resident_cap'"):
        settings_from_additional_config({"fluidsched": {"policy": "p.json", "resident_caps": 3}})
    with pytest.raises(InputError, match=r"fluidsched\.policy.*required"):
        settings_from_additional_config({"fluidsched": {"segment_caps": True}})
    with pytest.raises(InputError, match="must be an object"):
        settings_from_additional_config({"fluidsched": [1]})


def test_the_golden_wait_policy_is_served_by_the_continuous_rule():
    plan = plan_from_settings({"policy": str(DATA / "golden_policy_wait.json")})
    assert (plan.policy_kind, plan.rule, plan.policy_service_rule) == ("wait", "continuous", "cohort")
    assert [(g.name, g.prefill_tokens, g.decode_tokens, g.threshold) for g in plan.groups] == [
        ("p10d10", 10, 10, 7), ("p10d20", 10, 20, 7)]
    assert plan.resident_cap is None and plan.drain_max_wait_s == pytest.approx(0.13047)


def test_a_capped_wait_policy_gets_the_projects_caps():
    path = DATA / "golden_policy_wait_capped.json"
    plan = plan_from_settings({"policy": str(path)})
    raw = json.loads(path.read_text())
    assert plan.rule == "capped"
    assert [g.cap for g in plan.groups] == raw["options"]["class_caps"]  # ⌈n_j (l'_j + 1)⌉ as the solver wrote it
    assert plan.resident_cap == sum(raw["options"]["class_caps"])
    assert plan.prefill_chunk_tokens == load_policy(path).prefill_chunk_tokens


def test_nested_segment_caps_round_up_and_at_an_exact_integer_stay():
    policy = RuntimePolicy("nested_wait", "capped", segments=(
        RuntimeSegment(0, 9, 0.3), RuntimeSegment(10, 19, 0.2), RuntimeSegment(20, 29, 0.05)))
    (group,) = plan_from_settings({}, policy).groups
    assert group.segment_first_stages == (0, 10, 20)
    assert group.segment_caps == (3, 2, 1)  # 10·0.3 = 3 exactly (not 4), 10·0.2 = 2, 10·0.05 = 0.5 → 1
    assert group.cap == cap_of(3 + 2 + 0.5, 1) == 6
    assert plan_from_settings({"resident_cap": 4}, policy).resident_cap == 4
    assert plan_from_settings({}, policy).segment_caps and not plan_from_settings({"segment_caps": False}, policy).segment_caps


def test_an_integer_policy_may_run_capped_but_a_capped_one_not_continuous():
    integer = RuntimePolicy("wait", "cohort", classes=(RuntimeClass("a", 10, 10, 2),))
    plan = plan_from_settings({"rule": "capped"}, integer)
    assert plan.rule == "capped" and plan.groups[0].cap == 22
    capped = RuntimePolicy("wait", "capped", classes=(RuntimeClass("a", 10, 10, 0.5),))
    with pytest.raises(InputError, match="only the capped rule serves"):
        plan_from_settings({"rule": "continuous"}, capped)
    with pytest.raises(InputError, match=r"fluidsched\.rule.*\['capped', 'continuous'\]"):
        plan_from_settings({"rule": "cohort"}, integer)


@pytest.mark.parametrize("key,value", [("resident_cap", 0), ("prefill_chunk_tokens", 1.5), ("segment_caps", "yes"),
                                       ("log_interval_s", -1), ("drain_max_wait_s", float("nan"))])
def test_bad_option_values_name_the_option(key, value):
    policy = RuntimePolicy("wait", "continuous", classes=(RuntimeClass("a", 10, 10, 2),))
    with pytest.raises(InputError, match=rf"fluidsched\.{key}"):
        plan_from_settings({key: value}, policy)


def test_a_bad_policy_file_is_refused_by_the_one_reader(tmp_path):
    bad = tmp_path / "p.json"
    raw = json.loads((DATA / "golden_policy_wait.json").read_text())
    raw["classes"][0]["threshold"] = 0
    bad.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=r"classes\[0\]\.threshold"):
        plan_from_settings({"policy": str(bad)})


def test_vllm_is_imported_only_by_the_integration():
    """No module outside integrations/vllm imports vllm at module level (the oracle imports it in functions)."""
    offenders = []
    for path in ROOT.glob("*/**/*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in ("tests", "integrations") or ".venv" in rel.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "vllm" or n.startswith("vllm.") for n in names):
                offenders.append(str(rel))
    assert offenders == []
