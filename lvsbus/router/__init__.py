"""The router: its supervisor process, the supervisor's pure decisions, and what status reads
from the log."""
