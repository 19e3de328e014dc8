"""More of Jira 9's REST API for the fake Jira: what unmodified client libraries call.

pycontribs ``jira``, ``atlassian-python-api`` and jira.js follow the links Jira hands them and ask
for more than the broker itself does. Modelled on Jira Server / Data Center 9's answers:

- ``PUT /rest/api/2/issue/{idOrKey}`` with ``{"fields": {...}, "update": {...}}``: 204 and no body;
  ``summary``, ``description``, ``labels`` and ``assignee`` can be set (``update`` takes ``set`` for
  the three text fields and ``add``/``remove``/``set`` for labels); any other field is Jira's 400
  "cannot be set". Only on a fake with ``echo=False`` (``python -m tests.fakejira``, the client library
  tests): with ``echo=True`` a PUT keeps getting the echo, as the tests written against it expect.
- ``GET /rest/api/2/attachment/{id}``: the attachment's JSON (``self``, ``content`` and, for
  images, ``thumbnail``, all under the base URL with its context path).
- ``GET /secure/attachment/{id}/{filename}`` and ``GET /secure/thumbnail/{id}/{name}``: the bytes,
  authenticated as REST calls are (an OAuth 1.0a signature or a Bearer token), with the
  attachment's media type and Jira's ``Content-Disposition``; 404 for an unknown id. Jira serves
  by id: the file name in the path is cosmetic.
- ``GET /rest/api/2/field``: the system fields, each with ``clauseNames`` and ``schema``.

Attachments get Jira's media type: a part sent as ``application/octet-stream`` (pycontribs ``jira``
sends every file so) or without a type is typed from its file name, as Jira's MimeManager does.

``JiraRestModel`` is a mixin of ``FakeJira`` (like ``OAuth2Provider``) and imports nothing from
``tests.fakejira`` at run time.
"""

from __future__ import annotations

import json
import mimetypes
import re
import threading
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from tests.fakejira_oauth2 import Response

if TYPE_CHECKING:
    from tests.fakejira import _Issue, _Request

Answer = tuple[int, Any] | Response
_ISSUE_PATH = re.compile(r"/rest/api/2/issue/([^/]+)")
_ATTACHMENT_JSON = re.compile(r"/rest/api/2/attachment/(\d+)")
_DOWNLOAD = re.compile(r"/secure/(attachment|thumbnail)/(\d+)(?:/[^/]*)?")
_GENERIC_TYPES = {"application/octet-stream", "binary/octet-stream", "application/x-download", "application/unknown"}
_INLINE = ("image/", "text/plain", "application/pdf")  # shown in the browser; anything else is downloaded
_EDITABLE = ("summary", "description", "labels", "assignee")
NOT_EDITABLE = "Field '{}' cannot be set. It is not on the appropriate screen, or unknown."
# Jira 9's system fields as GET /rest/api/2/field lists them: id, name, schema type (None: no schema),
# clause names, orderable, navigable, searchable.
_SYSTEM_FIELDS: list[tuple[str, str, str | None, list[str], bool, bool, bool]] = [
    ("issuekey", "Key", None, ["id", "issue", "issuekey", "key"], False, True, False),
    ("summary", "Summary", "string", ["summary"], True, True, True),
    ("description", "Description", "string", ["description"], True, True, True),
    ("issuetype", "Issue Type", "issuetype", ["issuetype", "type"], True, True, True),
    ("project", "Project", "project", ["project"], False, True, True),
    ("status", "Status", "status", ["status"], False, True, True),
    ("priority", "Priority", "priority", ["priority"], True, True, True),
    ("assignee", "Assignee", "user", ["assignee"], True, True, True),
    ("reporter", "Reporter", "user", ["reporter"], True, True, True),
    ("creator", "Creator", "user", ["creator"], False, True, True),
    ("labels", "Labels", "array", ["labels"], True, True, True),
    ("attachment", "Attachment", "array", ["attachments"], True, False, True),
    ("created", "Created", "datetime", ["created", "createdDate"], False, True, True),
    ("updated", "Updated", "datetime", ["updated", "updatedDate"], False, True, True),
]
_ARRAY_ITEMS = {"labels": "string", "attachment": "attachment"}


def _error(status: int, *messages: str, **errors: str) -> tuple[int, Any]:
    return status, {"errorMessages": list(messages), "errors": errors}


