"""metrics: a Prometheus endpoint that folds the router's bus into counters and gauges."""
