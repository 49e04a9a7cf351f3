"""Running adcast on one machine: the local broker and Redis (services), the tiers as
subprocesses (workers), and the whole path once (demo)."""
