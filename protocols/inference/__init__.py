"""Private inference: one party's model scores the other parties' rows (prediction.py)."""
