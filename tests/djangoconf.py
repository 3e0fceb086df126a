"""One Django configuration for the tests that drive django-anymail (its Postal backend and
its Postal webhook view); each test sets its own ANYMAIL with ``override_settings``."""

import django
from django.conf import settings


def configure() -> None:
    if settings.configured:
        return
    settings.configure(
        SECRET_KEY="postern tests",
        ALLOWED_HOSTS=["*"],
        INSTALLED_APPS=["anymail"],
        USE_TZ=True,
        EMAIL_BACKEND="anymail.backends.postal.EmailBackend",
        ANYMAIL={},
    )
    django.setup()
