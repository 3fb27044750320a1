"""The Web API methods approval in Slack uses, for the Slack test server.

``reactions.get`` (reactions tests put on a message), ``usergroups.users.list`` (the
user groups a test declares), ``chat.postEphemeral`` (kept per user, as only they see
it) and ``apps.connections.open`` (with the app-level token: the Socket Mode server's
URL). Mixed into ``SlackServer``; each method is called with the server's lock held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

APP_TOKEN = "xapp-1-A000-1234567890-gpuwatchTestAppToken0001"


@dataclass
class Ephemeral:
    channel: str
    user: str
    text: str


@dataclass
class InteractiveState:
    reactions: dict[tuple[str, str], dict[str, list[str]]] = field(default_factory=dict)
    """(channel id, ts) -> reaction name -> users, in order."""
    usergroups: dict[str, list[str]] = field(default_factory=dict)
    ephemeral: list[Ephemeral] = field(default_factory=list)
    socket_url: str | None = None
    app_token: str = APP_TOKEN


class InteractiveApi:
    """The mixin: ``self.interactive`` holds what tests arrange and read."""

    interactive: InteractiveState

    def react(self, channel: str, ts: str, name: str, user: str) -> None:
        """Somebody reacts to a message (``channel``: its id)."""
        users = self.interactive.reactions.setdefault((channel, ts), {}).setdefault(name, [])
        users.append(user)

    def ephemeral_to(self, user: str) -> list[str]:
        return [e.text for e in self.interactive.ephemeral if e.user == user]

    def interactive_methods(self) -> dict[str, Any]:
        return {
            "reactions.get": self._reactions_get,
            "usergroups.users.list": self._usergroup_users,
            "chat.postEphemeral": self._post_ephemeral,
        }

    def _reactions_get(self, params: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        channel, ts = str(params.get("channel", "")), str(params.get("timestamp", ""))
        message = self._any_message(channel, ts)  # type: ignore[attr-defined]
        if message is None:
            return False, {"error": "message_not_found"}
        named = self.interactive.reactions.get((channel, ts), {})
        reactions = [{"name": n, "users": list(u), "count": len(u)} for n, u in named.items()]
        return True, {
            "type": "message",
            "channel": channel,
            "message": {**message.as_json(), "reactions": reactions},
        }

    def _usergroup_users(self, params: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        group = str(params.get("usergroup", ""))
        if group not in self.interactive.usergroups:
            return False, {"error": "no_such_subteam"}
        return True, {"users": list(self.interactive.usergroups[group])}

    def _post_ephemeral(self, params: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        channel, user = str(params.get("channel", "")), str(params.get("user", ""))
        if not channel or not user or not params.get("text"):
            return False, {"error": "invalid_arguments"}
        self.interactive.ephemeral.append(Ephemeral(channel, user, str(params["text"])))
        return True, {"message_ts": "0.0"}

    def connections_open(self, given: str | None) -> tuple[bool, dict[str, Any]]:
        if given != self.interactive.app_token:
            return False, {"error": "invalid_auth"}
        if self.interactive.socket_url is None:
            return False, {"error": "no_socket_mode_server"}
        return True, {"url": self.interactive.socket_url}
