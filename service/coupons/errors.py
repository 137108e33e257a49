"""What can refuse a page, in the domain's terms; service/http/errors.py says what each means in
HTTP (the one place where that is decided)."""

from __future__ import annotations


class PageRefused(Exception):
    """The page cannot be shown to this caller."""


class MemberNotFound(PageRefused):
    """The token's member does not exist."""


class MemberElsewhere(PageRefused):
    """The member belongs to another tenant than the caller's."""


class NotFollowing(PageRefused):
    """The staff member does not follow the WeCom contact the request names."""
