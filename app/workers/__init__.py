"""Background work: the delivery worker and the webhook sender."""
