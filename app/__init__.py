"""hybridq: a job queue with PostgreSQL durability at Redis speed."""
