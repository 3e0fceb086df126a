"""The SMTP relay: aiosmtpd listeners where mail programs submit with AddSMTP credentials."""
