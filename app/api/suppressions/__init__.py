"""Suppression routes: list suppressed addresses, lift one."""
