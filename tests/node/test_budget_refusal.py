"""A privacy budget above one organization's policy stops every party before any data is
read or shared: the refusing party names its policy's line and the consortium's, the others
the two numbers."""

from __future__ import annotations

from pathlib import Path

from tests.support import PARTIES, all_stop_naming, copy_example, edit, node_commands, run_nodes


def test_a_budget_above_one_policy_stops_every_party_before_data_is_read(tmp_path: Path
                                                                         ) -> None:
    base = copy_example(tmp_path)
    consortium = base / "consortium-dp.toml"
    policies = {p: base / "policies" / f"{p}.toml" for p in PARTIES}
    # hospital-b caps 'weights' at 0.5 (the consortium asks 1.0) and its training file does
    # not exist: had it read its data first, it would report that instead
    edit(policies["hospital-b"], ("# max_epsilon = {weights = 8.0}",
                                  "max_epsilon = {weights = 0.5}"),
         ('train = "../data/hospital-b-train.csv"', 'train = "../data/not-there.csv"'))
    run = run_nodes(node_commands(dict.fromkeys([*PARTIES, "dealer"], consortium), policies),
                    timeout=120)
    all_stop_naming(run, "epsilon <= 0.5 for 'weights'", "epsilon = 1")
    for node in ("hospital-a", "hospital-c", "dealer"):
        text = "\n".join(run.nodes[node].lines)
        assert "party 'hospital-b' refuses: its policy accepts epsilon <= 0.5 for 'weights'; " \
               "the consortium asks epsilon = 1 (field budget.weights.epsilon)" in text, text
        assert "hospital-b.toml" not in text  # where its policy lives stays with it
        assert "epoch" not in text and "calibrated" not in text  # the protocol never started
    own = "\n".join(run.nodes["hospital-b"].lines)
    policy_line = next(i for i, line in enumerate(policies["hospital-b"].read_text()
                                                  .splitlines(), 1) if "max_epsilon =" in line)
    budget_line = [i for i, line in enumerate(consortium.read_text().splitlines(), 1)
                   if line == "epsilon = 1.0"][-1]  # the second [[reveal]]: 'weights'
    assert f"{policies['hospital-b']}:{policy_line}: the policy accepts epsilon <= 0.5 for " \
           f"'weights', but {consortium}:{budget_line} asks epsilon = 1" in own, own
    assert "not-there.csv" not in own
