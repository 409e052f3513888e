"""Research tools that need the optional `research` extra (Ray Tune, Optuna, pyarrow, matplotlib): parameter sweeps
and walk-forward runs over the market-data store (aegis.replay.store). The engine never imports this package."""
