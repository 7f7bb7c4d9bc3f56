"""Public-key infrastructure: keys, profiles, the authority, CRLs, chain checks."""
