"""The secrets service's rules (rules.py: pure) and their orchestration (secrets.py)."""
