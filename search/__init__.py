"""Architecture search over the supernet: Optuna studies, the paper's slimming, and export."""
