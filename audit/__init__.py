"""The tamper-evident audit log: every request and every change, hash-chained."""
