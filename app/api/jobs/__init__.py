"""The job routes (routes.py assembles them), their schemas and the creation path."""
