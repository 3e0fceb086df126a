"""Templates: stored per user, checked when saved, used by any send (TemplateID, templateHash)."""

from commands.templates import handlers  # noqa: F401
