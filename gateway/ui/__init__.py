"""The memory console: a few static files served at /ui that call the memory API from the browser."""
