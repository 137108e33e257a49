"""Who is asking: staff tokens (HS256, RS256/ES256) and the mall's service token."""
