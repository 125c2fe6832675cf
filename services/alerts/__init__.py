"""alerts: keepalived's mail alerts and notify FIFO lines (docs/alerts.md): a pure core deciding
what to send and its text, and a shell that mails (a bounded queue, a sender thread) and writes
the FIFOs (non-blocking), so a slow or dead relay never holds the bus."""
