"""Settings: one frozen object from `config/*.toml` plus environment overrides, checked on load.

schema.py is what each setting is and how it is checked; loading.py where values come from (the
defaults are config/default.toml's, written there only).
"""

from service.settings.loading import load_settings
from service.settings.schema import Settings, SettingsError

__all__ = ["Settings", "SettingsError", "load_settings"]
