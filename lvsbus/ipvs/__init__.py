"""The IPVS table and its traffic figures as data (pure)."""
