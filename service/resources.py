"""Where the service's files are: the SQL (`sql/` of the repository) and the default settings
(`config/`). Both ship inside the wheel as the packages `coupons_sql` and `coupons_config`
(pyproject.toml), so an installed service finds them where a checkout (installed editable, as
`make install` does) finds them: through the import system, one way for both."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def _directory(package: str) -> Path:
    return Path(str(importlib.resources.files(package)))


SQL_DIR = _directory("coupons_sql")
CONFIG_DIR = _directory("coupons_config")
