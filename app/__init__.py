"""The running application: HTTP (``app.http``), the SMTP relay (``app.smtp``), the workers
(``app.workers``) and the ``postern`` command (``app.cli``).

Importing this package does not import Flask; the factory lives in ``app.http.factory``.
"""
