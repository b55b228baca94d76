"""`doorward report access-review|incident|processing` (issue 14, evidence for auditors).

build.py turns rows into a report (pure, no I/O); sources.py reads the rows, each from its
service's database with that service's own login (read-only queries, filtered by organisation
where one is given); run.py formats JSON or CSV and records every run on the audit trail.
"""
