"""DP synthetic data: noisy marginals measured inside MPC, rows drawn by the recipients."""
