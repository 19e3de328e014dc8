"""jira-oauth-broker: OAuth 1.0a for self-hosted Jira, done once and properly."""
