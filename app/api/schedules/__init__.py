"""Schedule routes: periodic jobs, listed with their next run and last job; create,
change, enable or disable, delete."""
