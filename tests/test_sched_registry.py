"""The scheduler registry: a registered module that is missing is an InputError naming it, while a
missing dependency of a module that exists is not hidden."""

from __future__ import annotations

import pytest

import runtime.schedulers as registry
from fluid.errors import InputError


def test_a_registered_module_that_is_missing_is_an_input_error(monkeypatch):
    monkeypatch.setitem(registry.SCHEDULERS, "ghost", "runtime.schedulers.ghost_policy_not_built:Ghost")
    with pytest.raises(InputError, match="scheduler 'ghost' is registered but its module runtime.schedulers.ghost_policy_not_built"):
        registry.scheduler_class("ghost")
    assert "ghost" not in registry.available_schedulers()


def test_a_missing_dependency_of_a_registered_module_is_raised_as_it_is(monkeypatch, tmp_path):
    (tmp_path / "policy_with_a_missing_dependency.py").write_text("import dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.SCHEDULERS, "broken", "policy_with_a_missing_dependency:Broken")
    with pytest.raises(ModuleNotFoundError) as info:
        registry.scheduler_class("broken")
    assert info.value.name == "dependency_that_is_not_installed"
    assert "broken" in registry.available_schedulers()  # its own module is there


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(InputError, match="unknown scheduler 'nope'; valid names: fcfs, mc-sf"):
        registry.scheduler_class("nope")
