"""Accepting mail (the send checks, storing a message and its deliveries) and the queue."""

from commands.sending import (
    batch,  # noqa: F401  (registers the batch commands)
    handlers,  # noqa: F401  (registers the commands)
    infobip,  # noqa: F401  (registers the Infobip send commands)
    infobip_reports,  # noqa: F401  (registers the Infobip reports and logs)
    postal,  # noqa: F401  (registers Postal's sends)
)
