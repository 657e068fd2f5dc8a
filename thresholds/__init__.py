"""Thresholds: WAIT and Nested WAIT admission thresholds from the fluid benchmark, and the policy file.

WAIT (known output lengths) and Nested WAIT (only their distribution known) are the policies of
arXiv 2504.11320 (§WAIT and §Nested WAIT). `wait.py` and `nested.py` solve integer thresholds and check
their conditions (`conditions.py`, shared with the loader and `fluidsched check`); `policy.py`
writes and reads the versioned JSON policy that `runtime/` consumes (docs/policy-format.md,
schema in `policy.schema.json`), with the standard library only. `capped.py` / `capped_solve.py`
give real thresholds for the capped service rule and their memory (docs/capped-rule.md),
`slack.py` the automatic slack, `tune.py` the simulator-driven `--tune`. Never imports torch;
only `nested.py` needs scipy.
"""
