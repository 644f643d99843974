"""The sdnagent daemon: configuration, the reconcile loop, status reporting."""
