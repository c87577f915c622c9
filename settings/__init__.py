"""Django settings package. `settings.base` is the one settings module; `settings.test` layers
test defaults on top of it."""
