"""Mail mechanics with no database: addresses, MIME building, DKIM signing, tracking URLs,
VERP, bounce and ARF parsing, MX lookup and the SMTP client. Nothing here imports Flask."""
