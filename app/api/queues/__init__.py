"""Queue routes: list with counts and depths, create, pause/resume, default priority."""