def _json_body(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body.decode("utf-8")) if body.strip() else None
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def media_type(filename: str, declared: str | None) -> str:
    """The media type Jira stores: the declared one, unless generic or missing; then guessed from the name."""
    if declared and declared.lower() not in _GENERIC_TYPES:
        return declared
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    return guessed or "application/octet-stream"


class JiraRestModel:
    """Jira's issue editing, attachment downloads and field list, mixed into ``FakeJira``."""

    _lock: threading.Lock
    echo: bool
    if TYPE_CHECKING:  # FakeJira's

        def _site(self) -> str: ...
        def _find_issue(self, id_or_key: str) -> _Issue: ...
        def _user_json(self, name: str | None) -> dict[str, Any] | None: ...
        def _next_id(self, kind: str) -> int: ...
        def now(self) -> float: ...

    def _init_rest_model(self) -> None:
        self._attachment_bytes: dict[int, bytes] = {}
        self._attachment_json: dict[int, dict[str, Any]] = {}

    # ---- what FakeJira's attachment upload calls (with the lock held)

    def _new_attachment(
        self, filename: str, declared_type: str | None, content: bytes, author: Any, created: str
    ) -> dict[str, Any]:
        """Store an uploaded file; return its JSON as Jira shows it (``thumbnail`` for images only)."""
        attachment_id = self._next_id("attachment")
        site, mime = self._site(), media_type(filename, declared_type)
        attachment: dict[str, Any] = {
            "self": f"{site}/rest/api/2/attachment/{attachment_id}",
            "id": str(attachment_id),
            "filename": filename,
            "author": author,
            "created": created,
            "size": len(content),
            "mimeType": mime,
            "content": f"{site}/secure/attachment/{attachment_id}/{quote(filename)}",
        }
        if mime.startswith("image/"):
            attachment["thumbnail"] = f"{site}/secure/thumbnail/{attachment_id}/_thumb_{attachment_id}.png"
        self._attachment_bytes[attachment_id] = content
        self._attachment_json[attachment_id] = attachment
        return attachment

    # ---- routing: called by FakeJira for every authenticated /rest or /secure call

    @staticmethod
    def is_download(path: str) -> bool:
        """Whether ``path`` (relative to the context path) is an attachment or thumbnail download."""
        return _DOWNLOAD.fullmatch(path) is not None

    def _rest_model_route(self, req: _Request) -> Any:
        """The handler ``(req, user) -> (status, payload) | Response`` for this request, or None."""
        if req.method == "GET" and _DOWNLOAD.fullmatch(req.path):
            return self._download
        if req.method == "GET" and _ATTACHMENT_JSON.fullmatch(req.path):
            return self._attachment
        if req.method == "GET" and req.path == "/rest/api/2/field":
            return self._fields
        is_json = req.headers.get("content-type", "").lower().startswith("application/json")
        if req.method == "PUT" and _ISSUE_PATH.fullmatch(req.path) and is_json and not self.echo:
            return self._edit_issue
        return None

    # ---- routes

    def _download(self, req: _Request, user: dict[str, Any]) -> Answer:
        """GET /secure/attachment/{id}/{filename} (or /secure/thumbnail/...): the stored bytes."""
        match = _DOWNLOAD.fullmatch(req.path)
        assert match is not None
        with self._lock:
            attachment = self._attachment_json.get(int(match.group(2)))
            content = self._attachment_bytes.get(int(match.group(2)), b"")
        if attachment is None or (match.group(1) == "thumbnail" and "thumbnail" not in attachment):
            page = b"<!DOCTYPE html><html><body><h1>Attachment not found</h1></body></html>"
            return Response(404, page, "text/html;charset=UTF-8")
        mime = attachment["mimeType"]
        disposition = "inline" if mime.startswith(_INLINE) else "attachment"
        headers = {
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(attachment['filename'])}",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private",
        }
        return Response(200, content, mime + (";charset=UTF-8" if mime.startswith("text/") else ""), headers)

    def _attachment(self, req: _Request, user: dict[str, Any]) -> Answer:
        """GET /rest/api/2/attachment/{id}: its JSON, or Jira's 404."""
        match = _ATTACHMENT_JSON.fullmatch(req.path)
        assert match is not None
        with self._lock:
            attachment = self._attachment_json.get(int(match.group(1)))
        if attachment is None:
            return _error(404, f"The attachment with id '{match.group(1)}' does not exist")
        return 200, dict(attachment)

    def _fields(self, req: _Request, user: dict[str, Any]) -> Answer:
        """GET /rest/api/2/field: Jira's system fields."""
        fields = []
        for field_id, name, kind, clauses, orderable, navigable, searchable in _SYSTEM_FIELDS:
            field: dict[str, Any] = {
                "id": field_id,
                "name": name,
                "custom": False,
                "orderable": orderable,
                "navigable": navigable,
                "searchable": searchable,
                "clauseNames": clauses,
            }
            if kind is not None:
                field["schema"] = {"type": kind, "system": field_id}
                if field_id in _ARRAY_ITEMS:
                    field["schema"]["items"] = _ARRAY_ITEMS[field_id]
            fields.append(field)
        return 200, fields

    def _edit_issue(self, req: _Request, user: dict[str, Any]) -> Answer:
        """PUT /rest/api/2/issue/{idOrKey}: 204, or Jira's 400 naming each field it refuses (nothing changes)."""
        match = _ISSUE_PATH.fullmatch(req.path)
        assert match is not None
        issue = self._find_issue(unquote(match.group(1)))
        body = _json_body(req.body)
        if body is None:
            return _error(400, "The request body is not a JSON object.")
        fields, update = body.get("fields") or {}, body.get("update") or {}
        if not isinstance(fields, dict) or not isinstance(update, dict):
            return _error(400, "fields and update must be objects")
        changes: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, value in fields.items():
            self._set_field(issue, name, value, changes, errors)
        for name, operations in update.items():
            for operation in operations if isinstance(operations, list) else [operations]:
                self._apply_operation(issue, name, operation, changes, errors)
        if errors:
            return _error(400, **errors)
        with self._lock:
            for name, value in changes.items():
                setattr(issue, name, value)
            issue.updated = self.now()
        return Response(204, content_type="")

    def _set_field(self, issue: _Issue, name: str, value: Any, changes: dict[str, Any], errors: dict[str, str]) -> None:
        if name not in _EDITABLE:
            errors[name] = NOT_EDITABLE.format(name)
        elif name == "summary":
            if not isinstance(value, str) or not value.strip():
                errors[name] = "You must specify a summary of the issue."
            elif "\n" in value or "\r" in value:
                errors[name] = "The summary is invalid because it contains newline characters."
            else:
                changes[name] = value
        elif name == "description":
            if value is not None and not isinstance(value, str):
                errors[name] = "Operation value must be a string"
            else:
                changes[name] = value
        elif name == "labels":
            labels = value if isinstance(value, list) else None
            if labels is None or not all(isinstance(label, str) and label for label in labels):
                errors[name] = "Operation value must be an array of strings"
            elif any(" " in label for label in labels):
                errors[name] = f"The label '{next(label for label in labels if ' ' in label)}' contains spaces."
            else:
                changes[name] = list(dict.fromkeys(labels))
        elif value is None:  # assignee: unassigned
            changes[name] = None
        else:
            wanted = value.get("name") if isinstance(value, dict) else None
            if not isinstance(wanted, str) or self._user_json(wanted) is None:
                errors[name] = f"User '{wanted}' does not exist."
            else:
                changes[name] = wanted

    def _apply_operation(
        self, issue: _Issue, name: str, operation: Any, changes: dict[str, Any], errors: dict[str, str]
    ) -> None:
        verb, value = next(iter(operation.items())) if isinstance(operation, dict) and len(operation) == 1 else ("", 0)
        if name not in _EDITABLE:
            errors[name] = NOT_EDITABLE.format(name)
        elif name == "labels" and verb in ("add", "remove"):
            labels = list(changes.get("labels", issue.labels))
            if verb == "add" and isinstance(value, str) and value not in labels:
                labels.append(value)
            elif verb == "remove" and value in labels:
                labels.remove(value)
            self._set_field(issue, "labels", labels, changes, errors)
        elif verb == "set":
            self._set_field(issue, name, value, changes, errors)
        else:
            errors[name] = f"Operation '{verb}' is not supported for field '{name}'."
