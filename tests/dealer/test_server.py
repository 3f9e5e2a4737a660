"""The dealer's checks on party 0's requests."""

from __future__ import annotations

import pytest
import torch

from parties.dealer.server import DealerError, _check_request
from parties.engine import correlated as cr


def test_dealer_refuses_odd_comparison_requests() -> None:
    with pytest.raises(DealerError, match="digits of 5 bits"):
        _check_request({"kind": cr.LTZ, "counter": 0, "size0": torch.Size([4]), "digit_bits": 5},
                       ["p0"])
    with pytest.raises(DealerError, match="comparison tables"):
        _check_request({"kind": cr.LTZ, "counter": 0, "size0": torch.Size([1 << 27]),
                        "digit_bits": 8},
                       ["p0"])
