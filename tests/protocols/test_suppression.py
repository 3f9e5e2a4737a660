"""The minimum group size: counts compared with k on shares, a small group's statistics (and only
they) suppressed; `min_group_size` in the consortium and the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from parties.consortium import manifest
from parties.consortium.config import ConfigError, load_consortium
from protocols.blocks import metrics, suppression
from tests.engine.harness import run_parties

ROOT = Path(__file__).resolve().parents[2]


def _rows(tn: int, fp: int, fn: int, tp: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels with exactly these confusion cells (scores spread for the AUC)."""
    labels = [0] * (tn + fp) + [1] * (fn + tp)
    predicted = [0] * tn + [1] * fp + [0] * fn + [1] * tp
    scores = [(2 * p - 1) * (1 + i / 100) for i, p in enumerate(predicted)]
    return torch.tensor(scores).reshape(-1, 1), torch.tensor(labels, dtype=torch.float32
                                                             ).reshape(-1, 1)


def _guarded_in_mpc(cells: tuple[int, int, int, int], k: int) -> list[dict[str, object]]:
    """The metrics of these cells, guarded for k on shares by 3 parties; what each opens."""
    scores, labels = _rows(*cells)

    def party(comm: object) -> dict[str, object]:
        import crypten

        x = crypten.cryptensor(scores, src=0)
        y = crypten.cryptensor(labels, src=1)
        measured = metrics.binary_metrics(x, y)
        guarded = suppression.guard(measured, suppression.binary_metric_groups(
            measured, scores.shape[0]), k)
        opened = {part: {name: v if isinstance(v, float) else v.get_plain_text()
                         for name, v in values.items()}  # a public verdict is a number
                  for part, values in guarded.items()}
        return {"opened": opened, "released": suppression.unguard(opened)}

    return run_parties(3, party, refuse_openings=False, timeout=120)


def test_a_small_group_and_only_it_is_suppressed() -> None:
    # 40 test rows, k = 5: only 3 positives (fn 1 + tp 2) and 4 predicted positives
    results = _guarded_in_mpc((35, 2, 1, 2), k=5)
    released = results[0]["released"]
    assert all(r["released"] == released for r in results)
    # statistics over the 3 positives or the 4 predicted positives: suppressed
    for name in ("precision", "recall", "f1", "auc"):
        assert released[name] is None, name
    assert released["confusion_matrix"] == [[35.0, None], [None, None]]
    # accuracy is over all 40 rows: released, exact up to fixed point
    assert released["accuracy"] == pytest.approx(37 / 40, abs=1e-3)
    # a suppressed statistic is 0 before it is opened: only its verdict says anything
    opened = results[0]["opened"]
    assert float(opened["values"]["recall"]) == 0.0
    assert float(opened["shown"]["recall"]) == 0.0
    assert opened["values"]["confusion_matrix"][1].tolist() == [0.0, 0.0]


def test_groups_of_k_rows_are_released() -> None:
    # every group has >= 5 rows: nothing is suppressed, the values equal the plaintext ones
    results = _guarded_in_mpc((20, 5, 5, 10), k=5)
    released = results[0]["released"]
    scores, labels = _rows(20, 5, 5, 10)
    plain = metrics.binary_metrics_plain(scores.double(), labels.double())
    for name in ("accuracy", "precision", "recall", "f1", "auc"):
        assert released[name] == pytest.approx(plain[name], abs=2e-3), name
    assert released["confusion_matrix"] == [[20.0, 5.0], [5.0, 10.0]]


def test_public_counts_are_decided_in_the_clear() -> None:
    assert suppression.verdict([10, 3], 5) == 0.0
    assert suppression.verdict([10, 5], 5) == 1.0
    released = suppression.unguard({"values": {"mean": torch.tensor(0.0),
                                               "bins": torch.tensor([4.0, 0.0, 7.0])},
                                    "shown": {"bins": torch.tensor([1.0, 0.0, 1.0])}})
    assert released == {"mean": 0.0, "bins": [4.0, None, 7.0]}


def _consortium(tmp_path: Path, line: str) -> Path:
    text = (ROOT / "examples" / "hospitals" / "consortium.toml").read_text()
    head = 'ca = "certs/ca.pem"  # the consortium CA; `smpc certs consortium.toml` makes a ' \
           'development one\n'
    assert head in text
    path = tmp_path / "consortium.toml"
    path.write_text(text.replace(head, head + line + "\n"))
    return path


def test_min_group_size_is_part_of_the_manifest(tmp_path: Path) -> None:
    with_k = load_consortium(_consortium(tmp_path, "min_group_size = 10"))
    assert with_k.min_group_size == 10
    built = manifest.build(with_k)
    assert built["min_group_size"] == 10
    plain = manifest.build(load_consortium(ROOT / "examples" / "hospitals" / "consortium.toml"))
    assert plain["min_group_size"] == 1
    assert manifest.first_difference(built, plain)[0] == ("min_group_size",)


@pytest.mark.parametrize("value", ["0", "2.5", '"ten"'])
def test_a_bad_min_group_size_names_its_line(tmp_path: Path, value: str) -> None:
    path = _consortium(tmp_path, f"min_group_size = {value}")
    with pytest.raises(ConfigError, match=r"consortium.toml:8: \[consortium\]: .*min_group_size"):
        load_consortium(path)


def test_a_small_class_is_suppressed_in_the_multiclass_metrics() -> None:
    # 3 classes, 26 test rows, k = 5: class 2 has 3 rows (2 predicted right, 1 as class 0)
    truth = [0] * 12 + [1] * 11 + [2] * 3
    guess = [0] * 11 + [1] + [1] * 11 + [2, 2, 0]
    scores = torch.nn.functional.one_hot(torch.tensor(guess), 3).float() * 4
    labels = torch.tensor(truth, dtype=torch.float32).reshape(-1, 1)

    def party(comm: object) -> dict[str, object]:
        import crypten

        measured = metrics.multiclass_metrics(crypten.cryptensor(scores, src=0),
                                              crypten.cryptensor(labels, src=1), 3)
        guarded = suppression.guard(measured, suppression.multiclass_metric_groups(
            measured, len(truth)), 5)
        opened = {part: {name: v if isinstance(v, float) else v.get_plain_text()
                         for name, v in values.items()} for part, values in guarded.items()}
        return suppression.unguard(opened)

    released = run_parties(3, party, refuse_openings=False, timeout=180)[0]
    plain = metrics.multiclass_metrics_plain(scores.double(), labels.double(), 3)
    # class 2 (3 rows, 2 predicted): its precision, recall, F1 and the macro-F1 suppressed
    for name in ("precision", "recall", "f1"):
        assert released[name][2] is None, name
        assert released[name][:2] == pytest.approx(plain[name][:2], abs=2e-3), name
    assert released["macro_f1"] is None
    assert released["accuracy"] == pytest.approx(plain["accuracy"], abs=1e-3)
    # the cells under 5 rows (class 2's row and column, the class-0/1 mistakes) are None
    assert released["confusion_matrix"] == [[11.0, None, None], [None, 11.0, None],
                                            [None, None, None]]
