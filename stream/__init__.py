"""The data plane: the classify stage, event-time windows and the aggregate stage."""
