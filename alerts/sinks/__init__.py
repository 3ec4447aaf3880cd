"""Alert delivery sinks: webhook, Slack, Teams, PagerDuty, Alertmanager."""
