"""The HTTP side: the Flask factory, the /api.php dispatcher, /api/v1, tracking routes."""
