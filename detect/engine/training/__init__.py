"""Training: the fit loop, its state, schedule, optimizer, EMA, run writers, resume and dataset preparation."""
