"""What the jobs run: evaluation, sweeps and their report, figures, data sets, MLflow tracking.
May import every layer below it (the loop, cell, measures/, device/, models/, ...); only cli.py imports it."""
