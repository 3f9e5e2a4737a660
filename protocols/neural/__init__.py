"""Neural networks: a PyTorch model trained and evaluated on the parties' pooled rows."""
