"""Everything that speaks SMTP: MIME building, DKIM signing, MX lookup, the SMTP client and
the delivery worker. Nothing here imports Flask."""
