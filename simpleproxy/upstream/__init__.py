"""Talking to backends: pools (pool.py), the wire protocol (http1.py), forwarding (forward.py)."""
