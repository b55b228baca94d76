"""`doorward backup create|verify|restore` (issue 14): one encrypted, checksummed archive of every
service database and an OpenBao raft snapshot; restore into an empty data folder with the shred
ledger replayed. See docs/compliance.md and deploy/backup/ops.py."""
