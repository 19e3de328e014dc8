"""What the broker keeps, opened as the broker opens it: a connection's sealed tokens."""

from __future__ import annotations

from chalicelib.config import load_settings
from chalicelib.connection_tokens import ConnectionTokens
from chalicelib.resources import store_for
from chalicelib.sealing import sealer_for


def stored_tokens(team: str = "acme", user: str = "alice") -> dict[str, str]:
    """The connection's tokens (access token, token secret or refresh token), opened with the stage's KMS key."""
    settings = load_settings()
    tokens = ConnectionTokens(store_for(settings), sealer_for(settings))
    connection = tokens.read(team, user)
    assert connection is not None, f"{user} in {team} has no connection"
    return tokens.open(team, user, connection)
